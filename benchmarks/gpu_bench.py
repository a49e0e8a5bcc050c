"""GPU path benchmark: needs only PyTorch and numpy (synthetic tensors, the engine's network builder).

Measures, for networks of the search space on the Task04-sized patch (32x48x32, batch 2):
- training steps per second in fp32, bf16 autocast, bf16 + channels-last-3D, and torch.compile;
- achieved TFLOP/s (analytic FLOPs from engine.network.estimate_cost) against the device's peak;
- GPU utilization sampled by nvidia-smi while the loop runs;
- several small candidates trained at once on one GPU (processes) against one after another;
- sliding-window style inference of a 128x128x64 volume in fp32 and bf16;
- latency of segmenting Task04's median volume (sliding window, bf16 on CUDA, median of 5 runs) for
  the small genome and the paper's hippocampus network, as the latency objective measures it;
and projects the wall time of a full paper-sized hippocampus search (population 10, 40 generations,
at most 120 epochs, ~35x50x35 volumes, 260 cases).

Usage: python benchmarks/gpu_bench.py [--quick | --smoke] [--json] [--device cuda|cpu]
Prints a table, then one JSON line. Runs in a few minutes on one H200.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from engine.jsonsafe import jsonable  # noqa: E402
import torch  # noqa: E402

from engine.genome import PAPER_GENOMES, Genome, SearchSpace  # noqa: E402
from engine.network import build_network, estimate_cost  # noqa: E402

PATCH = (32, 48, 32)
BATCH = 2
CLASSES = 3
# dense peaks (TFLOP/s) used for the efficiency figure
SPAN: list[float] = []  # the last time_training's timed span (time.monotonic start, end)
PEAKS = {"H200": {"bf16": 989.0, "fp32": 67.0}, "H100": {"bf16": 989.0, "fp32": 67.0}}


def device_peak(name: str) -> dict:
    for key, peak in PEAKS.items():
        if key in name:
            return peak
    return {"bf16": float("nan"), "fp32": float("nan")}


class UtilSampler:
    """Samples GPU utilization with nvidia-smi in a background thread."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                    capture_output=True, text=True, timeout=5,
                ).stdout.strip()
                self.samples.append(float(out.splitlines()[0]))
            except Exception:
                pass
            self._stop.wait(0.2)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=6)

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples)) if self.samples else float("nan")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


PEAK_MEMORY: dict = {}  # the last time_training's peak GPU memory (MiB), CUDA only


def time_training(genome: Genome, device, mode: str, steps: int, warmup: int = 3, barrier=None) -> float:
    """Seconds per Adam step of ``genome`` on pre-made tensors in ``mode`` (peak memory in PEAK_MEMORY;
    the timed span's ``time.monotonic()`` start and end in SPAN). ``barrier``: waited on after the
    warm-up, so that several processes time the same moments."""
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    net = build_network(genome, 1, CLASSES).to(device)
    x = torch.randn(BATCH, 1, *PATCH, device=device)
    y = torch.randint(0, CLASSES, (BATCH, *PATCH), device=device)
    if "cl" in mode:
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    model = torch.compile(net) if "compile" in mode else net
    opt = torch.optim.Adam(net.parameters(), lr=genome.lr)
    amp = "bf16" in mode and device.type == "cuda"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    sync(device)
    if barrier is not None:
        barrier.wait(timeout=600)
    t, start = time.perf_counter(), time.monotonic()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - t) / steps
    SPAN[:] = [start, time.monotonic()]
    PEAK_MEMORY.clear()
    if device.type == "cuda":
        PEAK_MEMORY["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return seconds


_BARRIER = None


def _init_worker(barrier) -> None:
    global _BARRIER
    _BARRIER = barrier


def _worker(args):  # one candidate of the concurrency test, in its own process: its timed span
    genome_json, device_name, steps = args
    torch.set_num_threads(1)
    time_training(Genome.from_json(genome_json), torch.device(device_name), "bf16", steps, warmup=2,
                  barrier=_BARRIER)
    return list(SPAN)


def concurrency(genome: Genome, device, k: int, steps: int) -> dict:
    """K candidates at once (K processes on one device) versus one after another: the same steps,
    timed warm in each case. The K processes start, import PyTorch and warm up first, then wait for
    each other; the concurrent time runs from the first one's start of timed steps to the last one's end
    (process start and CUDA's set-up, seconds, are a candidate's fixed cost, not the device's sharing)."""
    import multiprocessing as mp

    one = time_training(genome, device, "bf16", steps)
    ctx = mp.get_context("spawn")
    with ctx.Pool(k, initializer=_init_worker, initargs=(ctx.Barrier(k),)) as pool:
        spans = pool.map(_worker, [(genome.to_json(), str(device), steps)] * k, chunksize=1)
    together = max(e for _, e in spans) - min(s for s, _ in spans)
    sequential = k * one * steps
    return {"k": k, "steps": steps, "sequential_s": sequential, "concurrent_s": together,
            "speedup": sequential / together}


def inference(genome: Genome, device, dtype: str) -> float:
    net = build_network(genome, 1, CLASSES).to(device).eval()
    vol = torch.randn(1, 1, 128, 128, 64, device=device)
    amp = dtype == "bf16" and device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        net(vol)  # warm-up
        sync(device)
        t = time.perf_counter()
        net(vol)
        sync(device)
    return time.perf_counter() - t


#: the median case of Task04 (hippocampus) at its 1 mm spacing: the reference volume of a latency
REFERENCE_VOLUME = (36, 50, 35)


def _starts(size: int, patch: int) -> list[int]:
    if size <= patch:
        return [0]
    step = max(1, patch // 2)  # 50 % overlap, as the engine's predictor
    starts = list(range(0, size - patch + 1, step))
    return starts if starts[-1] == size - patch else starts + [size - patch]


def latency(genome: Genome, device, dtype: str, runs: int = 5) -> dict:
    """Median ms of segmenting REFERENCE_VOLUME with PATCH windows (50 % overlap, batch 1, the logits
    averaged), the way ``samea.objective = "latency"`` measures on ``cuda`` (bf16 autocast)."""
    net = build_network(genome, 1, CLASSES).to(device).eval()
    shape = [max(v, p) for v, p in zip(REFERENCE_VOLUME, PATCH)]
    vol = torch.randn(1, 1, *shape, device=device)
    amp = dtype == "bf16" and device.type == "cuda"
    windows = [(x, y, z) for x in _starts(shape[0], PATCH[0]) for y in _starts(shape[1], PATCH[1])
               for z in _starts(shape[2], PATCH[2])]

    def segment():
        out = torch.zeros(1, CLASSES, *shape, device=device)
        count = torch.zeros(1, 1, *shape, device=device)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            for x, y, z in windows:
                sl = (slice(None), slice(None), slice(x, x + PATCH[0]), slice(y, y + PATCH[1]), slice(z, z + PATCH[2]))
                out[sl] += net(vol[sl]).float()
                count[sl] += 1
        return (out / count).argmax(1)

    segment()  # warm-up
    times = []
    for _ in range(runs):
        sync(device)
        t = time.perf_counter()
        segment()
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": float(np.median(times)), "runs_ms": times, "windows": len(windows), "volume": shape}


def projected_search(sec_per_step_mean: float, val_fraction: float = 0.1) -> dict:
    """Hours for the paper's hippocampus search: N=10, G=40, <=120 epochs, 260 cases, batch 2."""
    n_train = int(260 * 0.7)
    steps_per_epoch = math.ceil(n_train / BATCH)
    candidates = 10 * 40  # upper bound: every child trained (SaMEA's pre-screening trains fewer)
    mean_epochs = 60  # early stopping with patience 20 ends most candidates well before 120
    hours = candidates * mean_epochs * steps_per_epoch * sec_per_step_mean * (1 + val_fraction) / 3600
    return {"candidates": candidates, "mean_epochs": mean_epochs, "steps_per_epoch": steps_per_epoch,
            "hours_one_gpu": hours, "hours_upper_120_epochs": hours * 120 / mean_epochs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and genomes")
    ap.add_argument("--smoke", action="store_true", help="one step of the small network only (checks the script)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    peak = device_peak(name)
    steps = 1 if a.smoke else 3 if a.quick else 20
    small = Genome(1, 0, 2, "conv3d_3x3x3", "p3d_3x3x3", "conv2d_3x3x1", "identity", 5, 8, 1e-3)
    hippo = PAPER_GENOMES["hippocampus"]
    if device.type == "cuda":
        modes = ["fp32", "bf16", "bf16_cl"] + ([] if a.no_compile else ["bf16_compile"])
    else:  # no bf16 autocast on CPU
        modes = ["fp32", "fp32_cl"]
    result: dict = {"device": name, "date": time.strftime("%Y-%m-%d"), "patch": PATCH, "batch": BATCH, "modes": {}}
    print(f"device: {name}  patch {PATCH} batch {BATCH}")
    networks = [("small nf1=8 5 cells", small)] + ([] if a.smoke else [("hippocampus (paper)", hippo)])
    # latency first: the figures the latency objective uses, kept if a later part runs out of time
    for label, genome in networks:
        for dt in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
            r = latency(genome, device, dt, runs=1 if a.smoke else 5)
            result[f"latency_{'small' if genome is small else 'hippocampus'}_{dt}"] = r
            print(f"  latency {label:24s} {dt}: {r['median_ms']:.2f} ms (median of {len(r['runs_ms'])}, "
                  f"{r['windows']} windows of {'x'.join(map(str, PATCH))} over {'x'.join(map(str, r['volume']))})")
    for label, genome in networks:
        flops = estimate_cost(genome, 1, CLASSES, PATCH, BATCH).train_step_flops
        for mode in modes:
            with UtilSampler() as util:
                try:
                    s = time_training(genome, device, mode, steps, warmup=1 if a.smoke else 3)
                except Exception as exc:  # compile may be unavailable
                    print(f"  {label:24s} {mode:13s} failed: {str(exc).splitlines()[0][:80]}")
                    continue
            tflops = flops / s / 1e12
            pk = peak["fp32" if mode == "fp32" else "bf16"]
            estimate_mb = estimate_cost(genome, 1, CLASSES, PATCH, BATCH).training_bytes / 2**20
            result["modes"][f"{label}/{mode}"] = {"sec_per_step": s, "tflops": tflops, "peak_fraction": tflops / pk,
                                                 "gpu_util_percent": util.mean, "estimated_mb": estimate_mb,
                                                 "peak_gpu_mb": PEAK_MEMORY.get("peak_mb")}
            if "peak_mb" in PEAK_MEMORY:
                print(f"  {'':24s} {mode:13s} peak GPU memory {PEAK_MEMORY['peak_mb']:.0f} MiB, "
                      f"engine's estimate {estimate_mb:.0f} MiB")
            print(f"  {label:24s} {mode:13s} {1 / s:8.1f} steps/s  {tflops:7.2f} TFLOP/s  "
                  f"{100 * tflops / pk:5.1f}% of peak  util {util.mean:5.1f}%")
    # the average genome of the space decides the search time
    rng = np.random.default_rng(0)
    space = SearchSpace()
    sample = []
    for _ in range(1 if a.smoke else 3 if a.quick else 12):
        g = space.sample(rng)
        sample.append(time_training(g, device, "bf16_cl" if device.type == "cuda" else "fp32", max(2, steps // 4), 1))
    mean_step = float(np.mean(sample))
    result["random_genomes_mean_sec_per_step"] = mean_step
    result["projection"] = projected_search(mean_step)
    print(f"  mean step of {len(sample)} random genomes: {mean_step * 1e3:.1f} ms")
    print("  projected paper-sized hippocampus search on this device: "
          f"{result['projection']['hours_one_gpu']:.1f} h (upper bound "
          f"{result['projection']['hours_upper_120_epochs']:.1f} h at 120 epochs each)")
    if device.type == "cuda":
        result["concurrency"] = concurrency(small, device, 4, steps * 5)
        print(f"  4 small candidates at once vs one after another: x{result['concurrency']['speedup']:.2f}")
    for dt in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
        s = inference(small if a.smoke else hippo, device, dt)
        result[f"inference_128x128x64_{dt}_s"] = s
        print(f"  inference 128x128x64 hippocampus network {dt}: {s * 1e3:.1f} ms")
    if a.json:
        print(json.dumps(jsonable(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
