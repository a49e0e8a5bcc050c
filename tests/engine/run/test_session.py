"""The search session with a stand-in evaluator: results in the database, failures, pause and resume,
kill and resume, the process pool, reuse, pruning and budgets."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from engine.config import SearchConfig
from engine.errors import RunError
from engine.genome import Genome
from engine.run import RunStore, SearchSession
from search_fakes import PROBLEM, analytic_f1, fake_evaluate

HERE = Path(__file__).resolve().parent


def config(**samea):
    s = {"population": 5, "generations": 5, "learning_generations": 2, "surrogate_trees": 20, **samea}
    return SearchConfig().replace(samea=s, training={"epochs": 3}, seed=3)


def genomes_in_order(run):
    with RunStore.open_readonly(run) as s:
        return [json.dumps(c["genome"]) for c in s.candidates()]


def test_a_search_fills_the_database(tmp_path):
    events = []
    summary = SearchSession(tmp_path / "run", config(), fake_evaluate, PROBLEM).run(callback=events.append)
    assert summary["status"] == "finished" and summary["generation"] == 5
    with RunStore.open_readonly(tmp_path / "run") as s:
        rows = s.candidates()
        assert s.get_meta("status") == "finished" and s.integrity_check() == "ok"
        front = s.front()
    assert len(rows) == summary["evaluations"] and summary["counts"]["queued"] == 0
    assert len({json.dumps(r["genome"]) for r in rows}) == len(rows)
    phases = summary["evaluations_per_phase"]
    assert phases["init"] == 5 and phases["learning"] == 10 and phases["exploitation"] >= 1
    for r in rows:
        g = Genome.from_dict(r["genome"])
        if g.op1 == "identity":  # the stand-in fails these
            assert r["status"] == "failed" and (r["f1"], r["f2"]) == (1.0, 1.0)
            assert "injected failure" in r["error"]
        else:
            assert r["status"] == "done" and r["f1"] == pytest.approx(analytic_f1(g)) and 0 <= r["f2"] <= 1
            assert (tmp_path / "run" / "candidates" / str(r["id"]) / "weights.pt").is_file()
    assert [f["id"] for f in summary["front"]] == [c["id"] for c in front]
    assert summary["algorithm_seconds"] > 0 and summary["training_seconds"] >= 0
    kinds = {e.kind for e in events}
    assert {"started", "candidate_started", "candidate_finished", "step", "finished"} <= kinds


def test_pause_and_resume_give_the_same_genomes(tmp_path):
    SearchSession(tmp_path / "ref", config(), fake_evaluate, PROBLEM).run()
    cancel = threading.Event()
    seen = []

    def stop_after_seven(ev):
        if ev.kind == "candidate_finished":
            seen.append(ev.candidate["id"])
            if len(seen) == 7:
                cancel.set()

    first = SearchSession(tmp_path / "run", config(), fake_evaluate, PROBLEM).run(stop_after_seven, cancel)
    assert first["status"] == "paused"
    with RunStore.open_readonly(tmp_path / "run") as s:
        before = {c["id"]: c["finished_at"] for c in s.candidates() if c["status"] in ("done", "failed")}
    assert len(before) == 7
    with pytest.raises(RunError, match="exists here already"):
        SearchSession(tmp_path / "run", config(), fake_evaluate, PROBLEM)
    second = SearchSession.open(tmp_path / "run", fake_evaluate).run()
    assert second["status"] == "finished"
    assert genomes_in_order(tmp_path / "run") == genomes_in_order(tmp_path / "ref")
    with RunStore.open_readonly(tmp_path / "run") as s:
        after = {c["id"]: c["finished_at"] for c in s.candidates()}
    assert all(after[i] == t for i, t in before.items()), "a finished candidate was trained again"


KILL_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {here!r})
    from engine.config import SearchConfig
    from engine.run import SearchSession
    from search_fakes import PROBLEM, fake_evaluate
    cfg = SearchConfig.from_dict(json.loads(sys.argv[2]))
    if sys.argv[1] == "new":
        SearchSession(sys.argv[3], cfg, fake_evaluate, PROBLEM).run()
    else:
        SearchSession.open(sys.argv[3], fake_evaluate).run()
""")


def _wait_for(run, predicate, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if (run / "run.db").exists():
            try:
                with RunStore.open_readonly(run) as s:
                    if predicate(s):
                        return
            except (RunError, sqlite3.OperationalError):
                pass
        time.sleep(0.02)
    raise AssertionError("the search did not get there in time")


def test_killed_at_several_moments_resumes_without_losing_or_retraining(tmp_path):
    cfg = config()
    run = tmp_path / "run"
    script = KILL_SCRIPT.format(here=str(HERE))
    env = {**os.environ, "FAKE_SLEEP": "0.15"}
    finished_before: dict = {}
    moments = [
        lambda s: s.counts()["running"] == 1 and s.counts()["done"] >= 2,  # during a candidate's training
        lambda s: s.counts()["done"] + s.counts()["failed"] >= 9,  # right after a commit: the next write
        lambda s: s.conn.execute("SELECT COUNT(*) FROM strategy_state").fetchone()[0] >= 6,
    ]
    for i, moment in enumerate(moments):
        mode = "new" if i == 0 else "resume"
        p = subprocess.Popen([sys.executable, "-c", script, mode, json.dumps(cfg.to_dict()), str(run)], env=env)
        try:
            _wait_for(run, lambda s: moment(s) and len(s.candidates("done")) > len(finished_before))
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        from engine.cli.search import run_info

        assert run_info(run)["status"] == "stopped"  # killed: no live writer holds the lock
        with RunStore.open_readonly(run) as s:
            assert s.integrity_check() == "ok"
            rows = {c["id"]: c for c in s.candidates() if c["status"] in ("done", "failed")}
        for cid, t in finished_before.items():
            assert rows[cid]["finished_at"] == t, "a finished candidate was lost or trained again"
        finished_before = {cid: c["finished_at"] for cid, c in rows.items()}
    summary = SearchSession.open(run, fake_evaluate).run()  # the stale lock is taken over, no flag
    assert summary["status"] == "finished"
    with RunStore.open_readonly(run) as s:
        assert s.integrity_check() == "ok"
        rows = s.candidates()
    assert all(r["status"] in ("done", "failed") for r in rows)
    for r in rows:
        if r["id"] in finished_before:
            assert r["finished_at"] == finished_before[r["id"]]
    SearchSession(tmp_path / "ref", cfg, fake_evaluate, PROBLEM).run()
    assert genomes_in_order(run) == genomes_in_order(tmp_path / "ref")


def test_process_pool_trains_several_at_once_with_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "0.3")  # long enough for both workers to get candidates
    cfg = config(generations=2).replace(resources={"executor": "local", "workers": 2})
    summary = SearchSession(tmp_path / "pool", cfg, fake_evaluate, PROBLEM).run()
    assert summary["status"] == "finished"
    SearchSession(tmp_path / "one", config(generations=2), fake_evaluate, PROBLEM).run()
    assert genomes_in_order(tmp_path / "pool") == genomes_in_order(tmp_path / "one")
    with RunStore.open_readonly(tmp_path / "pool") as s:
        pids = {(c["metrics"] or {}).get("pid") for c in s.candidates("done")}
    assert len(pids - {None}) == 2 and os.getpid() not in pids


def test_reuse_across_runs_on_the_same_plan(tmp_path):
    SearchSession(tmp_path / "a", config(generations=2), fake_evaluate, PROBLEM).run()
    cfg = config(generations=2).replace(resources={"reuse_results": True})
    summary = SearchSession(tmp_path / "b", cfg, fake_evaluate, PROBLEM).run()
    with RunStore.open_readonly(tmp_path / "b") as s:
        done = s.candidates("done")
    assert done and all(c["reused_from"] and c["reused_from"].startswith(str(tmp_path / "a")) for c in done)
    assert summary["reused"] == len(done)


def test_disk_budget_prunes_dominated_weights_only(tmp_path):
    cfg = config(generations=3).replace(resources={"disk_budget_mb": 0.004})  # room for about four weight files
    SearchSession(tmp_path / "run", cfg, fake_evaluate, PROBLEM).run()
    with RunStore.open_readonly(tmp_path / "run") as s:
        front = {c["id"] for c in s.front()}
        done = s.candidates("done")
    pruned = [c for c in done if c["pruned"]]
    assert pruned and not any(c["id"] in front for c in pruned)
    for c in done:
        assert (tmp_path / "run" / "candidates" / str(c["id"]) / "weights.pt").exists() == (not c["pruned"])


def test_wall_clock_budget_stops_the_search(tmp_path):
    cfg = config().replace(resources={"wall_clock_hours": 1e-9})
    summary = SearchSession(tmp_path / "run", cfg, fake_evaluate, PROBLEM).run()
    assert summary["status"] == "budget" and summary["generation"] < 5


@pytest.mark.parametrize("rule, quantile", [("median", 0.5), ("halving", 0.75)])
def test_early_stopping_thresholds_from_finished_curves(tmp_path, rule, quantile):
    cfg = config(generations=2).replace(resources={
        "early_stopping": rule, "early_stopping_min_epochs": 1, "halving_rungs": [1, 9], "halving_keep": 0.25})
    session = SearchSession(tmp_path / "run", cfg, fake_evaluate, PROBLEM)
    session.run()
    session.store = RunStore.open_readonly(tmp_path / "run")
    try:
        thresholds = session._stop_thresholds()
        dice = sorted(1 - c["f1"] for c in session.store.candidates("done"))
    finally:
        session.store.close()
    import numpy as np

    # one epoch of curves: a threshold at epoch 1 only (the halving rung at 9 has no data yet)
    assert thresholds == {"1": pytest.approx(float(np.quantile(dice, quantile)))}


def test_device_budget_resamples_networks_too_big_for_a_cpu(tmp_path):
    from dataclasses import replace

    from engine.genome import PAPER_GENOMES, SearchSpace
    from engine.network.cost import estimate_cost, extreme_genomes
    from engine.run.session import device_budget

    problem = replace(PROBLEM, patch_size=[64, 64, 64])
    cfg = SearchConfig().replace(samea={"population": 6, "generations": 2, "learning_generations": 1})
    session = SearchSession(tmp_path / "run", cfg, fake_evaluate, problem)
    strategy = session._build_strategy(problem, "cpu")
    big = extreme_genomes(SearchSpace())[1]
    assert not strategy._feasible(big) and not strategy._feasible(PAPER_GENOMES["hippocampus"])
    assert strategy._feasible(extreme_genomes(SearchSpace())[0])
    session.run()
    mem, flops = device_budget("cpu", cfg.resources)
    with RunStore.open_readonly(tmp_path / "run") as s:
        rows = s.candidates()
    assert len(rows) == 12
    for r in rows:
        cost = estimate_cost(Genome.from_dict(r["genome"]), 1, 3, [64, 64, 64], 2)
        assert cost.train_step_flops <= flops and cost.training_bytes <= mem
    # an explicit budget in the config wins over the device default
    tight = SearchConfig().replace(resources={"max_gflops_per_step": 1.0})
    assert device_budget("cpu", tight.resources)[1] == 1e9


def test_a_finished_samea_run_with_prescreening_reports_all_its_evaluations_as_complete(tmp_path):
    """SaMEA's surrogate trains fewer children than population x generations: the progress total is what the
    strategy expects (the estimate's figure at the start), exact once finished, so a finished run is at 100 %."""
    from engine.run.estimate import MeanTimeModel, expected_evaluations
    from engine.run.progress import watch

    cfg = config()
    events = []
    session = SearchSession(tmp_path / "run", cfg, fake_evaluate, PROBLEM, time_model=MeanTimeModel())
    summary = session.run(callback=events.append)
    trained = summary["counts"]["done"] + summary["counts"]["failed"]
    assert trained < 5 * 5  # children the surrogate kept untrained
    assert events[0].kind == "started" and events[0].progress.expected == expected_evaluations(cfg.samea)[1]
    last = events[-1].progress
    assert events[-1].kind == "finished" and last.status == "finished"
    assert last.expected == trained == session.strategy.expected_evaluations() and last.fraction == 1.0
    assert last.eta_seconds == 0.0 and last.hypervolume == pytest.approx(summary["hypervolume"])
    assert [p[0] for p in last.front] == [f["id"] for f in summary["front"]]
    evaluated = [e.progress.evaluated for e in events]
    assert evaluated == sorted(evaluated) and all(0.0 <= e.progress.fraction <= 1.0 for e in events)
    # a reader of the run elsewhere gets the same record from the database
    seen = watch(tmp_path / "run")
    assert seen.to_dict() == {**last.to_dict(), "elapsed_seconds": seen.elapsed_seconds}


class OnlyTheProtocol:
    """A strategy with the members of ``engine.search.Strategy`` and nothing else: fixed genomes, two a generation."""

    def __init__(self, genomes, per_generation=2):
        self.queue, self.per = list(genomes), per_generation
        self.generation, self.generations = 0, len(self.queue) // per_generation
        self._pending, self._told = [], 0

    def ask(self):
        if not self._pending and not self.done:
            self._pending = self.queue[self.generation * self.per:(self.generation + 1) * self.per]
        return list(self._pending)

    def tell(self, evaluations):
        assert len(evaluations) == len(self._pending)
        self._told += len(evaluations)
        self._pending, self.generation = [], self.generation + 1

    def describe(self, genome):
        return {"generation": self.generation, "phase": "fixed"}

    def state_dict(self):
        return {"generation": self.generation, "told": self._told}

    def load_state_dict(self, state):
        self.generation, self._told = state["generation"], state["told"]

    def metrics(self):
        return {"strategy": "fixed", "evaluations": self._told}

    def expected_evaluations(self):
        return len(self.queue)

    @property
    def has_pending(self):
        return bool(self._pending)

    @property
    def done(self):
        return self.generation >= self.generations and not self._pending


def test_the_session_drives_a_strategy_through_the_protocol_alone(tmp_path, monkeypatch):
    import numpy as np

    from engine.search import Strategy
    from search_fakes import SPACE

    rng = np.random.default_rng(1)
    genomes = []
    while len(genomes) < 4:
        g = SPACE.sample(rng)
        if g not in genomes:
            genomes.append(g)
    build = SearchSession._build_strategy

    def only_the_protocol(self, problem, device):
        build(self, problem, device)  # the run's objective bounds and cost functions
        return OnlyTheProtocol(genomes)

    monkeypatch.setattr(SearchSession, "_build_strategy", only_the_protocol)
    assert isinstance(OnlyTheProtocol(genomes), Strategy)
    events = []
    summary = SearchSession(tmp_path / "run", config(), fake_evaluate, PROBLEM).run(callback=events.append)
    assert summary["status"] == "finished" and summary["evaluations"] == 4 and summary["generation"] == 2
    last = events[-1].progress
    assert last.fraction == 1.0 and last.expected == last.evaluated == 4
    assert genomes_in_order(tmp_path / "run") == [json.dumps(g.to_dict()) for g in genomes]
