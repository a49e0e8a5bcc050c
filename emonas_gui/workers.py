"""Qt adapters over long engine jobs: plain engine callbacks in, queued Qt signals out.

The engine knows nothing of Qt: its long jobs take ``callback(event: dict)`` and a ``cancel`` object
with ``is_set()``. ``EngineJob`` runs such a job in its own ``QThread`` and turns

- each callback event (a dict, or a dataclass such as the session's ``SearchEvent``) into
  ``event(dict)``,
- log records and Python warnings raised in that thread into ``log(str)`` / ``warning(str)``
  (a warning in a worker must never reach the GUI thread's excepthook),
- the return value into ``finished(object)``,
- an ``EmonasError`` into ``failed(str)`` with its one-line message, and any other exception into
  ``failed(str)`` with a one-line summary (the traceback goes to the log, never to the user),
- and always ``done()`` last.

Signals are emitted from the worker thread and delivered queued to receivers living in the GUI
thread, so slots run on the GUI thread and may touch widgets. Only the GUI thread touches widgets.

``JobControl`` is the cancel object handed to the engine: ``stop()`` makes ``is_set()`` true;
``pause()`` makes the next ``is_set()`` call block the worker (not the GUI) until ``resume()`` or
``stop()``, so training pauses between steps without losing anything.

``ProcessJob`` has the same signals and control but runs its job in a child process (the search: a
worker thread importing and running PyTorch holds Python's global interpreter lock for long stretches,
which the GUI thread would feel; a child process has its own). Its control travels as
``multiprocessing`` events and everything else comes back through a queue read by a small thread.

Every job that imports PyTorch runs in a child process: the search, and ``evaluate_case_job``,
``export_job`` and ``predict_scans_job`` below (the engine's jobs, ``engine.run.jobs``). ``EngineJob``
threads do file I/O only (reading scans for display, a run's validation cases, a report).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
import weakref
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal

from emonas_gui.jobcore import JobControl, one_line, plain_event, record_line
from engine.errors import EmonasError

__all__ = ["EngineJob", "ProcessJob", "JobControl", "one_line"]

log = logging.getLogger(__name__)

JobFunction = Callable[[Callable[[dict], None], "JobControl"], Any]


class _ThreadLogHandler(logging.Handler):
    """Forwards log records made in one thread (the worker's) to a callable."""

    def __init__(self, thread_id: int, sink: Callable[[logging.LogRecord], None]):
        super().__init__(logging.INFO)
        self.thread_id = thread_id
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            try:
                self.sink(record)
            except RuntimeError:  # the receiving QObject is gone
                pass


#: Threads whose jobs have not yet been seen to end: keeps each QThread object alive until its
#: thread has really finished, whatever happens to the job that started it (destroying a running
#: QThread aborts the process).
_LIVE_THREADS: set["_Thread"] = set()


class _Reaper(QObject):
    """Lives in the GUI thread; ``finished`` of each worker thread reaches it queued."""

    def release(self) -> None:
        thread = self.sender()
        if not isinstance(thread, _Thread):
            return
        thread.wait()  # returns at once: ``finished`` was the thread's last act
        _LIVE_THREADS.discard(thread)
        job = thread._job
        thread._job = None
        if job is not None:
            # Drop what a finished job holds (its function's closure, its result, which may be
            # whole volumes); its slots already got the result through ``finished``. The small
            # QObject itself stays a child of its owner until the owner goes: deleting a job from
            # Qt's side (deleteLater) while Python-side connections to its signals exist crashes
            # PySide6 intermittently inside QObject::~QObject.
            job.fn = None
            job.result = None
            job.control.on_pause = None


_reaper: _Reaper | None = None


def _get_reaper() -> _Reaper:
    global _reaper
    if _reaper is None:
        _reaper = _Reaper()
    return _reaper


class _Thread(QThread):
    def __init__(self, job: "EngineJob"):
        super().__init__()
        self._job = job
        self.setObjectName(f"emonas-{job.name}")

    def run(self) -> None:  # noqa: D401 - Qt override
        self._job._run_in_thread()


class _Job(QObject):
    """What the app sees of a long job: its signals, its control, and whether it is running."""

    event = Signal(object)
    log = Signal(str)
    warning = Signal(str)
    finished = Signal(object)
    failed = Signal(str)
    paused = Signal()
    done = Signal()

    def __init__(self, name: str, control: JobControl, parent: QObject | None = None):
        super().__init__(parent)
        self.name = name
        self.control = control
        self.started_at: float | None = None
        # the GUI thread's view of the job: True from start() until done() was delivered, so that
        # every slot of done() (connected later) already sees the job as ended
        self._active = False
        self.done.connect(self._mark_done)

    def stop(self) -> None:
        """Ask the job to stop at its next check; returns at once."""
        self.control.stop()

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def _mark_done(self) -> None:
        self._active = False

    def is_running(self) -> bool:
        """True from ``start()`` until ``done`` has been delivered to the GUI thread."""
        return self._active


class EngineJob(_Job):
    """Runs ``fn(callback, control)`` in a QThread and reports through queued signals."""

    def __init__(self, fn: JobFunction, name: str = "job", parent: QObject | None = None):
        super().__init__(name, JobControl(), parent)
        self.fn = fn
        me = weakref.ref(self)  # the control does not hold its job: no reference cycle
        self.control.on_pause = lambda: (lambda job: job is not None and job.paused.emit())(me())
        self.result: Any = None
        self.error: str | None = None
        self._thread: _Thread | None = None

    # ---- control (GUI thread) ----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("a job runs once")
        self._thread = thread = _Thread(self)
        _LIVE_THREADS.add(thread)
        thread.finished.connect(_get_reaper().release)
        self.started_at = time.monotonic()
        self._active = True
        thread.start()

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until the thread ended (for shutdown and tests); True when it did."""
        return True if self._thread is None else bool(self._thread.wait(timeout_ms))

    def shutdown(self, timeout_ms: int = 60000) -> None:
        """Stop and wait for the thread (used when a panel closes)."""
        self.control.stop()
        self.wait(timeout_ms)

    # ---- worker thread -----------------------------------------------------------------------
    def _callback(self, ev: Any) -> None:
        # engine events are plain dicts or dataclasses of plain data; the GUI gets dicts
        self.event.emit(plain_event(ev))

    def _on_record(self, record: logging.LogRecord) -> None:
        kind, line = record_line(record)
        (self.warning if kind == "warning" else self.log).emit(line)

    def _run_in_thread(self) -> None:
        # Python warnings become records of the 'py.warnings' logger (process-wide and idempotent;
        # warnings.catch_warnings is not thread-safe), and this thread's records become signals.
        # Re-installed on every run: whoever swapped warnings.showwarning since (a test harness, a
        # library) would otherwise keep this thread's warnings from reaching the app.
        logging.captureWarnings(False)
        logging.captureWarnings(True)
        handler = _ThreadLogHandler(threading.get_ident(), self._on_record)
        targets = [logging.getLogger("engine"), logging.getLogger("py.warnings")]
        for lg in targets:
            lg.addHandler(handler)
        old_level = logging.getLogger("engine").level
        if old_level == logging.NOTSET or old_level > logging.INFO:
            logging.getLogger("engine").setLevel(logging.INFO)
        try:
            try:
                self.result = self.fn(self._callback, self.control)
            except EmonasError as exc:
                self.error = one_line(exc)
            except Exception as exc:  # noqa: BLE001 - nothing may escape a worker thread
                log.error("%s failed:\n%s", self.name, traceback.format_exc())
                self.error = one_line(exc)
        finally:
            for lg in targets:
                lg.removeHandler(handler)
            logging.getLogger("engine").setLevel(old_level)
        if self.error is not None:
            self.failed.emit(self.error)
        else:
            self.finished.emit(self.result)
        self.done.emit()


class ProcessJob(_Job):
    """Runs ``engine.run.jobs.JOBS[target](*args, callback, control)`` in a child process
    (``engine.run.child.ChildJob``), its messages turned into this job's signals.

    Same signals, control (``pause``/``resume``/``stop``, ``control.paused``) and life cycle as
    :class:`EngineJob`. A child that dies without a result (killed, out of memory, a crash in native
    code) gives ``failed`` with its exit code; the app keeps running and the run stays resumable.
    ``detach()`` lets the child run on without the app (the window closed with the search left
    running): the job then ends for the app (``done``), and neither ``shutdown`` nor the app's exit
    stops the child.
    """

    def __init__(self, target: str, args: tuple, name: str = "job", parent: QObject | None = None,
                 adapt: Callable[[Any], Any] | None = None):
        from engine.run.child import ChildJob

        self._child = ChildJob(target, args, name)  # the process, its control and its messages
        super().__init__(name, self._child.control, parent)
        self._adapt = adapt  # the result as the panel reads it (plain data, in the reader thread)
        self._reader: threading.Thread | None = None

    @property
    def _proc(self):
        return self._child.proc

    def start(self) -> None:
        self._child.start()  # raises if the job ran before
        self.started_at = time.monotonic()
        self._active = True
        self._reader = threading.Thread(target=self._read, name=f"emonas-{self.name}-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Reader thread: the child's messages become signals (queued to the GUI thread)."""
        signals = {"event": self.event, "log": self.log, "warning": self.warning,
                   "finished": self.finished, "failed": self.failed}
        while True:
            kind, payload = self._child.next_message()
            if kind == "detached":  # the child runs on without the app: nothing more to read or wait for
                break
            if kind == "finished" and self._adapt is not None:
                try:
                    payload = self._adapt(payload)
                except Exception as exc:  # noqa: BLE001 - a result the panel cannot read is one line, not a crash
                    log.exception("reading the %s result failed", self.name)
                    kind, payload = "failed", one_line(exc)
            if kind == "paused":
                self.paused.emit()
            else:
                signals[kind].emit(payload)
            if kind in ("finished", "failed"):
                break
        # the job has ended for the app (the run's database is closed and unlocked); the child
        # process may take a moment longer to exit, which this thread waits for
        self.done.emit()
        if not self._child.detached.is_set():
            self._child.join()

    @property
    def pid(self) -> int | None:
        """The child's process id (None before ``start``)."""
        return self._child.pid

    @property
    def detached(self) -> bool:
        return self._child.detached.is_set()

    def detach(self) -> int | None:
        """Let the child run on without the app; returns its pid (None when it is not running).

        The child stops sending messages and no longer stops when the app ends; the job ends for the
        app at once. The run stays locked by the child; another app session opening the run watches
        it and can pause it (SIGINT, see ``jobcore``)."""
        import multiprocessing.process

        proc = self._proc
        if proc is None or not proc.is_alive() or self.control.stopped:
            return None
        self._child.detached.set()
        # at exit multiprocessing terminates the app's daemonic children and waits for the others:
        # this one is no longer the app's (it is still the parent, so a test can reap it)
        multiprocessing.process._children.discard(proc)
        return proc.pid

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until the child and the reader have ended; True when they did."""
        if self._reader is None:
            return True
        self._reader.join(timeout_ms / 1000)
        return not self._reader.is_alive()

    def shutdown(self, timeout_ms: int = 60000) -> None:
        """Stop and wait for the child (used when a panel closes); end it if it does not stop in time.
        A detached child is left running (only the reader is waited for)."""
        if self.detached:
            self.wait(timeout_ms)
            return
        self.control.stop()
        if not self.wait(timeout_ms) and self._proc is not None and self._proc.is_alive():
            log.warning("%s process did not stop within %d s: terminating it", self.name, timeout_ms // 1000)
            self._proc.terminate()  # the run database is crash-safe; the run stays resumable
            self.wait(10000)


# ---- engine calls behind the app's long jobs (the engine's jobs, in the shapes the panels read) ---
def evaluate_case_job(run_dir: str | Path, candidate_ids: list[int], case_id: str,
                      parent: QObject | None = None) -> ProcessJob:
    """``engine.run.jobs.evaluate_case`` in a child process; its result as a dict: ``{"case_id", "image",
    "spacing", "modalities", "reference", "labels", "predictions" {id: (X, Y, Z)}, "metrics"}``."""
    from engine.run.jobs import EvaluateCaseRequest

    request = EvaluateCaseRequest(str(run_dir), tuple(int(c) for c in candidate_ids), str(case_id))
    return ProcessJob("evaluate_case", (request,), "evaluate-case", parent,
                      adapt=lambda r: {f.name: getattr(r, f.name) for f in dataclasses.fields(r)})


def export_job(run_dir: str | Path, candidate_id: int, out_dir: str | Path, formats: list[str], retrain: bool,
               epochs: int | None, parent: QObject | None = None) -> ProcessJob:
    """``engine.run.jobs.export`` of a run's candidate in a child process (retrained first if asked);
    its result as ``{"model_dir", "files", "parameters", "retrained_in"}``."""
    from engine.run.jobs import ExportRequest

    request = ExportRequest(out_dir=str(out_dir), run_dir=str(run_dir), candidate_id=int(candidate_id),
                            formats=tuple(formats), retrain=bool(retrain), epochs=epochs)
    return ProcessJob("export", (request,), "export", parent,
                      adapt=lambda r: {"model_dir": r.model_dir, "files": r.files, "parameters": r.parameters,
                                       "retrained_in": r.retrained_in})


def predict_scans_job(model_dir: str | Path, scans: list[str | Path], out_dir: str | Path,
                      parent: QObject | None = None) -> ProcessJob:
    """``engine.run.jobs.predict`` in a child process; its result as ``{"written": [label maps], "scans":
    [each case's first scan], "labels"}``. Cancelled, it returns the cases already written (each whole)."""
    from engine.run.jobs import PredictRequest

    request = PredictRequest(model=str(model_dir), output=str(out_dir), inputs=tuple(str(s) for s in scans))
    return ProcessJob("predict", (request,), "predict", parent,
                      adapt=lambda r: {"written": r.outputs, "scans": [c[0] for c in r.inputs], "labels": r.labels})
