"""Inference latency of a genome's network, measured on the target a user deploys to.

The network (weights do not change its speed: a seeded initialization) segments a reference volume of
the plan's median shape with the same sliding window the predictor uses; one warm-up run, then the
median of ``runs`` timed runs.

- ``cpu``: the network exported to ONNX, run by ONNX Runtime with ``threads`` intra-op threads (and
  PyTorch's window blending held to the same count), so figures compare across genomes and runs;
- ``cuda``: PyTorch on the GPU with bf16 autocast (fp16 where bf16 is missing), synchronized.

``LatencyBook`` keeps the measured latencies of a run in its database (table ``latency``) with the
hardware and thread count, measures each network once, reuses identical networks (genomes that differ
only in their learning rate build the same network: ``latency_key``), and predicts the latency of
genomes not measured yet from their FLOPs and first-level width (``WidthPowerLaw`` fitted to the
measured ones; FLOPs alone until ``WIDTH_MODEL_POINTS`` networks are measured).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Sequence

from engine.genome import Genome
from engine.search.objective import WidthPowerLaw

log = logging.getLogger(__name__)


def hardware_name(target: str) -> str:
    """The CPU model (``cpu``) or GPU name (``cuda``) of this machine."""
    if target.startswith("cuda"):
        import torch

        from engine.device import cuda_count

        if not cuda_count():
            from engine.errors import ConfigError

            raise ConfigError("samea.latency_target is cuda, but this machine has no CUDA device; use cpu")
        idx = int(target.split(":")[1]) if ":" in target else 0
        return torch.cuda.get_device_name(idx)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


#: Measured networks from which the latency model also reads the width. On the hippocampus set at 1 mm
#: (``benchmarks/latency_model.py``, BENCHMARKS.md) FLOPs and width predicted with about half the median
#: error of FLOPs alone from 9 - 14 points on; from 4 points their 90th percentile was the worse.
WIDTH_MODEL_POINTS = 8


def latency_key(genome) -> str:
    """The key of a genome's network in the ``latency`` table: every gene but the learning rate, as
    sorted JSON. ``genome`` is a ``Genome``, its dict, or a stored key (runs before this rule stored the
    whole genome, lr included; their rows map to the same key)."""
    if isinstance(genome, str):
        genome = json.loads(genome)
    d = genome.to_dict() if isinstance(genome, Genome) else dict(genome)
    d.pop("lr", None)
    return json.dumps(d, sort_keys=True)


def by_network(rows) -> dict[str, float]:
    """``latency_key`` -> latency in ms of the ``latency`` table's ``rows`` (oldest first, as the store
    lists them): a network an older run measured twice (two learning rates) keeps its first figure."""
    out: dict[str, float] = {}
    for row in rows:
        out.setdefault(latency_key(row["genome"]), row["latency_ms"])
    return out


def _width(key) -> float:
    """The first-level width (nf1) of a stored ``latency`` row's genome key."""
    return float((json.loads(key) if isinstance(key, str) else key)["nf1"])


def reference_shape(median_shape: Sequence[int] | None, patch: Sequence[int]) -> list[int]:
    """The volume latency is measured on: the plan's median shape, or one patch when it is unknown."""
    shape = [int(v) for v in (median_shape or ())]
    if len(shape) != 3 or min(shape) < 1:
        shape = [int(v) for v in patch]
    return shape


def measure_latency(genome: Genome, in_channels: int, num_classes: int, pool_sizes, patch: Sequence[int],
                    shape: Sequence[int], target: str = "cpu", threads: int = 1, runs: int = 5, seed: int = 0) -> dict:
    """Median wall time in ms of segmenting a ``shape`` volume; also every run's time and the set-up."""
    import torch

    from engine.network.builder import build_network

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(genome, in_channels, num_classes, pool_sizes).eval()
    return measure_network_latency(net, in_channels, patch, shape, target, threads, runs, seed)


def measure_network_latency(net, in_channels: int, patch: Sequence[int], shape: Sequence[int], target: str = "cpu",
                            threads: int = 1, runs: int = 5, seed: int = 0) -> dict:
    """:func:`measure_latency` for any torch network (a genome's, a MONAI U-Net): the same sliding
    window as the predictor over a seeded random ``shape`` volume, one warm-up run, the median of ``runs``."""
    import numpy as np
    import torch

    from engine.infer.predictor import numpy_logits_fn, sliding_window_logits, torch_logits_fn

    net = net.eval()
    volume = np.random.default_rng(seed).standard_normal((in_channels, *shape)).astype(np.float32)
    old_threads = torch.get_num_threads()
    times = []
    try:
        if target.startswith("cuda"):
            dev = torch.device(target)
            net = net.to(dev)
            fn = torch_logits_fn(net, dev, amp=True)
            image = torch.from_numpy(volume).to(dev)
            sync = lambda: torch.cuda.synchronize(dev)  # noqa: E731
        else:
            torch.set_num_threads(threads)
            fn = numpy_logits_fn(_onnx_runner(net.cpu(), in_channels, patch, threads))
            image = volume
            sync = lambda: None  # noqa: E731
        for i in range(runs + 1):
            sync()
            t0 = time.perf_counter()
            sliding_window_logits(fn, image, patch, overlap=0.5, gaussian=True, batch_size=1)
            sync()
            if i:  # the first run warms caches and kernels up
                times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        torch.set_num_threads(old_threads)
    return {"latency_ms": float(statistics.median(times)), "runs_ms": times, "target": target.split(":")[0],
            "threads": int(threads) if not target.startswith("cuda") else 0, "hardware": hardware_name(target),
            "shape": list(shape), "patch": list(patch)}


def _onnx_runner(net, in_channels: int, patch: Sequence[int], threads: int):
    """An ONNX Runtime session of ``net`` (exported to a temporary file) as a numpy function."""
    import onnxruntime as ort
    import torch

    from engine.export.package import INPUT_NAME, _export_onnx

    example = torch.zeros(1, in_channels, *patch)
    with tempfile.TemporaryDirectory(prefix="emonas-latency-") as tmp:
        path = Path(tmp) / "model.onnx"
        _export_onnx(net, example, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def run(x):
        return sess.run(None, {INPUT_NAME: x})[0]

    return run


class LatencyBook:
    """Measured latencies of one run (its database's ``latency`` table) and the model predicting the rest.

    ``store`` is a writable ``RunStore``; ``problem`` the run's ``SearchProblem`` (channels, classes, patch,
    plan); ``flops(genome)`` the inference FLOPs used by the prediction. Nothing is measured until
    ``measure`` is called; ``value`` never measures.
    """

    def __init__(self, store, problem, flops, target: str = "cpu", threads: int = 1, runs: int = 5, seed: int = 0):
        self.store = store
        self.problem = problem
        self.flops = flops
        self.target = target
        self.threads = int(threads) if target == "cpu" else 0
        self.runs = int(runs)
        self.seed = int(seed)
        plan = problem.plan or {}
        self.shape = reference_shape(plan.get("median_shape"), problem.patch_size)
        self.hardware = hardware_name(target)
        self.measure_seconds = 0.0  # time spent measuring in this session
        rows = store.latencies(self.target, self.threads, self.hardware, self.shape)
        self._known: dict[str, float] = by_network(rows)
        self._points = [(row["flops"], _width(row["genome"]), row["latency_ms"]) for row in rows]
        self.model = WidthPowerLaw(self._points, WIDTH_MODEL_POINTS)

    @staticmethod
    def key(genome: Genome) -> str:
        return latency_key(genome)

    def known(self, genome: Genome) -> float | None:
        """The measured latency in ms, or None."""
        return self._known.get(self.key(genome))

    def predicted(self, genome: Genome) -> float:
        """Latency predicted from FLOPs and width by the model fitted to the measured genomes."""
        return self.model.predict(self.flops(genome), genome.nf1)

    def value(self, genome: Genome) -> float:
        """The measured latency when there is one, else the predicted one (never measures)."""
        v = self.known(genome)
        return v if v is not None else self.predicted(genome)

    def measure(self, genome: Genome) -> float:
        """The genome's latency in ms: measured now and stored, or the stored one (measured once)."""
        v = self.known(genome)
        if v is not None:
            return v
        t0 = time.perf_counter()
        r = measure_latency(genome, self.problem.in_channels, self.problem.num_classes,
                            self.problem.pools(genome.n_levels), self.problem.patch_size, self.shape,
                            self.target, max(self.threads, 1), self.runs, self.seed)
        self.measure_seconds += time.perf_counter() - t0
        flops = self.flops(genome)
        self.store.add_latency(self.key(genome), self.target, self.threads, self.hardware, self.shape,
                               r["latency_ms"], r["runs_ms"], flops)
        self._known[self.key(genome)] = r["latency_ms"]
        self._points.append((flops, genome.nf1, r["latency_ms"]))
        self.model = WidthPowerLaw(self._points, WIDTH_MODEL_POINTS)
        log.info("latency of %s: %.1f ms (%s, %d thread(s))", genome.to_dict(), r["latency_ms"], self.hardware,
                 self.threads)
        return r["latency_ms"]

    def describe(self) -> dict:
        """Where and how latencies are measured, for the run's meta and reports."""
        return {"target": self.target, "threads": self.threads, "hardware": self.hardware, "shape": self.shape,
                "patch": list(self.problem.patch_size), "runs": self.runs, "measured": len(self._known),
                "model": self.model.to_dict() if self.model.ready else None,
                "cpu_count": os.cpu_count()}
