"""The app's PyTorch jobs run in child processes: an export with retraining cancelled half-way, and one
whose process is killed; the app stays up with a one-line message and the run is left as it was."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
from pathlib import Path

from PySide6.QtCore import Qt

from emonas_gui.panels.export import ExportPanel
from emonas_gui.state import AppState

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_2026_12"
LONG = 300_000


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm", ".lock"))}


def _wait_for_training(qtbot, job) -> None:
    """Pause the child at its first training step (it then waits at its next check)."""
    def on_event(ev: dict) -> None:
        if ev.get("stage") == "step" and not job.control.paused:
            job.pause()

    job.event.connect(on_event)
    with qtbot.waitSignal(job.paused, timeout=LONG):
        pass
    job.event.disconnect(on_event)


def test_export_with_retraining_in_a_child_cancelled_then_killed(qtbot, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "run", run)
    before = _digests(run)
    state = AppState()
    errors: list[str] = []
    state.error.connect(errors.append)
    panel = ExportPanel(state)
    qtbot.addWidget(panel)
    panel.show()
    panel.set_run(run)
    panel.candidate.setCurrentIndex(panel.candidate.findData(4))
    panel.retrain.setChecked(True)
    panel.epochs.setValue(50)
    panel.fmt_ts.setChecked(False)
    out = tmp_path / "model"
    panel.out_edit.setText(str(out))

    # Cancel half-way through the retraining: no error, nothing written, the panel usable again
    qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
    job = panel.export_job
    assert job.pid is not None and job.pid != os.getpid()  # PyTorch works in another process
    _wait_for_training(qtbot, job)
    assert "step" in panel.export_status.text() and panel.cancel_export.isEnabled()
    qtbot.mouseClick(panel.cancel_export, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.export_status.text() == "cancelled: nothing was written", timeout=LONG)
    qtbot.waitUntil(lambda: not job.is_running(), timeout=30_000)
    assert errors == [] and panel.last_export is None and panel.export_button.isEnabled()
    assert not out.exists() and not (tmp_path / "model.training").exists()

    # the export's process killed (out of memory, a crash in native code): one line, the app goes on
    qtbot.mouseClick(panel.export_button, Qt.MouseButton.LeftButton)
    job = panel.export_job
    _wait_for_training(qtbot, job)
    os.kill(job.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: bool(errors), timeout=60_000)
    assert len(errors) == 1 and "export process ended unexpectedly" in errors[0] and "\n" not in errors[0]
    assert "resumed" not in errors[0]  # that is said of a search only
    qtbot.waitUntil(lambda: not job.is_running(), timeout=30_000)
    assert panel.export_button.isEnabled() and not out.exists()
    assert _digests(run) == before


def test_wall_time_estimate_calibrates_in_a_child_process(qtbot, tmp_path):
    from emonas_gui.panels.search import SearchPanel

    state = AppState()
    state.set_dataset(None, "demo")
    panel = SearchPanel(state)
    qtbot.addWidget(panel)
    f = panel.form
    for n, cb in f.cell_checks.items():
        cb.setChecked(n == 5)
    for n, cb in f.nf1_checks.items():
        cb.setChecked(n == 8)
    f.population.setValue(2)
    f.neighbours.setValue(2)
    f.generations.setValue(2)
    f.epochs.setValue(1)
    f.device.setCurrentText("cpu")
    panel.estimate_time()
    job = panel._time_job
    assert job.pid is not None and job.pid != os.getpid()  # the calibration trains in another process
    qtbot.waitUntil(lambda: not job.is_running(), timeout=LONG)
    text = panel.time_label.text()
    assert text.startswith("expected wall time") and "candidates trained  4 by samea" in text, text
