"""The monitor's widgets on hand-made candidates: Pareto scatter, candidate details, drawings."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.genome import PAPER_GENOMES, Genome, SearchSpace
from engine.network import count_parameters
from engine.run.records import CandidateRow
from emonas_gui.widgets.candidate_view import Candidate, CandidateView
from emonas_gui.widgets.curves import HypervolumePlot, LearningCurves
from emonas_gui.widgets.genome_diagram import GenomeDiagram
from emonas_gui.widgets.pareto_plot import ParetoPlot


def _candidates(n=8, seed=0):
    rng = np.random.default_rng(seed)
    space = SearchSpace(nf1=(8, 16), n_cells=(5, 7))
    out = []
    for i in range(n):
        g = space.sample(rng)
        p = count_parameters(g, 1, 4)
        curves = [{"epoch": e, "train_loss": 1 - 0.1 * e, "val_loss": 1 - 0.08 * e,
                   "val_dice": {"grey": 0.1 * e, "white": 0.12 * e}} for e in range(1, 4)]
        # the store's row record: JSON columns decoded
        out.append(Candidate.from_row(CandidateRow.from_dict({
            "id": i + 1, "genome": g.to_dict(), "status": "done", "generation": i // 4,
            "phase": "init" if i < 4 else "learning", "f1": float(rng.uniform(0.2, 0.9)),
            "f2": float(np.log(p)), "parameters": p,
            "metrics": {"dice": {"grey": 0.5, "white": 0.6}, "epochs": 3, "best_epoch": 3},
            "curves": curves,
        })))
    out.append(Candidate.from_row(CandidateRow.from_dict({"id": 99, "genome": out[0].genome.to_dict(),
                                                          "status": "failed", "error": "CUDA out of memory"})))
    return out


def _front(cands):
    ok = [c for c in cands if c.ok]
    return [c.id for c in ok if not any(
        (o.f1 <= c.f1 and o.parameters <= c.parameters) and (o.f1 < c.f1 or o.parameters < c.parameters)
        for o in ok)]


def test_candidate_from_store_row():
    c = _candidates()[0]
    assert isinstance(c.genome, Genome)
    assert c.dice == {"grey": 0.5, "white": 0.6}
    assert len(c.curves) == 3 and c.ok
    failed = Candidate.from_row(CandidateRow.from_dict({"id": 5, "genome": "not json", "status": "failed",
                                                        "error": "boom"}))
    assert failed.genome is None and not failed.ok and "boom" in failed.summary()
    # a picker's line gives a measured latency, never a predicted one
    assert c.choice_text(True) == f"* #{c.id}  f1 {c.f1:.3f}, {c.parameters:,} params"
    measured = replace(c, latency_ms=1412.4, latency_predicted=False)
    assert measured.choice_text() == f"#{c.id}  f1 {c.f1:.3f}, {c.parameters:,} params, 1,412 ms"
    assert replace(c, latency_ms=1412.4, latency_predicted=True).choice_text() == c.choice_text()
    assert "latency = 1412.4 ms" in measured.summary()


def test_pareto_plot_throttles_and_click_opens_candidate(qtbot):
    plot = ParetoPlot(throttle_ms=50)
    qtbot.addWidget(plot)
    plot.resize(600, 400)
    plot.show()
    cands = _candidates()
    front = _front(cands)
    for k in range(1, len(cands) + 1):  # many updates in a burst ...
        plot.set_candidates(cands[:k], _front(cands[:k]))
    qtbot.waitUntil(lambda: plot.redraws >= 1, timeout=2000)
    qtbot.wait(120)
    assert plot.redraws <= 2  # ... drawn at most twice
    assert sorted(plot.candidate_ids()) == [c.id for c in cands if c.ok]  # the failed one is not drawn
    assert set(plot.front_ids()) == set(front)
    x, y = plot.front_line.getData()
    assert len(x) == len(front)
    assert "candidate" in plot._tip(0, 0, front[0])
    assert "generation 1" in plot.plot.getPlotItem().titleLabel.text  # counted from 1 on screen, as in the CLI
    plot.set_colour_by("phase")
    assert "learning" in plot.plot.getPlotItem().titleLabel.text
    assert len(set(map(str, plot.scatter.data["brush"]))) >= 1
    plot.set_colour_by("generation")

    plot.plot.getPlotItem().vb.autoRange(padding=0.1)
    qtbot.wait(50)
    target = front[0]
    with qtbot.waitSignal(plot.candidate_clicked, timeout=2000) as sig:
        qtbot.mouseClick(plot.plot.viewport(), Qt.MouseButton.LeftButton, pos=plot.point_position(target))
    assert sig.args == [target]


def test_pareto_title_ends_before_the_save_button_at_any_width(qtbot):
    """The colour key is shortened as the plot narrows, never drawn under the Save plot button, and
    follows a resize; wide enough, the whole title shows."""
    plot = ParetoPlot(throttle_ms=0)
    qtbot.addWidget(plot)
    plot.show()
    cands = _candidates()
    label = plot.plot.getPlotItem().titleLabel

    def right_edge() -> float:
        return plot.plot.mapFromScene(label.item.mapRectToScene(label.item.boundingRect())).boundingRect().right()

    for colour in ("generation", "phase"):
        for width in (800, 300, 420, 510, 640):  # shrinking, then growing back
            plot.resize(width, 400)
            plot.set_candidates(cands, _front(cands))
            plot.set_colour_by(colour)
            qtbot.wait(20)  # the resize's refit runs once the layout has settled
            assert right_edge() < plot.save_button.geometry().left(), (colour, width, label.text)
            key = "generation" if colour == "generation" else "learning"
            assert key in label.text or "gen. 1" in label.text
            if width >= 640:
                assert label.text.startswith("Pareto front")
    plot.resize(300, 400)  # a resize alone, no new data, refits the title
    qtbot.waitUntil(lambda: right_edge() < plot.save_button.geometry().left(), timeout=2000)
    assert not label.text.startswith("Pareto front")


def test_pareto_axis_ticks_read_as_numbers(qtbot):
    """Parameter ticks as counts; GFLOPs and milliseconds as plain numbers, never in e-notation."""
    plot = ParetoPlot(throttle_ms=0)
    qtbot.addWidget(plot)
    ticks = [math.log10(v) for v in (0.5, 12.6, 794.3, 1000, 1258.9, 15849)]
    assert plot.axis.tickStrings(ticks, 1, 1) == ["0.5", "12.6", "794", "1k", "1.26k", "15.8k"]
    plot.set_x_axis("latency_ms")
    assert plot.axis.tickStrings(ticks, 1, 1) == ["0.5", "12.6", "794", "1,000", "1,260", "15,800"]


def test_pareto_axis_ticks_sit_at_round_values(qtbot):
    """A log axis places its ticks at round values: 800, 1,000, 1,200 ms, not 794, 1,000, 1,260."""
    plot = ParetoPlot(throttle_ms=0)
    qtbot.addWidget(plot)
    plot.set_x_axis("latency_ms")

    def labels(lo, hi, pixels):
        levels = plot.axis.tickValues(math.log10(lo), math.log10(hi), pixels)
        values = [v for _, vals in levels for v in vals]
        return plot.axis.tickStrings(values, 1, 1)

    assert labels(700, 1700, 400) == ["800", "1,000", "1,200", "1,400", "1,600"]  # within a decade: even steps
    assert labels(560, 1650, 260) == ["750", "1,000", "1,250", "1,500"]  # a narrow axis: the finest step that fits
    assert labels(19, 1471, 520) == ["20", "50", "100", "200", "500", "1,000"]  # over decades: 1-2-5
    assert labels(19, 1471, 260) == ["30", "100", "300", "1,000"]  # a narrow axis: fewer, still round
    plot.set_x_axis("parameters")
    assert labels(5_000, 2e8, 520) == ["10k", "100k", "1M", "10M", "100M"]
    assert labels(5_000, 2e8, 260) == ["10k", "1M", "100M"]
    plot.plot.setXRange(math.log10(700), math.log10(1700), padding=0)  # the axis the plot draws
    plot.set_x_axis("latency_ms")
    shown = plot.axis.tickValues(*plot.plot.getViewBox().viewRange()[0], 400)
    assert all(float(s.replace(",", "")) % 100 == 0 for s in plot.axis.tickStrings(shown[0][1], 1, 1))


def test_candidate_view_shows_genome_curves_and_metrics(qtbot):
    view = CandidateView()
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.show()
    c = _candidates()[2]
    view.set_candidate(c)
    assert view.genome_table.rowCount() == 10
    assert view.genome_table.item(7, 0).text() == "n_cells"
    assert view.genome_table.item(7, 1).text() == str(c.genome.n_cells)
    assert view.curves.n_epochs == 3 and view.curves.dice_labels() == ["grey", "white"]
    texts = [view.metrics_table.item(r, 0).text() for r in range(view.metrics_table.rowCount())]
    assert "validation Dice grey" in texts and "parameters" in texts
    view.set_candidate(None)
    assert view.genome_table.rowCount() == 0


@pytest.mark.parametrize("name", sorted(PAPER_GENOMES))
def test_genome_diagram_draws_cell_and_macro(qtbot, name):
    d = GenomeDiagram()
    qtbot.addWidget(d)
    d.resize(640, 280)
    empty = d.grab().toImage()
    d.set_genome(PAPER_GENOMES[name], 1, 3)
    img = d.grab().toImage()
    arr = np.array([[img.pixel(x, y) for x in range(0, 640, 4)] for y in range(0, 280, 4)])
    arr0 = np.array([[empty.pixel(x, y) for x in range(0, 640, 4)] for y in range(0, 280, 4)])
    # many distinct colours (op families, boxes, text) and different from the empty drawing
    assert len(np.unique(arr)) > 10
    assert (arr != arr0).mean() > 0.05


def test_hypervolume_plot(qtbot):
    hv = HypervolumePlot()
    qtbot.addWidget(hv)
    hv.set_history([1, 2, 3], [0.1, 0.3, 0.35])
    x, y = hv.points()
    assert list(x) == [1, 2, 3] and y[-1] == pytest.approx(0.35)
    lc = LearningCurves()
    qtbot.addWidget(lc)
    lc.set_curves([{"epoch": 1, "train_loss": 0.9, "val_loss": 0.95, "val_dice_grey": 0.2}])
    assert lc.dice_labels() == ["grey"]
