"""Shared application state for EMONAS Studio.

One :class:`AppState` lives for the lifetime of the main window. Panels receive it in their
constructor (``Panel(state, parent=None)``), read its attributes and subscribe to its signals; the
state never knows its views (napari's model/view split).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QSettings, Signal

log = logging.getLogger(__name__)

#: QSettings organisation / application names (also used by ``app.py``).
ORGANIZATION = "EMONAS"
APPLICATION = "EMONAS Studio"
MAX_RECENT = 8


class AppState(QObject):
    """The state shared by the main window and all panels.

    Attributes:
        dataset: the open ``engine.data.Dataset``, or None.
        dataset_path: where it was opened from (a folder, a scan file, or ``"demo"``), or None.
        run_dir: the open run directory (``Path``), or None.
        settings: the application's ``QSettings`` (layout, theme, recent lists).

    Signals:
        dataset_changed(object): emitted with the new Dataset (or None) after :meth:`set_dataset`.
        run_changed(object): emitted with the new run directory ``Path`` (or None) after :meth:`set_run`.
        status_message(str): a short message for the status bar.
        error(str): a one-line user-facing error; the main window shows it in a dialog.
    """

    dataset_changed = Signal(object)
    run_changed = Signal(object)
    status_message = Signal(str)
    error = Signal(str)

    def __init__(self, settings: QSettings | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.settings: QSettings = settings if settings is not None else QSettings(ORGANIZATION, APPLICATION)
        self.dataset: Any = None
        self.dataset_path: Path | str | None = None
        self.run_dir: Path | None = None

    # -- mutators -------------------------------------------------------------------------------
    def set_dataset(self, dataset: Any, path: Path | str | None = None) -> None:
        """Make ``dataset`` the current dataset (remembered in the recent list) and notify panels."""
        self.dataset = dataset
        self.dataset_path = path
        if path is not None:
            self._push_recent("recent/datasets", str(path))
        self.dataset_changed.emit(dataset)

    def set_run(self, run_dir: Path | str | None) -> None:
        """Make ``run_dir`` the current run directory (remembered in the recent list) and notify panels."""
        self.run_dir = Path(run_dir) if run_dir is not None else None
        if self.run_dir is not None:
            self._push_recent("recent/runs", str(self.run_dir))
        self.run_changed.emit(self.run_dir)

    def report_error(self, message: str) -> None:
        """Log and emit a user-facing error (shown as a dialog by the main window)."""
        log.warning("%s", message)
        self.error.emit(str(message))

    # -- recent lists ---------------------------------------------------------------------------
    def recent(self, key: str) -> list[str]:
        """The recent entries under ``key`` (``"recent/datasets"`` or ``"recent/runs"``), newest first."""
        value = self.settings.value(key, [])
        if value is None:
            return []
        if isinstance(value, str):
            return [value] if value else []
        return [str(v) for v in value]

    def recent_datasets(self) -> list[str]:
        """Recently opened dataset paths, newest first."""
        return self.recent("recent/datasets")

    def recent_runs(self) -> list[str]:
        """Recently opened run directories, newest first."""
        return self.recent("recent/runs")

    def _push_recent(self, key: str, entry: str) -> None:
        items = [e for e in self.recent(key) if e != entry]
        items.insert(0, entry)
        self.settings.setValue(key, items[:MAX_RECENT])
