"""Variation operators of SaMEA on integer-encoded genomes (one index per gene, see SearchSpace.encode).

Every stochastic function takes an explicit ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import qmc


def latin_hypercube(n: int, cardinalities: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """``n`` genomes (n, genes) by Latin-hypercube sampling over the genes.

    Each gene's unit interval is cut in ``n`` strata, each stratum used once (scipy's
    ``LatinHypercube``); a point ``u`` maps to value ``floor(u * k)`` of a gene with ``k`` values. A
    value spans ``n / k`` strata, so it appears at least ``n // k - 1`` times, and at least once when
    ``k <= n / 2`` or ``k == n``.
    """
    card = np.asarray(cardinalities, dtype=int)
    u = qmc.LatinHypercube(d=len(card), rng=rng).random(n)
    return np.minimum((u * card).astype(int), card - 1)


def uniform_crossover(p1: Sequence[int], p2: Sequence[int], rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Child taking each gene from ``p1`` with probability ``p``, else from ``p2``."""
    a, b = np.asarray(p1, dtype=int), np.asarray(p2, dtype=int)
    take_first = rng.random(len(a)) < p
    return np.where(take_first, a, b)


def mutation_probability(g: int, generations: int, n_genes: int, scale: float = 1.0) -> float:
    """Per-gene mutation probability ``max(scale * (1 - ln g / ln G), 1 / n_genes)``.

    ``g`` is the generation number plus one (the reference code's ``gen``), ``G`` the number of
    generations; ``scale`` is the code's ``fi_0 = min(20 / n_genes, 1)``, 1 for ten genes.
    """
    decay = 1.0 - math.log(max(g, 1)) / math.log(generations) if generations > 1 else 0.0
    return max(scale * decay, 1.0 / n_genes)


def mutate(
    genes: Sequence[int],
    probability: float,
    value_probabilities: Sequence[Sequence[float]],
    rng: np.random.Generator,
) -> np.ndarray:
    """Each gene mutates with ``probability`` to a different value drawn from its value probabilities.

    ``value_probabilities[i]`` sums to one over gene i's values; the current value is excluded and
    the others renormalized (the code redraws until the value changes: the same distribution).
    """
    child = np.array(genes, dtype=int)
    draws = rng.random(len(child))
    for i, probs in enumerate(value_probabilities):
        k = len(probs)
        if k < 2 or draws[i] > probability:
            continue
        p = np.array(probs, dtype=float)
        p[child[i]] = 0.0
        total = p.sum()
        p = p / total if total > 0 else np.where(np.arange(k) == child[i], 0.0, 1.0 / (k - 1))
        child[i] = int(rng.choice(k, p=p))
    return child


def subproblem_probabilities(success: Sequence[float], epsilon: float = 0.2) -> np.ndarray:
    """``P_k ~ S_k / sum S + epsilon / N`` normalized to one (uniform when nothing succeeded yet)."""
    s = np.asarray(success, dtype=float)
    p = s / (s.sum() + 1e-6) + epsilon / len(s)
    return p / p.sum()


def value_probabilities(
    values: Sequence[int], f1: Sequence[float], n_values: int, f1_max: float, epsilon: float = 0.2
) -> np.ndarray:
    """Selection probabilities of one gene's values from the evaluated genomes.

    ``values[j]`` is the gene's value index in evaluated genome j and ``f1[j]`` its objective.
    ``Perf_v = f1_max - mean f1 of genomes having v`` (0 if unseen), then
    ``P_v ~ Perf_v / sum Perf + epsilon / n_values`` normalized to one.
    """
    v = np.asarray(values, dtype=int)
    f = np.asarray(f1, dtype=float)
    perf = np.zeros(n_values)
    for k in range(n_values):
        mask = v == k
        if mask.any():
            perf[k] = f1_max - f[mask].mean()
    total = perf.sum()
    p = (perf / total if total > 0 else np.zeros(n_values)) + epsilon / n_values
    return p / p.sum()
