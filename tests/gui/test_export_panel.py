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


def test_segment_step_takes_a_folder_of_nnunet_files(qtbot, tmp_path):
    """A folder of CASE_0000.nii.gz scans segmented from the panel: one label map per case, named by case id."""
    import shutil
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "engine" / "export"))
    from export_helpers import make_training_folder

    from engine.data.demo import demo_dataset_path
    from engine.data.plan import Plan
    from engine.genome import Genome

    labels = {"background": 0, "grey matter": 1, "white matter": 2, "CSF": 3}
    plan = Plan(target_spacing=(4.0, 4.0, 4.0), patch_size=(32, 32, 32), batch_size=2,
                normalization=[{"modality": "T1", "scheme": "zscore", "use_nonzero_mask": False}],
                pool_schedule=[(2, 2, 2)] * 4, modalities=["T1"], labels=labels).to_dict()
    genome = Genome(0, 1, 2, "conv3d_3x3x3", "conv3d_3x3x3", "conv3d_1x1x1", "identity", 5, 8, 3e-3)
    model = make_training_folder(tmp_path / "model", genome, labels, ("T1",), plan)
    src = demo_dataset_path()
    folder = tmp_path / "imagesTs"
    folder.mkdir()
    for i in range(2):
        shutil.copy(src / "imagesTr" / f"brain_{i:03d}.nii.gz", folder / f"case{i}_0000.nii.gz")
    state = AppState()
    panel = ExportPanel(state)
    qtbot.addWidget(panel)
    panel.model_edit.setText(str(model))
    panel.add_scan_files([str(folder)])
    panel.pred_out.setText(str(tmp_path / "out"))
    with qtbot.waitSignal(state.status_message, timeout=300_000):  # emitted when the label maps are saved
        qtbot.mouseClick(panel.predict_button, Qt.MouseButton.LeftButton)
    assert [Path(panel.results.item(i).text()).name for i in range(panel.results.count())] == [
        "case0.nii.gz", "case1.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["case0.nii.gz", "case1.nii.gz"]
    assert panel.predict_progress.value() == panel.predict_progress.maximum() == 2
    qtbot.waitUntil(lambda: panel.predict_button.isEnabled(), timeout=10_000)
