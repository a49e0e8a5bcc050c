"""A search run: a strategy, an executor and the run database, with progress, pause/cancel and resume.

    session = SearchSession(run_dir, config)          # a new run (nothing written until run())
    session = SearchSession.open(run_dir)             # an existing run, to resume
    summary = session.run(callback=on_event, cancel=event)   # blocks; call from a worker thread
    session.stop()                                    # same as setting ``cancel``: pause after this step

``run()`` takes the run's lock, asks the strategy, commits every finished candidate at once, tells the
strategy and saves its state after every step. Stopped, killed or crashed, the run continues with
``SearchSession.open(run_dir).run()``: the same seed gives the same genomes in the same order, and
no finished candidate is trained again. ``callback`` receives ``SearchEvent`` values (plain data):
the event's kind, the run's ``engine.run.progress.Progress`` and the candidate's ``CandidateRow``.

The session builds a ``CandidateTask`` per candidate to train, hands executors its plain dict, and
commits the ``CandidateResult`` it gets back; the strategy is driven through ``Strategy`` alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from engine.config import SearchConfig
from engine.device import resolve_device_name
from engine.errors import ConfigError, DataError, EmonasError, GenomeError, RunError, one_line
from engine.genome import Genome, SearchSpace
from engine.run.evaluate import AnyFlag
from engine.faults import fault
from engine.run import progress as P
from engine.run.progress import CandidateTimes, Progress
from engine.run.records import CandidateResult, CandidateRow, CandidateTask
from engine.run.runlog import logging_events, run_log
from engine.run.store import RunStore, check_new_run, is_run, write_errors
from engine.search import STRATEGIES, Evaluation, Strategy
from engine.search.objective import normalized
from engine.search.strategy import DEVICE_BUDGET

if TYPE_CHECKING:
    from engine.data import Plan
    from engine.run.estimate import SearchEstimate

log = logging.getLogger(__name__)

GIB = 2**30


@dataclass
class SearchProblem:
    """What the search knows of the dataset without training: shapes, plan, labels, the data spec."""

    in_channels: int
    num_classes: int
    patch_size: list[int]
    batch_size: int
    pool_sizes: dict[str, Any]  # str(n_levels) -> per-level pooling, or {} for the default 2x2x2
    plan: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)
    modalities: list = field(default_factory=list)
    data: dict = field(default_factory=dict)  # dataset, seed, cache_dir, split: what workers load

    def pools(self, n_levels: int):
        p = self.pool_sizes.get(str(n_levels))
        return None if p is None else tuple(tuple(int(v) for v in level) for level in p)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SearchProblem":
        return cls(**d)

    @classmethod
    def from_training_data(cls, td, training, data_spec: dict) -> "SearchProblem":
        plan: Plan = td.plan
        pools = {}
        for n in (2, 3, 4):
            try:
                pools[str(n)] = [list(p) for p in plan.pool_sizes_for(n)]
            except Exception:  # noqa: BLE001 - a plan may not pool this deep; genomes then fail the patch check
                pass
        return cls(
            in_channels=td.in_channels, num_classes=td.num_classes,
            patch_size=list(training.patch_size or plan.patch_size), batch_size=int(training.batch_size or plan.batch_size),
            pool_sizes=pools, plan=plan.to_dict(),
            labels=dict(td.labels), modalities=list(td.modalities), data=data_spec,
        )


@dataclass
class SearchEvent:
    """What the session reports: ``kind`` is started, candidate_started, candidate_finished, step,
    latency (a front network's latency about to be measured, once the search has ended) or finished;
    ``progress`` the run's progress record; ``candidate`` the row of the candidate that started,
    finished or is measured; ``detail`` for latency: ``done`` and ``total`` networks, ``target`` and
    ``hardware``. The properties read the progress (for log lines)."""

    kind: str
    progress: Progress
    candidate: CandidateRow | None = None
    detail: dict | None = None

    @property
    def status(self) -> str:
        return self.progress.status

    @property
    def generation(self) -> int:
        return self.progress.generation

    @property
    def generations(self) -> int:
        return self.progress.generations

    @property
    def counts(self) -> dict:
        """Candidates per status, the statuses with none left out."""
        return {k: v for k, v in self.progress.counts.items() if v}

    @property
    def front(self) -> tuple:
        return self.progress.front

    @property
    def eta_seconds(self) -> float | None:
        return self.progress.eta_seconds


def _pinned_ids(data: dict) -> list[str]:
    split = data.get("split") or {}
    return [str(c) for k in ("train", "val", "test") for c in split.get(k, [])]


def pinned_case_digests(data: dict) -> dict[str, str]:
    """{case id: digest of its files' contents} for the cases a run's data spec pins (train, val, test)."""
    ids = _pinned_ids(data)
    if not ids or not data.get("dataset"):
        return {}
    from engine.data import open_dataset
    from engine.data.preprocess import case_content_digest

    ds = open_dataset(data["dataset"])
    return {cid: case_content_digest(ds.case(cid)) for cid in ids if cid in ds.case_ids}


def check_pinned_dataset(run_dir: Path, problem: SearchProblem, pinned: dict | None) -> None:
    """Before a resumed run trains again: its pinned cases are all there, unchanged, with the same labels
    and modalities; otherwise ``RunError``, one line naming what changed. Cases added since are left
    out (the run goes on with its own cases and plan)."""
    data = problem.data or {}
    ids = _pinned_ids(data)
    if not ids or not data.get("dataset"):
        return
    from engine.data import open_dataset
    from engine.data.preprocess import case_content_digest

    where = f"{run_dir}: the dataset {data['dataset']} changed since the run started"
    advice = "; restore it to resume this run, or start a new run"
    try:
        ds = open_dataset(data["dataset"])
    except EmonasError as exc:  # a dataset that no longer opens
        raise RunError(f"{where}: {exc}{advice}") from None
    if problem.labels and dict(ds.labels) != dict(problem.labels):
        raise RunError(f"{where}: labels {dict(ds.labels)} instead of {dict(problem.labels)}{advice}")
    if problem.modalities and list(ds.modalities) != list(problem.modalities):
        raise RunError(f"{where}: modalities {list(ds.modalities)} instead of {list(problem.modalities)}{advice}")
    missing = [c for c in ids if c not in ds.case_ids]
    if missing:
        raise RunError(f"{where}: case(s) {', '.join(missing[:5])} removed{advice}")
    changed = [c for c in ids if pinned and c in pinned and case_content_digest(ds.case(c)) != pinned[c]]
    if changed:
        raise RunError(f"{where}: the files of case(s) {', '.join(changed[:5])} changed{advice}")
    added = [c for c in ds.case_ids if c not in set(ids)]
    if added:
        log.warning("%s: %d case(s) added since the run started (%s) are not used by this run; it continues with "
                    "its own %d cases and plan", data["dataset"], len(added), ", ".join(added[:5]), len(ids))


def device_budget(device: str, resources, candidates_per_device: float = 1.0) -> tuple[float, float]:
    """(max training bytes, max FLOPs per training step) for one candidate on ``device``.

    Defaults when the config leaves them at 0: on a CPU at most 8 GiB (or half the RAM) and 60 GFLOP
    per step (about a second on two cores: the largest networks of the space need ~20x more); on a
    GPU 85% of its memory shared by the candidates on it, and 5 TFLOP per step.
    """
    mem = resources.max_memory_mb * 2**20
    flops = resources.max_gflops_per_step * 1e9
    if device.startswith("cuda"):
        if not mem:
            try:
                import torch

                idx = int(device.split(":")[1]) if ":" in device else 0
                mem = 0.85 * torch.cuda.get_device_properties(idx).total_memory / max(candidates_per_device, 1.0)
            except Exception:  # noqa: BLE001 - no CUDA here: plan for a 16 GiB card
                mem = 0.85 * 16 * GIB
        flops = flops or 5e12
    else:
        if not mem:
            try:
                ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            except (ValueError, OSError, AttributeError):
                ram = 16 * GIB
            mem = min(8 * GIB, ram / 2)
        flops = flops or 60e9
    return float(mem), float(flops)


def _out_of_space(error: str | None) -> bool:
    """Whether a candidate failed because the disk is full or read-only (then the run stops instead)."""
    text = (error or "").lower()
    return any(s in text for s in ("no space left on device", "read-only file system", "disk quota exceeded",
                                   "database or disk is full"))


class SearchSession:
    """Drives one run; see the module docstring. ``evaluator`` and ``problem`` may be injected."""

    def __init__(self, run_dir: str | os.PathLike, config: SearchConfig | None = None,
                 evaluator: Callable | None = None, problem: SearchProblem | None = None,
                 time_model: CandidateTimes | None = None):
        self._setup(Path(run_dir), (config or SearchConfig()).validate(), evaluator, problem, resume=False)
        self.eta_model = time_model
        check_new_run(self.run_dir, self.config.dataset)

    @classmethod
    def open(cls, run_dir: str | os.PathLike, evaluator: Callable | None = None, problem: SearchProblem | None = None,
             time_model: CandidateTimes | None = None) -> "SearchSession":
        """An existing run, to continue; its stored config is used."""
        run_dir = Path(run_dir)
        with RunStore.open_readonly(run_dir) as ro:
            config = SearchConfig.from_dict(ro.get_meta("config"), f"{run_dir}/run.db")
            stored_problem = ro.get_meta("problem")
        self = cls.__new__(cls)
        problem = problem or (SearchProblem.from_dict(stored_problem) if stored_problem else None)
        if problem is not None and problem.data and "plan" not in problem.data and problem.plan:
            problem.data = {**problem.data, "plan": problem.plan}  # runs begun before plans were pinned
        self._setup(run_dir, config, evaluator, problem, resume=True)
        self.eta_model = time_model
        return self

    def _setup(self, run_dir: Path, config: SearchConfig, evaluator, problem, resume: bool) -> None:
        self.run_dir = run_dir
        self.config = config
        self.evaluator = evaluator
        self.problem = problem
        self._resume = resume
        self._exec = None
        self._cancel = threading.Event()
        self._setup_s = 0.0  # time opening the dataset this session (_prepare_problem, the cases' digests)
        self.store: RunStore | None = None
        self.strategy: Strategy | None = None
        self.latency = None  # LatencyBook of the run when it measures latency
        self.flops_of: Callable[[Genome], int] | None = None
        self.parameters_of: Callable[[Genome], int] | None = None
        self.objective_bounds: tuple[float, float] | None = None
        # the ETA's time model (engine.run.progress.CandidateTimes), swappable: None is the cached
        # calibration of this device and plan (engine.run.estimate.TimeModel), else MeanTimeModel
        self.eta_model: CandidateTimes | None = None
        self._eta_sample: list[Genome] = []
        self._observed: list[Genome] = []  # the ETA's sample when the time model came without one
        self._candidate_s: float | None = None  # the time model's mean seconds per candidate
        self._end_left: int | None = None  # front networks left to measure, while measuring them
        self._end_measured: list[float] = []  # seconds each front network's measurement took
        self._elapsed0 = 0.0  # seconds the run ran in earlier sessions
        self._t_start = time.time()

    def stop(self) -> None:
        """Ask ``run()`` to stop soon; the run can be resumed later."""
        self._cancel.set()

    pause = stop

    # ---- set-up ----------------------------------------------------------------------------------
    def _train_dict(self) -> dict:
        from engine.train.config import TrainerConfig

        t = self.config.training
        d = {
            "epochs": t.epochs, "patience": t.patience, "alpha": t.alpha, "beta": t.beta,
            "max_epochs_for_objective": t.epochs, "seed": int(self.config.seed),
            "batch_size": t.batch_size or None, "patch_size": list(t.patch_size) or None,
            "profile": self.config.profile, **t.extra,
        }
        if self.config.profile != "paper":  # recorded, so that a later default leaves the run's rate alone
            d.setdefault("lr_schedule", TrainerConfig.lr_schedule)
        TrainerConfig.from_dict({**d, "device": "cpu"})  # validates; raises ConfigError naming the key
        return d

    def _prepare_problem(self) -> SearchProblem:
        t0 = time.perf_counter()
        dataset = self.config.dataset
        if not dataset:
            raise ConfigError("no dataset: give --dataset DIR (or demo) or set dataset in the config")
        from engine.run.evaluate import pin_plan, training_data

        ds = dataset if dataset == "demo" else str(Path(dataset).resolve())
        spec = {"dataset": ds, "seed": int(self.config.seed), "cache_dir": str((self.run_dir / "cache").resolve())}
        if self.config.training.plan:
            spec["plan_overrides"] = dict(self.config.training.plan)
        if self.config.splits:  # the user's split file: kept whole (its test part is the report's)
            from engine.data import open_dataset
            from engine.data.splits import split_for_dataset

            spec["split"] = split_for_dataset(open_dataset(ds), self.config.splits, self.config.fold)
        try:
            td = training_data(spec)
        except ConfigError as exc:  # from the plan: its overrides are the config's [training.plan]
            if self.config.training.plan and not str(exc).startswith("training.plan"):
                raise ConfigError(f"training.plan: {exc}") from None
            raise
        spec = pin_plan(spec, td)
        # the run keeps its cases and its plan: cases added to the dataset later never re-plan it halfway
        spec["plan"] = td.plan.to_dict()
        if not self.config.splits:  # a split file's split is kept whole (its test part is the report's)
            spec["split"] = {k: list(td.split.get(k, [])) for k in ("train", "val", "test")} if td.split else None
            if spec["split"] is None:
                spec.pop("split")
        self._setup_s += time.perf_counter() - t0
        return SearchProblem.from_training_data(td, self.config.training, spec)

    def _build_strategy(self, problem: SearchProblem, device: str, measure: bool = True):
        """The run's search strategy. ``measure=False``: no latency is measured (the objective's bounds are
        then the parameters'), for drawing genomes that do not depend on latencies."""
        from engine.network.cost import count_parameters, extreme_genomes
        from engine.search.objective import inference_flops

        space: SearchSpace = self.config.space.search_space()
        cin, ncls = problem.in_channels, problem.num_classes
        s, r = self.config.samea, self.config.resources

        def parameters(g: Genome) -> int:
            return count_parameters(g, cin, ncls, problem.pools(g.n_levels))

        def flops(g: Genome) -> int:
            return inference_flops(g, cin, ncls, problem.patch_size, problem.pools(g.n_levels))

        feasible = self.within_budgets(problem, device)
        self.flops_of, self.parameters_of = flops, parameters
        lo, hi = extreme_genomes(space)
        bounds: tuple[float, float] = (parameters(lo), parameters(hi))
        cost = None
        self.latency = None
        if self.measures_latency and measure:
            self.latency = self._latency_book()
        if s.objective != "parameters" or r.max_latency_ms:
            picks = self._bound_genomes(space, feasible, lo, hi, flops)
            if s.objective == "flops":
                bounds, cost = (flops(picks[0]), flops(picks[-1])), flops
            if self.latency is not None:  # the extremes measured first: bounds and the first points of the model
                measured = [self.latency.measure(g) for g in picks]
                if s.objective == "latency":
                    bounds, cost = (min(measured), max(measured)), self.latency.value
            lo_b, hi_b = sorted(bounds)
            bounds = (lo_b, hi_b if hi_b > lo_b else lo_b * 1.01)
        # a limit on the objective's own measure caps its upper bound: f2 then spans what the run may
        # train, and MOEA/D's weight vectors are not spent on costs no candidate can have
        cap = {"parameters": r.max_parameters, "latency": r.max_latency_ms}.get(s.objective)
        if cap and bounds[0] < float(cap) < bounds[1]:
            bounds = (bounds[0], float(cap))
        stored = (self.store.get_meta("objective") or {}) if self.store is not None else {}
        if stored.get("name", "parameters") == s.objective and len(stored.get("bounds") or ()) == 2:
            # a resumed run keeps the bounds it started with, so every candidate's f2 shares one scale
            # (whatever a newer version of this code, or a latency measured again, would give now)
            bounds = (float(stored["bounds"][0]), float(stored["bounds"][1]))
        if r.max_latency_ms:
            within_budget, book, most = feasible, self.latency, r.max_latency_ms

            def feasible(g: Genome) -> bool:  # noqa: F811 - the budgets, then the predicted latency
                return within_budget(g) and book.value(g) <= most
        limits = [DEVICE_BUDGET]
        if r.max_parameters:
            limits.append(f"resources.max_parameters ({r.max_parameters:,})")
        if r.max_latency_ms:
            limits.append(f"resources.max_latency_ms ({r.max_latency_ms:g} ms on {self.latency.target}, "
                          "measured, or predicted from FLOPs and width)")
        feasible.limits = "; ".join(limits)  # named by the strategy's error when no genome is left

        self.objective_bounds = bounds
        rng = np.random.default_rng(np.random.SeedSequence(int(self.config.seed)))
        cls = STRATEGIES[s.strategy]
        settings = {k: getattr(s, k) for k in cls.config_keys()}  # each a field of SamEAConfig
        injected = dict(space=space, rng=rng, parameters=parameters, f2_bounds=bounds, feasible=feasible, cost=cost)
        if s.strategy != "random":
            injected["surrogate_seed"] = int(self.config.seed)
        return cls(**injected, **settings)

    def first_generation(self, problem: SearchProblem, device: str) -> list[Genome]:
        """The genomes the search trains first (its initial population, drawn from the run's seed as the
        search draws it), or [] where drawing them would mean measuring latencies (a latency limit keeps
        genomes out by it). A latency objective alone does not change the draw, only how its results are
        scored: they are drawn without measuring any."""
        if self.config.resources.max_latency_ms:
            return []
        keep = self.latency, self.objective_bounds, self.flops_of, self.parameters_of
        try:
            return list(self._build_strategy(problem, device, measure=False).ask())
        finally:  # drawing them leaves the session as it was
            self.latency, self.objective_bounds, self.flops_of, self.parameters_of = keep

    def within_budgets(self, problem: SearchProblem, device: str) -> Callable[[Genome], bool]:
        """Whether a genome fits the memory and compute budgets of ``device`` and resources.max_parameters."""
        from engine.network.cost import estimate_cost

        cin, ncls, r = problem.in_channels, problem.num_classes, self.config.resources
        max_bytes, max_flops = device_budget(device, r, self._per_device())

        def feasible(g: Genome) -> bool:
            try:
                cost = estimate_cost(g, cin, ncls, problem.patch_size, problem.batch_size, problem.pools(g.n_levels))
            except ConfigError:
                return False  # the patch cannot be pooled that deep
            if r.max_parameters and cost.parameters > r.max_parameters:
                return False
            return cost.training_bytes <= max_bytes and cost.train_step_flops <= max_flops

        return feasible

    def parallel_slots(self) -> int:
        """Candidates trained at the same time."""
        r = self.config.resources
        return 1 if r.executor == "inprocess" else max(1, r.workers)

    def time_model(self, device: str, calibrate_now: bool = False, recalibrate: bool = False, step_fn=None):
        """(time model, sampled genomes, calibration was cached, notes) for this run's problem on ``device``.

        Uses the cached calibration of this device and plan; with ``calibrate_now`` it calibrates when
        there is none (or ``recalibrate``). Without a calibration: ``MeanTimeModel`` of measured times.
        """
        from engine.network.cost import estimate_cost, extreme_genomes
        from engine.run import estimate as est
        from engine.run.latency import hardware_name

        problem, cfg = self.problem, self.config
        space = cfg.space.search_space()
        feasible = self.within_budgets(problem, device)
        train = self._train_dict()
        cin, ncls = problem.in_channels, problem.num_classes

        def costs(g: Genome) -> tuple[float, float]:
            c = estimate_cost(g, cin, ncls, problem.patch_size, problem.batch_size, problem.pools(g.n_levels))
            return float(c.train_step_flops), float(c.forward_flops / problem.batch_size)

        hardware = hardware_name(device)
        key = est.calibration_key(device, hardware, problem, train)
        cal = None if recalibrate else est.load_calibration(key)
        cached = cal is not None
        if cal is None and not calibrate_now:
            return est.MeanTimeModel(), [], False, []
        sample = est.sample_genomes(space, feasible, 64, int(cfg.seed))
        if not sample:
            raise ConfigError("no genome of the search space fits the budgets; widen the space or raise them")
        if cal is None:
            picks = est.calibration_genomes(sample, lambda g: costs(g)[0], by_width=True)
            cal = est.calibrate(problem, train, device, picks, costs, hardware, key, step_fn=step_fn)
            est.save_calibration(cal)
        from engine.run.evaluate import training_data
        from engine.train.config import TrainerConfig
        from engine.run.latency import reference_shape
        from engine.train.trainer import epochs_between_validations, sliding_windows

        split = (problem.data or {}).get("split")
        data = training_data(problem.data) if (problem.data or {}).get("dataset") else None
        n_train = len(data.train) if data is not None else len(split["train"])
        n_val = len(data.val) if data is not None else len(split["val"])
        batch = int(train.get("batch_size") or problem.batch_size)
        iterations = int(train.get("iterations_per_epoch") or math.ceil(n_train / batch))
        # validated as often as the trainer will (the default profile validates every few epochs)
        patch = tuple(train.get("patch_size") or problem.patch_size)
        val_shapes = ([c.label.shape for c in data.val] if data is not None
                      else [tuple((problem.plan or {}).get("median_shape") or patch)] * n_val)
        val_every = epochs_between_validations(TrainerConfig.from_dict({**train, "device": device}), val_shapes,
                                               patch, batch, iterations)
        notes = []
        extra = None
        runs = cfg.samea.latency_runs + 1

        # the latency volume's share of a validation pass, by sliding windows (a case's time follows them)
        ref = reference_shape((problem.plan or {}).get("median_shape"), problem.patch_size)
        ref_share = sliding_windows(ref, patch) / max(sum(sliding_windows(s, patch) for s in val_shapes), 1)

        def latency_s(g: Genome) -> float:  # the export, then warm-up and timed runs over the reference volume
            return 1.0 + runs * model.val.predict(costs(g)[1], g.nf1) * ref_share

        if self.measures_latency:
            extra = latency_s
            notes.append("includes measuring each candidate's latency")
        if cfg.resources.max_latency_ms:
            notes.append("genomes over max_latency_ms, not trained, are counted as trained")
        if cfg.training.patience < cfg.training.epochs or cfg.resources.early_stopping != "off":
            notes.append("assumes every candidate trains all epochs; early stopping makes it shorter")
        model = est.TimeModel(cal, costs, cfg.training.epochs, iterations, val_every, extra)
        if self.measures_latency and (cfg.samea.objective != "parameters" or cfg.resources.max_latency_ms):
            # the run's start measures the genomes that set the bounds (``_build_strategy``)
            picks = self._bound_genomes(space, feasible, *extreme_genomes(space), lambda g: costs(g)[1])
            model.begin_s = float(sum(latency_s(g) for g in picks))
            notes.append(f"includes measuring the latency of {len(picks)} networks at the start (the bounds)")
        if cfg.samea.front_latency and not self.measures_latency and sample:
            # the front's networks measured once the search ends; its size guessed as half a generation
            n = max(2, int(cfg.samea.population) // 2)
            model.end_each_s = float(np.mean([latency_s(g) for g in sample]))
            model.end_s = n * model.end_each_s
            notes.append(f"includes measuring the latency of the front's networks (about {n}) at the end")
        return model, sample, cached, notes

    @property
    def measures_latency(self) -> bool:
        """Whether this run measures each trained candidate's latency."""
        s, r = self.config.samea, self.config.resources
        return s.objective == "latency" or bool(r.max_latency_ms) or s.measure_latency

    def _bound_genomes(self, space: SearchSpace, feasible, lo: Genome, hi: Genome, flops) -> list[Genome]:
        """The cheapest and the dearest genome by FLOPs of each first-level width (nf1) among the space's
        extremes and a seeded sample, keeping only those within the run's budgets, ordered by FLOPs (the
        first is the cheapest of all, the last the dearest): they set the normalization bounds. A latency
        objective measures them all: at one FLOP count a narrow network runs slower than a wide one, so
        the slowest network need not be the dearest by FLOPs (measured: ``benchmarks/latency_model.py``)."""
        rng = np.random.default_rng(np.random.SeedSequence([int(self.config.seed), 1]))
        cards = space.cardinalities
        pool = [lo, hi] + [space.decode([int(rng.integers(k)) for k in cards]) for _ in range(256)]
        ok = [g for g in pool if feasible(g)]
        if not ok:
            raise ConfigError("no genome of the search space fits the budgets (resources.max_memory_mb, "
                              "max_gflops_per_step, max_parameters); widen the space or raise them")
        ranked = sorted(ok, key=lambda g: (flops(g), g.to_json()))
        picks = []
        for width in sorted({g.nf1 for g in ranked}):
            same = [g for g in ranked if g.nf1 == width]
            picks += [same[0], same[-1]]
        return sorted(dict.fromkeys(picks), key=lambda g: (flops(g), g.to_json()))

    def cost_value(self, genome: Genome, parameters: int, latency_ms: float | None = None) -> float:
        """The raw second objective of a genome: parameter count, inference FLOPs or latency in ms."""
        objective = self.config.samea.objective
        if objective == "flops":
            return float(self.flops_of(genome))
        if objective == "latency":
            return float(latency_ms if latency_ms is not None else self.latency.value(genome))
        return float(parameters)

    def _per_device(self) -> float:
        r = self.config.resources
        if r.executor == "ray" and r.gpus_per_candidate > 0:
            return 1.0 / r.gpus_per_candidate
        if r.executor == "local":
            from engine.device import cuda_count

            n = cuda_count()
            return max(1.0, r.workers / n) if n else 1.0
        return 1.0

    def _executor(self, device: str):
        from engine.run.evaluate import evaluate_candidate
        from engine.run.executors import make_executor

        return make_executor(self.config.resources, self.evaluator or evaluate_candidate, device)

    # ---- the loop --------------------------------------------------------------------------------
    def run(self, callback: Callable[[SearchEvent], None] | None = None, cancel=None) -> dict:
        """Run (or continue) the search until done, the wall-clock budget, or ``cancel``/``stop()``.

        Returns the run summary (status, counts, front, metrics). Raises ``RunError`` when another
        process writes this run. A new run refused for its configuration or data before any
        candidate was queued leaves no folder behind, so the same command runs once they are fixed.
        """
        fresh = not self._resume and not self.run_dir.exists()
        try:
            return self._run(callback, cancel)
        except (ConfigError, DataError, GenomeError):
            # only a refusal of the configuration or the data: a run stopped by its disk (full,
            # read-only) keeps its folder, since its message tells the user to resume it
            if fresh:
                self._discard_unstarted()
            raise

    def _discard_unstarted(self) -> None:
        """Remove the folder of a new run that stopped before any candidate was queued."""
        if not self.run_dir.is_dir():
            return
        if is_run(self.run_dir):
            try:
                with RunStore.open_readonly(self.run_dir) as ro:
                    if any(ro.counts().values()):
                        return
            except EmonasError:
                return
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def _run(self, callback, cancel) -> dict:
        user_cancel = cancel
        stop = AnyFlag(self._cancel, user_cancel)
        device = resolve_device_name(self.config.resources.device)
        if self._resume:
            if self.problem is not None:  # before anything is written: a changed dataset leaves the run as it is
                with RunStore.open_readonly(self.run_dir) as ro:
                    pinned = ro.get_meta("pinned_cases")
                check_pinned_dataset(self.run_dir, self.problem, pinned)
            store = RunStore.open_writer(self.run_dir)
        else:
            train = self._train_dict()
            if self.problem is None:  # bad data fails here, before a run directory is made
                try:
                    self.problem = self._prepare_problem()
                except OSError as exc:  # the first write into RUN (its data cache) says RUN cannot be made
                    if not exc.filename or self.run_dir.resolve() not in (Path(exc.filename).resolve(),
                                                                          *Path(exc.filename).resolve().parents):
                        raise
                    raise RunError(f"{self.run_dir}: cannot make the run folder here "
                                   f"({exc.strerror or exc})") from None
            store = RunStore.create(self.run_dir, {"config": self.config.to_dict(), "train_config": train})
        self.store = store
        self._exec = None
        t_start = time.time()
        try:
            with write_errors(self.run_dir), run_log(self.run_dir):  # RUN/search.log while it runs
                return self._loop(store, logging_events(callback), stop, device, t_start)
        except BaseException as exc:
            try:  # Ctrl-C pauses; anything else marks the run failed (resume continues either)
                store.set_meta(status="paused" if isinstance(exc, KeyboardInterrupt) else "failed")
            except Exception:  # noqa: BLE001
                pass
            raise
        finally:
            if self._exec is not None:
                self._exec.close()
                self._exec = None
            store.close()
            self.store = None

    def _loop(self, store: RunStore, callback, stop, device: str, t_start: float) -> dict:
        """Ask, evaluate, tell and save until done; each named fault point is a moment a crash is survived."""
        fault("session.start")
        if self.problem is None:
            self.problem = self._prepare_problem()
        if store.get_meta("problem") is None:
            t0 = time.perf_counter()
            pinned = pinned_case_digests(self.problem.data)  # reads every pinned case: part of the data set-up
            self._setup_s += time.perf_counter() - t0
            store.set_meta(problem=self.problem.to_dict(), plan=self.problem.plan, pinned_cases=pinned)
        self.strategy = strategy = self._build_strategy(self.problem, device)
        store.set_meta(objective=self._objective_meta())
        self._start_eta(device)
        state = store.latest_state()
        if state is not None:
            strategy.load_state_dict(state)
        requeued = store.requeue_running()
        if requeued:
            log.info("%d candidate(s) interrupted earlier go back to the queue", requeued)
        store.set_meta(status="running", device=device)
        self._elapsed0, self._t_start = float(store.get_meta("elapsed_s", 0.0)), t_start
        elapsed0 = self._elapsed0
        algo_s = float(store.get_meta("algorithm_s", 0.0))
        budget = self.config.resources.wall_clock_hours * 3600
        self._emit(callback, "started")
        status = "finished"
        while not strategy.done:
            if budget and elapsed0 + time.time() - t_start >= budget:
                status = "budget"
                log.info("wall-clock budget of %.2f h reached", self.config.resources.wall_clock_hours)
                break
            if stop.is_set():
                status = "paused"
                break
            t0 = time.perf_counter()
            had_pending = strategy.has_pending
            genomes = strategy.ask()
            algo_s += time.perf_counter() - t0
            fault("session.ask")
            if not had_pending:
                store.save_state(strategy.state_dict())
            evaluations = self._evaluate(genomes, device, stop, callback)
            if evaluations is None:
                status = "paused"
                break
            t0 = time.perf_counter()
            strategy.tell(evaluations)
            algo_s += time.perf_counter() - t0
            fault("session.tell")
            store.save_state(strategy.state_dict())
            store.set_meta(algorithm_s=algo_s, elapsed_s=elapsed0 + time.time() - t_start, **self._basis())
            fault("session.step")
            self._emit(callback, "step")
        if status in ("finished", "budget") and self.config.samea.front_latency:
            if not self._front_latency(stop, callback):
                status = "paused"  # stopped while measuring: the next resume measures the rest
        summary = self._summary(status, algo_s)
        fault("session.finish")
        store.set_meta(status=status, summary=summary, algorithm_s=algo_s, elapsed_s=elapsed0 + time.time() - t_start,
                       **self._basis())
        self._emit(callback, "finished", status=status)
        return summary

    def _evaluate(self, genomes, device, stop, callback) -> list[Evaluation] | None:
        """Evaluations of the asked genomes, training only those not finished before."""
        store, strategy = self.store, self.strategy
        rows = []
        for g in genomes:
            meta = strategy.describe(g)
            rows.append({
                "genome": g.to_json(), "generation": meta.get("generation"), "phase": meta.get("phase"),
                "subproblem": meta.get("subproblem"), "predicted_f1": meta.get("predicted_f1"),
                "predicted_std": meta.get("predicted_std"),
            })
        ids = store.add_candidates(rows)
        results: dict[int, CandidateRow] = {}
        tasks: list[CandidateTask] = []
        reuse = self._reusable() if self.config.resources.reuse_results else {}
        train = store.train_config() or self._train_dict()
        stop_below = self._stop_thresholds()
        for g, cid in zip(genomes, ids):
            row = store.candidate(cid)
            if row.finished:
                results[cid] = row
                continue
            hit = reuse.get(g.to_json())
            if hit is not None:
                results[cid] = self._take_reused(cid, *hit)
                continue
            if self.latency is not None:  # before training, with nothing else training in this process
                before = self.latency.measure_seconds
                ms = self.latency.measure(g)
                if self.latency.measure_seconds > before:  # measured now, not read from the run
                    self._observe_latency(g, self.latency.measure_seconds - before)
                most = self.config.resources.max_latency_ms
                if most and ms > most:
                    results[cid] = self._refuse(cid, g, ms)
                    continue
            tasks.append(CandidateTask(cid, g.to_dict(), str(store.candidate_dir(cid)), self.problem.data, train,
                                       stop_below))
        if tasks:
            if self._exec is None:
                self._exec = self._executor(device)

            def on_start(wire: dict) -> None:  # executors carry the plain dicts (process pools, Ray)
                task = CandidateTask.from_dict(wire)
                store.update_candidate(task.candidate_id, status="running", started_at=time.time(), device=task.device)
                self._emit(callback, "candidate_started", candidate=store.candidate(task.candidate_id))

            def on_result(wire: dict, result: dict) -> None:
                task = CandidateTask.from_dict(wire)
                results[task.candidate_id] = self._commit(task, CandidateResult.from_dict(result))
                self._emit(callback, "candidate_finished", candidate=results[task.candidate_id])

            self._exec.run([t.to_dict() for t in tasks], on_start, on_result, stop)
        if any(cid not in results for cid in ids):
            return None
        out = []
        for g, cid in zip(genomes, ids):
            r = results[cid]
            params = int(r.parameters or 0)
            ok = r.status == "done"
            cost = self.cost_value(g, params, r.latency_ms) if ok else None
            out.append(Evaluation(g, r.f1 if ok else math.nan, params, r.status, cid, cost=cost))
        return out

    def _front_latency(self, stop, callback=None) -> bool:
        """After all training: measure the front's networks that have no latency on the run's target
        (once per genome, kept in the run's database), then give every finished candidate its measured
        latency or one predicted from FLOPs (and width) by the networks measured (flagged as predicted). False when
        ``stop`` was set before all were measured. Each measurement is announced to ``callback`` (a
        ``latency`` event). A target this machine lacks (cuda without a GPU), or
        a network that cannot be measured, is logged and left without a latency: the search's results
        stand without it."""
        store = self.store
        if self.latency is None:
            try:
                self.latency = self._latency_book()
            except ConfigError as exc:
                log.warning("the front's latency is not measured: %s", exc)
                return True
        book = self.latency
        todo = self._front_unmeasured()
        if todo:
            log.info("measuring the latency of %d network(s) of the front on %s (%s)", len(todo), book.target,
                     book.hardware)
        for i, c in enumerate(todo):
            if stop.is_set():
                return False
            g = Genome.from_dict(c.genome)
            self._end_left = len(todo) - i
            self._emit(callback, "latency", c, detail={"done": i, "total": len(todo), "target": book.target,
                                                       "hardware": book.hardware})
            t0 = time.perf_counter()
            try:
                book.measure(g)
            except Exception as exc:  # noqa: BLE001 - a latency is a figure beside the results, not a result
                log.warning("the latency of %s could not be measured: %s", g.to_dict(), one_line(exc))
            self._end_measured.append(time.perf_counter() - t0)
        self._end_left = 0
        for c in store.candidates("done"):
            cols = self._costs(Genome.from_dict(c.genome))
            if "latency_ms" in cols and (cols["latency_ms"], cols["latency_predicted"]) != (c.latency_ms,
                                                                                             c.latency_predicted):
                store.update_candidate(c.id, **cols)
        store.set_meta(objective=self._objective_meta())
        return True

    def _latency_book(self):
        """The run's ``LatencyBook`` on ``samea.latency_target`` (its measured latencies read back from
        the database); raises ``ConfigError`` for a cuda target on a machine without one."""
        from engine.run.latency import LatencyBook

        s = self.config.samea
        return LatencyBook(self.store, self.problem, self.flops_of, s.latency_target, s.latency_threads,
                           s.latency_runs, int(self.config.seed))

    def _costs(self, genome: Genome) -> dict:
        """The candidate's GFLOPs and latency columns (latency measured, or predicted and flagged so)."""
        cols: dict[str, Any] = {}
        try:
            cols["gflops"] = self.flops_of(genome) / 1e9
        except ConfigError:
            pass
        if self.latency is not None:
            known = self.latency.known(genome)
            if known is not None:
                cols.update(latency_ms=known, latency_predicted=0)
            elif self.latency.model.ready:
                cols.update(latency_ms=self.latency.predicted(genome), latency_predicted=1)
        return cols

    def _refuse(self, cid: int, genome: Genome, ms: float) -> CandidateRow:
        """A genome measured slower than resources.max_latency_ms: recorded as failed, never trained."""
        most = self.config.resources.max_latency_ms
        params = int(self.parameters_of(genome))
        self.store.update_candidate(
            cid, status="failed", f1=1.0, f2=1.0, parameters=params, finished_at=time.time(), seconds=0.0,
            error=f"not trained: {ms:.1f} ms on {self.latency.target} is over resources.max_latency_ms ({most:g} ms)",
            **self._costs(genome))
        return self.store.candidate(cid)

    def f2(self, genome: Genome, parameters: int, latency_ms: float | None = None) -> float:
        """The genome's ``f2``: its second objective normalized between the run's bounds (one formula,
        ``engine.search.objective.normalized``, which the strategies use too)."""
        return normalized(self.cost_value(genome, parameters, latency_ms), self.objective_bounds)

    def _commit(self, task: CandidateTask, result: CandidateResult) -> CandidateRow:
        """Write one finished candidate (done or failed) to the database at once."""
        store = self.store
        cid = task.candidate_id
        genome = Genome.from_dict(task.genome)
        params = int(result.parameters or self.parameters_of(genome))
        ok = result.ok
        if not ok and _out_of_space(result.error):
            # not the candidate's fault: stop with the candidate still queued, to train on resume
            raise RunError(f"{self.run_dir}: cannot write candidate {cid} ({result.error}); free space or make "
                           f"the folder writable, then `emonas resume {self.run_dir}`")
        fault("candidate.before_commit")
        cols = dict(
            status="done" if ok else "failed",
            f1=float(result.f1) if ok else 1.0,
            f2=self.f2(genome, params) if ok else 1.0,
            f1_raw=result.f1_raw if ok else None,
            parameters=params,
            metrics=result.metrics, curves=result.curves,
            started_at=result.started_at, finished_at=result.finished_at or time.time(),
            seconds=result.seconds, device=result.device or task.device,
            error=None if ok else (result.error or "failed"),
            **self._costs(genome),
        )
        store.update_candidate(cid, **cols)
        fault("candidate.after_commit")
        if ok and result.seconds:
            self._observe(genome, float(result.seconds))
        store.set_meta(**self._basis())  # for readers of the run (the app's monitor, engine.run.progress.watch)
        if self.config.resources.disk_budget_mb:
            self._prune()
        return store.candidate(cid)

    # ---- early stopping and reuse ------------------------------------------------------------------
    def _stop_thresholds(self) -> dict:
        """Epoch -> best validation mean Dice a candidate must reach by then (opt-in rules)."""
        r = self.config.resources
        if r.early_stopping == "off":
            return {}
        per_epoch: dict[int, list[float]] = {}
        for c in self.store.candidates("done"):
            best = -math.inf
            for rec in c.curves or []:
                d = rec.get("val_dice_mean")
                if d is not None:
                    best = max(best, d)
                if best > -math.inf:
                    per_epoch.setdefault(int(rec.get("epoch", 0)), []).append(best)
        if r.early_stopping == "median":
            epochs = [e for e in per_epoch if e >= r.early_stopping_min_epochs]
            q = 0.5
        else:
            epochs = [e for e in r.halving_rungs if e in per_epoch]
            q = 1.0 - r.halving_keep
        return {str(e): float(np.quantile(per_epoch[e], q)) for e in epochs if len(per_epoch[e]) >= 3}

    def _reusable(self) -> dict[str, tuple[CandidateRow, Path]]:
        """Finished candidates of sibling runs made on the same plan and training settings, by genome
        text, each with its run."""
        plan = self.store.get_meta("plan")
        train = self.store.train_config()
        found: dict[str, tuple[CandidateRow, Path]] = {}
        for other in sorted(self.run_dir.resolve().parent.iterdir()):
            if other == self.run_dir.resolve() or not is_run(other):
                continue
            try:
                with RunStore.open_readonly(other) as ro:
                    if ro.get_meta("plan") != plan or ro.train_config() != train:
                        continue
                    for c in ro.candidates("done"):
                        found.setdefault(json.dumps(c.genome), (c, other))
            except RunError:
                continue
        return found

    def _take_reused(self, cid: int, hit: CandidateRow, run: Path) -> CandidateRow:
        src = Path(run) / "candidates" / str(hit.id)
        if src.is_dir():
            shutil.copytree(src, self.store.candidate_dir(cid), dirs_exist_ok=True)
        keep = ("f1", "f1_raw", "parameters", "metrics", "curves", "seconds", "device")
        genome = Genome.from_dict(hit.genome)
        self.store.update_candidate(
            cid, status="done", f2=self.f2(genome, int(hit.parameters)),
            finished_at=time.time(), reused_from=f"{run}#{hit.id}", **{k: getattr(hit, k) for k in keep},
            **self._costs(genome),
        )
        return self.store.candidate(cid)

    def _prune(self) -> None:
        """Past the disk budget, delete weights of dominated candidates, oldest first."""
        limit = self.config.resources.disk_budget_mb * 2**20
        root = self.run_dir / "candidates"
        used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        if used <= limit:
            return
        front = {p[0] for p in P.pareto_points(self.store.objectives())[0]}
        for c in self.store.candidates("done"):
            if used <= limit:
                break
            w = self.store.candidate_dir(c.id) / "weights.pt"
            if c.id in front or c.pruned or not w.exists():
                continue
            used -= w.stat().st_size
            w.unlink()
            self.store.update_candidate(c.id, pruned=1)

    # ---- reporting -------------------------------------------------------------------------------
    def _summary(self, status: str, algo_s: float) -> dict:
        store, strategy = self.store, self.strategy
        done = store.candidates()
        training_s = sum(c.seconds or 0.0 for c in done if c.finished and not c.reused_from)
        progress = self.progress(status)
        front = store.front()
        return {
            "status": status, "run": str(self.run_dir), "counts": progress.counts, "generation": progress.generation,
            "generations": progress.generations, **strategy.metrics(),
            "algorithm_seconds": algo_s, "training_seconds": training_s,
            # this session's opening of the dataset and its preprocessed cache (not the algorithm's)
            "data_setup_seconds": self._setup_s,
            "hypervolume": progress.hypervolume,
            "early_stopped": sum(bool((c.metrics or {}).get("early_stopped")) for c in done),
            "reused": sum(bool(c.reused_from) for c in done),
            "objective": self.config.samea.objective,
            "latency_seconds": self.latency.measure_seconds if self.latency is not None else 0.0,
            "front": [{"id": c.id, "f1": c.f1, "f2": c.f2, "parameters": c.parameters, "gflops": c.gflops,
                       "latency_ms": c.latency_ms, "latency_predicted": bool(c.latency_predicted)} for c in front],
        }

    def _start_eta(self, device: str) -> None:
        """Set up the ETA's time model and feed it the candidates this run trained before."""
        from engine.run.estimate import MeanTimeModel

        if self.eta_model is None:
            try:
                self.eta_model, self._eta_sample = self.time_model(device)[:2]
            except Exception:  # noqa: BLE001 - the ETA is a display; a search never fails for it
                log.debug("no calibrated time model", exc_info=True)
                self.eta_model = MeanTimeModel()
        for c in self.store.candidates("done"):
            if c.seconds and not c.reused_from:
                self._observe(Genome.from_dict(c.genome), c.seconds)
        self._candidate_s = self._mean_candidate_seconds()

    def _observe(self, genome: Genome, seconds: float) -> None:
        """A measured training time, for the ETA's model (and its sample, when it came without one)."""
        self.eta_model.observe(genome, seconds)
        if not self._eta_sample:
            self._observed.append(genome)
        self._candidate_s = None  # computed again when next asked

    def _observe_latency(self, genome: Genome, seconds: float) -> None:
        """A measured latency's measuring time, for the ETA's model where it counts those apart."""
        observe = getattr(self.eta_model, "observe_latency", None)
        if observe is not None:
            observe(genome, seconds)
            self._candidate_s = None

    def _mean_candidate_seconds(self) -> float | None:
        if self.eta_model is None:
            return None
        if self._candidate_s is None:
            self._candidate_s = P.mean_candidate_seconds(self.eta_model, self._eta_sample or self._observed)
        return self._candidate_s

    def _elapsed(self) -> float:
        return self._elapsed0 + time.time() - self._t_start

    def _end_seconds(self) -> float:
        """Seconds of work left after all training: measuring the latency of the front's networks that
        have none (``samea.front_latency``), at the time model's rate until some are measured."""
        if not self.config.samea.front_latency or self.measures_latency or self.store is None:
            return 0.0
        each = (float(np.mean(self._end_measured)) if self._end_measured
                else float(getattr(self.eta_model, "end_each_s", 0.0) or 0.0))
        if each <= 0:
            return 0.0
        left = self._end_left if self._end_left is not None else len(self._front_unmeasured())
        return left * each

    def _front_unmeasured(self) -> list[CandidateRow]:
        """The front's candidates without a latency on the run's target, one per network (all of them before
        the run's ``LatencyBook`` exists: a parameters or flops run opens it when the search ends)."""
        from engine.run.latency import latency_key

        out, seen = [], set()
        for c in self.store.front():  # one per network: genomes that differ only in lr are measured once
            key = latency_key(c.genome)
            if key not in seen and (self.latency is None or self.latency.known(Genome.from_dict(c.genome)) is None):
                out.append(c)
            seen.add(key)
        return out

    def _basis(self) -> dict:
        """The ``progress_basis`` meta entry (what a reader of the run cannot count from the database)."""
        s = self.strategy
        return {P.BASIS_KEY: P.basis(s.expected_evaluations(), self._mean_candidate_seconds(), self.parallel_slots(),
                                     s.generation, s.generations, self._elapsed(), self.config.samea.objective,
                                     self._end_seconds())}

    def progress(self, status: str = "running") -> Progress:
        """The run's progress now (the strategy's expected evaluations, the database's counts and front)."""
        s = self.strategy
        return P.build_progress(self.store, status, s.generation, s.generations, s.expected_evaluations(),
                                self._mean_candidate_seconds(), self.parallel_slots(), self._elapsed(),
                                self.config.samea.objective, self._end_seconds())

    def _objective_meta(self) -> dict:
        """The run's second objective, its bounds and where latency is measured (stored in the run)."""
        return {"name": self.config.samea.objective, "bounds": list(self.objective_bounds or ()),
                "latency": self.latency.describe() if self.latency is not None else None}

    def _emit(self, callback, kind: str, candidate: CandidateRow | None = None, status: str = "running",
              detail: dict | None = None) -> None:
        if callback is None or self.store is None or self.strategy is None:
            return
        try:
            callback(SearchEvent(kind, self.progress(status), candidate, detail))
        except Exception:  # noqa: BLE001 - a broken display must not stop the search
            log.exception("progress callback failed")


def estimate_search(cfg, recalibrate: bool = False, step_fn=None, problem=None, latency_fn=None,
                    count_start: bool = False) -> SearchEstimate:
    """Estimate the wall time of searching with ``cfg`` on this device (calibrating unless cached), and
    the share of the space each limit (``max_parameters``, ``max_latency_ms``) keeps out.

    Prepares the dataset in a temporary folder (nothing is written where the run will go). With
    ``count_start`` (a fresh process that does what the search's own process will: the CLI, a child
    job), the time this process took to start and open the dataset is added to the estimate.
    """
    from engine.run.estimate import process_age, search_estimate

    device = resolve_device_name(cfg.resources.device)
    with tempfile.TemporaryDirectory(prefix="emonas-estimate-") as tmp:
        session = SearchSession(Path(tmp) / "run", cfg, problem=problem)
        if session.problem is None:
            session.problem = session._prepare_problem()
        start_s = process_age() if count_start else 0.0
        problem = session.problem
        model, sample, cached, notes = session.time_model(device, calibrate_now=True, recalibrate=recalibrate,
                                                          step_fn=step_fn)
        sample, limits = _limit_notes(session, device, model.calibration, sample, latency_fn)
        first = session.first_generation(problem, device)
    return search_estimate(model, sample, cfg.samea, session.parallel_slots(), device, limits + notes, cached,
                           start_s, first=first)


def _limit_notes(session, device: str, cal, sample: list[Genome], latency_fn=None):
    """(the sample without the genomes the latency limit keeps out, one note per limit on its share of the space).

    The parameter limit's share is exact per genome; the latency limit's is predicted from FLOPs by a
    power law fitted to a few genomes of the sample (cheapest, median, dearest by FLOPs) measured as the
    search measures them (``latency_fn`` as ``engine.run.latency.measure_latency``), kept with the calibration.
    """
    from engine.network.cost import count_parameters
    from engine.run.estimate import calibration_genomes, excluded_share, save_calibration
    from engine.run.latency import hardware_name, measure_latency, reference_shape
    from engine.search.objective import PowerLaw, inference_flops

    cfg, problem = session.config, session.problem
    r, s = cfg.resources, cfg.samea
    space = cfg.space.search_space()
    cin, ncls = problem.in_channels, problem.num_classes
    if not (r.max_parameters or r.max_latency_ms):
        return sample, []
    session.config = cfg.replace(resources={"max_parameters": 0})  # the budgets without the limit measured
    try:
        budgets = session.within_budgets(problem, device)
    finally:
        session.config = cfg
    notes = []
    if r.max_parameters:
        share = excluded_share(space, lambda g: count_parameters(g, cin, ncls, problem.pools(g.n_levels))
                               > r.max_parameters, budgets)
        notes.append(f"max_parameters {r.max_parameters:,} excludes {100 * share:.0f} % of the space")
    if r.max_latency_ms:
        def flops(g: Genome) -> float:
            return float(inference_flops(g, cin, ncls, problem.patch_size, problem.pools(g.n_levels)))

        shape = reference_shape((problem.plan or {}).get("median_shape"), problem.patch_size)
        threads = s.latency_threads if s.latency_target == "cpu" else 0
        key = f"{s.latency_target}/{threads}/{'x'.join(map(str, shape))}/{s.latency_runs}"
        measured = cal.latency.get(key)
        if not measured:
            measure = latency_fn or measure_latency
            measured = [[flops(g), measure(g, cin, ncls, problem.pools(g.n_levels), problem.patch_size, shape,
                                           s.latency_target, max(threads, 1), s.latency_runs,
                                           int(cfg.seed))["latency_ms"]]
                        for g in calibration_genomes(sample, flops)]
            cal.latency[key] = measured
            save_calibration(cal)
        law = PowerLaw(tuple(p) for p in measured)
        most = r.max_latency_ms

        def slow(g: Genome) -> bool:
            return law.predict(flops(g)) > most

        share = excluded_share(space, slow, budgets)
        notes.append(f"max_latency_ms {most:g} excludes about {100 * share:.0f} % of the space (predicted from FLOPs "
                     f"by {len(measured)} genomes measured on {hardware_name(s.latency_target)}, "
                     f"{max(threads, 1) if threads else 'GPU'} thread(s): {', '.join(f'{ms:.0f}' for _, ms in measured)} ms)")
        sample = [g for g in sample if not slow(g)]
        if not sample:
            raise ConfigError(f"resources.max_latency_ms: no sampled genome is predicted under {most:g} ms "
                              f"(measured {', '.join(f'{ms:.0f}' for _, ms in measured)} ms); raise the limit")
    return sample, notes
