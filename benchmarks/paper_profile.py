"""The paper profile against the default profile, and PBI's theta: figures measured side by side.

    python benchmarks/paper_profile.py theta [--json]
    python benchmarks/paper_profile.py profiles [--dataset demo] [--dataset DIR] [--epochs 25] [--json]

- ``theta``: SaMEA with PBI theta 0.001 (the authors') against theta 5 (a common MOEA/D choice), final
  hypervolume of the normalized (f1, f2) front against (1, 1), seeds 0, 1, 2, on two schedules: the
  scaled-down protocol of BENCHMARKS.md (population 6, 8 generations, learning phase 2, space nf1 8 /
  5 cells) and the paper's (population 10, 40 generations, learning phase 10, the whole space). f2 is
  the exact parameter count of each genome's network; f1 comes from a synthetic landscape (below), so
  no network is trained: this measures the search, not a dataset.
- ``profiles``: the same genomes trained with the default and the paper profile on each dataset, one
  after the other, the same epoch cap; validation Dice at the kept epoch, epochs run, training time per
  candidate and per epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("EMONAS_NO_PROGRESS", "1")

import numpy as np  # noqa: E402

GENOMES = [
    '{"in2": 1, "in3": 0, "in4": 2, "op1": "conv3d_3x3x3", "op2": "p3d_3x3x3", "op3": "conv2d_3x3x1", "op4": "identity", "n_cells": 5, "nf1": 8, "lr": 0.001}',
    '{"in2": 0, "in3": 1, "in4": 1, "op1": "conv3d_3x3x3", "op2": "p3d_3x3x3", "op3": "p3d_3x3x3", "op4": "conv2d_5x5x1", "n_cells": 7, "nf1": 8, "lr": 0.0004}',
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- theta -----------------------------------------------------------------------------------------

def landscape(genome) -> float:
    """A synthetic normalized f1: larger networks, 3-D convolutions and a learning rate near 1e-3.5 are
    more accurate; a fixed pseudo-random term per genome (from its JSON) stands in for training noise."""
    from engine.genome import LR_VALUES

    ops = genome.ops
    size = 0.06 * (genome.n_cells - 5) / 2 + 0.08 * math.log2(genome.nf1 / 8) / 2
    op_cost = sum({"identity": 0.05, "conv3d_1x1x1": 0.04}.get(o, 0.0) - (0.02 if o.startswith(("conv3d_3", "p3d")) else 0.0)
                  for o in ops)
    lr = 0.08 * (math.log10(genome.lr) + 3.5) ** 2
    noise = (int.from_bytes(genome.to_json().encode()[-8:], "little") % 1000) / 1000 * 0.04
    assert genome.lr in LR_VALUES
    return float(min(max(0.45 - size + op_cost + lr + noise, 0.0), 1.0))


def theta_run(theta: float, seed: int, population: int, generations: int, learning: int, space) -> dict:
    from engine.network import count_parameters, extreme_genomes
    from engine.search import Evaluation, SaMEA
    from engine.search.pareto import hypervolume_2d, pareto_front

    def params(g):
        return count_parameters(g, 1, 2)

    lo, hi = extreme_genomes(space)
    s = SaMEA(space, np.random.default_rng(np.random.SeedSequence(seed)), params, (params(lo), params(hi)),
              population=population, generations=generations, learning_generations=learning,
              neighbourhood=min(3, population), theta=theta, surrogate_seed=seed)
    while not s.done:
        s.tell([Evaluation(g, landscape(g), params(g)) for g in s.ask()])
    f = s.archive_objectives()
    return {"hypervolume": hypervolume_2d(f, (1.0, 1.0)), "evaluations": len(f), "front": int(len(pareto_front(f)))}


def bench_theta() -> dict:
    from engine.genome import SearchSpace

    schedules = {
        "scaled-down (N 6, G 8, L 2, nf1 8 / 5 cells)": (6, 8, 2, SearchSpace(nf1=(8,), n_cells=(5,))),
        "paper (N 10, G 40, L 10, whole space)": (10, 40, 10, SearchSpace()),
    }
    out = {}
    for name, (n, g, l, space) in schedules.items():
        for theta in (0.001, 5.0):
            runs = [theta_run(theta, seed, n, g, l, space) for seed in (0, 1, 2)]
            out[f"{name}, theta {theta:g}"] = runs
            log(f"{name}, theta {theta:g}: hypervolume " + " / ".join(f"{r['hypervolume']:.4f}" for r in runs)
                + f", mean {np.mean([r['hypervolume'] for r in runs]):.4f}; front sizes {[r['front'] for r in runs]}")
    return out


# ---- profiles --------------------------------------------------------------------------------------

def bench_profiles(datasets: list[str], epochs: int) -> dict:
    from engine.config import PROFILE_DEFAULTS
    from engine.genome import Genome
    from engine.train import TrainerConfig, prepare_training_data, train_candidate

    rows = []
    for ds in datasets:
        data = {p: prepare_training_data(ds, seed=0, plan_overrides=PROFILE_DEFAULTS[p].get("training", {}).get("plan"))
                for p in ("default", "paper")}
        for gj in GENOMES:
            genome = Genome.from_json(gj)
            for profile in ("default", "paper"):
                d = data[profile]
                r = train_candidate(genome, d, TrainerConfig(epochs=epochs, patience=20, seed=0, device="cpu", profile=profile))
                train_s = sum(c.get("train_seconds", 0.0) for c in r.curves)
                row = {"dataset": ds, "genome": f"{genome.n_cells} cells, nf1 {genome.nf1}", "profile": profile,
                       "patch": list(d.plan.patch_size), "batch": d.plan.batch_size,
                       "pooling": ["x".join(map(str, p)) for p in d.plan.pool_sizes_for(genome.n_levels)],
                       "parameters": r.parameters, "dice_mean": float(np.mean(list(r.dice.values()))), "dice": r.dice,
                       "epochs": r.epochs, "best_epoch": r.best_epoch, "seconds": r.seconds,
                       "seconds_per_epoch": r.seconds / r.epochs, "train_seconds_per_epoch": train_s / r.epochs}
                rows.append(row)
                log(f"{ds} | {row['genome']} | {profile}: patch {row['patch']} batch {row['batch']} pooling {row['pooling']}; "
                    f"Dice {row['dice_mean']:.3f} at epoch {r.best_epoch}/{r.epochs}; {r.seconds:.0f} s "
                    f"({row['seconds_per_epoch']:.2f} s/epoch)")
    return {"epochs": epochs, "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("theta", "profiles"))
    ap.add_argument("--dataset", action="append", help="dataset folder or demo (profiles; repeatable; default demo)")
    ap.add_argument("--epochs", type=int, default=25, help="epoch cap of every training (profiles)")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    result = bench_theta() if args.what == "theta" else bench_profiles(args.dataset or ["demo"], args.epochs)
    result = {"what": args.what, "seconds": time.perf_counter() - t, "result": result}
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
