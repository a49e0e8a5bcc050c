"""The slice viewer and the 3D surface view, driven with the mouse and keyboard as a user would."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtTest import QTest

from conftest import nonblank

SHAPE = (40, 48, 24)
SPACING = (1.0, 1.0, 2.0)
COLOURS = {1: ("tissue", (250, 40, 40)), 2: ("core", (40, 250, 40))}


def _volume():
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij")
    d = ((x - 20) / 15) ** 2 + ((y - 24) / 18) ** 2 + ((z - 12) / 9) ** 2
    labels = np.zeros(SHAPE, np.uint8)
    labels[d < 1] = 1
    labels[d < 0.3] = 2
    image = (100 * labels + 30 * np.sin(x / 3) + 200).astype(np.float32)
    return image, labels


@pytest.fixture
def viewer(qtbot):
    from emonas_gui.widgets.slice_views import SliceViewer

    v = SliceViewer()
    qtbot.addWidget(v)
    v.resize(700, 600)
    v.show()
    qtbot.waitExposed(v)
    image, labels = _volume()
    v.set_volume(image, SPACING)
    v.set_labels(labels, COLOURS)
    v.set_opacity(1.0)
    return v


def _view_point(view, x_mm, y_mm) -> QPoint:
    scene = view.box.mapViewToScene(QPointF(x_mm, y_mm))
    return view.mapFromScene(scene)


def _has_colour(pixels, rgb, tol=40) -> bool:
    return bool((np.abs(pixels.astype(int) - np.array(rgb)).max(axis=-1) < tol).any())


def test_views_show_scan_and_overlay_with_physical_aspect(viewer):
    assert viewer.position() == (20, 24, 12)
    for name in ("axial", "coronal", "sagittal"):
        px = viewer.render_image(name)
        assert nonblank(px), name
        assert _has_colour(px, COLOURS[1][1]), f"{name} shows no tissue overlay"
    # coronal: 40 voxels of 1 mm wide, 24 slices of 2 mm high -> the image item is 40 x 48 mm
    rect = viewer.views["coronal"].image_item.mapRectToParent(viewer.views["coronal"].image_item.boundingRect())
    assert rect.width() == pytest.approx(40.0)
    assert rect.height() == pytest.approx(48.0)


def test_click_moves_crosshair_in_other_views(viewer, qtbot):
    axial = viewer.views["axial"]
    with qtbot.waitSignal(viewer.position_changed):
        qtbot.mouseClick(axial.viewport(), Qt.MouseButton.LeftButton, pos=_view_point(axial, 5.5, 30.5))
    i, j, k = viewer.position()
    assert (i, j, k) == (5, 30, 12)
    # the sagittal view now shows slice x = 5 and its vertical line sits at y = 30.5 mm
    assert viewer.views["sagittal"].h_line.value() == pytest.approx(30.5)
    assert "6/40" in viewer.views["sagittal"].title.text()


def test_wheel_and_keys_scroll_slices(viewer, qtbot):
    axial = viewer.views["axial"]
    before = viewer.position()[2]
    ev_pos = _view_point(axial, 20, 24)
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    for _ in range(3):
        wheel = QWheelEvent(QPointF(ev_pos), QPointF(axial.viewport().mapToGlobal(ev_pos)), QPoint(0, 0),
                            QPoint(0, 120), Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
                            Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(axial.viewport(), wheel)
    assert viewer.position()[2] == before + 3
    axial.setFocus()
    qtbot.keyClick(axial, Qt.Key.Key_Down)
    qtbot.keyClick(axial, Qt.Key.Key_PageDown)
    assert viewer.position()[2] == before + 3 - 1 - 5
    viewer.scroll("axial", -1000)
    assert viewer.position()[2] == 0  # clipped to the scan


def test_right_drag_changes_window_and_presets(viewer, qtbot):
    level0, width0 = viewer.window()
    axial = viewer.views["axial"]
    vp = axial.viewport()
    start = _view_point(axial, 20, 24)
    QTest.mousePress(vp, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, start)
    for step in range(1, 6):
        QTest.mouseMove(vp, start + QPoint(15 * step, -10 * step))
    QTest.mouseRelease(vp, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier, start + QPoint(75, -50))
    level1, width1 = viewer.window()
    assert width1 > width0  # dragging right widens the window
    assert level1 != level0
    lo, hi = axial.image_item.getLevels()
    assert hi - lo == pytest.approx(width1)
    viewer.apply_preset("Full range")
    assert viewer.window()[1] > width0
    assert "Full range" in viewer.presets()


def test_label_visibility_and_opacity(viewer):
    viewer.set_label_visible(1, False)
    px = viewer.render_image("axial")
    assert not _has_colour(px, COLOURS[1][1], tol=20)
    assert _has_colour(px, COLOURS[2][1])
    viewer.set_label_visible(1, True)
    assert _has_colour(viewer.render_image("axial"), COLOURS[1][1])
    viewer.set_opacity(0.0)
    px = viewer.render_image("axial")
    assert not _has_colour(px, COLOURS[1][1], tol=20) and not _has_colour(px, COLOURS[2][1], tol=20)


def test_modality_switch_keeps_a_window_per_channel(qtbot):
    from emonas_gui.widgets.slice_views import SliceViewer

    image, _ = _volume()
    v = SliceViewer()
    qtbot.addWidget(v)
    v.set_volume(np.stack([image, -5.0 * image]), SPACING, ["T2", "ADC"])
    w0 = v.window()
    v.set_channel(1)
    assert v.window() != w0 and v.window()[0] < 0
    assert "ADC" in v.info.text()
    with pytest.raises(IndexError):
        v.set_channel(2)


def test_linked_viewers_follow_each_other(viewer, qtbot):
    from emonas_gui.widgets.slice_views import SliceViewer

    other = SliceViewer(layout="row")
    qtbot.addWidget(other)
    image, labels = _volume()
    other.set_volume(image, SPACING)
    other.set_labels((labels == 2).astype(np.uint8), {1: ("prediction", (0, 0, 255))})
    viewer.link_to(other)
    viewer.set_position((3, 4, 5))
    assert other.position() == (3, 4, 5)
    other.scroll("sagittal", 2)
    assert viewer.position() == (5, 4, 5)
    viewer.unlink(other)
    viewer.set_position((10, 10, 10))
    assert other.position() == (5, 4, 5)


def test_save_views_as_png(viewer, tmp_path):
    import nibabel  # noqa: F401 - PNG reading below uses Qt
    from PySide6.QtGui import QImage

    whole = viewer.save_png(tmp_path / "all.png")
    one = viewer.save_png(tmp_path / "axial.png", "axial")
    for path in (whole, one):
        img = QImage(str(path))
        assert not img.isNull() and img.width() > 100


def test_surface_view_renders_rotates_and_hides_labels(qtbot, tmp_path):
    from emonas_gui.widgets.surface_view import SurfaceView, grab_with_vtk
    from emonas_gui.widgets.slice_views import qimage_to_array

    _, labels = _volume()
    view = SurfaceView()
    qtbot.addWidget(view)
    view.resize(420, 360)
    view.show()
    qtbot.waitExposed(view)
    with qtbot.waitSignal(view.surfaces_ready, timeout=30000):
        view.set_labels(labels, SPACING, COLOURS)
    assert view.label_values() == [1, 2]
    first = view.render_image()
    assert nonblank(first)
    assert _has_colour(first, (250, 40, 40), tol=90)  # lit red surface

    cam0 = view.camera_position()
    vtk_widget = view._vtk
    centre = QPoint(vtk_widget.width() // 2, vtk_widget.height() // 2)
    QTest.mousePress(vtk_widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, centre)
    for step in range(1, 8):
        QTest.mouseMove(vtk_widget, centre + QPoint(12 * step, 4 * step))
    QTest.mouseRelease(vtk_widget, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, centre + QPoint(84, 28))
    assert view.camera_position() != pytest.approx(cam0)
    rotated = view.render_image()
    assert nonblank(rotated) and not np.array_equal(rotated, first)

    view.set_label_visible(1, False)  # the outer tissue hides the core; without it the core shows
    hidden = view.render_image()
    assert not _has_colour(hidden, (250, 40, 40), tol=60)
    assert _has_colour(hidden, (40, 250, 40), tol=90)

    view.reset_camera()
    view.zoom(1.5)
    composite = qimage_to_array(grab_with_vtk(view))
    assert nonblank(composite[40:])  # the VTK pixels are in the screenshot, not a black hole
    assert view.save_png(tmp_path / "3d.png").stat().st_size > 1000
