"""Accuracy per minute: test Dice reached in a fixed wall time, the engine against a minimal MONAI loop.

    python benchmarks/accuracy_per_minute.py run  [--arms ARM,...] [--budgets 30,300] [--seeds 0,1]
                                                  [--variants NAME,...] [--engine-root DIR] [--tag TAG]
                                                  [--log FILE] [--dataset DIR]
    python benchmarks/accuracy_per_minute.py report --log FILE [--log FILE ...]
    python benchmarks/accuracy_per_minute.py dataset OUT_DIR --tube-radius MM

Every measurement is one fresh process (``--jobs`` at a time), with ``--threads`` torch threads, on the
Task04-shaped hippocampus set (``emonas demo-data OUT --kind hippocampus``; 50 cases, the engine's
reproducible split with seed 0: 36 training, 9 validation and 5 test cases). Arms:

- ``peer``:  the minimal loop ``peer_monai_unet.py`` (MONAI UNet 8-16-32-64, 2 residual units, whole
  volumes padded to 40x56x40, batch 2, Dice+CE, Adam 1e-3, x-flip), given the engine's split
  (``PEER_EVAL`` = test cases, ``PEER_EXCLUDE`` = validation cases); only its seeds are changed;
- ``genome``: the engine's ``Trainer`` with its default training on the small genome (the paper's
  hippocampus cell, nf1 8, 5 cells, lr 1e-3, 109 k parameters): 120 epochs, stopped at the budget
  (or at the 120th epoch, whichever comes first);
- ``unet``: the same ``Trainer`` with the minimal loop's own network (same MONAI UNet, Adam 1e-3);
- ``genome40``: the small genome trained 40 epochs (no time budget); its best validation Dice.

Budgets apply to ``peer``, ``genome`` and ``unet`` (seconds of training, model construction and data
loading excluded), on the wall clock (``--clock wall``, the default) or on the process's CPU clock
(``--clock cpu``: CPU seconds of all its threads; with ``--threads 1`` that is the wall time the
arm would have had on an idle core, so arms stay comparable on a machine shared with other work;
the minimal loop's clock and thread count are changed the same way, by text substitution). Test Dice is measured on the 5 test cases in the preprocessed space (1 mm, so the
scans' own grid) with the weights training returns. ``--engine-root`` runs the engine arms on
another checkout's code (say, the code before a change) with this script's measuring code.
``--variants`` names changes from that code's defaults (``VARIANTS`` below), one factor at a time.

``dataset`` writes a variant of the hippocampus set whose labels are the grey matter inside a tube of
another radius (the set's is 6 mm, an adult hippocampus's volume; 5 mm, the set before, puts more of the
labels' boundary on the tube, 7 mm more on the grey matter's edge),
to measure how much of a result is the set's; pass it to ``run --dataset``.

Every measurement appends one JSON line to ``--log``; ``report`` prints the markdown tables of
BENCHMARKS.md's "accuracy per minute" section from one or more logs. Nothing here asserts a time:
on a shared machine equal wall time means fewer steps, so every line records the steps taken too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
#: The minimal loop: $EMONAS_PEER_SCRIPT, else ``shared/tools/`` beside the checkout or one level up (worktrees).
PEER = Path(os.environ.get("EMONAS_PEER_SCRIPT") or next(
    (p for p in (ROOT.parent / "shared" / "tools" / "peer_monai_unet.py",
                 ROOT.parent.parent / "shared" / "tools" / "peer_monai_unet.py") if p.exists()),
    ROOT.parent / "shared" / "tools" / "peer_monai_unet.py"))
SMALL_GENOME = {"in2": 0, "in3": 1, "in4": 1, "op1": "conv3d_3x3x3", "op2": "p3d_3x3x3", "op3": "p3d_3x3x3",
                "op4": "conv2d_5x5x1", "n_cells": 5, "nf1": 8, "lr": 1e-3}
SPLIT_SEED = 0

#: Changes from a code's defaults, one factor at a time. ``augment`` replaces fields of the default
#: augmentation profile object (for code before the mirror decision; newer code takes the mirrored
#: axes from the plan and scales the probabilities with the budget, so use ``train`` there);
#: ``train`` sets TrainerConfig fields; ``plan`` sets plan overrides ("nnunet" as patch_size: the
#: median shape rounded up to the pooling).
VARIANTS: dict[str, dict] = {
    "default": {},
    "flip-x": {"augment": {"flip_axes": (0,)}},
    "flip-x-no-rot-scale-int": {"augment": {"flip_axes": (0,), "p_rotate": 0.0, "p_scale": 0.0, "p_brightness": 0.0,
                                            "p_contrast": 0.0, "p_gamma": 0.0, "p_noise": 0.0}},
    "patch-nnunet": {"plan": {"patch_size": "nnunet"}},
    "val-every-1": {"train": {"val_every": 1}},
    "aug-strong": {"train": {"augmentation": "strong"}},
    "mirror-all": {"train": {"mirror_axes": [0, 1, 2]}},
    "mirror-none": {"train": {"mirror_axes": []}},
    "mirror-x": {"train": {"mirror_axes": [0]}},  # the default before mirroring followed the budget
    "init-kaiming": {"init": "kaiming"},  # nnU-Net's initialization: He normal (a 0.01), zero biases
    "dice-smooth-1e-5": {"dice_smooth": 1e-5},  # nnU-Net's Dice smoothing instead of 1
    "paper": {"train": {"profile": "paper"}},
    "lr-poly": {"train": {"lr_schedule": "poly"}},
    "lr-poly-3e-3": {"train": {"lr_schedule": "poly"}, "genome": {"lr": 3e-3}},
    "lr-3e-3": {"genome": {"lr": 3e-3}},
    "contiguous": {"train": {"channels_last": False}},
    # a foreground-centred patch kept inside the volume as the random ones are (the engine, like
    # nnU-Net, lets it reach past the edge, padded with zeros that inference windows never see)
    "fg-inside": {"sampler": "fg-inside"},
    # nnU-Net's smallest batch instead of the plan's (3 here): more, smaller steps per epoch
    "batch-2": {"plan": {"batch_size": 2}},
    # the engine's "tail" schedule (the default since 2026-12-06: the genome's rate, then linearly
    # towards 0 over the last fifth of the planned steps), its share of the steps set here
    "lr-tail-0.2": {"train": {"lr_schedule": "tail"}, "lr_tail": 0.2},
    "lr-tail-0.1": {"train": {"lr_schedule": "tail"}, "lr_tail": 0.1},
    "lr-tail-0.4": {"train": {"lr_schedule": "tail"}, "lr_tail": 0.4},
    "lr-constant": {"train": {"lr_schedule": "constant"}},  # the default before "tail"
    # validation and the returned weights are an exponential moving average of the weights (decay 0.99)
    "ema-0.99": {"ema": 0.99},
}


def nnunet_patch(median_shape, divisors) -> list[int]:
    """nnU-Net's patch rule: start from the median shape and round each axis up to its pooling divisor."""
    return [-(-int(m) // int(d)) * int(d) for m, d in zip(median_shape, divisors)]


# ------------------------------------------------------------------------------------------- worker


class _Deadline:
    """A cancel flag (``is_set``) that turns true once ``seconds`` have passed on ``clock`` since ``start()``."""

    def __init__(self, seconds: float | None, clock: str = "wall"):
        self.seconds = seconds
        self.clock = time.process_time if clock == "cpu" else time.perf_counter
        self.t0 = None

    def start(self) -> None:
        self.t0 = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.t0 if self.t0 is not None else 0.0

    def is_set(self) -> bool:
        return self.seconds is not None and self.t0 is not None and self.elapsed() >= self.seconds


def _dice(pred, label, k: int) -> list[float]:
    import numpy as np

    out = []
    for c in range(1, k):
        p, t = pred == c, np.asarray(label) == c
        s = p.sum() + t.sum()
        out.append(float(2 * (p & t).sum() / s) if s else 1.0)
    return out


def worker(spec: dict) -> dict:
    """Train one arm in this process and return its JSON record."""
    import numpy as np
    import torch

    from engine import data as D
    from engine.genome import Genome
    from engine.infer.predictor import Predictor, torch_logits_fn
    from engine.train import augmentation as A
    try:
        from engine.train.config import TrainerConfig
    except ImportError:  # code before the rename
        from engine.train.config import TrainConfig as TrainerConfig
    from engine.train.data import prepare_training_data
    from engine.train.trainer import Trainer

    variant = VARIANTS[spec["variant"]]
    threads = int(spec.get("threads", 2))
    torch.set_num_threads(threads)
    ds = D.open_dataset(spec["dataset"])
    split = ds.split(SPLIT_SEED)
    plan_over = dict(variant.get("plan", {}))
    if plan_over.get("patch_size") == "nnunet":
        base = D.make_plan(ds)
        divisors = [int(np.prod([p[a] for p in base.pool_schedule])) for a in range(3)]
        plan_over["patch_size"] = nnunet_patch(base.median_shape, divisors)
    data = prepare_training_data(ds, seed=SPLIT_SEED, split=split, plan_overrides=plan_over)
    if "augment" in variant:
        A.PROFILES["default"] = dataclasses.replace(A.PROFILES["default"], **variant["augment"])
    # the engine's default training: 120 epochs (what its augmentation strength and validation interval
    # are planned for), stopped by the budget or by the epochs, whichever comes first; no early stop
    epochs = spec.get("epochs") or TrainerConfig().epochs
    cfg = TrainerConfig(**{"epochs": epochs, "patience": 100000, "seed": spec["seed"], "device": "cpu",
                         "num_threads": threads, "max_epochs_for_objective": max(epochs, 1),
                         **variant.get("train", {})})
    deadline = _Deadline(spec.get("budget"), spec.get("clock", "wall"))
    if variant.get("sampler") == "fg-inside":
        _set_fg_centre()
    if "dice_smooth" in variant:
        from engine.train import losses

        losses.per_class_soft_dice.__defaults__ = (float(variant["dice_smooth"]), False)
    trainer = Trainer(Genome.from_dict({**SMALL_GENOME, **variant.get("genome", {})}), data, cfg, cancel=deadline)
    if variant.get("init") == "kaiming":
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec["seed"])
            for m in trainer.model.modules():
                if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
                    torch.nn.init.kaiming_normal_(m.weight, a=1e-2)
                    if m.bias is not None:
                        torch.nn.init.zeros_(m.bias)
    if "lr_tail" in variant:
        from engine.train import trainer as T

        T.LR_TAIL = float(variant["lr_tail"])  # read at every step by Trainer.scheduled_rate
    if "ema" in variant:
        _ema(trainer, float(variant["ema"]))
    if spec["arm"] == "unet":
        from monai.networks.nets import UNet

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec["seed"])
            net = UNet(3, data.in_channels, data.num_classes, channels=(8, 16, 32, 64), strides=(2, 2, 2),
                       num_res_units=2, norm="instance")
        # the Trainer's memory layout for the network it trains (channels-last on the CPU for width 8)
        trainer.model = net.to(memory_format=torch.channels_last_3d) if getattr(trainer, "channels_last", False) else net
        trainer.optimizer = torch.optim.Adam(trainer.model.parameters(), 1e-3)
        trainer.parameters = sum(p.numel() for p in net.parameters())
    deadline.start()
    t0 = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - t0
    clock_s = deadline.elapsed()
    train_s = sum(r.get("train_seconds", 0.0) for r in trainer.curves)
    validated = [r for r in trainer.curves if "val_dice" in r]
    test = D.preprocess_dataset(ds, data.plan, case_ids=list(split.test))
    pred = Predictor(torch_logits_fn(trainer.model, "cpu"), trainer.patch, data.num_classes)
    with torch.no_grad():
        per_case = [_dice(pred.predict_array(np.asarray(test[c].image, np.float32)), test[c].label, data.num_classes)
                    for c in split.test]
    return {
        "arm": spec["arm"], "variant": spec["variant"], "tag": spec["tag"], "seed": spec["seed"],
        "budget_s": spec.get("budget"), "clock": spec.get("clock", "wall"), "threads": threads,
        "epochs_asked": spec.get("epochs"), "seconds": round(seconds, 1), "clock_s": round(clock_s, 1),
        "train_seconds": round(train_s, 1), "val_seconds": round(sum(r.get("val_seconds", 0.0) for r in trainer.curves), 1),
        "val_every": getattr(trainer, "val_every", 1),
        "augmentation": getattr(trainer, "augmentation", None), "steps": int(getattr(trainer, "_step_count", 0)),
        "epochs": len(trainer.curves), "validations": len(validated), "parameters": int(trainer.parameters),
        "patch": list(trainer.patch), "batch": trainer.batch_size,
        "best_val_dice": round(float(trainer.best_dice), 4), "best_epoch": result.best_epoch,
        "test_dice": [round(float(v), 4) for v in np.mean(per_case, axis=0)],
        "test_cases": list(split.test), "labels": data.fg_names if hasattr(data, "fg_names") else list(data.foreground),
    }


def _ema(trainer, decay: float) -> None:
    """Validate (and keep as best) an exponential moving average of ``trainer``'s weights."""
    import torch

    shadow = [p.detach().clone() for p in trainer.model.parameters()]
    own_step, own_validate, own_end = trainer.train_step, trainer.validate, trainer.on_epoch_end
    saved = []

    def step(images, labels):
        out = own_step(images, labels)
        with torch.no_grad():
            torch._foreach_lerp_(shadow, [p.detach() for p in trainer.model.parameters()], 1 - decay)
        return out

    def validate(epoch):
        with torch.no_grad():
            saved[:] = [p.detach().clone() for p in trainer.model.parameters()]
            for p, s in zip(trainer.model.parameters(), shadow):
                p.copy_(s)
        return own_validate(epoch)

    def end(epoch, record):
        own_end(epoch, record)  # keeps the averaged weights when they are the best
        if saved:
            with torch.no_grad():
                for p, s in zip(trainer.model.parameters(), saved):
                    p.copy_(s)
            saved.clear()

    trainer.train_step, trainer.validate, trainer.on_epoch_end = step, validate, end


def _set_fg_centre() -> None:
    """Foreground-centred patches kept inside the volume where it is larger than the patch (clipped
    to the random patches' range); the same random numbers are drawn as by the engine's own rule."""
    import numpy as np

    from engine.train import sampling as S

    own = S.PatchSampler._centre

    def centre(self, case_index: int, force_fg: bool) -> np.ndarray:
        c = own(self, case_index, force_fg)
        if force_fg and self.fg[case_index]:
            c = np.clip(c, *self.centre_range(self.cases[case_index].label.shape))
        return c

    S.PatchSampler._centre = centre


def run_peer(dataset: Path, budget: float, seed: int, tag: str, clock: str = "wall", threads: int = 2) -> dict:
    """The minimal loop on the engine's split, its seeds set to ``seed``, and with ``clock`` "cpu" its
    clock and thread count changed (nothing else)."""
    from engine import data as D

    ds = D.open_dataset(dataset)
    split = ds.split(SPLIT_SEED)
    source = PEER.read_text()
    subs = [("torch.manual_seed(0)", f"torch.manual_seed({seed})"), ("default_rng(0)", f"default_rng({seed})"),
            ("torch.set_num_threads(2)", f"torch.set_num_threads({threads})")]
    if clock == "cpu":
        subs.append(("time.time()", "time.process_time()"))
    for old, new in subs:
        if old not in source:
            raise SystemExit(f"{PEER}: cannot find {old!r} to set the seed")
        source = source.replace(old, new)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "peer.py"
        script.write_text(source)
        env = dict(os.environ, PEER_EVAL=",".join(split.test), PEER_EXCLUDE=",".join(split.val))
        proc = subprocess.run([sys.executable, str(script), str(dataset), str(budget)], env=env,
                              capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"arm": "peer", "variant": "default", "tag": tag, "seed": seed, "budget_s": budget, "clock": clock,
            "threads": threads,
            "steps": res["steps"], "parameters": res["params"], "test_dice": [round(v, 4) for v in res["dice"]],
            "test_hd95_mm": [round(v, 2) for v in res["hd95_mm"]], "test_cases": list(split.test)}


# ------------------------------------------------------------------------------------------ driver


def _load() -> str:
    return os.popen("cat /proc/loadavg 2>/dev/null").read().split(" ")[0] or "?"


def make_dataset(args) -> None:
    """Write the hippocampus set with another tube radius to a new folder (atomically)."""
    sys.path.insert(0, str(ROOT))
    import shutil

    from engine.atomic import replace_dir, temp_dir_near
    from engine.data.demo import _generate_hippocampus

    out = Path(args.out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SystemExit(f"{out}: exists and is not an empty folder")
    tmp = temp_dir_near(out)
    try:
        _generate_hippocampus(tmp, radius=float(args.tube_radius))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote the hippocampus set with a {args.tube_radius:g} mm tube to {out}")


def run(args) -> None:
    sys.path.insert(0, str(ROOT))
    dataset = Path(args.dataset) if args.dataset else None
    if dataset is None:
        from engine.data.demo import demo_dataset_path

        dataset = demo_dataset_path("hippocampus")
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    engine_root = Path(args.engine_root).resolve() if args.engine_root else ROOT
    jobs = []
    for arm in args.arms.split(","):
        for variant in (args.variants.split(",") if arm != "peer" else ["default"]):
            if variant not in VARIANTS:
                raise SystemExit(f"unknown variant {variant!r}; variants: {', '.join(VARIANTS)}")
            budgets = [None] if arm == "genome40" else [float(b) for b in args.budgets.split(",")]
            for budget in budgets:
                for seed in (int(s) for s in args.seeds.split(",")):
                    jobs.append((arm, variant, budget, seed))
    lock = threading.Lock()

    def measure(job) -> None:
        arm, variant, budget, seed = job
        load0, t0 = _load(), time.time()
        if arm == "peer":
            rec = run_peer(dataset, budget, seed, args.tag, args.clock, args.threads)
        else:
            spec = {"arm": "genome" if arm == "genome40" else arm, "variant": variant, "seed": seed, "tag": args.tag,
                    "budget": budget, "epochs": 40 if arm == "genome40" else None, "dataset": str(dataset),
                    "clock": args.clock, "threads": args.threads}
            env = dict(os.environ, PYTHONPATH=str(engine_root), EMONAS_NO_PROGRESS="1",
                       OMP_NUM_THREADS=str(args.threads))
            env.setdefault("EMONAS_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"emonas-apm-{engine_root.name}"))
            proc = subprocess.run([sys.executable, str(HERE), "_worker", json.dumps(spec)], env=env, cwd=str(engine_root),
                                  capture_output=True, text=True)
            if proc.returncode:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"{arm} {variant} seed {seed}: the worker failed")
            rec = json.loads(proc.stdout.strip().splitlines()[-1])
            rec["arm"] = arm
        rec.update({"engine_root": str(engine_root), "wall_s": round(time.time() - t0, 1), "load_before": load0,
                    "load_after": _load(), "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())})
        with lock:
            with log.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)

    if args.jobs <= 1:
        for job in jobs:
            measure(job)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.jobs) as pool:
            for f in [pool.submit(measure, job) for job in jobs]:
                f.result()


def report(args) -> None:
    import numpy as np

    rows = [json.loads(line) for p in args.log for line in Path(p).read_text().splitlines() if line.strip()]
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault((r["tag"], r["arm"], r["variant"], r.get("budget_s")), []).append(r)
    print("| code | arm | variant | budget | seeds | parameters | steps (mean) | validations (share of time) | "
          "test Dice anterior / posterior | mean test Dice (per seed) | best val Dice (per seed) | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (tag, arm, variant, budget), rs in sorted(groups.items(), key=lambda kv: [str(v) for v in kv[0]]):
        rs = sorted(rs, key=lambda r: r["seed"])  # "per seed" in seed order, whatever order the arms ended in
        dice = np.mean([r["test_dice"] for r in rs], axis=0)
        per_seed = [float(np.mean(r["test_dice"])) for r in rs]
        val = [r["best_val_dice"] for r in rs if r.get("best_val_dice", -1) >= 0]  # -1: never validated
        clock = rs[0].get("clock", "wall")
        # code that records no validation time (before it was recorded) reports 0: left out
        share = [r["val_seconds"] / r["seconds"] for r in rs
                 if r.get("seconds") and (r.get("val_seconds") or not r.get("validations"))]
        vals = f"{np.mean([r.get('validations', 0) for r in rs]):.0f}" if arm != "peer" else "-"
        if share:
            vals += f" ({100 * np.mean(share):.0f} %)"
        print(f"| {tag} | {arm} | {variant} | {f'{budget:g} s {clock}' if budget else '40 epochs'} | {len(rs)} | "
              f"{rs[0]['parameters']:,} | {np.mean([r['steps'] for r in rs]):.0f} | {vals} | "
              f"{' / '.join(f'{v:.3f}' for v in dice)} | "
              f"{np.mean(per_seed):.3f} ({', '.join(f'{v:.3f}' for v in per_seed)}) | "
              f"{(f'{np.mean(val):.3f} (' + ', '.join(f'{v:.3f}' for v in val) + ')') if val else '-'} | "
              f"{np.mean([r.get('wall_s', 0) for r in rs]):.0f} |")


def main(argv=None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["_worker"]:
        print(json.dumps(worker(json.loads(argv[1]))), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run arms, appending one JSON line per measurement to --log")
    r.add_argument("--arms", default="peer,genome,unet,genome40", help="peer, genome, unet, genome40 (comma-separated)")
    r.add_argument("--budgets", default="30,300", help="wall-time budgets in seconds (comma-separated)")
    r.add_argument("--seeds", default="0,1")
    r.add_argument("--variants", default="default", help=f"comma-separated: {', '.join(VARIANTS)}")
    r.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="what the budgets count: wall seconds, or the arm's own CPU seconds (shared machines)")
    r.add_argument("--threads", type=int, default=2, help="torch threads of every arm (the minimal loop uses 2)")
    r.add_argument("--jobs", type=int, default=1, help="measurements at a time (1: one after another)")
    r.add_argument("--engine-root", help="a checkout whose engine/ the engine arms run (default: this one)")
    r.add_argument("--tag", default="after", help="names the code in the report (before, after, ...)")
    r.add_argument("--log", default="accuracy_per_minute.jsonl")
    r.add_argument("--dataset", help="an MSD-layout dataset (default: the hippocampus demo set)")
    p = sub.add_parser("report", help="print the markdown table of one or more logs")
    p.add_argument("--log", action="append", required=True)
    d = sub.add_parser("dataset", help="write a variant of the hippocampus set (another tube radius)")
    d.add_argument("out")
    d.add_argument("--tube-radius", type=float, required=True, help="mm (the set's own: 6)")
    args = ap.parse_args(argv)
    {"run": run, "report": report, "dataset": make_dataset}[args.cmd](args)


if __name__ == "__main__":
    main()
