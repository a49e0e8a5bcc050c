"""Reusable widgets of EMONAS Studio and the small background-task helper they share.

- :class:`emonas_gui.widgets.slice_views.SliceViewer`: three linked orthogonal slice views with a label
  overlay (pyqtgraph).
- :class:`emonas_gui.widgets.surface_view.SurfaceView`: VTK 3D view of label surfaces.
- :func:`emonas_gui.widgets.surface_view.grab_with_vtk`: a widget's screenshot including VTK pixels.
- :class:`TaskRunner`: runs plain Python callables off the GUI thread and delivers results as signals.
- :func:`warn_nonmodal`: a one-line warning in a box that does not block (the app keeps working);
  :func:`write_or_warn` writes a file and reports either way.
- ``plot_export`` (Save plot: PNG, SVG) and ``table_export`` (Export CSV) for plots and tables.
"""
from __future__ import annotations

import logging
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from engine.errors import EmonasError

log = logging.getLogger(__name__)


def warn_nonmodal(parent: QWidget | None, title: str, message: str) -> QMessageBox:
    """Show ``message`` in a warning box that does not block; returns the box."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent)
    box.setWindowModality(Qt.WindowModality.NonModal)
    box.show()
    return box


def write_or_warn(parent: QWidget | None, title: str, write: Callable[[], Any], saved, failed) -> Any:
    """Run ``write()`` (it returns the path written): emit ``saved(path)`` and return the path, or, when
    it raises ``OSError`` or ``ValueError``, show the message with :func:`warn_nonmodal`, emit
    ``failed(message)`` and return None."""
    try:
        written = write()
    except (OSError, ValueError) as exc:
        warn_nonmodal(parent, title, str(exc))
        failed.emit(str(exc))
        return None
    saved.emit(str(written))
    return written


class _Signals(QObject):
    done = Signal(int, object)
    failed = Signal(int, str)


class _Job(QRunnable):
    def __init__(self, signals: _Signals, token: int, fn: Callable[..., Any], args, kwargs):
        super().__init__()
        self.setAutoDelete(True)
        self._signals, self._token, self._fn, self._args, self._kwargs = signals, token, fn, args, kwargs

    def run(self) -> None:  # runs in a pool thread; never touches widgets
        try:
            result = self._fn(*self._args, **self._kwargs)
        except EmonasError as exc:
            self._signals.failed.emit(self._token, str(exc))
        except MemoryError:
            self._signals.failed.emit(self._token, "not enough memory for this operation")
        except Exception as exc:  # noqa: BLE001 - anything else becomes a readable message, logged in full
            log.error("background task failed:\n%s", traceback.format_exc())
            self._signals.failed.emit(self._token, f"{type(exc).__name__}: {exc}")
        else:
            self._signals.done.emit(self._token, result)


class TaskRunner(QObject):
    """Run callables on a private thread pool; results come back on the GUI thread.

    ``submit(fn, *args, on_done=cb, on_error=eb)`` runs ``fn(*args)`` in a worker thread; when it
    returns, ``cb(result)`` is called on the GUI thread (``eb(message: str)`` when it raised). Only the
    latest submission per ``key`` delivers its result, so a slow load that the user has already
    replaced is dropped. ``shutdown()`` waits for running jobs and drops pending results; owners call it
    from their ``closeEvent``.
    """

    def __init__(self, parent: QObject | None = None, max_threads: int = 1):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max_threads)
        self._signals = _Signals(self)
        self._signals.done.connect(self._on_done)
        self._signals.failed.connect(self._on_failed)
        self._next = 0
        self._pending: dict[int, tuple[str, Callable | None, Callable | None]] = {}
        self._latest: dict[str, int] = {}
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args, on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[str], None] | None = None, key: str = "default", **kwargs) -> int:
        """Queue ``fn(*args, **kwargs)``; returns a token identifying the job."""
        if self._closed:
            raise RuntimeError("TaskRunner is shut down")
        self._next += 1
        token = self._next
        self._pending[token] = (key, on_done, on_error)
        self._latest[key] = token
        self._pool.start(_Job(self._signals, token, fn, args, kwargs))
        return token

    def busy(self) -> bool:
        """True while any job is queued or running."""
        return bool(self._pending)

    def wait(self, msecs: int = -1) -> bool:
        """Block until all jobs finished (tests, shutdown); True when they did."""
        return self._pool.waitForDone(msecs)

    def shutdown(self) -> None:
        """Wait for running jobs and forget their results."""
        self._closed = True
        self._pool.clear()
        self._pool.waitForDone()
        self._pending.clear()

    def _take(self, token: int):
        entry = self._pending.pop(token, None)
        if entry is None or self._closed:
            return None
        key = entry[0]
        if self._latest.get(key) != token:
            return None  # superseded by a newer job under the same key
        return entry

    def _on_done(self, token: int, result: Any) -> None:
        entry = self._take(token)
        if entry and entry[1] is not None:
            entry[1](result)

    def _on_failed(self, token: int, message: str) -> None:
        entry = self._take(token)
        if entry is None:
            return
        if entry[2] is not None:
            entry[2](message)
        else:
            log.warning("background task failed: %s", message)
