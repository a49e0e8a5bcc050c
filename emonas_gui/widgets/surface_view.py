"""VTK 3D view of label surfaces.

Widget API (:class:`SurfaceView`)::

    view = SurfaceView(parent=None)
    view.set_labels(labels, spacing, names_colours)   # labels (X, Y, Z) ints; surfaces built off the GUI thread
    view.surfaces_ready                               # Signal(): emitted once the new surfaces are shown
    view.set_label_visible(value, visible)            # per-label visibility
    view.reset_camera(); view.zoom(1.2); view.rotate(azimuth=30, elevation=10)
    view.render_image() -> numpy (H, W, 3) uint8      # what the view shows, read from VTK
    view.save_png(path)
    view.shutdown()                                   # closeEvent calls it

``build_surfaces(labels, spacing, values)`` is the pure function that does the work (discrete flying
edges, then windowed-sinc smoothing and normals). ``grab_with_vtk(widget)`` takes a screenshot of any
widget with the pixels of every SurfaceView inside it composited in (``QWidget.grab()`` does not
contain VTK's pixels).

Without a screen (``QT_QPA_PLATFORM=offscreen``) the view renders through an EGL render window whose
``SetWindowInfo`` ignores Qt's fake window id, with offscreen rendering on.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import (QApplication, QHBoxLayout, QLabel, QToolButton, QVBoxLayout,
                               QWidget)

from emonas_gui.widgets import TaskRunner

if QApplication.platformName() == "offscreen" or os.environ.get("QT_QPA_PLATFORM") == "offscreen":
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import vtkmodules.vtkInteractionStyle  # noqa: E402,F401 - registers the interactor styles
import vtkmodules.vtkRenderingOpenGL2  # noqa: E402,F401 - registers the OpenGL back end
from vtkmodules.qt.QVTKRenderWindowInteractor import QVTKRenderWindowInteractor  # noqa: E402
from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy  # noqa: E402
from vtkmodules.vtkCommonDataModel import vtkImageData, vtkPolyData  # noqa: E402
from vtkmodules.vtkFiltersCore import vtkPolyDataNormals, vtkWindowedSincPolyDataFilter  # noqa: E402
from vtkmodules.vtkFiltersGeneral import vtkDiscreteFlyingEdges3D  # noqa: E402
from vtkmodules.vtkInteractionStyle import vtkInteractorStyleTrackballCamera  # noqa: E402
from vtkmodules.vtkRenderingCore import (vtkActor, vtkPolyDataMapper, vtkRenderer,  # noqa: E402
                                         vtkRenderWindow, vtkWindowToImageFilter)

log = logging.getLogger(__name__)

BACKGROUND = (0.08, 0.09, 0.11)
MAX_SURFACE_VOXELS = 160 ** 3


def build_surfaces(labels: np.ndarray, spacing: Sequence[float], values: Sequence[int],
                   smoothing_iterations: int = 20, max_voxels: int = MAX_SURFACE_VOXELS) -> dict[int, vtkPolyData]:
    """Smoothed surface meshes of each label value in ``labels`` (X, Y, Z), in millimetres.

    Runs discrete flying edges per label, then windowed-sinc smoothing and normals. Labels with no
    voxel are left out. Label maps larger than ``max_voxels`` are subsampled by a whole factor first:
    a million triangles per label would make software rendering crawl and adds nothing to an overview.
    Safe to call off the GUI thread (touches no rendering object).
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be 3D, got shape {labels.shape}")
    step = max(1, int(np.ceil((labels.size / max_voxels) ** (1 / 3))))
    if step > 1:
        labels = labels[::step, ::step, ::step]
        spacing = [float(s) * step for s in spacing]
    image = vtkImageData()
    image.SetDimensions(*labels.shape)
    image.SetSpacing(*[float(s) for s in spacing])
    # VTK stores x fastest: Fortran order of an (X, Y, Z) array.
    flat = np.ascontiguousarray(labels.astype(np.int16, copy=False).ravel(order="F"))
    scalars = numpy_to_vtk(flat, deep=True)
    image.GetPointData().SetScalars(scalars)
    present = set(np.unique(labels).tolist())
    out: dict[int, vtkPolyData] = {}
    for value in values:
        if int(value) == 0 or int(value) not in present:
            continue
        fe = vtkDiscreteFlyingEdges3D()
        fe.SetInputData(image)
        fe.SetValue(0, int(value))
        fe.ComputeScalarsOff()
        fe.ComputeNormalsOff()
        smooth = vtkWindowedSincPolyDataFilter()
        smooth.SetInputConnection(fe.GetOutputPort())
        smooth.SetNumberOfIterations(smoothing_iterations)
        smooth.SetPassBand(0.01)
        smooth.NormalizeCoordinatesOn()
        smooth.BoundarySmoothingOff()
        smooth.FeatureEdgeSmoothingOff()
        smooth.NonManifoldSmoothingOn()
        normals = vtkPolyDataNormals()
        normals.SetInputConnection(smooth.GetOutputPort())
        normals.SplittingOff()
        normals.Update()
        poly = vtkPolyData()
        poly.DeepCopy(normals.GetOutput())
        if poly.GetNumberOfPoints():
            out[int(value)] = poly
    return out


def _make_render_window() -> vtkRenderWindow:
    if QApplication.platformName() != "offscreen":
        return vtkRenderWindow()
    from vtkmodules.vtkRenderingOpenGL2 import vtkEGLRenderWindow

    class _OffscreenEGLWindow(vtkEGLRenderWindow):
        """EGL window that ignores the fake window id the offscreen Qt platform hands out."""

        def SetWindowInfo(self, info):  # noqa: N802 - VTK's name
            pass

    rw = _OffscreenEGLWindow()
    rw.SetOffScreenRendering(1)
    return rw


class SurfaceView(QWidget):
    """3D view of label surfaces: rotate (left drag), zoom (wheel / right drag), pan (middle drag).

    See the module docstring for the API.
    """

    surfaces_ready = Signal()
    error = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._tasks = TaskRunner(self)
        self._render_window = _make_render_window()
        self._vtk = QVTKRenderWindowInteractor(self, rw=self._render_window)
        self._renderer = vtkRenderer()
        self._renderer.SetBackground(*BACKGROUND)
        self._renderer.GradientBackgroundOn()
        self._renderer.SetBackground2(0.22, 0.24, 0.28)
        self._render_window.AddRenderer(self._renderer)
        self._vtk.SetInteractorStyle(vtkInteractorStyleTrackballCamera())
        self._actors: dict[int, vtkActor] = {}
        self._hidden: set[int] = set()
        self._colours: dict[int, tuple[int, int, int]] = {}
        self._initialized = False
        self._status = QLabel("no labels")
        self._status.setObjectName("surfaceStatus")

        bar = QHBoxLayout()
        bar.setContentsMargins(2, 2, 2, 2)
        for text, tip, slot in (("Reset", "Reset the camera (R)", self.reset_camera),
                                ("+", "Zoom in", lambda: self.zoom(1.25)),
                                ("\u2212", "Zoom out", lambda: self.zoom(0.8))):
            b = QToolButton(self)
            b.setText(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            bar.addWidget(b)
        bar.addWidget(self._status, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(bar)
        layout.addWidget(self._vtk, 1)
        self.setMinimumSize(160, 160)

    # -- data -----------------------------------------------------------------------------------
    def set_labels(self, labels: np.ndarray | None, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                   names_colours: Mapping[int, tuple[str, tuple[int, int, int]]] | None = None) -> None:
        """Show the surfaces of every non-zero label; built in a worker, shown when ready."""
        if labels is None:
            self._set_polys({})
            self._status.setText("no labels")
            return
        names_colours = dict(names_colours or {})
        values = sorted(int(v) for v in names_colours) if names_colours else \
            [int(v) for v in np.unique(labels) if v != 0]
        self._colours = {v: tuple(names_colours.get(v, ("", _default_colour(v)))[1]) for v in values}
        self._status.setText("building surfaces\u2026")
        self._tasks.submit(build_surfaces, labels, tuple(spacing), values, key="surfaces",
                           on_done=self._on_built, on_error=self._on_failed)

    def wait_until_ready(self, msecs: int = 60000) -> bool:
        """Block until pending surface builds have finished (for tests and --screenshot)."""
        ok = self._tasks.wait(msecs)
        QApplication.processEvents()
        return ok

    def _on_built(self, polys: dict[int, vtkPolyData]) -> None:
        self._set_polys(polys)
        n = sum(p.GetNumberOfPolys() for p in polys.values())
        self._status.setText(f"{len(polys)} surface(s), {n:,} triangles" if polys else "no labelled voxels")
        self.surfaces_ready.emit()

    def _on_failed(self, message: str) -> None:
        self._status.setText("surfaces failed")
        self.error.emit(f"3D surfaces: {message}")

    def _set_polys(self, polys: Mapping[int, vtkPolyData]) -> None:
        for actor in self._actors.values():
            self._renderer.RemoveActor(actor)
        self._actors = {}
        for value, poly in polys.items():
            mapper = vtkPolyDataMapper()
            mapper.SetInputData(poly)
            mapper.ScalarVisibilityOff()
            actor = vtkActor()
            actor.SetMapper(mapper)
            r, g, b = self._colours.get(value, _default_colour(value))
            prop = actor.GetProperty()
            prop.SetColor(r / 255.0, g / 255.0, b / 255.0)
            prop.SetSpecular(0.2)
            prop.SetSpecularPower(20)
            actor.SetVisibility(value not in self._hidden)
            self._renderer.AddActor(actor)
            self._actors[value] = actor
        self.reset_camera()

    # -- display --------------------------------------------------------------------------------
    def set_label_visible(self, value: int, visible: bool) -> None:
        """Show or hide the surface of label ``value``."""
        value = int(value)
        (self._hidden.discard if visible else self._hidden.add)(value)
        if value in self._actors:
            self._actors[value].SetVisibility(bool(visible))
            self.render()

    def label_values(self) -> list[int]:
        """Label values that currently have a surface."""
        return sorted(self._actors)

    def reset_camera(self) -> None:
        """Look at all surfaces from the front right, a little from above, superior up."""
        cam = self._renderer.GetActiveCamera()
        cam.SetFocalPoint(0, 0, 0)
        cam.SetPosition(0, 1, 0)  # +Y is anterior in RAS
        cam.SetViewUp(0, 0, 1)
        cam.Azimuth(30)
        cam.Elevation(15)
        cam.OrthogonalizeViewUp()
        self._renderer.ResetCamera()
        self.render()

    def zoom(self, factor: float) -> None:
        """Zoom the camera by ``factor`` (> 1 zooms in)."""
        self._renderer.GetActiveCamera().Zoom(factor)
        self.render()

    def rotate(self, azimuth: float = 0.0, elevation: float = 0.0) -> None:
        """Rotate the camera around the focal point by the given angles in degrees."""
        cam = self._renderer.GetActiveCamera()
        cam.Azimuth(azimuth)
        cam.Elevation(elevation)
        cam.OrthogonalizeViewUp()
        self.render()

    def camera_position(self) -> tuple[float, float, float]:
        """The camera position (for tests and to save views)."""
        return tuple(self._renderer.GetActiveCamera().GetPosition())

    def render(self) -> None:  # noqa: A003 - VTK's vocabulary
        """Render now (no-op before the widget is first shown)."""
        if not self._initialized:
            if not self._vtk.isVisible():
                return
            self._vtk.Initialize()
            self._initialized = True
        self._render_window.Render()

    def showEvent(self, event):  # noqa: N802 - Qt's name
        super().showEvent(event)
        self.render()

    def render_image(self) -> np.ndarray:
        """The rendered view as an (H, W, 3) uint8 array, top row first."""
        if not self._initialized:
            self._vtk.Initialize()
            self._initialized = True
        w, h = max(1, self._vtk.width()), max(1, self._vtk.height())
        if tuple(self._render_window.GetSize()) != (w, h):
            self._render_window.SetSize(w, h)
        self._render_window.Render()
        grab = vtkWindowToImageFilter()
        grab.SetInput(self._render_window)
        grab.ReadFrontBufferOff()
        grab.ShouldRerenderOff()
        grab.Update()
        data = grab.GetOutput()
        dx, dy, _ = data.GetDimensions()
        arr = vtk_to_numpy(data.GetPointData().GetScalars()).reshape(dy, dx, -1)[:, :, :3]
        return np.ascontiguousarray(arr[::-1])  # VTK's origin is bottom-left

    def render_qimage(self) -> QImage:
        """The rendered view as a QImage (RGB888)."""
        arr = self.render_image()
        h, w, _ = arr.shape
        buf = arr.tobytes()  # QImage does not own the buffer: keep it alive until copy()
        return QImage(buf, w, h, 3 * w, QImage.Format.Format_RGB888).copy()

    def save_png(self, path: str | Path) -> Path:
        """Save the 3D view as a PNG file."""
        path = Path(path)
        if not self.render_qimage().save(str(path), "PNG"):
            raise OSError(f"{path}: could not write PNG")
        return path

    # -- teardown -------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Wait for a running surface build and release the render window."""
        self._tasks.shutdown()
        timer = getattr(self._vtk, "_Timer", None)
        if timer is not None:
            timer.stop()
        if self._initialized:
            self._vtk.Finalize()
            self._initialized = False

    def closeEvent(self, event):  # noqa: N802 - Qt's name
        self.shutdown()
        super().closeEvent(event)


def _default_colour(value: int) -> tuple[int, int, int]:
    palette = [(230, 80, 70), (80, 180, 90), (70, 130, 230), (240, 200, 60), (180, 90, 200),
               (60, 200, 200), (240, 140, 60), (150, 150, 150)]
    return palette[(int(value) - 1) % len(palette)]


def grab_with_vtk(widget: QWidget) -> QImage:
    """Screenshot of ``widget`` with the 3D pixels of every visible SurfaceView painted in."""
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    painter = QPainter(image)
    try:
        views = widget.findChildren(SurfaceView)
        if isinstance(widget, SurfaceView):
            views.insert(0, widget)
        for view in views:
            if not view.isVisible():
                continue
            vtk_widget = view._vtk
            if vtk_widget.width() < 2 or vtk_widget.height() < 2:
                continue
            top_left: QPoint = vtk_widget.mapTo(widget, QPoint(0, 0))
            dpr = image.devicePixelRatio() or 1.0
            painter.drawImage(top_left, view.render_qimage().scaled(
                int(vtk_widget.width() * dpr), int(vtk_widget.height() * dpr),
                Qt.AspectRatioMode.IgnoreAspectRatio))
    finally:
        painter.end()
    return image
