"""The Qt-free half of the app's long jobs: the control object and the child-process entry point.

``JobControl`` is the cancel object handed to engine jobs (``is_set()``), with pause and resume. It
works with ``threading`` events (a job in a thread of the app) or ``multiprocessing`` events (a job in
a child process, controlled from the app).

``child_main`` runs an engine job in a child process (started with the ``spawn`` method, so this module
must not import Qt) and sends everything the app shows through a queue of plain tuples:
``("event", dict)``, ``("log", str)``, ``("warning", str)``, ``("paused", None)`` and, last,
``("finished", result)`` or ``("failed", one-line message)``. The child runs in a session of its own
(the terminal's Ctrl-C and hang-up reach the app, which decides); SIGINT sent to it stops the job as
the app's Stop does (a clean pause: how another app session pauses a search it re-attached to, as
Ctrl-C pauses a CLI search). Once the app lets the job go (``detached_event``, the window closed with
the search left running), the child sends nothing more and no longer stops when the app ends.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from engine.errors import EmonasError

log = logging.getLogger(__name__)


class JobControl:
    """The cancel object an engine job polls: ``is_set()``; plus pause/resume for the app.

    ``stop_event`` and ``running_event`` default to ``threading.Event``; pass ``multiprocessing``
    events to control a job in another process (both sides build a ``JobControl`` over the same pair).
    """

    def __init__(self, stop_event=None, running_event=None) -> None:
        self._stop = stop_event if stop_event is not None else threading.Event()
        self._running = running_event if running_event is not None else threading.Event()
        self._running.set()
        self.on_pause: Callable[[], None] | None = None

    def is_set(self) -> bool:
        """True once stopped. While paused, blocks the calling (worker) thread until resumed."""
        if not self._running.is_set() and not self._stop.is_set():
            if self.on_pause is not None:
                self.on_pause()
            while not self._running.wait(0.1):
                if self._stop.is_set():
                    break
        return self._stop.is_set()

    # threading.Event-like spelling, for engine code that calls set()
    def set(self) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        if not self._stop.is_set():
            self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set() and not self._stop.is_set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


def one_line(exc: BaseException) -> str:
    """The user-facing one-line text of an exception."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, EmonasError):
        return text or type(exc).__name__
    if isinstance(exc, MemoryError):
        return "out of memory"
    return f"unexpected {type(exc).__name__}: {text}" if text else f"unexpected {type(exc).__name__}"


def plain_event(ev: Any) -> dict:
    """An engine event (a dict, or a dataclass such as the session's ``SearchEvent``) as a dict."""
    if dataclasses.is_dataclass(ev) and not isinstance(ev, type):
        ev = dataclasses.asdict(ev)
    return dict(ev)


def record_line(record: logging.LogRecord) -> tuple[str, str]:
    """What the app shows of a log record: ("warning" for warnings and errors, else "log"), first line."""
    lines = record.getMessage().strip().splitlines()
    return ("warning" if record.levelno >= logging.WARNING else "log"), (lines[0] if lines else "")


class _Outbox:
    """The child's end of the queue: sends nothing once the app has let the job go (detached)."""

    def __init__(self, queue, detached_event=None):
        self.queue = queue
        self.detached = detached_event

    def is_detached(self) -> bool:
        return self.detached is not None and self.detached.is_set()

    def put(self, message: tuple) -> None:
        if not self.is_detached():
            self.queue.put(message)

    def close(self) -> None:
        self.queue.close()
        if self.is_detached():
            self.queue.cancel_join_thread()  # nobody reads any more: never wait to flush
        else:
            self.queue.join_thread()  # everything is delivered before the process ends


class _QueueLogHandler(logging.Handler):
    """Sends log records (one line each) to the app through the child's queue."""

    def __init__(self, queue):
        super().__init__(logging.INFO)
        self.queue = queue

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put(record_line(record))
        except Exception:  # noqa: BLE001 - logging must never break the job
            pass


def run_search(run_dir: str, config: dict | None, callback: Callable[[dict], None], control: JobControl) -> dict:
    """Run a new search (``config``, a SearchConfig as a dict) or resume the run in ``run_dir`` (None)."""
    from engine.config import SearchConfig
    from engine.run.session import SearchSession

    if config is not None:
        session = SearchSession(Path(run_dir), SearchConfig.from_dict(config))
    else:
        session = SearchSession.open(Path(run_dir))
    return session.run(callback=callback, cancel=control)


#: the functions a child process may run, by name (the parent names one; nothing else is unpickled)
CHILD_TARGETS: dict[str, Callable[..., Any]] = {"search": run_search}


def _stop_when_orphaned(control: JobControl, every_s: float = 1.0, detached_event=None) -> threading.Thread:
    """Stop the job if the app that started this process dies (killed, crashed): the run then ends
    as a clean pause that a new app session can resume, instead of running on out of anyone's reach.
    A job the app let go (``detached_event`` set: the user chose to leave the search running) goes on."""
    import os

    parent = os.getppid()

    def watch() -> None:
        while not control.stopped:
            if os.getppid() != parent:  # re-parented: the app is gone
                if detached_event is not None and detached_event.is_set():
                    return
                log.warning("the app that started this job has ended: stopping")
                control.stop()
                return
            time.sleep(every_s)

    thread = threading.Thread(target=watch, name="emonas-parent-watch", daemon=True)
    thread.start()
    return thread


def _own_session(control: JobControl) -> None:
    """Leave the app's session and process group, and make SIGINT stop the job cleanly.

    Ctrl-C in the terminal that started the app, or the terminal closing, then reaches the app only
    (which stops the job through ``stop_event``, or leaves it running), and a search left running
    outlives the terminal. SIGINT sent to this process (another app session pausing the run it
    re-attached to) stops the job as Stop does; the handler hands the stop to a thread, since the
    interrupted code may hold the control's own locks."""
    import os
    import signal

    try:
        os.setsid()
    except OSError:  # already a session leader (not when spawned by the app): keep Ctrl-C away as before
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return
    signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=control.stop, name="emonas-sigint",
                                                             daemon=True).start())


def child_main(target: str, args: tuple, queue, stop_event, running_event, detached_event=None) -> None:
    """Entry point of a job's child process: run ``CHILD_TARGETS[target](*args, callback, control)``.

    ``detached_event`` (optional): set by the app when it lets the job go on without it."""
    control = JobControl(stop_event, running_event)
    _own_session(control)
    outbox = _Outbox(queue, detached_event)
    logging.captureWarnings(True)
    handler = _QueueLogHandler(outbox)
    for name in ("engine", "py.warnings"):
        logging.getLogger(name).addHandler(handler)
    logging.getLogger("engine").setLevel(logging.INFO)
    control.on_pause = lambda: outbox.put(("paused", None))
    _stop_when_orphaned(control, detached_event=detached_event)
    try:
        result = CHILD_TARGETS[target](*args, lambda ev: outbox.put(("event", plain_event(ev))), control)
    except EmonasError as exc:
        outbox.put(("failed", one_line(exc)))
    except BaseException as exc:  # noqa: BLE001 - the app gets one line; the traceback goes to its log
        outbox.put(("log", f"{target} failed: " + " | ".join(traceback.format_exc().strip().splitlines()[-3:])))
        outbox.put(("failed", one_line(exc)))
    else:
        outbox.put(("finished", result))
    finally:
        outbox.close()
