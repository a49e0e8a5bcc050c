"""A parameter limit as the normalization's upper bound: searches with ``resources.max_parameters`` on
this code and on another checkout (``--engine-root``), side by side, same seeds and settings.

    python benchmarks/limit_bounds.py --out OUT [--engine-root OTHER_CHECKOUT] [--seeds 0 1 2]
                                      [--population 6] [--generations 5] [--limit-quantile 0.25]

The limit is a quantile of the parameter counts of the space (a seeded sample). Each search's finished
candidates within the limit are scored the same way whatever code ran them: their front in (f1,
log parameters normalized between the space's smallest network and the limit) and its hypervolume
against (1, 1); also how many distinct genomes each trained. Prints one line per search and the
ratios (this code / the other) per seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = """
[space]
nf1 = [8, 16]
n_cells = [5, 7]

[samea]
population = {population}
generations = {generations}
learning_generations = 1
neighbourhood = 2
front_latency = false

[resources]
max_parameters = {limit}

[training]
epochs = 2
patience = 100
plan = {{ target_spacing = [6.0, 6.0, 6.0] }}

[training.extra]
iterations_per_epoch = 2
"""


def space_limit(quantile: float) -> tuple[int, int]:
    """(the space's smallest parameter count, the limit: the quantile of a seeded sample's counts)."""
    import numpy as np

    from engine.genome import SearchSpace
    from engine.network.cost import count_parameters, extreme_genomes

    space = SearchSpace(nf1=(8, 16), n_cells=(5, 7))
    rng = np.random.default_rng(0)
    counts = sorted(count_parameters(space.sample(rng), 1, 4) for _ in range(2000))
    return count_parameters(extreme_genomes(space)[0], 1, 4), counts[int(quantile * (len(counts) - 1))]


def run_search(engine_root: Path, config: Path, out: Path, seed: int) -> float:
    """``emonas search`` of ``engine_root`` (one torch thread); wall seconds."""
    env = {**os.environ, "EMONAS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(engine_root)}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "engine.cli", "search", "--dataset", "demo", "--out", str(out),
                        "--config", str(config), "--seed", str(seed), "--json"],
                       capture_output=True, text=True, cwd=engine_root, env=env, timeout=7200)
    if p.returncode != 0:
        raise SystemExit(f"search in {engine_root} failed ({p.returncode}): {p.stderr[-2000:]}")
    return time.perf_counter() - t0


def score(run: Path, lo: int, limit: int) -> dict:
    """Front and hypervolume of a run's finished candidates within the limit, one normalization for all."""
    import sqlite3

    from engine.search.pareto import hypervolume_2d, pareto_front

    con = sqlite3.connect(f"file:{run / 'run.db'}?mode=ro", uri=True)
    rows = con.execute("SELECT genome, f1, parameters FROM candidates WHERE status = 'done'").fetchall()
    con.close()
    pts = [(f1, (math.log(p) - math.log(lo)) / (math.log(limit) - math.log(lo))) for _, f1, p in rows
           if p and p <= limit and f1 is not None]
    front = [pts[i] for i in pareto_front(pts)] if pts else []
    return {"trained": len(rows), "distinct": len({g for g, _, _ in rows}), "within": len(pts),
            "front": len(front), "hypervolume": hypervolume_2d(pts, (1.0, 1.0)) if pts else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--engine-root", default=None, help="another checkout to compare with (e.g. the code before)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--population", type=int, default=6)
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--limit-quantile", type=float, default=0.25)
    ap.add_argument("--jobs", type=int, default=2, help="searches at once (one thread each)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    lo, limit = space_limit(a.limit_quantile)
    config = out / "search.toml"
    config.write_text(CONFIG.format(population=a.population, generations=a.generations, limit=limit))
    codes = {"this": ROOT}
    if a.engine_root:
        codes["other"] = Path(a.engine_root).resolve()
    print(f"limit_bounds {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: demo at 6 mm, nf1 8/16, 5/7 cells, "
          f"{a.population} x {a.generations}, max_parameters {limit:,} (quantile {a.limit_quantile} of the space; "
          f"smallest network {lo:,})", flush=True)
    jobs = [(name, root, seed) for seed in a.seeds for name, root in codes.items()]

    def one(job):
        name, root, seed = job
        run = out / f"{name}_seed{seed}"
        seconds = run_search(root, config, run, seed) if not (run / "run.db").exists() else math.nan
        return job, {**score(run, lo, limit), "seconds": seconds}

    results = {}
    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        for (name, _, seed), r in pool.map(one, jobs):
            results[(name, seed)] = r
            print(f"{name:<5} seed {seed}: {r['trained']} trained ({r['distinct']} distinct), {r['within']} within "
                  f"the limit, front {r['front']}, hypervolume {r['hypervolume']:.4f}, {r['seconds']:.0f} s", flush=True)
    if "other" in codes:
        ratios = [results[("this", s)]["hypervolume"] / results[("other", s)]["hypervolume"]
                  for s in a.seeds if results[("other", s)]["hypervolume"] > 0]
        print("hypervolume ratio this / other per seed: " + ", ".join(f"{r:.2f}" for r in ratios)
              + (f"; median {statistics.median(ratios):.2f}" if ratios else ""), flush=True)
    (out / "results.json").write_text(json.dumps({f"{n}_{s}": r for (n, s), r in results.items()}, indent=1))


if __name__ == "__main__":
    main()
