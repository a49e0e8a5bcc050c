"""Shared plumbing of the CLI: one-line errors, exit codes, the ``--json`` contract, progress."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Callable

from engine.errors import EmonasError
from engine.jsonsafe import jsonable

EXIT_USAGE = 2


class CliArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        json_mode = "--json" in sys.argv
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.stderr.flush()
        if json_mode:
            sys.stdout.write(json.dumps({"error": message}) + "\n")
            sys.stdout.flush()
        sys.exit(EXIT_USAGE)


def add_common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags every subcommand accepts."""
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    return parser


def device_arg(value: str) -> str:
    """An argparse ``type`` for ``--device``: auto, cpu, cuda or cuda:N (a usage error otherwise)."""
    from engine.device import check_device_name
    from engine.errors import ConfigError

    try:
        return check_device_name(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def count_arg(value: str) -> int:
    """An argparse ``type`` for a count that users write as 100000, 100_000, 100,000 or 1e5 (a whole
    number >= 0; a usage error otherwise)."""
    text = value.strip().replace("_", "").replace(",", "")
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not (number >= 0 and number.is_integer()):
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number >= 0")
    return int(number)


def subcommand(sub, name: str, handler: Callable[[argparse.Namespace], dict | None], help: str, **kw):
    """Add a subcommand with the common flags; ``handler(args)`` returns the result dict."""
    p = sub.add_parser(name, help=help, description=help, **kw)
    add_common(p)
    p.set_defaults(handler=handler)
    return p


def print_json(result: dict) -> None:
    sys.stderr.flush()
    sys.stdout.write(json.dumps(jsonable(result), allow_nan=False) + "\n")
    sys.stdout.flush()


def run_command(args: argparse.Namespace) -> int:
    """Run the chosen handler; user errors become one line and exit code 2."""
    global _quiet
    json_mode = getattr(args, "json", False)
    _quiet = bool(json_mode)
    try:
        result = args.handler(args)
    except EmonasError as exc:
        from engine.run.jobs import JobCancelled

        fail(str(exc), json_mode)
        return 130 if isinstance(exc, JobCancelled) else EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("emonas: interrupted\n")
        if json_mode:
            print_json({"error": "interrupted"})
        return 130
    except BrokenPipeError:
        return _closed_pipe()
    except OSError as exc:  # a file or folder the engine did not expect to fail: still one line
        fail(f"{exc.filename}: {exc.strerror or exc}" if exc.filename else f"{type(exc).__name__}: {exc}", json_mode)
        return EXIT_USAGE
    except MemoryError:
        fail("out of memory (try a smaller patch or batch, or fewer workers)", json_mode)
        return EXIT_USAGE
    code = 0
    if isinstance(result, dict):
        code = int(result.pop("_exit_code", 0))
        if json_mode:
            try:
                print_json(result)
            except BrokenPipeError:
                return _closed_pipe()
    return code


@contextlib.contextmanager
def record_bar(stage: str, desc: str, on_other: Callable | None = None):
    """A callback for a job's progress records (``engine.run.jobs.JobProgress``): one step of a progress
    bar per record of ``stage`` (sized by the first one's total); other records go to ``on_other``."""
    bar = None

    def callback(p) -> None:
        nonlocal bar
        if p.stage == stage:
            if bar is None:
                bar = progress_bar(p.total, desc).__enter__()
            bar.update(1)
        elif on_other is not None:
            on_other(p)

    try:
        yield callback
    finally:
        if bar is not None:
            bar.close()


@contextlib.contextmanager
def cancel_on_interrupt():
    """A job's control for a command: the first Ctrl-C (SIGINT) asks the job to stop cleanly (it ends
    with a one-line "cancelled", exit code 130, nothing half-written); a second one interrupts at once."""
    import signal
    import threading

    from engine.run.child import JobControl

    control = JobControl()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield control
        return

    def on_sigint(signum, frame):
        if control.stopped:
            raise KeyboardInterrupt
        sys.stderr.write("emonas: stopping at the next step (Ctrl-C again to quit at once)\n")
        sys.stderr.flush()
        control.stop()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield control
    finally:
        signal.signal(signal.SIGINT, previous)


def _closed_pipe() -> int:
    """The reader went away (``emonas ... | head``): stop quietly, as Unix tools do."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
    except OSError:
        pass
    return 141


def fail(message: str, json_mode: bool = False) -> None:
    first = str(message).strip().splitlines()[0] if str(message).strip() else "error"
    sys.stderr.write(f"emonas: error: {first}\n")
    sys.stderr.flush()
    if json_mode:
        print_json({"error": first})


def show_progress() -> bool:
    """Progress bars only on an interactive terminal, never when output is piped."""
    return sys.stderr.isatty() and os.environ.get("EMONAS_NO_PROGRESS") != "1"


#: Set by ``run_command`` for ``--json``: its output stays the one JSON object, no progress lines.
_quiet = False


def progress_bar(total: int | None, desc: str):
    """A tqdm bar on a terminal; plain timestamped lines on stderr when it is not a terminal (nohup,
    SLURM, a pipe); nothing with ``--json`` or ``EMONAS_NO_PROGRESS=1``."""
    if show_progress():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)
    if _quiet or os.environ.get("EMONAS_NO_PROGRESS") == "1":
        return _NullBar()
    return PlainProgress(total, desc)


class PlainProgress:
    """Progress as whole lines, for logs: ``2026-01-31 12:00:00 predicting 3/10 (30%), ...``.

    A line at the first step, whenever a tenth more is done, at least every ``every_s`` seconds
    otherwise, and at the end; never a carriage return or an escape sequence.
    """

    def __init__(self, total: int | None, desc: str, stream=None, every_s: float = 30.0):
        self.total, self.desc, self.n = total, desc, 0
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.postfix = ""
        self._last_t: float | None = None
        self._last_tenth = -1
        self._last_n = 0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        tenth = int(10 * self.n / self.total) if self.total else -1
        if self._last_t is None or now - self._last_t >= self.every_s or tenth > self._last_tenth:
            self._emit(now, tenth)

    def _emit(self, now: float, tenth: int) -> None:
        done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self.desc} {done}" + (f", {self.postfix}" if self.postfix else "")
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed log must not stop the work
            pass
        self._last_t, self._last_tenth, self._last_n = now, tenth, self.n

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def close(self) -> None:
        if self.n != self._last_n:
            self._emit(time.monotonic(), self._last_tenth)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass
