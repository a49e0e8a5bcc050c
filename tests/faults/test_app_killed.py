"""The app killed while its search runs in a child process: the search stops as a clean pause (not an
orphan that trains on and keeps the run locked), and a new session can take the run over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from engine.config import SearchConfig
from engine.run.store import RunStore, is_run

CHEAP = ["conv3d_1x1x1", "identity"]

APP = textwrap.dedent("""
    import json, multiprocessing, sys, time
    from emonas_gui.jobcore import child_main

    if __name__ == "__main__":
        run_dir, config = sys.argv[1], json.loads(sys.argv[2])
        ctx = multiprocessing.get_context("spawn")  # as the app's ProcessJob
        queue, stop, running = ctx.Queue(), ctx.Event(), ctx.Event()
        running.set()
        child = ctx.Process(target=child_main, args=("search", (run_dir, config), queue, stop, running))
        child.start()
        print(child.pid, flush=True)
        while True:  # the app's reader, until it is killed
            print(json.dumps(queue.get()[0]), flush=True)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its new parent) counts as ended
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_app_leaves_a_paused_resumable_run(tmp_path):
    cfg = SearchConfig().replace(
        dataset="demo", seed=2,
        space={"nf1": [8], "n_cells": [5], "op1": CHEAP, "op2": CHEAP, "op3": CHEAP, "op4": CHEAP},
        samea={"population": 2, "generations": 40, "neighbourhood": 2},  # minutes of work: it must stop, not end
        training={"epochs": 1, "patience": 1, "extra": {"iterations_per_epoch": 2}},
        resources={"device": "cpu"},
    )
    run = tmp_path / "run"
    app = subprocess.Popen([sys.executable, "-c", APP, str(run), json.dumps(cfg.to_dict())],
                           stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(app.stdout.readline())
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # wait until the search has started writing its run
            line = app.stdout.readline()
            if not line or json.loads(line) == "event" and is_run(run):
                break
        assert is_run(run), "the search never started"
        os.kill(app.pid, signal.SIGKILL)
        app.wait(30)
        deadline = time.monotonic() + 60
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(child), "the search went on after its app was killed"
    finally:
        if app.poll() is None:
            app.kill()
        if child is not None and _alive(child):  # never leave a search running after the test
            os.kill(child, signal.SIGKILL)
    with RunStore.open_readonly(run) as store:
        assert store.get_meta("status") == "paused"
        counts = store.counts()
    assert counts["done"] + counts["failed"] < 80
    RunStore.open_writer(run).close()  # the lock is free: a new app session can resume the run
