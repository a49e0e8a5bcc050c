"""Known values for the parts of SaMEA: weights, neighbourhoods, PBI, mutation schedule, selection
probabilities, Latin hypercube, surrogate; Pareto tools against pymoo."""

import math

import numpy as np
import pytest

from engine.search import moead, operators, pareto
from engine.search.surrogate import ForestSurrogate


def test_weights_are_the_accuracy_leaning_half():
    w = moead.weight_vectors(10)
    assert w.shape == (10, 2)
    np.testing.assert_allclose(w[:, 0], [0.5 + i * 0.5 / 9 for i in range(10)])
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert tuple(w[0]) == (0.5, 0.5) and tuple(w[-1]) == (1.0, 0.0)


def test_neighbourhoods_nearest_first_ties_to_lower_index():
    nb = moead.neighbourhoods(moead.weight_vectors(10), 3)
    assert nb[0].tolist() == [0, 1, 2]
    assert nb[5].tolist() == [5, 4, 6]
    assert nb[9].tolist() == [9, 8, 7]
    with pytest.raises(ValueError):
        moead.neighbourhoods(moead.weight_vectors(4), 5)


def test_pbi_known_values():
    f = np.array([0.3, 0.4])
    assert moead.pbi(f, [1.0, 0.0], 0.001) == pytest.approx(0.3 + 0.001 * 0.4)
    d1 = 0.7 / math.sqrt(2)
    d2 = math.hypot(0.3 - 0.35, 0.4 - 0.35)
    assert moead.pbi(f, [0.5, 0.5], 5.0) == pytest.approx(d1 + 5.0 * d2)
    # a stack of points at once
    np.testing.assert_allclose(moead.pbi(np.array([[0.3, 0.4], [0.0, 0.0]]), [1.0, 0.0], 1.0), [0.7, 0.0])


def test_mutation_schedule():
    assert operators.mutation_probability(1, 40, 10) == 1.0
    assert operators.mutation_probability(2, 40, 10) == pytest.approx(1 - math.log(2) / math.log(40))
    assert operators.mutation_probability(20, 40, 10) == pytest.approx(0.187902, abs=1e-6)
    assert operators.mutation_probability(40, 40, 10) == 0.1  # floor 1 / n_genes
    assert operators.mutation_probability(2, 40, 10, scale=0.5) == pytest.approx(0.5 * (1 - math.log(2) / math.log(40)))


def test_subproblem_probabilities_formula():
    p = operators.subproblem_probabilities([3, 1, 0, 0], 0.2)
    np.testing.assert_allclose(p, np.array([0.8, 0.3, 0.05, 0.05]) / 1.2, atol=1e-6)
    np.testing.assert_allclose(operators.subproblem_probabilities([0, 0, 0, 0]), 0.25)


def test_value_probabilities_formula():
    # value 0: mean f1 0.3 -> perf 0.7; value 1: 0.5 -> 0.5; value 2: 0.9 -> 0.1; value 3 unseen -> 0
    p = operators.value_probabilities([0, 0, 1, 2], [0.2, 0.4, 0.5, 0.9], 4, 1.0, 0.2)
    expected = (np.array([0.7, 0.5, 0.1, 0.0]) / 1.3 + 0.05) / 1.2
    np.testing.assert_allclose(p, expected)
    assert p.sum() == pytest.approx(1.0)


def test_mutation_draws_other_values_by_probability():
    rng = np.random.default_rng(0)
    probs = [np.array([0.0, 0.0, 1.0]), np.full(4, 0.25)]
    counts = np.zeros(4)
    for _ in range(600):
        child = operators.mutate([2, 1], 1.0, probs, rng)
        assert child[1] != 1  # always changes
        assert child[0] in (0, 1)  # current value excluded, the rest renormalized (uniform)
        counts[child[1]] += 1
    assert counts[1] == 0 and counts[[0, 2, 3]].min() > 150
    assert operators.mutate([2, 1], 0.0, probs, rng).tolist() == [2, 1]


def test_uniform_crossover():
    rng = np.random.default_rng(1)
    a, b = np.zeros(10, int), np.ones(10, int)
    assert operators.uniform_crossover(a, b, rng, 1.0).tolist() == [0] * 10
    assert operators.uniform_crossover(a, b, rng, 0.0).tolist() == [1] * 10
    mixed = np.mean([operators.uniform_crossover(a, b, rng).mean() for _ in range(200)])
    assert 0.4 < mixed < 0.6


def test_latin_hypercube_covers_every_value():
    cards = [2, 3, 4, 10, 10, 10, 10, 3, 3, 27]
    x = operators.latin_hypercube(10, cards, np.random.default_rng(3))
    assert x.shape == (10, 10)
    for j, k in enumerate(cards):
        col = x[:, j]
        assert col.min() >= 0 and col.max() < k
        counts = np.bincount(col, minlength=k)
        if k <= 10:
            assert counts.min() >= 10 // k - 1
        if k <= 5 or k == 10:
            assert counts.min() >= 1, f"gene {j}: a value never sampled"
    assert sorted(x[:, 3]) == list(range(10))  # ten strata, ten values: a permutation
    for seed in range(20):  # a value spanning >= 2 strata always holds a whole one
        y = operators.latin_hypercube(10, [2, 3, 4, 5], np.random.default_rng(seed))
        assert all(len(set(y[:, j])) == k for j, k in enumerate([2, 3, 4, 5]))


def test_surrogate_mean_and_spread():
    rng = np.random.default_rng(0)
    genes = rng.integers(0, 5, size=(60, 3))
    logp = rng.normal(10, 1, 60)
    y = genes[:, 0] / 5.0
    s = ForestSurrogate(n_trees=50, random_state=0).fit(genes, logp, y)
    mean, std = s.predict(np.array([[0, 2, 2], [4, 2, 2]]), np.array([10.0, 10.0]))
    assert mean[0] < 0.2 < 0.6 < mean[1]
    assert np.all(std >= 0)
    flat = ForestSurrogate(n_trees=10).fit(genes, logp, np.full(60, 0.5))
    m, sd = flat.predict(genes[:2], logp[:2])
    np.testing.assert_allclose(m, 0.5)
    np.testing.assert_allclose(sd, 0.0)


def _pymoo_fronts(f):
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    return [sorted(fr.tolist()) for fr in NonDominatedSorting().do(f)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_non_dominated_sort_matches_pymoo(seed):
    rng = np.random.default_rng(seed)
    f = rng.integers(0, 8, size=(40, 2)).astype(float)  # many ties and duplicates
    assert [fr.tolist() for fr in pareto.non_dominated_sort(f)] == _pymoo_fronts(f)
    f3 = rng.random((30, 3))
    assert [fr.tolist() for fr in pareto.non_dominated_sort(f3)] == _pymoo_fronts(f3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hypervolume_matches_pymoo(seed):
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(seed)
    f = rng.random((25, 2))
    ref = np.array([1.1, 1.2])
    assert pareto.hypervolume_2d(f, ref) == pytest.approx(HV(ref_point=ref).do(f))
    assert pareto.hypervolume_2d([[0.5, 0.5]], [1, 1]) == pytest.approx(0.25)
    assert pareto.hypervolume_2d([[2.0, 0.5]], [1, 1]) == 0.0


def test_best_n_fills_by_rank_then_crowding():
    f = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.4, 0.6], [0.6, 0.6], [0.9, 0.9]])
    # front 0 = rows 0, 1, 2, 3; the boundary points 0 and 1 have infinite crowding
    assert pareto.best_n(f, 2).tolist() == [0, 1]
    assert pareto.best_n(f, 4).tolist() == [0, 1, 2, 3]
    assert pareto.best_n(f, 5).tolist() == [0, 1, 2, 3, 4]
    cd = pareto.crowding_distance(f[:4])
    assert math.isinf(cd[0]) and math.isinf(cd[1]) and cd[3] > 0 and cd[2] > 0
