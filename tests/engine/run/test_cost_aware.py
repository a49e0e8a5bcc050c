"""Cost-aware search: the second objective stored and resumed, latency measured once and reused,
predicted latencies for untrained children, older run databases migrated, and the wall-time
estimate's arithmetic against a run of the stand-in evaluator."""

import json
import math
import sqlite3
import threading
from pathlib import Path
from dataclasses import replace

import numpy as np
import pytest

from engine.config import SearchConfig
from engine.errors import ConfigError
from engine.genome import Genome, SearchSpace
from engine.run import RunStore, SearchSession
from engine.run import estimate as est
from engine.run.latency import LatencyBook, latency_key
from engine.run.session import estimate_search
from engine.search.objective import PowerLaw, WidthPowerLaw, inference_flops, normalized
from search_fakes import PROBLEM, fake_evaluate
from test_search_cli import small_demo  # noqa: F401 - a fixture of this module too

# the smallest networks of the space, on a tiny patch: latency is really measured, in well under a second
SMALL = {"nf1": [8], "n_cells": [5], "op1": ["conv3d_1x1x1", "conv2d_3x3x1", "identity"],
         "op2": ["conv3d_1x1x1", "conv3d_3x3x3"], "op3": ["identity", "conv2d_3x3x1"], "op4": ["conv3d_1x1x1"]}
TINY = replace(PROBLEM, patch_size=[16, 16, 16], plan={"median_shape": [16, 16, 16]},
               data={"split": {"train": [f"c{i}" for i in range(8)], "val": ["v0", "v1"]}})


def config(objective: str, **samea) -> SearchConfig:
    s = {"population": 4, "generations": 3, "learning_generations": 1, "surrogate_trees": 10, "objective": objective,
         "latency_runs": 1, **samea}
    return SearchConfig().replace(space=SMALL, samea=s, training={"epochs": 3}, seed=5)


def flops_of(g: Genome) -> int:
    return inference_flops(g, TINY.in_channels, TINY.num_classes, TINY.patch_size)


@pytest.fixture(autouse=True)
def _no_identity_failures(monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_FAIL_IDENTITY", "0")
    monkeypatch.setenv("EMONAS_CACHE_DIR", str(tmp_path / "cache"))


def test_objective_flops_is_stored_and_survives_resume(tmp_path):
    run = tmp_path / "run"
    stop = threading.Event()

    def pause_after_first(ev):
        if ev.kind == "step":
            stop.set()

    first = SearchSession(run, config("flops"), fake_evaluate, TINY).run(callback=pause_after_first, cancel=stop)
    assert first["status"] == "paused"
    resumed = SearchSession.open(run, fake_evaluate, TINY)
    assert resumed.config.samea.objective == "flops"  # from the run's database, not a default
    summary = resumed.run()
    assert summary["status"] == "finished" and summary["objective"] == "flops"
    with RunStore.open_readonly(run) as s:
        meta = s.get_meta("objective")
        rows = s.candidates("done")
    # latency is measured where the search ended: the front's networks, on the run's target
    assert meta["name"] == "flops" and meta["latency"]["target"] == "cpu"
    front_rows = [r for r in rows if r["id"] in {f["id"] for f in summary["front"]}]
    assert meta["latency"]["measured"] == len({latency_key(r["genome"]) for r in front_rows})
    bounds = tuple(meta["bounds"])
    assert len(rows) >= 8
    front = {f["id"] for f in summary["front"]}
    for r in rows:  # f2 is the normalized log FLOPs, with the bounds set at the run's start
        g = Genome.from_dict(r["genome"])
        assert r["gflops"] == pytest.approx(flops_of(g) / 1e9)
        assert r["f2"] == pytest.approx(normalized(flops_of(g), bounds))
        # measured for the front, predicted from FLOPs by those for the others
        assert r["latency_ms"] > 0 and bool(r["latency_predicted"]) == (r["id"] not in front)
    assert all(f["gflops"] and not f["latency_predicted"] for f in summary["front"]) and front


def test_stopped_while_the_front_is_measured_the_run_pauses_and_resume_measures_the_rest(tmp_path, monkeypatch):
    """The front's latency is measured after all training; a stop then leaves the run paused, the
    networks measured so far kept; resume trains nothing and measures only the others. Off
    (``samea.front_latency = false``), a parameters run measures nothing."""
    import engine.run.latency as latency

    real, measured = latency.measure_latency, []
    stop = threading.Event()

    def measure(genome, *args, **kw):  # the real measurement, counted; the user stops after the first
        measured.append(genome.to_json())
        stop.set()
        return real(genome, *args, **kw)

    monkeypatch.setattr(latency, "measure_latency", measure)
    run = tmp_path / "run"
    first = SearchSession(run, config("parameters"), fake_evaluate, TINY).run(cancel=stop)
    assert first["status"] == "paused" and len(measured) == 1
    with RunStore.open_readonly(run) as s:
        trained = len(s.candidates("done"))
    stop.clear()

    def counted(genome, *args, **kw):
        measured.append(genome.to_json())
        return real(genome, *args, **kw)

    monkeypatch.setattr(latency, "measure_latency", counted)
    events = []
    summary = SearchSession.open(run, fake_evaluate, TINY).run(callback=events.append)
    assert summary["status"] == "finished" and summary["counts"]["done"] == trained  # nothing trained again
    front = [Genome.from_dict(f) for f in (r["genome"] for r in _front_rows(run))]
    assert len(measured) == len({latency_key(g) for g in front})  # each front network once
    assert {latency_key(json.loads(g)) for g in measured} == {latency_key(g) for g in front}
    # each measurement announced (the app and the log say which network, k of n, on which target)
    announced = [ev for ev in events if ev.kind == "latency"]
    n = len(front) - 1
    assert [ev.detail["done"] for ev in announced] == list(range(n)) and all(ev.detail["total"] == n for ev in announced)
    assert [ev.candidate.genome for ev in announced] == [json.loads(g) for g in measured[1:]]
    assert all(ev.detail["target"] == "cpu" and ev.detail["hardware"] for ev in announced)
    assert events[-1].kind == "finished"
    assert all(f["latency_ms"] > 0 and not f["latency_predicted"] for f in summary["front"])

    off = tmp_path / "off"
    summary = SearchSession(off, config("parameters", front_latency=False), fake_evaluate, TINY).run()
    assert summary["status"] == "finished" and all(f["latency_ms"] is None for f in summary["front"])


class _FixedTimes:
    """A time model stand-in: every candidate 5 s, measuring one front network 7 s."""
    end_each_s = 7.0

    def candidate_seconds(self, genome):
        return 5.0

    def observe(self, genome, seconds):
        pass


def test_the_eta_counts_measuring_the_fronts_latency_until_it_is_done(tmp_path):
    """The ETA during a search counts the front's latency measurement that follows the training:
    before it, one network's time-model seconds for each front network; while measuring, the rest at
    the rate measured; read back from the run by another process alike; 0 once finished."""
    from engine.run.progress import watch

    events, seen = [], []
    run = tmp_path / "run"

    def record(ev):
        events.append(ev)
        if ev.kind == "step":  # what another process (the app's monitor, `emonas runs`) reads now
            seen.append((watch(run).eta_seconds, len(_front_rows(run)), ev.progress.expected - ev.progress.evaluated))

    summary = SearchSession(run, config("parameters"), fake_evaluate, TINY, time_model=_FixedTimes()).run(callback=record)
    assert summary["status"] == "finished"
    for eta, front, left in seen:  # the training left at 5 s each, then each front network at 7 s
        assert eta == pytest.approx(left * 5.0 + front * 7.0)
    measuring = [ev for ev in events if ev.kind == "latency"]
    n = len(summary["front"])
    assert len(measuring) == n and measuring[0].progress.eta_seconds == pytest.approx(n * 7.0)
    for ev in measuring[1:]:  # then the rate measured so far (these tiny networks: well under 7 s each)
        assert 0 < ev.progress.eta_seconds < (n - ev.detail["done"]) * 7.0
    assert events[-1].kind == "finished" and events[-1].progress.eta_seconds == 0.0
    assert watch(run).eta_seconds == 0.0

    off = SearchSession(tmp_path / "off", config("parameters", front_latency=False), fake_evaluate, TINY,
                        time_model=_FixedTimes())
    steps = []
    off.run(callback=lambda ev: steps.append(ev.progress) if ev.kind == "step" else None)
    assert all(p.eta_seconds == pytest.approx((p.expected - p.evaluated) * 5.0) for p in steps)


def _front_rows(run) -> list:
    with RunStore.open_readonly(run) as s:
        return s.front()


@pytest.fixture(scope="module")
def latency_run(tmp_path_factory):
    """One search with objective latency (latency really measured), shared by the tests reading it."""
    tmp = tmp_path_factory.mktemp("latency")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_FAIL_IDENTITY", "0")
        mp.setenv("EMONAS_CACHE_DIR", str(tmp / "cache"))
        session = SearchSession(tmp / "run", config("latency", population=3, neighbourhood=2), fake_evaluate, TINY)
        summary = session.run()
    return session, summary, tmp / "run"


def test_latency_is_measured_once_per_genome_and_reused(latency_run):
    _, summary, run = latency_run
    with RunStore.open_readonly(run) as s:
        lat = s.latencies()
        rows = s.candidates("done")
        meta = s.get_meta("objective")
    keys = [latency_key(r["genome"]) for r in lat]
    assert len(keys) == len(set(keys))  # one measurement per network
    measured = dict(zip(keys, lat))
    assert meta["latency"]["target"] == "cpu" and meta["latency"]["threads"] == 1 and meta["latency"]["hardware"]
    assert all(r["hardware"] == meta["latency"]["hardware"] and r["threads"] == 1 for r in lat)
    lo, hi = meta["bounds"]
    for r in rows:
        key = latency_key(r["genome"])
        assert key in measured and r["latency_ms"] == measured[key]["latency_ms"] and not r["latency_predicted"]
        assert r["f2"] == pytest.approx(normalized(r["latency_ms"], (lo, hi)))
    assert summary["front"] and all(f["latency_ms"] for f in summary["front"])
    # the bounds are the two extreme genomes, measured at the start: both are in the table
    assert {lo, hi} <= {r["latency_ms"] for r in lat} | {hi / 1.01}
    # a second book on the same run knows every genome without measuring any again
    with RunStore.open_writer(run) as s:
        book = LatencyBook(s, TINY, flops_of, runs=1)
        for r in rows:
            assert book.measure(Genome.from_dict(r["genome"])) == r["latency_ms"]
        assert book.measure_seconds == 0.0 and len(s.latencies()) == len(lat)
    # resuming a finished run measures nothing new either
    SearchSession.open(run, fake_evaluate, TINY).run()
    with RunStore.open_readonly(run) as s:
        assert [r["measured_at"] for r in s.latencies()] == [r["measured_at"] for r in lat]


def test_a_network_is_measured_once_whatever_its_learning_rate(latency_run, tmp_path):
    """Genomes that differ only in lr build the same network: one measurement serves them all, and rows
    of older runs (keyed by the whole genome, lr included) are read the same way."""
    import shutil

    run = tmp_path / "run"  # a copy: the fixture's run is shared with the other tests
    shutil.copytree(latency_run[2], run)
    with RunStore.open_readonly(run) as s:
        lat = s.latencies()
    g = Genome.from_dict(json.loads(lat[-1]["genome"]) | {"lr": 1e-4})
    twin = g.replace(lr=9e-3)
    space = SearchSpace.from_dict(SMALL)
    seen = {latency_key(r["genome"]) for r in lat}
    old = next(x for x in (space.decode(v) for v in np.ndindex(*space.cardinalities)) if latency_key(x) not in seen)
    with RunStore.open_writer(run) as s:
        book = LatencyBook(s, TINY, flops_of, runs=1)
        assert book.measure(g) == book.measure(twin) == lat[-1]["latency_ms"]
        assert book.measure_seconds == 0.0 and len(s.latencies()) == len(lat)
        # an older run's row: the whole genome with its lr as the key
        s.add_latency(json.dumps(old.to_dict(), sort_keys=True), book.target, book.threads, book.hardware,
                      book.shape, 123.5, [123.5], flops_of(old))
    with RunStore.open_writer(run) as s:
        book = LatencyBook(s, TINY, flops_of, runs=1)
        assert book.known(old) == book.known(old.replace(lr=2e-5)) == 123.5
        assert book.measure(old.replace(lr=2e-5)) == 123.5 and book.measure_seconds == 0.0


def test_untrained_children_get_latencies_predicted_from_flops(latency_run):
    session, _, run = latency_run
    book, strategy = session.latency, session.strategy
    with RunStore.open_readonly(run) as s:
        lat = s.latencies()
    model = PowerLaw((r["flops"], r["latency_ms"]) for r in lat)
    space = SearchSpace.from_dict(SMALL)
    seen = {latency_key(r["genome"]) for r in lat}
    unmeasured = [g for g in (space.decode(v) for v in np.ndindex(*space.cardinalities)) if latency_key(g) not in seen]
    assert unmeasured
    for g in unmeasured[:5]:
        predicted = model.predict(flops_of(g))
        assert book.known(g) is None and book.value(g) == pytest.approx(predicted)
        # what SaMEA's pre-screening and end-of-generation picks use for a child it has not trained
        genes = space.encode(g)
        assert strategy.cost_of(genes) == pytest.approx(predicted)
        assert strategy.f2_of(strategy.cost_of(genes)) == pytest.approx(normalized(predicted, session.objective_bounds))
    with RunStore.open_readonly(run) as s:
        assert len(s.latencies()) == len(lat)  # predicting measured nothing


def test_max_latency_refuses_slow_genomes_without_training(tmp_path):
    run = tmp_path / "run"
    session = SearchSession(run, config("parameters", generations=2), fake_evaluate, TINY)
    session.config = session.config.replace(resources={"max_latency_ms": 1e-6})
    with pytest.raises(ConfigError, match="no new genome"):
        session.run()  # every genome is predicted slower than 1 ns (from the extremes measured): none is trained
    assert not (run / "run.db").exists()  # a refused search leaves no run behind


@pytest.mark.parametrize("resources, named", [
    ({"max_parameters": 10}, r"resources\.max_parameters \(10\)"),
    ({"max_latency_ms": 0.001}, r"resources\.max_latency_ms \(0\.001 ms on cpu"),
])
def test_limits_that_exclude_every_genome_are_named_and_leave_no_run(tmp_path, resources, named):
    """A limit no genome of the space meets: the search is refused with a one-line error naming that
    limit (not only the device budget), and no run folder is left."""
    run = tmp_path / "run"
    cfg = config("parameters").replace(resources=resources)
    with pytest.raises(ConfigError, match=named) as err:
        SearchSession(run, cfg, fake_evaluate, TINY).run()
    assert "\n" not in str(err.value) and "max_memory_mb" in str(err.value)
    assert not run.exists()


@pytest.mark.parametrize("objective", ["parameters", "latency"])
def test_a_limit_on_the_objectives_measure_is_its_upper_bound(tmp_path, monkeypatch, objective):
    """max_parameters (parameters objective) or max_latency_ms (latency objective) below the space's
    dearest network caps the normalization: every trained candidate's f2 lies in [0, 1] and is its
    cost normalized between the cheapest bound and the limit."""
    import engine.run.latency as latency

    monkeypatch.setattr(latency, "measure_latency",  # a power law of FLOPs: fast and exact
                        lambda g, *a, **kw: {"latency_ms": flops_of(g) * 1e-9, "runs_ms": [1.0]})
    space = SearchSpace.from_dict(SMALL)
    every = [space.decode(v) for v in np.ndindex(*space.cardinalities)]
    if objective == "parameters":
        from engine.network import count_parameters

        costs = sorted(count_parameters(g, TINY.in_channels, TINY.num_classes) for g in every)
        limits = {"max_parameters": costs[len(costs) // 2]}
    else:
        costs = sorted(flops_of(g) * 1e-9 for g in every)
        limits = {"max_latency_ms": costs[len(costs) // 2]}
    limit = next(iter(limits.values()))
    run = tmp_path / "run"
    session = SearchSession(run, config(objective).replace(resources=limits), fake_evaluate, TINY)
    summary = session.run()
    assert summary["status"] == "finished"
    with RunStore.open_readonly(run) as s:
        bounds = tuple(s.get_meta("objective")["bounds"])
        rows = s.candidates("done")
    assert bounds[1] == pytest.approx(limit) and bounds[0] < limit
    assert rows
    for r in rows:
        cost = r["parameters"] if objective == "parameters" else r["latency_ms"]
        assert cost <= limit and 0.0 <= r["f2"] <= 1.0
        assert r["f2"] == pytest.approx(normalized(cost, bounds))
    # no limit: the space's own extremes, as before
    free = SearchSession(tmp_path / "free", config(objective), fake_evaluate, TINY)
    free.run()
    assert free.objective_bounds[1] > limit


def _narrow_is_slow(g: Genome, *a, **kw) -> dict:
    """A stand-in CPU: latency grows with FLOPs, and nf1 8 networks run 4x slower per FLOP than nf1 16."""
    ms = flops_of(g) * 1e-9 * (4.0 if g.nf1 == 8 else 1.0)
    return {"latency_ms": ms, "runs_ms": [ms]}


WIDE_SMALL = {**SMALL, "nf1": [8, 16], "op4": ["conv3d_1x1x1", "conv3d_3x3x3"]}


def test_latency_bounds_are_the_fastest_and_slowest_of_each_widths_extremes(tmp_path, monkeypatch):
    """With narrow networks slower per FLOP, the slowest network is not the dearest by FLOPs: the
    upper bound is measured on each width's dearest genome, and no trained candidate's f2 is over 1."""
    import engine.run.latency as latency

    monkeypatch.setattr(latency, "measure_latency", _narrow_is_slow)
    space = SearchSpace.from_dict(WIDE_SMALL)
    every = [space.decode(v) for v in np.ndindex(*space.cardinalities)]
    times = [_narrow_is_slow(g)["latency_ms"] for g in every]
    dearest = max(every, key=lambda g: (flops_of(g), g.to_json()))
    assert dearest.nf1 == 16 and _narrow_is_slow(dearest)["latency_ms"] < max(times)  # the case this is about
    run = tmp_path / "run"
    session = SearchSession(run, config("latency").replace(space=WIDE_SMALL), fake_evaluate, TINY)
    assert session.run()["status"] == "finished"
    with RunStore.open_readonly(run) as s:
        bounds = tuple(s.get_meta("objective")["bounds"])
        rows = s.candidates("done")
        measured = {r["latency_ms"] for r in s.latencies()}
    assert bounds == pytest.approx((min(times), max(times)))
    for width in (8, 16):  # each width's cheapest and dearest (by FLOPs, so by time) were measured at the start
        same = [t for g, t in zip(every, times) if g.nf1 == width]
        assert {min(same), max(same)} <= measured
    assert rows and all(0.0 <= r["f2"] <= 1.0 for r in rows)


def test_unmeasured_latencies_are_predicted_from_flops_and_width_once_enough_are_measured(tmp_path, monkeypatch):
    """Below ``WIDTH_MODEL_POINTS`` measured networks the prediction is FLOPs alone; from there on it also
    reads the width, and predicts the stand-in CPU's narrow networks as slower per FLOP; a book opened
    again on the run reads the same model from the table."""
    import engine.run.latency as latency

    monkeypatch.setattr(latency, "measure_latency", _narrow_is_slow)
    space = SearchSpace.from_dict(WIDE_SMALL)
    every = sorted((space.decode(v) for v in np.ndindex(*space.cardinalities)), key=lambda g: g.to_json())
    order = [every[i] for i in np.random.default_rng(0).permutation(len(every))]
    nets = list({latency_key(g): g for g in order}.values())
    run = tmp_path / "run"
    with RunStore.create(run, {"config": {}}) as s:
        book = LatencyBook(s, TINY, flops_of, runs=1)
        for g in nets[:latency.WIDTH_MODEL_POINTS - 1]:
            book.measure(g)
        assert not book.model.to_dict()["width"]
        first = nets[:latency.WIDTH_MODEL_POINTS - 1]
        flops_only = PowerLaw((flops_of(g), _narrow_is_slow(g)["latency_ms"]) for g in first)
        assert book.predicted(nets[-1]) == pytest.approx(flops_only.predict(flops_of(nets[-1])))
        for g in nets[latency.WIDTH_MODEL_POINTS - 1:latency.WIDTH_MODEL_POINTS + 4]:
            book.measure(g)
        assert book.model.to_dict()["width"] and book.model.coef[2] < 0  # narrower: slower
        rest = [g for g in nets[latency.WIDTH_MODEL_POINTS + 4:]]
        assert rest
        for g in rest:  # the stand-in is a power law of FLOPs and width: predicted exactly
            assert book.predicted(g) == pytest.approx(_narrow_is_slow(g)["latency_ms"], rel=1e-6)
        assert max(abs(flops_only.predict(flops_of(g)) / _narrow_is_slow(g)["latency_ms"] - 1) for g in rest) > 0.3
        points = list(book._points)
    with RunStore.open_writer(run) as s:
        again = LatencyBook(s, TINY, flops_of, runs=1)
        assert again._points == points
        assert again.predicted(rest[0]) == pytest.approx(WidthPowerLaw(points).predict(flops_of(rest[0]), rest[0].nf1))


def test_a_resumed_run_keeps_the_bounds_it_started_with(tmp_path):
    """A run paused and resumed normalizes every candidate's f2 between the bounds stored at its start,
    even where this code would set others now (here: a run that an older version started with its
    limit above the bounds' upper end)."""
    from engine.network import count_parameters

    space = SearchSpace.from_dict(SMALL)
    costs = sorted(count_parameters(space.decode(v), TINY.in_channels, TINY.num_classes)
                   for v in np.ndindex(*space.cardinalities))
    cfg = config("parameters").replace(resources={"max_parameters": costs[len(costs) // 2]})
    run, stop = tmp_path / "run", threading.Event()

    def pause_after_first(ev):
        if ev.kind == "step":
            stop.set()

    first = SearchSession(run, cfg, fake_evaluate, TINY).run(callback=pause_after_first, cancel=stop)
    assert first["status"] == "paused"
    with RunStore.open_writer(run) as s:
        meta = s.get_meta("objective")
        older = [meta["bounds"][0], costs[-1]]  # the space's own largest network: the bounds before limits capped them
        s.set_meta(objective={**meta, "bounds": older})
        before = {r["id"] for r in s.candidates("done")}
    summary = SearchSession.open(run, fake_evaluate, TINY).run()
    assert summary["status"] == "finished"
    with RunStore.open_readonly(run) as s:
        assert s.get_meta("objective")["bounds"] == older
        rows = s.candidates("done")
    after = [r for r in rows if r["id"] not in before]
    assert after
    for r in after:
        assert r["f2"] == pytest.approx(normalized(r["parameters"], tuple(older)))


def test_a_genome_measured_over_the_latency_limit_is_failed_and_never_trained(tmp_path, monkeypatch):
    """Predicted under the limit (so the strategy proposes it), measured over it: recorded as failed with
    the measured time named, never handed to the evaluator; the search goes on with the others."""
    import engine.run.latency as latency

    limit, calls = 1000.0, []

    def measure(genome, *args, **kw):  # the extremes on one power law; then every other genome is slow
        calls.append(genome.to_dict())
        slow = len(calls) > 2 and len(calls) % 2 == 0
        return {"latency_ms": 10 * limit if slow else flops_of(genome) * 1e-9, "runs_ms": [1.0]}

    monkeypatch.setattr(latency, "measure_latency", measure)
    trained = []

    def evaluate(task, cancel=None):
        trained.append(task["genome"])
        return fake_evaluate(task, cancel)

    run = tmp_path / "run"
    cfg = config("parameters").replace(resources={"max_latency_ms": limit})
    summary = SearchSession(run, cfg, evaluate, TINY).run()
    assert summary["status"] == "finished"
    with RunStore.open_readonly(run) as s:
        refused = [r for r in s.candidates("failed") if "over resources.max_latency_ms" in (r["error"] or "")]
        done = s.candidates("done")
    assert refused and done
    for r in refused:
        assert r["error"].startswith(f"not trained: {10 * limit:.1f} ms on cpu") and r["latency_ms"] == 10 * limit
        assert r["genome"] not in trained and r["f1"] == 1.0
    assert all(r["genome"] in trained and r["latency_ms"] <= limit for r in done)


def test_the_estimate_states_each_limits_share_of_the_space(tmp_path):
    """``--estimate`` says how much of the space each limit keeps out, before any search: the parameter
    limit exactly per genome, the latency limit from a power law of a few measured genomes (kept with
    the calibration); the time estimate counts only genomes under the latency limit."""
    space = SearchSpace.from_dict(SMALL)
    every = [space.decode(v) for v in np.ndindex(*space.cardinalities)]
    from engine.network.cost import count_parameters

    params = {g.to_json(): count_parameters(g, TINY.in_channels, TINY.num_classes) for g in every}
    flops = {g.to_json(): flops_of(g) for g in every}
    max_p = sorted(params.values())[len(every) // 2]
    max_ms = sorted(flops.values())[len(every) // 3] * 1e-9
    calls = []

    def latency_fn(g, *args, **kw):  # exactly a power law of FLOPs: the prediction is exact
        calls.append(g.to_dict())
        return {"latency_ms": flops_of(g) * 1e-9}

    cfg = config("parameters").replace(resources={"max_parameters": max_p, "max_latency_ms": max_ms})
    e = estimate_search(cfg, step_fn=fake_step, problem=TINY, latency_fn=latency_fn)
    assert len(calls) == 3  # cheapest, median and dearest of the sample
    # the space is small enough to count exactly; the estimate's share comes from 2,000 uniform draws
    share_p = sum(v > max_p for v in params.values()) / len(every)
    share_ms = sum(v * 1e-9 > max_ms for v in flops.values()) / len(every)
    said = {n.split()[0]: float(n.split(" excludes ")[1].split("%")[0].replace("about", "")) for n in e.notes
            if " excludes " in n}
    assert said["max_parameters"] == pytest.approx(100 * share_p, abs=4)
    assert said["max_latency_ms"] == pytest.approx(100 * share_ms, abs=4)
    # only genomes predicted under the limit are in the time estimate: the upper quartile is theirs
    session = SearchSession(tmp_path / "run", cfg, fake_timed_evaluate, TINY)
    model, sample, _, _ = session.time_model("cpu")
    fast = [model.candidate_seconds(g) for g in sample if flops_of(g) * 1e-9 <= max_ms]
    assert e.candidate_s[2] <= max(fast) + 1e-9
    # a second estimate reuses the measured latencies kept with the calibration
    again = estimate_search(cfg, step_fn=fake_step, problem=TINY, latency_fn=latency_fn)
    assert len(calls) == 3 and again.notes == e.notes and again.cached


def test_an_older_run_database_opens_and_is_migrated(tmp_path):
    run = tmp_path / "run"
    SearchSession(run, config("parameters", generations=1), fake_evaluate, TINY).run()
    conn = sqlite3.connect(run / "run.db")  # make it a schema-1 run as an older version wrote it
    for col in ("gflops", "latency_ms", "latency_predicted"):
        conn.execute(f"ALTER TABLE candidates DROP COLUMN {col}")
    conn.execute("DROP TABLE latency")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.execute("DELETE FROM meta WHERE key = 'objective'")
    conn.commit()
    conn.close()
    with RunStore.open_readonly(run) as s:  # readers take it as it is
        assert s.schema_version == 1 and s.latencies() == [] and "gflops" not in s.candidates()[0]
    with RunStore.open_writer(run) as s:
        assert s.schema_version == 2 and s.get_meta("schema_version") == 2
        assert s.candidates()[0]["gflops"] is None and s.latencies() == []


def fake_step(genome, problem, train, device):
    """Calibration stand-in: seconds per step proportional to FLOPs, fixed validation and set-up."""
    from engine.network.cost import estimate_cost

    c = estimate_cost(genome, problem.in_channels, problem.num_classes, problem.patch_size, problem.batch_size)
    return c.train_step_flops * 1e-11, 0.5, 2.0


def tiny_validations(epochs: int = 3) -> int:
    """Validations of a default-profile training on TINY (2 validation cases of the median shape, 4 steps
    per epoch), by the trainer's own rule."""
    from engine.train.config import TrainerConfig
    from engine.train.trainer import epochs_between_validations

    every = epochs_between_validations(TrainerConfig(), [(16, 16, 16)] * 2, (16, 16, 16), 2, 4)
    return math.ceil(epochs / every)


def fake_timed_evaluate(task, cancel=None):
    """The stand-in evaluator, reporting the training time the fake calibration implies."""
    from engine.network.cost import estimate_cost

    out = fake_evaluate(task, cancel)
    g = Genome.from_dict(task["genome"])
    c = estimate_cost(g, TINY.in_channels, TINY.num_classes, TINY.patch_size, TINY.batch_size)
    out["seconds"] = 2.0 + 3 * 4 * c.train_step_flops * 1e-11 + tiny_validations() * 0.5  # 3 epochs x 4 steps
    return out


def test_estimate_arithmetic_against_a_run_of_the_stand_in(tmp_path):
    cfg = config("parameters", generations=4, learning_generations=1)
    e = estimate_search(cfg, step_fn=fake_step, problem=TINY)
    assert e.evaluations == est.expected_evaluations(cfg.samea) == (4 + 4 + 2 * 2, 4 + 4 + 2 * 3, 4 + 4 + 2 * 4)
    assert not e.cached and e.calibrated_genomes == 3
    session = SearchSession(tmp_path / "run", cfg, fake_timed_evaluate, TINY)
    model, sample, cached, _ = session.time_model("cpu")
    assert cached  # the estimate's calibration, kept for this device and plan
    per = []
    assert model.val_every > 1 and tiny_validations() < 3  # the default profile does not validate every epoch
    for g in sample:  # 8 training cases at batch 2: 4 steps per epoch
        c = fake_step(g, TINY, {}, "cpu")
        per.append(2.0 + 3 * 4 * c[0] + tiny_validations() * c[1])
        assert model.candidate_seconds(g) == pytest.approx(per[-1], rel=1e-6)
    # the first generation is known before the search (drawn from its seed): predicted one by one
    first = session.first_generation(TINY, "cpu")
    assert e.first_n == len(first) == 4
    known = sum(model.candidate_seconds(g) for g in first)
    assert e.first_s == pytest.approx(known, rel=1e-6)
    lo, mid, hi = e.total_s
    assert 0 <= e.warmup_s < 0.1  # the stand-in's first call is no slower than its second
    # once at the end: the front's networks (half a generation, 2) measured, each an export (1 s) and
    # latency_runs + 1 runs of a volume as long as one validation case (0.5 s of the 2 validated)
    end = 2 * (1.0 + (cfg.samea.latency_runs + 1) * 0.5 / 2)
    assert e.end_s == pytest.approx(end, rel=1e-6) and f"at the end          {end:.0f} s" in e.text()
    assert mid == pytest.approx(e.warmup_s + known + (e.evaluations[1] - 4) * np.mean(per) + end, rel=1e-6)
    assert lo == pytest.approx(e.warmup_s + known + (e.evaluations[0] - 4) * np.quantile(per, 0.25) + end, rel=1e-6)
    assert hi == pytest.approx(e.warmup_s + known + (e.evaluations[2] - 4) * np.quantile(per, 0.75) + end, rel=1e-6)
    session.eta_model = model
    summary = session.run()
    rows = session.store.candidates() if session.store is not None else RunStore.open_readonly(tmp_path / "run").candidates()
    assert [Genome.from_dict(r.genome) for r in rows[:4]] == first  # the genomes the search did train first
    assert all(r.generation == 0 for r in rows[:4]) and all(r.generation != 0 for r in rows[4:])
    trained = summary["counts"]["done"] + summary["counts"]["failed"]
    assert e.evaluations[0] <= trained <= e.evaluations[2]
    assert lo <= summary["training_seconds"] <= hi
    assert model.correction == pytest.approx(1.0)  # measured times matched the model exactly
    assert "expected wall time" in e.text() and "calibration         3 genomes" in e.text()
    # benchmarks/estimate_breakdown.py reads the run back: each candidate beside its prediction, in parts
    import importlib.util

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "estimate_breakdown.py"
    spec = importlib.util.spec_from_file_location("estimate_breakdown", path)
    bd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bd)
    b = bd.breakdown(tmp_path / "run", "cpu")
    done = {r.id: r for r in rows if r.status == "done"}
    assert [c["id"] for c in b["candidates"]] == sorted(done) and len(b["calibration"]) == 3
    for c in b["candidates"]:
        g = Genome.from_dict(done[c["id"]].genome)
        assert c["measured_s"] == pytest.approx(done[c["id"]].seconds)
        assert c["predicted_s"] + c["latency_s"] == pytest.approx(model.raw_seconds(g), rel=1e-6)
        assert c["fixed_s"] + c["steps_s"] + c["validations_s"] == pytest.approx(c["predicted_s"])
    assert b["median_ratio"] == pytest.approx(1.0, rel=1e-3)
    assert "first generation    4 candidates" in e.text()


def test_calibration_warms_up_first_and_counts_the_set_up_once(tmp_path):
    """A process's first training and validation load kernels and libraries: the calibration runs the
    cheapest genome once before timing it, so no point carries that set-up, and the estimate adds it once
    (the search's first candidate pays it), not per candidate."""
    import time

    calls = []

    def cold_step(genome, problem, train, device):  # the first call of the process is 1 s slower, all told
        calls.append(genome.to_json())
        if len(calls) == 1:
            time.sleep(1.0)
        return fake_step(genome, problem, train, device)

    cfg = config("parameters", generations=2)
    warm = estimate_search(cfg, step_fn=fake_step, problem=TINY, recalibrate=True)
    cold = estimate_search(cfg, step_fn=cold_step, problem=TINY, recalibrate=True)
    assert calls[0] == calls[1] and len(calls) == 4  # the cheapest twice, then the other two
    assert cold.candidate_s == pytest.approx(warm.candidate_s)  # the points are the warm ones
    assert 0.9 <= cold.warmup_s <= 1.5 and warm.warmup_s < 0.1
    for a, b in zip(warm.total_s, cold.total_s):
        assert b - a == pytest.approx(cold.warmup_s - warm.warmup_s, abs=1e-6)
    assert "warm-up             1 s" in cold.text()


def test_a_latency_search_estimate_counts_measuring_its_bound_genomes_once(tmp_path):
    """A latency search measures each width's cheapest and dearest genome before its first candidate:
    the estimate adds their measurement once (export + warm-up and timed runs, as for any candidate's
    latency), says so, and the paper's objective adds nothing."""
    from engine.network.cost import extreme_genomes

    space_cfg = {"space": WIDE_SMALL}
    lat = config("latency", generations=2).replace(**space_cfg)
    e = estimate_search(lat, step_fn=fake_step, problem=TINY)
    session = SearchSession(tmp_path / "run", lat, fake_evaluate, TINY)
    model, sample, _, _ = session.time_model("cpu")
    space = lat.space.search_space()
    picks = session._bound_genomes(space, session.within_budgets(TINY, "cpu"), *extreme_genomes(space),
                                   lambda g: float(flops_of(g)))
    assert {g.nf1 for g in picks} == {8, 16} and len(picks) == 4
    each = [model.extra_s(g) for g in picks]  # the time model's seconds for one network's latency
    assert all(v > 1.0 for v in each)
    assert model.begin_s == pytest.approx(sum(each), rel=1e-6) and e.bounds_s == pytest.approx(sum(each), rel=1e-6)
    assert f"at the start        {sum(each):.0f} s" in e.text()
    assert any("latency of 4 networks at the start" in n for n in e.notes)
    lo, mid, hi = e.total_s
    per = np.array([model.candidate_seconds(g) for g in sample])
    # its first generation is drawn as the search draws it, without measuring a latency, and predicted one by one
    first = session.first_generation(TINY, "cpu")
    assert e.first_n == len(first) == lat.samea.population and session.latency is None
    assert e.first_s == pytest.approx(sum(model.candidate_seconds(g) for g in first), rel=1e-6)
    assert mid == pytest.approx(e.warmup_s + e.bounds_s + e.first_s + (e.evaluations[1] - e.first_n) * per.mean()
                                + e.end_s, rel=1e-6)
    session.run()
    rows = RunStore.open_readonly(tmp_path / "run").candidates()
    assert [Genome.from_dict(r.genome) for r in rows[:len(first)]] == first  # the genomes the search trained first
    assert all(r.generation == 0 for r in rows[:len(first)]) and all(r.generation != 0 for r in rows[len(first):])
    paper = estimate_search(config("parameters", generations=2).replace(**space_cfg), step_fn=fake_step, problem=TINY)
    assert paper.bounds_s == 0.0 and "at the start" not in paper.text()


def test_a_genomes_one_off_set_up_is_counted_once_per_search_not_per_candidate():
    """A genome's first step and first validation case set up its shapes (on a GPU, the convolution
    algorithms; later genomes of the same widths reuse them): the calibration keeps that apart, and the
    estimate adds it once, where counting it per candidate doubled a search's estimate on an H200."""
    def shaped_step(genome, problem, train, device):  # each genome also pays 2 s once for its shapes
        return (*fake_step(genome, problem, train, device), 2.0)

    cfg = config("parameters", generations=2)
    plain = estimate_search(cfg, step_fn=fake_step, problem=TINY, recalibrate=True)
    shaped = estimate_search(cfg, step_fn=shaped_step, problem=TINY, recalibrate=True)
    n = shaped.calibrated_genomes
    assert n == plain.calibrated_genomes == 3
    assert shaped.candidate_s == pytest.approx(plain.candidate_s)  # not in any candidate's time
    assert shaped.warmup_s == pytest.approx(plain.warmup_s + 2.0 * n, abs=0.1)  # once per calibrated genome
    for a, b in zip(plain.total_s, shaped.total_s):
        assert b - a == pytest.approx(shaped.warmup_s - plain.warmup_s, abs=1e-6)


def test_the_time_model_learns_that_narrow_networks_run_slower_per_flop():
    """Calibrated on the cheapest, the dearest and the median of each width, the model predicts a device
    whose step time falls with width at equal FLOPs (small convolutions are memory-bound on a CPU);
    FLOPs alone could not."""
    from engine.network.cost import estimate_cost

    space = SearchSpace.from_dict({**SMALL, "nf1": [8, 16, 32], "n_cells": [5, 7]})
    sample = est.sample_genomes(space, lambda g: True, 64, 3)

    def costs(g):
        c = estimate_cost(g, TINY.in_channels, TINY.num_classes, TINY.patch_size, TINY.batch_size)
        return float(c.train_step_flops), float(c.forward_flops / TINY.batch_size)

    def device(g, problem, train, dev):  # 2x slower per FLOP at nf1 8 than at 32
        train, infer = costs(g)
        val = infer * 1e-10 * (g.nf1 / 32) ** -0.5
        return train * 1e-11 * (g.nf1 / 32) ** -0.5, val, 1.0 + val  # fixed: building, then a validation pass

    picks = est.calibration_genomes(sample, lambda g: costs(g)[0], by_width=True)
    assert {g.nf1 for g in picks} == {8, 16, 32} and len(picks) >= 4
    cal = est.calibrate(TINY, {}, "cpu", picks, costs, "test", "k", step_fn=device)
    model = est.TimeModel(cal, costs, epochs=2, iterations=3)
    flops_only = PowerLaw((p.train_flops, p.step_s) for p in cal.points)
    worst = 0.0
    for g in sample:
        true = device(g, TINY, {}, "cpu")
        assert model.step.predict(costs(g)[0], g.nf1) == pytest.approx(true[0], rel=1e-6)
        assert model.raw_seconds(g) == pytest.approx(1.0 + 6 * true[0] + 3 * true[1], rel=1e-6)
        # the fixed cost follows the genome's validation pass, not one median for every genome
        assert model.parts(g)["fixed_s"] == pytest.approx(true[2], rel=1e-6)
        worst = max(worst, abs(flops_only.predict(costs(g)[0]) / true[0] - 1))
    assert worst > 0.2
    # one width, or too few points: FLOPs alone
    assert WidthPowerLaw([(1e9, 8, 1.0), (2e9, 16, 1.5), (4e9, 32, 2.0)]).coef is None
    assert WidthPowerLaw([(1e9, 8, 1.0), (2e9, 8, 2.0), (4e9, 8, 4.0), (8e9, 8, 8.0)]).predict(16e9, 8) == \
        pytest.approx(16.0)


def test_the_eta_learns_each_widths_speed_from_its_candidates():
    """A calibration point sets its width's curve, so a width's candidates share its error: once two
    candidates of a width are measured, that width's predictions follow them; a width with fewer
    measured follows the median of all. The latency measurement, outside a candidate's recorded
    seconds, is added apart, scaled by the measuring times observed (not by the training's ratios)."""
    from engine.network.cost import estimate_cost

    space = SearchSpace.from_dict({**SMALL, "nf1": [8, 16, 32], "n_cells": [5, 7]})
    sample = est.sample_genomes(space, lambda g: True, 64, 3)

    def costs(g):
        c = estimate_cost(g, TINY.in_channels, TINY.num_classes, TINY.patch_size, TINY.batch_size)
        return float(c.train_step_flops), float(c.forward_flops / TINY.batch_size)

    def device(g, problem, train, dev):
        train, infer = costs(g)
        return train * 1e-11, infer * 1e-10, 1.0

    picks = est.calibration_genomes(sample, lambda g: costs(g)[0], by_width=True)
    model = est.TimeModel(est.calibrate(TINY, {}, "cpu", picks, costs, "test", "k", step_fn=device), costs, 2, 3)
    model.extra_s = lambda g: 2.0  # each candidate's latency measured, outside its recorded seconds
    w8, w16, w32 = ([g for g in sample if g.nf1 == w] for w in (8, 16, 32))
    raw = model.trained_seconds  # what a candidate's recorded seconds cover
    assert model.raw_seconds(w8[0]) == pytest.approx(raw(w8[0]) + 2.0)
    model.observe(w8[0], 0.5 * raw(w8[0]))  # this device runs nf1 8 at half the calibrated time
    model.observe(w8[1], 0.5 * raw(w8[1]))
    model.observe(w16[0], 1.0 * raw(w16[0]))  # and nf1 16 as calibrated
    assert model.candidate_seconds(w8[2]) == pytest.approx(0.5 * raw(w8[2]) + 2.0)
    assert model.candidate_seconds(w16[1]) == pytest.approx(0.5 * raw(w16[1]) + 2.0)  # one of its width: all's
    model.observe(w16[1], 1.0 * raw(w16[1]))
    assert model.candidate_seconds(w16[2]) == pytest.approx(raw(w16[2]) + 2.0)
    assert model.candidate_seconds(w8[2]) == pytest.approx(0.5 * raw(w8[2]) + 2.0)
    assert model.candidate_seconds(w32[0]) == pytest.approx(0.75 * raw(w32[0]) + 2.0)  # none of its width
    assert model.correction == pytest.approx(0.75)
    # ONNX Runtime measured slower than the model's windows: that part follows its own measured times
    model.observe_latency(w8[0], 3.0)
    model.observe_latency(w16[0], 2.4)
    model.observe_latency(w8[1], 0.0)  # nothing measured (the latency was known): ignored
    assert model.latency_correction == pytest.approx(1.35)
    assert model.candidate_seconds(w16[2]) == pytest.approx(raw(w16[2]) + 2.7)
    assert model.correction == pytest.approx(0.75)  # the training's correction unchanged


def test_without_a_calibration_the_eta_adds_the_mean_latency_measurement():
    """Without a calibration the ETA's seconds per candidate are the mean recorded seconds, which leave
    out measuring its latency: the mean measuring time is added once the run has measured some."""
    model = est.MeanTimeModel()
    space = SearchSpace.from_dict(SMALL)
    g = space.decode([0] * len(space.cardinalities))
    assert math.isnan(model.candidate_seconds(g))
    model.observe(g, 10.0)
    model.observe(g, 14.0)
    assert model.candidate_seconds(g) == pytest.approx(12.0)
    model.observe_latency(g, 2.0)
    model.observe_latency(g, 4.0)
    assert model.candidate_seconds(g) == pytest.approx(15.0)


def test_a_latency_search_tells_the_eta_each_measuring_time(latency_run):
    """Each latency a search measures before training a candidate reaches the ETA's model with the
    seconds it took; the bound genomes measured at the start and latencies already known do not."""
    session, _, run = latency_run
    with RunStore.open_readonly(run) as s:
        first_queued = min(c.queued_at for c in s.candidates())
        during = [r for r in s.latencies() if r["measured_at"] > first_queued]
    model = session.eta_model
    assert isinstance(model, est.MeanTimeModel)  # no calibration in the test's cache
    assert during and len(model.latency_seconds) == len(during)
    assert all(0 < t < 60 for t in model.latency_seconds)


@pytest.mark.parametrize("profile", ["default", "paper"])
def test_the_time_model_validates_as_often_as_the_trainer(tmp_path, small_demo, profile):
    """The estimate counts the validations a real training of the run's data does: every few epochs in
    the default profile (at most a tenth of the time), every epoch in the paper profile."""
    from engine.run.evaluate import training_data
    from engine.train.config import TrainerConfig
    from engine.train.trainer import Trainer

    dataset, toml = small_demo
    cfg = SearchConfig.from_toml(toml.read_text()).replace(dataset=str(dataset), profile=profile,
                                                            training={"epochs": 12})
    session = SearchSession(tmp_path / "run", cfg, fake_evaluate)
    session.problem = session._prepare_problem()
    model, sample, _, _ = session.time_model("cpu", calibrate_now=True, step_fn=fake_step)
    data = training_data(session.problem.data)
    trainer = Trainer(sample[0], data, TrainerConfig.from_dict({**session._train_dict(), "device": "cpu"}))
    assert model.val_every == trainer.val_every and model.iterations == trainer.iterations
    assert (model.val_every > 1) == (profile == "default")


def test_measuring_a_latency_is_predicted_over_the_reference_volumes_windows(tmp_path, small_demo):
    """Measuring a candidate's latency runs the sliding window over the plan's median volume (export,
    a warm-up run, ``latency_runs`` timed runs): the time model counts that volume's windows at the
    validation pass's time per window, not one average validation case."""
    from engine.run.evaluate import training_data
    from engine.train.trainer import sliding_windows

    dataset, toml = small_demo
    cfg = SearchConfig.from_toml(toml.read_text()).replace(dataset=str(dataset), samea={"objective": "latency",
                                                                                         "latency_runs": 3})
    session = SearchSession(tmp_path / "run", cfg, fake_evaluate)
    session.problem = session._prepare_problem()
    patch = tuple(session.problem.patch_size)
    session.problem.plan["median_shape"] = [40, 40, 16]  # a reference volume of 16 windows
    assert sliding_windows((40, 40, 16), patch) == 16
    model, sample, _, _ = session.time_model("cpu", calibrate_now=True, step_fn=fake_step)
    val_windows = sum(sliding_windows(c.label.shape, patch) for c in training_data(session.problem.data).val)
    assert val_windows != 16
    for g in sample[:3]:
        val_pass = model.val.predict(model.costs(g)[1], g.nf1)
        assert model.extra_s(g) == pytest.approx(1.0 + 4 * val_pass * 16 / val_windows, rel=1e-6)


def test_the_estimate_counts_the_command_start_when_asked(tmp_path):
    """A fresh process (the CLI, a child job) adds its own start to the estimate; a long-lived one does not."""
    import subprocess
    import sys

    cfg = config("parameters", generations=2)
    plain = estimate_search(cfg, step_fn=fake_step, problem=TINY)
    counted = estimate_search(cfg, step_fn=fake_step, problem=TINY, count_start=True)
    assert plain.start_s == 0.0 and "start " not in plain.text()
    assert counted.start_s > 0 and "start " in counted.text()
    for a, b in zip(plain.total_s, counted.total_s):
        assert b == pytest.approx(a + counted.start_s, rel=1e-6)
    # the age of a process that slept 1.5 s after starting is at least that
    code = "import time; time.sleep(1.5); from engine.run.estimate import process_age; print(process_age())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert age >= 1.5


def test_objective_keys_are_validated():
    with pytest.raises(ConfigError, match="samea.objective must be one of parameters, flops, latency"):
        SearchConfig().replace(samea={"objective": "speed"})
    with pytest.raises(ConfigError, match="resources.max_latency_ms must be a number >= 0"):
        SearchConfig().replace(resources={"max_latency_ms": -1.0})
    with pytest.raises(ConfigError, match="samea.latency_threads must be an integer >= 1"):
        SearchConfig().replace(samea={"latency_threads": 0})
    assert math.isnan(PowerLaw().a)


def _cli(*args, env=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, env=env)


def test_cli_refuses_an_unknown_objective_in_one_line(tmp_path):
    p = _cli("search", "--dataset", "demo", "--out", str(tmp_path / "run"), "--objective", "speed")
    assert p.returncode == 2 and "invalid choice: 'speed'" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[resources]\nmax_latency_ms = -5.0\n")
    before = bad.read_bytes()
    p = _cli("search", "--dataset", "demo", "--out", str(tmp_path / "run"), "--config", str(bad), "--estimate")
    assert p.returncode == 2 and "resources.max_latency_ms must be a number >= 0" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and bad.read_bytes() == before
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_estimate_prints_a_range_writes_no_run_and_caches_its_calibration(tmp_path):
    import os

    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[space]\nnf1 = [8]\nn_cells = [5]\n[samea]\npopulation = 2\ngenerations = 1\nneighbourhood = 2\n'
                   '[training]\nepochs = 1\nplan = { target_spacing = [6.0, 6.0, 6.0] }\n')
    config_bytes = cfg.read_bytes()
    env = {**os.environ, "EMONAS_CACHE_DIR": str(tmp_path / "cache"), "EMONAS_NO_PROGRESS": "1"}
    args = ("search", "--dataset", "demo", "--out", str(tmp_path / "run"), "--config", str(cfg), "--estimate", "--json")
    first = _cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout.strip().splitlines()[-1])
    lo, mid, hi = doc["total_s"]
    assert 0 < lo <= mid <= hi and doc["evaluations"] == [2, 2, 2] and not doc["cached"]
    assert doc["calibrated_genomes"] >= 2
    assert not (tmp_path / "run").exists()  # the estimate prints; it does not start the run
    again = json.loads(_cli(*args, env=env).stdout.strip().splitlines()[-1])
    assert again["cached"] and again["candidate_s"] == doc["candidate_s"]
    # the totals differ only by each command's own start, measured in its process
    assert doc["start_s"] > 0 and again["start_s"] > 0
    assert [t - again["start_s"] for t in again["total_s"]] == pytest.approx([t - doc["start_s"] for t in doc["total_s"]])
    # with a latency limit the estimate measures a few genomes once and says the limit's share of the space
    limited = _cli(*args, "--max-latency-ms", "1e6", env=env)
    assert limited.returncode == 0, limited.stderr
    notes = json.loads(limited.stdout.strip().splitlines()[-1])["notes"]
    assert any(n.startswith("max_latency_ms 1e+06 excludes about 0 % of the space") for n in notes), notes
    assert cfg.read_bytes() == config_bytes  # the estimate reads its configuration, never writes it


def test_the_calibration_keeps_to_its_budget():
    """After its first two genomes the calibration times only those whose timing, predicted from FLOPs
    by the ones timed, ends within the budget: a dear genome is skipped, a cheaper one after it is timed."""
    rng = np.random.default_rng(3)
    genomes = list(dict.fromkeys(SearchSpace().sample(rng) for _ in range(6)))[:6]
    flops = dict(zip((g.to_json() for g in genomes), (1.0, 10.0, 5.0, 2.0, 3.0, 1.0)))
    now = [0.0]

    def step(genome, problem, train, device):  # a stand-in taking one second per FLOP on a fake clock
        now[0] += flops[genome.to_json()]
        return 0.1, 0.2, 0.3

    def costs(g):
        return flops[g.to_json()] * 1e9, flops[g.to_json()] * 1e8

    cal = est.calibrate(TINY, {}, "cpu", genomes, costs, "stand-in", "key", budget_s=16.0, step_fn=step,
                        clock=lambda: now[0])
    timed = [p.genome for p in cal.points]
    # warm-up 1 s, then 1 + 10 s; 5 s would end at 17 s: skipped; 2 s (14 s) timed; 3 s skipped; 1 s (15 s) timed
    assert timed == [genomes[i].to_dict() for i in (0, 1, 3, 5)]
    assert cal.seconds == 15.0 <= 16.0
    # the first two are timed whatever the budget
    now[0] = 0.0
    assert len(est.calibrate(TINY, {}, "cpu", genomes, costs, "stand-in", "key", budget_s=0.5, step_fn=step,
                             clock=lambda: now[0]).points) == 2


def test_a_calibration_step_slowed_for_a_few_seconds_is_not_what_it_records(tmp_path, small_demo, monkeypatch):
    """Real steps on real data: a machine shared with other work slows steps in episodes of seconds.
    One that covers the first burst of timed steps leaves the step time the calibration records as the
    undisturbed burst's, not the slowed one's (which would carry into every candidate of the width)."""
    import time

    from engine.train.trainer import Trainer

    dataset, toml = small_demo
    cfg = SearchConfig.from_toml(toml.read_text()).replace(dataset=str(dataset))
    session = SearchSession(tmp_path / "run", cfg, fake_evaluate)
    problem = session._prepare_problem()
    genome = Genome.from_dict({**SearchSpace().sample(np.random.default_rng(0)).to_dict(), "nf1": 8, "n_cells": 5})
    step = Trainer.train_step

    def run(slow: set[int]) -> float:
        calls = [0]

        def train_step(self, images, labels):
            calls[0] += 1
            if calls[0] in slow:
                time.sleep(0.6)  # another process holds the core
            return step(self, images, labels)

        monkeypatch.setattr(Trainer, "train_step", train_step)
        out = est.real_calibration_step(genome, problem, session._train_dict(), "cpu")
        assert calls[0] == 1 + 2 * est.CALIBRATION_STEPS  # a warm-up step, then two bursts
        return out[0]

    quiet = run(set())
    assert quiet < 0.6
    # the first burst slowed: the second, after the validation passes, is kept
    assert run(set(range(2, 2 + est.CALIBRATION_STEPS))) < quiet + 0.3
    # the second slowed: the first is kept
    assert run(set(range(2 + est.CALIBRATION_STEPS, 2 + 2 * est.CALIBRATION_STEPS))) < quiet + 0.3
    # a device that is slow throughout is measured slow
    assert run(set(range(2, 2 + 2 * est.CALIBRATION_STEPS))) > 0.6


def test_the_calibration_scales_a_timed_validation_case_by_sliding_windows(tmp_path, small_demo, monkeypatch):
    """A case's validation time follows its sliding windows, not the count of cases: validation cases of
    1, 2 and 9 windows on a stand-in that takes 0.05 s a window give a pass of 12 windows (0.6 s), where
    the timed case (the second, of 2 windows) times the number of cases would say 0.3 s."""
    import dataclasses
    import time

    import engine.run.evaluate as evaluate
    import engine.train.trainer as trainer_module
    from engine.train.trainer import Trainer, sliding_windows

    dataset, toml = small_demo
    cfg = SearchConfig.from_toml(toml.read_text()).replace(dataset=str(dataset))
    session = SearchSession(tmp_path / "run", cfg, fake_evaluate)
    problem = session._prepare_problem()
    patch = tuple(problem.patch_size)
    assert patch == (16, 16, 16)
    shapes = [(16, 16, 16), (24, 16, 16), (32, 32, 16)]
    assert [sliding_windows(s, patch) for s in shapes] == [1, 2, 9]
    real_data = evaluate.training_data

    def with_val_cases(d):
        data = real_data(d)
        case = data.train[0]
        data.val = [dataclasses.replace(case, case_id=f"v{i}", image=np.zeros((case.image.shape[0], *s), np.float32),
                                        label=np.zeros(s, np.uint8)) for i, s in enumerate(shapes)]
        return data

    def windows_of(trainer) -> int:
        return sum(sliding_windows(c.label.shape, trainer.patch) for c in trainer.data.val)

    def validate(self, epoch):
        time.sleep(0.05 * windows_of(self))
        return {}

    def metrics(trainer):
        time.sleep(0.05 * windows_of(trainer))
        return {}

    monkeypatch.setattr(evaluate, "training_data", with_val_cases)
    monkeypatch.setattr(Trainer, "validate", validate)
    monkeypatch.setattr(trainer_module, "validation_metrics", metrics)
    genome = Genome.from_dict({**SearchSpace().sample(np.random.default_rng(0)).to_dict(), "nf1": 8, "n_cells": 5})
    _, val, fixed, _ = est.real_calibration_step(genome, problem, session._train_dict(), "cpu")
    assert val == pytest.approx(0.6, abs=0.06)
    assert fixed > 0.55  # building the network, then the final pass of 12 windows


def test_calibrations_are_kept_side_by_side_and_an_unwritable_cache_only_warns(tmp_path, monkeypatch, caplog):
    from engine.run.estimate import Calibration, CalibrationPoint, load_calibration, save_calibration

    point = CalibrationPoint(genome={}, train_flops=1e9, infer_flops=1e8, step_s=0.1, val_s=0.5, overhead_s=1.0)
    a, b, c = (Calibration(key=k, device="cpu", hardware="test", points=[point], seconds=2.0) for k in "abc")
    monkeypatch.setenv("EMONAS_CACHE_DIR", str(tmp_path / "cache"))
    save_calibration(a)
    save_calibration(b)
    assert load_calibration("a") == a and load_calibration("b") == b
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["calibration.json"]  # no temporary left
    # a cache that cannot take the file (here a folder where the file belongs; works as root too)
    monkeypatch.setenv("EMONAS_CACHE_DIR", str(tmp_path / "blocked"))
    (tmp_path / "blocked" / "calibration.json").mkdir(parents=True)
    save_calibration(c)  # no exception: the estimate in hand is not lost
    assert "not kept for the next estimate" in caplog.text and load_calibration("c") is None
    assert [p.name for p in (tmp_path / "blocked").iterdir()] == ["calibration.json"]


@pytest.mark.parametrize("lo, hi, text", [(215, 265, "3.6 to 4.4 min"), (150, 420, "2 to 7 min"),
                                          (60, 90, "60 to 90 s"), (3000, 9000, "0.8 to 2.5 h")])
def test_the_estimates_range_reads_in_one_unit_and_never_as_one_value(lo, hi, text):
    """The range is said in the unit of its upper end, with a decimal more where both ends would round alike."""
    e = est.SearchEstimate("cpu", "AMD EPYC", "samea", (8, 8, 8), (17.5, 23.9, 29.9), (lo, (lo + hi) / 2, hi),
                           25.9, 3, False)
    assert e.text().splitlines()[0].endswith(f"(range {text}) on cpu (AMD EPYC)")
