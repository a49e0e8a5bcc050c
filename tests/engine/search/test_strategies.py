"""SaMEA, plain MOEA/D and random search driven by ask/tell with analytic objectives (no training)."""

import json
import math

import numpy as np
import pytest

from engine.genome import GENE_NAMES, Genome, SearchSpace
from engine.search import MOEAD, Evaluation, RandomSearch, SaMEA
from engine.search.pareto import pareto_front

SPACE = SearchSpace()
LR = SPACE.cardinalities[GENE_NAMES.index("lr")]


def params(g: Genome) -> int:
    """A made-up size that grows with the learning-rate index: f2 = lr index / 26 (almost exactly)."""
    return round(1000 * math.exp(SPACE.encode(g)[9] / 10))


BOUNDS = (1000, round(1000 * math.exp((LR - 1) / 10)))


def analytic_f1(g: Genome) -> float:
    """A smooth error in [0, 1] that prefers some values of every gene and large lr index (a trade-off)."""
    x = np.array(SPACE.encode(g)) / (np.array(SPACE.cardinalities) - 1)
    return float(np.clip(0.6 * np.mean((x[:9] - 0.3) ** 2) + 0.4 * (1 - x[9]) ** 2, 0, 1))


def make(cls=SaMEA, seed=0, **kw):
    kw.setdefault("population", 6)
    kw.setdefault("generations", 8)
    if cls is not RandomSearch:
        kw.setdefault("neighbourhood", 3)
        kw.setdefault("learning_generations", 3)
        kw.setdefault("surrogate_trees", 30)
    return cls(SPACE, np.random.default_rng(seed), params, BOUNDS, **kw)


def drive(strategy, steps=None, fail=lambda g: False):
    asked = []
    n = 0
    while not strategy.done and (steps is None or n < steps):
        genomes = strategy.ask()
        asked.append([g.to_json() for g in genomes])
        strategy.tell([
            Evaluation(g, math.nan if fail(g) else analytic_f1(g), params(g), "failed" if fail(g) else "done")
            for g in reversed(genomes)  # any order
        ])
        n += 1
    return asked


@pytest.mark.parametrize("cls", [SaMEA, MOEAD, RandomSearch])
def test_search_runs_to_the_end_without_duplicates(cls):
    s = make(cls)
    drive(s)
    keys = [tuple(e["genes"]) for e in s.archive]
    assert len(keys) == len(set(keys)), "a genome was evaluated twice"
    assert s.done and s.ask() == []
    m = s.metrics()
    assert m["evaluations"] == len(s.archive)
    if cls is SaMEA:
        assert m["evaluations_per_phase"]["init"] == 6
        assert m["evaluations_per_phase"]["learning"] == 6 * 3
        # exploitation trains only what pre-screening and the end-of-generation picks let through
        assert 0 < m["evaluations_per_phase"]["exploitation"] <= 6 * 4
        assert m["surrogate_predictions"] == m["evaluations_per_phase"]["exploitation"]
        assert m["surrogate_spearman"] is not None
    else:
        assert m["evaluations"] == 6 * 8


def test_same_seed_same_genomes_in_the_same_order():
    a, b = drive(make(seed=5)), drive(make(seed=5))
    assert a == b
    assert drive(make(seed=6)) != a


def test_state_round_trip_continues_exactly():
    ref = make(seed=2)
    full = drive(ref)
    s = make(seed=2)
    first = drive(s, steps=7)
    s.ask()  # resume with a pending batch, as after a kill between ask and tell
    state = json.loads(json.dumps(s.state_dict()))
    resumed = make(seed=99)  # a different generator: the state restores it
    resumed.load_state_dict(state)
    rest = drive(resumed)
    assert first + rest == full
    assert [e["genes"] for e in resumed.archive] == [e["genes"] for e in ref.archive]


def test_state_refuses_another_space():
    s = make()
    drive(s, steps=2)
    other = SaMEA(SearchSpace(nf1=(8,)), np.random.default_rng(0), params, BOUNDS, population=6, generations=8)
    with pytest.raises(Exception, match="different search space"):
        other.load_state_dict(s.state_dict())


def test_failed_candidates_count_as_worst_and_the_search_goes_on():
    s = make()
    drive(s, fail=lambda g: g.op1 == "identity")
    failed = [e for e in s.archive if e["status"] == "failed"]
    assert failed and all((e["f1"], e["f2"]) == (1.0, 1.0) for e in failed)
    assert s.done


def test_genomes_over_the_budget_are_never_asked():
    s = SaMEA(SPACE, np.random.default_rng(0), params, BOUNDS, feasible=lambda g: g.nf1 != 32 and g.op2 != "identity",
              population=6, generations=6, neighbourhood=3, learning_generations=2, surrogate_trees=20)
    drive(s)
    genomes = [s.decode(e["genes"]) for e in s.archive]
    assert genomes and all(g.nf1 != 32 and g.op2 != "identity" for g in genomes)


def test_initial_population_sorted_worst_first_onto_subproblems():
    s = make()
    genomes = s.ask()
    s.tell([Evaluation(g, analytic_f1(g), params(g)) for g in genomes])
    f1 = [s.archive[i]["f1"] for i in s.slots]
    assert f1 == sorted(f1, reverse=True)  # the most accurate one sits on the weight (1, 0)
    assert [s.archive[i]["subproblem"] for i in s.slots] == list(range(6))


def hand_made(population=4):
    """A SaMEA in its exploitation phase with a hand-made archive: front (0.2, 0.8), (0.5, 0.4), (0.9, 0.1)."""
    s = SaMEA(SPACE, np.random.default_rng(0), params, BOUNDS, population=population, generations=10,
              neighbourhood=2, learning_generations=1, theta=0.001)
    base = SPACE.encode(Genome(0, 0, 0, "conv3d_1x1x1", "conv3d_1x1x1", "conv3d_1x1x1", "conv3d_1x1x1", 5, 8, 1e-5))
    pts = [(0.9, 0.1), (0.5, 0.4), (0.7, 0.7), (0.2, 0.8)]
    for k, (f1, f2) in enumerate(pts):
        genes = list(base)
        genes[3] = k
        s.archive.append({"genes": genes, "f1": f1, "f2": f2, "status": "done", "generation": 0, "subproblem": k,
                          "phase": "init", "parameters": 1000})
    s.slots = [0, 2, 1, 3]
    s.generation = 3
    s.stage = "children"
    return s, base


def pool_member(base, f2, pred, std, k):
    genes = list(base)
    genes[9] = round(f2 * (LR - 1))  # params() makes f2 = lr index / 26
    genes[4] = k
    return {"genes": genes, "subproblem": 3, "predicted_f1": pred, "predicted_std": std, "generation": 3,
            "phase": "exploitation"}


def test_end_of_generation_picks_on_a_hand_made_archive():
    s, base = hand_made()
    pool = [
        pool_member(base, 0.9, 0.10, 0.01, 1),  # A: non-dominated by prediction (more accurate than all)
        pool_member(base, 0.5, 0.60, 0.02, 2),  # B: dominated by (0.5, 0.4)
        pool_member(base, 0.6, 0.55, 0.01, 3),  # C: dominated; lowest predicted f1 of the rest
        pool_member(base, 0.5, 0.95, 0.30, 4),  # D: dominated; highest spread of the rest
    ]
    assert s.pool_picks(pool) == [0, 2, 3]
    s.picks = (False, True, False)
    assert s.pool_picks(pool) == [0]  # A has the lowest predicted f1 of all
    s.picks = (True, False, False)
    assert s.pool_picks(pool) == [0]
    assert s.pool_picks([]) == []


def test_prescreening_against_the_neighbours_pbi():
    s, _ = hand_made()
    # subproblem 3 has weight (1, 0) and neighbour 2 (w = (0.833, 0.167)); their solutions: (0.2, 0.8), (0.5, 0.4)
    assert s.neighbours[3].tolist() == [3, 2]
    assert s._beats_a_neighbour(np.array([0.19, 0.9]), 3)  # 0.1909 < 0.2008 on (1, 0)
    assert s._beats_a_neighbour(np.array([0.3, 0.1]), 3)  # beats (0.5, 0.4) on the neighbour's weight
    assert not s._beats_a_neighbour(np.array([0.6, 0.9]), 3)


def test_exploitation_trains_prescreened_children_then_the_picks():
    s = make(population=6, generations=6, learning_generations=2, seed=4)
    drive(s, steps=3)  # init + two learning generations
    assert s.generation == 3 and s.phase_of(3) == "exploitation"
    first = s.ask()
    metas = [s.describe(g) for g in first]
    assert all(m["phase"] == "exploitation" and m["predicted_f1"] is not None for m in metas)
    for g, m in zip(first, metas):  # every child trained at once beats a neighbour by prediction
        f = np.array([m["predicted_f1"], s.f2_of(params(g))])
        assert s._beats_a_neighbour(f, m["subproblem"])
    pool = [dict(p) for p in s.pool]
    assert len(first) + len(pool) == 6
    s.tell([Evaluation(g, analytic_f1(g), params(g)) for g in first])
    second = s.ask() if pool else []
    expected = [pool[i]["genes"] for i in s.pool_picks(pool)] if pool else []
    assert [list(SPACE.encode(g)) for g in second] == expected


def test_strategy_settings_are_listed_once_by_their_constructors():
    import dataclasses

    from engine.config import SamEAConfig
    from engine.search import MOEAD, RandomSearch, SaMEA

    fields = {f.name for f in dataclasses.fields(SamEAConfig)}
    assert set(SaMEA.config_keys()) <= fields and MOEAD.config_keys() == SaMEA.config_keys()
    assert {"theta", "neighbourhood", "prescreen", "pick_max_std", "population"} <= set(SaMEA.config_keys())
    assert not set(SaMEA.config_keys()) & SaMEA.INJECTED
    assert RandomSearch.config_keys() == ("population", "generations", "max_resample")
