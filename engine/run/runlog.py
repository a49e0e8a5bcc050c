"""``RUN/search.log``: what a search did, in plain text, whoever started it (CLI, app, a batch job).

While a run is running, the ``engine`` logger's records (INFO and up) and Python warnings go to
``RUN/search.log`` through a ``logging.handlers.RotatingFileHandler`` (5 MB, 3 older files kept as
``search.log.1`` ...), together with one line per search event (candidate started / finished, generation
done, run finished). The handler is removed when the run returns, so several runs in one process each
write their own log.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import math
import sys
from pathlib import Path
from typing import Callable, Iterator

LOG_NAME = "search.log"
MAX_BYTES = 5 * 1024 * 1024
BACKUPS = 3
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("engine.run")


class _RunLogHandler(logging.handlers.RotatingFileHandler):
    """A rotating file whose write errors (a full disk) are one line on stderr, once, not a traceback."""

    _reported = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if not self._reported:
            self._reported = True
            exc = sys.exc_info()[1]
            sys.stderr.write(f"emonas: warning: {self.baseFilename}: cannot write the run log ({exc})\n")


def log_path(run_dir: str | Path) -> Path:
    """Where a run's log is: ``RUN/search.log``."""
    return Path(run_dir) / LOG_NAME


@contextlib.contextmanager
def run_log(run_dir: str | Path) -> Iterator[Path]:
    """Copy the engine's log records into ``RUN/search.log`` while the block runs."""
    path = log_path(run_dir)
    handler = _RunLogHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    engine = logging.getLogger("engine")
    targets = [engine, logging.getLogger("py.warnings")]
    old_level = engine.level
    if old_level == logging.NOTSET or old_level > logging.INFO:
        engine.setLevel(logging.INFO)  # other handlers keep their own levels (the CLI's stderr: warnings)
    for lg in targets:
        lg.addHandler(handler)
    try:
        yield path
    finally:
        for lg in targets:
            lg.removeHandler(handler)
        engine.setLevel(old_level)
        handler.close()


def describe_event(ev) -> str | None:
    """One log line for a search event (``engine.run.session.SearchEvent``), or None for quiet kinds."""
    cand = ev.candidate or {}
    if ev.kind == "started":
        return f"search {ev.status}: generation {ev.generation}/{ev.generations}, candidates {ev.counts}"
    if ev.kind == "candidate_started":
        return f"candidate {cand.get('id')} started (generation {cand.get('generation')})"
    if ev.kind == "candidate_finished":
        f1, f2 = cand.get("f1"), cand.get("f2")
        ok = cand.get("status") == "done" and isinstance(f1, float) and isinstance(f2, float)
        what = f"f1 {f1:.4f}, f2 {f2:.4f}" if ok else (cand.get("error") or "no result")
        secs = cand.get("seconds")
        took = f" in {secs:.0f} s" if isinstance(secs, (int, float)) else ""
        return f"candidate {cand.get('id')} {cand.get('status', 'finished')}{took}: {what}; front {len(ev.front)}"
    if ev.kind == "step":
        best = min((f[1] for f in ev.front), default=math.nan)
        return f"generation {ev.generation}/{ev.generations} done: front {len(ev.front)}, best f1 {best:.4f}"
    if ev.kind == "latency":
        d = getattr(ev, "detail", None) or {}
        return (f"measuring the latency of front candidate {cand.get('id')} ({d.get('done', 0) + 1} of "
                f"{d.get('total', '?')}) on {d.get('target')}")
    if ev.kind == "finished":
        return f"search {ev.status}: {ev.counts}"
    return None


def logging_events(callback: Callable | None) -> Callable:
    """A search callback that logs each event, then passes it on to ``callback``."""

    def on_event(ev) -> None:
        line = describe_event(ev)
        if line:
            log.info("%s", line)
        if callback is not None:
            callback(ev)

    return on_event
