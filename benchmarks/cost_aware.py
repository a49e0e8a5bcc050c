"""Cost-aware search: objective latency (CPU) against parameters, and the wall-time estimate against reality.

Part ``fronts``: for each seed, two searches with the same seed, population, generations and epochs,
one with ``samea.objective = "latency"`` (target cpu) and one with ``"parameters"`` (``--flops``: a
third with ``"flops"``), run by the real CLI. The fronts are then re-measured side by side in this
process: validation Dice (mean over the labels, as each candidate's training recorded it) and CPU
latency (ONNX Runtime, one thread, the median of ``--latency-runs`` runs on the plan's median
volume). Printed per seed: the hypervolume of each front in (1 - Dice, latency) against the fixed
reference point (Dice 0, 2x the slowest network's latency of the fronts), their ratios to the
parameters front, per search the fastest network within 0.02 Dice of its best, and how well parameter
count and FLOPs order the measured networks by latency.

Part ``estimate``: for three differently sized searches, ``emonas search --estimate`` (the calibration
is cached by the first), then the search itself; printed: predicted range and expected wall time
against the measured wall time of the search command.

    python benchmarks/cost_aware.py --out /tmp/cost_aware [--part fronts|estimate|all] [--seeds 0 1 2]

Small by default (demo data at 6 mm, 5-cell nf1 8 networks, 2 epochs of 2 steps) so that it runs on
a shared 2-core machine; latency figures on a loaded machine are noisy, hence medians. The README's
demo search (the whole space at the plan's spacing, whole epochs): ``--nf1 8 16 32 --cells 5 7 9
--spacing 0 --iterations 0``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.search.pareto import hypervolume_2d  # noqa: E402

CONFIG = """
[space]
nf1 = [{nf1}]
n_cells = [{cells}]

[samea]
population = {population}
generations = {generations}
learning_generations = 1
neighbourhood = 2
latency_runs = {latency_runs}
latency_threads = 1
latency_target = "{latency_target}"

[resources]
device = "{device}"

[training]
epochs = {epochs}
patience = 100
{plan}
{extra}"""


def cli(*args: str, timeout: float = 7200) -> tuple[dict, float]:
    """Run ``emonas ARGS --json``; (its JSON result, wall seconds)."""
    t0 = time.perf_counter()
    env = {**os.environ, "EMONAS_NO_PROGRESS": "1"}
    p = subprocess.run([sys.executable, "-m", "engine.cli", *args, "--json"], capture_output=True, text=True,
                       timeout=timeout, cwd=ROOT, env=env)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"emonas {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1]), seconds


def write_config(path: Path, a, population: int, generations: int) -> Path:
    # --spacing 0 / --iterations 0: the plan's own spacing, an epoch of the training cases (the README's search)
    plan = f"plan = {{ target_spacing = [{a.spacing}, {a.spacing}, {a.spacing}] }}" if a.spacing else ""
    extra = f"\n[training.extra]\niterations_per_epoch = {a.iterations}\n" if a.iterations else ""
    path.write_text(CONFIG.format(nf1=", ".join(map(str, a.nf1)), cells=", ".join(map(str, a.cells)),
                                  population=population, generations=generations, epochs=a.epochs,
                                  plan=plan, extra=extra, latency_runs=a.latency_runs,
                                  latency_target=a.latency_target, device=a.device))
    return path


def remeasure(runs: dict[str, Path], latency_runs: int, rounds: int = 3, seed: int = 0) -> dict[str, list[dict]]:
    """Each run's front with validation Dice and a CPU latency measured now (one thread), side by side.

    The networks of all fronts are measured together: each distinct genome once per round, in a
    shuffled order per round, after one untimed warm-up measurement, and its median over the rounds is
    the latency of that network in every front that holds it. Measuring one front after the other
    gave one network 1.5x apart in the two fronts (load drifts, the first measurements pay warm-up).
    """
    import random

    from engine.genome import Genome
    from engine.run.latency import measure_latency, reference_shape
    from engine.run.session import SearchProblem
    from engine.run.store import RunStore

    fronts, genomes, problem = {}, {}, None
    for name, run in runs.items():
        with RunStore.open_readonly(run) as store:
            fronts[name] = store.front()
            problem = SearchProblem.from_dict(store.get_meta("problem"))
        for c in fronts[name]:
            genomes[json.dumps(c["genome"], sort_keys=True)] = Genome.from_dict(c["genome"])
    shape = reference_shape(problem.plan.get("median_shape"), problem.patch_size)

    def measure(g: Genome) -> float:
        return measure_latency(g, problem.in_channels, problem.num_classes, problem.pools(g.n_levels),
                               problem.patch_size, shape, "cpu", 1, latency_runs)["latency_ms"]

    keys = sorted(genomes)
    if keys:
        measure(genomes[keys[0]])  # warm-up, not kept
    times: dict[str, list[float]] = {k: [] for k in keys}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = keys[:]
        rng.shuffle(order)
        for k in order:
            times[k].append(measure(genomes[k]))
    out = {}
    for name, front in fronts.items():
        out[name] = []
        for c in front:
            k = json.dumps(c["genome"], sort_keys=True)
            dice = statistics.mean((c.get("metrics") or {}).get("dice", {}).values() or [0.0])
            out[name].append({"id": c["id"], "genome": c["genome"], "dice": float(dice),
                              "latency_ms": statistics.median(times[k]),
                              "rounds_ms": times[k], "parameters": c["parameters"],
                              "stored_latency_ms": c.get("latency_ms")})
    return out


def status(run: Path) -> str:
    from engine.run.store import RunStore

    with RunStore.open_readonly(run) as store:
        return str(store.get_meta("status"))


def rank_agreement(runs: dict[str, Path]) -> dict:
    """How well parameter count and FLOPs order the trained networks by their latency.

    Over the candidates of all ``runs`` whose latency was measured during their search (not predicted),
    one entry per distinct genome: Spearman's rho of parameters and of GFLOPs against latency, and the
    share of pairs that parameter count orders the other way round from latency (Kendall's discordant
    pairs). Where that share is small, a parameter-objective search ranks networks as a latency
    search would, and the latency objective cannot buy much.
    """
    from scipy.stats import kendalltau, spearmanr

    from engine.run.store import RunStore

    seen: dict[str, tuple[float, float, float]] = {}
    for run in runs.values():
        with RunStore.open_readonly(run) as store:
            for c in store.candidates("done"):
                if c.get("latency_ms") and not c.get("latency_predicted") and c.get("gflops"):
                    seen[json.dumps(c["genome"], sort_keys=True)] = (
                        float(c["parameters"]), float(c["gflops"]), float(c["latency_ms"]))
    if len(seen) < 3:
        return {"networks": len(seen)}
    params, gflops, lat = zip(*seen.values())
    tau = kendalltau(params, lat).statistic
    return {"networks": len(seen), "spearman_parameters": float(spearmanr(params, lat).statistic),
            "spearman_gflops": float(spearmanr(gflops, lat).statistic),
            "discordant_parameters": float((1 - tau) / 2),
            "latency_ms_range": [min(lat), max(lat)]}


def shared_training(runs: dict[str, Path]) -> dict:
    """How many trained genomes the searches of one seed have in common.

    Searches with the same seed start from the same population and draw the same random numbers, so
    they train the same genomes until their objectives first select differently; a front can only
    differ by the genomes trained after that. Returns the trained count per run and the count trained
    by every run.
    """
    from engine.run.store import RunStore

    trained = {}
    for name, run in runs.items():
        with RunStore.open_readonly(run) as store:
            trained[name] = {json.dumps(c["genome"], sort_keys=True) for c in store.candidates("done")}
    common = set.intersection(*trained.values()) if trained else set()
    return {"trained": {k: len(v) for k, v in trained.items()}, "common": len(common)}


def hv_ratios(fronts: dict[str, list[dict]], dice: str = "dice") -> dict:
    """Each front's hypervolume in (1 - Dice, latency) against (Dice 0, 2x the slowest network of all
    fronts), and its ratio to the parameters front's; ``dice`` names the entries' Dice key."""
    slowest = max(f["latency_ms"] for fr in fronts.values() for f in fr)
    ref = (1.0, 2 * slowest)
    hv = {k: hypervolume_2d([(1 - f[dice], f["latency_ms"]) for f in fr], ref) if fr else 0.0
          for k, fr in fronts.items()}
    ratios = {k: hv[k] / hv["parameters"] if hv["parameters"] else float("inf") for k in hv if k != "parameters"}
    return {"reference": ref, "hv": hv, "ratios": ratios}


def retrain_fronts(fronts: dict[str, list[dict]], a, seed: int, out: Path) -> None:
    """Train every front network again for ``a.retrain_epochs`` whole epochs with ``emonas train`` (the
    seed's split, one schedule for all) and add its mean validation Dice to the entries as
    ``dice_retrained``; a network on several fronts is trained once. Sets apart what the objective
    chose from the noise of a candidate's short training."""
    done: dict[str, float] = {}
    for fr in fronts.values():
        for f in fr:
            key = json.dumps(f["genome"], sort_keys=True)
            if key not in done:
                folder = out / f"retrain_s{seed}_e{a.retrain_epochs}" / f"net{len(done):02d}"
                res, secs = cli("train", "--dataset", a.dataset, "--genome", key, "--out", str(folder),
                                "--force", "--epochs", str(a.retrain_epochs), "--patience", str(a.retrain_epochs),
                                "--seed", str(seed), "--threads", "1")
                done[key] = statistics.mean(res["dice"].values())
                print(f"  retrained #{f['id']} ({f['parameters']:,} parameters) {a.retrain_epochs} epochs in "
                      f"{secs:.0f} s: Dice {f['dice']:.3f} -> {done[key]:.3f}", flush=True)
            f["dice_retrained"] = done[key]


def _hv_text(h: dict) -> str:
    return ("hypervolume " + ", ".join(f"{k}-run {v:.1f}" for k, v in h["hv"].items()) + ", ratio to the parameters run "
            + ", ".join(f"{k} {v:.2f}" for k, v in h["ratios"].items()))


def _ratios_text(ratios: list[float]) -> str:
    return f"median {statistics.median(ratios):.2f}, per seed {', '.join(f'{r:.2f}' for r in ratios)}"


def fastest_within(front: list[dict], tol: float = 0.02, dice: str = "dice") -> dict:
    best = max(f[dice] for f in front)
    return min((f for f in front if f[dice] >= best - tol), key=lambda f: f["latency_ms"])


def part_fronts(a, out: Path) -> list[dict]:
    cfg = write_config(out / "fronts.toml", a, a.population, a.generations)
    rows = []
    for seed in a.seeds:
        runs = {}
        for objective in a.objectives:
            run = out / f"{a.dataset_name}_{objective}_s{seed}"
            if not (run / "run.db").exists():
                _, secs = cli("search", "--dataset", a.dataset, "--out", str(run), "--config", str(cfg),
                              "--seed", str(seed), "--objective", objective)
                print(f"seed {seed} {objective:<10} search {secs:.0f} s", flush=True)
            elif status(run) != "finished":  # stopped earlier: finish it first
                _, secs = cli("resume", str(run))
                print(f"seed {seed} {objective:<10} resumed {secs:.0f} s", flush=True)
            runs[objective] = run
        fronts = remeasure(runs, a.latency_runs, seed=seed)
        row = {"seed": seed, **hv_ratios(fronts), "fronts": fronts, "fastest": {k: fastest_within(fr) for k, fr in fronts.items()},
               "ranks": rank_agreement(runs), "shared": shared_training(runs)}
        rows.append(row)
        print(f"seed {seed}: {_hv_text(row)} (reference Dice 0, {row['reference'][1]:.0f} ms)", flush=True)
        rk = row["ranks"]
        if "spearman_parameters" in rk:
            print(f"  {rk['networks']} networks measured in the searches ({rk['latency_ms_range'][0]:.0f} - "
                  f"{rk['latency_ms_range'][1]:.0f} ms): Spearman's rho against latency, parameters "
                  f"{rk['spearman_parameters']:.2f}, GFLOPs {rk['spearman_gflops']:.2f}; pairs that parameter "
                  f"count orders the other way round {100 * rk['discordant_parameters']:.0f} %", flush=True)
        sh = row["shared"]
        print(f"  trained genomes: " + ", ".join(f"{k} {n}" for k, n in sh["trained"].items())
              + f"; trained by every search {sh['common']}", flush=True)
        for k, f in row["fastest"].items():
            print(f"  {k:<10} front {len(fronts[k])}: fastest within 0.02 Dice of best: #{f['id']} "
                  f"Dice {f['dice']:.3f}, {f['latency_ms']:.1f} ms, {f['parameters']:,} parameters", flush=True)
        if a.retrain_epochs:
            retrain_fronts(fronts, a, seed, out)
            row["retrained"] = {**hv_ratios(fronts, "dice_retrained"), "epochs": a.retrain_epochs,
                                "fastest": {k: fastest_within(fr, dice="dice_retrained") for k, fr in fronts.items()}}
            r = row["retrained"]
            print(f"seed {seed}, front networks retrained {a.retrain_epochs} epochs: {_hv_text(r)}", flush=True)
            for k, f in r["fastest"].items():
                print(f"  {k:<10} front: fastest within 0.02 Dice of best: #{f['id']} Dice {f['dice_retrained']:.3f}, "
                      f"{f['latency_ms']:.1f} ms", flush=True)
    for k in rows[0]["ratios"] if rows else ():
        print(f"hypervolume ratio ({k} / parameters): {_ratios_text([r['ratios'][k] for r in rows])}", flush=True)
        if a.retrain_epochs:
            print(f"  front networks retrained {a.retrain_epochs} epochs: "
                  f"{_ratios_text([r['retrained']['ratios'][k] for r in rows])}", flush=True)
    return rows


def part_estimate(a, out: Path) -> list[dict]:
    rows = []
    for population, generations in a.sizes:
        cfg = write_config(out / f"estimate_{population}x{generations}.toml", a, population, generations)
        run = out / f"{a.dataset_name}_estimate_{population}x{generations}"
        objective = ("--objective", a.estimate_objective)
        est, est_s = cli("search", "--dataset", a.dataset, "--out", str(run), "--config", str(cfg), *objective,
                         "--estimate")
        _, wall = cli("search", "--dataset", a.dataset, "--out", str(run), "--config", str(cfg), *objective)
        lo, mid, hi = est["total_s"]
        row = {"population": population, "generations": generations, "evaluations": est["evaluations"],
               "predicted_s": mid, "range_s": [lo, hi], "measured_s": wall, "error": (mid - wall) / wall,
               "estimate_command_s": est_s, "calibration_s": est["calibration_s"], "cached": est["cached"],
               "objective": a.estimate_objective, "device": est["device"], "hardware": est["hardware"]}
        rows.append(row)
        print(f"search {population}x{generations}: predicted {mid:.0f} s (range {lo:.0f}-{hi:.0f}), measured {wall:.0f} s, "
              f"error {100 * row['error']:+.0f} % (estimate took {est_s:.0f} s, calibration "
              f"{est['calibration_s']:.0f} s{', cached' if est['cached'] else ''})", flush=True)
        try:  # candidate by candidate: which part of the time model was off
            from estimate_breakdown import breakdown

            b = row["breakdown"] = breakdown(run, est["device"])
            print(f"  candidates: median measured/predicted {b['median_ratio']:.2f}, {b['candidates_s']:.0f} s of "
                  f"{wall:.0f} s wall; calibration " + "; ".join(
                      f"nf1 {p['nf1']} step {1e3 * p['step_s']:.1f} ms, validation {p['val_s']:.2f} s, fixed "
                      f"{p['overhead_s']:.2f} s, cold {p['cold_s']:.1f} s, set-up {p['excess_s']:.2f} s" for p in b["calibration"]),
                  flush=True)
            for c in b["candidates"]:
                print(f"    #{c['id']} nf1 {c['nf1']} cells {c['cells']}: {c['measured_s']:.1f} s measured, "
                      f"{c['predicted_s']:.1f} s predicted (fixed {c['fixed_s']:.1f}, steps {c['steps_s']:.1f}, "
                      f"validations {c['validations_s']:.1f}, latency {c['latency_s']:.1f})", flush=True)
        except (SystemExit, Exception) as exc:  # noqa: BLE001 - the estimate's figures stand without it
            print(f"  (no breakdown: {exc})", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--part", choices=("fronts", "estimate", "all"), default="all")
    ap.add_argument("--dataset", default="demo")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--flops", action="store_true",
                    help="fronts part: a third search per seed with objective flops, measured beside the other two")
    ap.add_argument("--population", type=int, default=4)
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=2, help="training steps per epoch (0: the plan's epoch)")
    ap.add_argument("--spacing", type=float, default=6.0,
                    help="target spacing in mm (coarse keeps it small; 0: the plan's own)")
    ap.add_argument("--latency-runs", type=int, default=3)
    ap.add_argument("--nf1", type=int, nargs="+", default=[8], help="the space's first-level filters (8, 16, 32)")
    ap.add_argument("--cells", type=int, nargs="+", default=[5], help="the space's cell counts (5, 7, 9)")
    ap.add_argument("--sizes", default="2x1,3x2,4x3", help="estimate part: population x generations, comma-separated")
    ap.add_argument("--estimate-objective", default="parameters", choices=("parameters", "flops", "latency"),
                    help="estimate part: the searches' second objective")
    ap.add_argument("--device", default="auto", help="resources.device of every search (auto, cpu, cuda)")
    ap.add_argument("--latency-target", default="cpu", choices=("cpu", "cuda"), help="samea.latency_target")
    ap.add_argument("--retrain-epochs", type=int, default=0,
                    help="fronts part: also train every front network again for this many epochs (emonas train, "
                         "the seed's split) and compare the fronts with that Dice (0: no)")
    a = ap.parse_args()
    a.objectives = ["latency", "parameters"] + (["flops"] if a.flops else [])
    a.sizes = [tuple(int(v) for v in s.split("x")) for s in a.sizes.split(",")]
    a.dataset_name = Path(a.dataset).name or "demo"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"cost_aware benchmark {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    result = {}
    if a.part in ("fronts", "all"):
        result["fronts"] = part_fronts(a, out)
    if a.part in ("estimate", "all"):
        result["estimate"] = part_estimate(a, out)
    print(f"load average at the end {os.getloadavg()[0]:.1f}", flush=True)
    (out / f"result_{a.part}.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
