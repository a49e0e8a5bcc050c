"""Line plots: a candidate's learning curves, and the hypervolume of a search over evaluations.

``LearningCurves(parent=None).set_curves(curves)`` takes the per-epoch dicts the trainer writes
(``epoch``, ``train_loss``, ``val_loss``, ``val_dice`` {label: dice} or ``val_dice_<label>`` keys);
each of its two plots has a "Save plot" button too.
``HypervolumePlot(parent=None).set_history(evaluations, hypervolumes)``, with a "Save plot" button.
Each plot keeps its items and updates them with ``setData`` (no re-creation per update).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QVBoxLayout, QWidget

from emonas_gui.widgets.plot_export import SavePlotButton

_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def colour(i: int) -> tuple[int, int, int]:
    """The i-th colour of a 10-colour qualitative palette."""
    return _PALETTE[i % len(_PALETTE)]


def _val_dice(row: Mapping[str, Any]) -> dict[str, float]:
    d = row.get("val_dice")
    if isinstance(d, Mapping):
        return {str(k): float(v) for k, v in d.items() if v is not None}
    return {k[len("val_dice_"):]: float(v) for k, v in row.items()
            if k.startswith("val_dice_") and v not in (None, "")}


class LearningCurves(QWidget):
    """Losses (left axis) and validation Dice per label (right panel) against epochs."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.loss_plot = pg.PlotWidget(title="Loss")
        self.dice_plot = pg.PlotWidget(title="Validation Dice")
        for plot in (self.loss_plot, self.dice_plot):
            plot.setLabel("bottom", "epoch")
            plot.addLegend(offset=(5, 5))
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setMinimumHeight(120)
            lay.addWidget(plot)
        self.save_buttons = [SavePlotButton(self.loss_plot, "loss"), SavePlotButton(self.dice_plot, "validation-dice")]
        self.dice_plot.setYRange(0, 1)
        self._loss_items = {
            "train_loss": self.loss_plot.plot([], [], pen=pg.mkPen(colour(0), width=2), name="train"),
            "val_loss": self.loss_plot.plot([], [], pen=pg.mkPen(colour(1), width=2), name="validation"),
        }
        self._dice_items: dict[str, pg.PlotDataItem] = {}
        self.n_epochs = 0

    def set_curves(self, curves: Sequence[Mapping[str, Any]] | None) -> None:
        """Show the per-epoch rows ``curves`` (empty or None clears the plots)."""
        rows = [r for r in (curves or []) if isinstance(r, Mapping)]
        epochs = np.array([float(r.get("epoch", i + 1)) for i, r in enumerate(rows)])
        self.n_epochs = len(rows)
        for key, item in self._loss_items.items():
            ys = np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])
            ok = np.isfinite(ys)
            item.setData(epochs[ok], ys[ok])
        labels: list[str] = []
        for r in rows:
            for name in _val_dice(r):
                if name not in labels:
                    labels.append(name)
        for name in list(self._dice_items):
            if name not in labels:
                self.dice_plot.removeItem(self._dice_items.pop(name))
        for i, name in enumerate(labels):
            ys = np.array([_val_dice(r).get(name, np.nan) for r in rows], dtype=float)
            ok = np.isfinite(ys)
            item = self._dice_items.get(name)
            if item is None:
                item = self.dice_plot.plot([], [], pen=pg.mkPen(colour(i + 2), width=2), name=name)
                self._dice_items[name] = item
            item.setData(epochs[ok], ys[ok])

    def dice_labels(self) -> list[str]:
        """Labels that have a Dice curve."""
        return list(self._dice_items)


class HypervolumePlot(pg.PlotWidget):
    """Hypervolume of the archive's front after each evaluation."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent, title="Hypervolume")
        self.setLabel("bottom", "evaluations")
        self.setLabel("left", "hypervolume")
        self.getAxis("left").enableAutoSIPrefix(False)
        self.showGrid(x=True, y=True, alpha=0.2)
        self.curve = self.plot([], [], pen=pg.mkPen(colour(0), width=2), symbol="o", symbolSize=4)
        self.save_button = SavePlotButton(self, "hypervolume")  # PNG or SVG, top right

    def set_history(self, evaluations: Iterable[float], hypervolumes: Iterable[float]) -> None:
        self.curve.setData(np.asarray(list(evaluations), float), np.asarray(list(hypervolumes), float))

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.curve.getData()
        return (np.empty(0) if x is None else x), (np.empty(0) if y is None else y)
