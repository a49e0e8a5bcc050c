"""Cancel a running job half-way (a case run in Results, a Segment in Export, the full dataset check);
the panel stays usable and says "cancelled". The Results metrics of a real run export to CSV.

The jobs that run PyTorch run in child processes; each is paused at a known point so that Cancel lands
half-way whatever the machine's speed: at its first check (paused as soon as it starts: the child then
waits at that check), or at its first progress record of a kind (the child then waits at its next
check; the pause is set from the reader thread as the record arrives, not after the GUI thread gets to
it). The dataset check (file reads in a thread of the app) is held by a gate in its callback.
"""

from __future__ import annotations

import csv
import shutil
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

import emonas_gui.panels.data as data_mod
from emonas_gui.panels.data import DataPanel
from emonas_gui.panels.export import ExportPanel
from emonas_gui.panels.results import ResultsPanel
from emonas_gui.state import AppState

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_2026_12"
LONG = 300_000  # ms: reading the demo data and predicting on a busy machine


class Gate:
    """Holds a worker thread at a chosen callback until the test opens it."""

    def __init__(self):
        self.reached = threading.Event()
        self._open = threading.Event()

    def hold(self) -> None:
        self.reached.set()
        assert self._open.wait(120), "the test never opened the gate"

    def open(self) -> None:
        self._open.set()


def _pause_at(qtbot, job, first) -> list[dict]:
    """Pause ``job`` (a child process) at its first progress record for which ``first(ev)`` is true;
    returns the records received until the child said it is paused."""
    seen: list[dict] = []

    def on_event(ev: dict) -> None:
        seen.append(ev)
        if first(ev) and not job.control.paused:
            job.pause()

    # direct: called in the job's reader thread the moment the record arrives, so a busy GUI thread
    # cannot let the child run past its next check (and on to the end) before the pause is set
    job.event.connect(on_event, Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(job.paused, timeout=LONG):
        pass
    job.event.disconnect(on_event)
    return seen


def _pause_at_start(qtbot, job) -> None:
    """Pause ``job`` (a child process, just started) at its first check: the child is still starting
    when the pause is set, so it stops there however fast the machine is."""
    job.pause()
    with qtbot.waitSignal(job.paused, timeout=LONG):
        pass


def _state(errors: list) -> AppState:
    state = AppState()
    state.error.connect(errors.append)
    return state


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


def _save_to(monkeypatch, path: Path) -> None:
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), "CSV files (*.csv)"))


@pytest.fixture
def demo_label_choices():
    """Label colours chosen for the demo dataset in the Data step, forgotten after the test."""
    from emonas_gui.label_prefs import LabelPrefs

    prefs = LabelPrefs.for_dataset(AppState().settings, "demo")
    prefs.set_colour(1, (250, 0, 250))
    prefs.set_visible(2, False)
    yield prefs
    prefs.settings.remove(prefs.key)


def test_results_run_exports_metrics_csv_then_cancel_half_way_keeps_it(qtbot, tmp_path, monkeypatch,
                                                                       demo_label_choices):
    run = tmp_path / "run"
    shutil.copytree(LEGACY / "run", run)
    errors: list[str] = []
    state = _state(errors)
    panel = ResultsPanel(state)
    qtbot.addWidget(panel)
    panel.show()
    state.set_run(run)
    qtbot.waitUntil(lambda: panel.case.count() > 0, timeout=LONG)
    panel.cand_a.setCurrentIndex(panel.cand_a.findData(4))  # the candidate whose weights were kept
    assert not panel.cancel_button.isVisible() and not panel.metrics_csv_button.isEnabled()

    qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.status.text().endswith(": done"), timeout=LONG)
    assert not errors
    headers = [panel.metrics.horizontalHeaderItem(c).text() for c in range(panel.metrics.columnCount())]
    labels = [panel.metrics.verticalHeaderItem(r).text() for r in range(panel.metrics.rowCount())]
    assert headers == ["#4 Dice", "#4 HD95 (mm)"] and len(labels) >= 2
    # the label colours and visibility chosen for the run's dataset (the demo) in the Data step
    for key in ("reference", "a"):
        assert panel.viewers[key].names_colours()[1][1] == (250, 0, 250)
        assert not panel.viewers[key].label_visible(2) and panel.viewers[key].label_visible(3)

    # Export CSV: the table's columns and rows, with a header, read back with the csv module
    target = tmp_path / "métrics.csv"  # a non-ASCII name and UTF-8 content
    _save_to(monkeypatch, target)
    with qtbot.waitSignal(panel.metrics_csv.saved, timeout=5000):
        qtbot.mouseClick(panel.metrics_csv_button, Qt.MouseButton.LeftButton)
    rows = _read_csv(target)
    assert rows[0] == ["label"] + headers
    assert [r[0] for r in rows[1:]] == labels
    for r, row in enumerate(rows[1:]):
        assert row[1:] == [panel.metrics.item(r, c).text() for c in range(len(headers))]
        assert 0.0 <= float(row[1]) <= 1.0
    # the context menu offers the same
    assert panel.metrics_csv.action in panel.metrics.actions()
    assert panel.metrics.contextMenuPolicy() == Qt.ContextMenuPolicy.ActionsContextMenu

    # run again, cancel half-way (the case opened, the candidate not yet loaded): nothing new is
    # shown, the panel stays usable
    shown, first = panel.result, panel.job
    panel.case.setCurrentIndex(panel.case.count() - 1)
    # the result arrives before the job's end does: Run is enabled again only once it has ended
    qtbot.waitUntil(lambda: panel.run_button.isEnabled(), timeout=LONG)
    qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    assert panel.job is not first  # a new job, not the ended one
    _pause_at_start(qtbot, panel.job)
    assert panel.cancel_button.isVisible() and panel.cancel_button.isEnabled() and not panel.run_button.isEnabled()
    qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert panel.status.text() == "cancelling\u2026" and not panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: panel.status.text() == "cancelled", timeout=LONG)
    qtbot.waitUntil(lambda: not panel.job.is_running(), timeout=10_000)
    assert panel.result is shown  # the earlier result stays on screen
    assert panel.run_button.isEnabled() and not panel.cancel_button.isVisible()
    assert not errors


def test_export_segment_cancel_half_way_keeps_the_label_maps_written(qtbot, tmp_path, monkeypatch):
    from engine.data import open_dataset

    model = tmp_path / "model"
    shutil.copytree(LEGACY / "model", model)
    scans = [str(c.image_paths[0]) for c in open_dataset("demo").cases[:3]]
    errors: list[str] = []
    panel = ExportPanel(_state(errors))
    qtbot.addWidget(panel)
    panel.show()
    panel.model_edit.setText(str(model))
    panel.add_scan_files(scans)
    out = tmp_path / "segmentations"
    panel.pred_out.setText(str(out))

    assert not panel.cancel_predict.isVisible()
    qtbot.mouseClick(panel.predict_button, Qt.MouseButton.LeftButton)
    seen = _pause_at(qtbot, panel.predict_job, lambda ev: ev.get("stage") == "case")  # while scan 1 is segmented
    assert panel.cancel_predict.isVisible() and not panel.predict_button.isEnabled()
    qtbot.mouseClick(panel.cancel_predict, Qt.MouseButton.LeftButton)
    started = [ev for ev in seen if ev.get("stage") == "case"]
    qtbot.waitUntil(lambda: panel.predict_status.text().startswith("cancelled"), timeout=LONG)
    qtbot.waitUntil(lambda: not panel.predict_job.is_running(), timeout=10_000)
    # the scans started are finished, the others are not started
    assert len(started) < 3 and len(panel.last_prediction["written"]) == len(started) == panel.results.count()
    assert sorted(p.name for p in out.glob("*.nii.gz")) == sorted(Path(w).name for w in panel.last_prediction["written"])
    assert panel.predict_status.text().startswith(f"cancelled: {len(started)} label map(s)")
    assert panel.predict_button.isEnabled() and not panel.cancel_predict.isVisible()
    assert not errors


def test_dataset_check_cancel_half_way_then_a_full_check(qtbot, msd_dataset, monkeypatch):
    errors: list[str] = []
    state = _state(errors)
    panel = DataPanel(state)
    qtbot.addWidget(panel)
    panel.show()
    panel.open_path(msd_dataset)
    qtbot.waitUntil(lambda: state.dataset is not None, timeout=60_000)
    assert panel.wait_until_ready()
    before = panel.problems()

    gate = Gate()
    real = data_mod.check_dataset_job

    def gated(root, skip_bad, progress=None, cancel=None):
        def report(done, total, case_id):
            progress(done, total, case_id)
            if done == 1:
                gate.hold()  # one case of three checked
        return real(root, skip_bad, report, cancel)

    monkeypatch.setattr(data_mod, "check_dataset_job", gated)
    assert not panel.cancel_check_button.isVisible()
    qtbot.mouseClick(panel.check_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(gate.reached.is_set, timeout=LONG)
    assert panel.checking() and panel.cancel_check_button.isVisible() and not panel.check_button.isEnabled()
    qtbot.mouseClick(panel.cancel_check_button, Qt.MouseButton.LeftButton)
    gate.open()
    qtbot.waitUntil(lambda: panel.check_status.text() == "cancelled", timeout=LONG)
    assert not panel.checking() and panel.check_button.isEnabled() and not panel.cancel_check_button.isVisible()
    assert panel.check_button.text() == "Check every voxel" and panel.problems() == before and not errors

    # usable afterwards: a check runs to the end
    monkeypatch.setattr(data_mod, "check_dataset_job", real)
    with qtbot.waitSignal(panel.check_finished, timeout=LONG) as sig:
        qtbot.mouseClick(panel.check_button, Qt.MouseButton.LeftButton)
    assert sig.args[0]["n_cases"] == 3 and panel.check_status.text() == "checked 3 usable case(s)"

