"""The progress of a search run: one record, computed by the engine, drawn by the app and the CLI.

    progress = watch(run_dir)            # a run started anywhere (this process, the CLI, the app), read-only
    progress.fraction, progress.eta_seconds, progress.front, progress.hypervolume ...

``Progress`` is plain, versioned data. The running session builds it (``build_progress``) after every
candidate and step and sends it with every ``SearchEvent``; it also keeps in the run's meta
(``progress_basis``) what a reader cannot count from the database: the evaluations its strategy expects
(``Strategy.expected_evaluations()``), the time model's seconds per candidate, the parallel slots and the
generation. ``read_progress(store)`` / ``watch(run_dir)`` rebuild the same record from the database
and that basis, for a run started elsewhere; runs made before the basis existed fall back on their
configuration and measured times.

The ETA is (expected - evaluated) x seconds per candidate / slots. Seconds per candidate come from a
``CandidateTimes`` model (swappable): the session uses the calibrated ``engine.run.estimate.TimeModel``
when this device and plan have a calibration, else ``MeanTimeModel`` (the mean measured time).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from engine.genome import Genome

#: Version of the ``Progress`` record's shape and of the ``progress_basis`` meta entry.
PROGRESS_VERSION = 1
#: Reference point of the hypervolume in the normalized objective space (f1 and f2 in [0, 1]).
HV_REFERENCE = (1.0, 1.0)
#: Meta key of what the session knows beyond the database (see the module docstring).
BASIS_KEY = "progress_basis"


class CandidateTimes(Protocol):
    """A time model of the ETA: seconds one candidate takes, corrected by the times measured. A model may
    also have ``observe_latency(genome, seconds)``, told how long each latency measurement took (a run that
    measures every candidate's latency does so apart from the candidate's recorded seconds)."""

    def candidate_seconds(self, genome: Genome) -> float: ...

    def observe(self, genome: Genome, seconds: float) -> None: ...


def mean_candidate_seconds(model: CandidateTimes, genomes: Sequence[Genome]) -> float | None:
    """The model's mean seconds per candidate over ``genomes`` (a sample of the space), None if unknown."""
    if not genomes:
        return None
    per = float(np.mean([model.candidate_seconds(g) for g in genomes]))
    return per if math.isfinite(per) and per >= 0 else None


@dataclass(frozen=True)
class Progress:
    """Where a search run stands.

    ``generation`` counts the generations completed (0 while the initial population trains);
    ``expected`` is the evaluations the strategy expects in all (exact once finished) and ``fraction``
    ``(done + failed) / expected`` (1.0 for a finished run); ``eta_seconds`` None while unknown, 0 once
    finished; ``front`` the Pareto front as (id, f1, f2, parameters) by ascending f1 and ``hypervolume``
    its hypervolume against ``HV_REFERENCE``; ``objective`` names the second objective (f2).
    """

    status: str
    generation: int
    generations: int
    done: int
    failed: int
    running: int
    queued: int
    expected: int
    fraction: float
    eta_seconds: float | None
    elapsed_seconds: float
    front: tuple[tuple[int, float, float, int], ...]
    hypervolume: float
    objective: str = "parameters"
    version: int = PROGRESS_VERSION

    @property
    def evaluated(self) -> int:
        """Candidates finished, done or failed."""
        return self.done + self.failed

    @property
    def counts(self) -> dict[str, int]:
        return {"queued": self.queued, "running": self.running, "done": self.done, "failed": self.failed}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Progress":
        names = cls.__dataclass_fields__
        d = {k: v for k, v in d.items() if k in names}
        d["front"] = tuple(tuple(p) for p in d.get("front") or ())
        return cls(**d)


def pareto_points(points: Sequence[tuple[int, float, float, int]]) -> tuple[list[tuple[int, float, float, int]], float]:
    """(the Pareto front of ``points`` (id, f1, f2, parameters) by ascending f1, its hypervolume)."""
    from engine.search.pareto import hypervolume_2d, pareto_front

    if not points:
        return [], 0.0
    f = np.array([[p[1], p[2]] for p in points], float)
    front = sorted((points[i] for i in pareto_front(f)), key=lambda p: (p[1], p[2]))
    return front, float(hypervolume_2d(f, HV_REFERENCE))


def build_progress(store, status: str, generation: int, generations: int, expected: int,
                   candidate_seconds: float | None, slots: int, elapsed: float,
                   objective: str = "parameters", end_seconds: float = 0.0) -> Progress:
    """The progress of the run in ``store`` (its counts and front read now) with what the caller knows;
    ``end_seconds``: the work left after all training (measuring the front's latency), in the ETA."""
    counts = store.counts()
    front, hv = pareto_points(store.objectives())
    evaluated = counts["done"] + counts["failed"]
    expected = max(int(expected), evaluated)
    finished = status == "finished"
    fraction = 1.0 if finished else (min(1.0, evaluated / expected) if expected else 0.0)
    if finished:
        eta = 0.0
    elif candidate_seconds is None or not math.isfinite(candidate_seconds):
        eta = None
    else:
        eta = (expected - evaluated) * float(candidate_seconds) / max(1, int(slots)) + max(0.0, float(end_seconds))
    return Progress(status, int(generation), int(generations), counts["done"], counts["failed"], counts["running"],
                    counts["queued"], expected, fraction, eta, float(elapsed), tuple(front), hv, objective)


def basis(expected: int, candidate_seconds: float | None, slots: int, generation: int, generations: int,
          elapsed: float, objective: str, end_seconds: float = 0.0) -> dict:
    """The ``progress_basis`` meta entry a session keeps for readers of its run (``end_seconds``, optional
    for readers of older runs: the expected seconds of work after all training)."""
    return {"version": PROGRESS_VERSION, "expected": int(expected), "candidate_seconds": candidate_seconds,
            "slots": int(slots), "generation": int(generation), "generations": int(generations),
            "elapsed_s": float(elapsed), "objective": objective, "end_seconds": float(end_seconds)}


def read_progress(store) -> Progress:
    """The progress of the run open in ``store`` (read-only is enough), as its session reports it."""
    from engine.run.store import RunLock

    meta = store.meta()
    status = str(meta.get("status") or "created")
    if status == "running" and not RunLock(store.run_dir).is_held_elsewhere():
        status = "stopped"  # killed or crashed: `emonas resume` continues it
    b = meta.get(BASIS_KEY)
    if not isinstance(b, Mapping) or b.get("version") != PROGRESS_VERSION:
        b = _legacy_basis(store, meta, status)
    return build_progress(store, status, b["generation"], b["generations"], b["expected"], b["candidate_seconds"],
                          b["slots"], b["elapsed_s"], b["objective"], float(b.get("end_seconds") or 0.0))


def _legacy_basis(store, meta: dict, status: str) -> dict:
    """For a run whose session kept no basis (made before it existed): from its config and its times."""
    from engine.config import SearchConfig
    from engine.errors import ConfigError
    from engine.run.estimate import expected_evaluations

    config = meta.get("config") or {}
    samea = config.get("samea") or {}
    try:
        cfg = SearchConfig.from_dict(config, "run config")
        expected, generations = expected_evaluations(cfg.samea)[1], cfg.samea.generations
        slots = 1 if cfg.resources.executor == "inprocess" else max(1, cfg.resources.workers)
    except ConfigError:
        generations = int(samea.get("generations") or 0)
        expected, slots = int(samea.get("population") or 0) * generations, 1
    counts = store.counts()
    if status == "finished":  # its strategy had nothing left to propose
        expected = counts["done"] + counts["failed"]
    state = store.latest_state() or {}
    objective = (meta.get("objective") or {}).get("name") or samea.get("objective") or "parameters"
    return basis(expected, store.mean_seconds(), slots, int(state.get("generation", 0)), generations,
                 float(meta.get("elapsed_s") or 0.0), objective)


def watch(run_dir: str | os.PathLike) -> Progress:
    """The progress of the run in ``run_dir`` now, read-only (safe while another process runs it)."""
    from engine.run.store import RunStore

    with RunStore.open_readonly(run_dir) as store:
        return read_progress(store)


def hypervolume_history(objectives: Sequence[tuple[float, float]], known: Sequence[float] = ()) -> list[float]:
    """The hypervolume (against ``HV_REFERENCE``) after each evaluation of ``objectives`` (f1, f2), in the
    order given; ``known`` holds the values of a prefix already computed (only the rest is computed)."""
    from engine.search.pareto import hypervolume_2d

    f = np.array(objectives, float).reshape(-1, 2)
    out = list(known)[: len(f)]
    out += [float(hypervolume_2d(f[:n], HV_REFERENCE)) for n in range(len(out) + 1, len(f) + 1)]
    return out
