"""The Qt-free half of the app's long jobs, which lives in the engine (``engine.run.child`` and
``engine.run.jobs``): the control object, the child-process entry point and the jobs it may run.

Kept as the app's one import point for them; nothing here imports Qt (the child process imports it).
"""
from __future__ import annotations

from engine.run.child import JobControl, child_main, one_line, plain_event, record_line
from engine.run.jobs import JOBS as CHILD_TARGETS
from engine.run.jobs import search as run_search

__all__ = ["JobControl", "child_main", "one_line", "plain_event", "record_line", "CHILD_TARGETS", "run_search"]
