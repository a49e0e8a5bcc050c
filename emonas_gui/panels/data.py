"""The Data step: open a dataset or scans, list the cases, show the dataset check, view a case.

``DataPanel(state, parent=None)``: a case list (shape, spacing, modalities, label presence), the
problems the engine found, the label table (colour, name, visibility, opacity), modality and window
controls, and a :class:`~emonas_gui.widgets.slice_views.SliceViewer` with a 3D
:class:`~emonas_gui.widgets.surface_view.SurfaceView` in its fourth cell. Every file is read in a
worker thread; the GUI thread never waits for the disk. The full check has Cancel; the case list
exports to CSV (its context menu). The label colours and visibility the user chooses are remembered
per dataset (``emonas_gui.label_prefs``).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QIcon, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QColorDialog, QComboBox, QFileDialog,
                               QFormLayout, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QListWidget,
                               QListWidgetItem, QPushButton, QSlider, QSplitter, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from engine.errors import DataError, EmonasError
from emonas_gui.label_prefs import LabelPrefs
from emonas_gui.state import AppState
from emonas_gui.widgets import TaskRunner
from emonas_gui.widgets.slice_views import SliceViewer, default_colour, names_colours_for
from emonas_gui.widgets.surface_view import SurfaceView, grab_with_vtk
from emonas_gui.widgets.table_export import CsvExport

log = logging.getLogger(__name__)

def scan_filter(title: str = "Scans") -> str:
    """A file dialog's filter for scans or label maps: the formats the engine reads, then all files."""
    from engine.data.io import IMAGE_SUFFIXES  # the engine.data package loads SciPy: not while the window opens

    return f"{title} ({' '.join('*' + x for x in IMAGE_SUFFIXES)});;All files (*)"


@dataclass
class Entry:
    """One row of the case list: a dataset case or a scan opened on its own."""

    case_id: str
    image_paths: list[Path]
    label_path: Path | None
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class LoadedCase:
    """A case read for display: channels (C, X, Y, Z) reoriented to the closest RAS axes."""

    case_id: str
    image: np.ndarray
    spacing: tuple[float, float, float]
    labels: np.ndarray | None
    orientation: str
    source_shape: tuple[int, int, int]
    label_values: list[int] = field(default_factory=list)  # non-zero values present


def load_case(case_id: str, image_paths: Sequence[Path], label_path: Path | None) -> LoadedCase:
    """Read a case's scans (one channel per file, or a 4D file) and label map for display.

    Raises ``DataError`` naming the file when a scan cannot be read or the label map does not fit
    the scan's grid. Runs in a worker thread.
    """
    from engine.data import read_image, read_label
    from engine.data.io import affine_orientation
    from engine.data.validate import integer_labels, label_values_present, to_ras

    channels, ref = [], None
    for path in image_paths:
        img = read_image(path, dtype=np.float32)
        if ref is None:
            ref = img
        elif img.shape != ref.shape:
            raise DataError(path, f"shape {img.shape} differs from {Path(ref.path).name}'s {ref.shape}")
        channels.append(img.array)
    if ref is None:
        raise DataError(case_id, "case has no image file")
    image, spacing = to_ras(np.concatenate(channels), ref.affine)
    if not np.isfinite(image).all():
        image = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
        log.warning("%s: NaN or infinite intensities shown as 0", image_paths[0])
    labels = None
    if label_path is not None:
        from engine.infer.metrics import in_one_frame

        raw, lab_img = read_label(label_path)
        # in world space: a label map stored with other axis order or flips is shown where it belongs;
        # one on another grid is refused, both geometries named
        raw, _, _ = in_one_frame(lab_img, ref, raw, ref.array[0])
        labels, _ = to_ras(integer_labels(raw, label_path), ref.affine)
    values = label_values_present(labels) if labels is not None else []
    return LoadedCase(case_id, image, spacing, labels, affine_orientation(ref.affine), ref.shape, values)


def read_entry_headers(entries: list[Entry]) -> list[Entry]:
    """Fill in shape and spacing of each entry from its first file's header (no voxels read)."""
    from engine.data import read_header

    for e in entries:
        try:
            h = read_header(e.image_paths[0])
            e.shape, e.spacing = tuple(h.shape), tuple(float(f"{s:.3g}") for s in h.spacing)
            if h.channels > 1:
                e.shape = e.shape + (h.channels,)
        except EmonasError as exc:
            e.problems.append(str(exc))
    return entries


def open_dataset_job(path: str, skip_bad: bool):
    """Open a dataset (worker side)."""
    from engine.data import open_dataset

    return open_dataset(path, skip_bad=skip_bad)


@dataclass(frozen=True)
class ShownProblem:
    """A problem as the check list shows it: ``path: message``, fatal (error) or not (warning)."""

    path: str
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class CheckCancelled(EmonasError):
    """The user cancelled the dataset check, or closed the window while it was running."""


def check_dataset_job(root: str, skip_bad: bool, progress=None, cancel: threading.Event | None = None) -> dict:
    """The engine's full dataset check (every voxel of every case), worker side.

    ``cancel`` is looked at after every case, so closing the window never waits for a long check.
    """
    from engine.data import check_dataset

    def report(done: int, total: int, case_id: str) -> None:
        if cancel is not None and cancel.is_set():
            raise CheckCancelled("dataset check cancelled")
        if progress is not None:
            progress(done, total, case_id)

    return check_dataset(root, skip_bad=skip_bad, progress=report)


class DataPanel(QWidget):
    """Data step: see the module docstring. Constructed as ``DataPanel(state, parent=None)``."""

    case_shown = Signal(str)  # case id, once its scan and overlay are on screen
    ready = Signal()  # the shown case's 3D surfaces are built too
    check_finished = Signal(dict)  # the engine's check report
    check_progress = Signal(int, int, str)  # done, total, case id (emitted from the worker: queued)

    def __init__(self, state: AppState, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        #: the dataset last asked for (a folder or "demo"; None for scans on their own), loaded or loading
        self.requested: str | None = None
        # two threads: a long full check must not hold up loading the case the user clicks
        self._tasks = TaskRunner(self, max_threads=2)
        self._entries: list[Entry] = []
        self._labels_decl: dict[str, int] = {}
        self._prefs = LabelPrefs(state.settings, None)  # the user's label colours (per dataset)
        self._current: LoadedCase | None = None
        self._surfaces_pending = False
        self._problems: list = []
        self._full_check = False
        self._cancel = threading.Event()  # a new one per check; set by Cancel and at shutdown
        self._checking = False

        # viewers
        self.surface_view = SurfaceView()
        self.viewer = SliceViewer(extra=self.surface_view)
        self.surface_view.surfaces_ready.connect(self._on_surfaces_ready)
        self.surface_view.error.connect(self.state.report_error)
        self.viewer.cursor_info.connect(self.state.status_message)

        # left column
        self.open_folder_button = QPushButton("Open dataset folder\u2026")
        self.open_folder_button.clicked.connect(self.choose_folder)
        self.open_scans_button = QPushButton("Open scans\u2026")
        self.open_scans_button.clicked.connect(self.choose_scans)
        self.skip_bad = QCheckBox("Skip broken cases")
        self.skip_bad.setToolTip("Open the dataset without the cases that have fatal problems")
        self.skip_bad.setChecked(self.state.settings.value("data/skip_bad", False, type=bool))
        self.skip_bad.toggled.connect(lambda v: self.state.settings.setValue("data/skip_bad", v))
        self.summary = QLabel("No dataset")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.case_table = QTableWidget(0, 5)
        self.case_table.setHorizontalHeaderLabels(["Case", "Shape", "Spacing (mm)", "Modalities", "Label"])
        self.case_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.case_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.case_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.case_table.verticalHeader().setVisible(False)
        # the short columns fit their contents; the case id takes what is left, elided with a tooltip,
        # so every column stays in view at the panel's width (long ids would push "Label" off)
        header = self.case_table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(False)
        self.case_table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.case_table.itemSelectionChanged.connect(self._on_case_selected)
        self.case_csv = CsvExport(self.case_table, lambda: f"{getattr(self.state.dataset, 'name', None) or 'scans'}_cases")

        self.check_button = QPushButton("Check every voxel")
        self.check_button.setToolTip("Read every case fully and list every problem (as `emonas check`)")
        self.check_button.clicked.connect(self.run_check)
        self.check_progress.connect(self._on_check_progress)
        self.cancel_check_button = QPushButton("Cancel")
        self.cancel_check_button.setToolTip("stop the check after the case being read; the list keeps what it showed")
        self.cancel_check_button.clicked.connect(self.cancel_check)
        self.cancel_check_button.setVisible(False)
        self.check_status = QLabel("")
        self.problem_list = QListWidget()
        self.problem_list.setWordWrap(True)
        self.problem_list.setMaximumHeight(140)

        self.label_table = QTableWidget(0, 3)
        self.label_table.setHorizontalHeaderLabels(["Show", "Label", "Value"])
        self.label_table.verticalHeader().setVisible(False)
        self.label_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.label_table.horizontalHeader().setStretchLastSection(True)
        self.label_table.itemChanged.connect(self._on_label_item_changed)
        self.label_table.cellDoubleClicked.connect(self._on_label_double_clicked)
        self.label_table.setToolTip("Tick to show a label; double-click its name to change its colour")
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(int(self.state.settings.value("viewer/opacity", 40, type=int)))
        self.opacity.valueChanged.connect(self._on_opacity)
        self.viewer.set_opacity(self.opacity.value() / 100)
        self.modality = QComboBox()
        self.modality.currentIndexChanged.connect(self._on_modality)
        self.preset = QComboBox()
        self.preset.setToolTip("Window presets; right-drag in a view adjusts window and level")
        self.preset.activated.connect(lambda i: self.viewer.apply_preset(self.preset.itemText(i)))
        self.save_button = QPushButton("Save views as PNG\u2026")
        self.save_button.clicked.connect(self.choose_save_folder)

        opener = QHBoxLayout()
        opener.addWidget(self.open_folder_button)
        opener.addWidget(self.open_scans_button)
        data_box = QGroupBox("Dataset")
        dl = QVBoxLayout(data_box)
        dl.addLayout(opener)
        dl.addWidget(self.skip_bad)
        dl.addWidget(self.summary)
        dl.addWidget(self.case_table, 1)
        check_box = QGroupBox("Dataset check")
        cl = QVBoxLayout(check_box)
        check_row = QHBoxLayout()
        check_row.addWidget(self.check_button, 1)
        check_row.addWidget(self.cancel_check_button)
        cl.addLayout(check_row)
        cl.addWidget(self.check_status)
        cl.addWidget(self.problem_list)
        view_box = QGroupBox("Display")
        vl = QFormLayout(view_box)
        vl.addRow("Modality", self.modality)
        vl.addRow("Window", self.preset)
        vl.addRow("Label opacity", self.opacity)
        vl.addRow(self.label_table)
        vl.addRow(self.save_button)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(data_box, 3)
        ll.addWidget(check_box, 1)
        ll.addWidget(view_box, 2)
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("dataSplitter")
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.viewer)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([470, 970])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.splitter)

        self.state.dataset_changed.connect(self._on_dataset_changed)

    # -- opening --------------------------------------------------------------------------------
    def choose_folder(self) -> None:
        """Ask for a dataset folder and open it."""
        start = str(self.state.dataset_path or Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open dataset folder", start)
        if folder:
            self.open_path(folder)

    def choose_scans(self) -> None:
        """Ask for scan files and open them."""
        files, _ = QFileDialog.getOpenFileNames(self, "Open scans", str(Path.home()),
                                                scan_filter())
        if files:
            self.open_scans([Path(f) for f in files])

    def open_path(self, path: str | Path) -> None:
        """Open a dataset folder (any layout the engine reads) or ``"demo"``; a scan file opens as a scan."""
        if str(path) != "demo" and Path(path).is_file():
            self.open_scans([Path(path)])
            return
        self.requested = str(path)
        self.state.status_message.emit(f"Opening {path}\u2026")
        self.summary.setText(f"Opening {path}\u2026")
        self._tasks.submit(open_dataset_job, str(path), self.skip_bad.isChecked(), key="open",
                           on_done=lambda ds: self.state.set_dataset(ds, str(path)),
                           on_error=self._on_open_failed)

    def _on_open_failed(self, message: str) -> None:
        self.summary.setText("No dataset")
        self.state.report_error(message)

    def open_scans(self, paths: Sequence[Path]) -> None:
        """Show scan files on their own (no dataset); each file becomes a row of the case list."""
        from engine.data.io import strip_suffix

        self.requested = None
        entries = []
        for p in paths:
            p = Path(p)
            entries.append(Entry(strip_suffix(p), [p], None))
        self._labels_decl = {}
        self._prefs = LabelPrefs(self.state.settings, None)
        self.summary.setText(f"{len(entries)} scan(s) opened without a dataset")
        self._set_entries(entries, problems=[])
        self.state.status_message.emit(f"Opened {len(entries)} scan(s)")

    def open_label_map(self, path: str | Path) -> None:
        """Overlay a label map file (e.g. a prediction) on the current scan."""
        row = self.case_table.currentRow()
        if row < 0:
            self.state.report_error(f"{path}: open a scan first, then its label map")
            return
        self._entries[row].label_path = Path(path)
        self._set_label_cell(row, self._entries[row])
        self.show_case(row)

    # -- dataset --------------------------------------------------------------------------------
    def _on_dataset_changed(self, dataset) -> None:
        if dataset is None:
            self._set_entries([], [])
            self.summary.setText("No dataset")
            return
        self._labels_decl = dict(dataset.labels)
        self._prefs = LabelPrefs.for_dataset(self.state.settings, self.state.dataset_path or dataset.root)
        labels = ", ".join(f"{n} ({v})" for n, v in dataset.labels.items())
        skipped = f"<br>Skipped: {', '.join(dataset.skipped)}" if getattr(dataset, "skipped", None) else ""
        self.summary.setText(
            f"<b>{dataset.name}</b> &mdash; {dataset.layout} layout, {len(dataset.cases)} cases<br>"
            f"Modalities: {', '.join(dataset.modalities)}<br>Labels: {labels}{skipped}")
        entries = [Entry(c.case_id, list(c.image_paths), c.label_path) for c in dataset.cases]
        self._set_entries(entries, list(getattr(dataset, "problems", [])))
        self.state.status_message.emit(f"Opened {dataset.name}: {len(dataset.cases)} cases")

    def _set_entries(self, entries: list[Entry], problems: list) -> None:
        self._entries = entries
        self.case_table.blockSignals(True)
        self.case_table.setRowCount(len(entries))
        for row, e in enumerate(entries):
            item = QTableWidgetItem(e.case_id)
            item.setToolTip(e.case_id)
            self.case_table.setItem(row, 0, item)
            for col in (1, 2):
                self.case_table.setItem(row, col, QTableWidgetItem("\u2026"))
            names = self._modality_names(len(e.image_paths))
            self.case_table.setItem(row, 3, QTableWidgetItem(", ".join(names)))
            self._set_label_cell(row, e)
        self.case_table.blockSignals(False)
        self._show_problems(problems)
        self.viewer.set_volume(None)
        self.surface_view.set_labels(None)
        if entries:
            self._tasks.submit(read_entry_headers, entries, key="headers", on_done=self._on_headers)
            self.show_case(0)

    def _modality_names(self, n: int) -> list[str]:
        """Modality names of the open dataset, or generic names for ``n`` channels of loose scans."""
        ds = self.state.dataset
        if ds is not None and self._labels_decl:
            return list(ds.modalities)
        return [f"channel {i}" for i in range(n)] if n > 1 else ["scan"]

    def _set_label_cell(self, row: int, e: Entry) -> None:
        item = QTableWidgetItem("yes" if e.label_path is not None else "no")
        item.setForeground(QBrush(QColor(60, 170, 80) if e.label_path is not None else QColor(150, 150, 150)))
        self.case_table.setItem(row, 4, item)

    def _on_headers(self, entries: list[Entry]) -> None:
        if entries is not self._entries:
            return
        extra = []
        for row, e in enumerate(entries):
            if e.shape is not None:
                self.case_table.item(row, 1).setText("\u00d7".join(str(s) for s in e.shape))
                self.case_table.item(row, 2).setText("\u00d7".join(f"{s:g}" for s in e.spacing))
            else:
                self.case_table.item(row, 1).setText("unreadable")
            extra.extend(e.problems)
        if extra:
            self._show_problems(list(self._problems) + extra, self._full_check)

    def _show_problems(self, problems: list, full_check: bool = False) -> None:
        self._problems = list(problems)
        self._full_check = full_check
        self.problem_list.clear()
        if not problems:
            item = QListWidgetItem("No problem found" if self._full_check else
                                   "Headers look fine; \u201cCheck every voxel\u201d reads every case")
            item.setForeground(QBrush(QColor(60, 170, 80)))
            self.problem_list.addItem(item)
            return
        for p in problems:
            fatal = getattr(p, "fatal", True)
            item = QListWidgetItem(("error: " if fatal else "warning: ") + str(p))
            item.setForeground(QBrush(QColor(220, 60, 50) if fatal else QColor(220, 150, 30)))
            item.setToolTip(str(p))
            self.problem_list.addItem(item)

    def problems(self) -> list[str]:
        """The problems listed in the check box, as shown."""
        return [self.problem_list.item(i).text() for i in range(self.problem_list.count())]

    def entries(self) -> list[Entry]:
        """Rows of the case list."""
        return list(self._entries)

    def run_check(self) -> None:
        """Run the engine's full check (as `emonas check`) in a worker and list what it finds."""
        ds = self.state.dataset
        if ds is None:
            self.state.report_error("open a dataset first, then check it")
            return
        root = str(self.state.dataset_path) if str(self.state.dataset_path) == "demo" else str(ds.root)
        self.check_button.setEnabled(False)
        self.check_button.setText("Checking\u2026")
        self.check_status.setText("")
        self._cancel = threading.Event()
        self.cancel_check_button.setEnabled(True)
        self.cancel_check_button.setVisible(True)
        self._checking = True
        self._tasks.submit(check_dataset_job, root, self.skip_bad.isChecked(), self.check_progress.emit,
                           self._cancel, key="check", on_done=self._on_checked, on_error=self._on_check_failed)

    def cancel_check(self) -> None:
        """Stop the running check after the case it is reading (the panel stays usable)."""
        if self._checking:
            self._cancel.set()
            self.cancel_check_button.setEnabled(False)
            self.check_button.setText("Cancelling\u2026")

    def checking(self) -> bool:
        """Whether a full check is running."""
        return self._checking

    def _check_ended(self) -> None:
        self._checking = False
        self.check_button.setEnabled(True)
        self.check_button.setText("Check every voxel")
        self.cancel_check_button.setVisible(False)

    def _on_check_progress(self, done: int, total: int, case_id: str) -> None:
        if not self._cancel.is_set():
            self.check_button.setText(f"Checking {done}/{total}\u2026")

    def _on_checked(self, report: dict) -> None:
        self._check_ended()
        self.check_status.setText(f"checked {report.get('n_cases', 0)} usable case(s)")
        problems = [ShownProblem(p["path"], p["message"], bool(p["fatal"])) for p in report["problems"]]
        self._show_problems(problems, full_check=True)
        plan = report.get("plan")
        if plan:
            patch = "\u00d7".join(str(v) for v in plan.get("patch_size", []))
            spacing = "\u00d7".join(f"{v:.3g}" for v in plan.get("spacing", []))
            verdict = "usable" if report.get("ok") else "NOT usable"
            item = QListWidgetItem(f"{report['n_cases']} usable case(s), dataset {verdict}; plan: patch {patch} "
                                   f"at {spacing} mm, batch {plan.get('batch_size')}")
            self.problem_list.insertItem(0, item)
        self.state.status_message.emit(
            f"Check done: {report.get('n_fatal', 0)} error(s), {report.get('n_warnings', 0)} warning(s)")
        self.check_finished.emit(report)

    def _on_check_failed(self, message: str) -> None:
        self._check_ended()
        if self._cancel.is_set():  # CheckCancelled: the user asked for it, no error
            self.check_status.setText("cancelled")
            self.state.status_message.emit("Dataset check cancelled")
            return
        self.check_status.setText("failed")
        self.state.report_error(message)

    # -- one case -------------------------------------------------------------------------------
    def _on_case_selected(self) -> None:
        rows = self.case_table.selectionModel().selectedRows()
        if rows:
            self.show_case(rows[0].row())

    def show_case(self, row: int) -> None:
        """Load case ``row`` of the list in a worker and show it."""
        e = self._entries[row]
        self.case_table.blockSignals(True)
        self.case_table.selectRow(row)
        self.case_table.blockSignals(False)
        self.viewer.info.setText(f"Loading {e.case_id}\u2026")
        self.state.status_message.emit(f"Loading {e.case_id}\u2026")
        self._tasks.submit(load_case, e.case_id, e.image_paths, e.label_path, key="case",
                           on_done=self._on_case_loaded, on_error=self._on_case_failed)

    def _on_case_failed(self, message: str) -> None:
        self.viewer.info.setText("Could not load this case")
        self.state.report_error(message)

    def _on_case_loaded(self, case: LoadedCase) -> None:
        self._current = case
        names = self._modality_names(case.image.shape[0])
        if len(names) != case.image.shape[0]:
            names = [f"channel {i}" for i in range(case.image.shape[0])]
        self.viewer.set_volume(case.image, case.spacing, names)
        self.modality.blockSignals(True)
        self.modality.clear()
        self.modality.addItems(names)
        self.modality.setEnabled(len(names) > 1)
        self.modality.blockSignals(False)
        self._fill_presets()
        nc = names_colours_for(self._labels_decl) if self._labels_decl else {}
        for v in case.label_values:  # values the dataset does not declare still show
            nc.setdefault(v, (f"label {v}", default_colour(v)))
        # the colours and visibility chosen by the user for this dataset (remembered across sessions)
        nc = self._prefs.apply(nc)
        self.viewer.set_hidden_labels(self._prefs.hidden)
        self.viewer.set_labels(case.labels, nc)
        self._fill_label_table(nc if case.labels is not None else {})
        self._surfaces_pending = case.labels is not None
        self.surface_view.set_labels(case.labels, case.spacing, nc)
        for v in nc:
            self.surface_view.set_label_visible(v, self.viewer.label_visible(v))
        self.state.status_message.emit(
            f"{case.case_id}: {' x '.join(map(str, case.image.shape[1:]))} voxels, "
            f"{' x '.join(f'{s:.3g}' for s in case.spacing)} mm, {case.orientation} on disk")
        self.case_shown.emit(case.case_id)
        if not self._surfaces_pending:
            self.ready.emit()

    def _on_surfaces_ready(self) -> None:
        if self._surfaces_pending:
            self._surfaces_pending = False
            self.ready.emit()

    def current_case(self) -> LoadedCase | None:
        """The case on screen (reoriented arrays), or None."""
        return self._current

    def wait_until_ready(self, msecs: int = 60000) -> bool:
        """Block until loads and surface builds finished (for tests and --screenshot)."""
        ok = self._tasks.wait(msecs)
        from PySide6.QtWidgets import QApplication

        QApplication.processEvents()
        ok = self.surface_view.wait_until_ready(msecs) and ok
        QApplication.processEvents()
        return ok

    # -- display controls -----------------------------------------------------------------------
    def _fill_presets(self) -> None:
        self.preset.clear()
        self.preset.addItems(self.viewer.presets())

    def _on_modality(self, index: int) -> None:
        if index >= 0 and self.viewer.shape() is not None:
            self.viewer.set_channel(index)
            self._fill_presets()

    def _on_opacity(self, value: int) -> None:
        self.viewer.set_opacity(value / 100)
        self.state.settings.setValue("viewer/opacity", value)

    def _fill_label_table(self, nc: dict) -> None:
        self.label_table.blockSignals(True)
        self.label_table.setRowCount(len(nc))
        for row, (value, (name, colour)) in enumerate(sorted(nc.items())):
            show = QTableWidgetItem()
            show.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
            show.setCheckState(Qt.CheckState.Checked if self.viewer.label_visible(value) else Qt.CheckState.Unchecked)
            show.setData(Qt.ItemDataRole.UserRole, value)
            self.label_table.setItem(row, 0, show)
            name_item = QTableWidgetItem(name)
            name_item.setIcon(_swatch(colour))
            self.label_table.setItem(row, 1, name_item)
            self.label_table.setItem(row, 2, QTableWidgetItem(str(value)))
        self.label_table.blockSignals(False)

    def set_label_visible(self, value: int, visible: bool) -> None:
        """Show or hide label ``value`` in the slices and in 3D (as ticking its box does)."""
        for row in range(self.label_table.rowCount()):
            item = self.label_table.item(row, 0)
            if item.data(Qt.ItemDataRole.UserRole) == int(value):
                item.setCheckState(Qt.CheckState.Checked if visible else Qt.CheckState.Unchecked)
                return
        self._show_label(value, visible)

    def _show_label(self, value: int, visible: bool) -> None:
        self._prefs.set_visible(value, visible)
        self.viewer.set_label_visible(value, visible)
        self.surface_view.set_label_visible(value, visible)

    def _on_label_item_changed(self, item: QTableWidgetItem) -> None:
        if item.column() != 0:
            return
        value = int(item.data(Qt.ItemDataRole.UserRole))
        self._show_label(value, item.checkState() == Qt.CheckState.Checked)

    def _on_label_double_clicked(self, row: int, column: int) -> None:
        value = int(self.label_table.item(row, 0).data(Qt.ItemDataRole.UserRole))
        name, colour = self.viewer.names_colours().get(value, ("", default_colour(value)))
        chosen = QColorDialog.getColor(QColor(*colour), self, f"Colour of {name}")
        if chosen.isValid():
            self.set_label_colour(value, (chosen.red(), chosen.green(), chosen.blue()))

    def set_label_colour(self, value: int, colour: tuple[int, int, int]) -> None:
        """Give label ``value`` a new colour in the slices, the 3D view and the table (remembered for
        the dataset)."""
        self._prefs.set_colour(value, colour)
        self.viewer.set_label_colour(value, colour)
        case = self._current
        if case is not None and case.labels is not None:
            self.surface_view.set_labels(case.labels, case.spacing, self.viewer.names_colours())
        self._fill_label_table(self.viewer.names_colours())

    # -- saving ---------------------------------------------------------------------------------
    def choose_save_folder(self) -> None:
        """Ask for a folder and save every view there as PNG."""
        folder = QFileDialog.getExistingDirectory(self, "Save views as PNG", str(Path.home()))
        if folder:
            try:
                paths = self.save_views(folder)
            except OSError as exc:
                self.state.report_error(str(exc))
                return
            self.state.status_message.emit(f"Saved {len(paths)} PNG files to {folder}")

    def save_views(self, folder: str | Path) -> list[Path]:
        """Save axial, coronal, sagittal, 3D and the whole viewer as PNG files in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = self._current.case_id if self._current else "view"
        paths = [self.viewer.save_png(folder / f"{stem}_{name}.png", name) for name in self.viewer.views]
        paths.append(self.surface_view.save_png(folder / f"{stem}_3d.png"))
        whole = folder / f"{stem}_all.png"
        if not grab_with_vtk(self.viewer).save(str(whole), "PNG"):
            raise OSError(f"{whole}: could not write PNG")
        paths.append(whole)
        return paths

    # -- teardown -------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the worker and release the 3D view."""
        self._cancel.set()
        self._tasks.shutdown()
        self.surface_view.shutdown()

    def closeEvent(self, event):  # noqa: N802 - Qt's name
        self.shutdown()
        super().closeEvent(event)


def _swatch(colour) -> QIcon:
    pix = QPixmap(14, 14)
    pix.fill(QColor(*colour[:3]))
    return QIcon(pix)
