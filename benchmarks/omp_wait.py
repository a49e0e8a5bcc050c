"""Training steps on a shared CPU: OpenMP's waiting policy against other work on the machine.

    python benchmarks/omp_wait.py [--rounds 3] [--steps 8] [--others 0,1,2] [--settings ...]

PyTorch's CPU kernels run on OpenMP (libgomp in the Linux wheels), whose idle threads spin for a
while at every barrier before they sleep. On a machine that also runs other work (another search,
the app's rendering, a colleague's job), the spinning threads take cores from the threads that have
work, and each parallel region waits for its slowest thread. This measures one training step of the
small genome (the paper's hippocampus cell, nf1 8, 5 cells; batch 3 of 32 x 48 x 32, channels-last,
Adam), each setting in a fresh process (the policy is read when OpenMP starts), beside 0, 1 or 2
busy processes (pure-Python loops), in shuffled rounds, and prints each setting's median step time
and its ratio to PyTorch's default (every core, OpenMP's default waiting) at the same load.

Settings: ``default`` (all cores), ``passive`` (all cores, ``OMP_WAIT_POLICY=PASSIVE``), ``spin10k``
(all cores, ``GOMP_SPINCOUNT=10000``; any ``spinN`` or ``spinNk``), ``one`` (one thread). Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "default": ({}, None),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "spin10k": ({"GOMP_SPINCOUNT": "10000"}, None),
    "one": ({}, 1),
}


def worker(steps: int, threads: int | None) -> dict:
    """Time ``steps`` training steps of the small genome in this process (after one warm-up step)."""
    sys.path.insert(0, str(ROOT))
    import torch

    from engine.genome import Genome
    from engine.network.builder import build_network

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from accuracy_per_minute import SMALL_GENOME
    from cpu_layout import _time

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    cl = torch.channels_last_3d
    net = build_network(Genome.from_dict(SMALL_GENOME), in_channels=1, num_classes=3).to(memory_format=cl)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.randn(3, 1, 32, 48, 32).to(memory_format=cl)
    y = torch.randint(0, 3, (3, 32, 48, 32))

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    return {"median_s": _time(step, rounds=steps), "threads": torch.get_num_threads()}  # after one warm-up step


def setting_env(setting: str) -> tuple[dict, int | None]:
    """The environment and thread count of a setting: one of ``SETTINGS``, or ``spinN`` / ``spinNk``."""
    if setting in SETTINGS:
        return SETTINGS[setting]
    if setting.startswith("spin"):
        n = setting[4:]
        return {"GOMP_SPINCOUNT": str(int(n[:-1]) * 1000 if n.endswith("k") else int(n))}, None
    raise SystemExit(f"unknown setting {setting!r}")


def measure(setting: str, steps: int) -> dict:
    env_over, threads = setting_env(setting)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    env.update(env_over)
    p = subprocess.run([sys.executable, __file__, "_worker", str(steps), str(threads or 0)], env=env,
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        print(json.dumps(worker(int(argv[1]), int(argv[2]) or None)), flush=True)
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--others", default="0,1,2", help="busy processes beside the measurement (comma-separated)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated: {', '.join(SETTINGS)}")
    args = ap.parse_args(argv)
    settings = args.settings.split(",")
    print(f"{os.cpu_count()} logical CPUs; {args.rounds} rounds of {args.steps} steps per setting", flush=True)
    rng = random.Random(0)
    results: dict[tuple[int, str], list[float]] = {}
    for others in (int(o) for o in args.others.split(",")):
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(others)]
        try:
            time.sleep(1.0)
            for _ in range(args.rounds):
                order = settings[:]
                rng.shuffle(order)
                for s in order:
                    r = measure(s, args.steps)
                    results.setdefault((others, s), []).append(r["median_s"])
                    print(f"  others {others} {s:8s} {r['median_s']:.3f} s/step ({r['threads']} threads)", flush=True)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    print("\n| busy processes beside it | " + " | ".join(settings) + " |")
    print("|---|" + "---|" * len(settings))
    for others in sorted({o for o, _ in results}):
        base = statistics.median(results[(others, "default")]) if (others, "default") in results else None
        cells = []
        for s in settings:
            m = statistics.median(results[(others, s)])
            cells.append(f"{m:.2f} s" + (f" (x{base / m:.2f})" if base else ""))
        print(f"| {others} | " + " | ".join(cells) + " |")
    print("\n(x: the default's step time over the setting's, at the same load; above 1 is faster)")


if __name__ == "__main__":
    main()
