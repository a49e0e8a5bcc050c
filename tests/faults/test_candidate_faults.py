"""Candidates that fail: out of memory, MemoryError, NaN loss and an exception inside real training, a
local pool worker and a Ray worker killed. Each is recorded as failed with its error; the search ends.

Faults are injected at named points (engine.faults): ``train.step`` is each training step of the
process, ``candidate.<id>`` the moment the process about to train candidate ``id`` starts it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import RUN_TESTS
from engine.run import RunStore


def emonas(args, fault=None, **env):
    e = {**os.environ, "EMONAS_NO_PROGRESS": "1", **env}
    if fault:
        e["EMONAS_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900, env=e)


def rows(run):
    with RunStore.open_readonly(run) as s:
        assert s.integrity_check() == "ok"
        return s.candidates()


def test_oom_nan_and_exceptions_in_real_training_fail_only_their_candidate(tiny_demo, tmp_path):
    data, config = tiny_demo
    run = tmp_path / "run"
    # each candidate takes 2 steps (1 epoch); a failing one stops at its first: counts 1, 2, 3(+4), 5
    faults = "train.step:1:oom,train.step:2:memory,train.step:3:nan,train.step:5:raise"
    p = emonas(["search", "--dataset", data, "--config", config, "--out", run, "--population", 5, "--generations", 1,
                "--epochs", 1, "--seed", 2, "--device", "cpu", "--json"], faults,
               EMONAS_CACHE_DIR=str(tmp_path / "cache"))
    assert p.returncode == 0, p.stderr[-3000:]
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["status"] == "finished"
    r = rows(run)
    assert all(c["status"] in ("done", "failed") for c in r) and len(r) == 5
    errors = [c["error"] for c in r[:4]]
    assert [c["status"] for c in r[:4]] == ["failed"] * 4
    assert errors[0].startswith("OutOfMemoryError:") and "out of memory" in errors[0]
    assert errors[1].startswith("MemoryError:")
    assert errors[2].startswith("TrainingFailed:") and "diverged" in errors[2] and "nan" in errors[2]
    assert errors[3].startswith("RuntimeError: injected fault at train.step")
    assert all((c["f1"], c["f2"]) == (1.0, 1.0) and "\n" not in c["error"] for c in r[:4])
    done = [c for c in r[4:] if c["status"] == "done"]
    assert done and all(0 < c["f1"] <= 1 and c["error"] is None for c in done)
    assert summary["counts"]["failed"] == 5 - len(done)


SEARCH = textwrap.dedent(f"""
    import json, sys
    sys.path.insert(0, {str(RUN_TESTS)!r})
    from engine.config import SearchConfig
    from engine.run import SearchSession
    from search_fakes import PROBLEM, fake_evaluate
    cfg = SearchConfig().replace(samea={{"population": 4, "generations": 2, "learning_generations": 1,
                                         "surrogate_trees": 10}}, seed=4, resources=json.loads(sys.argv[2]))
    print(json.dumps(SearchSession(sys.argv[1], cfg, fake_evaluate, PROBLEM).run()))
""")


def fake_search(run, resources: dict, fault: str, timeout=600, **env) -> dict:
    """A search with the stand-in evaluator (no identity failures) in its own process, under ``fault``."""
    e = {**os.environ, "EMONAS_FAULT": fault, "FAKE_FAIL_IDENTITY": "0", **env}
    p = subprocess.run([sys.executable, "-c", SEARCH, str(run), json.dumps(resources)], capture_output=True,
                       text=True, timeout=timeout, env=e)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.strip().splitlines()[-1])["status"] == "finished"
    r = {c["id"]: c for c in rows(run)}
    assert len(r) == 8 and all(c["status"] in ("done", "failed") for c in r.values())
    return r


def test_a_killed_pool_worker_fails_its_candidate_and_the_search_goes_on(tmp_path):
    r = fake_search(tmp_path / "run", {"executor": "local", "workers": 2}, "candidate.3:1:kill", FAKE_SLEEP="0.5")
    assert r[3]["status"] == "failed" and r[3]["error"].startswith("worker process died (killed or out of memory")
    # only the dead worker's candidate fails: its neighbour trains on, a fresh worker takes the dead one's place
    assert all(c["status"] == "done" for i, c in r.items() if i != 3)


@pytest.mark.slow  # Ray starts in ~20 s; tests/engine/run/test_ray_executor.py covers a lost worker by default
@pytest.mark.ray
def test_a_killed_ray_worker_fails_its_candidate_and_the_search_goes_on(tmp_path):
    pytest.importorskip("ray")
    r = fake_search(tmp_path / "run", {"executor": "ray", "ray_num_cpus": 2}, "candidate.2:1:kill", timeout=300)
    assert r[2]["status"] == "failed" and r[2]["error"].startswith("Ray:")
    assert all(c["status"] == "done" for i, c in r.items() if i != 2)
