"""EMONAS Studio benchmarks: every figure is a ratio of two things measured side by side in one run.

    python benchmarks/run.py [--quick] [--json] [--only NAME[,NAME...]] [--out DIR]

Sections (see BENCHMARKS.md for the results and what limits them):
- loop:        training-loop efficiency = steps/s of the real pipeline (sampling, augmentation, loss,
               logging) / steps/s of bare forward+backward on pre-made tensors of the same shape;
- overhead:    search overhead = time outside candidate training / total search time;
- efficiency:  sample efficiency of SaMEA against plain MOEA/D and random search (hypervolume
               against evaluations, seeds side by side) and evaluations SaMEA needs to reach random
               search's final hypervolume;
- earlystop:   hypervolume per training-second with and without stopping hopeless candidates;
- data:        opening and preprocessing the demo dataset with an empty cache against a second
               opening that reads the cache;
- concurrency: two candidates at once (two worker processes) against one after another;
- inference:   sliding-window prediction of a 128x128x64 volume, PyTorch eager against ONNX Runtime;
- memory:      RSS over many candidates in one process, and peaks of a training step and of a whole
               candidate in fresh processes against the engine's estimate;
- app:         loading and showing a 256^3 scan, slice changes, 3D surfaces, GUI-thread delay in a search.
Each section's protocol (steps, rounds, candidates) is defined once, in ``PROTOCOLS``. ``--quick``
finishes in under 10 minutes on 2 cores even while another process keeps one of them busy; it leaves
out the sections whose figures cannot fit (``QUICK_SKIPS`` says why). The full run takes about an hour.
With ``--json`` the last line is one JSON object with every section's figures (``sections``, its
headline ones in ``figures``); ``benchmarks/compare.py OLD.json NEW.json`` compares two runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from engine.jsonsafe import jsonable  # noqa: E402

SMALL_GENOME = '{"in2": 1, "in3": 0, "in4": 2, "op1": "conv3d_3x3x3", "op2": "p3d_3x3x3", "op3": "conv2d_3x3x1", "op4": "identity", "n_cells": 5, "nf1": 8, "lr": 0.001}'


def log(msg: str) -> None:
    print(msg, file=sys.stderr if ARGS.json else sys.stdout, flush=True)


# --------------------------------------------------------------------------- training loop


def bench_loop(p: dict, work: Path) -> dict:
    """The trainer's own epoch against bare forward+backward on pre-made tensors, interleaved rounds.

    Three arms per round, in an order that rotates from round to round so that a change of the
    machine's load hits each alike: the pipeline as ``fit`` runs it (the loader thread prepares the
    batches), the pipeline with the training thread sampling its own batches (``prefetch`` 0), and
    bare steps. Every arm starts with a fresh trainer and one untimed warm-up step.
    """
    import torch

    from engine.genome import Genome
    from engine.train import TrainerConfig, prepare_training_data
    from engine.train.trainer import Trainer, _torch_settings

    data = prepare_training_data("demo", seed=0)
    genome = Genome.from_json(SMALL_GENOME)
    steps, rounds = p["steps"], p["rounds"]
    cfg = TrainerConfig(epochs=1, iterations_per_epoch=steps, device="cpu", seed=0, val_every=10**6)

    def pipeline(prefetch: int) -> tuple[float, float]:
        trainer = Trainer(genome, data, cfg)
        trainer.prefetch = prefetch
        with _torch_settings(trainer.device, None), trainer.batch_loader() as loader:
            trainer.model.train()
            trainer.train_step(*loader.next().to_device(trainer.device, trainer.patch, trainer.noise_gen))
            cpu = time.process_time()
            rec = trainer._train_epoch(1, loader)
            cpu = time.process_time() - cpu
        return rec["train_seconds"] / steps, cpu / steps

    def bare() -> tuple[float, float]:
        trainer = Trainer(genome, data, cfg)
        x = torch.randn(trainer.batch_size, data.in_channels, *trainer.patch)
        y = torch.randint(0, data.num_classes, (trainer.batch_size, *trainer.patch))
        with _torch_settings(trainer.device, None):
            trainer.model.train()
            trainer.train_step(x, y)
            t, cpu = time.perf_counter(), time.process_time()
            for _ in range(steps):
                trainer.train_step(x, y)
            return (time.perf_counter() - t) / steps, (time.process_time() - cpu) / steps

    trainer = Trainer(genome, data, cfg)
    depth = trainer.prefetch_depth()  # as fit() chooses it with this thread count
    arms = {"pipeline": lambda: pipeline(depth), "no_prefetch": lambda: pipeline(0), "bare": bare}
    times: dict[str, list[float]] = {k: [] for k in arms}
    cpu: dict[str, list[float]] = {k: [] for k in arms}
    names = list(arms)
    for r in range(rounds):
        for name in names[r % 3:] + names[: r % 3]:
            wall, used = arms[name]()
            times[name].append(wall)
            cpu[name].append(used)
    med = {k: float(np.median(v)) for k, v in times.items()}

    def ratio(t: dict, arm: str) -> float:
        # each round's ratio compares arms run within a minute or two; their median resists one slow round
        return float(np.median([b / q for b, q in zip(t["bare"], t[arm])]))

    eff, eff0 = ratio(times, "pipeline"), ratio(times, "no_prefetch")
    out = {"loop_efficiency": eff, "loop_efficiency_without_prefetch": eff0,
           # the same with the process's CPU seconds (every thread, the loader's too): what the pipeline
           # costs in work, which other processes on the machine disturb far less than wall time
           "loop_efficiency_cpu": ratio(cpu, "pipeline"), "loop_efficiency_cpu_without_prefetch": ratio(cpu, "no_prefetch"),
           "rounds_cpu_s": cpu,
           "pipeline_step_s": med["pipeline"], "no_prefetch_step_s": med["no_prefetch"], "bare_step_s": med["bare"],
           "rounds_s": times, "patch": list(trainer.patch), "batch": trainer.batch_size, "prefetch": depth,
           "torch_threads": torch.get_num_threads(), **p}
    log(f"loop: pipeline ({depth} batches prepared ahead) {med['pipeline'] * 1e3:.0f} ms/step (without the loader thread "
        f"{med['no_prefetch'] * 1e3:.0f}), bare {med['bare'] * 1e3:.0f} ms/step -> efficiency {eff:.3f} "
        f"(without the loader thread {eff0:.3f}; in CPU seconds {out['loop_efficiency_cpu']:.3f} and "
        f"{out['loop_efficiency_cpu_without_prefetch']:.3f}); {rounds} rounds of {steps} steps, {torch.get_num_threads()} torch threads")
    return out


# --------------------------------------------------------------------------- searches


def _search(run_dir: Path, strategy: str, seed: int, population: int, generations: int, learning: int,
            epochs: int, early: str = "off", executor: str = "inprocess", workers: int = 1,
            weight_start: float = 0.5) -> dict:
    from engine.config import SearchConfig
    from engine.run.session import SearchSession

    cfg = SearchConfig().replace(
        seed=seed,
        dataset="demo",
        space={"nf1": [8], "n_cells": [5]},
        samea={"strategy": strategy, "population": population, "generations": generations,
               "weight_start": weight_start,
               "learning_generations": learning, "neighbourhood": min(3, population)},
        training={"epochs": epochs, "patience": max(2, epochs),
                  # smoke: the demo at 7 mm, two steps an epoch (checks the runner, measures nothing)
                  **({"plan": {"target_spacing": [7.0, 7.0, 7.0], "patch_size": [16, 16, 16]},
                      "extra": {"iterations_per_epoch": 2}} if SMOKE else {})},
        resources={"device": "cpu", "early_stopping": early, "early_stopping_min_epochs": 2,
                   "executor": executor, "workers": workers},
    )
    t = time.perf_counter()
    summary = SearchSession(run_dir, cfg).run()
    summary["wall_seconds"] = time.perf_counter() - t
    summary["hv_curve"] = hv_curve(run_dir)
    return summary


def hv_curve(run_dir: Path) -> list[float]:
    """Hypervolume (normalized objectives, reference (1, 1)) after each finished evaluation."""
    from engine.run.store import RunStore
    from engine.search.pareto import hypervolume_2d

    store = RunStore.open_readonly(run_dir)
    try:
        cands = [c for c in store.candidates() if c["status"] in ("done", "failed") and c["f1"] is not None]
    finally:
        store.close()
    cands.sort(key=lambda c: (c.get("finished_at") or 0, c["id"]))
    pts, curve = [], []
    for c in cands:
        pts.append((min(float(c["f1"]), 1.0), min(float(c["f2"]), 1.0)))
        curve.append(hypervolume_2d(np.array(pts), (1.0, 1.0)))
    return curve


def bench_overhead(p: dict, work: Path) -> dict:
    s = _search(work / "overhead", "samea", 0, p["population"], p["generations"], 1, p["epochs"])
    wall, train, setup = s["wall_seconds"], s["training_seconds"], s["data_setup_seconds"]
    out = {
        "protocol": dict(p),
        "wall_seconds": wall,
        "training_seconds": train,
        "algorithm_seconds": s["algorithm_seconds"],
        "data_setup_seconds": setup,
        # everything outside the candidates' evaluations (strategy, surrogate, database, scheduling)
        # except the one-off opening of the dataset and its cache, which a search of hours amortizes
        # and which is reported apart
        "search_overhead": max(0.0, wall - train - setup) / wall,
        "search_overhead_with_data_setup": max(0.0, wall - train) / wall,
        "algorithm_fraction": s["algorithm_seconds"] / wall,
        "evaluations": s["counts"],
    }
    out.update({k: v for k, v in s.items() if k not in out and k not in ("front", "hv_curve", "run")})
    log(f"overhead: wall {wall:.1f} s, candidates {train:.1f} s, one-off data setup {setup:.2f} s, algorithm "
        f"{s['algorithm_seconds']:.2f} s -> overhead {out['search_overhead']:.4f} (with the data setup "
        f"{out['search_overhead_with_data_setup']:.4f}, algorithm alone {out['algorithm_fraction']:.4f})")
    return out


def bench_efficiency(p: dict, work: Path) -> dict:
    seeds = [int(x) for x in ARGS.seeds.split(",")] if ARGS.seeds else list(p["seeds"])
    pop, gens, learn = p["population"], p["generations"], p["learning_generations"]
    curves: dict[str, list[list[float]]] = {}
    # name -> (strategy, w1 of the first weight vector): the paper's accuracy-leaning half, and
    # SaMEA with weight vectors over the whole front (w1 from 0 to 1)
    known = {"samea": ("samea", 0.5), "moead": ("moead", 0.5), "random": ("random", 0.5),
             "samea_full_weights": ("samea", 0.0)}
    names = [v.strip() for v in ARGS.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(known)}")
    for name in names:
        strategy, w0 = known[name]
        for seed in seeds:
            s = _search(work / f"eff-{name}-{seed}", strategy, seed, pop, gens, learn, 1, weight_start=w0)
            curves.setdefault(name, []).append(s["hv_curve"])
            log(f"efficiency: {name} seed {seed}: {len(s['hv_curve'])} evaluations, final HV {s['hv_curve'][-1]:.4f}")
    out = {
        "protocol": {"population": pop, "generations": gens, "learning_generations": learn, "epochs": 1,
                     "space": "nf1 8, 5 cells", "seeds": seeds},
        "final_hv": {k: float(np.mean([c[-1] for c in v])) for k, v in curves.items()},
        "curves": curves,
    }
    _plot_hv(curves, work)
    if "random" not in curves:  # nothing to compare with (the curves combine with another run's)
        log(f"efficiency: final HV {out['final_hv']}")
        return out
    target = float(np.mean([c[-1] for c in curves["random"]]))
    n_random = int(np.mean([len(c) for c in curves["random"]]))
    per_variant = {name: [next((i + 1 for i, hv in enumerate(c) if hv >= target), None) for c in runs]
                   for name, runs in curves.items()}
    needed = [math.inf if h is None else h for h in per_variant.get("samea", [])]
    frac = float(np.mean(needed)) / n_random if needed and all(math.isfinite(n) for n in needed) else math.inf
    out.update({
        "random_final_hv": target,
        "samea_evaluations_to_random_final": needed,
        "samea_fraction_of_random_evaluations": frac,
        # evaluations each run needed to reach random search's mean final hypervolume (None: never)
        "evaluations_to_random_final": per_variant,
    })
    log(f"efficiency: final HV {out['final_hv']}; SaMEA needs {frac:.2f} of random search's evaluations; "
        f"evaluations to random's final: {per_variant}")
    return out


def _plot_hv(curves: dict, work: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, runs), colour in zip(curves.items(), ("C0", "C1", "C2", "C3")):
        for i, c in enumerate(runs):
            ax.plot(range(1, len(c) + 1), c, color=colour, alpha=0.8, label=name if i == 0 else None)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume (normalized objectives)")
    ax.legend()
    fig.tight_layout()
    dest = Path(ARGS.out) if ARGS.out else work
    dest.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest / "hypervolume.png", dpi=110)
    plt.close(fig)


def bench_earlystop(p: dict, work: Path) -> dict:
    pop, gens, epochs = p["population"], p["generations"], p["epochs"]
    res = {}
    for rule in ("off", "median"):
        s = _search(work / f"es-{rule}", "samea", 0, pop, gens, 1, epochs, early=rule)
        hv = s["hv_curve"][-1] if s["hv_curve"] else 0.0
        res[rule] = {"hypervolume": hv, "training_seconds": s["training_seconds"],
                     "hv_per_training_hour": hv / (s["training_seconds"] / 3600), "early_stopped": s["early_stopped"]}
    ratio = res["median"]["hv_per_training_hour"] / res["off"]["hv_per_training_hour"]
    log(f"earlystop: HV/compute with median rule / without = {ratio:.2f} "
        f"({res['median']['early_stopped']} candidates stopped early)")
    return {"runs": res, "hv_per_compute_ratio": ratio, "protocol": {"population": pop, "generations": gens, "epochs": epochs}}


def bench_concurrency(p: dict, work: Path) -> dict:
    pop, gens = p["population"], p["generations"]
    one = _search(work / "conc-1", "random", 0, pop, gens, 1, 1)
    two = _search(work / "conc-2", "random", 0, pop, gens, 1, 1, executor="local", workers=2)
    speedup = one["wall_seconds"] / two["wall_seconds"]
    log(f"concurrency: 2 workers vs 1: x{speedup:.2f} ({one['wall_seconds']:.1f} s vs {two['wall_seconds']:.1f} s)")
    return {"sequential_s": one["wall_seconds"], "two_workers_s": two["wall_seconds"], "speedup": speedup}


# --------------------------------------------------------------------------- inference


def bench_inference(p: dict, work: Path) -> dict:
    import onnxruntime as ort
    import torch

    from engine.genome import Genome
    from engine.infer.predictor import sliding_window_logits
    from engine.network import build_network

    genome = Genome.from_json(SMALL_GENOME)
    torch.manual_seed(0)
    net = build_network(genome, 1, 4).eval()
    path = work / "bench.onnx"
    torch.onnx.export(net, torch.randn(1, 1, 32, 32, 32), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "n", 2: "x", 3: "y", 4: "z"}, "logits": {0: "n", 2: "x", 3: "y", 4: "z"}})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()  # the same threads as PyTorch's side
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    shape, patch = tuple(p["shape"]), tuple(p["patch"])
    vol = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)

    def torch_fn(x):
        with torch.inference_mode():
            return net(torch.as_tensor(np.asarray(x))).numpy()

    def onnx_fn(x):
        return sess.run(None, {"image": np.ascontiguousarray(np.asarray(x, dtype=np.float32))})[0]

    times = {"torch": [], "onnxruntime": []}
    outs = {}
    for _ in range(p["rounds"]):
        for name, fn in (("torch", torch_fn), ("onnxruntime", onnx_fn)):
            t = time.perf_counter()
            outs[name] = np.asarray(sliding_window_logits(fn, vol, patch, overlap=0.5))
            times[name].append(time.perf_counter() - t)
    tt, to = float(np.median(times["torch"])), float(np.median(times["onnxruntime"]))
    agree = float(np.mean(outs["torch"].argmax(0) == outs["onnxruntime"].argmax(0)))
    log(f"inference {shape}: torch {tt:.2f} s, onnxruntime {to:.2f} s -> onnxruntime x{tt / to:.2f}; labels agree {agree:.5f}")
    return {"torch_s": tt, "onnxruntime_s": to, "onnx_speedup": tt / to, "label_agreement": agree, "patch": list(patch),
            "threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _PeakRss:
    """Samples this process's resident memory every few milliseconds; ``peak_mb`` is the largest."""

    def __init__(self, interval: float = 0.003):
        import threading

        self.interval, self.peak_mb = interval, _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, _rss_mb())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())


def _fresh_peak(genome_json: str, seed: int, what: str) -> tuple[float, float]:
    """In a fresh process (no freed memory cached by the allocator, so the peak is the work's own):
    (peak RSS in MiB above the settled RSS, the engine's estimate of one training step in MiB).
    ``what``: ``step``, three Adam steps on pre-made tensors of the plan's patch and batch (what the
    estimate models and the device budget limits), or ``candidate``, a whole candidate (patch
    sampling, augmentation, training, validation on whole volumes)."""
    import torch

    from engine.genome import Genome
    from engine.network import build_network, estimate_cost
    from engine.train import TrainerConfig, prepare_training_data, train_candidate

    torch.set_num_threads(1)
    data = prepare_training_data("demo", seed=0)
    g = Genome.from_json(genome_json)
    patch, batch = tuple(data.plan.patch_size), data.plan.batch_size
    est = estimate_cost(g, data.in_channels, data.num_classes, patch, batch)
    if what == "step":
        torch.manual_seed(seed)
        net = build_network(g, data.in_channels, data.num_classes)
        opt = torch.optim.Adam(net.parameters(), lr=g.lr)
        x = torch.randn(batch, data.in_channels, *patch)
        y = torch.randint(0, data.num_classes, (batch, *patch))
    gc.collect()
    before = _rss_mb()
    with _PeakRss() as peak:
        if what == "step":
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(net(x), y).backward()
                opt.step()
        else:
            train_candidate(g, data, TrainerConfig(epochs=1, iterations_per_epoch=3, device="cpu", seed=seed))
    return peak.peak_mb - before, est.training_bytes / 2**20


def bench_memory(p: dict, work: Path) -> dict:
    """RSS over many candidates in one process (growth), and the peak memory of candidates each
    trained in a fresh process against the engine's estimate of one training step."""
    import multiprocessing
    from engine.genome import SearchSpace
    from engine.network import estimate_cost
    from engine.train import TrainerConfig, prepare_training_data, train_candidate

    data = prepare_training_data("demo", seed=0)
    space = SearchSpace(nf1=(8,), n_cells=(5,))
    rng = np.random.default_rng(0)
    n = p["candidates"]
    rss, genomes = [], []
    for i in range(n):
        g = space.sample(rng)
        genomes.append(g)
        train_candidate(g, data, TrainerConfig(epochs=1, iterations_per_epoch=3, device="cpu", seed=i))
        gc.collect()
        rss.append(_rss_mb())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the allocator's cache fills over the first candidates (by the 8th on the demo), then RSS stays flat
    settled = min(p["settled_from"], n) - 1
    growth = rss[-1] - rss[settled]
    log(f"memory: RSS after candidate {settled + 1} {rss[settled]:.0f} MB, after {n}: {rss[-1]:.0f} MB "
        f"(growth {growth:+.0f} MB); peak RSS {peak:.0f} MB")
    out = {"candidates": n, "rss_mb": rss, "growth_mb": growth, "growth_from_candidate": settled + 1,
           "peak_rss_mb": peak}
    ctx = multiprocessing.get_context("spawn")
    from engine.genome import PAPER_GENOMES

    sample = genomes[: p["fresh"]]
    for what in ("step", "candidate"):
        pairs = []
        # the paper's three networks (5.9 - 7.3 M parameters) show the estimate where the device budget bites
        big = list(PAPER_GENOMES.values()) if what == "step" and p["paper_genomes"] else []
        for i, g in enumerate(sample + big):
            with ctx.Pool(1) as pool:
                pairs.append(pool.apply(_fresh_peak, (g.to_json(), i, what)))
        extra, est = (np.array(v) for v in zip(*pairs))
        ratio = extra / est
        log(f"memory: {what} in a fresh process: peak {extra.min():.0f}-{extra.max():.0f} MB above its settled RSS; "
            f"engine's estimate of a training step {est.min():.0f}-{est.max():.0f} MB; measured / estimate "
            f"{ratio.min():.2f}-{ratio.max():.2f}")
        out[what] = {"peak_mb": extra.tolist(), "estimated_mb": est.tolist(),
                     "measured_over_estimate": [float(ratio.min()), float(ratio.max())]}
    return out


def bench_data(p: dict, work: Path) -> dict:
    """The demo dataset opened, planned and preprocessed into an empty cache, then again from the cache."""
    from engine.data import open_dataset
    from engine.data.plan import make_plan
    from engine.data.preprocess import preprocess_dataset

    def once(cache: Path) -> tuple[float, int]:
        t = time.perf_counter()
        ds = open_dataset("demo")
        cases = preprocess_dataset(ds, make_plan(ds), cache_dir=cache)
        return time.perf_counter() - t, len(cases)

    open_dataset("demo")  # the demo's own one-off generation is not part of either figure
    cache = Path(tempfile.mkdtemp(prefix="data-cache-", dir=work))  # empty whatever ran before
    cold, n = once(cache)
    warm, _ = once(cache)
    log(f"data: demo ({n} cases) opened and preprocessed into an empty cache {cold:.2f} s, "
        f"again from the cache {warm:.2f} s: x{cold / warm:.1f}")
    return {"cases": n, "cold_s": cold, "cached_s": warm, "speedup": cold / warm}


def bench_app(p: dict, work: Path) -> dict:
    """The app's figures: benchmarks/app_bench.py (256^3 scan) and the GUI-thread delay during a search."""
    import subprocess

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", EMONAS_BENCH_OUT=str(work))
    here = Path(__file__).resolve().parent
    r = subprocess.run([sys.executable, str(here / "app_bench.py"), "--size", str(p["size"])],
                       capture_output=True, text=True, timeout=900, env=env)
    lines = [l for l in r.stdout.splitlines() if ":" in l]
    for l in lines:
        log(f"app: {l}")
    # each line's first number, by the line's label, so that compare.py can set two runs side by side
    numbers = {}
    for l in lines:
        label, _, rest = l.partition(":")
        label = re.sub(r"\s*\([^)]*\d[^)]*\)", "", label)  # "(2.46 s)" in a label varies from run to run
        m = re.search(r"-?\d[\d,]*(?:\.\d+)?", rest)
        if m:
            numbers[label.strip()] = float(m.group().replace(",", ""))
    out: dict = {"app_bench": lines, "figures": numbers, "size": p["size"]}
    if not p["gui_search"]:
        log("app: the GUI-thread delay during a search is left out of --quick (a search of about 2 minutes); "
            "`--only app` measures it")
        return out
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "slow", "-p", "no:cacheprovider",
                        str(here.parent / "tests" / "gui" / "test_responsiveness.py")],
                       capture_output=True, text=True, timeout=900, env=env, cwd=here.parent)
    fig = work / "gui_responsiveness.json"
    if fig.exists():
        out["gui_responsiveness"] = json.loads(fig.read_text())
        log(f"app: GUI-thread timer delay during a search: {out['gui_responsiveness']}")
    return out


SECTIONS = {
    "loop": bench_loop,
    "overhead": bench_overhead,
    "inference": bench_inference,
    "memory": bench_memory,
    "data": bench_data,
    "concurrency": bench_concurrency,
    "earlystop": bench_earlystop,
    "efficiency": bench_efficiency,
    "app": bench_app,
}

#: Every section's protocol, defined once: ``full`` (the default), ``quick`` (``--quick``) and
#: ``smoke`` (``--smoke``: the tiniest sizes, checks the runner and measures nothing). BENCHMARKS.md
#: describes the same table. Searches train nf1 8 / 5-cell genomes on the demo data.
PROTOCOLS: dict[str, dict[str, dict]] = {
    # steps per arm and round; arms interleaved round by round (at least 3 rounds of 16 steps in --quick)
    "loop": {"full": {"steps": 30, "rounds": 6}, "quick": {"steps": 16, "rounds": 6},
             "smoke": {"steps": 2, "rounds": 1}},
    # one SaMEA search: population x generations candidates of so many epochs
    "overhead": {"full": {"population": 6, "generations": 5, "epochs": 2},
                 "quick": {"population": 4, "generations": 3, "epochs": 1},
                 "smoke": {"population": 2, "generations": 1, "epochs": 1}},
    "efficiency": {"full": {"population": 6, "generations": 8, "learning_generations": 2, "seeds": [0, 1, 2]},
                   "quick": {"population": 4, "generations": 4, "learning_generations": 1, "seeds": [0]},
                   "smoke": {"population": 2, "generations": 2, "learning_generations": 1, "seeds": [0]}},
    "earlystop": {"full": {"population": 6, "generations": 5, "epochs": 8},
                  "quick": {"population": 4, "generations": 2, "epochs": 4},
                  "smoke": {"population": 2, "generations": 1, "epochs": 2}},
    "concurrency": {"full": {"population": 4, "generations": 3}, "quick": {"population": 4, "generations": 2},
                    "smoke": {"population": 2, "generations": 1}},
    # a volume of ``shape`` predicted with ``patch`` windows, ``rounds`` times per engine
    "inference": {"full": {"shape": [128, 128, 64], "patch": [64, 64, 64], "rounds": 3},
                  "quick": {"shape": [128, 128, 64], "patch": [64, 64, 64], "rounds": 1},
                  "smoke": {"shape": [64, 64, 32], "patch": [32, 32, 32], "rounds": 1}},
    # candidates trained in one process (RSS growth from candidate ``settled_from`` on); the first
    # ``fresh`` of them again in fresh processes
    "memory": {"full": {"candidates": 30, "settled_from": 11, "fresh": 6, "paper_genomes": True},
               "quick": {"candidates": 12, "settled_from": 8, "fresh": 3, "paper_genomes": True},
               "smoke": {"candidates": 3, "settled_from": 2, "fresh": 2, "paper_genomes": False}},
    # one opening with an empty cache, one from the cache
    "data": {"full": {}, "quick": {}, "smoke": {}},
    # the scan's edge in voxels; whether to measure the GUI-thread delay during a search (~2 minutes)
    "app": {"full": {"size": 256, "gui_search": True}, "quick": {"size": 128, "gui_search": False},
            "smoke": {"size": 64, "gui_search": False}},
}

#: Sections the whole-run ``--quick`` leaves out, and why: their figures need more evaluations than
#: fit in its 10 minutes, and a shortened run would only measure noise. Named with ``--only``, they
#: run their ``quick`` protocol.
QUICK_SKIPS = {
    "efficiency": "hypervolume against evaluations needs several seeds of 48+ evaluations per strategy "
                  "(about an hour); one seed of 16 cannot separate SaMEA from random search",
    "earlystop": "a stopping rule saves time only over candidates of many epochs (the full protocol: 30 "
                 "candidates of 8 epochs); 8 candidates of 4 epochs stop one or none",
    "concurrency": "two worker processes against one need both cores idle; the quick check is meant to "
                   "run beside other work on 2 cores, where the figure measures the other work",
}

#: Each section's headline figures (key in its result), first in ``benchmarks/compare.py``.
HEADLINES = {
    "loop": ["loop_efficiency"],
    "overhead": ["search_overhead", "search_overhead_with_data_setup"],
    "efficiency": ["samea_fraction_of_random_evaluations"],
    "earlystop": ["hv_per_compute_ratio"],
    "concurrency": ["speedup"],
    "inference": ["onnx_speedup"],
    "memory": ["growth_mb"],
    "data": ["speedup"],
    "app": ["figures.load-to-first-image total", "gui_responsiveness.max_gap_ms"],
}

ARGS: argparse.Namespace
SMOKE = False


def _dig(doc, key: str):
    """``doc[key]``, or the nested value a dotted ``key`` names (labels may hold dots); None if absent."""
    if not isinstance(doc, dict):
        return None
    if key in doc:
        return doc[key]
    for i, ch in enumerate(key):
        if ch == "." and key[:i] in doc:
            found = _dig(doc[key[:i]], key[i + 1:])
            if found is not None:
                return found
    return None


def protocol_name(quick: bool, smoke: bool) -> str:
    """``smoke``, ``quick`` or ``full``."""
    return "smoke" if smoke else "quick" if quick else "full"


def plan_sections(only: list[str], quick: bool, smoke: bool) -> tuple[dict[str, dict], dict[str, str]]:
    """(section -> its protocol to run, section -> why it is skipped) for these options."""
    kind = protocol_name(quick, smoke)
    names = only or list(SECTIONS)
    skipped = {n: QUICK_SKIPS[n] for n in names if kind != "full" and not only and n in QUICK_SKIPS}
    return {n: PROTOCOLS[n][kind] for n in names if n not in skipped}, skipped


def main(argv=None) -> int:
    global ARGS, SMOKE
    ap = argparse.ArgumentParser(description="EMONAS Studio benchmarks (ratios measured side by side)")
    ap.add_argument("--quick", action="store_true",
                    help="the quick protocol: under 10 minutes on 2 cores, one of them busy with other work")
    ap.add_argument("--json", action="store_true", help="last line: one JSON object with every section's figures")
    ap.add_argument("--smoke", action="store_true", help="tiniest sizes: checks the runner works (test suite)")
    ap.add_argument("--only", default="", help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (default: 1 with --quick, which a busy core slows least; else all cores)")
    ap.add_argument("--seeds", default="", help="efficiency: comma-separated seeds (default 0 with --quick, else 0,1,2)")
    ap.add_argument("--variants", default="samea,moead,random",
                    help="efficiency: comma-separated searches to compare (samea, moead, random, "
                    "samea_full_weights: SaMEA with weight vectors over the whole front)")
    ap.add_argument("--out", default="", help="folder for plots and the JSON result")
    ARGS = ap.parse_args(argv)
    # the engine's progress lines would interleave with the figures (set here, not on import: the
    # smoke test imports this file, and the environment of the test process is everyone's)
    os.environ.setdefault("EMONAS_NO_PROGRESS", "1")
    SMOKE = ARGS.smoke
    if SMOKE:
        ARGS.quick = True
    only = [s for s in ARGS.only.split(",") if s]
    unknown = [n for n in only if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s): {', '.join(unknown)}")
    plan, skipped = plan_sections(only, ARGS.quick, SMOKE)
    import torch

    threads = ARGS.threads or (1 if ARGS.quick else max(1, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="emonas-bench-"))
    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}",
                    "quick": ARGS.quick, "protocol": protocol_name(ARGS.quick, SMOKE), "torch_threads": threads,
                    "load_average_start": list(os.getloadavg()), "sections": {}, "skipped": skipped}
    for name, why in skipped.items():
        log(f"{name}: skipped in --quick: {why} (run it with --only {name})")
    t_run = time.perf_counter()
    try:
        for name, p in plan.items():
            t = time.perf_counter()
            result["sections"][name] = SECTIONS[name](dict(p), work)
            result["sections"][name].setdefault("protocol", dict(p))
            result["sections"][name]["section_seconds"] = time.perf_counter() - t
            log(f"{name}: {time.perf_counter() - t:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = time.perf_counter() - t_run
    result["load_average_end"] = list(os.getloadavg())
    sec = result["sections"]
    result["figures"] = {f"{name}.{key}": _dig(sec[name], key) for name in sec for key in HEADLINES.get(name, [])}
    result["loop_efficiency"] = sec.get("loop", {}).get("loop_efficiency")
    result["search_overhead"] = sec.get("overhead", {}).get("search_overhead")
    log(f"done in {result['seconds']:.0f} s; load average {result['load_average_start'][0]:.1f} at the start, "
        f"{result['load_average_end'][0]:.1f} at the end")
    if ARGS.out:
        Path(ARGS.out).mkdir(parents=True, exist_ok=True)
        (Path(ARGS.out) / "benchmarks.json").write_text(json.dumps(jsonable(result), indent=1))
    if ARGS.json:
        print(json.dumps(jsonable(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
