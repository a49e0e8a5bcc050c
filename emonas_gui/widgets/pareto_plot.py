"""The live Pareto scatter: segmentation error (f1) against parameters, GFLOPs or latency (log axis).

``ParetoPlot(parent=None)``:
- ``set_candidates(candidates, front_ids)`` queues an update; a single-shot ``QTimer`` applies it
  at most every ``throttle_ms`` with one ``ScatterPlotItem.setData`` call (STYLE.md: one item per
  plot, updated with setData, throttled by a timer);
- the front is highlighted (larger, outlined points) and connected by a step line;
- points are coloured by generation (or phase, ``set_colour_by("phase")``); each point's ``data``
  is its candidate id, hovering shows a summary, clicking emits ``candidate_clicked(int)``;
- ``set_x_axis("parameters" | "gflops" | "latency_ms" | "cpu_ms")`` chooses the x-axis; candidates without
  that value (latency not measured) are left out of the drawing, the front still being the run's;
- ``set_overlay(series)`` draws further named point sets over the candidates (the report's searched
  front and U-Net family on the test cases), each with its own colour and symbol, not clickable;
- ``save_button`` (top right) saves the plot as PNG or SVG (``plot_export.save_plot``).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPoint, QPointF, QTimer, Signal
from PySide6.QtWidgets import QVBoxLayout, QWidget

from emonas_gui.widgets.candidate_view import Candidate
from emonas_gui.widgets.plot_export import SavePlotButton

_PHASE_COLOURS = {"init": (120, 120, 220), "learning": (60, 170, 90), "exploitation": (230, 120, 30),
                  "evolution": (60, 170, 90), "random": (200, 200, 80)}


#: mantissas of round values within a decade, coarsest first (ticks on a log axis over decades)
_LOG_MANTISSAS = ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
                  tuple(float(m) for m in range(1, 10)))


def log_ticks(lo: float, hi: float, max_ticks: int) -> list[float]:
    """log10 of round values between 10**lo and 10**hi, at most ``max_ticks`` of them, so that a log
    axis reads 800, 1,000, 1,200 rather than 794, 1,000, 1,260: within a decade, even steps of 1, 2,
    2.5 or 5 times a power of ten; over more, the finest series of round mantissas (1; 1, 3; 1, 2, 5;
    ...) that fits, or every k-th power of ten."""
    lo, hi = sorted((float(lo), float(hi)))
    max_ticks = max(2, int(max_ticks))
    eps = 1e-9 * max(1.0, abs(lo), abs(hi))
    if hi - lo < 1.0:  # the finest even step of 1, 2, 2.5 or 5 times a power of ten that fits
        a, b = 10 ** lo, 10 ** hi
        top = math.floor(math.log10(max(b - a, 1e-300))) + 1
        chosen: list[float] = []
        for power in range(top, top - 4, -1):
            for m in (5.0, 2.5, 2.0, 1.0):
                step = m * 10.0 ** power
                ks = range(math.ceil(a / step - 1e-9), math.floor(b / step + 1e-9) + 1)
                if len(ks) > max_ticks:
                    return chosen
                chosen = [math.log10(k * step) for k in ks if k > 0] or chosen
        return chosen
    best: list[float] | None = None
    for mantissas in _LOG_MANTISSAS:
        vals = [e + math.log10(m) for e in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in mantissas]
        vals = [v for v in vals if lo - eps <= v <= hi + eps]
        if len(vals) > max_ticks:
            break
        best = vals
    if best is None:  # even the powers of ten are too many: every k-th of them
        decades = list(range(math.ceil(lo - eps), math.floor(hi + eps) + 1))
        k = math.ceil(len(decades) / max_ticks)
        best = [float(d) for d in decades if d % k == 0] or [float(decades[0])]
    return best


class ParameterAxis(pg.AxisItem):
    """A bottom axis over log10(value) whose ticks read as counts (16k, 1.2M) or plain numbers, placed
    at round values (:func:`log_ticks`)."""

    plain = False  # GFLOPs and milliseconds read better as 0.5, 12, 340
    #: pixels a tick label needs; the axis holds at most its length over this many ticks
    tick_pixels = 64

    def tickValues(self, minVal, maxVal, size):  # noqa: N802 - pyqtgraph's name
        if not (math.isfinite(minVal) and math.isfinite(maxVal)) or abs(maxVal - minVal) > 30:
            return super().tickValues(minVal, maxVal, size)
        values = log_ticks(minVal, maxVal, max(2, int(size // self.tick_pixels)))
        spacing = min((b - a for a, b in zip(values, values[1:])), default=1.0)
        return [(spacing, values)]

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph's name
        out = []
        for v in values:
            n = 10 ** v
            if self.plain:  # three significant digits, never in e-notation: 0.5, 800, 1,200
                out.append(f"{float(f'{n:.3g}'):,.0f}" if n >= 1e3 else f"{n:.3g}")
            else:
                out.append(f"{n / 1e6:.3g}M" if n >= 1e6 else (f"{n / 1e3:.3g}k" if n >= 1e3 else f"{n:.3g}"))
        return out


#: x-axis choices: candidate field -> axis label
X_AXES = {"parameters": "parameters (log scale)", "gflops": "inference GFLOPs of one patch (log scale)",
          "latency_ms": "latency in ms (log scale)", "cpu_ms": "CPU inference time in ms, report's machine (log scale)"}


def _generation_colour(gen: int, max_gen: int) -> tuple[int, int, int]:
    cmap = pg.colormap.get("viridis")
    t = 0.0 if max_gen <= 0 else min(1.0, max(0.0, gen / max_gen))
    c = cmap.map(0.1 + 0.85 * t, mode="qcolor")
    return c.red(), c.green(), c.blue()


class ParetoPlot(QWidget):
    """Error vs parameters of every finished candidate, the non-dominated front on top."""

    candidate_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None, throttle_ms: int = 250):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        # x holds log10(parameters, GFLOPs or ms); the axis labels its ticks as such
        self.axis = ParameterAxis("bottom")
        self.x_axis = "parameters"
        self.plot = pg.PlotWidget(title="Pareto front", axisItems={"bottom": self.axis})
        lay.addWidget(self.plot)
        self.plot.setLabel("bottom", "parameters (log scale)")
        self.plot.setLabel("left", "segmentation error f1")
        self.plot.getAxis("left").enableAutoSIPrefix(False)
        self.plot.setXRange(4, 7)  # 10k .. 10M parameters until points arrive
        self.plot.setYRange(0, 1)
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        # the title (the colour key) starts at the left and is shortened to end before the Save plot button
        self.plot.getPlotItem().titleLabel.setAttr("justify", "left")
        self.save_button = SavePlotButton(self.plot, "pareto-front")
        self._titles: list[str] = ["Pareto front"]
        self._fixed_titles: list[str] = []  # set_title's, shown instead of the colour key
        self.front_line = self.plot.plot([], [], pen=pg.mkPen((220, 40, 40), width=2))
        self.scatter = pg.ScatterPlotItem(
            hoverable=True,
            hoverPen=pg.mkPen("w", width=2),
            hoverSize=13,
            tip=self._tip,
        )
        self.plot.addItem(self.scatter)
        self.scatter.sigClicked.connect(self._on_clicked)
        self._candidates: dict[int, Candidate] = {}
        self._front: list[int] = []
        self._all: dict[int, Candidate] = {}
        self._front_all: list[int] = []
        self._colour_by = "generation"
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(throttle_ms)
        self._timer.timeout.connect(self._apply)
        self._pending: tuple[list[Candidate], list[int]] | None = None
        #: how many times the scatter was redrawn (throttling makes this << number of updates)
        self.redraws = 0
        self.selected_id: int | None = None
        self._autoranged = False
        self._overlay: list[dict] = []
        self._overlay_items: list = []

    # ---- data in -----------------------------------------------------------------------------
    def set_candidates(self, candidates: Iterable[Candidate], front_ids: Sequence[int] = ()) -> None:
        """Queue ``candidates`` (only finished ones are drawn) and the ids of the front."""
        self._pending = (list(candidates), [int(i) for i in front_ids])
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Apply a queued update now."""
        self._timer.stop()
        self._apply()

    def set_colour_by(self, what: str) -> None:
        """``"generation"`` or ``"phase"``."""
        self._colour_by = "phase" if what == "phase" else "generation"
        self._pending = self._pending or (list(self._all.values()), list(self._front_all))
        self.flush()

    def set_x_axis(self, axis: str) -> None:
        """Plot f1 against ``parameters``, ``gflops`` or ``latency_ms``."""
        self.x_axis = axis if axis in X_AXES else "parameters"
        self.axis.plain = self.x_axis != "parameters"
        self.plot.setLabel("bottom", X_AXES[self.x_axis])
        self._autoranged = False
        self._pending = self._pending or (list(self._all.values()), list(self._front_all))
        self.flush()
        self._draw_overlay()

    def set_overlay(self, series: Sequence[dict]) -> None:
        """Draw point sets over the candidates: each ``{"name", "colour" (r, g, b), "symbol", "points":
        [{"y": value, "tip": text, COST KEY: cost, ...}]}``; a point shows on the x-axes it has a cost for.
        An empty list removes them."""
        self._overlay = [dict(s) for s in series]
        self._draw_overlay()

    def overlay_points(self, name: str) -> list[tuple[float, float]]:
        """The (x, y) drawn for overlay series ``name`` (x as drawn: log10 of the cost)."""
        for s, item in zip(self._overlay, self._overlay_items):
            if s["name"] == name:
                xs, ys = item.getData()
                return [(float(x), float(y)) for x, y in zip(xs, ys)]
        return []

    def set_title(self, *forms: str) -> None:
        """A fixed title instead of the colour key, longest form first: the longest that ends before the
        Save plot button is shown."""
        self._fixed_titles = [str(f) for f in forms]
        self._titles = self._fixed_titles or ["Pareto front"]
        self._fit_title()

    def set_y_label(self, text: str) -> None:
        self.plot.setLabel("left", text)

    def _draw_overlay(self) -> None:
        for item in self._overlay_items:
            self.plot.removeItem(item)
        self._overlay_items = []
        for s in self._overlay:
            pts = [p for p in s["points"] if p.get(self.x_axis)]
            spots = [{"pos": (math.log10(p[self.x_axis]), p["y"]), "data": p.get("tip", ""),
                      "brush": pg.mkBrush(*s.get("colour", (90, 90, 90)), 220), "pen": pg.mkPen(30, 30, 30, 200),
                      "size": 10, "symbol": s.get("symbol", "s")} for p in pts]
            item = pg.ScatterPlotItem(hoverable=True, hoverSize=13, name=s["name"],
                                      tip=lambda x, y, data: str(data))
            item.setData(spots)
            self.plot.addItem(item)
            self._overlay_items.append(item)
        if any(s["points"] for s in self._overlay):
            self.plot.getPlotItem().enableAutoRange()

    def clear(self) -> None:
        self._timer.stop()
        self._pending = None
        self._candidates.clear()
        self._front = []
        self._all, self._front_all = {}, []
        self.scatter.setData([])
        self.front_line.setData([], [])

    # ---- queries -----------------------------------------------------------------------------
    def candidate_ids(self) -> list[int]:
        """Ids of the points drawn, in drawing order."""
        return [int(d) for d in self.scatter.data["data"]]

    def front_ids(self) -> list[int]:
        return list(self._front)

    def candidate(self, cid: int) -> Candidate | None:
        return self._candidates.get(cid)

    def point_position(self, cid: int) -> QPoint:
        """Where candidate ``cid`` sits in the plot widget's viewport (for clicks)."""
        c = self._candidates[cid]
        vb = self.plot.getPlotItem().vb
        scene = vb.mapViewToScene(QPointF(math.log10(c.cost(self.x_axis) or 1), c.f1 or 0.0))
        return self.plot.mapFromScene(scene)

    # ---- internals ---------------------------------------------------------------------------
    def _apply(self) -> None:
        if self._pending is None:
            return
        cands, front = self._pending
        self._pending = None
        self._all = {c.id: c for c in cands if c.ok}  # kept for another x-axis choice
        cands = [c for c in cands if c.ok and c.cost(self.x_axis)]
        self._candidates = {c.id: c for c in cands}
        self._front = [i for i in front if i in self._candidates]
        self._front_all = [i for i in front if i in self._all]
        front_set = set(self._front)
        max_gen = max((c.generation or 0 for c in cands), default=0)
        spots = []
        # front last, so it is drawn on top
        for c in sorted(cands, key=lambda c: c.id in front_set):
            if self._colour_by == "phase":
                rgb = _PHASE_COLOURS.get(str(c.phase), (150, 150, 150))
            else:
                rgb = _generation_colour(c.generation or 0, max_gen)
            on_front = c.id in front_set
            spots.append({
                "pos": (math.log10(c.cost(self.x_axis)), c.f1),
                "data": c.id,
                "brush": pg.mkBrush(*rgb, 230),
                "pen": pg.mkPen((220, 40, 40), width=2) if on_front else pg.mkPen(40, 40, 40, 160),
                "size": 12 if on_front else 8,
                "symbol": "o",
            })
        self.scatter.setData(spots)
        if spots and not self._autoranged:
            self.plot.getPlotItem().enableAutoRange()  # from the placeholder range to the data
            self._autoranged = True
        self._titles = self._fixed_titles or self._legends(max_gen, [str(c.phase) for c in cands])
        self._fit_title()
        pts = sorted(((math.log10(self._candidates[i].cost(self.x_axis)), self._candidates[i].f1) for i in self._front))
        if pts:
            xs, ys = zip(*pts)
            self.front_line.setData(np.array(xs), np.array(ys), stepMode=None)
        else:
            self.front_line.setData([], [])
        self.redraws += 1

    def _legends(self, max_gen: int, phases: list[str]) -> list[str]:
        """The plot title, what the colours mean and how the front is drawn, longest form first."""
        def span(rgb, text):
            return f"<span style='color: rgb{tuple(rgb)}'>● {text}</span>"

        def keys(gen: str) -> str:
            if self._colour_by == "phase":
                return " ".join(span(_PHASE_COLOURS.get(name, (150, 150, 150)), name) for name in dict.fromkeys(phases))
            if max_gen == 0:
                return span(_generation_colour(0, 0), f"{gen} 1")
            # generations count from 1 on screen (the store counts from 0, the initial population)
            return span(_generation_colour(0, max_gen), f"{gen} 1") + " → " + \
                span(_generation_colour(max_gen, max_gen), f"{gen} {max_gen + 1}")

        red, key = "<span style='color: rgb(220, 40, 40)'>(red line)</span>", keys("generation")
        return [f"Pareto front {red} &nbsp; {key}", f"front {red} &nbsp; {key}", key, keys("gen.")]

    def _fit_title(self) -> None:
        """Show the longest form of the title that ends before the Save plot button (the shortest else)."""
        label = self.plot.getPlotItem().titleLabel
        left = self.plot.mapFromScene(label.mapToScene(QPointF(0, 0))).x()
        room = self.save_button.x() - max(0, left) - 8
        for text in self._titles:
            self.plot.setTitle(text)
            if label.item.boundingRect().width() <= room:
                return

    def resizeEvent(self, ev) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(ev)
        QTimer.singleShot(0, self, self._fit_title)  # once the plot and its button have their new places

    def _tip(self, x: float, y: float, data) -> str:
        c = self._candidates.get(int(data)) if data is not None else None
        return c.summary() if c is not None else f"{self.x_axis} {10 ** x:,.3g}\nf1 {y:.4f}"

    def _on_clicked(self, item, points, ev=None) -> None:
        if len(points) == 0:
            return
        cid = int(points[0].data())
        self.selected_id = cid
        self.candidate_clicked.emit(cid)
