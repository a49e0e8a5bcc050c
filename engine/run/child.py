"""Running an engine job in a child process: the control object, the entry point, the parent's handle.

A job is a function ``job(request, callback, control) -> result`` (``engine.run.jobs``). Run in a child
process, PyTorch's work holds none of the caller's interpreter (a GUI thread stays responsive) and a
crash in native code or a kill ends the child only: the caller gets one line saying so.

- ``JobControl``: what a job polls, ``is_set()`` (true once stopped; blocks while paused), with
  ``stop``, ``pause`` and ``resume`` for the caller. Over ``threading`` events for a job in a thread,
  over ``multiprocessing`` events for a job in a child process (both sides wrap the same pair).
- ``child_main``: the child's entry point (started with ``spawn``: this module imports nothing heavy
  and no Qt). Everything the caller shows travels through a queue of plain tuples: ``("event", dict)``,
  ``("log", str)``, ``("warning", str)``, ``("paused", None)`` and, last, ``("finished", result)`` or
  ``("failed", one-line message)``.
- ``ChildJob``: the caller's handle: ``start()``, ``next_message()``, ``stop()``, ``kill()``, ``join()``,
  and ``run()`` to drive a job to its end from a plain thread or script.
"""

from __future__ import annotations

import dataclasses
import logging
import queue as queues
import threading
import time
import traceback
from typing import Any, Callable

from engine.errors import EmonasError, one_line

log = logging.getLogger(__name__)


class JobControl:
    """The cancel object an engine job polls: ``is_set()``; plus pause/resume for the caller.

    ``stop_event`` and ``running_event`` default to ``threading.Event``; pass ``multiprocessing``
    events to control a job in another process (both sides build a ``JobControl`` over the same pair).
    Given events are taken as they are: a job paused (running cleared) before its process started
    stays paused, it stops at its first check.
    """

    def __init__(self, stop_event=None, running_event=None) -> None:
        self._stop = stop_event if stop_event is not None else threading.Event()
        if running_event is None:
            running_event = threading.Event()
            running_event.set()
        self._running = running_event
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


def plain_event(ev: Any) -> dict:
    """An engine event (a dict, or a dataclass such as the session's ``SearchEvent``) as a dict."""
    if hasattr(ev, "to_dict"):
        return dict(ev.to_dict())
    if dataclasses.is_dataclass(ev) and not isinstance(ev, type):
        ev = dataclasses.asdict(ev)
    return dict(ev)


def record_line(record: logging.LogRecord) -> tuple[str, str]:
    """What the caller shows of a log record: ("warning" for warnings and errors, else "log"), first line."""
    lines = record.getMessage().strip().splitlines()
    return ("warning" if record.levelno >= logging.WARNING else "log"), (lines[0] if lines else "")


class _Outbox:
    """The child's end of the queue: sends nothing once the caller has let the job go (detached)."""

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
    """Sends log records (one line each) to the caller through the child's queue."""

    def __init__(self, queue):
        super().__init__(logging.INFO)
        self.queue = queue

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put(record_line(record))
        except Exception:  # noqa: BLE001 - logging must never break the job
            pass


def _stop_when_orphaned(control: JobControl, every_s: float = 1.0, detached_event=None) -> threading.Thread:
    """Stop the job if the caller that started this process dies (killed, crashed): the run then ends
    as a clean pause that a new app session can resume, instead of running on out of anyone's reach.
    A job the caller let go (``detached_event`` set: the user chose to leave the search running) goes on."""
    import os

    parent = os.getppid()

    def watch() -> None:
        while not control.stopped:
            if os.getppid() != parent:  # re-parented: the caller is gone
                if detached_event is not None and detached_event.is_set():
                    return
                log.warning("the caller that started this job has ended: stopping")
                control.stop()
                return
            time.sleep(every_s)

    thread = threading.Thread(target=watch, name="emonas-parent-watch", daemon=True)
    thread.start()
    return thread


def _own_session(control: JobControl) -> None:
    """Leave the caller's session and process group, and make SIGINT stop the job cleanly.

    Ctrl-C in the terminal that started the caller, or the terminal closing, then reaches the caller only
    (which stops the job through ``stop_event``, or leaves it running), and a search left running
    outlives the terminal. SIGINT sent to this process (another app session pausing the run it
    re-attached to) stops the job as Stop does; the handler hands the stop to a thread, since the
    interrupted code may hold the control's own locks."""
    import os
    import signal

    try:
        os.setsid()
    except OSError:  # already a session leader (not when spawned by the caller): keep Ctrl-C away as before
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return
    signal.signal(signal.SIGINT, lambda *_: threading.Thread(target=control.stop, name="emonas-sigint",
                                                             daemon=True).start())


def child_main(target: str, args: tuple, queue, stop_event, running_event, detached_event=None) -> None:
    """Entry point of a job's child process: run ``JOBS[target](*args, callback, control)``.

    ``detached_event`` (optional): set by the caller when it lets the job go on without it."""
    from engine.run.jobs import JOBS

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
        result = JOBS[target](*args, lambda ev: outbox.put(("event", plain_event(ev))), control)
    except EmonasError as exc:
        partial = getattr(exc, "result", None)  # a cancelled job's whole part (JobCancelled.result)
        outbox.put(("finished", partial) if partial is not None else ("failed", one_line(exc)))
    except BaseException as exc:  # noqa: BLE001 - the caller gets one line; the traceback goes to its log
        outbox.put(("log", f"{target} failed: " + " | ".join(traceback.format_exc().strip().splitlines()[-3:])))
        outbox.put(("failed", one_line(exc)))
    else:
        outbox.put(("finished", result))
    finally:
        outbox.close()


class ChildJob:
    """A job of ``engine.run.jobs.JOBS`` in a child process, seen from the caller.

    ``target`` names the job (nothing else is unpickled in the child), ``args`` are its arguments
    before ``callback`` and ``control`` (a typed request for most jobs). A child that dies without a
    result (killed, out of memory, a crash in native code) gives ``("failed", why)`` with its exit code.
    """

    def __init__(self, target: str, args: tuple, name: str | None = None):
        import multiprocessing

        from engine.run.jobs import JOBS

        if target not in JOBS:
            raise ValueError(f"unknown job {target!r}")
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads (or Qt)
        running = self._ctx.Event()
        running.set()  # set here, once: the child's own JobControl takes it as it finds it
        self.control = JobControl(self._ctx.Event(), running)
        self.target, self.args, self.name = target, tuple(args), name or target
        self.detached = self._ctx.Event()  # set: the job goes on without its caller (see child_main)
        self.proc = None
        self._queue = None
        self.ended = False

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("a job runs once")
        self._queue = self._ctx.Queue()
        self.proc = self._ctx.Process(
            target=child_main, name=f"emonas-{self.name}", daemon=True,
            args=(self.target, self.args, self._queue, self.control._stop, self.control._running, self.detached))
        self.proc.start()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def next_message(self, poll_s: float = 0.2) -> tuple[str, Any]:
        """The child's next message (blocking); a ("failed", why) of its own when the child is gone without
        one; ("detached", None) once ``detached`` is set."""
        proc, queue = self.proc, self._queue
        if proc is None:
            raise RuntimeError("the job has not started")
        while True:
            if self.detached.is_set():  # the child runs on without its caller: nothing more to read
                return "detached", None
            try:
                msg = queue.get(timeout=poll_s)
            except queues.Empty:
                if proc.is_alive():
                    continue
                try:  # the child may have ended right after its last message
                    msg = queue.get(timeout=1.0)
                except queues.Empty:
                    msg = ("failed", f"the {self.name} process ended unexpectedly (exit code {proc.exitcode})"
                           + ("; the run can be resumed" if self.target == "search" else ""))
            except (EOFError, OSError) as exc:  # the queue's pipe broke with the child
                msg = ("failed", f"lost contact with the {self.name} process ({exc})")
            if msg[0] in ("finished", "failed"):
                self.ended = True
            return msg

    def stop(self) -> None:
        """Ask the job to stop (it ends at its next check with a one-line "cancelled")."""
        self.control.stop()

    def kill(self) -> None:
        """End the child at once (what it was writing is left incomplete, never published)."""
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()

    def join(self, timeout_s: float | None = None) -> bool:
        """Wait for the child process to exit; True when it has."""
        if self.proc is None:
            return True
        self.proc.join(timeout_s)
        if not self.proc.is_alive() and self._queue is not None:
            self._queue.close()
        return not self.proc.is_alive()

    def run(self, on_event: Callable[[dict], None] | None = None,
            on_log: Callable[[str, str], None] | None = None) -> Any:
        """Start (if needed) and drive the job to its end: its result, or ``EmonasError`` with its one line."""
        if self.proc is None:
            self.start()
        try:
            while True:
                kind, payload = self.next_message()
                if kind == "event" and on_event is not None:
                    on_event(payload)
                elif kind in ("log", "warning") and on_log is not None:
                    on_log(kind, payload)
                elif kind == "finished":
                    return payload
                elif kind == "failed":
                    raise EmonasError(payload)
        finally:
            if self.ended:
                self.join(30)
