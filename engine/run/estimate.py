"""How long a search will take on this device, said before it starts, and the time model of its ETA.

A short calibration trains a few genomes sampled from the configured space (the cheapest, the median
and the dearest of a seeded sample by training FLOPs, the median of each width; after a warm-up run
of the cheapest) for a few real steps each on the run's data, and records per genome: seconds per
training step (warm), seconds of one validation pass (one case timed), and the fixed cost of a
candidate (building, warm-up, final metrics); and once per process the set-up of the first training
and validation (kernels and libraries loaded on first use), which the search's first candidate pays
too but the others do not. After two genomes it times only those predicted to end within
``CALIBRATION_BUDGET_S``, and is cached per device and plan (``$EMONAS_CACHE_DIR``).

``TimeModel`` turns a calibration into seconds per candidate (power laws of FLOPs and width, see
``WidthPowerLaw``); ``observe()`` corrects it by the median ratio of measured to
predicted times (per width once two of it are measured), so the in-search ETA uses the same model
updated with what the run measures.
``engine.run.session.estimate_search`` multiplies by the evaluations the chosen strategy will train (a range for SaMEA,
whose surrogate keeps some children untrained).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engine.atomic import atomic_file
from engine.errors import DataError
from engine.genome import Genome, SearchSpace
from engine.search.objective import PowerLaw, WidthPowerLaw

log = logging.getLogger(__name__)
_IMPORTED = time.monotonic()

CALIBRATION_VERSION = 6  # 3: points timed warm, set-up apart (cold_s), a genome per width; 4: channels-last on the CPU;
# 5: a later validation case times the recurring cost; first step's and case's excess once per process;
# 6: two bursts of steps, before and after the validation passes, the faster one kept; cases scaled by windows
CALIBRATION_BUDGET_S = 30.0
CALIBRATION_STEPS = 2  # timed training steps per burst (two bursts per genome, after one warm-up step)
CACHE_NAME = "calibration.json"


@dataclass
class CalibrationPoint:
    """What one calibrated genome cost: per warm training step, per validation pass, once per candidate."""

    genome: dict
    train_flops: float  # one training step (forward + backward, the batch)
    infer_flops: float  # forward of one patch
    step_s: float
    val_s: float
    overhead_s: float
    cold_s: float = 0.0  # the warm-up's excess over the same genome warm (once per process; first point only)
    # the genome's first step and first validation cases over later ones: setting up its shapes (on a
    # GPU, choosing convolution algorithms), which later genomes of the same widths reuse in one process
    excess_s: float = 0.0


@dataclass
class Calibration:
    """Calibration of one device and plan (plain data, cached)."""

    key: str
    device: str
    hardware: str
    points: list[CalibrationPoint]
    seconds: float  # how long calibrating took
    created: float = field(default_factory=time.time)
    version: int = CALIBRATION_VERSION
    # measured latencies for the limit's share, per "target/threads/shape": [[inference FLOPs, ms], ...]
    latency: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        d = dict(d)
        d["points"] = [CalibrationPoint(**p) for p in d["points"]]
        return cls(**d)


class TimeModel:
    """Seconds one candidate takes to train, from a calibration; swappable (any object with
    ``candidate_seconds(genome)`` and ``observe(genome, seconds)`` serves the ETA).

    ``costs(genome) -> (train_flops, infer_flops)``; ``epochs`` x (``iterations`` steps + a validation
    every ``val_every`` epochs) + the fixed cost, + ``extra_s(genome)`` (latency measurement).
    """

    def __init__(self, calibration: Calibration, costs: Callable[[Genome], tuple[float, float]], epochs: int,
                 iterations: int, val_every: int = 1, extra_s: Callable[[Genome], float] | None = None):
        self.calibration = calibration
        self.costs = costs
        self.epochs, self.iterations, self.val_every = int(epochs), int(iterations), max(1, int(val_every))
        self.step = WidthPowerLaw((p.train_flops, p.genome["nf1"], p.step_s) for p in calibration.points)
        self.val = WidthPowerLaw((p.infer_flops, p.genome["nf1"], p.val_s) for p in calibration.points)
        # a candidate's fixed cost is building it and segmenting and scoring every validation case once
        # more: a validation pass plus what the metrics add, which hardly depends on the genome (measured
        # on the hippocampus set: the fixed cost is the validation pass +-0.4 s from 3 s to 10 s, where
        # one median for all over-counted the small networks' by up to 3 s each)
        self.fixed_extra = float(statistics.median(p.overhead_s - p.val_s for p in calibration.points)) \
            if calibration.points else 0.0
        # once per search process, not per candidate: the first one loads what later ones reuse, and
        # each width's shapes are set up once (measured on an H200: 15 s for the first nf1 32 genome's
        # first step, which counted per candidate doubled a search's estimate)
        self.warmup_s = float(max((p.cold_s for p in calibration.points), default=0.0)
                              + sum(p.excess_s for p in calibration.points))
        self.extra_s = extra_s or (lambda g: 0.0)
        self.begin_s = 0.0  # once, before the first candidate (the bound genomes' latency measured)
        self.end_s = 0.0  # once, after the last candidate (the front's latency measured at the end)
        self.end_each_s = 0.0  # of that, the seconds to measure one network
        self.ratios: list[float] = []
        self.width_ratios: dict[int, list[float]] = {}  # the same, per first-level width (nf1)
        self.latency_ratios: list[float] = []  # measured / predicted seconds of measuring a latency

    def parts(self, genome: Genome) -> dict[str, float]:
        """The calibration's prediction for one candidate, uncorrected, in parts: ``fixed_s`` (building,
        final metrics), ``steps_s``, ``validations_s`` and ``latency_s`` (its measurement, where the
        run measures every candidate)."""
        train_flops, infer_flops = self.costs(genome)
        validations = math.ceil(self.epochs / self.val_every)
        val_s = self.val.predict(infer_flops, genome.nf1)
        return {"fixed_s": max(self.fixed_extra + val_s, 0.0),
                "steps_s": self.epochs * self.iterations * self.step.predict(train_flops, genome.nf1),
                "validations_s": validations * val_s,
                "latency_s": self.extra_s(genome)}

    def raw_seconds(self, genome: Genome) -> float:
        """The calibration's prediction for one candidate, uncorrected."""
        return sum(self.parts(genome).values())

    def trained_seconds(self, genome: Genome) -> float:
        """The prediction for what a candidate's recorded seconds cover (building, training, validating,
        final metrics), uncorrected: its latency is measured apart, outside them."""
        parts = self.parts(genome)
        return parts["fixed_s"] + parts["steps_s"] + parts["validations_s"]

    @property
    def correction(self) -> float:
        """Median measured/predicted ratio of the candidates observed so far (1 before any)."""
        return float(statistics.median(self.ratios)) if self.ratios else 1.0

    def correction_for(self, nf1: int) -> float:
        """The median ratio of the candidates of width ``nf1`` once two are observed, else ``correction``:
        a calibration point sets its width's curve, so its error is shared by that width's candidates
        (measured on the demo: nf1 8 candidates at 0.66 - 0.81 of the prediction, nf1 16 at 0.98 - 1.12)."""
        same = self.width_ratios.get(int(nf1), [])
        return float(statistics.median(same)) if len(same) >= 2 else self.correction

    @property
    def latency_correction(self) -> float:
        """Median measured/predicted seconds of the latency measurements observed so far (1 before any)."""
        return float(statistics.median(self.latency_ratios)) if self.latency_ratios else 1.0

    def candidate_seconds(self, genome: Genome) -> float:
        return (self.trained_seconds(genome) * self.correction_for(genome.nf1)
                + self.extra_s(genome) * self.latency_correction)

    def observe(self, genome: Genome, seconds: float) -> None:
        """A candidate's recorded seconds (its evaluation, without its latency measurement): later
        predictions are scaled by the median ratio of their width's candidates (of all candidates until
        two of the width are observed)."""
        raw = self.trained_seconds(genome)
        if seconds and seconds > 0 and raw > 0:
            self.ratios.append(float(seconds) / raw)
            self.width_ratios.setdefault(int(genome.nf1), []).append(float(seconds) / raw)

    def observe_latency(self, genome: Genome, seconds: float) -> None:
        """The seconds one candidate's latency measurement took (export, warm-up, timed runs): later
        predictions of that part are scaled by the median ratio to the model's. The model times it from
        PyTorch's validation windows, and ONNX Runtime on one thread runs them slower (measured on the
        hippocampus set: the part 10 - 16 % low)."""
        raw = self.extra_s(genome)
        if seconds and seconds > 0 and raw > 0:
            self.latency_ratios.append(float(seconds) / raw)


class MeanTimeModel:
    """Without a calibration: the mean measured time of the candidates finished so far, plus the mean
    time of a latency measurement where the run measures them (recorded apart from a candidate's seconds)."""

    def __init__(self):
        self.seconds: list[float] = []
        self.latency_seconds: list[float] = []

    def candidate_seconds(self, genome: Genome) -> float:
        if not self.seconds:
            return math.nan
        return float(np.mean(self.seconds)) + (float(np.mean(self.latency_seconds)) if self.latency_seconds else 0.0)

    def observe(self, genome: Genome, seconds: float) -> None:
        if seconds and seconds > 0:
            self.seconds.append(float(seconds))

    def observe_latency(self, genome: Genome, seconds: float) -> None:
        """The seconds one candidate's latency measurement took."""
        if seconds and seconds > 0:
            self.latency_seconds.append(float(seconds))


def expected_evaluations(samea) -> tuple[int, int, int]:
    """(fewest, expected, most) candidates the strategy of ``samea`` (a SamEAConfig) will train.

    Random search and MOEA/D train every child: population x generations. SaMEA trains the initial
    population and every child of the learning generations; each exploitation generation trains
    ``engine.search.samea.exploitation_trainings`` (the same count ``SaMEA.expected_evaluations()``
    expects while the search runs).
    """
    from engine.search.samea import exploitation_trainings

    n, g = int(samea.population), int(samea.generations)
    if samea.strategy != "samea":
        return n * g, n * g, n * g
    learning = min(int(samea.learning_generations), g - 1)
    exploit = g - 1 - learning
    fixed = n + learning * n
    least, mid, most = exploitation_trainings(n, samea.prescreen, samea.pick_min_f1, samea.pick_max_std)
    return fixed + exploit * least, fixed + round(exploit * mid), fixed + exploit * most


def calibration_key(device: str, hardware: str, problem, train: dict) -> str:
    """Calibrations are kept per device, hardware and plan (with the training settings that change a step)."""
    keep = {k: train.get(k) for k in ("batch_size", "patch_size", "profile", "amp", "num_threads")}
    doc = {"device": device, "hardware": hardware, "plan": problem.plan, "patch": problem.patch_size,
           "batch": problem.batch_size, "in": problem.in_channels, "classes": problem.num_classes,
           "train": keep, "dataset": problem.data.get("dataset"), "version": CALIBRATION_VERSION}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _cache_path() -> Path:
    from engine.data.cache import cache_root

    return cache_root() / CACHE_NAME


def load_calibration(key: str) -> Calibration | None:
    try:
        entry = json.loads(_cache_path().read_text()).get(key)
        return None if entry is None else Calibration.from_dict(entry)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def save_calibration(cal: Calibration) -> None:
    """Keep ``cal`` in the cache for the next estimate on this device and plan.

    The file is replaced atomically from a temporary file of its own, so two processes estimating at
    once never read half a file (the later one's entries win). A cache that cannot be written costs
    only the next estimate's calibration: a warning, never a lost estimate.
    """
    try:
        path = _cache_path()
        try:
            doc = json.loads(path.read_text()) if path.exists() else {}
        except (OSError, ValueError):
            doc = {}
        doc[cal.key] = cal.to_dict()
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(doc))
    except (OSError, DataError) as exc:
        log.warning("the calibration was not kept for the next estimate: %s", exc)


def sample_genomes(space: SearchSpace, feasible: Callable[[Genome], bool], n: int, seed: int) -> list[Genome]:
    """Up to ``n`` distinct genomes drawn uniformly (seeded) among those within the budgets."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    found: dict[str, Genome] = {}
    for _ in range(n * 20):
        g = space.decode([int(rng.integers(k)) for k in space.cardinalities])
        if g.to_json() not in found and feasible(g):
            found[g.to_json()] = g
            if len(found) >= n:
                break
    return list(found.values())


def excluded_share(space: SearchSpace, over: Callable[[Genome], bool], within: Callable[[Genome], bool] | None = None,
                   n: int = 2000, seed: int = 0) -> float:
    """The share of the space's genomes (those ``within`` the budgets, if given) for which ``over`` holds,
    from a seeded uniform sample of ``n`` draws."""
    rng = np.random.default_rng(seed)
    hits = total = 0
    for _ in range(n):
        g = space.decode([int(rng.integers(k)) for k in space.cardinalities])
        if within is not None and not within(g):
            continue
        total += 1
        hits += bool(over(g))
    return hits / total if total else 0.0


def calibration_genomes(sample: Sequence[Genome], train_flops: Callable[[Genome], float], k: int = 3,
                        by_width: bool = False) -> list[Genome]:
    """The cheapest and the dearest of ``sample`` by training FLOPs, then the rest of ``k`` evenly spread
    between them: the first two span the range, so a calibration cut short by its budget still fits a slope.

    ``by_width``: then the median genome (by FLOPs) of each first-level width (nf1) of the sample: at
    one FLOP count narrow networks run slower per FLOP (``WidthPowerLaw``).
    """
    ranked = sorted(sample, key=train_flops)
    if len(ranked) <= 2:
        return ranked
    idx = [0, len(ranked) - 1] + [round(i * (len(ranked) - 1) / (k - 1)) for i in range(1, k - 1)]
    picks = [ranked[i] for i in dict.fromkeys(idx)]
    if by_width:
        for w in sorted({g.nf1 for g in ranked}):
            same = [g for g in ranked if g.nf1 == w]
            picks.append(same[len(same) // 2])
    return list(dict.fromkeys(picks))


def real_calibration_step(genome: Genome, problem, train: dict, device: str) -> tuple[float, float, float, float]:
    """Real training steps of ``genome`` on the run's data: (seconds per warm step, seconds of one whole
    validation pass, fixed seconds of a candidate, one-off seconds of its shapes).

    One warm-up step, then two bursts of ``CALIBRATION_STEPS`` timed steps, one before and one after the
    validation passes; the step time is the faster burst's mean. A machine shared with other work slows
    steps in episodes of seconds: one that covers a burst (measured: a genome timed at 935 ms a step
    whose candidates ran at 510 - 630 ms, its later re-timing 650 - 715 ms) would otherwise carry into
    every candidate of its width. A later validation case timed and scaled to the validation set by
    sliding windows. The fixed cost is building the network and the final metrics pass (segmentation
    and Dice, HD, HD95, ASD of each validation case; timed and scaled the same way). The first step's
    and the first cases' excess over the later ones is the one-off set-up of the genome's shapes (on a
    GPU, the convolution algorithms chosen for them), kept apart: a search pays it once per width, not
    per candidate. Call it warm (``calibrate`` does): a process's first validation also loads what later
    ones reuse, which scaled by the cases would count per candidate.
    """
    import torch

    from engine.run.evaluate import training_data
    from engine.train.config import TrainerConfig
    from engine.train.sampling import BatchLoader
    from engine.train.trainer import Trainer, _torch_settings, sliding_windows, validation_metrics

    data = training_data(problem.data)
    cfg = TrainerConfig.from_dict({**train, "epochs": 1, "iterations_per_epoch": 2 * CALIBRATION_STEPS + 1,
                                   "device": device})
    t0 = time.perf_counter()
    trainer = Trainer(genome, data, cfg)
    build = time.perf_counter() - t0
    with _torch_settings(trainer.device, cfg.num_threads), BatchLoader(trainer.sampler, prefetch=0) as loader:

        def steps(n: int) -> list[float]:
            trainer.model.train()
            took = []
            for _ in range(n):
                t = time.perf_counter()
                images, labels = loader.next().to_device(trainer.device, trainer.patch, trainer.noise_gen)
                loss, _ = trainer.train_step(images, labels)
                float(loss)  # wait for the device
                took.append(time.perf_counter() - t)
            return took

        times = steps(CALIBRATION_STEPS + 1)
        trainer.model.eval()
        val_cases = list(data.val)

        def per_case(run) -> tuple[float, float]:
            """(seconds of the first case, of a later one): the first also pays what a genome's first
            pass sets up once (on a GPU, the convolution algorithms chosen for its shapes), which scaled
            by the cases would be counted once per case; the second case, when there is one, is the
            cost that recurs."""
            took = []
            for case in val_cases[:2]:
                trainer.data = _OneCase(data, [case])
                t = time.perf_counter()
                run()
                took.append(time.perf_counter() - t)
            return took[0], took[-1]

        with torch.inference_mode():
            first_val, one_val = per_case(lambda: trainer.validate(1))
        # the candidate's last act: segment and score every validation case
        first_final, one_final = per_case(lambda: validation_metrics(trainer))
        trainer.data = data
        later = steps(CALIBRATION_STEPS)  # seconds after the first burst: an episode of load rarely covers both
    step = float(min(statistics.fmean(times[1:]), statistics.fmean(later)))
    # a case's time follows its sliding windows (measured on the hippocampus set: 0.33 s for a case of 4
    # windows, 0.66 s for one of 8, the whole pass the sum), so the timed cases scale by windows, not cases
    windows = [sliding_windows(c.label.shape, trainer.patch) for c in val_cases]
    timed = windows[:2][-1]  # the windows of the case per_case timed last
    val_pw, final_pw = one_val / timed, one_final / timed  # seconds per window
    once = (max(times[0] - step, 0.0) + max(first_val - val_pw * windows[0], 0.0)
            + max(first_final - final_pw * windows[0], 0.0))
    return step, val_pw * sum(windows), build + final_pw * sum(windows), once


class _OneCase:
    """The training data with its validation set cut to some cases (calibration times one)."""

    def __init__(self, data, val):
        self._data, self.val = data, val

    def __getattr__(self, name):
        return getattr(self._data, name)


def calibrate(problem, train: dict, device: str, genomes: Sequence[Genome], costs, hardware: str, key: str,
              budget_s: float = CALIBRATION_BUDGET_S, step_fn=None, clock=time.perf_counter) -> Calibration:
    """Time ``genomes`` (cheapest first, after a warm-up run of it) within ``budget_s``: the first two
    always, each later one only if its timing, predicted from FLOPs by those already timed, ends within
    the budget (a dear genome is skipped, a cheaper one after it may still fit); ``step_fn`` as
    ``real_calibration_step``; ``clock`` the time it reads."""
    step_fn = step_fn or real_calibration_step
    t0 = clock()
    points = []
    took = PowerLaw()  # seconds of a whole timing (build, steps, validation) against training FLOPs
    first_s = 0.0
    if genomes:
        # a process's first steps and validation also load kernels and libraries: a warm-up on the
        # cheapest genome keeps that out of every point; how much longer it took than the same genome
        # warm is the one-off cost (the search's first candidate pays it), kept on the first point
        t = clock()
        step_fn(genomes[0], problem, train, device)
        first_s = clock() - t
    for g in genomes:
        tf, inf = costs(g)
        # two genomes at least (one point cannot tell fixed costs from those growing with FLOPs); after
        # them, only genomes whose timing, predicted from those timed, ends within the budget
        if len(points) >= 2 and clock() - t0 + took.predict(tf) > budget_s:
            continue
        t = clock()
        step, val, overhead, *once = step_fn(g, problem, train, device)  # a 4th value: one-off seconds
        seconds = clock() - t
        took.add(tf, seconds)
        cold = 0.0 if points else max(first_s - seconds, 0.0)
        points.append(CalibrationPoint(g.to_dict(), float(tf), float(inf), float(step), float(val), float(overhead),
                                       cold, float(once[0]) if once else 0.0))
    return Calibration(key, device, hardware, points, clock() - t0)


@dataclass
class SearchEstimate:
    """The expected wall time of a search, as a range."""

    device: str
    hardware: str
    strategy: str
    evaluations: tuple[int, int, int]  # fewest, expected, most
    candidate_s: tuple[float, float, float]  # lower quartile, mean, upper quartile over sampled genomes
    total_s: tuple[float, float, float]  # low, expected, high
    calibration_s: float
    calibrated_genomes: int
    cached: bool
    workers: int = 1
    notes: list[str] = field(default_factory=list)
    start_s: float = 0.0  # the command's own start (imports, dataset), in total_s
    warmup_s: float = 0.0  # the search process's own set-up of its first candidate, once, in total_s
    first_n: int = 0  # the genomes of the first generation, predicted one by one (known before the search)
    first_s: float = 0.0  # their predicted seconds, in total_s
    end_s: float = 0.0  # once after the last candidate (the front's latency measured), in total_s
    bounds_s: float = 0.0  # once before the first candidate (the bound genomes' latency measured), in total_s

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        lo, mid, hi = self.total_s
        e = self.evaluations
        c = self.candidate_s
        evals = f"{e[1]}" if e[0] == e[2] else f"{e[1]} (between {e[0]} and {e[2]})"
        lines = [
            f"expected wall time  {_duration(mid)} (range {_duration_range(lo, hi)}) on {self.device} "
            f"({self.hardware})",
            f"candidates trained  {evals} by {self.strategy}, {self.workers} at a time",
            f"per candidate       {c[1]:.1f} s on average (quartiles {c[0]:.1f} to {c[2]:.1f} s)",
        ]
        if self.first_n:
            lines.append(f"first generation    {self.first_n} candidates, {_duration(self.first_s)} (the genomes the "
                         "search draws first, predicted one by one)")
        if self.start_s:
            lines.append(f"start               {self.start_s:.0f} s (loading libraries, opening the dataset)")
        if self.warmup_s >= 0.5:
            lines.append(f"warm-up             {self.warmup_s:.0f} s (once: kernels and libraries load, each width's shapes are set up)")
        if self.bounds_s >= 0.5:
            lines.append(f"at the start        {self.bounds_s:.0f} s (the normalization bounds: each width's "
                         "cheapest and dearest network, latency measured)")
        if self.end_s >= 0.5:
            lines.append(f"at the end          {self.end_s:.0f} s (the front's networks: latency measured)")
        lines.append(f"calibration         {self.calibrated_genomes} genomes, {self.calibration_s:.1f} s"
                     + (" (cached)" if self.cached else ""))
        lines += [f"note                {n}" for n in self.notes]
        return "\n".join(lines)


def _unit(s: float) -> tuple[float, str, int]:
    """(seconds per unit, unit, decimals) in which a duration of ``s`` seconds is said."""
    if s < 120:
        return 1.0, "s", 0
    if s < 7200:
        return 60.0, "min", 0
    return 3600.0, "h", 1


def _duration(s: float) -> str:
    if not math.isfinite(s):
        return "unknown"
    scale, unit, digits = _unit(s)
    return f"{s / scale:.{digits}f} {unit}"


def _duration_range(lo: float, hi: float) -> str:
    """``lo`` to ``hi`` in the unit ``_duration`` gives ``hi``, with a decimal more where the two would
    read alike ("3.6 to 4.4 min", not "4 min to 4 min")."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{_duration(lo)} to {_duration(hi)}"
    scale, unit, digits = _unit(hi)
    if f"{lo / scale:.{digits}f}" == f"{hi / scale:.{digits}f}" and hi > lo:
        digits += 1
    return f"{lo / scale:.{digits}f} to {hi / scale:.{digits}f} {unit}"


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere: since the engine's estimate
    module was imported, which misses the interpreter's own start)."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


def search_estimate(model: TimeModel, sample: Sequence[Genome], samea, workers: int, device: str,
                    notes: Sequence[str] = (), cached: bool = False, start_s: float = 0.0,
                    first: Sequence[Genome] = ()) -> SearchEstimate:
    """The arithmetic: per-candidate seconds over ``sample`` x the strategy's evaluations / workers,
    plus ``start_s``, the command's own start, the model's ``warmup_s`` once (per worker process,
    which start together), its ``begin_s`` once (before the first candidate) and its ``end_s`` once
    (after the last candidate).

    ``first``: the genomes the search will train first (its initial population, when known): each is
    predicted as itself, and only the evaluations after them from the sample.

    Low: fewest evaluations x the lower quartile; expected: expected evaluations x the mean; high:
    most evaluations x the upper quartile (a search drifting to dearer or cheaper networks).
    """
    per = np.array([model.candidate_seconds(g) for g in sample], dtype=float)
    q1, mean, q3 = float(np.quantile(per, 0.25)), float(per.mean()), float(np.quantile(per, 0.75))
    ev = expected_evaluations(samea)
    w = max(1, int(workers))
    warmup = model.warmup_s
    begin = float(getattr(model, "begin_s", 0.0))
    start = max(0.0, float(start_s)) + warmup + begin
    known = [model.candidate_seconds(g) for g in first][:ev[0]]
    k, known_s = len(known), float(sum(known))
    end = float(getattr(model, "end_s", 0.0))
    total = tuple(start + (known_s + max(0, n - k) * c) / w + end for n, c in zip(ev, (q1, mean, q3)))
    cal = model.calibration
    return SearchEstimate(device, cal.hardware, samea.strategy, ev, (q1, mean, q3), total, cal.seconds,
                          len(cal.points), cached, w, list(notes), max(0.0, float(start_s)), warmup, k, known_s, end,
                          begin)
