"""A run folder written by an earlier version opens in the app's Results and Search steps."""

from __future__ import annotations

import shutil
from pathlib import Path

from emonas_gui.panels.results import ResultsPanel
from emonas_gui.state import AppState

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_2026_12"


def test_legacy_run_lists_its_candidates_in_results(qtbot, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "run", run)
    state = AppState()
    errors: list[str] = []
    state.error.connect(errors.append)
    panel = ResultsPanel(state)
    qtbot.addWidget(panel)
    state.set_run(run)
    assert "4 finished candidates, 2 on the front" in panel.run_label.text()
    ids = [panel.cand_a.itemData(i) for i in range(panel.cand_a.count())]
    assert sorted(ids) == [1, 2, 3, 4] and set(ids[:2]) == {1, 4}  # the front first
    qtbot.waitUntil(lambda: panel._validation_job is None or not panel._validation_job.is_running(), timeout=60_000)
    assert not any("Traceback" in e for e in errors)
