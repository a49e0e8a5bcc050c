"""One candidate as a worker runs it: plain-data task in, plain-data result out.

The same function serves the in-process executor, the local process pool and Ray workers, so a task
and its result travel as the plain dicts of ``engine.run.records.CandidateTask.to_dict()`` and
``CandidateResult.to_dict()``::

    {"candidate_id": 7, "genome": {...}, "out_dir": "RUN/candidates/7", "device": "cpu",
     "data": {"dataset": "demo", "seed": 0, "cache_dir": "RUN/cache", "split": {...}},
     "train": {TrainerConfig fields}, "stop_below": {"5": 0.41, ...}, "threads": 2, "version": 1}

Any failure (exception, NaN loss, out of memory) becomes a result with ``status="failed"`` and the
error text; the search goes on. ``stop_below`` (optional, from the early-stopping rule) maps an epoch
to the validation mean Dice a candidate must have reached by then (best so far); below it, training
stops there and the candidate is recorded with its partial curves (``early_stopped`` in its metrics).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import traceback
from typing import Any, Callable

from engine.jsonsafe import jsonable
from engine.run.records import CandidateResult, CandidateTask

log = logging.getLogger(__name__)

_DATA_CACHE: dict[str, Any] = {}


def training_data(spec: dict):
    """The preprocessed training data of a task, loaded once per worker process."""
    key = json.dumps(spec, sort_keys=True)
    if key not in _DATA_CACHE:
        from engine.train.data import prepare_training_data

        _DATA_CACHE.clear()  # one dataset per worker at a time
        _DATA_CACHE[key] = prepare_training_data(
            spec["dataset"], seed=int(spec.get("seed", 0)), plan_overrides=spec.get("plan_overrides"),
            cache_dir=spec.get("cache_dir"), split=spec.get("split"), plan=spec.get("plan"),
        )
    return _DATA_CACHE[key]


def pin_plan(spec: dict, data) -> dict:
    """``spec`` with the choices of ``data``'s plan that planning defaults may change written in as
    overrides (today: the resampling), so that resuming, retraining and every worker preprocess exactly
    as the run began, whatever a later version plans by default. ``data`` stays cached for the new spec.
    """
    overrides = dict(spec.get("plan_overrides") or {})
    overrides["resampling"] = dict(data.plan.resampling)
    pinned = {**spec, "plan_overrides": overrides}
    _DATA_CACHE[json.dumps(pinned, sort_keys=True)] = data  # the same plan: no second preparation
    return pinned


class AnyFlag:
    """A cancel flag that is set when any of the given flags (objects with ``is_set()``) is."""

    def __init__(self, *flags):
        self.flags = [f for f in flags if f is not None]

    def is_set(self) -> bool:
        return any(f.is_set() for f in self.flags)


def failed_result(task: dict, error: str, started: float | None = None) -> dict:
    """The dict of a failed ``CandidateResult`` for the task dict ``task`` (however broken the task)."""
    now = time.time()
    return CandidateResult(task.get("candidate_id"), "failed", error=error, started_at=started or now,
                           finished_at=now, seconds=now - (started or now), device=task.get("device")).to_dict()


def evaluate_candidate(task: dict, cancel=None, progress: Callable[[dict], None] | None = None) -> dict:
    """Train the genome of the task dict (``CandidateTask.to_dict()``); returns the result's dict
    (``CandidateResult.to_dict()``, status done, failed or cancelled)."""
    started = time.time()
    try:
        return _evaluate(CandidateTask.from_dict(task), cancel, progress, started).to_dict()
    except Exception as exc:  # noqa: BLE001 - any failure of one candidate must not stop the search
        text = f"{type(exc).__name__}: {exc}".strip()
        log.warning("candidate %s failed: %s", task.get("candidate_id"), text)
        log.debug("%s", traceback.format_exc())
        return failed_result(task, text.splitlines()[0][:2000], started)


def _evaluate(task: CandidateTask, cancel, progress, started: float) -> CandidateResult:
    import torch

    from engine.genome import Genome
    from engine.train.config import TrainerConfig
    from engine.train.trainer import train_candidate

    if task.threads:
        torch.set_num_threads(int(task.threads))
    device = str(task.device or "auto")
    if device.startswith("cuda:"):
        torch.cuda.set_device(int(device.split(":")[1]))
        device = "cuda"
    genome = Genome.from_dict(task.genome)
    data = training_data(task.data)
    stop_below = {int(k): float(v) for k, v in task.stop_below.items()}
    # the rule's checkpoints are validated epochs, however rarely the trainer validates otherwise
    config = TrainerConfig.from_dict({**task.train, "device": device, "validate_at": sorted(stop_below) or None})
    early = threading.Event()
    best = [-math.inf]

    def on_event(event: dict) -> None:
        if event.get("event") == "epoch":
            dice = event.get("val_dice_mean")
            if dice is not None and math.isfinite(dice):
                best[0] = max(best[0], float(dice))
            threshold = stop_below.get(int(event.get("epoch", 0)))
            if threshold is not None and best[0] < threshold:
                log.info("candidate %s stopped early at epoch %s (%.3f < %.3f)", task.candidate_id,
                         event.get("epoch"), best[0], threshold)
                early.set()
        if progress is not None:
            progress({"candidate_id": task.candidate_id, **jsonable(event)})

    result = train_candidate(genome, data, config, out_dir=task.out_dir, callback=on_event,
                             cancel=AnyFlag(cancel, early))
    finished = time.time()
    status = result.status
    if status == "cancelled" and not early.is_set():
        return CandidateResult(task.candidate_id, "cancelled")
    ok = math.isfinite(result.f1)
    metrics = {
        "dice": result.dice, "epochs": result.epochs, "best_epoch": result.best_epoch,
        "train_step_seconds": result.train_step_seconds, "early_stopped": early.is_set(),
        "fit_seconds": result.seconds,
        "validation": (result.metrics or {}).get("summary", {}),
    }
    return CandidateResult(
        candidate_id=task.candidate_id,
        status="done" if ok else "failed",
        error=None if ok else "training gave no validated epoch",
        f1=result.f1 if ok else None, f1_raw=result.f1_raw if ok else None,
        parameters=result.parameters, metrics=jsonable(metrics), curves=jsonable(result.curves),
        # the whole evaluation (fit, final validation metrics, the training folder): what the search spends
        started_at=started, finished_at=finished, seconds=finished - started, device=result.device,
    )
