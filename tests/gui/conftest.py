"""Test harness for the desktop app (pytest-qt, offscreen, no X server).

- Qt runs on the ``offscreen`` platform and VTK renders through EGL (set before anything imports Qt).
- Every test under tests/gui gets the ``gui`` marker.
- Every test gets a private ``EMONAS_CACHE_DIR`` and private QSettings (INI files in a tmp folder).
- ``no_leaks`` (autouse) fails a test that leaves a QThread, a running QTimer, a busy QThreadPool or a
  Python thread behind once its widgets have been closed.
"""
from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import pytest  # noqa: E402

GUI_DIR = Path(__file__).resolve().parent
# Threads and timers get this long to wind down after the widgets are closed.
LEAK_GRACE_S = 5.0


def pytest_collection_modifyitems(config, items):
    """Mark every test collected from tests/gui with ``gui``."""
    for item in items:
        if GUI_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gui)


@pytest.fixture(scope="session", autouse=True)
def _private_settings(tmp_path_factory):
    """Keep QSettings of the tests away from the user's real settings."""
    from PySide6.QtCore import QSettings

    folder = tmp_path_factory.mktemp("qsettings")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        for scope in (QSettings.Scope.UserScope, QSettings.Scope.SystemScope):
            QSettings.setPath(fmt, scope, str(folder))
    os.environ["XDG_CONFIG_HOME"] = str(folder)
    yield folder


@pytest.fixture(scope="session", autouse=True)
def _gui_thread_gc(qapp):
    """As in the app: the cyclic garbage collector runs on the GUI thread only."""
    from emonas_gui import gcguard

    gcguard.install(qapp)
    yield
    gcguard.uninstall()


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """A private engine cache for the GUI tests (shared by them: the demo dataset is built once)."""
    path = tmp_path_factory.mktemp("emonas_cache")
    old = os.environ.get("EMONAS_CACHE_DIR")
    os.environ["EMONAS_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("EMONAS_CACHE_DIR", None)
    else:
        os.environ["EMONAS_CACHE_DIR"] = old


def _live_qobjects(cls):
    """Python-wrapped instances of ``cls`` whose C++ object is still alive."""
    from shiboken6 import Shiboken

    out = []
    for obj in gc.get_objects():
        try:
            if issubclass(type(obj), cls) and Shiboken.isValid(obj):
                out.append(obj)
        except ReferenceError:  # dead weak proxies
            continue
    return out


def find_leaks(threads_before: set[threading.Thread]) -> list[str]:
    """Describe the threads and timers still running (empty list when none).

    Looks at Python-wrapped QThreads (running), QTimers (active, including those owned by living
    widgets), the global QThreadPool (active jobs) and Python threads started since ``threads_before``.
    """
    from PySide6.QtCore import QThread, QThreadPool, QTimer
    from PySide6.QtWidgets import QApplication

    from emonas_gui import gcguard

    leaks = []
    main_thread = QApplication.instance().thread() if QApplication.instance() else None
    for t in _live_qobjects(QThread):
        if t is not main_thread and t.isRunning():
            leaks.append(f"QThread still running: {t!r} ({t.objectName() or type(t).__name__})")
    timers = set(_live_qobjects(QTimer))
    app = QApplication.instance()
    if app is not None:
        for w in app.topLevelWidgets():
            timers.update(w.findChildren(QTimer))
    for tm in timers:
        try:
            if tm.isActive() and tm.objectName() != gcguard.TIMER_NAME:
                parent = tm.parent()
                leaks.append(f"QTimer still active: interval {tm.interval()} ms, parent {type(parent).__name__}")
        except RuntimeError:  # deleted meanwhile
            continue
    active = QThreadPool.globalInstance().activeThreadCount()
    if active:
        leaks.append(f"QThreadPool still has {active} active job(s)")
    for th in threading.enumerate():
        if th in threads_before or isinstance(th, threading._DummyThread) or not th.is_alive():
            continue
        leaks.append(f"Python thread still running: {th.name}")
    return leaks


def settle(timeout_s: float = LEAK_GRACE_S, threads_before: set | None = None) -> list[str]:
    """Delete closed widgets, let workers finish, and return what still leaks after ``timeout_s``."""
    from PySide6.QtCore import QCoreApplication, QEvent
    from PySide6.QtWidgets import QApplication

    before = threads_before if threads_before is not None else set(threading.enumerate())
    deadline = time.monotonic() + timeout_s
    while True:
        app = QApplication.instance()
        if app is not None:
            QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete.value)
            app.processEvents()
        gc.collect()
        leaks = find_leaks(before)
        if not leaks or time.monotonic() > deadline:
            return leaks
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Fail the test if it leaves a thread or a timer running after its widgets are closed.

    pytest-qt closes the widgets registered with ``qtbot.addWidget`` before fixtures are torn down,
    so by the time this runs every panel has had its ``closeEvent``.
    """
    before = set(threading.enumerate())
    yield
    if "qapp" not in request.fixturenames and "qtbot" not in request.fixturenames:
        # Only Python threads matter for tests without a QApplication.
        leaks = [f"Python thread still running: {t.name}" for t in threading.enumerate()
                 if t not in before and t.is_alive() and not isinstance(t, threading._DummyThread)]
    else:
        leaks = settle(LEAK_GRACE_S, before)
    if leaks:
        pytest.fail("test left work running:\n  " + "\n  ".join(leaks), pytrace=False)


def write_msd_dataset(root: Path, n_cases: int = 3, shape=(40, 48, 24), spacing=(1.0, 1.0, 2.0),
                      seed: int = 0, modalities: tuple[str, ...] = ("MRI",)) -> Path:
    """A small Medical Segmentation Decathlon tree of real NIfTI files: a smooth 'head' with two
    labelled structures, noise and a bias field, labels background/tissue/core. Several modalities
    are stored as one 4D file per case (as in Task05_Prostate), the second with inverted contrast."""
    import json

    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    affine = np.diag(list(spacing) + [1.0])
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    cx, cy, cz = (np.array(shape) - 1) / 2
    training = []
    for i in range(n_cases):
        r = 0.38 + 0.04 * rng.random()
        d = ((x - cx) / (shape[0] * r)) ** 2 + ((y - cy) / (shape[1] * r)) ** 2 + ((z - cz) / (shape[2] * r)) ** 2
        label = np.zeros(shape, np.uint8)
        label[d < 1.0] = 1
        label[d < 0.3] = 2
        image = 100.0 * label + 40.0 * (d < 1.3) + rng.normal(0, 8, shape)
        image *= 1.0 + 0.1 * (x / shape[0])  # bias field
        name = f"case_{i:03d}.nii.gz"
        if len(modalities) > 1:
            image = np.stack([image * (1 if m % 2 == 0 else -0.5) + 10 * m for m in range(len(modalities))], axis=-1)
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "TinyTest", "description": "generated for the GUI tests",
            "modality": {str(m): name for m, name in enumerate(modalities)},
            "labels": {"0": "background", "1": "tissue", "2": "core"}, "numTraining": n_cases,
            "training": training, "test": []}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


@pytest.fixture(scope="session")
def msd_dataset(tmp_path_factory) -> Path:
    """A 3-case MSD dataset folder (40x48x24 voxels at 1x1x2 mm; labels tissue=1, core=2)."""
    return write_msd_dataset(tmp_path_factory.mktemp("TaskTiny") / "Task99_Tiny")


def nonblank(pixels, min_levels: int = 8) -> bool:
    """Whether an (H, W, 3) image shows something: many distinct grey levels, not one flat colour."""
    import numpy as np

    grey = np.asarray(pixels).astype(np.int32).sum(axis=-1)
    return len(np.unique(grey)) >= min_levels and float(grey.std()) > 2.0
