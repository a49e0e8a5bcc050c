"""``emonas report``: test-split metrics of the Pareto front, a plain U-Net baseline, the Pareto figure.

Every front model (its weights kept under RUN/candidates/ID, retrained if they were pruned) and a
MONAI U-Net of similar size, trained with the same settings, segment the test cases the search never
saw (preprocessed with the run's plan). Written to OUT:

    metrics_per_case.csv   model, candidate, parameters, case, label, dice, hd95_mm
    metrics_summary.csv    model, candidate, parameters, gflops, latency_ms, label, dice mean/std,
                           hd95_mm mean/std, cases
    pareto.svg, pareto.png all evaluated candidates and the front (f1 against the run's objective:
                           parameters, GFLOPs or latency)

Every front network carries its parameters, inference GFLOPs of one patch and latency: the one the run
measured, else measured here as the run would (``engine.run.latency``, its target and thread count,
or the CPU with one thread).
    report.json            the same numbers as plain data
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from engine.config import run_profile
from engine.errors import RunError

log = logging.getLogger(__name__)

#: Adam learning rate of the U-Net baseline (the usual choice for plain U-Nets).
BASELINE_LR = 1e-3


def _test_cases(problem: dict):
    """The run's test cases, preprocessed with its plan: those of its split file (the listed ids, or the
    dataset's imagesTs with labelsTs), else those pinned when it started (recomputed from its seed for
    older runs)."""
    from engine import data as D

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
    cases = D.preprocess_dataset(ds, plan, case_ids=test, cache_dir=spec.get("cache_dir"))
    return [(cid, cases[cid]) for cid in test], plan


def _evaluate_model(model, patch, num_classes, classes: dict, cases, device) -> dict:
    from engine.infer.metrics import case_metrics
    from engine.infer.predictor import Predictor, torch_logits_fn

    pred = Predictor(torch_logits_fn(model, device), patch, num_classes, device=device)
    per_case = {}
    for cid, case in cases:
        labels = pred.predict_array(np.asarray(case.image, dtype=np.float32))
        # class index num_classes in a reference is nnU-Net's ignore label (no other value maps there)
        per_case[cid] = case_metrics(labels, np.asarray(case.label), case.spacing, classes, ignore=num_classes)
    return per_case


def _baseline_unet(in_channels: int, num_classes: int, target_params: int):
    """A MONAI U-Net (two poolings, no residual units) whose size is closest to ``target_params``."""
    from monai.networks.nets import UNet

    best = None
    for c in (4, 6, 8, 12, 16, 24, 32):
        net = UNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, channels=(c, 2 * c, 4 * c),
                   strides=(2, 2), num_res_units=0)
        n = sum(p.numel() for p in net.parameters() if p.requires_grad)
        if best is None or abs(math.log(n / target_params)) < abs(math.log(best[1] / target_params)):
            best = (net, n, c)
    return best


def _train_baseline(problem: dict, train: dict, target_params: int, device: str):
    """Train the U-Net with the search's training loop, settings and budget; returns (model, params, patch)."""
    import torch

    from engine.genome import SearchSpace
    from engine.train.config import TrainConfig
    from engine.train.data import prepare_training_data
    from engine.train.trainer import Trainer

    spec = problem["data"]
    data = prepare_training_data(spec["dataset"], seed=int(spec.get("seed", 0)), plan_overrides=spec.get("plan_overrides"),
                                 cache_dir=spec.get("cache_dir"), split=spec.get("split"), plan=spec.get("plan"))
    net, n, _ = _baseline_unet(data.in_channels, data.num_classes, target_params)
    # the trainer is built for the smallest genome of two levels (patch and pooling checks), then its
    # network and optimizer are replaced by the U-Net's: same loop, sampling, loss, validation, budget
    shape_genome = SearchSpace(n_cells=(5,), nf1=(8,)).extreme_genomes()[0]
    settings = {**train, "device": device if device in ("auto", "cpu", "cuda") else "auto"}
    trainer = Trainer(shape_genome, data, TrainConfig.from_dict(settings))
    trainer.model = net.to(trainer.device)
    trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), lr=BASELINE_LR)
    trainer.parameters = n
    trainer.fit()
    if trainer.best_state is not None:
        trainer.model.load_state_dict(trainer.best_state)
    return trainer.model.eval(), n, trainer.patch, trainer.device


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
    fig.tight_layout()
    svg, png = out_dir / "pareto.svg", out_dir / "pareto.png"
    fig.savefig(svg)
    fig.savefig(png)
    plt.close(fig)
    return svg, png


def _front_costs(front: list[dict], problem: dict, objective: dict, latencies: list[dict]) -> None:
    """Fill in GFLOPs and a measured latency for the front candidates that lack them (in place)."""
    from engine.genome import Genome
    from engine.run.latency import measure_latency, reference_shape
    from engine.run.session import Problem
    from engine.search.objective import inference_flops

    p = Problem.from_dict(problem)
    lat = (objective or {}).get("latency") or {}
    target, threads = lat.get("target", "cpu"), int(lat.get("threads") or 1)
    if target == "cuda":
        import torch

        target = target if torch.cuda.is_available() else "cpu"
    measured = {json.dumps(r["genome"]) if not isinstance(r["genome"], str) else r["genome"]: r["latency_ms"]
                for r in latencies}
    shape = reference_shape((p.plan or {}).get("median_shape"), p.patch_size)
    for c in front:
        g = Genome.from_dict(c["genome"])
        pools = p.pools(g.n_levels)
        if c.get("gflops") is None:
            c["gflops"] = inference_flops(g, p.in_channels, p.num_classes, p.patch_size, pools) / 1e9
        if c.get("latency_ms") is None or c.get("latency_predicted"):
            known = measured.get(json.dumps(g.to_dict(), sort_keys=True))
            c["latency_ms"] = known if known is not None else measure_latency(
                g, p.in_channels, p.num_classes, pools, p.patch_size, shape, target, threads,
                int(lat.get("runs") or 5))["latency_ms"]
            c["latency_predicted"] = 0


def write_report(run_dir: str | Path, out_dir: str | Path, device: str = "auto", baseline: bool = True,
                 splits: str | Path | None = None, fold: int | None = None) -> dict[str, Any]:
    """Evaluate the run's front and a U-Net baseline on the test split; write CSVs and figures to ``out_dir``.

    ``splits`` (a split file, fold ``fold``) replaces the run's split: the baseline trains on its
    training and validation cases, and its test cases (or the dataset's imagesTs with labelsTs) are
    reported on; test cases the search trained or validated on are refused."""
    from engine.device import resolve_device
    from engine.infer.folder import load_training_folder
    from engine.outputs import check_output, publish_files, run_sources, temp_dir_near
    from engine.run.retrain import candidate_folder, run_context
    from engine.run.store import RunStore

    out = Path(out_dir)
    ctx = run_context(run_dir)  # a folder that is not a run is named before anything is written
    check_output(out, run_sources(run_dir, ctx["problem"].get("data")), option="--out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"{out}: cannot create the report folder ({exc.strerror or exc})") from None
    problem, train = ctx["problem"], ctx["train"]
    if splits:
        from engine.run.retrain import with_split_file

        seen = problem["data"].get("split") or {}
        problem = {**problem, "data": with_split_file(problem["data"], splits, fold)}
        new = problem["data"]["split"]
        leak = sorted(set(new["test"]) & (set(seen.get("train", [])) | set(seen.get("val", [])))) if seen else []
        if leak:
            raise RunError(f"{splits}: test case(s) {', '.join(leak[:5])} were trained or validated on by the search")
    with RunStore.open_readonly(run_dir) as store:
        front = store.front()
        everything = store.candidates()
        objective = store.get_meta("objective") or {"name": "parameters"}
        latencies = store.latencies()
    if not front:
        raise RunError(f"{run_dir}: no finished candidate yet; nothing to report")
    _front_costs(front, problem, objective, latencies)
    dev = resolve_device(device)
    cases, _ = _test_cases(problem)
    labels = problem["labels"]
    names = [n for n, _ in sorted(labels.items(), key=lambda kv: kv[1])]
    classes = {name: i for i, name in enumerate(names) if i > 0}
    models = []
    for c in front:
        tf = load_training_folder(candidate_folder(run_dir, c["id"], device))
        per_case = _evaluate_model(tf.build_model(dev), tf.patch_size, tf.num_classes, classes, cases, dev)
        models.append({"model": f"emonas#{c['id']}", "candidate": c["id"], "parameters": c["parameters"],
                       "gflops": c["gflops"], "latency_ms": c["latency_ms"], "per_case": per_case})
    if baseline:
        target = int(np.median([c["parameters"] for c in front]))
        net, n, patch, bdev = _train_baseline(problem, train, target, device)
        per_case = _evaluate_model(net, patch, len(labels), classes, cases, bdev)
        models.append({"model": "unet_baseline", "candidate": None, "parameters": n, "gflops": None, "latency_ms": None,
                       "per_case": per_case})

    tmp = temp_dir_near(out)  # every file is written here, then moved in: no half file under its name
    try:
        result = _write_files(tmp, out, run_dir, cases, models, everything, front, run_profile(ctx["config"]),
                              objective.get("name", "parameters"))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_files(tmp, out, last=["report.json"])
    return result


def _write_files(tmp: Path, out: Path, run_dir, cases, models, everything, front, profile: str,
                 objective: str) -> dict[str, Any]:
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
    summary = []
    with summary_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "candidate", "parameters", "gflops", "latency_ms", "label", "dice_mean", "dice_std",
                    "hd95_mm_mean", "hd95_mm_std", "cases"])
        for m in models:
            s = summarize(m["per_case"])
            m["summary"] = s
            gf = "" if m["gflops"] is None else f"{m['gflops']:.4f}"
            ms = "" if m["latency_ms"] is None else f"{m['latency_ms']:.2f}"
            for label, v in s.items():
                w.writerow([m["model"], m["candidate"], m["parameters"], gf, ms, label,
                            f"{v['dice']['mean']:.6f}", f"{v['dice']['std']:.6f}",
                            f"{v['hd95']['mean']:.4f}", f"{v['hd95']['std']:.4f}", v["dice"]["n"]])
                summary.append({"model": m["model"], "label": label, "dice_mean": v["dice"]["mean"], "hd95_mean": v["hd95"]["mean"]})
    svg, png = pareto_figure(everything, front, tmp, objective)
    result = {"run": str(run_dir), "profile": profile, "out": str(out), "test_cases": [cid for cid, _ in cases],
              "objective": objective,
              "models": [{k: m[k] for k in ("model", "candidate", "parameters", "gflops", "latency_ms", "summary")}
                         for m in models],
        **{k: str(out / p.name) for k, p in (("metrics_csv", per_case_csv), ("summary_csv", summary_csv),
                                              ("figure_svg", svg), ("figure_png", png))}}
    (tmp / "report.json").write_text(json.dumps(result, indent=1, allow_nan=True))
    return result
