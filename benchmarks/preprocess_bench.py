"""Preprocessing a generated dataset in one process against two, side by side in one run.

    python benchmarks/preprocess_bench.py [--cases 120] [--shape 112,112,56] [--rounds 2] [--json]

Writes an MSD dataset of ``--cases`` scans (smooth random anatomy, three labels, spacings varied around
0.9 x 0.9 x 2.5 mm so that every case is resampled to the plan's spacing), plans it, then preprocesses
it into empty caches with ``preprocess_dataset(workers=1)`` and ``workers=2``, alternately for
``--rounds`` rounds (so a change of load on a shared machine hits both alike). Prints each time,
the ratio of the medians, that both caches hold the same bytes, and the load average before and after
(``os.getloadavg``: on a shared machine other work competes for the same cores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("EMONAS_NO_PROGRESS", "1")

import numpy as np  # noqa: E402


def write_dataset(root: Path, n: int, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """An MSD dataset of ``n`` generated cases (NIfTI), every case on its own grid."""
    from scipy import ndimage

    from engine.data.io import write_image

    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    base = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 3)
    training = []
    for i in range(n):
        radius = (grid ** 2).sum(0) * rng.uniform(0.9, 1.1)
        inside = radius < 0.8
        label = np.where(radius < 0.25, 2, np.where(inside, 1, 0)).astype(np.uint8)
        noise = np.roll(base, shift=tuple(rng.integers(0, 8, 3)), axis=(0, 1, 2))
        image = np.where(inside, 300.0 + 150.0 * label + 400.0 * noise, 0.0).astype(np.float32)
        spacing = (rng.uniform(0.8, 1.0), rng.uniform(0.8, 1.0), rng.uniform(2.2, 2.8))
        affine = np.diag([*spacing, 1.0])
        cid = f"case_{i:03d}"
        write_image(root / "imagesTr" / f"{cid}.nii.gz", image, affine)
        write_image(root / "labelsTr" / f"{cid}.nii.gz", label, affine)
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "name": "PreprocessBench", "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "tissue", "2": "core"},
        "numTraining": n, "training": training,
    }))
    return root


def cache_digest(cache: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(cache.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(cache)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=120)
    ap.add_argument("--shape", default="112,112,56", help="voxels per case, X,Y,Z")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of one and two processes")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))

    from engine.data import make_plan, open_dataset
    from engine.data.preprocess import preprocess_dataset

    work = Path(tempfile.mkdtemp(prefix="emonas-prep-bench-"))
    try:
        t0 = time.perf_counter()
        ds = open_dataset(write_dataset(work / "data", args.cases, shape))
        plan = make_plan(ds)
        setup_s = time.perf_counter() - t0
        load_before = os.getloadavg()
        times: dict[int, list[float]] = {1: [], 2: []}
        digests: dict[int, str] = {}
        for r in range(args.rounds):
            for workers in (1, 2):
                cache = work / f"cache-{workers}-{r}"
                t = time.perf_counter()
                preprocess_dataset(ds, plan, cache_dir=cache, workers=workers)
                times[workers].append(time.perf_counter() - t)
                digests[workers] = cache_digest(cache)
                shutil.rmtree(cache)
                print(f"round {r + 1}: {workers} process(es) {times[workers][-1]:.2f} s", file=sys.stderr, flush=True)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    result = {
        "cases": args.cases, "shape": list(shape), "target_spacing": [float(v) for v in plan.target_spacing],
        "rounds": args.rounds, "one_process_s": times[1], "two_processes_s": times[2],
        "speedup": one / two, "same_cache_bytes": digests[1] == digests[2],
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in load_after],
        "dataset_setup_s": setup_s,
    }
    print(f"{args.cases} cases of {shape[0]}x{shape[1]}x{shape[2]} voxels to {result['target_spacing']} mm: "
          f"one process {one:.2f} s, two {two:.2f} s (medians of {args.rounds}): x{result['speedup']:.2f}; "
          f"caches identical: {result['same_cache_bytes']}; {result['cpus']} CPUs, load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
