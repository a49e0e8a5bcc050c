"""MOEA/D decomposition parts: weight vectors, neighbourhoods and the PBI scalarization.

All objectives are minimized and normalized to [0, 1]; the reference point is the origin.
"""

from __future__ import annotations

import numpy as np


def weight_vectors(n: int, start: float = 0.5, end: float = 1.0) -> np.ndarray:
    """``n`` two-objective weights ``(w1, 1 - w1)`` with w1 evenly spaced from ``start`` to ``end``.

    The paper's code uses only the accuracy-leaning half, ``w1 = 0.5 + i * 0.5 / (n - 1)``.
    """
    if n < 1:
        raise ValueError("at least one weight vector is needed")
    w1 = np.full(1, float(start)) if n == 1 else start + np.arange(n) * (end - start) / (n - 1)
    return np.stack([w1, 1.0 - w1], axis=1)


def neighbourhoods(weights: np.ndarray, size: int) -> np.ndarray:
    """For each weight vector, the indices of the ``size`` nearest ones (itself first), Euclidean."""
    w = np.asarray(weights, dtype=float)
    if not 1 <= size <= len(w):
        raise ValueError(f"neighbourhood size must be in 1..{len(w)}, got {size}")
    # rounded so that equal distances are equal despite float error; stable sort: ties to the lower index
    dist = np.round(np.linalg.norm(w[:, None, :] - w[None, :, :], axis=2), 12)
    return np.argsort(dist, axis=1, kind="stable")[:, :size]


def pbi(f: np.ndarray, w: np.ndarray, theta: float) -> float | np.ndarray:
    """Penalty-based boundary intersection: ``d1 + theta * d2`` with reference point 0.

    ``d1 = |F . w| / |w|`` is the distance along the weight direction and ``d2`` the distance of F
    from that line. ``f`` may be one vector (2,) or a stack (n, 2).
    """
    f = np.asarray(f, dtype=float)
    w = np.asarray(w, dtype=float)
    unit = w / np.linalg.norm(w)
    d1 = np.abs(f @ unit)
    d2 = np.linalg.norm(f - np.multiply.outer(d1, unit), axis=-1)
    return d1 + theta * d2
