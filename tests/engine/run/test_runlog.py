"""The run log rotates, and commands print plain progress lines when their output is not a terminal."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys

from engine.cli._common import PlainProgress
from engine.run import runlog


def test_run_log_rotates_and_detaches(tmp_path, monkeypatch):
    monkeypatch.setattr(runlog, "MAX_BYTES", 2000)
    lg = logging.getLogger("engine.run.session")
    with runlog.run_log(tmp_path) as path:
        for i in range(200):
            lg.info("candidate %d done in 1 s: f1 0.5000, f2 10.0000", i)
    assert path == tmp_path / "search.log"
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["search.log", "search.log.1", "search.log.2", "search.log.3"]  # 3 older files kept
    assert all(p.stat().st_size <= 2000 for p in tmp_path.iterdir())
    assert "candidate 199 done" in path.read_text()
    lg.info("after the run")  # the handler is gone: nothing more is written
    assert "after the run" not in path.read_text()


def test_plain_progress_lines():
    out = io.StringIO()
    bar = PlainProgress(20, "predicting", stream=out, every_s=3600)
    for i in range(20):
        bar.set_postfix_str(f"case {i}")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # the first step and each further tenth
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d predicting \d+/20 \(\d+%\), case \d+", l) for l in lines)
    assert lines[-1].endswith("predicting 20/20 (100%), case 19")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_commands_print_progress_lines_when_not_on_a_terminal(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "EMONAS_NO_PROGRESS"}
    r = subprocess.run([sys.executable, "-m", "engine.cli", "check", "demo"], capture_output=True, text=True,
                       timeout=600, env=env)  # pipes, as under nohup or SLURM
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if " checking cases " in l]
    assert len(lines) >= 5 and lines[-1].endswith("checking cases 24/24 (100%)"), r.stderr
    quiet = subprocess.run([sys.executable, "-m", "engine.cli", "check", "demo", "--json"], capture_output=True,
                           text=True, timeout=600, env=env)
    assert quiet.returncode == 0 and "checking cases" not in quiet.stderr  # --json: the JSON object only


def test_search_events_become_log_lines():
    from engine.run.progress import Progress
    from engine.run.session import SearchEvent

    def ev(kind, cand=None, status="running"):
        progress = Progress(status, 1, 3, 4, 0, 0, 0, 8, 0.5, None, 10.0, ((1, 0.41234, 0.3, 10),), 0.4)
        return SearchEvent(kind, progress, cand)

    assert runlog.describe_event(ev("candidate_finished", {"id": 4, "status": "done", "f1": 0.41234, "f2": 0.3,
                                                           "seconds": 4.2})) == \
        "candidate 4 done in 4 s: f1 0.4123, f2 0.3000; front 1"
    assert runlog.describe_event(ev("candidate_finished", {"id": 5, "status": "failed", "f1": 1.0, "f2": 1.0,
                                                           "seconds": 2.0, "error": "out of memory"})) == \
        "candidate 5 failed in 2 s: out of memory; front 1"
    assert runlog.describe_event(ev("step")) == "generation 1/3 done: front 1, best f1 0.4123"
    assert runlog.describe_event(ev("finished", status="paused")) == "search paused: {'done': 4}"
