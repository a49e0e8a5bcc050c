"""Label colours and visibility chosen in the Data step are remembered per dataset."""

from __future__ import annotations

from PySide6.QtCore import Qt

from emonas_gui.label_prefs import LabelPrefs, dataset_key
from emonas_gui.panels.data import DataPanel
from emonas_gui.state import AppState
from emonas_gui.widgets.slice_views import default_colour

from conftest import write_msd_dataset

PICKED = (10, 200, 30)


def _panel(qtbot) -> tuple[DataPanel, AppState]:
    state = AppState()
    panel = DataPanel(state)
    qtbot.addWidget(panel)
    return panel, state


def _open(qtbot, panel: DataPanel, path) -> None:
    with qtbot.waitSignal(panel.case_shown, timeout=60_000):
        panel.open_path(path)
    assert panel.wait_until_ready()


def _shown_state(panel: DataPanel) -> tuple[tuple, bool, bool]:
    """(colour of label 1, label 2 visible in the slices, label 2 ticked in the table)."""
    ticked = None
    for row in range(panel.label_table.rowCount()):
        item = panel.label_table.item(row, 0)
        if item.data(Qt.ItemDataRole.UserRole) == 2:
            ticked = item.checkState() == Qt.CheckState.Checked
    return panel.viewer.names_colours()[1][1], panel.viewer.label_visible(2), ticked


def test_label_colour_and_visibility_come_back_for_that_dataset_only(qtbot, tmp_path):
    first = write_msd_dataset(tmp_path / "A" / "Task01_A", n_cases=2, shape=(20, 24, 12))
    second = write_msd_dataset(tmp_path / "B" / "Task02_B", n_cases=2, shape=(20, 24, 12), seed=1)
    panel, _ = _panel(qtbot)
    _open(qtbot, panel, first)
    assert _shown_state(panel) == (default_colour(1), True, True)
    panel.set_label_colour(1, PICKED)
    panel.set_label_visible(2, False)  # as unticking its box
    assert _shown_state(panel) == (PICKED, False, False)
    panel.close()

    # a new panel (a new session of the app): the same dataset shows the same choices...
    again, _ = _panel(qtbot)
    _open(qtbot, again, first)
    assert _shown_state(again) == (PICKED, False, False)
    # ...on another case of it too
    with qtbot.waitSignal(again.case_shown, timeout=60_000):
        again.show_case(1)
    assert _shown_state(again) == (PICKED, False, False)
    # another dataset keeps the defaults
    _open(qtbot, again, second)
    assert _shown_state(again) == (default_colour(1), True, True)
    # and back: remembered, opened by another spelling of the same folder
    _open(qtbot, again, first.parent / ".." / first.parent.name / first.name)
    assert _shown_state(again) == (PICKED, False, False)
    # showing the label again is remembered too
    again.set_label_visible(2, True)
    assert LabelPrefs.for_dataset(again.state.settings, first).hidden == set()
    again.close()


def test_label_prefs_ignore_unknown_versions_and_scans_without_dataset(qtbot, tmp_path):
    state = AppState()
    key = dataset_key(tmp_path)
    state.settings.setValue(key, '{"version": 99, "colours": {"1": [1, 2, 3]}}')
    assert LabelPrefs.for_dataset(state.settings, tmp_path).colours == {}
    state.settings.setValue(key, "not json")
    assert LabelPrefs.for_dataset(state.settings, tmp_path).colours == {}
    loose = LabelPrefs.for_dataset(state.settings, None)
    loose.set_colour(1, PICKED)  # kept in memory, nothing written
    assert loose.key is None and loose.colours == {1: PICKED}
    assert dataset_key("demo") != dataset_key(tmp_path) and dataset_key(None) is None
