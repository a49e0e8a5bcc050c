"""The Results panel without a finished search: clear states and readable errors, never a traceback."""

from __future__ import annotations

from engine.run.store import RunStore
from emonas_gui.panels.results import ResultsPanel
from emonas_gui.state import AppState


def test_results_panel_follows_the_run_and_explains_missing_things(qtbot, tmp_path):
    state = AppState()
    errors: list[str] = []
    state.error.connect(errors.append)
    panel = ResultsPanel(state)
    qtbot.addWidget(panel)
    assert "No run open" in panel.run_label.text() and not panel.run_button.isEnabled()

    # a folder that is not a run: the label says so, nothing is offered
    state.set_run(tmp_path / "nothing")
    assert "not a run directory" in panel.run_label.text()
    assert panel.cand_a.count() == 0 and not panel.run_button.isEnabled()
    with qtbot.waitSignal(state.error, timeout=10_000):
        pass  # the validation-case lookup reports the same problem as a dialog message
    assert errors and "not a run directory" in errors[-1] and "Traceback" not in errors[-1]

    # a run with no finished candidate yet (e.g. just started from the CLI)
    RunStore.create(tmp_path / "run", {"config": {"dataset": "demo"}}).close()
    state.set_run(tmp_path / "run")
    assert "0 finished candidates" in panel.run_label.text()
    assert not panel.run_button.isEnabled()
    qtbot.waitUntil(lambda: panel._validation_job is None or not panel._validation_job.is_running(), timeout=60_000)
