"""The ask/tell protocol every search strategy follows, and what they share.

A strategy never trains anything: ``ask()`` proposes genomes, someone evaluates them (a test, the
in-process executor, a process pool, Ray) and hands the results back with ``tell()``. Until told,
``ask()`` returns the same pending genomes again, so a run killed between the two resumes exactly.
Its whole state is plain JSON-able data (``state_dict()`` / ``load_state_dict()``), the random
generator's state included.
"""

from __future__ import annotations

import inspect
import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from engine.errors import ConfigError
from engine.genome import GENE_NAMES, Genome, SearchSpace
from engine.jsonsafe import jsonable
from engine.search.objective import normalized

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass
class Evaluation:
    """The outcome of training one genome, as a strategy needs it.

    ``f1`` is the normalized expected segmentation error in [0, 1]; ``parameters`` the exact count;
    ``cost`` the value of the second objective when it is not the parameter count (FLOPs, measured
    latency in ms). A failed candidate (``status="failed"``) counts with the worst objectives (1, 1).
    """

    genome: Genome
    f1: float
    parameters: int
    status: str = "done"
    candidate_id: int | None = None
    extra: dict = field(default_factory=dict)
    cost: float | None = None

    @property
    def failed(self) -> bool:
        return self.status != "done" or not math.isfinite(self.f1)


@runtime_checkable
class Strategy(Protocol):
    """What a search session (``engine.run.session``) uses of a strategy, and nothing more.

    ``generation`` counts the generations completed so far and ``generations`` those planned (for the
    progress record); ``expected_evaluations()`` is how many genomes the whole search will have
    evaluated (an expectation while it runs, exact once ``done``), the total of the run's progress.
    ``has_pending`` says that ``ask()`` would return genomes asked before and not told yet (the
    session then has no new state to save). ``metrics()`` goes into the run's summary.
    """

    generation: int
    generations: int

    def ask(self) -> list[Genome]: ...

    def tell(self, evaluations: Sequence[Evaluation]) -> None: ...

    def describe(self, genome: Genome) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def metrics(self) -> dict: ...

    def expected_evaluations(self) -> int: ...

    @property
    def has_pending(self) -> bool: ...

    @property
    def done(self) -> bool: ...


#: What ``feasible`` always applies; a session names its run's other limits beside it (``feasible.limits``).
DEVICE_BUDGET = "the device budget: resources.max_memory_mb, resources.max_gflops_per_step"


class BaseStrategy(ABC):
    """Shared machinery: encoding, archive, pending batch, duplicates and budget re-sampling, state.

    Injected parts (not part of the state; the session rebuilds them on resume):
      - ``parameters(genome) -> int``: exact parameter count for the run's channels and classes;
      - ``feasible(genome) -> bool``: False for genomes over the device budget (they are re-sampled);
        its ``limits`` attribute, where set, names the limits it applies for the error when none is left;
      - ``f2_bounds``: (smallest, largest) parameter count of the space, normalizing log(params)
        (``engine.search.objective.normalized``: what ``f2`` means everywhere);
      - ``cost(genome) -> float``: the second objective when it is not the parameter count (FLOPs,
        latency: measured, or predicted for a genome not measured yet); ``f2_bounds`` are then its bounds.
    """

    name = "base"
    #: Constructor arguments the session supplies itself; every other one is a setting of the config.
    INJECTED = frozenset({"space", "rng", "parameters", "f2_bounds", "feasible", "cost", "surrogate_seed"})

    def __init__(
        self,
        space: SearchSpace,
        rng: np.random.Generator,
        parameters: Callable[[Genome], int],
        f2_bounds: tuple[int, int],
        feasible: Callable[[Genome], bool] | None = None,
        population: int = 10,
        generations: int = 40,
        max_resample: int = 2000,
        cost: Callable[[Genome], float] | None = None,
    ):
        if population < 2:
            raise ConfigError(f"samea.population must be at least 2, got {population}")
        if generations < 1:
            raise ConfigError(f"samea.generations must be at least 1, got {generations}")
        lo, hi = f2_bounds
        if not 0 < lo < hi:
            raise ConfigError(f"the search space must contain networks of different sizes (bounds {f2_bounds})")
        self.space = space
        self.rng = rng
        self._parameters = parameters
        self._feasible = feasible or (lambda g: True)
        self.f2_bounds = (lo, hi)
        self.population = int(population)
        self.generations = int(generations)
        self.max_resample = int(max_resample)
        self.cards = space.cardinalities
        self.generation = 0
        self.archive: list[dict] = []  # every evaluated genome, in the order told
        self.pending: list[dict] = []  # asked, not yet told
        self._seen: set[tuple[int, ...]] = set()
        self._feasible_cache: dict[tuple[int, ...], bool] = {}
        self._params_cache: dict[tuple[int, ...], int] = {}
        self._cost = cost

    @classmethod
    def config_keys(cls) -> tuple[str, ...]:
        """The strategy's settings, named as the fields of ``engine.config.SamEAConfig``: its constructor's
        arguments less ``INJECTED``. The constructor's signature is the one list of them."""
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None:
                continue
            params = list(inspect.signature(init).parameters.values())
            if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
                continue  # a subclass passing everything on (MOEA/D): its parent's list
            return tuple(p.name for p in params if p.name != "self" and p.name not in cls.INJECTED)
        return ()

    # ---- helpers ---------------------------------------------------------------------------
    def decode(self, genes: Sequence[int]) -> Genome:
        return self.space.decode([int(g) for g in genes])

    def params_of(self, genes: Sequence[int]) -> int:
        key = tuple(int(g) for g in genes)
        if key not in self._params_cache:
            self._params_cache[key] = int(self._parameters(self.decode(key)))
        return self._params_cache[key]

    def cost_of(self, genes: Sequence[int]) -> float:
        """The second objective's raw value (parameter count unless a ``cost`` was given)."""
        if self._cost is None:
            return float(self.params_of(genes))
        return float(self._cost(self.decode(genes)))

    def f2_of(self, value: float) -> float:
        """``f2`` of a raw second-objective value (parameter count, FLOPs or ms) between the run's bounds."""
        return normalized(value, self.f2_bounds)

    def is_feasible(self, genes: Sequence[int]) -> bool:
        key = tuple(int(g) for g in genes)
        if key not in self._feasible_cache:
            self._feasible_cache[key] = bool(self._feasible(self.decode(key)))
        return self._feasible_cache[key]

    def acceptable(self, genes: Sequence[int], taken: set) -> bool:
        """Not evaluated before, not already proposed in ``taken``, and within the device budget."""
        key = tuple(int(g) for g in genes)
        return key not in self._seen and key not in taken and self.is_feasible(key)

    def random_genes(self, taken: set) -> np.ndarray:
        """A uniform random acceptable genome (the fallback when variation keeps failing)."""
        for _ in range(self.max_resample):
            genes = np.array([int(self.rng.integers(k)) for k in self.cards])
            if self.acceptable(genes, taken):
                return genes
        limits = getattr(self._feasible, "limits", None) or DEVICE_BUDGET
        raise ConfigError(f"no new genome within the run's limits could be found ({limits}); widen the search "
                          "space (config [space]) or raise them")

    @staticmethod
    def objectives_of(entry: dict) -> tuple[float, float]:
        return (entry["f1"], entry["f2"])

    def archive_objectives(self) -> np.ndarray:
        return np.array([self.objectives_of(e) for e in self.archive], dtype=float).reshape(-1, 2)

    def _pend(self, genes, **meta) -> dict:
        entry = {"genes": [int(g) for g in genes], **meta}
        entry["parameters"] = self.params_of(entry["genes"])
        self.pending.append(entry)
        return entry

    # ---- protocol ----------------------------------------------------------------------------
    def ask(self) -> list[Genome]:
        """The genomes to evaluate next; the same list again until they are told. Empty when done."""
        if not self.pending and not self.done:
            self._propose()
        return [self.decode(p["genes"]) for p in self.pending]

    def describe(self, genome: Genome) -> dict:
        """Where a pending genome comes from: generation, phase, subproblem, predicted f1 and spread."""
        key = list(self.space.encode(genome))
        for p in self.pending:
            if p["genes"] == key:
                return {k: v for k, v in p.items() if k != "genes"}
        return {}

    def tell(self, evaluations: Sequence[Evaluation]) -> None:
        """Results for every pending genome (any order); failed ones count with objectives (1, 1)."""
        by_key = {tuple(self.space.encode(e.genome)): e for e in evaluations}
        missing = [p for p in self.pending if tuple(p["genes"]) not in by_key]
        if missing:
            raise ValueError(f"tell() needs results for all {len(self.pending)} pending genomes; {len(missing)} missing")
        told = []
        for p in self.pending:
            ev = by_key[tuple(p["genes"])]
            failed = ev.failed
            entry = dict(p)
            entry.update(
                f1=1.0 if failed else float(min(max(ev.f1, 0.0), 1.0)),
                f2=1.0 if failed else self.f2_of(self._told_cost(ev, p)),
                status="failed" if failed else "done",
                candidate_id=ev.candidate_id,
            )
            self.archive.append(entry)
            self._seen.add(tuple(entry["genes"]))
            told.append(entry)
        self.pending = []
        self._absorb(told)

    def _told_cost(self, ev: Evaluation, pending: dict) -> float:
        if self._cost is None:
            return ev.parameters or pending["parameters"]
        return ev.cost if ev.cost is not None else self.cost_of(pending["genes"])

    @property
    def done(self) -> bool:
        return self.generation >= self.generations and not self.pending

    @property
    def has_pending(self) -> bool:
        """Genomes asked and not told yet (``ask()`` returns them again)."""
        return bool(self.pending)

    def expected_evaluations(self) -> int:
        """The evaluations the whole search will have made: those told, those pending, what the rest of the
        current generation and the generations after it are expected to train (``_expected_in``).
        Exact once ``done``, so that a finished run's progress is complete."""
        g = self.generation
        told_now = sum(1 for e in self.archive if e.get("generation") == g)
        rest = max(0.0, self._expected_in(g) - told_now - len(self.pending))
        rest += sum(self._expected_in(k) for k in range(g + 1, self.generations))
        return len(self.archive) + len(self.pending) + round(rest)

    def _expected_in(self, generation: int) -> float:
        """Genomes generation ``generation`` is expected to evaluate (0 past the last generation)."""
        return float(self.population) if generation < self.generations else 0.0

    # ---- to be provided by strategies -----------------------------------------------------
    @abstractmethod
    def _propose(self) -> None:
        """Fill ``self.pending`` with the next genomes to evaluate."""

    @abstractmethod
    def _absorb(self, told: list[dict]) -> None:
        """Update the strategy with the archive entries just told (in the order they were asked)."""

    # ---- results -----------------------------------------------------------------------------
    def metrics(self) -> dict:
        """Evaluations per phase (failed ones included) for the run's report."""
        per_phase: dict[str, int] = {}
        for e in self.archive:
            per_phase[e.get("phase", "?")] = per_phase.get(e.get("phase", "?"), 0) + 1
        return {
            "strategy": self.name,
            "evaluations": len(self.archive),
            "failed": sum(e["status"] == "failed" for e in self.archive),
            "evaluations_per_phase": per_phase,
        }

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "strategy": self.name,
            "genes": list(GENE_NAMES),
            "space": self.space.to_dict(),
            "generation": self.generation,
            "archive": [dict(e) for e in self.archive],
            "pending": [dict(p) for p in self.pending],
            "rng": jsonable(self.rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION or state.get("strategy") != self.name:
            raise ConfigError(
                f"saved search state is for strategy {state.get('strategy')!r} version {state.get('version')}, "
                f"not {self.name!r} version {STATE_VERSION}"
            )
        if SearchSpace.from_dict(state["space"]) != self.space:
            raise ConfigError("saved search state was made with a different search space ([space] changed)")
        self.generation = int(state["generation"])
        self.archive = [dict(e) for e in state["archive"]]
        self.pending = [dict(p) for p in state["pending"]]
        self._seen = {tuple(e["genes"]) for e in self.archive}
        self.rng.bit_generator.state = state["rng"]
