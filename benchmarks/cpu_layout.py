"""Memory layout on the CPU: training steps of sampled genomes in the default (contiguous) layout and in
channels-last-3D, side by side through the engine's ``Trainer``, and what the engine's rule picks.

    python benchmarks/cpu_layout.py [--dataset demo|demo-hippocampus|DIR] [--threads 1] [--genomes 8]
                                    [--rounds 3] [--seed 0] [--max-step-s 6] [--ops] [--validation]

For each genome (the small genome of "Accuracy per minute" first, then ``--genomes - 1`` drawn from
the paper's space with ``--seed``), two trainers with the same seed, one per layout, take one untimed
step, then ``--rounds`` steps each on the same batch, in an order that alternates from round to round;
the speed-up is the median over rounds of contiguous / channels-last step time. Genomes whose first
step takes longer than ``--max-step-s`` are skipped (named). Printed last: the median speed-up per
first-level width (nf1) and the rule's (``engine.train.trainer.uses_channels_last``) total step time
against always-contiguous over the genomes measured. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SMALL_GENOME = {"in2": 0, "in3": 1, "in4": 1, "op1": "conv3d_3x3x3", "op2": "p3d_3x3x3", "op3": "p3d_3x3x3",
                "op4": "conv2d_5x5x1", "n_cells": 5, "nf1": 8, "lr": 1e-3}


def _short(op: str) -> str:
    return op.replace("conv", "c").replace("_", "")


def _time(fn, rounds: int = 3) -> float:
    fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _ops(patch: tuple, batch: int, num_classes: int) -> None:
    """Single ops and MONAI U-Nets, forward and backward, in both layouts."""
    import torch

    def one(make, shape, cl: bool) -> float:
        torch.manual_seed(0)
        net = make()
        x = torch.randn(batch, *shape)
        if cl:
            net = net.to(memory_format=torch.channels_last_3d)
            x = x.contiguous(memory_format=torch.channels_last_3d)
        x.requires_grad_(True)

        def step():
            net.zero_grad(set_to_none=True)
            net(x).float().square().mean().backward()
        return _time(step)

    from engine.network.ops import make_op

    for c in (8, 16, 32):
        for name in ("conv3d_3x3x3", "conv2d_5x5x1", "p3d_3x3x3", "conv3d_1x1x1"):
            def make(c=c, name=name):
                return make_op(name, c, c)  # the space's op: ReLU -> conv(s) -> instance norm
            plain, last = one(make, (c, *patch), False), one(make, (c, *patch), True)
            print(f"op {name} of {c:2d} channels: contiguous {plain * 1e3:.1f} ms, "
                  f"channels-last {last * 1e3:.1f} ms, x{plain / last:.2f}", flush=True)
    from monai.networks.nets import UNet

    for width in (8, 16):
        for res in (2, 0):
            def make(width=width, res=res):
                return UNet(3, 1, num_classes, channels=tuple(width * 2 ** i for i in range(4)), strides=(2, 2, 2),
                            num_res_units=res, norm="instance")
            plain, last = one(make, (1, *patch), False), one(make, (1, *patch), True)
            print(f"MONAI UNet {width}-{2 * width}-{4 * width}-{8 * width}, {res} residual units: contiguous "
                  f"{plain:.3f} s, channels-last {last:.3f} s, x{plain / last:.2f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="demo")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--genomes", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-step-s", type=float, default=6.0)
    p.add_argument("--ops", action="store_true",
                   help="also time four ops of the space (engine.network.ops, forward and backward) of 8, 16 and 32 "
                        "channels at the patch size, and a MONAI U-Net of first width 8 and 16")
    p.add_argument("--validation", action="store_true",
                   help="also time the small genome's validation pass (whole validation volumes, sliding window) "
                        "in both layouts, two rounds")
    a = p.parse_args(argv)

    import numpy as np
    import torch

    from engine import data as D
    from engine.genome import Genome, SearchSpace
    from engine.train.config import TrainerConfig
    from engine.train.data import prepare_training_data
    from engine.train.trainer import Trainer, uses_channels_last

    torch.set_num_threads(a.threads)
    data = prepare_training_data(D.open_dataset(a.dataset), seed=0)
    rng = np.random.default_rng(a.seed)
    genomes = [Genome.from_dict(SMALL_GENOME)] + [SearchSpace().sample(rng) for _ in range(a.genomes - 1)]
    print(f"dataset {a.dataset}: patch {tuple(data.plan.patch_size)}, batch {data.plan.batch_size}; "
          f"{a.threads} torch thread(s); torch {torch.__version__}", flush=True)
    rows = []
    for g in genomes:
        trainers = {cl: Trainer(g, data, TrainerConfig(device="cpu", seed=0, num_threads=a.threads, channels_last=cl))
                    for cl in (False, True)}
        t = trainers[False]
        x = torch.randn(t.batch_size, data.in_channels, *t.patch)
        y = torch.randint(0, data.num_classes, (t.batch_size, *t.patch))
        t0 = time.perf_counter()
        trainers[False].train_step(x, y)
        first = time.perf_counter() - t0
        ops = "/".join(_short(o) for o in (g.op1, g.op2, g.op3, g.op4))
        if first > a.max_step_s:
            print(f"skipped: nf1 {g.nf1} cells {g.n_cells} {ops} ({first:.1f} s a step)", flush=True)
            continue
        trainers[True].train_step(x, y)
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(a.rounds):
            for cl in ((False, True) if r % 2 == 0 else (True, False)):
                t0 = time.perf_counter()
                trainers[cl].train_step(x, y)
                times[cl].append(time.perf_counter() - t0)
        speed = statistics.median(c / l for c, l in zip(times[False], times[True]))
        plain, last = statistics.median(times[False]), statistics.median(times[True])
        rule = uses_channels_last(torch.device("cpu"), g.nf1)
        rows.append((g.nf1, plain, last, speed, rule))
        print(f"nf1 {g.nf1:2d}  cells {g.n_cells}  {ops:40s} contiguous {plain:.3f} s  channels-last {last:.3f} s  "
              f"x{speed:.2f}  rule: {'channels-last' if rule else 'contiguous'}", flush=True)
    if a.ops:
        _ops(tuple(data.plan.patch_size), int(data.plan.batch_size), data.num_classes)
    if a.validation:
        val = {cl: Trainer(genomes[0], data, TrainerConfig(device="cpu", seed=0, num_threads=a.threads, channels_last=cl))
               for cl in (False, True)}
        for cl in (False, True):
            val[cl].validate(1)  # warm-up
        vt: dict[bool, list[float]] = {False: [], True: []}
        for r in range(2):
            for cl in ((False, True) if r % 2 == 0 else (True, False)):
                t0 = time.perf_counter()
                val[cl].validate(1)
                vt[cl].append(time.perf_counter() - t0)
        print(f"validation pass of the small genome ({len(data.val)} volumes): contiguous "
              f"{statistics.median(vt[False]):.2f} s, channels-last {statistics.median(vt[True]):.2f} s, "
              f"x{statistics.median(vt[False]) / statistics.median(vt[True]):.2f}")
    if not rows:
        return 1
    for w in sorted({r[0] for r in rows}):
        s = [r[3] for r in rows if r[0] == w]
        print(f"nf1 {w}: median speed-up of channels-last x{statistics.median(s):.2f} over {len(s)} genome(s) "
              f"({', '.join(f'x{v:.2f}' for v in s)})")
    plain_total = sum(r[1] for r in rows)
    rule_total = sum(r[2] if r[4] else r[1] for r in rows)
    print(f"the rule against always contiguous: x{plain_total / rule_total:.2f} over the {len(rows)} genomes' steps "
          f"({plain_total:.2f} s -> {rule_total:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
