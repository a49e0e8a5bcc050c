"""``emonas report``: test-split metrics of the Pareto front against a family of U-Nets, with figures.

Every front model (its weights kept under RUN/candidates/ID, retrained if they were pruned) and a
family of MONAI U-Nets (``engine.run.family``: four or more widths at the depths the plan allows,
trained with the candidates' own Trainer and settings, for the candidates' epochs and for the median
candidate's wall time) segment the test cases the search never saw, each as ``emonas predict`` does:
the scan preprocessed with the run's plan, the labels mapped back onto the scan's own grid, scored
against the ORIGINAL reference label file in world space (``engine.run.scoring``,
``engine.infer.metrics.in_one_frame``). Written to OUT:

    metrics_per_case.csv   model, candidate, parameters, case, label, dice, hd95_mm
    metrics_summary.csv    model, candidate, parameters, gflops, latency_ms, cpu_ms, label, dice mean/std,
                           hd95_mm mean/std, cases
    pareto.svg, pareto.png all evaluated candidates and the front (f1 against the run's objective:
                           parameters, GFLOPs or latency)
    fronts.svg, fronts.png the searched front and the U-Net family in (test Dice, parameters) and in
                           (test Dice, CPU inference time measured here)
    report.json            the same numbers as plain data, the hypervolumes and the verdict in words

Every front network carries its parameters, inference GFLOPs of one patch and latency: the one the run
measured, else measured here as the run would (``engine.run.latency``, its target and thread count,
or the CPU with one thread). Every network compared (front and family) also gets ``cpu_ms``: the CPU
time of segmenting the plan's median volume with the predictor's sliding window, measured on the
machine making the report (``engine.run.latency.measure_network_latency``).

Each front's hypervolume in a plane is the area it dominates (test Dice up, cost down) in the box
from the fixed reference point (Dice 0, twice the largest cost of any network compared) to (cost 0,
Dice 1), as a fraction of that box.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from engine.config import run_profile
from engine.errors import RunError

log = logging.getLogger(__name__)

#: The planes the fronts are compared in: key of a model's cost -> words for it.
PLANES = {"parameters": "parameters", "cpu_ms": "CPU inference time"}


def _test_cases(problem: dict):
    """The run's test cases, each read and preprocessed with its plan as ``emonas predict`` would, with
    its original reference: those of its split file (the listed ids, or the dataset's imagesTs with
    labelsTs), else those pinned when it started (recomputed from its seed for older runs).
    Returns (scan cases, plan, the ignore label's value or None)."""
    from engine import data as D
    from engine.run.scoring import load_scan_case

    spec = problem["data"]
    split = spec.get("split") or {}
    if split.get("test_folder"):
        ds = D.open_dataset(spec["dataset"], test=True)
        test = list(ds.case_ids)
    else:
        ds = D.open_dataset(spec["dataset"])
        pinned = split.get("test")  # the run's own test cases, whatever was added since
        test = list(pinned) if pinned is not None else list(ds.split(int(spec.get("seed", 0))).test)
    if not test:
        where = f"the split file {split['source']}" if split.get("source") else "the dataset's split"
        raise RunError(f"{spec['dataset']}: {where} has no test case to report on (and the dataset no imagesTs/labelsTs)")
    plan = D.Plan.from_dict(problem["plan"])
    _, ignore = D.split_ignore(dict(ds.labels))
    return [load_scan_case(ds.case(cid), plan) for cid in test], plan, ignore


def _evaluate_model(predictor, classes: dict, ignore: int | None, cases,
                    progress: Callable[[str], None] | None = None, name: str = "") -> dict:
    """Per-case metrics of one predictor on the scan cases, each scored in its scan's own geometry."""
    from engine.run.scoring import predict_in_scan, score_in_scan

    per_case = {}
    for case in cases:
        if progress:
            progress(f"{name}: segmenting {case.case_id}")
        per_case[case.case_id] = score_in_scan(predict_in_scan(predictor, case), case, classes, ignore)
    return per_case


def hypervolume_2d(points: Sequence[tuple[float, float]], ref_cost: float) -> float:
    """Area dominated by ``points`` (cost, Dice): cost to minimize, Dice to maximize, bounded by the
    reference point (``ref_cost``, Dice 0). Points at or beyond ``ref_cost`` add nothing."""
    from engine.search.pareto import hypervolume_2d as minimized

    pts = [(float(c), -float(d)) for c, d in points]  # Dice maximized: its negative minimized, up to 0
    return minimized(pts, (float(ref_cost), 0.0)) if pts else 0.0


_AXES = {"parameters": ("parameters", "trainable parameters", "size"),
          "flops": ("gflops", "inference GFLOPs of one patch", "compute"),
          "latency": ("latency_ms", "latency (ms)", "latency")}


def pareto_figure(candidates: list[dict], front: list[dict], out_dir: Path, objective: str = "parameters"
                  ) -> tuple[Path, Path]:
    """f1 against the objective (log scale) for every finished candidate, the front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, xlabel, what = _AXES.get(objective, _AXES["parameters"])
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    done = [c for c in candidates if c["status"] == "done" and c.get(key)]
    ax.scatter([c[key] for c in done], [c["f1"] for c in done], s=18, c="#9aa5b1", label="evaluated")
    fr = sorted((c for c in front if c.get(key)), key=lambda c: c[key])
    # the front as the staircase it attains: each network is the best one up to the next's cost
    ax.plot([c[key] for c in fr], [c["f1"] for c in fr], "-o", c="#d1495b", ms=5, drawstyle="steps-post",
            label="Pareto front")
    for c in fr:
        ax.annotate(f"#{c['id']}", (c[key], c["f1"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("f1 (normalized expected segmentation error)")
    ax.set_title(f"EMONAS search: accuracy against {what}")
    ax.grid(True, alpha=0.3)
    ax.legend(frameon=False)
    return _save(fig, out_dir, "pareto")


def _save(fig, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Write a figure as STEM.svg and STEM.png and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    svg, png = out_dir / f"{stem}.svg", out_dir / f"{stem}.png"
    fig.savefig(svg)
    fig.savefig(png)
    plt.close(fig)
    return svg, png


def _front_costs(front: list[dict], problem: dict, objective: dict, latencies: list[dict]) -> None:
    """Fill in GFLOPs and a measured latency for the front candidates that lack them (in place)."""
    from engine.genome import Genome
    from engine.run.latency import by_network, latency_key, measure_latency, reference_shape
    from engine.run.session import SearchProblem
    from engine.search.objective import inference_flops

    p = SearchProblem.from_dict(problem)
    lat = (objective or {}).get("latency") or {}
    target, threads = lat.get("target", "cpu"), int(lat.get("threads") or 1)
    if target == "cuda":
        from engine.device import cuda_count

        target = target if cuda_count() else "cpu"
    measured = by_network(latencies)  # as the run's LatencyBook reads them
    shape = reference_shape((p.plan or {}).get("median_shape"), p.patch_size)
    for c in front:
        g = Genome.from_dict(c["genome"])
        pools = p.pools(g.n_levels)
        if c.get("gflops") is None:
            c["gflops"] = inference_flops(g, p.in_channels, p.num_classes, p.patch_size, pools) / 1e9
        if c.get("latency_ms") is None or c.get("latency_predicted"):
            known = measured.get(latency_key(g))
            c["latency_ms"] = known if known is not None else measure_latency(
                g, p.in_channels, p.num_classes, pools, p.patch_size, shape, target, threads,
                int(lat.get("runs") or 5))["latency_ms"]
            c["latency_predicted"] = 0


def _cpu_ms(model, problem: dict, objective: dict) -> float:
    """CPU time (ms) of segmenting the plan's median volume with the predictor's sliding window, on this
    machine (the run's latency thread count, else one thread)."""
    from engine.run.latency import measure_network_latency, reference_shape

    lat = (objective or {}).get("latency") or {}
    threads = int(lat.get("threads") or 1) or 1
    patch = [int(v) for v in problem["patch_size"]]
    shape = reference_shape((problem.get("plan") or {}).get("median_shape"), patch)
    return measure_network_latency(copy.deepcopy(model).cpu(), int(problem["in_channels"]), patch, shape, "cpu",
                                   threads, int(lat.get("runs") or 5))["latency_ms"]


def compare_fronts(models: list[dict]) -> dict[str, Any]:
    """Hypervolumes of the searched front and of the family per budget in each plane, against a fixed
    reference point per plane (Dice 0, twice the largest cost of any network compared), and the
    verdict in words. ``models`` carry ``kind`` ("searched" or "family"), ``budget``, ``test_dice``
    and the costs of :data:`PLANES`."""
    groups: dict[str, list[dict]] = {"searched": [m for m in models if m["kind"] == "searched"]}
    for m in models:
        if m["kind"] == "family":
            groups.setdefault(f"family_{m['budget']}", []).append(m)
    planes: dict[str, Any] = {}
    for key, words in PLANES.items():
        usable = [m for m in models if m.get(key) and np.isfinite(m.get("test_dice", np.nan))]
        if not usable:
            continue
        ref = 2.0 * max(float(m[key]) for m in usable)
        hv = {}
        for g, ms in groups.items():
            pts = [(float(m[key]), float(m["test_dice"])) for m in ms if m in usable]
            if pts:
                hv[g] = hypervolume_2d(pts, ref) / ref  # a fraction of the box up to Dice 1
        planes[key] = {"what": words, "reference_point": {"dice": 0.0, key: ref}, "hypervolume": hv}
    return {"planes": planes, "verdict": verdict(planes, models)}


_BUDGET_WORDS = {"family_epochs": "the U-Net family trained for the same epochs as a candidate",
                 "family_time": "the U-Net family trained for the median candidate's wall time"}


def verdict(planes: dict, models: list[dict]) -> list[str]:
    """One sentence per plane and budget: which front is ahead, by how much."""
    budgets = {m["budget"]: m.get("budget_value") for m in models if m["kind"] == "family"}
    out = []
    for key, plane in planes.items():
        hv = plane["hypervolume"]
        if "searched" not in hv:
            continue
        for g, words in _BUDGET_WORDS.items():
            if g not in hv:
                continue
            a, b = hv["searched"], hv[g]
            amount = budgets.get(g.split("_", 1)[1])
            if not isinstance(amount, (int, float)):
                when = ""
            elif g == "family_epochs":
                when = f" ({amount:.0f} epoch{'s' if amount != 1 else ''})"
            else:
                when = f" ({amount:.0f} s)"
            if abs(a - b) < 1e-9:
                lead = "the searched front and the U-Net family are level"
            elif a > b:
                lead = f"the searched front is ahead by {a - b:.4f} ({100 * (a - b) / b:.1f}% more)" if b > 0 else \
                    "the searched front is ahead (the family dominates nothing)"
            else:
                lead = f"the U-Net family is ahead by {b - a:.4f} ({100 * (b - a) / a:.1f}% more)" if a > 0 else \
                    "the U-Net family is ahead (the searched front dominates nothing)"
            out.append(f"In (test Dice, {plane['what']}) against {words}{when}: {lead}; hypervolume {a:.4f} "
                       f"(searched) against {b:.4f} (family), reference point Dice 0 and "
                       f"{plane['reference_point'][key]:.4g} {'parameters' if key == 'parameters' else 'ms'}.")
    return out


def fronts_figure(models: list[dict], comparison: dict, out_dir: Path) -> tuple[Path, Path]:
    """Test Dice against parameters and against CPU inference time: the searched front and the family
    per budget, each with its hypervolume in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"searched": ("searched front", "#d1495b", "o"), "family_epochs": ("U-Net family, same epochs", "#2e86ab", "s"),
              "family_time": ("U-Net family, same wall time", "#66a182", "^")}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    for ax, (key, words) in zip(axes, PLANES.items()):
        hv = (comparison["planes"].get(key) or {}).get("hypervolume", {})
        for g, (label, colour, marker) in styles.items():
            ms = [m for m in models if (m["kind"] == "searched" if g == "searched" else
                                        m["kind"] == "family" and f"family_{m['budget']}" == g) and m.get(key)]
            if not ms:
                continue
            ms.sort(key=lambda m: m[key])
            xs, ys = [m[key] for m in ms], [m["test_dice"] for m in ms]
            best = np.maximum.accumulate(ys)  # the staircase the set attains
            ax.plot(xs, best, "-", c=colour, drawstyle="steps-post", alpha=0.7)
            text = f"{label} (HV {hv[g]:.3f})" if g in hv else label
            ax.scatter(xs, ys, c=colour, marker=marker, s=28, label=text, zorder=3)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap on short spans
        ax.set_xlabel("trainable parameters" if key == "parameters" else "CPU inference time (ms), this machine")
        ax.set_ylabel("test Dice (mean over labels and cases)")
        ax.set_title(f"test Dice against {words}")
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False, fontsize=7)
    return _save(fig, out_dir, "fronts")


def write_report(run_dir: str | Path, out_dir: str | Path, device: str = "auto", family: bool = True,
                 splits: str | Path | None = None, fold: int | None = None, *, baseline: bool | None = None,
                 family_widths: str | Sequence[int] | None = None, family_depths: str | Sequence[int] | None = None,
                 family_budgets: str | Sequence[str] | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Evaluate the run's front and a U-Net family on the test split; write CSVs and figures to ``out_dir``.

    ``family`` False (or the older ``baseline`` False) skips the U-Nets; ``family_widths``,
    ``family_depths`` and ``family_budgets`` ("epochs", "time") choose them (``engine.run.family``).
    ``splits`` (a split file, fold ``fold``) replaces the run's split: the family trains on its
    training and validation cases, and its test cases (or the dataset's imagesTs with labelsTs) are
    reported on; test cases the search trained or validated on are refused. ``progress(text)`` hears
    what is being done."""
    import time

    from engine.device import resolve_device
    from engine.infer.predictor import Predictor
    from engine.atomic import publish_files, temp_dir_near
    from engine.outputs import check_output, run_sources
    from engine.run import family as F
    from engine.run.retrain import candidate_folder, run_context
    from engine.run.store import RunStore

    started = time.perf_counter()
    if baseline is not None:
        family = family and baseline
    out = Path(out_dir)
    ctx = run_context(run_dir)  # a folder that is not a run is named before anything is written
    check_output(out, run_sources(run_dir, ctx["problem"].get("data")), option="--out")
    problem, train = ctx["problem"], ctx["train"]
    with RunStore.open_readonly(run_dir) as store:
        front = [c.to_dict() for c in store.front()]  # plain dicts: the front's costs are filled in below
        everything = store.candidates()
        objective = store.get_meta("objective") or {"name": "parameters"}
        latencies = store.latencies()
    if not front:
        raise RunError(f"{run_dir}: no finished candidate yet; nothing to report")
    median = F.median_fit_seconds(everything)
    if family:  # bad options are refused before any work
        widths = F.parse_widths(family_widths)
        depths = F.parse_depths(family_depths, F.allowed_depths(problem))
        budgets = F.parse_budgets(family_budgets)
        if "time" in budgets and not median:
            raise RunError(f"{run_dir}: the run records no candidate's training time: use --family-budgets epochs")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{out}: cannot create the report folder ({exc.strerror or exc})") from None
    if splits:
        from engine.run.retrain import with_split_file

        seen = problem["data"].get("split") or {}
        problem = {**problem, "data": with_split_file(problem["data"], splits, fold)}
        new = problem["data"]["split"]
        leak = sorted(set(new["test"]) & (set(seen.get("train", [])) | set(seen.get("val", [])))) if seen else []
        if leak:
            raise RunError(f"{splits}: test case(s) {', '.join(leak[:5])} were trained or validated on by the search")
    _front_costs(front, problem, objective, latencies)
    dev = resolve_device(device)
    if progress:
        progress("reading and preprocessing the test cases")
    cases, plan, ignore = _test_cases(problem)
    classes = {name: int(v) for name, v in problem["labels"].items() if int(v) != 0}
    keep_largest = run_profile(ctx["config"]) == "paper"  # as emonas predict post-processes this profile
    models = []
    for c in front:
        predictor = Predictor.from_training_folder(candidate_folder(run_dir, c["id"], device), device=str(dev))
        name = f"emonas#{c['id']}"
        per_case = _evaluate_model(predictor, classes, ignore, cases, progress, name)
        models.append({"model": name, "kind": "searched", "candidate": c["id"], "budget": None,
                       "parameters": c["parameters"], "gflops": c["gflops"], "latency_ms": c["latency_ms"],
                       "per_case": per_case, "fit_seconds": _fit_seconds(c),
                       "epochs": (c.get("metrics") or {}).get("epochs"),
                       "_module": _module_of(candidate_folder(run_dir, c["id"], device))})
    family_info = None
    if family:
        from engine.train.data import prepare_training_data

        spec = problem["data"]
        data = prepare_training_data(spec["dataset"], seed=int(spec.get("seed", 0)),
                                     plan_overrides=spec.get("plan_overrides"), cache_dir=spec.get("cache_dir"),
                                     split=spec.get("split"), plan=spec.get("plan"))
        members = F.train_family(data, train, widths, depths, budgets, median, device, progress)
        family_info = {"widths": widths, "depths": depths, "budgets": budgets, "epochs": int(train.get("epochs") or 1),
                       "median_candidate_seconds": median, "lr": F.UNET_LR}
        for m in members:
            predictor = Predictor(_logits(m.model, dev), m.settings["patch_size"], data.num_classes, plan=plan,
                                  keep_largest=keep_largest, device=dev)
            per_case = _evaluate_model(predictor, classes, ignore, cases, progress, m.name)
            models.append({"model": m.name, "kind": "family", "candidate": None, "budget": m.budget,
                           "budget_value": family_info["epochs"] if m.budget == "epochs" else median,
                           "width": m.width, "levels": m.levels, "parameters": m.parameters, "gflops": None,
                           "latency_ms": None, "per_case": per_case, "fit_seconds": m.fit_seconds, "epochs": m.epochs,
                           "best_epoch": m.best_epoch, "settings": m.settings, "_module": m.model})
    from engine.run.scoring import foreground_dice

    for m in models:
        m["test_dice"] = foreground_dice(m["per_case"])
        if progress:
            progress(f"{m['model']}: CPU inference time")
        m["cpu_ms"] = _cpu_ms(m.pop("_module"), problem, objective)
    comparison = compare_fronts(models)
    tmp = temp_dir_near(out)  # every file is written here, then moved in: no half file under its name
    try:
        result = _write_files(tmp, out, run_dir, cases, models, everything, front, run_profile(ctx["config"]),
                              objective.get("name", "parameters"), comparison, family_info)
        result["report_seconds"] = time.perf_counter() - started
        (tmp / "report.json").write_text(json.dumps(result, indent=1, allow_nan=True))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_files(tmp, out, last=["report.json"])
    return result


def _fit_seconds(c: dict) -> float | None:
    t = (c.get("metrics") or {}).get("fit_seconds") or c.get("seconds")
    return float(t) if t else None


def _module_of(folder):
    from engine.infer.folder import load_training_folder

    return load_training_folder(folder).build_model("cpu")


def _logits(model, device):
    from engine.infer.predictor import torch_logits_fn

    return torch_logits_fn(model, device)


def _write_files(tmp: Path, out: Path, run_dir, cases, models, everything, front, profile: str,
                 objective: str, comparison: dict, family_info: dict | None) -> dict[str, Any]:
    """Write the report's files into ``tmp``; the paths returned are those they get in ``out``."""
    from engine.infer.metrics import summarize

    per_case_csv, summary_csv = tmp / "metrics_per_case.csv", tmp / "metrics_summary.csv"
    with per_case_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "candidate", "parameters", "case", "label", "dice", "hd95_mm"])
        for m in models:
            for case, per_label in m["per_case"].items():
                for label, v in per_label.items():
                    w.writerow([m["model"], m["candidate"], m["parameters"], case, label, f"{v['dice']:.6f}", f"{v['hd95']:.4f}"])
    with summary_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "candidate", "parameters", "gflops", "latency_ms", "cpu_ms", "label", "dice_mean", "dice_std",
                    "hd95_mm_mean", "hd95_mm_std", "cases"])
        for m in models:
            s = summarize(m["per_case"])
            m["summary"] = s
            gf = "" if m["gflops"] is None else f"{m['gflops']:.4f}"
            ms = "" if m["latency_ms"] is None else f"{m['latency_ms']:.2f}"
            for label, v in s.items():
                w.writerow([m["model"], m["candidate"], m["parameters"], gf, ms, f"{m['cpu_ms']:.2f}", label,
                            f"{v['dice']['mean']:.6f}", f"{v['dice']['std']:.6f}",
                            f"{v['hd95']['mean']:.4f}", f"{v['hd95']['std']:.4f}", v["dice"]["n"]])
    svg, png = pareto_figure(everything, front, tmp, objective)
    fsvg, fpng = fronts_figure(models, comparison, tmp)
    keys = ("model", "kind", "candidate", "budget", "budget_value", "width", "levels", "parameters", "gflops",
            "latency_ms", "cpu_ms", "test_dice", "fit_seconds", "epochs", "best_epoch", "settings", "summary")
    result = {"run": str(run_dir), "run_path": str(Path(run_dir).resolve()), "profile": profile, "out": str(out), "test_cases": [c.case_id for c in cases],
              "objective": objective, "scored_in": "each scan's own geometry, against the original reference files",
              "models": [{k: m[k] for k in keys if k in m} for m in models],
              "family": family_info, "comparison": comparison,
              **{k: str(out / p.name) for k, p in (("metrics_csv", per_case_csv), ("summary_csv", summary_csv),
                                                    ("figure_svg", svg), ("figure_png", png),
                                                    ("fronts_svg", fsvg), ("fronts_png", fpng))}}
    return result
