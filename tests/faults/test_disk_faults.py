"""A full disk and a read-only run folder: a clear one-line error, the database intact, and the run
continues to the uninterrupted result once space is back.

Tests run as root, where permissions do not stop writes (and an unprivileged user cannot reach this
Python), so the faults come from SQLite itself (``PRAGMA max_page_count``: a real SQLITE_FULL) and
from fault points (engine.faults) raising what SQLite and the kernel raise on a full or read-only
file system.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import logged_evaluate, small_config, snapshot
from engine.errors import RunError
from engine import faults
from engine.run import RunStore, SearchSession
from search_fakes import PROBLEM


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    SearchSession(run, small_config(), logged_evaluate, PROBLEM).run()
    return snapshot(run)


def _resume_and_compare(run, reference, committed):
    """Space is back: resume finishes the run, keeps what was committed, and matches the reference."""
    SearchSession.open(run, logged_evaluate, PROBLEM).run()
    final = snapshot(run)
    assert final["status"] == "finished" and final["integrity"] == "ok"
    assert all(final["finished_at"][cid] == t for cid, t in committed.items()), "a committed candidate was redone"
    assert final["rows"] == reference["rows"] and final["front"] == reference["front"]


def test_sqlite_running_out_of_pages_stops_cleanly_and_resume_finishes(tmp_path, monkeypatch, reference):
    run = tmp_path / "run"
    connect = RunStore._connect

    def small_disk(path, readonly):
        conn = connect(path, readonly)
        if not readonly:  # a "disk" a few pages larger than the database: SQLite answers SQLITE_FULL
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages + 12}")
        return conn

    monkeypatch.setattr(RunStore, "_connect", staticmethod(small_disk))
    with pytest.raises(RunError) as err:
        SearchSession(run, small_config(), logged_evaluate, PROBLEM).run()
    message = str(err.value)
    assert "database or disk is full" in message and "emonas resume" in message and "\n" not in message
    monkeypatch.setattr(RunStore, "_connect", staticmethod(connect))
    now = snapshot(run)
    assert now["integrity"] == "ok"
    assert 0 < len(now["finished_at"]) < len(reference["rows"])  # it filled up mid-run
    assert all(now["rows"][cid] == reference["rows"][cid] for cid in now["finished_at"])
    _resume_and_compare(run, reference, now["finished_at"])


@pytest.mark.parametrize("fault, needle", [
    ("candidate.folder:4:enospc", "No space left on device"),  # writing a candidate's training folder
    ("candidate.folder:3:erofs", "Read-only file system"),
    ("store.state:3:diskfull", "database or disk is full"),  # mid-commit of the strategy state
    ("store.update:7+:readonly", "attempt to write a readonly database"),  # a candidate's row, and all after
])
def test_full_or_read_only_file_system_mid_run(tmp_path, monkeypatch, reference, fault, needle):
    run = tmp_path / "run"
    monkeypatch.setenv("EMONAS_FAULT", fault)
    faults.reset()
    with pytest.raises(RunError, match=needle) as err:
        SearchSession(run, small_config(), logged_evaluate, PROBLEM).run()
    assert "\n" not in str(err.value) and str(run) in str(err.value)
    monkeypatch.delenv("EMONAS_FAULT")
    now = snapshot(run)
    assert now["integrity"] == "ok" and now["status"] in ("failed", "running")
    # the candidate being written is not recorded as failed: it is trained on resume
    assert all(r["status"] != "failed" or "injected failure" in r["error"] for r in now["rows"].values())
    _resume_and_compare(run, reference, now["finished_at"])


def test_a_run_whose_creation_failed_is_started_again_not_resumed(tmp_path, monkeypatch, reference):
    """A full disk at the run's very first write leaves no run: the error says to start the search again
    (not to resume), resume says why there is nothing to resume, and the same search then runs whole."""
    run = tmp_path / "run"
    monkeypatch.setenv("EMONAS_FAULT", "store.create:1:diskfull")
    faults.reset()
    with pytest.raises(RunError) as err:
        SearchSession(run, small_config(), logged_evaluate, PROBLEM).run()
    message = str(err.value)
    assert "database or disk is full" in message and "start the search again" in message
    assert "emonas resume" not in message and "\n" not in message
    monkeypatch.delenv("EMONAS_FAULT")
    assert (run / "run.db").is_file()  # SQLite made the file; the transaction that filled it rolled back
    p = emonas("resume", run)
    last = p.stderr.strip().splitlines()[-1]
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert last.startswith("emonas: error: ") and "holds no run" in last and "start the search again" in last
    SearchSession(run, small_config(), logged_evaluate, PROBLEM).run()
    final = snapshot(run)
    assert final["status"] == "finished" and final["rows"] == reference["rows"]


def emonas(*args, fault=None, env=None):
    e = {**os.environ, "EMONAS_NO_PROGRESS": "1", **(env or {})}
    if fault:
        e["EMONAS_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900, env=e)


def test_cli_search_and_resume_on_a_full_or_read_only_disk(tiny_demo, tmp_path):
    data, config = tiny_demo
    run = tmp_path / "run"
    env = {"EMONAS_CACHE_DIR": str(tmp_path / "cache")}
    p = emonas("search", "--dataset", data, "--config", config, "--out", run, "--population", 2, "--generations", 1,
               "--epochs", 1, "--seed", 1, "--device", "cpu", "--json", fault="store.meta:1+:diskfull", env=env)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert "Traceback" not in p.stderr and lines[-1].startswith("emonas: error: ")
    assert "database or disk is full" in lines[-1] and f"emonas resume {run}" in lines[-1]
    assert json.loads(p.stdout.strip().splitlines()[-1])["error"] == lines[-1][len("emonas: error: "):]
    with RunStore.open_readonly(run) as s:
        assert s.integrity_check() == "ok"
    for fault, needle in (("store.requeue:1:readonly", "readonly database"), ("session.start:1:erofs", None)):
        p = emonas("resume", run, fault=fault, env=env)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
        if needle:
            assert needle in p.stderr.strip().splitlines()[-1]
    p = emonas("resume", run, "--json", env=env)  # space is back
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["status"] == "finished" and out["counts"]["done"] + out["counts"]["failed"] == 2
    with RunStore.open_readonly(run) as s:
        assert s.integrity_check() == "ok"
    with sqlite3.connect(run / "run.db") as c:
        assert c.execute("PRAGMA quick_check").fetchone()[0] == "ok"
