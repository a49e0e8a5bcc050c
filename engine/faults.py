"""Named fault points, for tests that prove a run survives crashes, full disks and failing candidates.

Code that must survive a fault calls ``fault("point")`` at the moment it names. Nothing happens
unless the environment variable ``EMONAS_FAULT`` asks for that point::

    EMONAS_FAULT="store.update:3:kill"          # SIGKILL this process the 3rd time store.update is reached
    EMONAS_FAULT="store.state:2+:diskfull"      # from the 2nd time on, fail as SQLite does on a full disk
    EMONAS_FAULT="train.step:1:oom,session.start:1:exit"    # several, comma-separated

``n`` counts how often this process reached the point (1-based); ``n+`` means that time and every
later one. Actions: ``kill`` (SIGKILL, the default: no cleanup, no flush, as a power cut or the OOM
killer), ``exit`` (``os._exit(3)``), ``raise`` (RuntimeError), ``oom`` (``torch.OutOfMemoryError``),
``memory`` (MemoryError), ``nan`` (returns ``"nan"`` for the caller to poison its value),
``diskfull`` (``sqlite3.OperationalError("database or disk is full")``), ``enospc`` (OSError
ENOSPC), ``readonly`` (``sqlite3.OperationalError("attempt to write a readonly database")``) and
``erofs`` (OSError EROFS).

Points in the engine: ``session.start`` (lock taken, nothing read yet), ``session.ask`` (genomes asked,
state not saved), ``session.tell`` (told, state not saved), ``session.step`` (a step saved),
``session.finish`` (the search done, final status not written), ``candidate.before_commit`` /
``candidate.after_commit`` (a finished candidate's result in hand / written), ``candidate.<id>`` (in
the process about to train candidate ``id``: in-process, a pool worker or a Ray worker), ``store.<tx>`` inside
every write transaction just before COMMIT (``store.create``, ``store.meta``, ``store.state``, ``store.add``,
``store.update``, ``store.requeue``), ``train.step`` (each training step) and ``candidate.folder``
(a training folder half written).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sqlite3

log = logging.getLogger(__name__)

ENV = "EMONAS_FAULT"
ACTIONS = ("kill", "exit", "raise", "oom", "memory", "nan", "diskfull", "enospc", "readonly", "erofs")

_counts: dict[str, int] = {}
_parsed: tuple[str, dict[str, list[tuple[int, bool, str]]]] = ("", {})


def _rules() -> dict[str, list[tuple[int, bool, str]]]:
    global _parsed
    text = os.environ.get(ENV, "")
    if text != _parsed[0]:
        rules: dict[str, list[tuple[int, bool, str]]] = {}
        for item in filter(None, (s.strip() for s in text.split(","))):
            point, _, rest = item.partition(":")
            n, _, action = rest.partition(":")
            action = action or "kill"
            if action not in ACTIONS:
                raise ValueError(f"{ENV}: unknown action {action!r} in {item!r} (one of {', '.join(ACTIONS)})")
            onward = n.endswith("+")
            rules.setdefault(point, []).append((int(n.rstrip("+") or 1), onward, action))
        _parsed = (text, rules)
    return _parsed[1]


def reset() -> None:
    """Forget how often each point was reached (tests running several scenarios in one process)."""
    _counts.clear()


def fault(point: str) -> str | None:
    """Reached ``point``: carry out the fault ``EMONAS_FAULT`` asks for here, if any.

    Returns ``"nan"`` for the ``nan`` action (the caller poisons its value), else None.
    """
    if not os.environ.get(ENV):
        return None
    rules = _rules().get(point)
    if not rules:
        return None
    _counts[point] = k = _counts.get(point, 0) + 1
    for n, onward, action in rules:
        if k == n or (onward and k > n):
            log.warning("injected fault %s at %s (time %d)", action, point, k)
            return _do(action, point)
    return None


def _do(action: str, point: str) -> str | None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "exit":
        os._exit(3)
    if action == "raise":
        raise RuntimeError(f"injected fault at {point}")
    if action == "oom":
        import torch

        raise torch.OutOfMemoryError(f"CUDA out of memory (injected at {point})")
    if action == "memory":
        raise MemoryError(f"injected at {point}")
    if action == "diskfull":
        raise sqlite3.OperationalError("database or disk is full")
    if action == "readonly":
        raise sqlite3.OperationalError("attempt to write a readonly database")
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if action == "erofs":
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    return action  # "nan"
