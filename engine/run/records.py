"""The plain-data records of a candidate on its way through a search: task, result, stored row.

    CandidateTask    what an executor trains (genome, data spec, training settings, where to write)
    CandidateResult  what the training gave back (status, f1, parameters, metrics, curves, times, error)
    CandidateRow     one row of the run database's ``candidates`` table, JSON columns decoded

Each is a frozen dataclass of JSON-able values with ``to_dict()`` / ``from_dict()`` and a ``version``
(the record's shape; ``from_dict`` reads older and newer dicts: unknown keys are dropped, missing ones
take their defaults). Across a process boundary (the local pool, Ray) a task or result travels as its
``to_dict()``; evaluators take and return those dicts, so a custom evaluator stays a plain function.

``CandidateRow`` also answers read-only mapping access (``row["f1"]``, ``row.get("gflops")``,
``row.keys()``) for code written when the store returned dicts; new code reads attributes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

#: Version of the three records' shapes (bump when a field changes meaning or is removed).
RECORD_VERSION = 1


def _known(cls, d: Mapping[str, Any]) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass(frozen=True)
class CandidateTask:
    """One candidate to train: the genome and everything a worker needs, in plain data.

    ``data`` is the run's data spec (dataset, seed, cache_dir, split, plan, plan_overrides: what
    ``engine.run.evaluate.training_data`` loads); ``train`` the training settings
    (``engine.train.config.TrainerConfig`` fields); ``stop_below`` maps an epoch (as text) to the
    validation mean Dice the candidate must have reached by then (the early-stopping rule).
    ``device`` and ``threads`` are set by the executor that runs it.
    """

    candidate_id: int
    genome: dict
    out_dir: str | None = None
    data: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    stop_below: dict = field(default_factory=dict)
    device: str | None = None
    threads: int | None = None
    version: int = RECORD_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CandidateTask":
        d = _known(cls, d)
        d["stop_below"] = dict(d.get("stop_below") or {})
        return cls(**d)


@dataclass(frozen=True)
class CandidateResult:
    """What training one candidate gave: ``status`` is done, failed or cancelled.

    ``f1`` is the normalized expected segmentation error in [0, 1] (None unless done); ``seconds`` the
    whole evaluation's wall time; ``metrics`` and ``curves`` JSON-able (non-finite floats as None).
    """

    candidate_id: int | None
    status: str
    f1: float | None = None
    f1_raw: float | None = None
    parameters: int | None = None
    metrics: dict | None = None
    curves: list | None = None
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float | None = None
    device: str | None = None
    error: str | None = None
    version: int = RECORD_VERSION

    @property
    def ok(self) -> bool:
        """Done with a finite f1 (a result the search counts with its objectives)."""
        return self.status == "done" and self.f1 is not None and math.isfinite(self.f1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CandidateResult":
        d = _known(cls, d)
        d.setdefault("candidate_id", None)
        d.setdefault("status", "failed")
        return cls(**d)


@dataclass(frozen=True)
class CandidateRow:
    """One candidate as the run database holds it (``RunStore.candidates()``, ``candidate()``, ``front()``).

    ``genome`` is the genome's dict (``Genome.from_dict``); ``f1`` and ``f2`` the two minimized
    objectives in [0, 1] (``f2``: see ``engine.search.objective``), (1, 1) for a failed candidate;
    ``metrics`` and ``curves`` decoded JSON. Rows of runs made before a column existed read its default.
    """

    id: int
    genome: dict
    status: str
    generation: int | None = None
    phase: str | None = None
    subproblem: int | None = None
    f1: float | None = None
    f2: float | None = None
    f1_raw: float | None = None
    parameters: int | None = None
    predicted_f1: float | None = None
    predicted_std: float | None = None
    metrics: dict | None = None
    curves: list | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float | None = None
    device: str | None = None
    error: str | None = None
    reused_from: str | None = None
    pruned: int = 0
    gflops: float | None = None
    latency_ms: float | None = None
    latency_predicted: int = 0
    version: int = RECORD_VERSION

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CandidateRow":
        d = _known(cls, d)
        held = tuple(k for k in d if k != "version")
        for k in ("pruned", "latency_predicted"):
            d[k] = int(d.get(k) or 0)
        row = cls(**d)
        object.__setattr__(row, "_held", held)  # not a field: the columns the database row had
        return row

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    # ---- read-only mapping access (for code that indexed the dict rows of earlier versions) ------
    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        """The columns the row holds (a run made before a column existed lacks it; its attribute reads
        the default)."""
        held = getattr(self, "_held", None)
        return list(held) if held is not None else [f.name for f in dataclasses.fields(self) if f.name != "version"]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())
