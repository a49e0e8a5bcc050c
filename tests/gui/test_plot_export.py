"""The Pareto and hypervolume plots have a visible "Save plot" button writing PNG and SVG."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QFileDialog

from emonas_gui.panels.monitor import MonitorPanel
from emonas_gui.widgets.candidate_view import Candidate
from emonas_gui.widgets.plot_export import save_plot

SVG = "{http://www.w3.org/2000/svg}"


def _candidates(n: int = 6) -> list[Candidate]:
    return [Candidate(id=i + 1, genome=None, status="done", f1=0.8 - 0.1 * i, f2=0.1 * i,
                      parameters=10_000 * (i + 1), generation=i // 2)
            for i in range(n)]


def _check_png(path: Path) -> None:
    img = QImage(str(path))
    assert not img.isNull() and img.width() >= 400 and img.height() >= 100
    # something drawn: more than a couple of colours in the image
    colours = {img.pixel(x, y) for x in range(0, img.width(), 7) for y in range(0, img.height(), 7)}
    assert len(colours) > 3


def _check_svg(path: Path, min_paths: int = 3) -> None:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    drawn = [e for e in root.iter() if e.tag in (f"{SVG}path", f"{SVG}polyline", f"{SVG}rect", f"{SVG}text")]
    assert len(drawn) >= min_paths


def test_monitor_plots_have_a_visible_save_button_writing_png_and_svg(qtbot, tmp_path, monkeypatch):
    monitor = MonitorPanel()
    qtbot.addWidget(monitor)
    monitor.resize(1200, 800)
    monitor.show()
    cands = _candidates()
    monitor.pareto.set_candidates(cands, [c.id for c in cands])
    monitor.pareto.flush()
    monitor.hypervolume.set_history([1, 2, 3, 4], [0.1, 0.3, 0.35, 0.5])
    qtbot.wait(20)
    for plot, name in ((monitor.pareto, "pareto"), (monitor.hypervolume, "hv")):
        button = plot.save_button
        assert button.isVisible() and button.text() == "Save plot"
        host = button.parentWidget()
        assert button.geometry().right() <= host.width() and button.geometry().top() >= 0  # on the plot
        for suffix, check in ((".png", _check_png), (".svg", _check_svg)):
            target = tmp_path / f"{name}{suffix}"
            monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, t=target, **k: (str(t), ""))
            with qtbot.waitSignal(button.saved, timeout=10_000) as sig:
                qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
            assert sig.args == [str(target)]
            check(target)


def test_save_plot_chooses_the_type_by_suffix_and_refuses_others(qtbot, tmp_path, monkeypatch):
    monitor = MonitorPanel()
    qtbot.addWidget(monitor)
    monitor.hypervolume.set_history([1, 2, 3], [0.2, 0.4, 0.6])
    # the suffix typed decides; a name without one gets the chosen filter's suffix
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(tmp_path / "fig"), "SVG drawing (*.svg)"))
    written = monitor.hypervolume.save_button.ask_and_save()
    assert written == tmp_path / "fig.svg"
    _check_svg(written)
    with pytest.raises(ValueError):
        save_plot(monitor.hypervolume, tmp_path / "fig.jpg")
    with pytest.raises(OSError):
        save_plot(monitor.hypervolume, tmp_path / "missing" / "fig.png")


def test_learning_curves_save_each_plot(qtbot, tmp_path):
    from emonas_gui.widgets.curves import LearningCurves

    curves = LearningCurves()
    qtbot.addWidget(curves)
    curves.resize(600, 500)
    curves.show()
    curves.set_curves([{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "val_dice": {"tissue": 0.2 * e}}
                       for e in range(1, 5)])
    assert [b.isVisible() for b in curves.save_buttons] == [True, True]
    for button, name in zip(curves.save_buttons, ("loss", "dice")):
        _check_png(save_plot(button.plot, tmp_path / f"{name}.png"))
        _check_svg(save_plot(button.plot, tmp_path / f"{name}.svg"))
