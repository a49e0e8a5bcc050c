"""The second objective of a search: what a network costs, on a log scale normalized to [0, 1].

``parameters`` is the paper's log(parameter count). ``flops`` is log of the analytic inference FLOPs
of one patch (``engine.network.cost``). ``latency`` is log of the measured time to segment a
reference volume (``engine.run.latency``); a genome not measured yet (a child the surrogate keeps
untrained) gets a latency predicted from its FLOPs and width by ``WidthPowerLaw`` fitted to the
measured ones.

Plain numbers only: no PyTorch here, so strategies and the app can use it cheaply.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from engine.genome import Genome
from engine.network.cost import estimate_cost

#: Name, unit and description of each objective, for displays.
OBJECTIVE_LABELS = {
    "parameters": ("parameters", "", "log parameter count"),
    "flops": ("GFLOPs", "GFLOP", "log inference GFLOPs of one patch"),
    "latency": ("latency", "ms", "log measured latency"),
}


def inference_flops(genome: Genome, in_channels: int, num_classes: int, patch: Sequence[int],
                    pool_sizes=None) -> int:
    """Forward FLOPs of one patch (batch 1). Raises ``ConfigError`` when the patch cannot be pooled."""
    return int(estimate_cost(genome, in_channels, num_classes, patch, batch=1, pool_sizes=pool_sizes).forward_flops)


class PowerLaw:
    """``y = exp(a) * x**b``, fitted by least squares on logs; the model of latency (or time) from FLOPs.

    With one point it scales proportionally (``b = 1``); with none it cannot predict.
    """

    def __init__(self, points: Iterable[tuple[float, float]] = ()):
        self.points: list[tuple[float, float]] = []
        self.a, self.b = math.nan, 1.0
        for x, y in points:
            self.add(x, y, refit=False)
        self._fit()

    def add(self, x: float, y: float, refit: bool = True) -> None:
        if x > 0 and y > 0 and math.isfinite(x) and math.isfinite(y):
            self.points.append((float(x), float(y)))
            if refit:
                self._fit()

    def _fit(self) -> None:
        if not self.points:
            self.a, self.b = math.nan, 1.0
            return
        lx = np.log([p[0] for p in self.points])
        ly = np.log([p[1] for p in self.points])
        if len(set(lx.tolist())) < 2:
            self.a, self.b = float(np.mean(ly - lx)), 1.0
            return
        b, a = np.polyfit(lx, ly, 1)
        if not b > 1e-9:  # flat, or tilted the wrong way by noise: a cost never falls with FLOPs
            self.a, self.b = float(np.mean(ly)), 0.0
        else:
            self.a, self.b = float(a), float(b)

    @property
    def ready(self) -> bool:
        return bool(self.points)

    def predict(self, x: float) -> float:
        if not self.points:
            raise ValueError("no measured points to predict from")
        return float(math.exp(self.a + self.b * math.log(max(float(x), 1.0))))

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "points": len(self.points)}


class WidthPowerLaw:
    """``y = exp(a) * flops**b * nf1**c``, least squares on logs: the model of a cost (a training step,
    a validation pass, a latency) from FLOPs and the first-level width. On a CPU a narrow network does
    less work per second than a wide one of the same FLOPs (small convolutions are bound by memory, not
    arithmetic), so FLOPs alone mispredict a space of several widths. With fewer than ``min_points``
    points (at least 4: three coefficients) or one width it is ``PowerLaw`` of FLOPs alone.
    """

    def __init__(self, points: Iterable[tuple[float, float, float]] = (), min_points: int = 4):
        self.points = [(float(f), float(w), float(s)) for f, w, s in points
                       if f > 0 and w > 0 and s > 0 and math.isfinite(f) and math.isfinite(s)]
        self.flops_only = PowerLaw((f, s) for f, _, s in self.points)
        self.coef: tuple[float, float, float] | None = None
        if len(self.points) >= max(4, int(min_points)) and len({w for _, w, _ in self.points}) >= 2:
            x = np.array([[1.0, math.log(f), math.log(w)] for f, w, _ in self.points])
            y = np.log([s for _, _, s in self.points])
            (a, b, c), *_ = np.linalg.lstsq(x, y, rcond=None)
            if b > 1e-9:  # a cost never falls with FLOPs: otherwise noise, keep the simpler law
                self.coef = (float(a), float(b), float(c))

    @property
    def ready(self) -> bool:
        return bool(self.points)

    def predict(self, flops: float, width: float) -> float:
        if self.coef is None:
            return self.flops_only.predict(flops)
        a, b, c = self.coef
        return float(math.exp(a + b * math.log(max(flops, 1.0)) + c * math.log(max(width, 1.0))))

    def to_dict(self) -> dict:
        if self.coef is None:
            return {**self.flops_only.to_dict(), "width": False}
        a, b, c = self.coef
        return {"a": a, "b": b, "c": c, "points": len(self.points), "width": True}


def normalized(value: float, bounds: tuple[float, float]) -> float:
    """``(log value - log lo) / (log hi - log lo)``: 0 at the cheapest bound, 1 at the dearest."""
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    return (math.log(max(float(value), 1e-12)) - lo) / (hi - lo)
