"""A user's whole path through the app on the demo data, with a real (tiny) search.

Configure a search by clicking, start it, see points appear on the Pareto plot, click one and see
its details, stop, reopen the run in a fresh panel and resume it to the end, run a candidate on a
validation case next to the reference, export a model, and segment a scan with it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt

from engine.data import open_dataset
from engine.export.package import verify_model_folder
from engine.run.store import RunStore
from emonas_gui.panels.export import ExportPanel
from emonas_gui.panels.results import ResultsPanel
from emonas_gui.panels.search import SearchPanel
from emonas_gui.state import AppState

CHEAP_OPS = ("conv3d_1x1x1", "conv2d_3x3x1", "identity")
LONG = 420_000  # ms: a candidate trains in seconds, but the CI machine may be busy


def _configure(panel: SearchPanel, tmp_path: Path) -> None:
    # the one setting the form has no widget for (steps per epoch) comes from a TOML file
    toml = tmp_path / "tiny.toml"
    toml.write_text("[training.extra]\niterations_per_epoch = 2\n")
    assert panel.load_config(toml)
    f = panel.form
    for op, cb in f.op_checks.items():
        cb.setChecked(op in CHEAP_OPS)
    for n, cb in f.cell_checks.items():
        cb.setChecked(n == 5)
    for n, cb in f.nf1_checks.items():
        cb.setChecked(n == 8)
    f.population.setValue(2)
    f.neighbours.setValue(2)
    f.generations.setValue(2)  # a second generation: a pause always lands before the end
    f.epochs.setValue(1)
    f.patience.setValue(1)
    f.device.setCurrentText("cpu")
    assert f.problem.text() == ""


def test_search_watch_stop_reopen_resume_results_export(qtbot, tmp_path):
    state = AppState()
    state.set_dataset(None, "demo")
    errors: list[str] = []
    state.error.connect(errors.append)

    panel = SearchPanel(state)
    qtbot.addWidget(panel)
    panel.resize(1400, 900)
    panel.show()
    _configure(panel, tmp_path)
    qtbot.waitUntil(lambda: "candidates" in panel.cost_label.text(), timeout=60_000)
    assert "At most 4 candidates" in panel.cost_label.text()

    run_dir = tmp_path / "run"
    panel.run_edit.setText(str(run_dir))
    qtbot.mouseClick(panel.start_button, Qt.MouseButton.LeftButton)
    assert panel.is_running() and panel.stop_button.isEnabled() and not panel.start_button.isEnabled()

    # the first finished candidate appears on the Pareto plot
    plot = panel.monitor.pareto
    qtbot.waitUntil(lambda: len(plot.candidate_ids()) >= 1, timeout=LONG)
    assert state.run_dir == run_dir
    first = plot.candidate_ids()[0]

    # clicking it opens its details
    plot.plot.getPlotItem().vb.autoRange(padding=0.3)
    qtbot.wait(50)
    with qtbot.waitSignal(panel.monitor.candidate_opened, timeout=5000):
        qtbot.mouseClick(plot.plot.viewport(), Qt.MouseButton.LeftButton, pos=plot.point_position(first))
    details = panel.monitor.details
    assert details.candidate.id == first
    assert details.genome_table.item(8, 1).text() == "8"  # nf1
    assert details.curves.n_epochs == 1
    assert any(details.metrics_table.item(r, 0).text().startswith("validation Dice")
               for r in range(details.metrics_table.rowCount()))

    # pause: the worker blocks at its next check (at the latest before the second generation)
    qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Paused" in panel.state_label.text(), timeout=LONG)
    assert panel.resume_button.isEnabled() and not panel.pause_button.isEnabled()
    assert panel.stop_button.isEnabled() and panel.is_running()
    with RunStore.open_readonly(run_dir) as store:
        done_while_paused = store.counts()["done"]
    qtbot.wait(500)
    with RunStore.open_readonly(run_dir) as store:
        assert store.counts()["done"] == done_while_paused  # nothing moves while paused

    # stop; the run stays resumable
    qtbot.mouseClick(panel.stop_button, Qt.MouseButton.LeftButton)
    # the result and the job's end are two signals from the worker: the buttons follow the second
    qtbot.waitUntil(lambda: panel.summary is not None and not panel.is_running(), timeout=LONG)
    assert panel.summary["status"] == "paused"
    assert panel.resume_button.isEnabled()
    panel.close()

    # reopen the run in a fresh panel (as after restarting the app) and resume it to the end
    panel2 = SearchPanel(state)
    qtbot.addWidget(panel2)
    panel2.resize(1400, 900)
    panel2.show()
    assert panel2.open_run(run_dir)
    panel2.monitor.pareto.flush()
    assert first in panel2.monitor.pareto.candidate_ids()
    assert panel2.resume_button.isEnabled()
    qtbot.mouseClick(panel2.resume_button, Qt.MouseButton.LeftButton)
    shown = []  # what the panel said after each event (its own slot runs first)
    panel2.job.event.connect(lambda ev: shown.append((ev.get("kind"), panel2.state_label.text())))
    qtbot.waitUntil(lambda: panel2.summary is not None and not panel2.is_running(), timeout=LONG)
    assert panel2.summary["status"] == "finished", panel2.summary
    # once all are trained, the front's networks are timed (parameters objective): the panel says so
    timing = [text for kind, text in shown if kind == "latency"]
    assert timing and timing[0].startswith("All candidates trained. Measuring the latency of the front's networks on cpu")
    assert all(f["latency_ms"] > 0 and not f["latency_predicted"] for f in panel2.summary["front"])
    with RunStore.open_readonly(run_dir) as store:
        counts = store.counts()
    assert counts["done"] + counts["failed"] == 4 and counts["done"] >= 1
    panel2.monitor.refresh()
    panel2.monitor.pareto.flush()
    assert len(panel2.monitor.pareto.candidate_ids()) == counts["done"]
    assert "finished" in panel2.state_label.text().lower()
    panel2.close()

    # Results: a candidate on a validation case, next to the reference
    results = ResultsPanel(state)
    qtbot.addWidget(results)
    results.resize(1200, 900)
    results.show()
    qtbot.waitUntil(lambda: results.case.count() > 0 and results.cand_a.count() > 0, timeout=60_000)
    qtbot.mouseClick(results.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: results.result is not None, timeout=LONG)
    res = results.result
    cid = results.cand_a.currentData()
    assert res["predictions"][cid].shape == res["reference"].shape
    assert results.metrics.rowCount() == len(res["labels"]) - 1
    dice = float(results.metrics.item(0, 0).text())
    assert 0.0 <= dice <= 1.0
    ref_img = results.viewers["reference"].render_image("axial")
    pred_img = results.viewers["a"].render_image("axial")
    assert ref_img.std() > 0 and pred_img.std() > 0  # real pixels
    assert results.viewers["a"].position() == results.viewers["reference"].position()
    results.viewers["reference"].scroll("axial", 2)
    assert results.viewers["a"].position() == results.viewers["reference"].position()  # synchronized slices

    # Export the best candidate, then segment a scan with the model folder
    export = ExportPanel(state)
    qtbot.addWidget(export)
    export.resize(1200, 800)
    export.show()
    assert export.candidate.count() == counts["done"]
    model_dir = tmp_path / "model"
    export.out_edit.setText(str(model_dir))
    export.fmt_ts.setChecked(False)
    qtbot.mouseClick(export.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: export.last_export is not None or bool(errors), timeout=LONG)
    assert not errors, errors
    meta = verify_model_folder(model_dir)
    assert "model.onnx" in meta["files"] and str(model_dir) in export.export_status.text()

    scan = open_dataset("demo").cases[0].image_paths[0]
    export.add_scan_files([str(scan)])
    export.pred_out.setText(str(tmp_path / "seg"))
    assert export.model_edit.text() == str(model_dir)
    qtbot.mouseClick(export.predict_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: export.last_prediction is not None or bool(errors), timeout=LONG)
    assert not errors, errors
    written = Path(export.last_prediction["written"][0])
    assert written.is_file() and written.name == Path(scan).name
    qtbot.waitUntil(lambda: export.viewer.labels() is not None, timeout=60_000)
    assert export.viewer.shape() is not None and export.viewer.render_image("axial").std() > 0
    assert errors == []
    json.dumps(panel2.summary)  # plain data

    # the same views from the command line (as `main.py --screenshot` uses them): --candidate A,B
    from emonas_gui.app import build_window, parse_args

    ids = [export.candidate.itemData(i) for i in range(min(2, export.candidate.count()))]
    win = build_window(parse_args(["--run", str(run_dir), "--tab", "results", "--candidate", ",".join(map(str, ids))]))
    qtbot.addWidget(win)
    win_errors: list[str] = []
    win.state.error.connect(win_errors.append)
    win.show()
    shown = win.panels["results"]
    assert shown.wait_until_ready(LONG)
    assert shown.result is not None and list(shown.result["predictions"]) == ids
    assert shown.metrics.columnCount() == 2 * len(ids) and win_errors == []
    win.show_step("search")
    win.panels["search"].show_candidate([ids[-1]])
    assert win.panels["search"].monitor.details.candidate.id == ids[-1]
    win.panels["search"].show_candidate([9999])
    assert win_errors and "candidate 9999 is not a candidate" in win_errors[-1]
    # File > Open run log: the search the app ran (paused, then resumed) wrote RUN/search.log
    from test_app_main import _UrlCatcher

    with _UrlCatcher() as urls:
        win.act_open_log.trigger()
    assert [Path(u.toLocalFile()) for u in urls] == [run_dir / "search.log"]
    text = (run_dir / "search.log").read_text()
    assert "search paused" in text and "search finished" in text
    assert len(set(re.findall(r"candidate (\d+) done", text))) == counts["done"]
    win.close()


def test_bad_config_and_occupied_run_folder_are_readable_errors(qtbot, tmp_path):
    state = AppState()
    errors: list[str] = []
    state.error.connect(errors.append)
    panel = SearchPanel(state)
    qtbot.addWidget(panel)
    bad = tmp_path / "bad.toml"
    bad.write_text("[samea]\ngenerations = 0\n")
    assert not panel.load_config(bad)
    assert errors and "samea.generations" in errors[-1] and "\n" not in errors[-1]

    # a folder that already holds a run cannot be started over
    RunStore.create(tmp_path / "taken", {"config": {}}).close()
    panel.run_edit.setText(str(tmp_path / "taken"))
    assert not panel.start()
    assert "a run exists here already" in errors[-1]
    assert not panel.is_running()
    # a folder that is not a run cannot be opened
    assert not panel.open_run(tmp_path)
    assert "not a run directory" in errors[-1]
    np.testing.assert_equal(panel.resume_button.isEnabled(), False)
