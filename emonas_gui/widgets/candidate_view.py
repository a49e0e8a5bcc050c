"""One evaluated candidate as the app shows it: genome table, drawing, learning curves, metrics.

``Candidate`` is the app's plain view of a row of the run's ``candidates`` table, built from the
engine store's record by ``Candidate.from_row(row)`` (``engine.run.records.CandidateRow``: the JSON
columns come decoded).
``CandidateView(parent=None).set_candidate(candidate | None)`` fills the four parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QHeaderView,
    QLabel,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.errors import EmonasError
from engine.run.records import CandidateRow
from engine.run.store import RunStore
from engine.genome import GENE_NAMES, Genome
from emonas_gui.widgets.curves import LearningCurves
from emonas_gui.widgets.genome_diagram import GenomeDiagram


def _float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass
class Candidate:
    """An evaluated (or queued, running, failed) candidate of a run."""

    id: int
    genome: Genome | None
    status: str = "done"
    generation: int | None = None
    phase: str | None = None
    f1: float | None = None
    f2: float | None = None
    parameters: int | None = None
    dice: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    curves: list[dict] = field(default_factory=list)
    seconds: float | None = None
    device: str | None = None
    error: str | None = None
    gflops: float | None = None  # inference GFLOPs of one patch
    latency_ms: float | None = None  # measured (or predicted, see latency_predicted) on the run's target
    latency_predicted: bool = False

    def cost(self, axis: str) -> float | None:
        """The value on the Pareto plot's x-axis: ``parameters``, ``gflops`` or ``latency_ms``."""
        v = {"parameters": self.parameters, "gflops": self.gflops, "latency_ms": self.latency_ms}.get(axis)
        return float(v) if v else None

    @property
    def ok(self) -> bool:
        """Finished with objectives (plottable)."""
        return self.status == "done" and self.f1 is not None and (self.parameters or 0) > 0

    @classmethod
    def from_row(cls, row: CandidateRow) -> "Candidate":
        """The candidate of a store row (a genome the database holds unreadable shows as None)."""
        try:
            genome = Genome.from_dict(row.genome) if isinstance(row.genome, Mapping) else None
        except EmonasError:
            genome = None
        metrics = row.metrics if isinstance(row.metrics, Mapping) else {}
        dice = metrics.get("dice") or {}
        return cls(
            id=row.id,
            genome=genome,
            status=row.status,
            generation=row.generation,
            phase=row.phase,
            f1=_float(row.f1),
            f2=_float(row.f2),
            parameters=row.parameters,
            dice={str(k): float(v) for k, v in dict(dice).items() if _float(v) is not None},
            metrics=dict(metrics),
            curves=[dict(c) for c in row.curves or [] if isinstance(c, Mapping)],
            seconds=_float(row.seconds),
            device=row.device,
            error=row.error,
            gflops=_float(row.gflops),
            latency_ms=_float(row.latency_ms),
            latency_predicted=bool(row.latency_predicted),
        )

    def _latency_text(self) -> str:
        return f"{self.latency_ms:.1f} ms" + (" (predicted)" if self.latency_predicted else "")

    @property
    def measured_latency_ms(self) -> float | None:
        """The latency measured on the run's target (None when unknown or only predicted)."""
        return self.latency_ms if self.latency_ms and not self.latency_predicted else None

    def choice_text(self, on_front: bool = False) -> str:
        """One line for a candidate picker; ``*`` marks the Pareto front."""
        ms = self.measured_latency_ms
        return (f"{'* ' if on_front else ''}#{self.id}  f1 {self.f1:.3f}, {self.parameters or 0:,} params"
                + (f", {ms:,.0f} ms" if ms else ""))

    def summary(self) -> str:
        """A few lines for a tooltip."""
        lines = [f"candidate {self.id}  ({self.status})"]
        if self.generation is not None:
            lines.append(f"generation {self.generation + 1}" + (f", {self.phase}" if self.phase else ""))
        if self.f1 is not None:
            lines.append(f"error f1 = {self.f1:.4f}")
        if self.parameters:
            lines.append(f"parameters = {self.parameters:,}")
        if self.gflops is not None:
            lines.append(f"GFLOPs = {self.gflops:.3g}")
        if self.latency_ms is not None:
            lines.append(f"latency = {self._latency_text()}")
        if self.dice:
            lines.append("Dice " + ", ".join(f"{k} {v:.3f}" for k, v in self.dice.items()))
        if self.genome is not None:
            g = self.genome
            lines.append(f"{g.n_cells} cells, nf1 {g.nf1}, ops {', '.join(g.ops)}")
        if self.error:
            lines.append(f"error: {self.error}")
        return "\n".join(lines)


def front_first(run_dir: str | Path) -> list[tuple[Candidate, bool]]:
    """A run's finished candidates, the run's Pareto front first (by error), each with its front flag."""
    store = RunStore.open_readonly(run_dir)
    try:
        cands = [c for c in (Candidate.from_row(r) for r in store.candidates("done")) if c.ok]
        front = {r.id for r in store.front()}
    finally:
        store.close()
    cands.sort(key=lambda c: (c.id not in front, c.f1))
    return [(c, c.id in front) for c in cands]


def pick_candidate(combo, candidate_id: int, state, run_dir) -> bool:
    """Select ``candidate_id`` in a picker filled from :func:`front_first`; False, with the error
    reported through ``state``, when the run has no such finished candidate."""
    i = combo.findData(int(candidate_id))
    if i < 0:
        state.report_error(f"candidate {candidate_id} is not a finished candidate of {run_dir}")
        return False
    combo.setCurrentIndex(i)
    return True


def _table(rows: list[tuple[str, str]], headers: tuple[str, str]) -> QTableWidget:
    t = QTableWidget(len(rows), 2)
    t.setHorizontalHeaderLabels(list(headers))
    t.verticalHeader().setVisible(False)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    t.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    return t


def _fill(table: QTableWidget, rows: list[tuple[str, str]]) -> None:
    table.setRowCount(len(rows))
    for i, (k, v) in enumerate(rows):
        table.setItem(i, 0, QTableWidgetItem(k))
        table.setItem(i, 1, QTableWidgetItem(v))


class CandidateView(QWidget):
    """Details of one candidate: genome table and drawing, learning curves, metrics."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.candidate: Candidate | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        self.title = QLabel("Click a point of the Pareto plot to see its candidate.")
        self.title.setWordWrap(True)
        lay.addWidget(self.title)
        self.tabs = QTabWidget()
        lay.addWidget(self.tabs, 1)

        arch = QSplitter(Qt.Orientation.Vertical)
        self.genome_table = _table([], ("gene", "value"))
        self.diagram = GenomeDiagram()
        arch.addWidget(self.diagram)
        arch.addWidget(self.genome_table)
        self.tabs.addTab(arch, "Architecture")
        self.curves = LearningCurves()
        self.tabs.addTab(self.curves, "Learning curves")
        self.metrics_table = _table([], ("metric", "value"))
        self.tabs.addTab(self.metrics_table, "Metrics")

    def set_candidate(self, cand: Candidate | None, in_channels: int = 1, num_classes: int | None = None) -> None:
        """Show ``cand`` (None clears the view)."""
        self.candidate = cand
        if cand is None:
            self.title.setText("Click a point of the Pareto plot to see its candidate.")
            _fill(self.genome_table, [])
            _fill(self.metrics_table, [])
            self.diagram.set_genome(None)
            self.curves.set_curves([])
            return
        g = cand.genome
        self.title.setText(
            f"<b>Candidate {cand.id}</b> \u2014 {cand.status}"
            + (f", generation {cand.generation + 1}" if cand.generation is not None else "")
            + (f" ({cand.phase})" if cand.phase else "")
        )
        _fill(self.genome_table, [] if g is None else [(n, str(getattr(g, n))) for n in GENE_NAMES])
        classes = num_classes or (len(cand.dice) + 1 if cand.dice else 2)
        self.diagram.set_genome(g, in_channels, classes)
        self.curves.set_curves(cand.curves)
        _fill(self.metrics_table, self.metric_rows(cand))

    @staticmethod
    def metric_rows(cand: Candidate) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = [("status", cand.status)]
        if cand.f1 is not None:
            rows.append(("f1 (segmentation error, normalized)", f"{cand.f1:.4f}"))
        if cand.f2 is not None:
            rows.append(("f2 (second objective, normalized)", f"{cand.f2:.4f}"))
        if cand.parameters:
            rows.append(("parameters", f"{cand.parameters:,}"))
        rows.append(("inference GFLOPs (one patch)", "-" if cand.gflops is None else f"{cand.gflops:.3g}"))
        rows.append(("latency", "not measured" if cand.latency_ms is None else cand._latency_text()))
        for name, v in cand.dice.items():
            rows.append((f"validation Dice {name}", f"{v:.4f}"))
        for key in ("epochs", "best_epoch", "f1_raw"):
            if key in cand.metrics and cand.metrics[key] is not None:
                rows.append((key.replace("_", " "), str(cand.metrics[key])))
        if cand.seconds is not None:
            rows.append(("training time", f"{cand.seconds:.1f} s"))
        if cand.device:
            rows.append(("device", str(cand.device)))
        if cand.error:
            rows.append(("error", cand.error))
        return rows
