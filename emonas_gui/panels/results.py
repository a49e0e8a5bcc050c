"""Results: run candidates on a validation case and compare their segmentations with the reference.

``ResultsPanel(state, parent=None)`` follows ``state.run_changed``. The user picks a candidate (the
front first), optionally a second one to compare, and a validation case of the run (its test cases
are never offered), then presses Run. The job (``workers.evaluate_case_job``) runs in a child process;
the scan is shown three times side by side with synchronized slices (``SliceViewer.link_to``): the
reference labels, candidate A's prediction, candidate B's prediction; a table lists per-label Dice
and HD95 (mm) for the case. Predictions are made as ``emonas predict`` makes them and scored as the
report scores: on the scan's own grid, against the original reference file, in world space.

Below, a plot of the run's report (``emonas report``): the searched front and the U-Net family on the
test cases, test error (1 - Dice) against parameters or CPU time. A report is found beside the run
(a folder next to it whose ``report.json`` names this run) or opened with "Open report...";
reading it runs off the GUI thread. The metrics table exports to CSV ("Export CSV...", also in its
context menu).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.errors import EmonasError
from emonas_gui.label_prefs import LabelPrefs
from emonas_gui.widgets.candidate_view import front_first, pick_candidate
from emonas_gui.widgets.pareto_plot import ParetoPlot
from emonas_gui.widgets.slice_views import SliceViewer, default_colour
from emonas_gui.widgets.table_export import CsvExport
from emonas_gui.workers import EngineJob, ProcessJob, evaluate_case_job
from engine.run.jobs import validation_cases as run_validation_cases

log = logging.getLogger(__name__)

NONE_TEXT = "(none)"


class ResultsPanel(QWidget):
    """Candidate predictions over a validation case, next to the reference, with metrics."""

    def __init__(self, state, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.run_dir: Path | None = None
        self.job: ProcessJob | None = None
        self.result: dict[str, Any] | None = None
        self.dataset_ref: str | None = None  # the run's dataset (a folder or "demo"), once known
        self._validation_job: EngineJob | None = None
        self._run_when_ready = False  # show_candidate() before the validation cases were known

        lay = QVBoxLayout(self)
        bar = QHBoxLayout()
        self.run_label = QLabel("No run open: start a search or open a run folder.")
        bar.addWidget(self.run_label, 1)
        lay.addLayout(bar)
        pick = QHBoxLayout()
        self.cand_a = QComboBox()
        self.cand_a.setToolTip("the candidate to run (front members first)")
        self.cand_b = QComboBox()
        self.cand_b.setToolTip("a second candidate to compare on the same slices (optional)")
        self.case = QComboBox()
        self.case.setToolTip("a validation case of the run (test cases are kept for the final report)")
        self.run_button = QPushButton("Run on case")
        self.run_button.setToolTip("predict the case with the chosen candidate(s) and compare with the reference")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("stop the prediction at its next step; nothing is shown")
        self.refresh_button = QPushButton("Reload candidates")
        for text, w in (("Candidate", self.cand_a), ("compare with", self.cand_b), ("case", self.case)):
            pick.addWidget(QLabel(text))
            pick.addWidget(w, 1)
        pick.addWidget(self.run_button)
        pick.addWidget(self.cancel_button)
        pick.addWidget(self.refresh_button)
        lay.addLayout(pick)
        self.status = QLabel("")
        lay.addWidget(self.status)

        split = QSplitter(Qt.Orientation.Vertical)
        self.viewers: dict[str, SliceViewer] = {}
        self.viewer_titles: dict[str, QLabel] = {}
        for key, title in (("reference", "Reference"), ("a", "Candidate A"), ("b", "Candidate B")):
            box = QWidget()
            bl = QVBoxLayout(box)
            bl.setContentsMargins(0, 0, 0, 0)
            self.viewer_titles[key] = QLabel(f"<b>{title}</b>")
            bl.addWidget(self.viewer_titles[key])
            viewer = SliceViewer(layout="row")
            bl.addWidget(viewer, 1)
            self.viewers[key] = viewer
            split.addWidget(box)
        self.viewers["a"].link_to(self.viewers["reference"])
        self.viewers["b"].link_to(self.viewers["reference"])
        self.viewers["b"].link_to(self.viewers["a"])
        self.viewers["b"].parentWidget().hide()
        self.metrics = QTableWidget(0, 1)
        self.metrics.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.metrics.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.metrics_csv = CsvExport(self.metrics, self._metrics_name, row_header="label")
        metrics_box = QWidget()
        ml = QVBoxLayout(metrics_box)
        ml.setContentsMargins(0, 0, 0, 0)
        mbar = QHBoxLayout()
        mbar.addWidget(QLabel("<b>Metrics on the case</b> (Dice, HD95 in mm)"), 1)
        self.metrics_csv_button = self.metrics_csv.button()
        mbar.addWidget(self.metrics_csv_button)
        ml.addLayout(mbar)
        ml.addWidget(self.metrics, 1)
        split.addWidget(metrics_box)
        report_box = QWidget()
        rl = QVBoxLayout(report_box)
        rl.setContentsMargins(0, 0, 0, 0)
        rbar = QHBoxLayout()
        self.report_label = QLabel("No report of this run found (emonas report RUN --out FOLDER).")
        self.report_axis = QComboBox()
        self.report_axis.addItem("parameters", "parameters")
        self.report_axis.addItem("CPU time", "cpu_ms")
        self.report_button = QPushButton("Open report...")
        self.report_button.setToolTip("a report.json written by emonas report for this run")
        rbar.addWidget(self.report_label, 1)
        rbar.addWidget(self.report_axis)
        rbar.addWidget(self.report_button)
        rl.addLayout(rbar)
        self.report_plot = ParetoPlot()
        self.report_plot.set_y_label("test error (1 - Dice), report")
        self.report_plot.set_title("Test cases: searched front against the U-Net family",
                                   "Test cases: front against U-Nets", "Test cases")
        self.report_plot.setVisible(False)  # until a report is found or opened: the slice views get the room
        rl.addWidget(self.report_plot, 1)
        split.addWidget(report_box)
        lay.addWidget(split, 1)
        self.report: dict[str, Any] | None = None
        self._report_job: EngineJob | None = None

        self.run_button.clicked.connect(self.run_selected)
        self.cancel_button.clicked.connect(self.cancel)
        self.refresh_button.clicked.connect(self.reload)
        self.report_button.clicked.connect(self._choose_report)
        self.report_axis.currentIndexChanged.connect(lambda _: self.report_plot.set_x_axis(self.report_axis.currentData()))
        state.run_changed.connect(self.set_run)
        if getattr(state, "run_dir", None):
            self.set_run(state.run_dir)
        self._sync_buttons()

    # ---- run and candidates ------------------------------------------------------------------
    def set_run(self, run_dir: str | Path | None) -> None:
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.dataset_ref = None
        self.case.clear()
        self.reload()
        self.show_report(None)
        if self.run_dir is not None:
            self._load_validation_cases()
            self.load_report(None)

    def reload(self) -> None:
        """Re-read the run's finished candidates into the pickers (front first)."""
        self.cand_a.clear()
        self.cand_b.clear()
        self.cand_b.addItem(NONE_TEXT, None)
        if self.run_dir is None:
            self.run_label.setText("No run open: start a search or open a run folder.")
            self._sync_buttons()
            return
        try:
            items = front_first(self.run_dir)
        except EmonasError as exc:
            self.run_label.setText(str(exc))
            self._sync_buttons()
            return
        for c, on_front in items:
            text = c.choice_text(on_front)
            self.cand_a.addItem(text, c.id)
            self.cand_b.addItem(text, c.id)
        cands, front = items, [c for c, f in items if f]
        self.run_label.setText(f"Run {self.run_dir}: {len(cands)} finished candidates, {len(front)} on the front (*)")
        self._sync_buttons()

    def _load_validation_cases(self) -> None:
        run_dir = self.run_dir
        job = EngineJob(lambda cb, ctl: run_validation_cases(run_dir), "validation-cases", self)
        job.finished.connect(self._on_cases)
        job.failed.connect(self._on_failed)
        self._validation_job = job
        job.start()

    # ---- the report's fronts -----------------------------------------------------------------
    def load_report(self, path: str | Path | None) -> None:
        """Read ``path`` (a report.json; None: look beside the run) off the GUI thread, then plot it."""
        run_dir = self.run_dir
        if run_dir is None:
            return
        job = EngineJob(lambda cb, ctl: read_run_report(run_dir, path), "read-report", self)
        job.finished.connect(self.show_report)
        job.failed.connect(self._on_failed if path is not None else lambda _msg: None)
        self._report_job = job
        job.start()

    def _choose_report(self) -> None:
        start = str(self.run_dir.parent) if self.run_dir is not None else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open a report of this run", start, "report.json (report.json)")
        if path:
            self.load_report(path)

    def show_report(self, report: dict | None) -> None:
        """Plot a report's searched front and U-Net family (``report.json`` as a dict; None clears)."""
        self.report = report
        self.report_plot.setVisible(bool(report))
        if not report:
            self.report_plot.set_overlay([])
            self.report_label.setText("No report of this run found (emonas report RUN --out FOLDER).")
            return
        self.report_plot.set_overlay(report_series(report))
        verdict = (report.get("comparison") or {}).get("verdict") or []
        self.report_label.setText(f"Report {report.get('out', '')}" + (f": {verdict[0]}" if verdict else ""))
        self.report_label.setWordWrap(True)

    def _on_cases(self, result) -> None:
        self.dataset_ref, cases = result
        self.case.clear()
        self.case.addItems(cases)
        self._sync_buttons()
        if self._run_when_ready:
            self._run_when_ready = False
            self.run_selected()

    def show_candidate(self, ids: list[int]) -> None:
        """Pick candidate ``ids[0]`` (and ``ids[1]`` to compare) and run them on the first validation case
        as soon as the cases are known (``main.py --candidate``)."""
        for combo, cid in zip((self.cand_a, self.cand_b), ids):
            if not pick_candidate(combo, cid, self.state, self.run_dir):
                return
        if self.case.count():
            self.run_selected()
        else:
            self._run_when_ready = True

    def wait_until_ready(self, msecs: int = 60000) -> bool:
        """Block until the validation cases and a requested prediction are on screen (for --screenshot)."""
        from PySide6.QtWidgets import QApplication

        ok = True
        for attr in ("_validation_job", "job"):
            job = getattr(self, attr)
            if job is not None:
                ok = job.wait(msecs) and ok
            QApplication.processEvents()  # delivers the result, which may start the prediction job
        return ok

    def _metrics_name(self) -> str:
        """Default file name of the metrics CSV: the run and the case shown."""
        run = self.run_dir.name if self.run_dir is not None else "run"
        case = (self.result or {}).get("case_id") or "case"
        return f"{run}_{case}_metrics"

    def _sync_buttons(self) -> None:
        busy = self.job is not None and self.job.is_running()
        self.run_button.setEnabled(not busy and self.cand_a.count() > 0 and self.case.count() > 0)
        self.cancel_button.setVisible(busy)
        self.cancel_button.setEnabled(busy and not self.job.control.stopped)
        self.metrics_csv_button.setEnabled(self.metrics.rowCount() > 0)

    # ---- running -----------------------------------------------------------------------------
    def selected(self) -> tuple[list[int], str]:
        ids = [self.cand_a.currentData()]
        b = self.cand_b.currentData()
        if b is not None and b != ids[0]:
            ids.append(b)
        return [int(i) for i in ids if i is not None], self.case.currentText()

    def run_selected(self) -> None:
        ids, case_id = self.selected()
        if not ids or not case_id or self.run_dir is None:
            return
        run_dir = self.run_dir
        self.job = job = evaluate_case_job(run_dir, ids, case_id, self)
        self.job.event.connect(self._on_event)
        # a cancelled job may still return what it had: the panel keeps showing the previous result
        self.job.finished.connect(lambda result: self._on_cancelled() if job.control.stopped else self._on_result(result))
        self.job.failed.connect(lambda message: self._on_cancelled() if job.control.stopped else self._on_failed(message))
        self.job.done.connect(self._sync_buttons)
        self.status.setText(f"running {', '.join(f'#{i}' for i in ids)} on {case_id} ...")
        self.job.start()
        self._sync_buttons()

    def cancel(self) -> None:
        """Stop the running prediction at its next step (cooperatively; the panel stays usable)."""
        if self.job is not None and self.job.is_running():
            self.job.stop()
            self.status.setText("cancelling…")
            self._sync_buttons()

    def _on_cancelled(self) -> None:
        self.status.setText("cancelled")
        self.state.status_message.emit("Results: prediction cancelled")

    def _on_event(self, ev: dict) -> None:
        if self.job is not None and self.job.control.stopped:
            return  # "cancelling..." stays until the job has ended
        if ev.get("text"):
            self.status.setText(str(ev["text"]))

    def _on_failed(self, message: str) -> None:
        self.status.setText(f"error: {message}")
        self.state.report_error(message)

    def _on_result(self, result: dict) -> None:
        self.result = result
        labels = result["labels"]
        # the colours and visibility chosen for the run's dataset in the Data step
        prefs = LabelPrefs.for_dataset(self.state.settings, self.dataset_ref)
        colours = prefs.apply({k: (n, default_colour(k)) for n, k in labels.items() if k > 0})
        ids = list(result["predictions"])
        for key, cid in (("reference", None), ("a", ids[0] if ids else None), ("b", ids[1] if len(ids) > 1 else None)):
            viewer = self.viewers[key]
            if key != "reference" and cid is None:
                viewer.parentWidget().setVisible(False)
                continue
            viewer.parentWidget().setVisible(True)
            viewer.set_hidden_labels(prefs.hidden)
            viewer.set_volume(result["image"], result["spacing"], result.get("modalities"))
            viewer.set_labels(result["reference"] if cid is None else result["predictions"][cid], colours)
            if cid is not None:
                self.viewer_titles[key].setText(f"<b>Candidate {cid}</b> on {result['case_id']}")
            else:
                self.viewer_titles[key].setText(f"<b>Reference</b> {result['case_id']}")
        self.viewers["reference"].set_position(self.viewers["reference"].position())
        self._fill_metrics(result)
        self._sync_buttons()
        self.status.setText(f"{result['case_id']}: done")
        self.state.status_message.emit(f"Results: {result['case_id']} predicted by {', '.join(f'#{i}' for i in ids)}")

    def _fill_metrics(self, result: dict) -> None:
        ids = list(result["metrics"])
        names = [n for n, k in result["labels"].items() if k > 0]
        headers = []
        for cid in ids:
            headers += [f"#{cid} Dice", f"#{cid} HD95 (mm)"]
        self.metrics.setColumnCount(len(headers))
        self.metrics.setHorizontalHeaderLabels(headers)
        self.metrics.setRowCount(len(names))
        self.metrics.setVerticalHeaderLabels(names)
        # every label's row in view (up to 8; more scroll)
        rows = min(len(names), 8)
        self.metrics.setMinimumHeight(self.metrics.horizontalHeader().height() + 2 * self.metrics.frameWidth()
                                      + sum(self.metrics.rowHeight(r) for r in range(rows)))
        for r, name in enumerate(names):
            for c, cid in enumerate(ids):
                m = result["metrics"][cid].get(name, {})
                self.metrics.setItem(r, 2 * c, QTableWidgetItem(f"{m.get('dice', float('nan')):.4f}"))
                self.metrics.setItem(r, 2 * c + 1, QTableWidgetItem(f"{m.get('hd95', float('nan')):.2f}"))

    # ---- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        for job in (self.job, self._validation_job, self._report_job):
            if job is not None:
                try:
                    job.shutdown()
                except RuntimeError:  # already deleted
                    pass

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)




#: How each group of a report is drawn: name, colour, symbol.
_REPORT_STYLES = {"searched": ("searched front (test)", (220, 40, 40), "o"),
                  "epochs": ("U-Net family, same epochs", (46, 134, 171), "s"),
                  "time": ("U-Net family, same wall time", (102, 161, 130), "t")}


def report_series(report: dict) -> list[dict]:
    """The overlay series of a report: its searched front and its U-Net family per budget, each point
    at (parameters or CPU ms, 1 - test Dice)."""
    groups: dict[str, list[dict]] = {}
    for m in report.get("models") or []:
        dice = m.get("test_dice")
        if dice is None:
            continue
        key = "searched" if m.get("kind", "searched") == "searched" else str(m.get("budget"))
        if key not in _REPORT_STYLES:
            continue
        groups.setdefault(key, []).append({"y": 1.0 - float(dice), "parameters": m.get("parameters"),
                                           "cpu_ms": m.get("cpu_ms"),
                                           "tip": f"{m['model']}\ntest Dice {float(dice):.4f}\n"
                                                  f"{m.get('parameters') or 0:,} parameters"})
    return [{"name": _REPORT_STYLES[k][0], "colour": _REPORT_STYLES[k][1], "symbol": _REPORT_STYLES[k][2],
             "points": groups[k]} for k in _REPORT_STYLES if k in groups]


def read_run_report(run_dir: str | Path, path: str | Path | None = None) -> dict | None:
    """The report.json at ``path`` (refused unless it reports on ``run_dir``), or, with no path, the
    newest one in a folder beside the run that names this run; None when there is none."""
    import json

    from engine.errors import DataError

    run = Path(run_dir).resolve()

    def read(p: Path) -> dict | None:
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and isinstance(doc.get("models"), list) else None

    if path is not None:
        doc = read(Path(path))
        if doc is None:
            raise DataError(path, "not a report.json written by emonas report")
        if Path(str(doc.get("run_path") or doc.get("run", ""))).resolve() != run:
            raise DataError(path, f"reports on the run {doc.get('run')}, not on {run_dir}")
        return doc
    found = []
    try:
        siblings = [d for d in run.parent.iterdir() if d.is_dir() and d != run]
    except OSError:
        return None
    for d in siblings[:500]:  # a bounded look: a folder of many runs is not walked further
        p = d / "report.json"
        if p.is_file():
            doc = read(p)
            if doc is not None and Path(str(doc.get("run_path") or doc.get("run", ""))).resolve() == run:
                found.append((p.stat().st_mtime, doc))
    return max(found, key=lambda t: t[0])[1] if found else None
