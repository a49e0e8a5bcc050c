"""Garbage collection on the GUI thread only.

Python's cyclic garbage collector runs in whichever thread happens to allocate when a threshold is
crossed. In this app that may be a worker thread (reading scans, a reader of a child process's
messages; PyTorch's work runs in child processes), and a collection there
may free the last reference to a Qt object that lives in the GUI thread; Qt then destroys it from the
wrong thread, which crashes the process at some later event (seen as a segmentation fault inside
``QObject::~QObject`` during a deferred delete).

:func:`install` turns the automatic collector off and collects on a timer in the GUI thread instead,
with the same generation thresholds, the approach pyqtgraph documents for the same problem.
Reference counting still frees everything that is not in a cycle at once; only cycles wait for the
timer. Engine code run without the app (the CLI, scripts) keeps Python's normal collector.

It is a backstop: the app's jobs avoid the cycles it would collect (a job's control holds its job
weakly, a finished job's reaper drops its function and result), but a cycle anyone adds later, in the
app or in a library, must never be freed from a worker thread.
"""
from __future__ import annotations

import gc

#: objectName of the timer (test harnesses that look for timers left running skip it)
TIMER_NAME = "emonas-gui-gc"
#: how often the GUI thread checks the collector's counters
INTERVAL_MS = 500

_timer = None
_threshold: tuple[int, int, int] = gc.get_threshold()


def _check() -> None:
    l0, l1, l2 = gc.get_count()
    t0, t1, t2 = _threshold
    if l0 > t0:
        if l1 > t1:
            gc.collect(2 if l2 > t2 else 1)
        else:
            gc.collect(0)


def install(app=None) -> None:
    """Collect garbage only on the GUI thread from now on (idempotent).

    Call it once the ``QApplication`` exists, from the GUI thread.
    """
    global _timer, _threshold
    if _timer is not None:
        return
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    owner = app if app is not None else QApplication.instance()
    _threshold = gc.get_threshold()
    _timer = QTimer(owner)
    _timer.setObjectName(TIMER_NAME)
    _timer.setInterval(INTERVAL_MS)
    _timer.timeout.connect(_check)
    gc.disable()
    _timer.start()


def installed() -> bool:
    """Whether :func:`install` is in effect."""
    return _timer is not None and not gc.isenabled()


def uninstall() -> None:
    """Give collection back to Python (for tests and shutdown)."""
    global _timer
    if _timer is not None:
        try:
            _timer.stop()
            _timer.deleteLater()
        except RuntimeError:  # the application (its parent) is already gone
            pass
        _timer = None
    gc.enable()
