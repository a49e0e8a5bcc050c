"""Pareto dominance tools for minimized objectives: non-dominated sorting, crowding, best-N, 2-D hypervolume."""

from __future__ import annotations

import numpy as np


def _as_matrix(points) -> np.ndarray:
    f = np.asarray(points, dtype=float)
    if f.ndim != 2:
        f = f.reshape(len(f), -1)
    return f


def non_dominated_sort(points) -> list[np.ndarray]:
    """Fronts of ``points`` (n, m), best first; each front is an ascending array of row indices.

    ``a`` dominates ``b`` when it is no worse in every objective and better in at least one;
    identical points share a front.
    """
    f = _as_matrix(points)
    n = len(f)
    if n == 0:
        return []
    le = np.all(f[:, None, :] <= f[None, :, :], axis=2)
    lt = np.any(f[:, None, :] < f[None, :, :], axis=2)
    dominates = le & lt  # dominates[i, j]: i dominates j
    count = dominates.sum(axis=0)  # how many dominate j
    fronts = []
    remaining = np.ones(n, dtype=bool)
    while remaining.any():
        front = np.flatnonzero(remaining & (count == 0))
        fronts.append(front)
        remaining[front] = False
        count = count - dominates[front].sum(axis=0)
        count[~remaining] = -1
    return fronts


def pareto_front(points) -> np.ndarray:
    """Indices of the non-dominated points."""
    fronts = non_dominated_sort(points)
    return fronts[0] if fronts else np.zeros(0, dtype=int)


def crowding_distance(points) -> np.ndarray:
    """NSGA-II crowding distance of each point of one front; boundary points get infinity."""
    f = _as_matrix(points)
    n, m = f.shape if f.size else (len(f), 0)
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(f[:, k], kind="stable")
        span = f[order[-1], k] - f[order[0], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span <= 0:
            continue
        dist[order[1:-1]] += (f[order[2:], k] - f[order[:-2], k]) / span
    return dist


def best_n(points, n: int) -> np.ndarray:
    """The ``n`` best points by non-dominated rank, ties in the last front broken by crowding.

    The selection the reference code makes with pygmo's ``select_best_N_mo``.
    """
    f = _as_matrix(points)
    chosen: list[int] = []
    for front in non_dominated_sort(f):
        if len(chosen) + len(front) <= n:
            chosen.extend(int(i) for i in front)
            continue
        cd = crowding_distance(f[front])
        order = np.argsort(-cd, kind="stable")
        chosen.extend(int(front[i]) for i in order[: n - len(chosen)])
        break
    return np.array(sorted(chosen), dtype=int)


def hypervolume_2d(points, reference) -> float:
    """Area dominated by ``points`` (n, 2) and bounded by ``reference`` (both objectives minimized)."""
    f = _as_matrix(points)
    ref = np.asarray(reference, dtype=float)
    f = f[np.all(f < ref, axis=1)]
    if len(f) == 0:
        return 0.0
    f = f[pareto_front(f)]
    f = f[np.lexsort((f[:, 1], f[:, 0]))]
    area, prev_y = 0.0, ref[1]
    for x, y in f:
        if y < prev_y:
            area += (ref[0] - x) * (prev_y - y)
            prev_y = y
    return float(area)
