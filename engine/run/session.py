"""A search run: a strategy, an executor and the run database, with progress, pause/cancel and resume.

    session = SearchSession(run_dir, config)          # a new run (nothing written until run())
    session = SearchSession.open(run_dir)             # an existing run, to resume
    summary = session.run(callback=on_event, cancel=event)   # blocks; call from a worker thread
    session.stop()                                    # same as setting ``cancel``: pause after this step

``run()`` takes the run's lock, asks the strategy, commits every finished candidate at once, tells the
strategy and saves its state after every step. Stopped, killed or crashed, the run continues with
``SearchSession.open(run_dir).run()``: the same seed gives the same genomes in the same order, and
no finished candidate is trained again. ``callback`` receives ``SearchEvent`` values (plain data).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.config import SearchConfig
from engine.errors import ConfigError, EmonasError, RunError
from engine.genome import Genome, SearchSpace
from engine.run.evaluate import AnyFlag
from engine.run.faults import fault
from engine.run.runlog import logging_events, run_log
from engine.run.store import RunStore, is_run, write_errors
from engine.search import STRATEGIES, Evaluation

log = logging.getLogger(__name__)

GIB = 2**30


@dataclass
class Problem:
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
    def from_dict(cls, d: dict) -> "Problem":
        return cls(**d)

    @classmethod
    def from_training_data(cls, td, training, data_spec: dict) -> "Problem":
        plan = td.plan
        pools = {}
        if hasattr(plan, "pool_sizes_for"):
            for n in (2, 3, 4):
                try:
                    pools[str(n)] = [list(p) for p in plan.pool_sizes_for(n)]
                except Exception:  # noqa: BLE001 - a plan may not pool this deep; genomes then fail the patch check
                    pass
        return cls(
            in_channels=td.in_channels, num_classes=td.num_classes,
            patch_size=list(training.patch_size or plan.patch_size), batch_size=int(training.batch_size or plan.batch_size),
            pool_sizes=pools, plan=plan.to_dict() if hasattr(plan, "to_dict") else dict(plan),
            labels=dict(td.labels), modalities=list(td.modalities), data=data_spec,
        )


@dataclass
class SearchEvent:
    """A progress report: ``kind`` is started, candidate_started, candidate_finished, step or finished."""

    kind: str
    generation: int  # generations completed so far (0 while the initial population trains)
    generations: int
    progress: float  # the strategy's progress in [0, 1]
    counts: dict  # candidates per status
    front: list  # [(id, f1, f2, parameters)] of the current Pareto front
    eta_seconds: float | None = None
    candidate: dict | None = None
    status: str = "running"


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


def check_pinned_dataset(run_dir: Path, problem: Problem, pinned: dict | None) -> None:
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


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        return "cpu"


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
                 evaluator: Callable | None = None, problem: Problem | None = None):
        self._setup(Path(run_dir), (config or SearchConfig()).validate(), evaluator, problem, resume=False)
        if is_run(self.run_dir):
            raise RunError(f"{self.run_dir}: a run exists here already; continue it with `emonas resume {self.run_dir}`")
        if self.config.dataset and str(self.config.dataset) != "demo":
            from engine.outputs import Source, check_output

            check_output(self.run_dir, [Source(self.config.dataset, "dataset")], option="--out")

    @classmethod
    def open(cls, run_dir: str | os.PathLike, evaluator: Callable | None = None, problem: Problem | None = None) -> "SearchSession":
        """An existing run, to continue; its stored config is used."""
        run_dir = Path(run_dir)
        with RunStore.open_readonly(run_dir) as ro:
            config = SearchConfig.from_dict(ro.get_meta("config"), f"{run_dir}/run.db")
            stored_problem = ro.get_meta("problem")
        self = cls.__new__(cls)
        problem = problem or (Problem.from_dict(stored_problem) if stored_problem else None)
        if problem is not None and problem.data and "plan" not in problem.data and problem.plan:
            problem.data = {**problem.data, "plan": problem.plan}  # runs begun before plans were pinned
        self._setup(run_dir, config, evaluator, problem, resume=True)
        return self

    def _setup(self, run_dir: Path, config: SearchConfig, evaluator, problem, resume: bool) -> None:
        self.run_dir = run_dir
        self.config = config
        self.evaluator = evaluator
        self.problem = problem
        self._resume = resume
        self._exec = None
        self._cancel = threading.Event()
        self._setup_s = 0.0  # time in _prepare_problem this session
        self.store: RunStore | None = None
        self.strategy = None

    def stop(self) -> None:
        """Ask ``run()`` to stop soon; the run can be resumed later."""
        self._cancel.set()

    pause = stop

    # ---- set-up ----------------------------------------------------------------------------------
    def _train_dict(self) -> dict:
        t = self.config.training
        d = {
            "epochs": t.epochs, "patience": t.patience, "alpha": t.alpha, "beta": t.beta,
            "max_epochs_for_objective": t.epochs, "seed": int(self.config.seed),
            "batch_size": t.batch_size or None, "patch_size": list(t.patch_size) or None,
            "profile": self.config.profile, **t.extra,
        }
        from engine.train.config import TrainConfig

        TrainConfig.from_dict({**d, "device": "cpu"})  # validates; raises ConfigError naming the key
        return d

    def _prepare_problem(self) -> Problem:
        t0 = time.perf_counter()
        dataset = self.config.dataset
        if not dataset:
            raise ConfigError("no dataset: give --dataset DIR (or demo) or set dataset in the config")
        from engine.run.evaluate import pin_plan, training_data

        ds = dataset if dataset == "demo" else str(Path(dataset).resolve())
        spec = {"dataset": ds, "seed": int(self.config.seed), "cache_dir": str((self.run_dir / "cache").resolve())}
        if self.config.training.plan:
            spec["plan_overrides"] = dict(self.config.training.plan)
        try:
            td = training_data(spec)
        except ConfigError as exc:  # from the plan: its overrides are the config's [training.plan]
            if self.config.training.plan and not str(exc).startswith("training.plan"):
                raise ConfigError(f"training.plan: {exc}") from None
            raise
        spec = pin_plan(spec, td)
        # the run keeps its cases and its plan: cases added to the dataset later never re-plan it halfway
        spec["plan"] = td.plan.to_dict()
        spec["split"] = {k: list(td.split.get(k, [])) for k in ("train", "val", "test")} if td.split else None
        if spec["split"] is None:
            spec.pop("split")
        self._setup_s += time.perf_counter() - t0
        return Problem.from_training_data(td, self.config.training, spec)

    def _build_strategy(self, problem: Problem, device: str):
        from engine.network.cost import count_parameters, estimate_cost

        space: SearchSpace = self.config.space.search_space()
        cin, ncls = problem.in_channels, problem.num_classes
        max_bytes, max_flops = device_budget(device, self.config.resources, self._per_device())

        def parameters(g: Genome) -> int:
            return count_parameters(g, cin, ncls, problem.pools(g.n_levels))

        def feasible(g: Genome) -> bool:
            try:
                cost = estimate_cost(g, cin, ncls, problem.patch_size, problem.batch_size, problem.pools(g.n_levels))
            except ConfigError:
                return False  # the patch cannot be pooled that deep
            return cost.training_bytes <= max_bytes and cost.train_step_flops <= max_flops

        lo, hi = space.extreme_genomes()
        bounds = (parameters(lo), parameters(hi))
        s = self.config.samea
        rng = np.random.default_rng(np.random.SeedSequence(int(self.config.seed)))
        common = dict(space=space, rng=rng, parameters=parameters, f2_bounds=bounds, feasible=feasible,
                      population=s.population, generations=s.generations, max_resample=s.max_resample)
        if s.strategy == "random":
            return STRATEGIES["random"](**common)
        kw = {k: getattr(s, k) for k in (
            "neighbourhood", "theta", "weight_start", "weight_end", "learning_generations", "crossover_probability",
            "mutation_scale", "subproblem_epsilon", "value_epsilon", "surrogate_trees", "surrogate_min_samples_split",
            "prescreen", "pick_front", "pick_min_f1", "pick_max_std")}
        return STRATEGIES[s.strategy](**common, **kw, surrogate_seed=int(self.config.seed))

    def _per_device(self) -> float:
        r = self.config.resources
        if r.executor == "ray" and r.gpus_per_candidate > 0:
            return 1.0 / r.gpus_per_candidate
        if r.executor == "local":
            try:
                import torch

                n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            except Exception:  # noqa: BLE001
                n = 0
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
        except EmonasError:
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
        device = resolve_device(self.config.resources.device)
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
            store.set_meta(problem=self.problem.to_dict(), plan=self.problem.plan,
                           pinned_cases=pinned_case_digests(self.problem.data))
        self.strategy = strategy = self._build_strategy(self.problem, device)
        state = store.latest_state()
        if state is not None:
            strategy.load_state_dict(state)
        requeued = store.requeue_running()
        if requeued:
            log.info("%d candidate(s) interrupted earlier go back to the queue", requeued)
        store.set_meta(status="running", device=device)
        elapsed0 = float(store.get_meta("elapsed_s", 0.0))
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
            had_pending = bool(strategy.pending)
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
            store.set_meta(algorithm_s=algo_s, elapsed_s=elapsed0 + time.time() - t_start)
            fault("session.step")
            self._emit(callback, "step")
        summary = self._summary(status, algo_s)
        fault("session.finish")
        store.set_meta(status=status, summary=summary, algorithm_s=algo_s, elapsed_s=elapsed0 + time.time() - t_start)
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
        results: dict[int, dict] = {}
        tasks = []
        reuse = self._reusable() if self.config.resources.reuse_results else {}
        train = store.get_meta("train_config") or self._train_dict()
        stop_below = self._stop_thresholds()
        for g, cid in zip(genomes, ids):
            row = store.candidate(cid)
            if row["status"] in ("done", "failed"):
                results[cid] = row
                continue
            hit = reuse.get(g.to_json())
            if hit is not None:
                results[cid] = self._take_reused(cid, hit)
                continue
            tasks.append({
                "candidate_id": cid, "genome": g.to_dict(), "out_dir": str(store.candidate_dir(cid)),
                "data": self.problem.data, "train": train, "stop_below": stop_below,
            })
        if tasks:
            if self._exec is None:
                self._exec = self._executor(device)

            def on_start(task):
                store.update_candidate(task["candidate_id"], status="running", started_at=time.time(), device=task.get("device"))
                self._emit(callback, "candidate_started", candidate=store.candidate(task["candidate_id"]))

            def on_result(task, result):
                results[task["candidate_id"]] = self._commit(task, result)
                self._emit(callback, "candidate_finished", candidate=results[task["candidate_id"]])

            self._exec.run(tasks, on_start, on_result, stop)
        if any(cid not in results for cid in ids):
            return None
        out = []
        for g, cid in zip(genomes, ids):
            r = results[cid]
            out.append(Evaluation(g, r["f1"] if r["status"] == "done" else math.nan, int(r["parameters"] or 0),
                                  r["status"], cid))
        return out

    def _commit(self, task: dict, result: dict) -> dict:
        """Write one finished candidate (done or failed) to the database at once."""
        store, strategy = self.store, self.strategy
        cid = task["candidate_id"]
        genome = Genome.from_dict(task["genome"])
        params = int(result.get("parameters") or strategy.params_of(strategy.space.encode(genome)))
        ok = result.get("status") == "done" and result.get("f1") is not None and math.isfinite(result["f1"])
        if not ok and _out_of_space(result.get("error")):
            # not the candidate's fault: stop with the candidate still queued, to train on resume
            raise RunError(f"{self.run_dir}: cannot write candidate {cid} ({result.get('error')}); free space or make "
                           f"the folder writable, then `emonas resume {self.run_dir}`")
        fault("candidate.before_commit")
        cols = dict(
            status="done" if ok else "failed",
            f1=float(result["f1"]) if ok else 1.0,
            f2=strategy.f2_of(params) if ok else 1.0,
            f1_raw=result.get("f1_raw") if ok else None,
            parameters=params,
            metrics=result.get("metrics"), curves=result.get("curves"),
            started_at=result.get("started_at"), finished_at=result.get("finished_at") or time.time(),
            seconds=result.get("seconds"), device=result.get("device") or task.get("device"),
            error=None if ok else (result.get("error") or "failed"),
        )
        store.update_candidate(cid, **cols)
        fault("candidate.after_commit")
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
            for rec in c.get("curves") or []:
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

    def _reusable(self) -> dict[str, dict]:
        """Finished candidates of sibling runs made on the same plan and training settings."""
        plan = self.store.get_meta("plan")
        train = self.store.get_meta("train_config")
        found: dict[str, dict] = {}
        for other in sorted(self.run_dir.resolve().parent.iterdir()):
            if other == self.run_dir.resolve() or not is_run(other):
                continue
            try:
                with RunStore.open_readonly(other) as ro:
                    if ro.get_meta("plan") != plan or ro.get_meta("train_config") != train:
                        continue
                    for c in ro.candidates("done"):
                        found.setdefault(json.dumps(c["genome"]), {**c, "run": str(other)})
            except RunError:
                continue
        return found

    def _take_reused(self, cid: int, hit: dict) -> dict:
        src = Path(hit["run"]) / "candidates" / str(hit["id"])
        if src.is_dir():
            shutil.copytree(src, self.store.candidate_dir(cid), dirs_exist_ok=True)
        keep = ("f1", "f1_raw", "parameters", "metrics", "curves", "seconds", "device")
        self.store.update_candidate(
            cid, status="done", f2=self.strategy.f2_of(int(hit["parameters"])), finished_at=time.time(),
            reused_from=f"{hit['run']}#{hit['id']}", **{k: hit[k] for k in keep},
        )
        return self.store.candidate(cid)

    def _prune(self) -> None:
        """Past the disk budget, delete weights of dominated candidates, oldest first."""
        limit = self.config.resources.disk_budget_mb * 2**20
        root = self.run_dir / "candidates"
        used = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        if used <= limit:
            return
        front = {c["id"] for c in self.store.front()}
        for c in self.store.candidates("done"):
            if used <= limit:
                break
            w = self.store.candidate_dir(c["id"]) / "weights.pt"
            if c["id"] in front or c["pruned"] or not w.exists():
                continue
            used -= w.stat().st_size
            w.unlink()
            self.store.update_candidate(c["id"], pruned=1)

    # ---- reporting -------------------------------------------------------------------------------
    def _summary(self, status: str, algo_s: float) -> dict:
        store, strategy = self.store, self.strategy
        done = store.candidates()
        training_s = sum(c["seconds"] or 0.0 for c in done if c["status"] in ("done", "failed") and not c["reused_from"])
        metrics = strategy.metrics()
        front = store.front()
        f = np.array([[c["f1"], c["f2"]] for c in front]).reshape(-1, 2)
        from engine.search.pareto import hypervolume_2d

        return {
            "status": status, "run": str(self.run_dir), "counts": store.counts(), "generation": strategy.generation,
            "generations": strategy.generations, **metrics,
            "algorithm_seconds": algo_s, "training_seconds": training_s,
            # this session's opening of the dataset and its preprocessed cache (not the algorithm's)
            "data_setup_seconds": self._setup_s,
            "hypervolume": hypervolume_2d(f, (1.0, 1.0)) if len(f) else 0.0,
            "early_stopped": sum(bool((c.get("metrics") or {}).get("early_stopped")) for c in done),
            "reused": sum(bool(c["reused_from"]) for c in done),
            "front": [{"id": c["id"], "f1": c["f1"], "f2": c["f2"], "parameters": c["parameters"]} for c in front],
        }

    def _emit(self, callback, kind: str, candidate: dict | None = None, status: str = "running") -> None:
        if callback is None or self.store is None or self.strategy is None:
            return
        store, s = self.store, self.strategy
        counts = store.counts()
        front = [(c["id"], c["f1"], c["f2"], c["parameters"]) for c in store.front()]
        finished = [c for c in store.candidates() if c["status"] in ("done", "failed") and c["seconds"]]
        eta = None
        if finished and s.progress > 0:
            per = float(np.mean([c["seconds"] for c in finished]))
            expected = s.population * s.generations
            slots = max(1, self.config.resources.workers)
            eta = max(0.0, (expected - len(finished)) * per / slots)
        try:
            callback(SearchEvent(kind, s.generation, s.generations, s.progress, counts, front, eta, candidate, status))
        except Exception:  # noqa: BLE001 - a broken display must not stop the search
            log.exception("progress callback failed")
