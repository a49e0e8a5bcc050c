"""The run database ``RUN/run.db`` (SQLite, WAL) and the lock that makes one process its writer.

Layout of a run directory::

    RUN/run.db            meta (schema_version, config, plan, status, summary), strategy state per
                          step, candidates (one row per genome, never two rows for one genome),
                          latency (measured inference times per genome, target and hardware)
    RUN/run.lock          pid and host of the writer; held with fcntl.flock while it writes
    RUN/candidates/ID/    the training folder of candidate ID (training.json, weights.pt, ...)

Every finished candidate is committed at once, so a crash loses at most the candidates in flight.
Readers (the app watching a live run, ``emonas front``) open the database read-only and need no lock.
A lock left by a killed process is free again (the kernel drops flock with the process), so the next
writer takes it over without any flag.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from engine.errors import EmonasError, RunError
from engine.faults import fault
from engine.run.records import CandidateRow

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
DB_NAME = "run.db"
LOCK_NAME = "run.lock"
STATUSES = ("queued", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS strategy_state (
    step INTEGER PRIMARY KEY, state TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (
    id INTEGER PRIMARY KEY,
    genome TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    generation INTEGER, phase TEXT, subproblem INTEGER,
    f1 REAL, f2 REAL, f1_raw REAL, parameters INTEGER,
    predicted_f1 REAL, predicted_std REAL,
    metrics TEXT, curves TEXT,
    queued_at REAL, started_at REAL, finished_at REAL, seconds REAL,
    device TEXT, error TEXT, reused_from TEXT, pruned INTEGER NOT NULL DEFAULT 0,
    gflops REAL, latency_ms REAL, latency_predicted INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS candidates_status ON candidates(status);
CREATE TABLE IF NOT EXISTS latency (
    genome TEXT NOT NULL, target TEXT NOT NULL, threads INTEGER NOT NULL, hardware TEXT NOT NULL,
    shape TEXT NOT NULL, latency_ms REAL NOT NULL, runs_ms TEXT NOT NULL, flops REAL, measured_at REAL NOT NULL,
    PRIMARY KEY (genome, target, threads, hardware, shape));
"""

#: Statements that bring a database of schema version N to N + 1 (run by the writer on opening).
_MIGRATIONS = {
    1: [
        "ALTER TABLE candidates ADD COLUMN gflops REAL",
        "ALTER TABLE candidates ADD COLUMN latency_ms REAL",
        "ALTER TABLE candidates ADD COLUMN latency_predicted INTEGER NOT NULL DEFAULT 0",
    ],
}

CANDIDATE_COLUMNS = (
    "id", "genome", "status", "generation", "phase", "subproblem", "f1", "f2", "f1_raw", "parameters",
    "predicted_f1", "predicted_std", "metrics", "curves", "queued_at", "started_at", "finished_at",
    "seconds", "device", "error", "reused_from", "pruned", "gflops", "latency_ms", "latency_predicted",
)
_JSON_COLUMNS = ("genome", "metrics", "curves")


def db_path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / DB_NAME


def is_run(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a run database. One left empty by a process killed while creating it
    (creation is one transaction) is not a run, so ``emonas search --out`` can start it again."""
    p = db_path(path)
    if not p.is_file():
        return False
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] > 0
        finally:
            conn.close()
    except sqlite3.Error:
        return True  # unreadable: a run in trouble, never to be overwritten


#: Where the mount table is read (tests point this at a made-up table).
MOUNTS = "/proc/mounts"
#: File systems on which SQLite's and flock's locking cannot be trusted.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb2", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs",
    "beegfs", "davfs", "ncpfs", "fuse.sshfs", "sshfs", "fuse.glusterfs", "fuse.rclone", "fuse.s3fs", "fuse.gcsfuse",
})


def filesystem_type(path: str | os.PathLike, mounts: str | os.PathLike | None = None) -> str | None:
    """The type of the file system holding ``path`` (from the mount table), or None if unknown."""
    target = os.path.realpath(path)
    best, kind = "", None
    try:
        lines = Path(mounts or MOUNTS).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        # the mount table escapes spaces and tabs in mount points as octal (\040)
        point = fields[1].encode().decode("unicode_escape")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def network_filesystem_warning(run_dir: str | os.PathLike) -> str | None:
    """A warning when ``run_dir`` lies on a network file system (SQLite locking is unreliable there)."""
    kind = filesystem_type(run_dir)
    if kind is None or kind not in NETWORK_FILESYSTEMS and not kind.startswith("nfs"):
        return None
    return (f"{run_dir} is on a network file system ({kind}): SQLite and file locks are unreliable there, "
            "so two machines may corrupt the run; keep runs on a local disk")


#: OSError numbers that mean "this folder cannot be written now" rather than a bug or bad input.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


@contextmanager
def write_errors(run_dir: str | os.PathLike):
    """Turn a failed write to the run (disk full, read-only folder, I/O error) into a one-line RunError.

    SQLite rolls the transaction back, so the database stays as it was before; the run continues
    with ``emonas resume`` once the cause is gone, or, where its creation was what failed and there
    is no run yet, starts again.
    """
    try:
        yield
    except (sqlite3.OperationalError, OSError) as exc:
        text = str(exc) if isinstance(exc, sqlite3.Error) else (exc.strerror or str(exc))
        if isinstance(exc, sqlite3.OperationalError) and not _is_write_failure(text):
            raise
        if isinstance(exc, OSError) and exc.errno not in WRITE_ERRNOS:
            raise
        fix = ("close the program holding run.db" if "locked" in text.lower()
               else "free space or make the folder writable")
        after = f"then `emonas resume {run_dir}`" if is_run(run_dir) else "then start the search again with this --out"
        raise RunError(f"{run_dir}: cannot write the run ({text}); nothing written was lost: {fix}, {after}") from None


def _is_write_failure(text: str) -> bool:
    text = text.lower()
    return any(s in text for s in ("full", "readonly", "read-only", "disk i/o", "unable to open", "no space", "locked"))


class RunLock:
    """Exclusive writer lock on ``RUN/run.lock`` (flock), recording pid and host for the message."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only folder or one of another user
            raise RunError(f"{self.path}: cannot take the run's lock ({exc.strerror}); the run folder must be writable") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = self.owner()
            os.close(fd)
            who = f"process {owner.get('pid')} on {owner.get('host')}" if owner else "another process"
            raise RunError(f"{self.path.parent}: the run is being written by {who}; wait for it or stop it first") from None
        previous = self.owner()
        if previous and previous.get("pid") and previous.get("pid") != os.getpid():
            log.info("taking over the lock of %s left by process %s", self.path.parent, previous.get("pid"))
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
            os.fsync(fd)
        except OSError as exc:  # disk full: the lock is held but its owner cannot be written
            os.close(fd)
            raise RunError(f"{self.path}: cannot write the run's lock ({exc.strerror})") from None
        self.fd = fd

    def owner(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            try:
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None

    def is_held_elsewhere(self) -> bool:
        """True while some live process holds the lock (without taking it)."""
        import fcntl

        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)


def check_new_run(run_dir: str | os.PathLike, dataset: str | os.PathLike | None = None) -> None:
    """Refuse a new run's folder before anything is read or imported: a run there already, or a folder
    that is, or lies inside, its ``dataset`` (a command never writes over what it reads)."""
    if is_run(run_dir):
        raise RunError(f"{run_dir}: a run exists here already; continue it with `emonas resume {run_dir}` "
                       "or choose another --out")
    if dataset and str(dataset) != "demo":
        from engine.outputs import Source, check_output

        check_output(run_dir, [Source(dataset, "dataset")], option="--out")


def _existing_run(run_dir: str | os.PathLike) -> Path:
    """``run_dir`` as a Path, or a RunError when it holds no run."""
    run_dir = Path(run_dir)
    if not is_run(run_dir):
        if db_path(run_dir).is_file():  # creation rolled back (disk full, killed): nothing to continue
            raise RunError(f"{run_dir}: not a run directory (its {DB_NAME} holds no run: the search that "
                           f"created it stopped before its first write); start the search again with this --out")
        raise RunError(f"{run_dir}: not a run directory (no {DB_NAME})")
    return run_dir


class RunStore:
    """Access to one run's database. ``create``/``open_writer`` take the lock; ``open_readonly`` doesn't."""

    def __init__(self, run_dir: Path, conn: sqlite3.Connection, lock: RunLock | None, readonly: bool):
        self.run_dir = Path(run_dir)
        self.conn = conn
        self.lock = lock
        self.readonly = readonly
        self.schema_version = SCHEMA_VERSION  # of the database as opened (older runs read as they are)

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def create(cls, run_dir: str | os.PathLike, meta: dict[str, Any]) -> "RunStore":
        """A new run in ``run_dir`` (created; must not hold a run already)."""
        run_dir = Path(run_dir)
        check_new_run(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "candidates").mkdir(exist_ok=True)
        except OSError as exc:
            raise RunError(f"{run_dir}: cannot create the run directory ({exc.strerror})") from None
        lock = RunLock(run_dir)
        lock.acquire()
        try:
            warning = network_filesystem_warning(run_dir)
            if warning:
                log.warning("%s", warning)
            store = cls(run_dir, cls._connect(db_path(run_dir), readonly=False), lock, readonly=False)
            rows = {"schema_version": SCHEMA_VERSION, "created": time.time(), "status": "created", **meta}
            if warning:
                rows["filesystem_warning"] = warning
            # tables and meta at once: a kill leaves no half-made run, and a failed write no run to resume
            with store._tx("create") as c:
                for statement in filter(None, (t.strip() for t in _SCHEMA.split(";"))):
                    c.execute(statement)
                c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in rows.items()])
        except BaseException:
            lock.release()
            raise
        return store

    @classmethod
    def open_writer(cls, run_dir: str | os.PathLike) -> "RunStore":
        """An existing run, for writing (resume); a stale lock of a dead process is taken over."""
        run_dir = _existing_run(run_dir)
        lock = RunLock(run_dir)
        lock.acquire()
        try:
            conn = cls._connect(db_path(run_dir), readonly=False)
            store = cls(run_dir, conn, lock, readonly=False)
            store._check_version()
            store._migrate()
            with write_errors(run_dir), conn:
                conn.executescript(_SCHEMA)
            warning = network_filesystem_warning(run_dir)
            if warning:
                log.warning("%s", warning)
            if warning != store.get_meta("filesystem_warning"):
                store.set_meta(filesystem_warning=warning)
        except BaseException:
            lock.release()
            raise
        return store

    @classmethod
    def open_readonly(cls, run_dir: str | os.PathLike) -> "RunStore":
        """Read access while another process may be writing (no lock taken)."""
        run_dir = _existing_run(run_dir)
        store = cls(run_dir, cls._connect(db_path(run_dir), readonly=True), None, readonly=True)
        store._check_version()
        return store

    @staticmethod
    def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)
            else:
                conn = sqlite3.connect(path, timeout=30, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.row_factory = sqlite3.Row
            return conn
        except sqlite3.DatabaseError as exc:
            raise RunError(f"{path}: cannot open the run database ({exc})") from None

    def _check_version(self) -> None:
        try:
            v = self.get_meta("schema_version")
        except sqlite3.DatabaseError as exc:
            raise RunError(f"{db_path(self.run_dir)}: not a run database ({exc})") from None
        if not isinstance(v, int) or not 1 <= v <= SCHEMA_VERSION:
            raise RunError(f"{db_path(self.run_dir)}: run database schema_version {v} is not supported "
                           f"(expected 1 to {SCHEMA_VERSION}; a newer EMONAS Studio wrote it)")
        self.schema_version = v

    def _migrate(self) -> None:
        """Bring an older run's database to ``SCHEMA_VERSION`` (one transaction per version step).

        Readers need no migration: rows of older runs simply lack the newer columns.
        """
        v = self.get_meta("schema_version")
        while v < SCHEMA_VERSION:
            with self._tx("migrate") as c:
                for statement in _MIGRATIONS[v]:
                    c.execute(statement)
                for statement in filter(None, (t.strip() for t in _SCHEMA.split(";"))):
                    c.execute(statement)
                c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (json.dumps(v + 1),))
            log.info("%s: run database migrated from schema version %d to %d", self.run_dir, v, v + 1)
            v += 1
        self.schema_version = v

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            if self.lock is not None:
                self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _tx(self, name: str = "write"):
        """One write transaction; a failed write (disk full, read-only folder) becomes a RunError."""
        if self.readonly:
            raise RunError(f"{self.run_dir}: opened read-only")
        with write_errors(self.run_dir):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                fault(f"store.{name}")  # inside the transaction: a kill here must lose it whole
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:  # SQLite may already have rolled back (SQLITE_FULL)
                    try:
                        self.conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise

    # ---- meta ----------------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def train_config(self) -> dict | None:
        """The run's training settings (``engine.train.TrainerConfig`` fields), None before they are
        stored. A run stored before the learning-rate schedule was recorded trained at a constant rate,
        the default then: its settings say so, so that resuming or retraining it keeps that rate."""
        train = self.get_meta("train_config")
        if train is None:
            return None
        return {"lr_schedule": "constant", **train}

    def set_meta(self, **items: Any) -> None:
        with self._tx("meta") as c:
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in items.items()])

    def meta(self) -> dict[str, Any]:
        return {r[0]: json.loads(r[1]) for r in self.conn.execute("SELECT key, value FROM meta")}

    # ---- strategy state ------------------------------------------------------------------------
    def save_state(self, state: dict) -> int:
        with self._tx("state") as c:
            step = c.execute("SELECT COALESCE(MAX(step), -1) + 1 FROM strategy_state").fetchone()[0]
            c.execute("INSERT INTO strategy_state VALUES (?, ?, ?)", (step, json.dumps(state), time.time()))
        return step

    def latest_state(self) -> dict | None:
        row = self.conn.execute("SELECT state FROM strategy_state ORDER BY step DESC LIMIT 1").fetchone()
        return None if row is None else json.loads(row[0])

    # ---- candidates ----------------------------------------------------------------------------
    def add_candidates(self, rows: Iterable[dict]) -> list[int]:
        """Insert queued candidates (one transaction); returns their ids, existing ones kept."""
        ids = []
        with self._tx("add") as c:
            for r in rows:
                text = r["genome"] if isinstance(r["genome"], str) else json.dumps(r["genome"])
                found = c.execute("SELECT id FROM candidates WHERE genome = ?", (text,)).fetchone()
                if found:
                    ids.append(found[0])
                    continue
                cols = {"status": "queued", "queued_at": time.time(), **r, "genome": text}
                cols = {k: (json.dumps(v) if k in ("metrics", "curves") and v is not None else v) for k, v in cols.items()}
                cur = c.execute(
                    f"INSERT INTO candidates ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", tuple(cols.values())
                )
                ids.append(cur.lastrowid)
        return ids

    def update_candidate(self, cid: int, **cols: Any) -> None:
        """Set columns of one candidate and commit at once."""
        cols = {k: (json.dumps(v) if k in ("metrics", "curves") and v is not None else v) for k, v in cols.items()}
        unknown = set(cols) - set(CANDIDATE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown candidate columns {sorted(unknown)}")
        with self._tx("update") as c:
            c.execute(f"UPDATE candidates SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?", (*cols.values(), cid))

    def requeue_running(self) -> int:
        """Candidates left 'running' by a killed process go back to 'queued'; returns how many."""
        with self._tx("requeue") as c:
            return c.execute("UPDATE candidates SET status = 'queued', started_at = NULL WHERE status = 'running'").rowcount

    @staticmethod
    def _row(r: sqlite3.Row) -> CandidateRow:
        d = dict(r)
        for k in _JSON_COLUMNS:
            if d.get(k) is not None:
                d[k] = json.loads(d[k])
        return CandidateRow.from_dict(d)

    def candidates(self, status: str | None = None) -> list[CandidateRow]:
        """The candidates (of one status, if given) by id, as ``CandidateRow`` records."""
        q, args = "SELECT * FROM candidates", ()
        if status:
            q, args = q + " WHERE status = ?", (status,)
        return [self._row(r) for r in self.conn.execute(q + " ORDER BY id", args)]

    def candidate(self, cid: int) -> CandidateRow:
        r = self.conn.execute("SELECT * FROM candidates WHERE id = ?", (int(cid),)).fetchone()
        if r is None:
            raise RunError(f"{self.run_dir}: no candidate {cid}")
        return self._row(r)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUSES}
        for status, n in self.conn.execute("SELECT status, COUNT(*) FROM candidates GROUP BY status"):
            out[status] = n
        return out

    def objectives(self) -> list[tuple[int, float, float, int]]:
        """(id, f1, f2, parameters) of the finished candidates by finish time (then id): a cheap read of
        the objectives alone, for progress and fronts (no curves or metrics decoded)."""
        q = ("SELECT id, f1, f2, parameters FROM candidates WHERE status = 'done' "
             "AND f1 IS NOT NULL AND f2 IS NOT NULL ORDER BY COALESCE(finished_at, 0), id")
        return [(int(i), float(f1), float(f2), int(p or 0)) for i, f1, f2, p in self.conn.execute(q)]

    def mean_seconds(self) -> float | None:
        """Mean training time of the candidates this run trained itself (done, not reused), None if none."""
        q = ("SELECT AVG(seconds) FROM candidates WHERE status = 'done' AND seconds > 0 "
             "AND (reused_from IS NULL OR reused_from = '')")
        v = self.conn.execute(q).fetchone()[0]
        return None if v is None else float(v)

    def front(self) -> list[CandidateRow]:
        """The Pareto-optimal finished candidates (f1, f2 minimized), by ascending f1."""
        from engine.search.pareto import pareto_front

        done = self.candidates("done")
        if not done:
            return []
        idx = pareto_front([[c["f1"], c["f2"]] for c in done])
        return sorted((done[i] for i in idx), key=lambda c: (c["f1"], c["f2"]))

    # ---- latency -------------------------------------------------------------------------------
    def add_latency(self, genome: str, target: str, threads: int, hardware: str, shape, latency_ms: float,
                    runs_ms, flops: float | None) -> None:
        """Record one genome's measured latency (kept; a second measurement of the same key replaces it)."""
        with self._tx("latency") as c:
            c.execute("INSERT OR REPLACE INTO latency VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (genome, target, int(threads), hardware, json.dumps(list(shape)), float(latency_ms),
                       json.dumps(list(runs_ms)), flops, time.time()))

    def latencies(self, target: str | None = None, threads: int | None = None, hardware: str | None = None,
                  shape=None) -> list[dict]:
        """Measured latencies, optionally only those of one target, thread count, hardware and shape."""
        if self.schema_version < 2:
            return []
        q, args = "SELECT * FROM latency WHERE 1", []
        for col, val in (("target", target), ("threads", threads), ("hardware", hardware)):
            if val is not None:
                q += f" AND {col} = ?"
                args.append(val)
        if shape is not None:
            q += " AND shape = ?"
            args.append(json.dumps(list(shape)))
        out = []
        for r in self.conn.execute(q + " ORDER BY measured_at", args):
            d = dict(r)
            d["shape"], d["runs_ms"] = json.loads(d["shape"]), json.loads(d["runs_ms"])
            out.append(d)
        return out

    def candidate_dir(self, cid: int) -> Path:
        return self.run_dir / "candidates" / str(int(cid))

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]


def recorded_dataset(run_dir: str | os.PathLike) -> str | None:
    """The dataset a run searched on as its database records it ("demo" or a folder), or None (not
    recorded, or not a run database). Reads the database only: the folder may have moved since."""
    try:
        with RunStore.open_readonly(run_dir) as store:
            spec = (store.get_meta("problem") or {}).get("data") or {}
    except EmonasError:
        return None
    name = spec.get("dataset")
    return name if isinstance(name, str) and name else None
