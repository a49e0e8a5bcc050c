"""The main window: workflow tabs Data -> Search -> Results -> Export, menus, toolbar, drag and drop.

``MainWindow(state: AppState, theme="dark")``. Public methods used by the app and by tests:
``open_dataset(path)``, ``open_scans(paths)``, ``open_run(path)``, ``open_paths(paths)`` (what a drop
does), ``show_step(name)``, ``set_theme(name)``, ``save_screenshot(path)``, ``show_about()``;
``error_dialog`` is the last error shown (a non-modal QMessageBox), ``data_panel`` and ``panels``
(name -> widget) give access to the steps.

Closing the window while a search runs asks (``ask_close_with_search``) whether to pause the search
(it ends as a resumable pause, as Stop does) or to leave it running in the background (its process
outlives the app; opening the run again shows it live), or not to close.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Iterable

from PySide6.QtCore import QByteArray, Qt, QUrl
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (QApplication, QFileDialog, QLabel, QMainWindow, QMessageBox,
                               QTabWidget, QToolBar, QVBoxLayout, QWidget)

from emonas_gui.panels.data import DataPanel, scan_filter
from emonas_gui.state import AppState
from emonas_gui.widgets.surface_view import grab_with_vtk

log = logging.getLogger(__name__)

STEPS = ("data", "search", "results", "export")
#: the answers of the closing question (``MainWindow.ask_close_with_search``)
CLOSE_PAUSE, CLOSE_LEAVE_RUNNING, CLOSE_CANCEL = "pause", "leave", "cancel"
STEP_TITLES = {"data": "1  Data", "search": "2  Search", "results": "3  Results", "export": "4  Export"}
STEP_PANELS = {"search": ("search", "SearchPanel"), "results": ("results", "ResultsPanel"),
                 "export": ("export", "ExportPanel")}

ABOUT_TEXT = (
    "<h3>EMONAS Studio</h3>"
    "<p>Multi-objective neural architecture search (EMONAS-Net / SaMEA) for small, accurate 3D medical "
    "image segmentation networks.</p>"
    "<p><b>For research use only.</b> Not a medical device; not for diagnosis or treatment.</p>"
    "<p>Method: Baldeon-Calisto M., Lai-Yuen S., EMONAS-Net, Artificial Intelligence in Medicine 119 "
    "(2021) 102154.</p>"
    "<p>The demo dataset derives from the MNI ICBM152 2009a template, Copyright (C) 1993-2009 Louis "
    "Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University.</p>"
)


class _LazyPanels(dict):
    """``{step: panel}`` that builds a step's panel the first time it is looked up."""

    def __init__(self, factory):
        super().__init__()
        self._factory = factory

    def __missing__(self, step: str) -> QWidget:
        if step not in STEP_PANELS:
            raise KeyError(step)
        panel = self._factory(step)
        self[step] = panel
        return panel


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "run.db").exists()


class MainWindow(QMainWindow):
    """EMONAS Studio's main window (see the module docstring)."""

    def __init__(self, state: AppState, theme: str = "dark", parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.setWindowTitle("EMONAS Studio")
        self.setObjectName("EmonasMainWindow")
        self.setAcceptDrops(True)
        self.error_dialog: QMessageBox | None = None
        self.errors: list[str] = []

        self.tabs = QTabWidget()
        self.tabs.setObjectName("workflowTabs")
        self.tabs.setDocumentMode(True)
        self.data_panel = DataPanel(state)
        # The other steps import the training and search engine (torch, scikit-learn: seconds), so
        # each is built the first time it is shown or asked for: the window opens at once.
        self.panels: dict[str, QWidget] = _LazyPanels(self._make_step_panel)
        dict.__setitem__(self.panels, "data", self.data_panel)
        self._containers: dict[str, QWidget] = {}
        for step in STEPS:
            if step == "data":
                self.tabs.addTab(self.data_panel, STEP_TITLES[step])
                continue
            holder = QWidget()
            holder.setObjectName(f"{step}StepHolder")
            box = QVBoxLayout(holder)
            box.setContentsMargins(0, 0, 0, 0)
            self._containers[step] = holder
            self.tabs.addTab(holder, STEP_TITLES[step])
        self.tabs.currentChanged.connect(lambda i: self.panels[STEPS[i]])
        self.setCentralWidget(self.tabs)

        self.dataset_label = QLabel("no dataset")
        self.run_label = QLabel("no run")
        self.statusBar().addPermanentWidget(self.dataset_label)
        self.statusBar().addPermanentWidget(self.run_label)
        state.status_message.connect(lambda m: self.statusBar().showMessage(m, 8000))
        state.error.connect(self.show_error)
        state.dataset_changed.connect(self._on_dataset_changed)
        state.run_changed.connect(self._on_run_changed)

        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self.set_theme(theme)
        self.resize(1440, 900)
        self._restore_layout()

    # -- panels ---------------------------------------------------------------------------------
    def _make_step_panel(self, step: str) -> QWidget:
        module, cls = STEP_PANELS[step]
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            panel = getattr(importlib.import_module(f"emonas_gui.panels.{module}"), cls)(self.state)
        finally:
            QApplication.restoreOverrideCursor()
        self._containers[step].layout().addWidget(panel)
        return panel

    # -- actions, menus, toolbar ----------------------------------------------------------------
    def _action(self, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
            act.setToolTip(tip)
        act.triggered.connect(slot)
        return act

    def _build_actions(self) -> None:
        std = QKeySequence.StandardKey
        self.act_open_dataset = self._action("Open &dataset folder\u2026", self.data_panel.choose_folder,
                                             std.Open, "Open a dataset folder (MSD, nnU-Net, ACDC, PROMISE12, plain)")
        self.act_open_scans = self._action("Open &scans\u2026", self.data_panel.choose_scans, "Ctrl+Shift+O",
                                           "Open scan files (NIfTI, MetaImage, NRRD)")
        self.act_open_labels = self._action("Open &label map\u2026", self._choose_label_map, "Ctrl+L",
                                            "Overlay a label map file on the current scan")
        self.act_demo = self._action("Open d&emo dataset", lambda: self.open_dataset("demo"), None,
                                     "Open the built-in demo dataset (brain MRI tissue labels)")
        self.act_open_run = self._action("Open &run\u2026", self._choose_run, "Ctrl+R",
                                         "Open a search run directory (also one started from the CLI)")
        self.act_open_log = self._action("Open run &log", self.open_run_log, None,
                                         "Open the current run's search.log in the system's text viewer")
        self.act_open_log.setEnabled(self.state.run_dir is not None)
        self.act_save_views = self._action("Save &views as PNG\u2026", self.data_panel.choose_save_folder,
                                           std.Save, "Save each view of the scan as a PNG file")
        self.act_screenshot = self._action("Save window &screenshot\u2026", self._choose_screenshot,
                                           "Ctrl+Shift+S", "Save the whole window as a PNG file")
        self.act_quit = self._action("&Quit", self.close, std.Quit)
        self.act_dark = self._action("&Dark theme", lambda on: self.set_theme("dark" if on else "light"),
                                     "Ctrl+Shift+T", "Switch between dark and light themes")
        self.act_dark.setCheckable(True)
        self.act_reset_layout = self._action("&Reset layout", self.reset_layout, None)
        self.act_about = self._action("&About EMONAS Studio", self.show_about)
        self.act_docs = self._action("&User guide", self.open_documentation)
        self.act_shortcuts = self._action("&Keyboard and mouse", self.show_shortcuts, "F1")
        self.step_actions = []
        for i, step in enumerate(STEPS):
            act = self._action(f"&{i + 1} {step.capitalize()}", lambda _=False, s=step: self.show_step(s),
                               f"Ctrl+{i + 1}")
            self.step_actions.append(act)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        for act in (self.act_open_dataset, self.act_open_scans, self.act_open_labels, self.act_demo,
                    self.act_open_run, self.act_open_log):
            file_menu.addAction(act)
        self.recent_datasets_menu = file_menu.addMenu("Recent &datasets")
        self.recent_runs_menu = file_menu.addMenu("Recent r&uns")
        self.recent_datasets_menu.aboutToShow.connect(
            lambda: self._fill_recent(self.recent_datasets_menu, self.state.recent_datasets(), self.open_dataset))
        self.recent_runs_menu.aboutToShow.connect(
            lambda: self._fill_recent(self.recent_runs_menu, self.state.recent_runs(), self.open_run))
        file_menu.addSeparator()
        file_menu.addAction(self.act_save_views)
        file_menu.addAction(self.act_screenshot)
        file_menu.addSeparator()
        file_menu.addAction(self.act_quit)
        view_menu = bar.addMenu("&View")
        for act in self.step_actions:
            view_menu.addAction(act)
        view_menu.addSeparator()
        view_menu.addAction(self.act_dark)
        view_menu.addAction(self.act_reset_layout)
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.act_shortcuts)
        help_menu.addAction(self.act_docs)
        help_menu.addAction(self.act_about)

    def _build_toolbar(self) -> None:
        tb = QToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        for act in (self.act_open_dataset, self.act_open_scans, self.act_demo, self.act_open_run):
            tb.addAction(act)
        tb.addSeparator()
        tb.addAction(self.act_save_views)
        tb.addAction(self.act_screenshot)
        tb.addSeparator()
        tb.addAction(self.act_dark)
        self.addToolBar(tb)

    def _fill_recent(self, menu, entries: Iterable[str], opener) -> None:
        menu.clear()
        entries = list(entries)
        if not entries:
            menu.addAction("(none)").setEnabled(False)
        for entry in entries:
            menu.addAction(entry, lambda e=entry: opener(e))

    # -- opening --------------------------------------------------------------------------------
    def open_dataset(self, path: str | Path) -> None:
        """Open a dataset folder, a scan file, or ``"demo"``; shows the Data step."""
        if str(path) != "demo" and not Path(path).exists():
            self.state.report_error(f"{path}: no such file or folder")
            return
        self.show_step("data")
        self.data_panel.open_path(path)

    def open_scans(self, paths: Iterable[str | Path]) -> None:
        """Show scan files without a dataset."""
        self.show_step("data")
        self.data_panel.open_scans([Path(p) for p in paths])

    def open_run(self, path: str | Path, follow_dataset: bool = True) -> None:
        """Make ``path`` the current run directory (panels of the Search and Results steps load it).

        With ``follow_dataset``, the dataset the run searched on is opened in the Data step (in the
        background, the shown step unchanged) when another one is open and the run's still exists, so
        the search form, its cost line, the Data step and the Results all describe the run's data.
        """
        path = Path(path)
        if not path.is_dir():
            self.state.report_error(f"{path}: not a run directory (no such folder)")
            return
        self.state.set_run(path)
        if _is_run_dir(path) and not self._search_running_here():
            from engine.run.store import RunLock

            if follow_dataset:
                self._open_run_dataset(path)
            if RunLock(path).is_held_elsewhere():  # its search runs in another process: show it live
                self.show_step("search")

    def _open_run_dataset(self, run_dir: Path) -> None:
        from engine.run.store import recorded_dataset  # a read of the run's database, nothing heavy imported

        ref = recorded_dataset(run_dir)
        if ref is None or (ref != "demo" and not Path(ref).is_dir()):
            return  # not recorded, or moved since: the open dataset stays
        asked = self.data_panel.requested
        if asked == ref or ("demo" not in (asked, ref, None) and Path(asked).resolve() == Path(ref).resolve()):
            return  # already open (or opening)
        self.state.status_message.emit(f"Opening the run's dataset {ref}")
        self.data_panel.open_path(ref)

    def open_paths(self, paths: Iterable[str | Path]) -> None:
        """Open dropped files and folders: run folders, dataset folders, or scan files."""
        from engine.data.io import is_image_file  # the engine.data package loads SciPy: not at start-up

        paths = [Path(p) for p in paths]
        scans = [p for p in paths if p.is_file() and is_image_file(p)]
        others = [p for p in paths if p not in scans]
        for p in others:
            if _is_run_dir(p):
                self.open_run(p)
            elif p.is_dir():
                self.open_dataset(p)
            else:
                self.state.report_error(f"{p}: not a scan, a dataset folder or a run folder")
        if scans:
            self.open_scans(scans)

    def _choose_run(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open run directory", str(Path.home()))
        if folder:
            self.open_run(folder)

    def _choose_label_map(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open label map", str(Path.home()), scan_filter("Label maps"))
        if path:
            self.data_panel.open_label_map(path)

    def _choose_screenshot(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save window screenshot", str(Path.home() / "emonas.png"),
                                              "PNG images (*.png)")
        if path:
            try:
                self.save_screenshot(path)
            except OSError as exc:
                self.state.report_error(str(exc))

    def save_screenshot(self, path: str | Path) -> Path:
        """Save the whole window, 3D view included, as a PNG file."""
        path = Path(path)
        if not grab_with_vtk(self).save(str(path), "PNG"):
            raise OSError(f"{path}: could not write PNG")
        self.state.status_message.emit(f"Saved {path}")
        return path

    # -- drag and drop --------------------------------------------------------------------------
    def dragEnterEvent(self, event):  # noqa: N802 - Qt's name
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event):  # noqa: N802 - Qt's name
        self.dragEnterEvent(event)

    def dropEvent(self, event):  # noqa: N802 - Qt's name
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_paths(paths)

    # -- state ----------------------------------------------------------------------------------
    def _on_dataset_changed(self, dataset) -> None:
        self.dataset_label.setText(f"dataset: {dataset.name}" if dataset is not None else "no dataset")

    def _on_run_changed(self, run_dir) -> None:
        self.run_label.setText(f"run: {Path(run_dir).name}" if run_dir else "no run")
        self.act_open_log.setEnabled(run_dir is not None)

    def open_run_log(self) -> Path | None:
        """Open the current run's ``search.log`` with the desktop's viewer; a dialog if there is none."""
        from engine.run.runlog import log_path

        if self.state.run_dir is None:
            self.show_error("no run is open: open or start a run first")
            return None
        path = log_path(self.state.run_dir)
        if not path.is_file():
            self.show_error(f"{path}: no log yet (the run writes it once it starts)")
            return None
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))):
            self.show_error(f"{path}: no program to open it with; open it in a text editor")
        return path

    def show_error(self, message: str) -> None:
        """Show a one-line error in a (non-modal) dialog; the app keeps working."""
        self.errors.append(message)
        if self.error_dialog is None:
            self.error_dialog = QMessageBox(QMessageBox.Icon.Warning, "EMONAS Studio", "", QMessageBox.StandardButton.Ok,
                                            self)
            self.error_dialog.setWindowModality(Qt.WindowModality.NonModal)
        self.error_dialog.setText(message)
        self.error_dialog.show()
        self.statusBar().showMessage(message, 10000)

    def show_step(self, name: str) -> None:
        """Show workflow step ``name`` ("data", "search", "results" or "export")."""
        self.tabs.setCurrentIndex(STEPS.index(name))

    def current_step(self) -> str:
        """Name of the shown workflow step."""
        return STEPS[self.tabs.currentIndex()]

    def set_theme(self, theme: str) -> None:
        """Switch to the ``"dark"`` or ``"light"`` theme (remembered)."""
        from emonas_gui.theme import apply_theme

        theme = "light" if theme == "light" else "dark"
        apply_theme(QApplication.instance(), theme)
        self.theme = theme
        self.act_dark.blockSignals(True)
        self.act_dark.setChecked(theme == "dark")
        self.act_dark.blockSignals(False)
        self.state.settings.setValue("ui/theme", theme)

    def show_about(self) -> QMessageBox:
        """The About box (says the software is for research use only)."""
        box = QMessageBox(QMessageBox.Icon.Information, "About EMONAS Studio", ABOUT_TEXT,
                          QMessageBox.StandardButton.Ok, self)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        self.about_box = box
        return box

    def show_shortcuts(self) -> QMessageBox:
        """A summary of the keyboard shortcuts and mouse gestures."""
        text = ("<b>Slice views</b><br>Left click/drag: move the crosshair<br>Wheel, Up/Down: scroll slices "
                "(Shift: 5)<br>Page Up/Down: 5 slices<br>Right drag: window (left/right), level (up/down)<br>"
                "Ctrl+wheel: zoom; middle drag: pan; double click: reset zoom<br><br>"
                "<b>3D view</b><br>Left drag: rotate; wheel or right drag: zoom; middle drag: pan; R: reset<br><br>"
                "<b>Window</b><br>Ctrl+O open dataset, Ctrl+Shift+O open scans, Ctrl+L open label map, "
                "Ctrl+R open run, Ctrl+S save views, Ctrl+Shift+S screenshot, Ctrl+1..4 workflow steps, "
                "Ctrl+Shift+T theme, F1 this help")
        box = QMessageBox(QMessageBox.Icon.NoIcon, "Keyboard and mouse", text, QMessageBox.StandardButton.Ok, self)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()
        self.shortcuts_box = box
        return box

    def open_documentation(self) -> None:
        """Open the README in the user's browser."""
        readme = Path(__file__).resolve().parents[1] / "README.md"
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(readme)))

    # -- layout persistence ---------------------------------------------------------------------
    def _restore_layout(self) -> None:
        s = self.state.settings
        geometry = s.value("window/geometry")
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            self.restoreGeometry(geometry)
        size = s.value("window/size")
        if size is not None and not self.isMaximized():
            # restoreGeometry clamps to the screen it finds (800x800 on the offscreen platform)
            self.resize(size)
        window_state = s.value("window/state")
        if isinstance(window_state, QByteArray) and not window_state.isEmpty():
            self.restoreState(window_state)
        splitter = s.value("data/splitter")
        if isinstance(splitter, QByteArray) and not splitter.isEmpty():
            self.data_panel.splitter.restoreState(splitter)

    def save_layout(self) -> None:
        """Remember window geometry, toolbars and splitters."""
        s = self.state.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/size", self.size())
        s.setValue("window/state", self.saveState())
        s.setValue("data/splitter", self.data_panel.splitter.saveState())
        s.sync()

    def reset_layout(self) -> None:
        """Forget the saved layout and return to the default one."""
        for key in ("window/geometry", "window/size", "window/state", "data/splitter"):
            self.state.settings.remove(key)
        self.data_panel.splitter.setSizes([470, 970])
        self.resize(1440, 900)

    def _search_running_here(self) -> bool:
        search = dict.get(self.panels, "search")  # not built: no search can run
        return search is not None and search.is_running()

    def ask_close_with_search(self) -> str:
        """Ask what to do with the running search before closing: ``CLOSE_PAUSE``,
        ``CLOSE_LEAVE_RUNNING`` or ``CLOSE_CANCEL`` (tests replace this method)."""
        box = QMessageBox(QMessageBox.Icon.Question, "EMONAS Studio",
                          "A search is running. Pause it, or leave it running in the background?", parent=self)
        box.setInformativeText("A paused search continues with Resume. A search left running goes on after "
                               "the window closes; open its run again to watch or pause it.")
        pause = box.addButton("Pause the search", QMessageBox.ButtonRole.AcceptRole)
        leave = box.addButton("Leave it running", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(pause)
        box.exec()
        clicked = box.clickedButton()
        return CLOSE_PAUSE if clicked is pause else CLOSE_LEAVE_RUNNING if clicked is leave else CLOSE_CANCEL

    def closeEvent(self, event):  # noqa: N802 - Qt's name
        if self._search_running_here():
            choice = self.ask_close_with_search()
            if choice == CLOSE_CANCEL:
                event.ignore()
                return
            search = self.panels["search"]
            if choice == CLOSE_LEAVE_RUNNING:
                search.leave_running()
            else:
                search.pause()  # as the Pause button; closing the panel then ends it as a resumable pause
        self.save_layout()
        for panel in self.panels.values():
            shutdown = getattr(panel, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:  # noqa: BLE001 - closing must go on whatever a panel does
                    log.exception("panel shutdown failed")
        super().closeEvent(event)
