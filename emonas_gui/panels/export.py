"""Export and predict: a found network as a model folder, and segmenting new scans with one.

``ExportPanel(state, parent=None)``:
- Export: pick a candidate of the current run (front first), optionally retrain it on all the
  training and validation cases first (a long job with progress), choose formats and a folder,
  export (``engine.export``), and see where it went and what it holds;
- Predict: open a model folder (or a training folder), add scans, segment them into an output
  folder (label maps in each scan's own geometry, named like the scans), and view a result over its
  scan. Both jobs run off the GUI thread in child processes
  (``workers.export_job``, ``workers.predict_scans_job``: the engine's jobs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)
from PySide6.QtCore import Qt

from engine.errors import EmonasError
from emonas_gui.panels.data import load_case, scan_filter
from emonas_gui.widgets.candidate_view import front_first, pick_candidate
from emonas_gui.widgets.slice_views import SliceViewer, default_colour
from emonas_gui.workers import EngineJob, ProcessJob, export_job, predict_scans_job

log = logging.getLogger(__name__)


class ExportPanel(QWidget):
    """Export a candidate as a model folder; predict new scans with a model folder."""

    def __init__(self, state, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.run_dir: Path | None = None
        self.export_job: ProcessJob | None = None
        self.predict_job: ProcessJob | None = None
        self.last_export: dict | None = None
        self.last_prediction: dict | None = None
        self._view_job: EngineJob | None = None

        lay = QVBoxLayout(self)
        split = QSplitter(Qt.Orientation.Horizontal)
        lay.addWidget(split)
        left = QWidget()
        ll = QVBoxLayout(left)
        split.addWidget(left)

        # ---- export
        ebox = QGroupBox("Export a candidate")
        ef = QFormLayout(ebox)
        self.run_label = QLabel("No run open.")
        self.run_label.setWordWrap(True)
        ef.addRow(self.run_label)
        self.candidate = QComboBox()
        self.candidate.setToolTip("the candidate to export; * marks the Pareto front")
        ef.addRow("Candidate", self.candidate)
        self.retrain = QCheckBox("retrain from scratch on training + validation cases first")
        self.retrain.setToolTip("as the authors did for the final model; takes as long as training one candidate for the epochs below")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 100000)
        self.epochs.setValue(120)
        self.epochs.setToolTip("epochs of the retraining")
        self.epochs.setEnabled(False)
        self.retrain.toggled.connect(self.epochs.setEnabled)
        ef.addRow(self.retrain)
        ef.addRow("Retrain epochs", self.epochs)
        self.fmt_onnx = QCheckBox("ONNX")
        self.fmt_onnx.setChecked(True)
        self.fmt_onnx.setToolTip("model.onnx: runs with ONNX Runtime, no PyTorch needed")
        self.fmt_ts = QCheckBox("TorchScript")
        self.fmt_ts.setChecked(True)
        self.fmt_ts.setToolTip("a TorchScript program for PyTorch users")
        frow = QHBoxLayout()
        frow.addWidget(self.fmt_onnx)
        frow.addWidget(self.fmt_ts)
        ef.addRow("Formats", frow)
        orow = QHBoxLayout()
        self.out_edit = QLineEdit()
        self.out_edit.setToolTip("the model folder to write (must not exist or be empty)")
        self.out_browse = QPushButton("\u2026")
        orow.addWidget(self.out_edit, 1)
        orow.addWidget(self.out_browse)
        ef.addRow("Model folder", orow)
        brow = QHBoxLayout()
        self.export_button = QPushButton("Export")
        self.cancel_export = QPushButton("Cancel")
        self.open_folder = QPushButton("Show folder")
        self.open_folder.setEnabled(False)
        for b in (self.export_button, self.cancel_export, self.open_folder):
            brow.addWidget(b)
        ef.addRow(brow)
        self.export_progress = QProgressBar()
        self.export_progress.setRange(0, 1)
        self.export_progress.setValue(0)
        ef.addRow(self.export_progress)
        self.export_status = QLabel("")
        self.export_status.setWordWrap(True)
        self.export_status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        ef.addRow(self.export_status)
        ll.addWidget(ebox)

        # ---- predict
        pbox = QGroupBox("Segment new scans")
        pf = QFormLayout(pbox)
        mrow = QHBoxLayout()
        self.model_edit = QLineEdit()
        self.model_edit.setToolTip("a model folder (model.json) or a training folder (training.json)")
        self.model_browse = QPushButton("Open model\u2026")
        mrow.addWidget(self.model_edit, 1)
        mrow.addWidget(self.model_browse)
        pf.addRow("Model", mrow)
        self.scans = QListWidget()
        self.scans.setToolTip("scans to segment (NIfTI, MetaImage, NRRD), one per case, or folders of them "
                              "(nnU-Net's CASE_0000.nii.gz files, DICOM series)")
        self.scans.setMaximumHeight(110)
        srow = QHBoxLayout()
        self.add_scans = QPushButton("Add scans\u2026")
        self.add_folder = QPushButton("Add folder\u2026")
        self.clear_scans = QPushButton("Clear")
        srow.addWidget(self.add_scans)
        srow.addWidget(self.add_folder)
        srow.addWidget(self.clear_scans)
        pf.addRow(self.scans)
        pf.addRow(srow)
        prow = QHBoxLayout()
        self.pred_out = QLineEdit()
        self.pred_out.setToolTip("where the label maps are saved, named like the scans")
        self.pred_browse = QPushButton("\u2026")
        prow.addWidget(self.pred_out, 1)
        prow.addWidget(self.pred_browse)
        pf.addRow("Save label maps to", prow)
        self.predict_button = QPushButton("Segment")
        self.cancel_predict = QPushButton("Cancel")
        self.cancel_predict.setToolTip("stop after the scan being segmented; its label maps so far are kept")
        seg_row = QHBoxLayout()
        seg_row.addWidget(self.predict_button, 1)
        seg_row.addWidget(self.cancel_predict)
        pf.addRow(seg_row)
        self.predict_progress = QProgressBar()
        pf.addRow(self.predict_progress)
        self.results = QListWidget()
        self.results.setToolTip("click a label map to view it over its scan")
        self.results.setMaximumHeight(110)
        pf.addRow(QLabel("Saved label maps (click one to view it over its scan)"))
        pf.addRow(self.results)
        self.predict_status = QLabel("")
        self.predict_status.setWordWrap(True)
        pf.addRow(self.predict_status)
        ll.addWidget(pbox)
        ll.addStretch(1)

        self.viewer = SliceViewer()
        split.addWidget(self.viewer)
        split.setSizes([440, 800])

        self.out_browse.clicked.connect(self._ask_out)
        self.export_button.clicked.connect(self.export)
        self.cancel_export.clicked.connect(self._cancel_export)
        self.open_folder.clicked.connect(self._show_folder)
        self.model_browse.clicked.connect(self._ask_model)
        self.add_scans.clicked.connect(self._ask_scans)
        self.add_folder.clicked.connect(self._ask_scan_folder)
        self.clear_scans.clicked.connect(self.scans.clear)
        self.pred_browse.clicked.connect(self._ask_pred_out)
        self.predict_button.clicked.connect(self.predict)
        self.cancel_predict.clicked.connect(self.cancel_prediction)
        self.results.currentRowChanged.connect(self.show_result)
        self.candidate.currentIndexChanged.connect(self._suggest_out)
        state.run_changed.connect(self.set_run)
        if getattr(state, "run_dir", None):
            self.set_run(state.run_dir)
        self._sync()

    # ---- run and candidates ------------------------------------------------------------------
    def set_run(self, run_dir) -> None:
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.reload()

    def reload(self) -> None:
        self.candidate.clear()
        if self.run_dir is None:
            self.run_label.setText("No run open: start a search or open a run in the Search step.")
            self._sync()
            return
        try:
            items = front_first(self.run_dir)
        except EmonasError as exc:
            self.run_label.setText(str(exc))
            self._sync()
            return
        for c, on_front in items:
            self.candidate.addItem(c.choice_text(on_front), c.id)
        self.run_label.setText(f"Run {self.run_dir}: {len(items)} finished candidates")
        self._suggest_out()
        self._sync()

    def show_candidate(self, ids: list[int]) -> None:
        """Pick candidate ``ids[0]`` for export (``main.py --candidate``)."""
        if ids:
            pick_candidate(self.candidate, ids[0], self.state, self.run_dir)

    def _suggest_out(self, *_: Any) -> None:
        cid = self.candidate.currentData()
        if self.run_dir is not None and cid is not None:
            self.out_edit.setText(str(self.run_dir.parent / f"{self.run_dir.name}-model-{cid}"))

    def _sync(self) -> None:
        exporting = self.export_job is not None and self.export_job.is_running()
        predicting = self.predict_job is not None and self.predict_job.is_running()
        self.export_button.setEnabled(not exporting and self.candidate.count() > 0)
        self.cancel_export.setEnabled(exporting)
        self.predict_button.setEnabled(not predicting)
        self.cancel_predict.setVisible(predicting)
        self.cancel_predict.setEnabled(predicting and not self.predict_job.control.stopped)

    # ---- export ------------------------------------------------------------------------------
    def _ask_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Parent folder of the model folder")
        if path:
            cid = self.candidate.currentData()
            self.out_edit.setText(str(Path(path) / f"model-{cid}"))

    def formats(self) -> list[str]:
        return [f for f, cb in (("onnx", self.fmt_onnx), ("torchscript", self.fmt_ts)) if cb.isChecked()]

    def export(self) -> bool:
        """Export the chosen candidate (retraining it first if asked) off the GUI thread."""
        cid = self.candidate.currentData()
        out = self.out_edit.text().strip()
        if self.run_dir is None or cid is None:
            self.state.report_error("no candidate to export: open a run with finished candidates")
            return False
        if not out:
            self.state.report_error("choose the model folder to write")
            return False
        if not self.formats():
            self.state.report_error("tick at least one format (ONNX or TorchScript)")
            return False
        run_dir, formats = self.run_dir, self.formats()
        retrain, epochs = self.retrain.isChecked(), self.epochs.value()
        job = export_job(run_dir, cid, out, formats, retrain, epochs, self)
        job.event.connect(self._on_export_event)
        job.finished.connect(self._on_exported)
        job.failed.connect(self._on_export_failed)
        job.done.connect(self._sync)
        self.export_job = job
        self.export_progress.setRange(0, 0)  # busy until the engine reports epochs
        self.export_status.setText(f"exporting candidate {cid} \u2026")
        job.start()
        self._sync()
        return True

    def _cancel_export(self) -> None:
        if self.export_job is not None:
            self.export_job.stop()

    def _on_export_event(self, ev: dict) -> None:  # the job's progress records (engine.run.jobs.JobProgress)
        if ev.get("stage") == "epoch" and ev.get("total"):
            self.export_progress.setRange(0, int(ev["total"]))
            self.export_progress.setValue(int(ev.get("done") or 0))
        if ev.get("text"):
            self.export_status.setText(str(ev["text"]))

    def _on_exported(self, result: dict) -> None:
        self.last_export = result
        self.export_progress.setRange(0, 1)
        self.export_progress.setValue(1)
        files = ", ".join(result["files"])
        self.export_status.setText(f"Exported to {result['model_dir']}\nfiles: {files}")
        self.open_folder.setEnabled(True)
        self.model_edit.setText(result["model_dir"])
        self.state.status_message.emit(f"Model exported to {result['model_dir']}")

    def _on_export_failed(self, message: str) -> None:
        self.export_progress.setRange(0, 1)
        self.export_progress.setValue(0)
        if self.export_job is not None and self.export_job.control.stopped:  # the user's Cancel: no error
            self.export_status.setText("cancelled: nothing was written")
            self.state.status_message.emit("Export cancelled")
            return
        self.export_status.setText(f"error: {message}")
        self.state.report_error(message)

    def _show_folder(self) -> None:
        if self.last_export:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.last_export["model_dir"]))

    # ---- predict -----------------------------------------------------------------------------
    def _ask_model(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a model folder")
        if path:
            self.model_edit.setText(path)

    def _ask_scans(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Scans to segment", "",
                                                scan_filter())
        self.add_scan_files(paths)

    def _ask_scan_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of scans to segment (CASE_0000.nii.gz ..., or a DICOM series)")
        if path:
            self.add_scan_files([path])

    def add_scan_files(self, paths) -> None:
        for p in paths:
            self.scans.addItem(str(p))
        if paths and not self.pred_out.text().strip():
            self.pred_out.setText(str(Path(paths[0]).parent / "segmentations"))

    def _ask_pred_out(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for the label maps")
        if path:
            self.pred_out.setText(path)

    def predict(self) -> bool:
        """Segment the listed scans with the model off the GUI thread."""
        model = self.model_edit.text().strip()
        scans = [self.scans.item(i).text() for i in range(self.scans.count())]
        out = self.pred_out.text().strip()
        if not model:
            self.state.report_error("open a model folder first")
            return False
        if not scans:
            self.state.report_error("add the scans to segment")
            return False
        if not out:
            self.state.report_error("choose where to save the label maps")
            return False
        job = predict_scans_job(model, scans, out, self)
        job.event.connect(self._on_predict_event)
        job.finished.connect(self._on_predicted)
        job.failed.connect(self._on_predict_failed)
        job.done.connect(self._sync)
        self.predict_job = job
        self.predict_progress.setRange(0, len(scans))
        self.predict_progress.setValue(0)
        self.predict_status.setText("segmenting \u2026")
        job.start()
        self._sync()
        return True

    def cancel_prediction(self) -> None:
        """Stop segmenting after the current scan (cooperatively; the panel stays usable)."""
        if self.predict_job is not None and self.predict_job.is_running():
            self.predict_job.stop()
            self.predict_status.setText("cancelling after the current scan…")
            self._sync()

    def _on_predict_event(self, ev: dict) -> None:
        if self.predict_job is not None and self.predict_job.control.stopped:
            return  # "cancelling..." stays until the job has ended
        if ev.get("total") is not None:  # a folder's cases are counted once the job has listed them
            self.predict_progress.setMaximum(int(ev["total"]))
        if ev.get("done") is not None:
            self.predict_progress.setValue(int(ev["done"]))
        if ev.get("text"):
            self.predict_status.setText(str(ev["text"]))

    def _on_predicted(self, result: dict) -> None:
        self.last_prediction = result
        self.results.clear()
        for p in result["written"]:
            self.results.addItem(p)
        cancelled = self.predict_job is not None and self.predict_job.control.stopped
        self.predict_status.setText(("cancelled: " if cancelled else "")
                                    + f"{len(result['written'])} label map(s) saved in {self.pred_out.text()}")
        self.state.status_message.emit(self.predict_status.text())
        if result["written"]:
            self.results.setCurrentRow(0)

    def _on_predict_failed(self, message: str) -> None:
        self.predict_status.setText(f"error: {message}")
        self.state.report_error(message)

    def show_result(self, row: int) -> None:
        """Show label map ``row`` of the last prediction over its scan (read off the GUI thread)."""
        if self.last_prediction is None or not 0 <= row < len(self.last_prediction["written"]):
            return
        scan = Path(self.last_prediction["scans"][row])
        label = Path(self.last_prediction["written"][row])
        names = {int(v): (n, default_colour(int(v))) for n, v in self.last_prediction["labels"].items() if int(v)}
        job = EngineJob(lambda cb, ctl: load_case(scan.name, [scan], label), "view-prediction", self)
        job.finished.connect(lambda case: self._show_case(case, names))
        job.failed.connect(self.state.report_error)
        self._view_job = job
        job.start()

    def _show_case(self, case, names) -> None:
        self.viewer.set_volume(case.image, case.spacing)
        self.viewer.set_labels(case.labels, names)

    # ---- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        for job in (self.export_job, self.predict_job, self._view_job):
            if job is not None:
                job.shutdown()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)
