"""Tables export to CSV: the columns and rows shown, a header line, UTF-8, read back with csv."""

from __future__ import annotations

import csv
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QTableWidget, QTableWidgetItem

from emonas_gui.panels.data import DataPanel
from emonas_gui.state import AppState
from emonas_gui.widgets.table_export import CsvExport, write_table_csv


def _read(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def test_visible_columns_and_rows_with_header_and_row_names(qtbot, tmp_path, monkeypatch):
    table = QTableWidget(3, 3)
    qtbot.addWidget(table)
    table.setHorizontalHeaderLabels(["Dice", "hidden", "HD95 (mm)"])
    table.setVerticalHeaderLabels(["névé", "core, inner", "skipped"])
    for r in range(3):
        for c in range(3):
            table.setItem(r, c, QTableWidgetItem(f'{r}.{c} "q"'))
    table.setColumnHidden(1, True)
    table.setRowHidden(2, True)

    path = write_table_csv(table, tmp_path / "plain.csv")
    assert _read(path) == [["Dice", "HD95 (mm)"], ['0.0 "q"', '0.2 "q"'], ['1.0 "q"', '1.2 "q"']]

    export = CsvExport(table, "metrics", row_header="label")
    assert export.default_name() == "metrics.csv" and export.action in table.actions()
    target = tmp_path / "named"  # typed without a suffix: .csv is added
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    with qtbot.waitSignal(export.saved, timeout=5000) as sig:
        export.action.trigger()
    assert sig.args == [str(tmp_path / "named.csv")]
    assert _read(tmp_path / "named.csv") == [["label", "Dice", "HD95 (mm)"], ["névé", '0.0 "q"', '0.2 "q"'],
                                              ["core, inner", '1.0 "q"', '1.2 "q"']]
    # a folder that does not exist: a message, no exception
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "no" / "x.csv"), ""))
    with qtbot.waitSignal(export.failed, timeout=5000) as sig:
        assert export.ask_and_save() is None
    assert "could not write" in sig.args[0]
    # cancelled dialog: nothing happens
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: ("", ""))
    assert export.ask_and_save() is None


def test_data_case_list_exports_to_csv(qtbot, msd_dataset, tmp_path, monkeypatch):
    state = AppState()
    panel = DataPanel(state)
    qtbot.addWidget(panel)
    with qtbot.waitSignal(panel.case_shown, timeout=60_000):
        panel.open_path(msd_dataset)
    assert panel.wait_until_ready()
    qtbot.waitUntil(lambda: panel.case_table.item(0, 1).text() != "\u2026", timeout=30_000)  # headers read
    assert panel.case_csv.default_name() == "TinyTest_cases.csv"
    target = tmp_path / "cases.csv"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    panel.case_csv.action.trigger()
    rows = _read(target)
    assert rows[0] == ["Case", "Shape", "Spacing (mm)", "Modalities", "Label"]
    assert rows[1] == ["case_000", "40\u00d748\u00d724", "1\u00d71\u00d72", "MRI", "yes"]
    assert [r[0] for r in rows[1:]] == [e.case_id for e in panel.entries()]
