"""The run database: schema, one writer at a time, read-only readers, stale lock take-over."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from engine.errors import RunError
from engine.run.store import SCHEMA_VERSION, RunStore


def _hold_lock(run_dir, ready_file):
    code = textwrap.dedent(f"""
        import time, pathlib
        from engine.run.store import RunStore
        s = RunStore.open_writer({str(run_dir)!r})
        pathlib.Path({str(ready_file)!r}).write_text("x")
        time.sleep(120)
    """)
    p = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(300):
        if os.path.exists(ready_file):
            return p
        time.sleep(0.05)
    p.kill()
    raise AssertionError("lock holder did not start")


def test_schema_candidates_and_state(tmp_path):
    run = tmp_path / "run"
    with RunStore.create(run, {"config": {"seed": 1}}) as s:
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        ids = s.add_candidates([{"genome": '{"a": 1}', "generation": 0, "phase": "init"}, {"genome": '{"a": 2}'}])
        assert s.add_candidates([{"genome": '{"a": 1}'}]) == ids[:1]  # one row per genome
        s.update_candidate(ids[0], status="done", f1=0.2, f2=0.5, parameters=10, metrics={"dice": {"x": 0.8}})
        s.update_candidate(ids[1], status="failed", f1=1.0, f2=1.0, error="boom")
        s.save_state({"generation": 1})
        s.save_state({"generation": 2})
        assert s.latest_state() == {"generation": 2}
        assert s.counts() == {"queued": 0, "running": 0, "done": 1, "failed": 1}
        assert [c["id"] for c in s.front()] == [ids[0]]
        assert s.candidate(ids[0])["metrics"] == {"dice": {"x": 0.8}}
        with pytest.raises(sqlite3.IntegrityError):
            s.update_candidate(ids[0], status="bogus")
    ro = RunStore.open_readonly(run)
    assert ro.get_meta("schema_version") == SCHEMA_VERSION and ro.get_meta("config") == {"seed": 1}
    with pytest.raises(RunError, match="read-only"):
        ro.set_meta(x=1)
    ro.close()
    with pytest.raises(RunError, match="a run exists here already"):
        RunStore.create(run, {})
    with pytest.raises(RunError, match="not a run directory"):
        RunStore.open_readonly(tmp_path / "nothing")


def test_second_writer_is_refused_with_the_owner_pid_and_readers_pass(tmp_path):
    run = tmp_path / "run"
    RunStore.create(run, {}).close()
    holder = _hold_lock(run, tmp_path / "ready")
    try:
        with pytest.raises(RunError, match=f"process {holder.pid} on"):
            RunStore.open_writer(run)
        with RunStore.open_readonly(run) as ro:  # the app watching a live run
            assert ro.counts()["done"] == 0
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed writer's lock is stale: taken over without any flag
    with RunStore.open_writer(run) as s:
        assert s.lock.owner()["pid"] == os.getpid()
        assert s.integrity_check() == "ok"


def test_interrupted_candidates_go_back_to_the_queue(tmp_path):
    with RunStore.create(tmp_path / "r", {}) as s:
        (cid,) = s.add_candidates([{"genome": "{}"}])
        s.update_candidate(cid, status="running", started_at=1.0)
        assert s.requeue_running() == 1
        assert s.candidate(cid)["status"] == "queued"


def test_not_a_database(tmp_path):
    (tmp_path / "run.db").write_text("this is not sqlite")
    with pytest.raises(RunError, match="run.db"):
        RunStore.open_readonly(tmp_path)
