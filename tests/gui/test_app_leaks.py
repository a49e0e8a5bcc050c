"""The harness fixture that fails a GUI test leaving threads or timers running really catches them."""
from __future__ import annotations

import threading

from PySide6.QtCore import QThread, QTimer

from conftest import find_leaks, settle


class _Sleeper(QThread):
    def __init__(self):
        super().__init__()
        self.stop = threading.Event()

    def run(self):
        self.stop.wait(10)


def test_running_qthread_and_timer_are_reported(qtbot):
    before = set(threading.enumerate())
    thread = _Sleeper()
    thread.start()
    timer = QTimer()
    timer.start(1000)
    py_thread = threading.Thread(target=thread.stop.wait, args=(10,), name="left-behind")
    py_thread.start()
    try:
        leaks = find_leaks(before)
        text = "\n".join(leaks)
        assert "QThread still running" in text
        assert "QTimer still active" in text
        assert "left-behind" in text
    finally:
        timer.stop()
        thread.stop.set()
        thread.wait(5000)
        py_thread.join(5)
    assert settle(2.0, before) == []


def test_closed_viewer_leaves_nothing_running(qtbot):
    import numpy as np

    from emonas_gui.widgets.surface_view import SurfaceView

    view = SurfaceView()
    qtbot.addWidget(view)
    view.show()
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:12, 4:12, 4:12] = 1
    view.set_labels(labels, (1, 1, 1), {1: ("cube", (200, 50, 50))})  # closed while (maybe) building
    view.close()
    assert settle(5.0) == []
