"""Three linked orthogonal slice views with a label overlay (pyqtgraph ``ImageItem``).

Widget API (:class:`SliceViewer`), reusable wherever a scan is shown (Data, Results, Export)::

    viewer = SliceViewer(parent=None, layout="grid" | "row", extra=None)   # extra: 4th grid cell (3D view)
    viewer.set_volume(image, spacing, channel_names=None)  # image (X, Y, Z) or (C, X, Y, Z), RAS-like axes
    viewer.set_channel(index)                              # modality switch
    viewer.set_labels(labels, names_colours)               # labels (X, Y, Z) ints or None;
                                                           # names_colours {value: (name, (r, g, b))}
    viewer.set_label_visible(value, visible); viewer.set_opacity(0.0 .. 1.0)
    viewer.set_window(level, width); viewer.window() -> (level, width)
    viewer.presets() -> list[str]; viewer.apply_preset(name)
    viewer.set_position((i, j, k)); viewer.position() -> (i, j, k)      # crosshair, in voxels
    viewer.scroll(view_name, steps)                        # move one view's slice ("axial", ...)
    viewer.link_to(other)                                  # same crosshair and zoom in both viewers
    viewer.views: dict[str, OrthoView]                     # "axial", "coronal", "sagittal"
    viewer.save_png(path); viewer.views["axial"].save_png(path); viewer.render_image(name) -> (H, W, 3)
    Signals: position_changed(tuple), window_changed(float, float), cursor_info(str)

Axes: the arrays are indexed (X, Y, Z) with X towards the patient's right, Y anterior and Z superior
(the data panel reorients scans to the closest RAS before showing them). Each view shows millimetres
(``spacing``), so anisotropic scans keep their physical aspect ratio.

Mouse, as in ITK-SNAP: left click or drag moves the crosshair; right drag changes window (left/right)
and level (up/down); wheel scrolls slices (Shift: 5 at a time); Ctrl+wheel zooms; middle drag pans;
double click resets the zoom. Keys: Up/Down, Page Up/Page Down scroll slices.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

log = logging.getLogger(__name__)

# view name -> (slice axis, horizontal axis, vertical axis, (left, right, bottom, top) letters)
VIEW_AXES = {
    "axial": (2, 0, 1, ("L", "R", "P", "A")),
    "coronal": (1, 0, 2, ("L", "R", "I", "S")),
    "sagittal": (0, 1, 2, ("P", "A", "I", "S")),
}
VIEW_NAMES = ("axial", "coronal", "sagittal")
VIEW_BACKGROUND = (12, 12, 14)
CROSSHAIR_COLOUR = (255, 215, 0, 170)

# Classic CT windows (level, width) in Hounsfield units.
CT_PRESETS = {"CT brain": (40.0, 80.0), "CT soft tissue": (40.0, 400.0), "CT lung": (-600.0, 1500.0),
              "CT bone": (400.0, 1800.0)}

DEFAULT_PALETTE = [(230, 80, 70), (80, 180, 90), (70, 130, 230), (240, 200, 60), (180, 90, 200),
                   (60, 200, 200), (240, 140, 60), (150, 150, 150), (250, 120, 180), (120, 90, 50)]


def default_colour(value: int) -> tuple[int, int, int]:
    """The colour given to label ``value`` when the caller names none."""
    return DEFAULT_PALETTE[(int(value) - 1) % len(DEFAULT_PALETTE)]


def names_colours_for(labels: Mapping[str, int]) -> dict[int, tuple[str, tuple[int, int, int]]]:
    """``{value: (name, colour)}`` for a dataset's ``{name: value}`` labels, background left out."""
    return {int(v): (str(n), default_colour(int(v))) for n, v in labels.items() if int(v) != 0}


class _SliceViewBox(pg.ViewBox):
    """A ViewBox whose mouse gestures are those of a clinical viewer (see the module docstring)."""

    def __init__(self, view: "OrthoView"):
        super().__init__(lockAspect=True, enableMenu=False, invertY=False)
        self._view = view

    def mouseClickEvent(self, ev):  # noqa: N802 - Qt's name
        if ev.button() == Qt.MouseButton.LeftButton:
            ev.accept()
            if ev.double():
                self.autoRange(padding=0.02)
            else:
                self._view._point_at(self.mapSceneToView(ev.scenePos()))
        else:
            super().mouseClickEvent(ev)

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802 - Qt's name
        button = ev.button()
        if button == Qt.MouseButton.LeftButton:
            ev.accept()
            self._view._point_at(self.mapSceneToView(ev.scenePos()))
        elif button == Qt.MouseButton.RightButton:
            ev.accept()
            delta = ev.screenPos() - ev.lastScreenPos()
            self._view._window_drag(float(delta.x()), float(delta.y()))
        elif button == Qt.MouseButton.MiddleButton:
            ev.accept()
            tr = self.childGroup.transform()
            tr = pg.functions.invertQTransform(tr)
            shift = tr.map(ev.pos()) - tr.map(ev.lastPos())
            self.translateBy(x=-shift.x(), y=-shift.y())
        else:
            ev.ignore()

    def wheelEvent(self, ev, axis=None):  # noqa: N802 - Qt's name
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        ev.accept()
        steps = 1 if ev.delta() > 0 else -1
        if ev.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            steps *= 5
        self._view.viewer.scroll(self._view.name, steps)


class OrthoView(pg.GraphicsView):
    """One slice view (axial, coronal or sagittal) of a :class:`SliceViewer`."""

    def __init__(self, viewer: "SliceViewer", name: str):
        super().__init__(background=VIEW_BACKGROUND)
        self.viewer = viewer
        self.name = name
        self.slice_axis, self.h_axis, self.v_axis, letters = VIEW_AXES[name]
        self.box = _SliceViewBox(self)
        self.setCentralItem(self.box)
        self.image_item = pg.ImageItem(axisOrder="col-major")
        self.overlay_item = pg.ImageItem(axisOrder="col-major")
        self.overlay_item.setZValue(10)
        self.box.addItem(self.image_item)
        self.box.addItem(self.overlay_item)
        pen = pg.mkPen(CROSSHAIR_COLOUR, width=1)
        self.h_line = pg.InfiniteLine(angle=90, movable=False, pen=pen)
        self.v_line = pg.InfiniteLine(angle=0, movable=False, pen=pen)
        for line in (self.h_line, self.v_line):
            line.setZValue(20)
            self.box.addItem(line, ignoreBounds=True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(120, 120)
        style = "color: #e8e8e8; background: transparent; font-weight: bold;"
        self._letters = []
        for text in letters:
            lab = QLabel(text, self)
            lab.setStyleSheet(style)
            lab.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
            self._letters.append(lab)
        self.title = QLabel(name.capitalize(), self)
        self.title.setStyleSheet("color: #f0f0f0; background: rgba(0,0,0,110); padding: 1px 4px;")
        self.title.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self._has_image = False

    # -- events from the view box ---------------------------------------------------------------
    def _point_at(self, point) -> None:
        self.viewer._point_in_view(self, float(point.x()), float(point.y()))

    def _window_drag(self, dx: float, dy: float) -> None:
        self.viewer._window_drag(dx, dy, max(50, self.width()), max(50, self.height()))

    def keyPressEvent(self, ev):  # noqa: N802 - Qt's name
        step = {Qt.Key.Key_Up: 1, Qt.Key.Key_Down: -1, Qt.Key.Key_PageUp: 5,
                Qt.Key.Key_PageDown: -5}.get(Qt.Key(ev.key()))
        if step is None:
            super().keyPressEvent(ev)
            return
        ev.accept()
        self.viewer.scroll(self.name, step)

    def resizeEvent(self, ev):  # noqa: N802 - Qt's name
        super().resizeEvent(ev)
        if not getattr(self, "_letters", None):  # pyqtgraph resizes before __init__ is done
            return
        w, h = self.width(), self.height()
        left, right, bottom, top = self._letters
        for lab in self._letters:
            lab.adjustSize()
        left.move(4, h // 2 - left.height() // 2)
        right.move(w - right.width() - 4, h // 2 - right.height() // 2)
        top.move(w // 2 - top.width() // 2, 2)
        bottom.move(w // 2 - bottom.width() // 2, h - bottom.height() - 2)
        self.title.adjustSize()
        self.title.move(4, 2)

    # -- output ---------------------------------------------------------------------------------
    def render_image(self) -> np.ndarray:
        """What the view shows as an (H, W, 3) uint8 array."""
        return qimage_to_array(self.grab().toImage())

    def save_png(self, path: str | Path) -> Path:
        """Save the view as a PNG file."""
        path = Path(path)
        if not self.grab().save(str(path), "PNG"):
            raise OSError(f"{path}: could not write PNG")
        return path


def qimage_to_array(image: QImage) -> np.ndarray:
    """A QImage as an (H, W, 3) uint8 RGB array."""
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    w, h, bpl = image.width(), image.height(), image.bytesPerLine()
    buf = np.frombuffer(image.constBits(), dtype=np.uint8, count=bpl * h).reshape(h, bpl)
    return buf[:, : 3 * w].reshape(h, w, 3).copy()


class SliceViewer(QWidget):
    """Three linked orthogonal slice views of one scan with a label overlay (see the module docstring)."""

    position_changed = Signal(tuple)
    window_changed = Signal(float, float)
    cursor_info = Signal(str)

    def __init__(self, parent: QWidget | None = None, layout: str = "grid", extra: QWidget | None = None):
        super().__init__(parent)
        self.views: dict[str, OrthoView] = {name: OrthoView(self, name) for name in VIEW_NAMES}
        self._volume: np.ndarray | None = None  # (C, X, Y, Z)
        self._spacing = (1.0, 1.0, 1.0)
        self._channel = 0
        self._channel_names: list[str] = []
        self._windows: dict[int, tuple[float, float]] = {}
        self._stats: dict[int, dict[str, float]] = {}
        self._labels: np.ndarray | None = None
        self._names_colours: dict[int, tuple[str, tuple[int, int, int]]] = {}
        self._hidden: set[int] = set()
        self._lut = np.zeros((1, 4), np.uint8)
        self._opacity = 0.5
        self._pos = (0, 0, 0)
        self._linked: list[SliceViewer] = []
        self._syncing = False

        self.info = QLabel("No scan", self)
        self.info.setObjectName("sliceInfo")
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(2)
        if layout == "row":
            grid = QHBoxLayout()
            grid.setSpacing(2)
            for name in VIEW_NAMES:
                grid.addWidget(self.views[name])
            if extra is not None:
                grid.addWidget(extra)
        else:
            grid = QGridLayout()
            grid.setSpacing(2)
            grid.addWidget(self.views["axial"], 0, 0)
            grid.addWidget(self.views["sagittal"], 0, 1)
            grid.addWidget(self.views["coronal"], 1, 0)
            if extra is not None:
                grid.addWidget(extra, 1, 1)
        box.addLayout(grid, 1)
        box.addWidget(self.info)

    # -- data -----------------------------------------------------------------------------------
    def set_volume(self, image: np.ndarray | None, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   channel_names: Sequence[str] | None = None) -> None:
        """Show a scan: ``image`` (X, Y, Z) or (C, X, Y, Z), voxel size ``spacing`` in mm.

        The crosshair moves to the centre, each channel gets an automatic window (0.5-99.5 %).
        ``None`` clears the viewer.
        """
        if image is None:
            self._volume = None
            self._labels = None
            for v in self.views.values():
                v.image_item.clear()
                v.overlay_item.clear()
                v._has_image = False
            self.info.setText("No scan")
            return
        arr = np.asarray(image)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or min(arr.shape[1:]) < 1:
            raise ValueError(f"expected an (X, Y, Z) or (C, X, Y, Z) image, got shape {arr.shape}")
        self._volume = arr
        self._spacing = tuple(float(s) for s in spacing)
        self._channel_names = list(channel_names) if channel_names else [f"channel {i}" for i in range(arr.shape[0])]
        self._channel = 0
        self._stats = {c: _intensity_stats(arr[c]) for c in range(arr.shape[0])}
        self._windows = {c: self._auto_window(c) for c in range(arr.shape[0])}
        if self._labels is not None and self._labels.shape != arr.shape[1:]:
            self._labels = None
        self._pos = tuple(int(s) // 2 for s in arr.shape[1:])
        for view in self.views.values():
            self._place_view(view)
        self._refresh_all()
        for view in self.views.values():
            view.box.autoRange(padding=0.02)
        self.position_changed.emit(self._pos)

    def shape(self) -> tuple[int, int, int] | None:
        """Spatial shape (X, Y, Z) of the shown scan, or None."""
        return None if self._volume is None else tuple(self._volume.shape[1:])

    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) of the shown scan."""
        return self._spacing

    def channel_names(self) -> list[str]:
        """Names of the scan's channels (modalities)."""
        return list(self._channel_names)

    def set_channel(self, index: int) -> None:
        """Show channel ``index`` (modality switch); each channel keeps its own window."""
        if self._volume is None:
            return
        index = int(index)
        if not 0 <= index < self._volume.shape[0]:
            raise IndexError(f"channel {index} out of range (scan has {self._volume.shape[0]})")
        self._channel = index
        self._refresh_all()
        self.window_changed.emit(*self._windows[index])

    def channel(self) -> int:
        """Index of the shown channel."""
        return self._channel

    def set_labels(self, labels: np.ndarray | None,
                   names_colours: Mapping[int, tuple[str, tuple[int, int, int]]] | None = None) -> None:
        """Overlay a label map (X, Y, Z) of integer values; ``None`` removes it.

        ``names_colours`` maps each label value to ``(name, (r, g, b))``; values it leaves out are not
        drawn. Without it, every value present gets a default colour (this scans the volume).
        Background (0) is transparent.
        """
        if labels is None:
            self._labels = None
            self._refresh_all()
            return
        lab = np.asarray(labels)
        if self._volume is not None and lab.shape != self._volume.shape[1:]:
            raise ValueError(f"label map shape {lab.shape} differs from the scan's {self._volume.shape[1:]}")
        if lab.dtype.kind not in "iub":
            lab = np.rint(lab).astype(np.int32)
        self._labels = lab
        # uint8 maps index a 256-entry colour table directly; wider types are scanned once for the size
        self._lut_size = 256 if lab.dtype.itemsize == 1 else int(max(int(lab.max(initial=0)), 0)) + 1
        self._names_colours = dict(names_colours or {})
        if names_colours is None:  # nothing named: colour every value present
            for v in _present_values(lab):
                self._names_colours.setdefault(v, (f"label {v}", default_colour(v)))
        self._rebuild_lut()
        self._refresh_all()

    def labels(self) -> np.ndarray | None:
        """The overlaid label map (X, Y, Z), or None."""
        return self._labels

    def names_colours(self) -> dict[int, tuple[str, tuple[int, int, int]]]:
        """``{value: (name, colour)}`` of the overlay."""
        return dict(self._names_colours)

    def set_label_visible(self, value: int, visible: bool) -> None:
        """Show or hide one label of the overlay."""
        (self._hidden.discard if visible else self._hidden.add)(int(value))
        self._rebuild_lut()
        self._refresh_all()

    def set_hidden_labels(self, values: Iterable[int]) -> None:
        """Hide exactly the labels ``values`` (every other label shows)."""
        self._hidden = {int(v) for v in values}
        self._rebuild_lut()
        self._refresh_all()

    def label_visible(self, value: int) -> bool:
        """Whether label ``value`` is shown."""
        return int(value) not in self._hidden

    def set_label_colour(self, value: int, colour: tuple[int, int, int]) -> None:
        """Change the colour of one label."""
        name = self._names_colours.get(int(value), (f"label {value}", colour))[0]
        self._names_colours[int(value)] = (name, tuple(int(c) for c in colour))
        self._rebuild_lut()
        self._refresh_all()

    def set_opacity(self, opacity: float) -> None:
        """Opacity of the label overlay, 0 (invisible) .. 1 (opaque)."""
        self._opacity = float(min(1.0, max(0.0, opacity)))
        for view in self.views.values():
            view.overlay_item.setOpacity(self._opacity)

    def opacity(self) -> float:
        """Opacity of the label overlay."""
        return self._opacity

    # -- window / level -------------------------------------------------------------------------
    def window(self) -> tuple[float, float]:
        """``(level, width)`` of the shown channel."""
        return self._windows.get(self._channel, (0.5, 1.0))

    def set_window(self, level: float, width: float) -> None:
        """Set level (centre) and width of the grey-value window of the shown channel."""
        self._windows[self._channel] = (float(level), max(float(width), 1e-6))
        self._apply_window()
        self.window_changed.emit(*self._windows[self._channel])

    def presets(self) -> list[str]:
        """Names of the window presets that suit the shown channel."""
        names = ["Auto (0.5-99.5 %)", "Full range", "Narrow (5-95 %)"]
        stats = self._stats.get(self._channel)
        if stats and stats["min"] < -500:  # Hounsfield units: CT
            names += list(CT_PRESETS)
        return names

    def apply_preset(self, name: str) -> None:
        """Apply a window preset by name (see :meth:`presets`)."""
        stats = self._stats.get(self._channel)
        if stats is None:
            return
        if name in CT_PRESETS:
            self.set_window(*CT_PRESETS[name])
            return
        lo, hi = {"Auto (0.5-99.5 %)": (stats["p005"], stats["p995"]),
                  "Full range": (stats["min"], stats["max"]),
                  "Narrow (5-95 %)": (stats["p5"], stats["p95"])}[name]
        self.set_window((lo + hi) / 2, max(hi - lo, 1e-6))

    def _auto_window(self, channel: int) -> tuple[float, float]:
        s = self._stats[channel]
        return ((s["p005"] + s["p995"]) / 2, max(s["p995"] - s["p005"], 1e-6))

    def _window_drag(self, dx: float, dy: float, w: int, h: int) -> None:
        stats = self._stats.get(self._channel)
        if stats is None:
            return
        span = max(stats["max"] - stats["min"], 1e-6)
        level, width = self.window()
        width = max(width + dx / w * span, span * 1e-4)
        level = level - dy / h * span  # dragging up brightens as in ITK-SNAP
        self.set_window(level, width)

    def _apply_window(self) -> None:
        level, width = self.window()
        for view in self.views.values():
            if view._has_image:
                view.image_item.setLevels((level - width / 2, level + width / 2))

    # -- crosshair ------------------------------------------------------------------------------
    def position(self) -> tuple[int, int, int]:
        """Crosshair position in voxels (i, j, k)."""
        return self._pos

    def set_position(self, ijk: Sequence[int]) -> None:
        """Move the crosshair to voxel ``ijk`` (clipped to the scan); views follow."""
        if self._volume is None:
            return
        shape = self._volume.shape[1:]
        pos = tuple(int(min(max(int(round(c)), 0), n - 1)) for c, n in zip(ijk, shape))
        if pos == self._pos and self.views["axial"]._has_image:
            return
        old = self._pos
        self._pos = pos
        for view in self.views.values():
            if old[view.slice_axis] != pos[view.slice_axis] or not view._has_image:
                self._refresh_view(view)
            self._place_crosshair(view)
        self._update_info()
        self.position_changed.emit(self._pos)

    def scroll(self, view_name: str, steps: int) -> None:
        """Move the slice of view ``view_name`` by ``steps`` slices."""
        axis = VIEW_AXES[view_name][0]
        pos = list(self._pos)
        pos[axis] += int(steps)
        self.set_position(pos)

    def _point_in_view(self, view: OrthoView, x_mm: float, y_mm: float) -> None:
        pos = list(self._pos)
        pos[view.h_axis] = int(np.floor(x_mm / self._spacing[view.h_axis]))
        pos[view.v_axis] = int(np.floor(y_mm / self._spacing[view.v_axis]))
        self.set_position(pos)

    # -- linking --------------------------------------------------------------------------------
    def link_to(self, other: "SliceViewer") -> None:
        """Keep the crosshair (and zoom/pan of each view) of ``other`` in step with this viewer."""
        if other is self or other in self._linked:
            return
        self._linked.append(other)
        other._linked.append(self)
        self.position_changed.connect(other._follow)
        other.position_changed.connect(self._follow)
        for name in VIEW_NAMES:
            self.views[name].box.setXLink(other.views[name].box)
            self.views[name].box.setYLink(other.views[name].box)
        if other._volume is not None and self._volume is not None:
            other.set_position(self._pos)

    def unlink(self, other: "SliceViewer") -> None:
        """Undo :meth:`link_to`."""
        if other not in self._linked:
            return
        self._linked.remove(other)
        other._linked.remove(self)
        self.position_changed.disconnect(other._follow)
        other.position_changed.disconnect(self._follow)
        for name in VIEW_NAMES:
            self.views[name].box.setXLink(None)
            self.views[name].box.setYLink(None)

    def _follow(self, pos: tuple) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            self.set_position(pos)
        finally:
            self._syncing = False

    # -- output ---------------------------------------------------------------------------------
    def render_image(self, view_name: str | None = None) -> np.ndarray:
        """(H, W, 3) uint8 pixels of one view, or of the whole viewer when ``view_name`` is None."""
        if view_name is not None:
            return self.views[view_name].render_image()
        return qimage_to_array(self.grab().toImage())

    def save_png(self, path: str | Path, view_name: str | None = None) -> Path:
        """Save the whole viewer (or one view) as a PNG file."""
        if view_name is not None:
            return self.views[view_name].save_png(path)
        path = Path(path)
        if not self.grab().save(str(path), "PNG"):
            raise OSError(f"{path}: could not write PNG")
        return path

    # -- drawing --------------------------------------------------------------------------------
    def _place_view(self, view: OrthoView) -> None:
        shape = self._volume.shape[1:]
        w = shape[view.h_axis] * self._spacing[view.h_axis]
        h = shape[view.v_axis] * self._spacing[view.v_axis]
        view._rect = QRectF(0.0, 0.0, w, h)
        view.box.setLimits(xMin=-w, xMax=2 * w, yMin=-h, yMax=2 * h)

    def _slice(self, view: OrthoView, array: np.ndarray) -> np.ndarray:
        # Remaining axes keep their order, so the 2D slice is (horizontal, vertical).
        return np.take(array, self._pos[view.slice_axis], axis=view.slice_axis)

    def _refresh_view(self, view: OrthoView) -> None:
        if self._volume is None:
            return
        img = self._slice(view, self._volume[self._channel]).astype(np.float32, copy=False)
        level, width = self.window()
        view.image_item.setImage(img, autoLevels=False, levels=(level - width / 2, level + width / 2))
        view.image_item.setRect(view._rect)
        view._has_image = True
        if self._labels is not None:
            lab = self._slice(view, self._labels)
            rgba = self._lut[np.clip(lab, 0, len(self._lut) - 1)]
            view.overlay_item.setImage(rgba, autoLevels=False, levels=(0, 255))
            view.overlay_item.setRect(view._rect)
            view.overlay_item.setOpacity(self._opacity)
            view.overlay_item.setVisible(True)
        else:
            view.overlay_item.setVisible(False)
        n = self._volume.shape[1 + view.slice_axis]
        view.title.setText(f"{view.name.capitalize()}  {self._pos[view.slice_axis] + 1}/{n}")
        view.title.adjustSize()

    def _place_crosshair(self, view: OrthoView) -> None:
        view.h_line.setPos((self._pos[view.h_axis] + 0.5) * self._spacing[view.h_axis])
        view.v_line.setPos((self._pos[view.v_axis] + 0.5) * self._spacing[view.v_axis])

    def _refresh_all(self) -> None:
        if self._volume is None:
            return
        for view in self.views.values():
            self._refresh_view(view)
            self._place_crosshair(view)
        self._update_info()

    def _rebuild_lut(self) -> None:
        size = max([getattr(self, "_lut_size", 1)] + [v + 1 for v in self._names_colours])
        lut = np.zeros((size, 4), np.uint8)
        for value, (_, colour) in self._names_colours.items():
            if 0 < value < size and value not in self._hidden:
                lut[value, :3] = colour[:3]
                lut[value, 3] = 255
        self._lut = lut

    def _update_info(self) -> None:
        if self._volume is None:
            return
        i, j, k = self._pos
        value = self._volume[self._channel, i, j, k]
        text = f"voxel ({i}, {j}, {k})  value {float(value):.4g}"
        if self._labels is not None:
            lv = int(self._labels[i, j, k])
            name = self._names_colours.get(lv, ("background",))[0] if lv else "background"
            text += f"  label {lv} ({name})"
        level, width = self.window()
        text += f"  |  W {width:.4g}  L {level:.4g}"
        if len(self._channel_names) > 1:
            text += f"  |  {self._channel_names[self._channel]}"
        self.info.setText(text)
        self.cursor_info.emit(text)


def _present_values(labels: np.ndarray) -> list[int]:
    """Non-zero values present in a label map."""
    if labels.size and (labels.dtype.kind in "ub" or labels.min() >= 0):
        counts = np.bincount(labels.ravel().astype(np.intp, copy=False))
        return [int(v) for v in np.flatnonzero(counts) if v != 0]
    return [int(v) for v in np.unique(labels) if v != 0]


def _intensity_stats(volume: np.ndarray) -> dict[str, float]:
    """Percentiles of a volume from a strided sample (a few hundred thousand voxels at most)."""
    step = max(1, int(round((volume.size / 400_000) ** (1 / 3))))
    sample = np.asarray(volume[::step, ::step, ::step], dtype=np.float64).ravel()
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        sample = np.zeros(1)
    p = np.percentile(sample, [0.5, 5, 95, 99.5])
    return {"min": float(sample.min()), "max": float(sample.max()), "p005": float(p[0]),
            "p5": float(p[1]), "p95": float(p[2]), "p995": float(p[3])}
