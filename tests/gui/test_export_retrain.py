"""Export with retraining from the app: a long job with progress, then a verified model folder.

Slow (a tiny search and a retraining on the demo data): ``python -m pytest tests/gui/test_export_retrain.py -m slow``.
"""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from engine.config import SearchConfig
from engine.export.package import verify_model_folder
from engine.run.session import SearchSession
from emonas_gui.panels.export import ExportPanel
from emonas_gui.state import AppState

CHEAP_OPS = ["conv3d_1x1x1", "conv2d_3x3x1", "identity"]


def _panel_on_a_tiny_run(qtbot, tmp_path, seed: int):
    """A 2-candidate search on the demo data, and an Export panel showing it; (panel, summary, errors)."""
    cfg = SearchConfig().replace(
        dataset="demo", seed=seed,
        space={"nf1": [8], "n_cells": [5], "op1": CHEAP_OPS, "op2": CHEAP_OPS, "op3": CHEAP_OPS, "op4": CHEAP_OPS},
        samea={"population": 2, "generations": 1, "neighbourhood": 2},
        training={"epochs": 1, "patience": 1, "extra": {"iterations_per_epoch": 2}},
        resources={"device": "cpu"},
    )
    run_dir = tmp_path / "run"
    summary = SearchSession(run_dir, cfg).run()
    assert summary["counts"]["done"] >= 1
    state = AppState()
    errors: list[str] = []
    state.error.connect(errors.append)
    panel = ExportPanel(state)
    qtbot.addWidget(panel)
    state.set_run(run_dir)
    return panel, summary, errors


@pytest.mark.slow
def test_export_a_retrained_candidate(qtbot, tmp_path):
    panel, summary, errors = _panel_on_a_tiny_run(qtbot, tmp_path, seed=3)
    assert panel.candidate.count() == summary["counts"]["done"]
    panel.retrain.setChecked(True)
    assert panel.epochs.isEnabled()
    panel.epochs.setValue(1)
    panel.fmt_ts.setChecked(False)
    model_dir = tmp_path / "final-model"
    panel.out_edit.setText(str(model_dir))
    qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
    assert panel.cancel_export.isEnabled() and not panel.export_button.isEnabled()
    events: list[dict] = []
    panel.export_job.event.connect(events.append)
    qtbot.waitUntil(lambda: panel.last_export is not None or bool(errors), timeout=600_000)
    assert any(e.get("stage") == "epoch" and e["total"] == 1 for e in events)  # the progress bar's figures
    assert not errors, errors
    assert panel.last_export["retrained_in"] and verify_model_folder(model_dir)["files"]
    assert (tmp_path / "final-model.training" / "training.json").is_file()
    assert str(model_dir) in panel.export_status.text()
    assert panel.export_button.isEnabled()


@pytest.mark.slow
def test_cancel_a_long_retraining(qtbot, tmp_path):
    panel, _, errors = _panel_on_a_tiny_run(qtbot, tmp_path, seed=4)
    panel.retrain.setChecked(True)
    panel.epochs.setValue(500)
    panel.out_edit.setText(str(tmp_path / "never"))
    qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "step" in panel.export_status.text(), timeout=300_000)  # training has begun
    qtbot.mouseClick(panel.cancel_export, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.export_status.text().startswith("cancelled"), timeout=120_000)
    assert errors == [] and panel.last_export is None  # the user's Cancel is no error
    assert not (tmp_path / "never").exists() and panel.export_button.isEnabled()
