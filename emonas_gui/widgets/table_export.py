"""Tables to CSV: what a table shows (its visible columns and rows, as displayed) in a UTF-8 CSV file.

``table_contents(table, row_header=None)`` gives the header and the rows; ``write_table_csv(table,
path, row_header=None)`` writes them; ``CsvExport(table, name, row_header=None)`` adds an "Export
CSV..." action to the table's context menu and gives a ``button()`` for the panel's own button row.
``row_header`` names a first column holding the table's row labels (its vertical header), for tables
whose rows are named there (the per-label metrics).
"""

from __future__ import annotations

import csv
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QPushButton, QTableView, QWidget

from emonas_gui.widgets import write_or_warn

_DISPLAY = Qt.ItemDataRole.DisplayRole


def _text(value) -> str:
    return "" if value is None else str(value)


def table_contents(table: QTableView, row_header: str | None = None) -> tuple[list[str], list[list[str]]]:
    """The header and rows of ``table`` as displayed: hidden columns and rows are left out."""
    model = table.model()
    columns = [c for c in range(model.columnCount()) if not table.isColumnHidden(c)]
    rows = [r for r in range(model.rowCount()) if not table.isRowHidden(r)]
    header = [_text(model.headerData(c, Qt.Orientation.Horizontal, _DISPLAY)) for c in columns]
    if row_header is not None:
        header.insert(0, row_header)
    out = []
    for r in rows:
        row = [_text(model.index(r, c).data(_DISPLAY)) for c in columns]
        if row_header is not None:
            row.insert(0, _text(model.headerData(r, Qt.Orientation.Vertical, _DISPLAY)))
        out.append(row)
    return header, out


def write_table_csv(table: QTableView, path: str | Path, row_header: str | None = None) -> Path:
    """Write what ``table`` shows to ``path`` (CSV, UTF-8, a header line first); returns the path."""
    path = Path(path)
    header, rows = table_contents(table, row_header)
    try:
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
    except OSError as exc:
        raise OSError(f"{path}: could not write the table ({exc.strerror or exc})") from None
    return path


class CsvExport(QObject):
    """"Export CSV..." for one table: a context-menu action on it and, on request, a button.

    ``name`` is the default file name (without ``.csv``; a callable is asked each time, so it can
    name the case shown). ``saved(str)`` gives the path written, ``failed(str)`` a one-line message
    (also shown in a non-modal box).
    """

    saved = Signal(str)
    failed = Signal(str)

    def __init__(self, table: QTableView, name, row_header: str | None = None):
        super().__init__(table)
        self.table = table
        self._name = name
        self.row_header = row_header
        self.action = QAction("Export CSV\u2026", table)
        self.action.setToolTip("save this table as a CSV file (the columns and rows shown)")
        self.action.triggered.connect(self.ask_and_save)
        table.addAction(self.action)
        table.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)

    def button(self, parent: QWidget | None = None) -> QPushButton:
        """A push button doing the same as the context action."""
        b = QPushButton("Export CSV\u2026", parent)
        b.setToolTip(self.action.toolTip())
        b.clicked.connect(self.ask_and_save)
        return b

    def default_name(self) -> str:
        name = self._name() if callable(self._name) else self._name
        return f"{name or 'table'}.csv"

    def ask_path(self) -> str:
        """The file the user chose ('' when cancelled), ``.csv`` added when typed without a suffix."""
        path, _ = QFileDialog.getSaveFileName(self.table, "Export CSV", str(Path.home() / self.default_name()),
                                              "CSV files (*.csv);;All files (*)")
        if path and not Path(path).suffix:
            path += ".csv"
        return path

    def ask_and_save(self) -> Path | None:
        """Ask where, then write; returns the path written, None when cancelled or failed."""
        path = self.ask_path()
        if not path:
            return None
        return write_or_warn(self.table, "Export CSV", lambda: write_table_csv(self.table, path, self.row_header),
                             self.saved, self.failed)
