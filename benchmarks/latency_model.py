"""The latency objective's normalization bounds and its model of unmeasured latencies, against measurements.

    python benchmarks/latency_model.py --out OUT [--dataset DIR] [--nf1 8 16] [--cells 5 7 9] [--n 30]
                                       [--seed 0] [--runs 3] [--rounds 2]

Measures the CPU latency (ONNX Runtime, one thread, the plan's median volume, as a latency search does) of
a seeded sample of the space's networks within the budgets, and of the genomes each rule picks for the
bounds, in shuffled rounds (median per network). Prints, side by side:

- the bounds: the rule before (the cheapest and the dearest genome by FLOPs of a seeded sample) and the
  rule now (the cheapest and the dearest by FLOPs of each first-level width, the fastest and slowest of
  them measured): the upper bound against the slowest network measured, and the share of the sample
  above it (f2 > 1);
- the prediction of unmeasured latencies: from what a run has at its start (the bound genomes), and from
  the bound genomes plus the first k networks of the sample, by FLOPs alone (``PowerLaw``) and by FLOPs
  and width (``WidthPowerLaw``): the median and 90th-percentile error on the rest of the sample, and
  Spearman's rho.

``--dataset`` defaults to the hippocampus set (``emonas demo-data OUT/data --kind hippocampus``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_problem(dataset: Path, nf1: list[int], cells: list[int], work: Path):
    """The search session of a latency search on ``dataset`` (its plan, budgets and FLOPs), not run."""
    from engine.config import SearchConfig
    from engine.run.session import SearchSession

    cfg = SearchConfig.from_dict({"dataset": str(dataset), "space": {"nf1": nf1, "n_cells": cells},
                                  "samea": {"objective": "latency"}})
    session = SearchSession(work / "run", cfg)
    session.problem = session._prepare_problem()
    return session


def errors(model, points) -> dict:
    """Median and 90th percentile of |predicted / measured - 1|, and Spearman's rho, over ``points``."""
    from scipy.stats import spearmanr

    pred = [model(f, w) for f, w, _ in points]
    meas = [m for _, _, m in points]
    err = sorted(abs(p / m - 1.0) for p, m in zip(pred, meas))
    return {"median": statistics.median(err), "p90": err[int(0.9 * (len(err) - 1))],
            "rho": float(spearmanr(pred, meas).statistic)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--nf1", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--cells", type=int, nargs="+", default=[5, 7, 9])
    ap.add_argument("--n", type=int, default=30, help="networks of the sample to measure")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=3, help="timed runs per measurement (a search's default: 5)")
    ap.add_argument("--rounds", type=int, default=2, help="shuffled rounds; each network's median is kept")
    a = ap.parse_args()
    import numpy as np

    from engine.run.latency import latency_key, measure_latency
    from engine.search.objective import PowerLaw, WidthPowerLaw, inference_flops

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = Path(a.dataset) if a.dataset else out / "data"
    if not a.dataset and not dataset.exists():
        subprocess.run([sys.executable, "-m", "engine.cli", "demo-data", str(dataset), "--kind", "hippocampus"],
                       check=True, cwd=ROOT)
    session = build_problem(dataset, a.nf1, a.cells, out)
    problem = session.problem
    space = session.config.space.search_space()
    feasible = session.within_budgets(problem, "cpu")
    cin, ncls, patch = problem.in_channels, problem.num_classes, problem.patch_size
    shape = [int(v) for v in problem.plan["median_shape"]]

    def flops(g) -> float:
        return float(inference_flops(g, cin, ncls, patch, problem.pools(g.n_levels)))

    from engine.network.cost import extreme_genomes

    lo, hi = extreme_genomes(space)
    rule_now = session._bound_genomes(space, feasible, lo, hi, flops)  # each width's cheapest and dearest
    rule_before = [rule_now[0], rule_now[-1]]  # the cheapest and dearest of all: the rule before

    rng = np.random.default_rng(a.seed)
    sample, seen = [], {latency_key(g) for g in rule_now}
    while len(sample) < a.n:
        g = space.sample(rng)
        if feasible(g) and latency_key(g) not in seen:
            seen.add(latency_key(g))
            sample.append(g)
    every = list({latency_key(g): g for g in rule_now + sample}.values())
    print(f"latency_model {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {dataset.name}, median volume "
          f"{'x'.join(map(str, shape))}, patch {'x'.join(map(str, patch))}, nf1 {a.nf1}, cells {a.cells}; "
          f"{len(every)} networks ({len(rule_now)} bound genomes, {len(sample)} sampled), {a.rounds} rounds of "
          f"{a.runs} runs, ONNX Runtime on one thread", flush=True)
    times: dict[str, list[float]] = {latency_key(g): [] for g in every}
    t0 = time.perf_counter()
    for r in range(a.rounds):
        for i in rng.permutation(len(every)):
            g = every[i]
            times[latency_key(g)].append(measure_latency(g, cin, ncls, problem.pools(g.n_levels), patch, shape,
                                                         "cpu", 1, a.runs, a.seed)["latency_ms"])
        print(f"round {r + 1}: {time.perf_counter() - t0:.0f} s", flush=True)
    ms = {k: statistics.median(v) for k, v in times.items()}

    def point(g):
        return flops(g), float(g.nf1), ms[latency_key(g)]

    slowest = max(ms[latency_key(g)] for g in every)
    fastest = min(ms[latency_key(g)] for g in every)
    before_hi = ms[latency_key(rule_before[1])]
    now_lo = min(ms[latency_key(g)] for g in rule_now)
    now_hi = max(ms[latency_key(g)] for g in rule_now)
    lat = [ms[latency_key(g)] for g in sample]
    print(f"networks measured: {fastest:.0f} - {slowest:.0f} ms", flush=True)
    print(f"bounds, rule before (cheapest, dearest by FLOPs): {ms[latency_key(rule_before[0])]:.0f} - "
          f"{before_hi:.0f} ms; sample above the upper bound {sum(v > before_hi for v in lat)} of {len(lat)}; "
          f"upper bound / slowest {before_hi / slowest:.2f}", flush=True)
    print(f"bounds, rule now ({len(rule_now)} genomes: each width's cheapest and dearest): {now_lo:.0f} - "
          f"{now_hi:.0f} ms; sample above the upper bound {sum(v > now_hi for v in lat)} of {len(lat)}; "
          f"upper bound / slowest {now_hi / slowest:.2f}", flush=True)
    results = {"networks": [{"genome": g.to_dict(), "flops": flops(g), "ms": times[latency_key(g)]} for g in every],
               "bounds": {"before": [ms[latency_key(rule_before[0])], before_hi], "now": [now_lo, now_hi],
                          "slowest": slowest}, "prediction": []}
    starts = {"before": rule_before, "now": rule_now}
    for k in (0, 5, 10, 20):
        if k >= len(sample) - 5:
            continue
        rest = [point(g) for g in sample[k:]]
        for start_name, start in starts.items():
            fit = [point(g) for g in start] + [point(g) for g in sample[:k]]
            flops_only = PowerLaw((f, m) for f, _, m in fit)
            width = WidthPowerLaw(fit)
            for name, model in (("FLOPs", lambda f, w: flops_only.predict(f)), ("FLOPs and width", width.predict)):
                e = errors(model, rest)
                results["prediction"].append({"start": start_name, "k": k, "model": name, **e})
                print(f"predicted from the {start_name} rule's bound genomes + {k:>2} measured, {name:<15}: error "
                      f"median {100 * e['median']:.0f} %, p90 {100 * e['p90']:.0f} %, rho {e['rho']:.2f} "
                      f"({len(rest)} networks)", flush=True)
    (out / "latency_model.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
