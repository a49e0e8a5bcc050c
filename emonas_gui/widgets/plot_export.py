"""Saving a pyqtgraph plot as a figure: PNG (a raster image) or SVG (a vector drawing for papers).

``save_plot(plot, path)`` writes the plot with pyqtgraph's exporters, the file type following the
suffix of ``path``. ``SavePlotButton(plot)`` is a small "Save plot" button that sits in the top
right corner of a ``pg.PlotWidget`` (it follows the widget's resizes) and asks where to save.
"""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtWidgets import QFileDialog, QToolButton

from emonas_gui.widgets import write_or_warn

#: file types a plot is saved as, by suffix; the file dialog offers them in this order
PLOT_FORMATS = {".png": "PNG image (*.png)", ".svg": "SVG drawing (*.svg)"}
#: width in pixels of a saved PNG at least (a small plot on screen still gives a usable figure)
MIN_PNG_WIDTH = 1200


def _plot_item(plot) -> pg.PlotItem:
    """The PlotItem of a PlotWidget, or ``plot`` itself when it is one."""
    return plot.getPlotItem() if isinstance(plot, pg.PlotWidget) else plot


def save_plot(plot, path: str | Path) -> Path:
    """Write ``plot`` (a ``pg.PlotWidget`` or ``pg.PlotItem``) to ``path``: ``.png`` or ``.svg``.

    Raises ``ValueError`` for another suffix and ``OSError`` when the file cannot be written.
    """
    from pyqtgraph.exporters import ImageExporter, SVGExporter

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in PLOT_FORMATS:
        raise ValueError(f"{path.name}: a plot is saved as {' or '.join(PLOT_FORMATS)}")
    item = _plot_item(plot)
    if suffix == ".png":
        exporter = ImageExporter(item)
        width = int(exporter.parameters()["width"])
        if width < MIN_PNG_WIDTH:
            # pyqtgraph keeps the aspect ratio when the width changes (and wants whole pixels)
            exporter.parameters()["width"] = MIN_PNG_WIDTH
        exporter.parameters()["height"] = int(exporter.parameters()["height"])
    else:
        exporter = SVGExporter(item)
    try:
        try:
            exporter.export(str(path))
        except ValueError:
            if suffix != ".svg":
                raise
            # pyqtgraph 0.14's SVG exporter cannot parse the path data newer Qt (6.8+) writes; Qt's
            # own SVG generator draws the same scene (less tidy markup, same picture)
            _render_svg(item, path)
    except OSError as exc:
        raise OSError(f"{path}: could not write the plot ({exc.strerror or exc})") from None
    if not path.is_file():  # ImageExporter reports a failed QImage.save by returning, not raising
        raise OSError(f"{path}: could not write the plot")
    return path


def _render_svg(item: pg.PlotItem, path: Path) -> None:
    """Draw ``item``'s part of its scene into an SVG file with ``QSvgGenerator``."""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    source = item.sceneBoundingRect()
    target = QRectF(0, 0, source.width(), source.height())
    generator = QSvgGenerator()
    generator.setFileName(str(path))
    generator.setSize(target.size().toSize())
    generator.setViewBox(target)
    generator.setTitle(path.stem)
    painter = QPainter()
    if not painter.begin(generator):
        raise OSError(f"{path}: could not write the plot")
    try:
        item.scene().render(painter, target, source)
    finally:
        painter.end()


class SavePlotButton(QToolButton):
    """A "Save plot" button in the top right corner of ``plot`` (a ``pg.PlotWidget``).

    A click asks for a file (PNG or SVG, by the chosen suffix) and saves the plot there; ``saved(str)``
    gives the path written, ``failed(str)`` a one-line message (also shown in a non-modal box).
    """

    saved = Signal(str)
    failed = Signal(str)

    def __init__(self, plot: pg.PlotWidget, name: str = "plot"):
        super().__init__(plot)
        self.plot = plot
        self.name = name
        self.setText("Save plot")
        self.setToolTip("save this plot as a PNG image or an SVG drawing")
        self.setCursor(Qt.CursorShape.ArrowCursor)
        self.setAutoRaise(False)
        self.clicked.connect(self.ask_and_save)
        self._follower = _CornerFollower(self)
        plot.installEventFilter(self._follower)
        self.place()
        self.last_path: Path | None = None

    def place(self) -> None:
        """Keep the button in the plot's top right corner."""
        self.adjustSize()
        self.move(max(0, self.plot.width() - self.width() - 6), 4)
        self.raise_()

    def ask_path(self) -> str:
        """The file the user chose ('' when cancelled); the filter's suffix is added when none was typed."""
        start = str(Path.home() / f"{self.name}.png")
        path, chosen = QFileDialog.getSaveFileName(self, "Save plot", start, ";;".join(PLOT_FORMATS.values()))
        if path and Path(path).suffix.lower() not in PLOT_FORMATS:
            suffix = next((s for s, f in PLOT_FORMATS.items() if f == chosen), ".png")
            path += suffix
        return path

    def ask_and_save(self) -> Path | None:
        """Ask where, then save; returns the path written, None when cancelled or failed."""
        path = self.ask_path()
        if not path:
            return None
        written = write_or_warn(self, "Save plot", lambda: save_plot(self.plot, path), self.saved, self.failed)
        if written is not None:
            self.last_path = written
        return written


class _CornerFollower(QObject):
    """Event filter: re-places its button whenever the plot it sits on is resized or shown."""

    def __init__(self, button: SavePlotButton):
        super().__init__(button)
        self._button = button

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.Type.Resize, QEvent.Type.Show):
            self._button.place()
        return False
