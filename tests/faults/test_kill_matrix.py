"""A search SIGKILLed at 16 named moments in a row, each time resumed: nothing committed is lost or
trained again, no genome twice, the database intact, and the final candidates, front and strategy
state identical to an uninterrupted run with the same seed.

Each kill lands exactly at its fault point (``EMONAS_FAULT=point:n:kill``, see engine.faults),
not after a timer. The default test uses the analytic stand-in evaluator in forked children (fast);
the ``slow`` one runs ``emonas search`` / ``emonas resume`` with real training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import traceback

import pytest

from conftest import logged_evaluate, small_config, snapshot
from engine import faults
from engine.run import SearchSession
from engine.run.store import is_run
from search_fakes import PROBLEM

#: (fault point, how many times it is reached in the process before the kill, what the moment is)
MOMENTS = [
    ("store.create", 1, "mid-commit of a new run's tables and meta"),
    ("session.start", 1, "at startup: lock taken, nothing read"),
    ("store.add", 1, "mid-commit of the first queued candidates"),
    ("store.state", 1, "mid-commit of the first strategy state"),
    ("fake.train", 3, "during a candidate's training"),
    ("candidate.folder", 2, "while writing a candidate folder"),
    ("candidate.before_commit", 3, "a result in hand, not committed"),
    ("store.update", 4, "mid-commit of a candidate row, inside the SQLite transaction"),
    ("candidate.after_commit", 2, "right after a candidate's commit"),
    ("session.ask", 1, "during ask: new genomes asked, state not saved"),
    ("session.tell", 1, "during tell: told, state not saved"),
    ("store.state", 2, "mid-commit of the state after tell"),
    ("store.requeue", 1, "at startup, mid-commit of requeueing interrupted candidates"),
    ("store.meta", 4, "mid-commit of the run's meta (timings after a step)"),
    ("session.step", 1, "right after a step was saved"),
    ("session.finish", 1, "the search done, its final status not written"),
]


def _run_child(run, cfg, fault: str | None, log) -> int:
    """Run or resume the search in a forked child with ``EMONAS_FAULT=fault``; its exit status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.environ["TRAIN_LOG"] = str(log)
            if fault:
                os.environ["EMONAS_FAULT"] = fault
            faults.reset()
            if is_run(run):  # (a real run keeps its problem in the database; the stand-in's is given)
                SearchSession.open(run, logged_evaluate, PROBLEM).run()
            else:
                SearchSession(run, cfg, logged_evaluate, PROBLEM).run()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _trained(log) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def test_sigkill_at_sixteen_moments_loses_nothing(tmp_path):
    cfg = small_config()
    ref_run, run, log = tmp_path / "ref", tmp_path / "run", tmp_path / "trained.log"
    assert _run_child(ref_run, cfg, None, tmp_path / "ref.log") == 0
    reference = snapshot(ref_run)
    assert reference["status"] == "finished" and len(reference["rows"]) >= 20

    committed: dict = {}
    for point, n, moment in MOMENTS:
        before = len(_trained(log))
        rc = _run_child(run, cfg, f"{point}:{n}:kill", log)
        assert rc == -signal.SIGKILL, f"{point}:{n} ({moment}) was not reached (exit {rc})"
        if not is_run(run):  # killed while creating it: no run yet, `emonas search` starts it afresh
            assert point == "store.create" and not committed and (run / "run.db").exists()
            continue
        now = snapshot(run)
        assert now["integrity"] == "ok", moment
        assert len(set(now["genomes"])) == len(now["genomes"]), f"a genome twice after a kill {moment}"
        for cid, t in committed.items():
            assert now["finished_at"].get(cid) == t, f"candidate {cid} lost or retrained after a kill {moment}"
            assert now["rows"][cid] == reference["rows"][cid]
        retrained = set(_trained(log)[before:]) & set(committed)
        assert not retrained, f"committed candidates {sorted(retrained)} trained again before the kill {moment}"
        committed = now["finished_at"]
    assert snapshot(run)["status"] == "running"  # killed before the end: no final status yet

    before = len(_trained(log))
    assert _run_child(run, cfg, None, log) == 0
    final = snapshot(run)
    assert not set(_trained(log)[before:]) & set(committed)
    assert all(final["finished_at"][cid] == t for cid, t in committed.items())
    assert final["status"] == "finished" and final["integrity"] == "ok"
    assert final["rows"] == reference["rows"]  # the full candidate list, in order, with every value
    assert final["front"] == reference["front"]
    assert final["state"] == reference["state"]


# ---------------------------------------------------------------- the same with real training (slow)

REAL_MOMENTS = [
    ("train.step", 3, "during a candidate's training"),
    ("candidate.folder", 1, "while writing a candidate's training folder"),
    ("store.update", 4, "mid-commit of a candidate row"),
    ("candidate.after_commit", 1, "right after a commit"),
    ("store.state", 2, "mid-commit of the strategy state"),
    ("session.tell", 1, "during tell"),
]


def _emonas(args, fault=None, env=None):
    env = {**os.environ, **(env or {}), "EMONAS_NO_PROGRESS": "1"}
    if fault:
        env["EMONAS_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900, env=env)


@pytest.mark.slow
def test_real_search_killed_at_six_moments_matches_an_uninterrupted_one(tiny_demo, tmp_path):
    data, config = tiny_demo
    args = ["--dataset", data, "--config", config, "--population", 4, "--generations", 2, "--epochs", 1,
            "--seed", 5, "--device", "cpu"]
    env = {"EMONAS_CACHE_DIR": str(tmp_path / "cache"), "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    ref = _emonas(["search", "--out", tmp_path / "ref", *args], env=env)
    assert ref.returncode == 0, ref.stderr[-2000:]
    reference = snapshot(tmp_path / "ref")
    run = tmp_path / "run"
    committed: dict = {}
    for i, (point, n, moment) in enumerate(REAL_MOMENTS):
        cmd = ["search", "--out", run, *args] if i == 0 else ["resume", run]
        p = _emonas(cmd, f"{point}:{n}:kill", env)
        assert p.returncode == -signal.SIGKILL, f"{moment}: exit {p.returncode}\n{p.stderr[-2000:]}"
        now = snapshot(run)
        assert now["integrity"] == "ok"
        assert all(now["finished_at"].get(c) == t for c, t in committed.items()), moment
        committed = now["finished_at"]
    p = _emonas(["resume", run, "--json"], env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    final = snapshot(run)
    assert all(final["finished_at"][c] == t for c, t in committed.items())
    assert [r["genome"] for r in final["rows"].values()] == [r["genome"] for r in reference["rows"].values()]
    for cid, row in final["rows"].items():
        assert row["status"] == reference["rows"][cid]["status"]
        assert row["f1"] == pytest.approx(reference["rows"][cid]["f1"], abs=1e-6)
    assert final["front"] == reference["front"]
    assert json.dumps(final["state"], sort_keys=True) == json.dumps(reference["state"], sort_keys=True)
