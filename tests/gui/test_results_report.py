"""The Results step overlays a run's report (searched front and U-Net family on the test cases) on its
Pareto plot: found beside the run or opened, read off the GUI thread."""

from __future__ import annotations

import json
import math

from engine.run.store import RunStore
from emonas_gui.panels.results import ResultsPanel, read_run_report
from emonas_gui.state import AppState


def _model(name, kind, budget, params, ms, dice, candidate=None):
    return {"model": name, "kind": kind, "budget": budget, "candidate": candidate, "parameters": params,
            "cpu_ms": ms, "test_dice": dice}


def _write_report(folder, run, models):
    folder.mkdir(parents=True)
    doc = {"run": str(run), "run_path": str(run.resolve()), "out": str(folder), "models": models,
           "comparison": {"planes": {}, "verdict": ["In (test Dice, parameters) the searched front is ahead."]}}
    (folder / "report.json").write_text(json.dumps(doc))
    return folder / "report.json"


def test_results_overlays_the_family_of_the_runs_report(qtbot, tmp_path):
    run = tmp_path / "run"
    RunStore.create(run, {"config": {"dataset": "demo"}}).close()
    family = [_model(f"unet_w{w}_l2_{b}", "family", b, 1000 * w, 2.0 * w, 0.5 + w / 100, None)
              for w in (4, 8, 16, 32) for b in ("epochs", "time")]
    models = [_model("emonas#3", "searched", None, 20000, 9.0, 0.7, 3), *family]
    _write_report(tmp_path / "report", run, models)
    _write_report(tmp_path / "other", tmp_path / "another_run", models[:1])  # another run's: not taken
    state = AppState()
    panel = ResultsPanel(state)
    qtbot.addWidget(panel)
    panel.resize(1200, 800)
    panel.show()
    plot = panel.report_plot
    assert not plot.isVisible()  # no report yet: no empty plot
    state.set_run(run)
    qtbot.waitUntil(lambda: panel.report is not None, timeout=30_000)
    assert "searched front is ahead" in panel.report_label.text()
    assert plot.isVisible()
    title = plot.plot.getPlotItem().titleLabel
    assert title.text.startswith("Test cases")
    for budget, name in (("epochs", "U-Net family, same epochs"), ("time", "U-Net family, same wall time")):
        want = sorted((math.log10(m["parameters"]), 1 - m["test_dice"]) for m in family if m["budget"] == budget)
        assert sorted(plot.overlay_points(name)) == [tuple(map(float, p)) for p in want]
    assert plot.overlay_points("searched front (test)") == [(math.log10(20000), 1 - 0.7)]
    panel.report_axis.setCurrentIndex(panel.report_axis.findData("cpu_ms"))  # CPU time on the x-axis
    assert sorted(x for x, _ in plot.overlay_points("U-Net family, same epochs")) == \
        sorted(math.log10(2.0 * w) for w in (4, 8, 16, 32))
    assert title.text.startswith("Test cases")  # another x-axis keeps the title (no colour key here)
    state.set_run(None)
    assert panel.report is None and plot.overlay_points("U-Net family, same epochs") == []
    assert not plot.isVisible()
    panel.shutdown()


def test_a_report_of_another_run_is_refused(tmp_path):
    import pytest

    from engine.errors import DataError

    run = tmp_path / "run"
    RunStore.create(run, {"config": {"dataset": "demo"}}).close()
    other = _write_report(tmp_path / "other", tmp_path / "another_run", [])
    with pytest.raises(DataError, match="reports on the run"):
        read_run_report(run, other)
    assert read_run_report(run) is None
