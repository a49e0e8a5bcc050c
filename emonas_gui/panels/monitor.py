"""The live monitor of a search run: Pareto scatter, hypervolume, progress, log, candidate details.

``MonitorPanel(parent=None)`` watches a run directory through the engine's read-only store
(``RunStore.open_readonly``), so it shows a run this app drives, one started from the CLI, or a
finished or killed one alike. Progress, ETA, front and hypervolume are the engine's progress record
(``engine.run.progress.read_progress``), drawn as they are; the candidate rows give the points,
the log and the details. ``watch(run_dir)`` opens it and polls every ``poll_ms`` (a timer on the
GUI thread; WAL readers never wait for the writer); ``refresh()`` polls at once (the search worker
calls it when a candidate finishes); ``stop_watching()`` stops the timer and closes the store.
``candidate_opened(int)`` is emitted when a point is clicked and its details are shown.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from engine.config import current_generation
from engine.errors import EmonasError
from engine.run import progress as P
from engine.run.store import RunStore
from emonas_gui.widgets.candidate_view import Candidate, CandidateView
from emonas_gui.widgets.curves import HypervolumePlot
from emonas_gui.widgets.pareto_plot import ParetoPlot

log = logging.getLogger(__name__)

#: Reference point of the hypervolume (the engine's, so that the figures agree).
HV_REFERENCE = P.HV_REFERENCE


def hypervolume_history(cands: list[Candidate]) -> tuple[list[int], list[float]]:
    """Hypervolume of the front after each finished evaluation, in the order given (the engine's)."""
    ok = [c for c in cands if c.ok]
    return list(range(1, len(ok) + 1)), P.hypervolume_history([(c.f1, c.f2 if c.f2 is not None else 1.0) for c in ok])


def _fmt_seconds(s: float) -> str:
    s = int(max(0, s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {sec:02d} s" if m else f"{sec} s")


class MonitorPanel(QWidget):
    """Watches one run directory and shows its progress."""

    candidate_opened = Signal(int)

    def __init__(self, parent: QWidget | None = None, poll_ms: int = 1000):
        super().__init__(parent)
        self.run_dir: Path | None = None
        self._store: RunStore | None = None
        self._seen: dict[int, str] = {}
        self._signature: tuple | None = None
        self._hv_ids: list[int] = []
        self._hv: list[float] = []
        self.candidates: list[Candidate] = []
        self.front: list[int] = []
        self.run_progress: P.Progress | None = None  # the engine's record, as last read
        self.in_channels = 1
        self.num_classes: int | None = None

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        self.status_label = QLabel("No run open.")
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m candidates")
        self.progress.setMaximumWidth(280)
        self.progress.setMinimumWidth(self.progress.fontMetrics().horizontalAdvance("0000 / 0000 candidates") + 24)
        self.eta_label = QLabel("")
        for label in (self.status_label, self.eta_label):  # long texts wrap rather than widen the window
            label.setWordWrap(True)
        self.colour_by = QComboBox()
        self.colour_by.addItems(["generation", "phase"])
        self.colour_by.setToolTip("colour the points by generation or by phase of the search")
        top.addWidget(self.status_label, 1)
        top.addWidget(self.progress)
        top.addWidget(self.eta_label)
        top.addWidget(QLabel("colour by"))
        top.addWidget(self.colour_by)
        self.x_axis = QComboBox()
        for label, key in (("parameters", "parameters"), ("GFLOPs", "gflops"), ("latency", "latency_ms")):
            self.x_axis.addItem(label, key)
        self.x_axis.setToolTip("x-axis of the Pareto plot: parameter count, inference GFLOPs of one patch, or "
                               "latency (candidates whose latency was not measured are left out)")
        top.addWidget(QLabel("x-axis"))
        top.addWidget(self.x_axis)
        lay.addLayout(top)

        split = QSplitter(Qt.Orientation.Horizontal)
        left = QSplitter(Qt.Orientation.Vertical)
        self.pareto = ParetoPlot()
        self.hypervolume = HypervolumePlot()
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        self.log_view.setPlaceholderText("search log")
        left.addWidget(self.pareto)
        left.addWidget(self.hypervolume)
        left.addWidget(self.log_view)
        left.setSizes([400, 160, 140])
        self.details = CandidateView()
        split.addWidget(left)
        split.addWidget(self.details)
        split.setSizes([600, 420])
        lay.addWidget(split, 1)

        self.colour_by.currentTextChanged.connect(self.pareto.set_colour_by)
        self.x_axis.currentIndexChanged.connect(lambda _i: self.pareto.set_x_axis(self.x_axis.currentData()))
        self.pareto.candidate_clicked.connect(self.open_candidate)
        self._timer = QTimer(self)
        self._timer.setInterval(poll_ms)
        self._timer.timeout.connect(self.refresh)

    # ---- watching ----------------------------------------------------------------------------
    def watch(self, run_dir: str | Path) -> None:
        """Show ``run_dir`` and follow it; raises the engine's RunError if it is not a run."""
        self.stop_watching()
        store = RunStore.open_readonly(run_dir)
        self._store = store
        self.run_dir = Path(run_dir)
        self._seen.clear()
        self._signature = None
        self._hv_ids, self._hv = [], []
        self.log_view.clear()
        self.pareto.clear()
        self.details.set_candidate(None)
        self._read_meta()
        self.append_log(f"watching {self.run_dir}")
        self.refresh()
        self._timer.start()

    def stop_watching(self) -> None:
        self._timer.stop()
        if self._store is not None:
            try:
                self._store.close()
            except Exception:  # noqa: BLE001 - closing a read-only connection must not raise into Qt
                log.debug("closing the store failed", exc_info=True)
        self._store = None

    def run_status(self) -> str:
        """The watched run's status (``running``, ``paused``, ``finished``...), '' if none or unreadable."""
        try:
            return str(self._store.get_meta("status", "") or "") if self._store is not None else ""
        except Exception:  # noqa: BLE001 - a busy database: unknown for now
            return ""

    def is_watching(self) -> bool:
        return self._timer.isActive()

    def append_log(self, line: str) -> None:
        self.log_view.appendPlainText(time.strftime("%H:%M:%S ") + line)

    def _read_meta(self) -> None:
        assert self._store is not None
        meta = self._store.meta()
        s = (meta.get("config") or {}).get("samea") or {}
        problem = meta.get("problem") or {}
        self.in_channels = int(problem.get("in_channels") or 1)
        nc = problem.get("num_classes")
        self.num_classes = int(nc) if nc else None
        axis = {"flops": "gflops", "latency": "latency_ms"}.get(s.get("objective", "parameters"), "parameters")
        self.x_axis.setCurrentIndex(max(0, self.x_axis.findData(axis)))  # the run's objective first

    def refresh(self) -> None:
        """Read the store once and update every view."""
        if self._store is None:
            return
        try:
            status = self._store.get_meta("status", "")
            # a cheap look first: the poll costs next to nothing while nothing changed
            signature = (tuple(sorted(self._store.counts().items())), status)
            if signature == self._signature:
                return
            rows = self._store.candidates()
            points = self._store.objectives()  # finished candidates in the order they finished
            progress = P.read_progress(self._store)
            if self.num_classes is None:
                self._read_meta()
        except (EmonasError, Exception) as exc:  # noqa: BLE001 - a busy or vanished db must not kill the GUI
            self.status_label.setText(f"cannot read the run: {str(exc).splitlines()[0] if str(exc) else exc}")
            return
        self._signature = signature
        self.run_progress = progress
        cands = [Candidate.from_row(r) for r in rows]
        self.candidates = cands
        for c in cands:
            if self._seen.get(c.id) != c.status:
                if c.status == "done" and c.f1 is not None:
                    self.append_log(f"candidate {c.id} done: f1 {c.f1:.4f}, {c.parameters or 0:,} parameters"
                                    + (f", latency {c.measured_latency_ms:,.0f} ms" if c.measured_latency_ms
                                       else "")  # a latency objective measures before training
                                    + (f", {c.seconds:.0f} s" if c.seconds else ""))
                elif c.status == "failed":
                    self.append_log(f"candidate {c.id} failed: {c.error or 'unknown error'}")
                elif c.status == "running":
                    gen_text = f" (generation {c.generation + 1})" if c.generation is not None else ""
                    self.append_log(f"candidate {c.id} training{gen_text}")
                self._seen[c.id] = c.status
        by_id = {c.id: c for c in cands}
        done = [by_id[p[0]] for p in points if p[0] in by_id and by_id[p[0]].ok]
        self.front = [p[0] for p in progress.front]
        self.pareto.set_candidates(done, self.front)
        self._extend_hypervolume(done)
        self.progress.setMaximum(max(progress.expected, 1))
        self.progress.setValue(progress.evaluated)
        self.status_label.setText(
            f"{self.run_dir.name if self.run_dir else ''}: {progress.status}"
            + (f", generation {current_generation(progress.generation, progress.generations)} of "
               f"{progress.generations}" if progress.generations else "")
            + f", {progress.evaluated} evaluated" + (f" ({progress.failed} failed)" if progress.failed else "")
            + f", front of {len(progress.front)}"
        )
        self.eta_label.setText(self._eta_text(progress))

    def _extend_hypervolume(self, done: list[Candidate]) -> None:
        """Hypervolume after each evaluation (the engine's), computing only the evaluations not seen before."""
        ids = [c.id for c in done]
        if ids[: len(self._hv_ids)] != self._hv_ids:  # a different run or order: start over
            self._hv_ids, self._hv = [], []
        self._hv = P.hypervolume_history([(c.f1, c.f2 if c.f2 is not None else 1.0) for c in done], self._hv)
        self._hv_ids = ids
        self.hypervolume.set_history(range(1, len(self._hv) + 1), self._hv)

    @staticmethod
    def _eta_text(progress: P.Progress) -> str:
        if progress.status == "finished":
            return "finished"
        if progress.eta_seconds is None:
            return "ETA: after the first candidate"
        return f"ETA: about {_fmt_seconds(progress.eta_seconds)}"

    # ---- details -----------------------------------------------------------------------------
    def open_candidate(self, cid: int) -> None:
        """Show candidate ``cid`` in the details view."""
        c = next((c for c in self.candidates if c.id == cid), None)
        if c is None:
            return
        self.details.set_candidate(c, self.in_channels, self.num_classes)
        self.candidate_opened.emit(cid)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.stop_watching()
        super().closeEvent(event)

