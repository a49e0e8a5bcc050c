"""The main window and the Data step, driven as a user would: open, drop, browse, toggle, save, fail."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage
from PySide6.QtWidgets import QApplication

from conftest import nonblank

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def window(qtbot):
    from emonas_gui.main_window import MainWindow
    from emonas_gui.state import AppState

    win = MainWindow(AppState())
    qtbot.addWidget(win)
    win.resize(1280, 800)
    win.show()
    qtbot.waitExposed(win)
    return win


def _open_and_wait(qtbot, win, path):
    with qtbot.waitSignal(win.data_panel.ready, timeout=30000):
        win.open_dataset(path)


def test_open_dataset_lists_cases_and_shows_first_case(window, qtbot, msd_dataset):
    panel = window.data_panel
    _open_and_wait(qtbot, window, msd_dataset)
    assert window.state.dataset.name == "TinyTest"
    assert panel.case_table.rowCount() == 3
    qtbot.waitUntil(lambda: panel.case_table.item(0, 1).text() != "\u2026", timeout=10000)
    assert panel.case_table.item(0, 1).text() == "40\u00d748\u00d724"
    assert panel.case_table.item(0, 2).text() == "1\u00d71\u00d72"
    assert panel.case_table.item(0, 3).text() == "MRI"
    assert panel.case_table.item(0, 4).text() == "yes"
    assert panel.problems()[0].startswith("Headers look fine")
    assert [panel.label_table.item(r, 1).text() for r in range(panel.label_table.rowCount())] == ["tissue", "core"]
    assert window.dataset_label.text() == "dataset: TinyTest"
    assert nonblank(panel.viewer.render_image("axial"))
    assert nonblank(panel.surface_view.render_image())
    assert str(msd_dataset) in window.state.recent_datasets()

    # pick another case from the list: it loads in the background and shows
    with qtbot.waitSignal(panel.case_shown, timeout=30000) as blocker:
        panel.case_table.selectRow(2)
    assert blocker.args == ["case_002"]
    panel.wait_until_ready()


def test_every_case_table_column_is_in_view_with_long_case_ids(window, qtbot, tmp_path):
    """At the window's usual size the "Label" column is not cut off by long case ids: the id column
    gives way (elided, its tooltip whole) and the table needs no sideways scrolling."""
    from engine.data.demo import write_demo_dataset

    panel = window.data_panel
    _open_and_wait(qtbot, window, write_demo_dataset(tmp_path / "hippo", kind="hippocampus"))
    table = panel.case_table
    qtbot.waitUntil(lambda: table.item(0, 1).text() != "\u2026", timeout=10000)
    window.resize(1280, 800)
    qtbot.wait(50)
    header = table.horizontalHeader()
    assert table.horizontalScrollBar().maximum() == 0
    assert header.sectionViewportPosition(4) + header.sectionSize(4) <= table.viewport().width()
    # the short columns show their whole text
    metrics = table.fontMetrics()
    for col in (1, 2, 3, 4):
        assert header.sectionSize(col) >= metrics.horizontalAdvance(table.item(0, col).text())
    assert table.item(0, 0).toolTip() == table.item(0, 0).text() == "hippocampus_000"


def test_search_step_fits_the_usual_window_size_with_a_run_open(window, qtbot, tmp_path):
    """At 1280 x 800, with a run of a long folder name open, the Search step fits the window: the run's
    status wraps instead of widening the window, and the form shows its full width (the operations'
    names, the learning rate's range), scrolling up and down only, the plots beside it giving way."""
    from test_search_monitor import _write_run

    run = tmp_path / "hippocampus-latency-objective-nf1-8-16-population-6-seed-0"
    store, _ = _write_run(run, n_done=4)
    store.close()
    window.open_run(run)
    window.show_step("search")
    panel = window.panels["search"]
    qtbot.waitUntil(lambda: run.name in panel.monitor.status_label.text(), timeout=10000)
    qtbot.wait(50)
    assert window.width() == 1280
    form = panel.form
    scroll = form.parentWidget().parentWidget()  # the scroll area around it (form -> viewport -> area)
    assert scroll is panel.form_scroll
    assert scroll.horizontalScrollBar().maximum() == 0
    assert form.width() >= form.minimumSizeHint().width()
    assert panel.monitor.width() > 500  # the Pareto plot and the details keep a usable share
    assert window.minimumSizeHint().width() <= 1280


def test_opening_a_run_opens_the_dataset_it_searched_on(window, qtbot, msd_dataset, tmp_path):
    """A run opened while another dataset is shown brings its own dataset into the Data step (in the
    background, the step shown unchanged), so the search form's dataset and cost line are the run's;
    a run on the dataset already open, or whose dataset has moved, leaves the open one as it is."""
    from conftest import write_msd_dataset
    from engine.run.store import RunStore

    other = write_msd_dataset(tmp_path / "Task98_Other", n_cases=2, seed=3)
    _open_and_wait(qtbot, window, other)
    assert window.state.dataset_path == str(other)

    def run_on(name, dataset):
        store = RunStore.create(tmp_path / name, {"config": {"dataset": str(dataset)},
                                                  "problem": {"data": {"dataset": str(dataset)}}})
        store.close()
        return tmp_path / name

    window.show_step("results")
    with qtbot.waitSignal(window.data_panel.ready, timeout=30000):
        window.open_run(run_on("run_a", msd_dataset))
    assert window.state.dataset_path == str(msd_dataset)
    assert window.state.dataset.name == "TinyTest"
    assert window.current_step() == "results"
    search = window.panels["search"]
    assert search.dataset_ref() == str(msd_dataset)

    # the same dataset again: nothing reloads
    with qtbot.assertNotEmitted(window.data_panel.ready, wait=300):
        window.open_run(run_on("run_b", msd_dataset))
    # a run whose dataset has moved away: the open dataset stays (the Results step says what is missing)
    errors = []
    window.state.error.connect(errors.append)
    with qtbot.assertNotEmitted(window.data_panel.ready, wait=300):
        window.open_run(run_on("run_c", tmp_path / "moved_away"))
    assert window.state.dataset_path == str(msd_dataset)
    assert all("moved_away" in e for e in errors)
    assert window.state.run_dir == tmp_path / "run_c"
    # told not to follow (``--dataset D --run R`` on the command line): the open dataset stays
    with qtbot.assertNotEmitted(window.data_panel.ready, wait=300):
        window.open_run(run_on("run_d", other), follow_dataset=False)
    assert window.state.dataset_path == str(msd_dataset)


def test_label_toggles_reach_slices_and_3d(window, qtbot, msd_dataset):
    panel = window.data_panel
    _open_and_wait(qtbot, window, msd_dataset)
    panel.opacity.setValue(100)
    assert panel.viewer.opacity() == 1.0
    tissue = (230, 80, 70)

    def red_pixels(px):
        return int((np.abs(px.astype(int) - np.array(tissue)).max(axis=-1) < 25).sum())

    before = red_pixels(panel.viewer.render_image("axial"))
    assert before > 50
    item = panel.label_table.item(0, 0)  # the "Show" box of "tissue", ticked as a user would
    item.setCheckState(Qt.CheckState.Unchecked)
    assert not panel.viewer.label_visible(1)
    assert red_pixels(panel.viewer.render_image("axial")) == 0
    assert panel.surface_view._actors[1].GetVisibility() == 0
    item.setCheckState(Qt.CheckState.Checked)
    assert red_pixels(panel.viewer.render_image("axial")) == before
    panel.opacity.setValue(0)
    assert red_pixels(panel.viewer.render_image("axial")) == 0


def test_check_every_voxel_lists_problems(window, qtbot, tmp_path):
    from conftest import write_msd_dataset

    root = write_msd_dataset(tmp_path / "Task98_Empty", n_cases=2, shape=(24, 24, 16))
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((24, 24, 16), np.uint8), np.diag([1.0, 1, 2, 1])),
             root / "labelsTr" / "case_001.nii.gz")  # an empty label volume: a warning
    _open_and_wait(qtbot, window, root)
    with qtbot.waitSignal(window.data_panel.check_finished, timeout=30000):
        qtbot.mouseClick(window.data_panel.check_button, Qt.MouseButton.LeftButton)
    problems = window.data_panel.problems()
    assert any(p.startswith("warning:") and "case_001" in p and "empty" in p for p in problems), problems
    assert "2 usable case(s)" in problems[0] and "plan: patch" in problems[0]


def _drop(window, paths):
    """Drag ``paths`` over the window and drop them, as a file manager does."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    enter = QDragEnterEvent(QPoint(300, 300), *args)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(300, 300), *args)
    QApplication.sendEvent(window, drop)
    assert drop.isAccepted()


def test_drop_a_dataset_folder_and_a_scan(window, qtbot, msd_dataset):
    with qtbot.waitSignal(window.data_panel.ready, timeout=30000):
        _drop(window, [msd_dataset])
    assert window.state.dataset is not None and window.data_panel.case_table.rowCount() == 3

    # a single scan dropped on its own: shown without a dataset, no label
    with qtbot.waitSignal(window.data_panel.case_shown, timeout=30000):
        _drop(window, [msd_dataset / "imagesTr" / "case_001.nii.gz"])
    assert window.data_panel.case_table.rowCount() == 1
    assert window.data_panel.case_table.item(0, 4).text() == "no"
    assert window.data_panel.current_case().labels is None
    # and then a label map put over it
    with qtbot.waitSignal(window.data_panel.ready, timeout=30000):
        window.data_panel.open_label_map(msd_dataset / "labelsTr" / "case_001.nii.gz")
    assert window.data_panel.current_case().labels.max() == 2


def test_bad_files_show_one_line_dialogs(window, qtbot, msd_dataset, tmp_path):
    good = (msd_dataset / "imagesTr" / "case_000.nii.gz").read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with qtbot.waitSignal(window.state.error, timeout=30000) as blocker:
        window.open_scans([truncated])
    message = blocker.args[0]
    assert "truncated.nii.gz" in message and "\n" not in message and "Traceback" not in message
    assert window.error_dialog.isVisible() and window.error_dialog.text() == message

    not_image = tmp_path / "notes.nii"
    not_image.write_text("this is not a scan")
    with qtbot.waitSignal(window.state.error, timeout=30000) as blocker:
        window.open_scans([not_image])
    assert "notes.nii" in blocker.args[0]

    broken = tmp_path / "Task97_Broken"
    broken.mkdir()
    (broken / "dataset.json").write_text("{not json")
    with qtbot.waitSignal(window.state.error, timeout=30000) as blocker:
        window.open_dataset(broken)
    assert "dataset.json" in blocker.args[0]

    # mismatched label map over a scan: named, and the app keeps working
    small = tmp_path / "small_label.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), small)
    with qtbot.waitSignal(window.data_panel.case_shown, timeout=30000):
        window.open_scans([msd_dataset / "imagesTr" / "case_000.nii.gz"])
    with qtbot.waitSignal(window.state.error, timeout=30000) as blocker:
        window.data_panel.open_label_map(small)
    assert "small_label.nii.gz" in blocker.args[0] and "shape" in blocker.args[0]
    window.error_dialog.close()
    _open_and_wait(qtbot, window, msd_dataset)  # still works
    assert len(window.errors) == 4


def test_settings_recent_theme_and_about(qtbot, msd_dataset, tmp_path):
    from emonas_gui.main_window import MainWindow
    from emonas_gui.state import AppState

    win = MainWindow(AppState(), theme="dark")
    qtbot.addWidget(win)
    win.show()
    assert QApplication.palette().window().color().lightness() < 100
    win.act_dark.trigger()  # to the light theme
    assert win.theme == "light" and QApplication.palette().window().color().lightness() > 180
    assert win.state.settings.value("ui/theme") == "light"
    _open_and_wait(qtbot, win, msd_dataset)
    run = tmp_path / "run1"
    run.mkdir()
    win.open_run(run)
    assert win.state.run_dir == run and win.run_label.text() == "run: run1"
    win.resize(1300, 850)
    win.show_step("results")
    assert win.current_step() == "results"
    about = win.show_about()
    assert "research use only" in about.text().lower()
    about.close()
    win.close()

    again = MainWindow(AppState())
    qtbot.addWidget(again)
    assert again.size().width() == 1300
    assert str(msd_dataset) == again.state.recent_datasets()[0]
    assert str(run) == again.state.recent_runs()[0]
    again.recent_datasets_menu.aboutToShow.emit()
    assert str(msd_dataset) in [a.text() for a in again.recent_datasets_menu.actions()]
    again.set_theme("dark")


def test_save_views_writes_pngs(window, qtbot, msd_dataset, tmp_path):
    _open_and_wait(qtbot, window, msd_dataset)
    paths = window.data_panel.save_views(tmp_path / "views")
    assert sorted(p.name for p in paths) == sorted(
        ["case_000_axial.png", "case_000_coronal.png", "case_000_sagittal.png", "case_000_3d.png",
         "case_000_all.png"])
    for p in paths:
        img = QImage(str(p))
        assert not img.isNull() and img.width() > 50
    shot = window.save_screenshot(tmp_path / "window.png")
    assert QImage(str(shot)).width() >= 1280


def _run_main(args, tmp_path, timeout=90, xvfb=False, platform="offscreen"):
    env = dict(os.environ, QT_QPA_PLATFORM=platform, XDG_CONFIG_HOME=str(tmp_path / "config"),
               HOME=str(tmp_path))  # EMONAS_CACHE_DIR: the tests' private cache (conftest)
    for name in ("DISPLAY", "WAYLAND_DISPLAY") + (("QT_QPA_PLATFORM",) if not platform else ()):
        env.pop(name, None)
    prefix = []
    if xvfb:  # a real X server: Qt's xcb platform and VTK's own X11 render window
        for name in ("QT_QPA_PLATFORM", "VTK_DEFAULT_OPENGL_WINDOW"):
            env.pop(name, None)
        prefix = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24"]
    return subprocess.run([*prefix, sys.executable, str(REPO / "main.py"), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("xvfb", [False, pytest.param(True, marks=pytest.mark.skipif(
    shutil.which("xvfb-run") is None, reason="xvfb-run is not installed"))], ids=["offscreen", "xvfb"])
def test_screenshot_mode_as_a_user_runs_it(msd_dataset, tmp_path, xvfb):
    out = tmp_path / "shots" / "data.png"
    proc = _run_main(["--dataset", str(msd_dataset), "--screenshot", str(out)], tmp_path, xvfb=xvfb)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    img = QImage(str(out))
    assert img.width() >= 1280 and img.height() >= 800
    from emonas_gui.widgets.slice_views import qimage_to_array

    px = qimage_to_array(img)
    h, w, _ = px.shape
    assert nonblank(px[: h // 2, w // 3: 2 * w // 3])  # the axial slice
    three_d = px[h // 2 + 40:, 2 * w // 3:]  # the bottom-right cell holds the 3D view
    assert nonblank(three_d)
    reddish = (three_d[..., 0].astype(int) - three_d[..., 2].astype(int)) > 60
    assert reddish.sum() > 500, "no lit label surface in the 3D view of the screenshot"


def test_no_display_is_one_line_but_a_screenshot_needs_none(msd_dataset, tmp_path):
    proc = _run_main([], tmp_path, platform=None)  # a server over SSH: no X11, no Wayland, no platform chosen
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "emonas-studio: error: no display to open the window on (DISPLAY and WAYLAND_DISPLAY are unset); "
        "use the emonas command line, or --screenshot PATH"]
    out = tmp_path / "shot.png"
    proc = _run_main(["--dataset", str(msd_dataset), "--screenshot", str(out)], tmp_path, platform=None)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert QImage(str(out)).width() >= 1280


def test_no_arguments_opens_the_demo_dataset(qtbot):
    from emonas_gui.app import build_window, parse_args

    win = build_window(parse_args([]))
    qtbot.addWidget(win)
    win.show()
    with qtbot.waitSignal(win.data_panel.ready, timeout=120000):
        pass
    ds = win.state.dataset
    assert win.state.dataset_path == "demo" and len(ds.cases) >= 20
    case = win.data_panel.current_case()
    assert case.case_id == ds.cases[0].case_id and case.labels is not None
    assert len(case.label_values) >= 3
    assert nonblank(win.data_panel.viewer.render_image("axial"))
    assert nonblank(win.data_panel.surface_view.render_image())


def test_two_modalities_switch_in_the_display_box(window, qtbot, tmp_path):
    from conftest import write_msd_dataset

    root = write_msd_dataset(tmp_path / "Task96_TwoModalities", n_cases=2, shape=(24, 28, 16),
                             modalities=("T2", "ADC"))
    _open_and_wait(qtbot, window, root)
    panel = window.data_panel
    assert panel.case_table.item(0, 3).text() == "T2, ADC"
    assert panel.modality.isEnabled() and panel.modality.count() == 2
    level_t2 = panel.viewer.window()[0]
    panel.modality.setCurrentIndex(1)
    assert panel.viewer.channel() == 1
    assert panel.viewer.window()[0] < 0 < level_t2  # the ADC channel has its own (negative) window
    assert "ADC" in panel.viewer.info.text()


def test_broken_case_is_named_and_can_be_skipped(window, qtbot, tmp_path):
    from conftest import write_msd_dataset

    root = write_msd_dataset(tmp_path / "Task95_OneBroken", n_cases=3, shape=(24, 24, 16))
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((20, 24, 16), np.uint8), np.diag([1.0, 1, 2, 1])),
             root / "labelsTr" / "case_001.nii.gz")  # a label map cropped differently from its scan
    with qtbot.waitSignal(window.state.error, timeout=30000) as blocker:
        window.open_dataset(root)
    assert "case_001.nii.gz" in blocker.args[0] and "shape" in blocker.args[0]
    assert window.state.dataset is None
    window.error_dialog.close()

    box = window.data_panel.skip_bad
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))  # on the tick box
    assert window.data_panel.skip_bad.isChecked()
    _open_and_wait(qtbot, window, root)
    assert [e.case_id for e in window.data_panel.entries()] == ["case_000", "case_002"]
    assert "Skipped: case_001" in window.data_panel.summary.text()
    assert any("case_001" in p for p in window.data_panel.problems())


def test_closing_during_a_check_cancels_it(window, qtbot, msd_dataset):
    import threading

    from emonas_gui.panels.data import CheckCancelled, check_dataset_job

    seen = []
    cancel = threading.Event()

    def progress(done, total, case_id):
        seen.append(case_id)
        cancel.set()  # the user closes the window after the first case

    with pytest.raises(CheckCancelled):
        check_dataset_job(str(msd_dataset), False, progress, cancel)
    assert seen == ["case_000"]

    _open_and_wait(qtbot, window, msd_dataset)
    qtbot.mouseClick(window.data_panel.check_button, Qt.MouseButton.LeftButton)
    window.close()  # the no_leaks fixture then finds no worker left running
    assert window.data_panel._cancel.is_set()


def test_scans_are_shown_in_ras_whatever_their_orientation_on_disk(tmp_path):
    import nibabel as nib

    from emonas_gui.panels.data import load_case

    image = np.zeros((6, 8, 5), np.float32)
    image[0, 0, 0] = 100.0  # first voxel on disk: with an LPS affine the most right and most anterior one
    label = (image > 0).astype(np.uint8)
    lps = np.diag([-0.8, -0.9, 2.5, 1.0])
    nib.save(nib.Nifti1Image(image, lps), tmp_path / "lps.nii.gz")
    nib.save(nib.Nifti1Image(label, lps), tmp_path / "lps_label.nii.gz")
    case = load_case("lps", [tmp_path / "lps.nii.gz"], tmp_path / "lps_label.nii.gz")
    assert case.orientation == "LPS"
    assert case.image.shape == (1, 6, 8, 5) and case.spacing == pytest.approx((0.8, 0.9, 2.5))
    assert case.image[0, 5, 7, 0] == 100.0  # in RAS order: highest x (right), highest y (anterior)
    assert case.labels[5, 7, 0] == 1 and case.label_values == [1]


class _UrlCatcher:
    """Stands in for the desktop's file opener (QDesktopServices.setUrlHandler) and records the URLs."""

    def __init__(self):
        from PySide6.QtCore import QObject, Slot

        class Catcher(QObject):
            def __init__(self):
                super().__init__()
                self.urls = []

            @Slot(QUrl)
            def open(self, url):
                self.urls.append(url)

        self.obj = Catcher()

    def __enter__(self):
        from PySide6.QtGui import QDesktopServices

        QDesktopServices.setUrlHandler("file", self.obj, "open")
        return self.obj.urls

    def __exit__(self, *exc):
        from PySide6.QtGui import QDesktopServices

        QDesktopServices.unsetUrlHandler("file")


def test_open_log_opens_the_runs_search_log(window, tmp_path):
    import logging

    from engine.run.runlog import run_log

    assert not window.act_open_log.isEnabled()  # no run yet
    assert window.open_run_log() is None and "no run is open" in window.errors[-1]
    run = tmp_path / "run"
    run.mkdir()
    window.state.set_run(run)
    assert window.act_open_log.isEnabled()
    assert window.open_run_log() is None and "no log yet" in window.errors[-1]
    with run_log(run):
        logging.getLogger("engine.run.session").info("candidate 1 done")
    with _UrlCatcher() as urls:
        window.act_open_log.trigger()
    assert [Path(u.toLocalFile()) for u in urls] == [run / "search.log"]
    assert "candidate 1 done" in (run / "search.log").read_text()
    assert "Open run &log" in [a.text() for a in window.menuBar().actions()[0].menu().actions()]
