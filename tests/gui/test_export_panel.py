"""The Export panel's checks and errors, without a trained network: readable messages, no traceback."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt

from emonas_gui.panels.export import ExportPanel
from emonas_gui.state import AppState


def test_export_and_predict_refuse_bad_input_with_clear_messages(qtbot, tmp_path):
    state = AppState()
    errors: list[str] = []
    state.error.connect(errors.append)
    panel = ExportPanel(state)
    qtbot.addWidget(panel)
    assert not panel.export_button.isEnabled()
    assert not panel.export()
    assert "no candidate to export" in errors[-1]

    assert not panel.predict()
    assert "open a model folder" in errors[-1]

    # a tampered model folder: the engine refuses it, the panel shows its one-line message
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"schema_version": 1, "files": {}}))
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"not really a scan")
    panel.model_edit.setText(str(model))
    panel.add_scan_files([str(scan)])
    assert panel.pred_out.text().endswith("segmentations")
    with qtbot.waitSignal(state.error, timeout=30_000) as sig:
        qtbot.mouseClick(panel.predict_button, Qt.MouseButton.LeftButton)
    message = sig.args[0]
    assert str(model) in message and "\n" not in message and "Traceback" not in message
    assert panel.predict_status.text().startswith("error:")
    qtbot.waitUntil(lambda: panel.predict_button.isEnabled(), timeout=10_000)
