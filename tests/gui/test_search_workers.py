"""The Qt adapter over engine jobs: events, errors, warnings, pause and stop, all as signals."""

from __future__ import annotations

import logging
import threading
import time
import warnings

from engine.errors import DataError
from emonas_gui.workers import EngineJob


def _collect(job):
    got = {"event": [], "log": [], "warning": [], "finished": [], "failed": [], "threads": set()}

    def rec(key):
        def slot(*args):
            got["threads"].add(threading.get_ident())
            got[key].append(args[0] if args else None)
        return slot

    for key in ("event", "log", "warning", "finished", "failed"):
        getattr(job, key).connect(rec(key))
    return got


def test_events_and_result_arrive_on_the_gui_thread(qtbot):
    def fn(callback, control):
        for i in range(3):
            callback({"event": "step", "i": i})
        logging.getLogger("engine.test").info("halfway there")
        warnings.warn("spacing is unusual")
        return 42

    job = EngineJob(fn, "t")
    got = _collect(job)
    with qtbot.waitSignal(job.done, timeout=5000):
        job.start()
    job.wait()
    assert [e["i"] for e in got["event"]] == [0, 1, 2]
    assert got["finished"] == [42] and got["failed"] == []
    assert any("halfway" in m for m in got["log"])
    assert any("spacing is unusual" in m for m in got["warning"])
    assert got["threads"] == {threading.get_ident()}  # slots ran on the GUI thread


def test_errors_become_one_line_messages(qtbot):
    def bad_file(callback, control):
        raise DataError("/data/case1.nii.gz", "not a NIfTI file")

    def bug(callback, control):
        raise KeyError("x\nsecond line")

    for fn, expected in ((bad_file, "/data/case1.nii.gz: not a NIfTI file"), (bug, "unexpected KeyError")):
        job = EngineJob(fn, "t")
        got = _collect(job)
        with qtbot.waitSignal(job.done, timeout=5000):
            job.start()
        job.wait()
        assert len(got["failed"]) == 1 and got["finished"] == []
        assert got["failed"][0].startswith(expected) and "\n" not in got["failed"][0]
        assert "Traceback" not in got["failed"][0]


def test_pause_blocks_the_worker_and_stop_ends_it(qtbot):
    steps = []

    def fn(callback, control):
        while not control.is_set():
            steps.append(time.monotonic())
            callback({"event": "step", "n": len(steps)})
            time.sleep(0.01)
        return len(steps)

    job = EngineJob(fn, "t")
    got = _collect(job)
    job.start()
    qtbot.waitUntil(lambda: len(steps) > 3, timeout=5000)
    with qtbot.waitSignal(job.paused, timeout=5000):
        job.pause()
    n = len(steps)
    qtbot.wait(300)
    assert len(steps) == n  # no progress while paused
    job.resume()
    qtbot.waitUntil(lambda: len(steps) > n + 2, timeout=5000)
    with qtbot.waitSignal(job.done, timeout=5000):
        job.stop()
    job.wait()
    assert got["finished"] and got["finished"][0] >= n + 2
    assert not job.is_running()


def test_a_finished_job_lets_go_of_its_result_and_stays_a_valid_child(qtbot):
    from PySide6.QtCore import QObject
    from shiboken6 import Shiboken

    owner = QObject()
    big = bytearray(8 << 20)  # stands for a volume the job returned

    job = EngineJob(lambda cb, ctl: big, "t", owner)
    got = _collect(job)
    with qtbot.waitSignal(job.done, timeout=5000):
        job.start()
    qtbot.waitUntil(lambda: job.result is None and job.fn is None, timeout=5000)
    assert got["finished"][0] is big  # the slot had the result
    assert Shiboken.isValid(job) and job.parent() is owner and not job.is_running()
    assert job.wait(0)


def test_cycles_are_collected_on_the_gui_thread_only(qtbot):
    """With the app's collector (emonas_gui.gcguard) a worker's allocations never run a collection:
    garbage cycles, which may hold Qt objects, are freed on the GUI thread."""
    import gc

    from emonas_gui import gcguard

    assert gcguard.installed() and not gc.isenabled()
    freed_on: list[int] = []

    class Cyclic:
        def __init__(self):
            self.me = self

        def __del__(self):
            freed_on.append(threading.get_ident())

    gc.collect()
    Cyclic()  # garbage now, but only a collection can free it

    kept = []

    def churn():  # allocations that stay alive push the collector's counters past its thresholds
        for _ in range(20):
            kept.append([[i] for i in range(2_000)])

    worker = threading.Thread(target=churn)
    worker.start()
    worker.join()
    assert freed_on == []  # no collection ran in the worker
    qtbot.waitUntil(lambda: bool(freed_on), timeout=5000)
    assert freed_on == [threading.get_ident()]


def test_a_search_in_a_child_process_reports_bad_input_in_one_line(qtbot, tmp_path):
    from engine.config import SearchConfig
    from emonas_gui.workers import ProcessJob

    cfg = SearchConfig().replace(dataset=str(tmp_path / "no-such-dataset"))
    job = ProcessJob("search", (str(tmp_path / "run"), cfg.to_dict()), "search")
    got = _collect(job)
    with qtbot.waitSignal(job.done, timeout=120_000):
        job.start()
    assert job.wait(30_000)
    assert got["finished"] == [] and len(got["failed"]) == 1
    msg = got["failed"][0]
    assert "no-such-dataset" in msg and "\n" not in msg and "Traceback" not in msg
    assert not (tmp_path / "run").exists()  # refused before a run folder was made
    assert got["threads"] == {threading.get_ident()}  # the signals reached the GUI thread


def test_a_child_process_that_dies_is_reported_and_the_run_resumes(qtbot, tmp_path):
    import os
    import signal

    from engine.config import SearchConfig
    from engine.run.store import RunStore
    from emonas_gui.workers import ProcessJob

    cheap = ["conv3d_1x1x1", "identity"]
    cfg = SearchConfig().replace(
        dataset="demo", seed=1,
        space={"nf1": [8], "n_cells": [5], "op1": cheap, "op2": cheap, "op3": cheap, "op4": cheap},
        samea={"population": 2, "generations": 1, "neighbourhood": 2},
        training={"epochs": 1, "patience": 1, "extra": {"iterations_per_epoch": 2}},
        resources={"device": "cpu"},
    )
    run = tmp_path / "run"
    job = ProcessJob("search", (str(run), cfg.to_dict()), "search")
    got = _collect(job)
    job.start()
    qtbot.waitUntil(lambda: any(e.get("kind") == "started" for e in got["event"]), timeout=300_000)
    with qtbot.waitSignal(job.done, timeout=60_000):
        os.kill(job._proc.pid, signal.SIGKILL)  # as the out-of-memory killer would
    assert job.wait(30_000)
    assert len(got["failed"]) == 1 and "ended unexpectedly" in got["failed"][0] and "resumed" in got["failed"][0]
    assert not job.is_running()

    again = ProcessJob("search", (str(run), None), "search")  # Resume
    got2 = _collect(again)
    with qtbot.waitSignal(again.done, timeout=300_000):
        again.start()
    assert again.wait(30_000)
    assert got2["failed"] == [] and got2["finished"][0]["status"] == "finished"
    with RunStore.open_readonly(run) as store:
        assert store.counts()["done"] + store.counts()["failed"] == 2
