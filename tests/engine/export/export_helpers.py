"""Real training folders for the export tests: a genome's network, its state_dict and training.json."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.data.plan import Plan
from engine.genome import Genome
from engine.network import build_network

SMALL = Genome(1, 2, 3, "p3d_3x3x3", "identity", "conv2d_5x5x1", "conv3d_3x3x3", 5, 8, 1e-3)
LABELS = {"background": 0, "grey matter": 1, "white matter": 2}


def make_training_folder(
    path: Path,
    genome: Genome = SMALL,
    labels: dict[str, int] = LABELS,
    modalities: tuple[str, ...] = ("T1",),
    plan: dict | None = None,
    seed: int = 0,
    net: torch.nn.Module | None = None,
) -> Path:
    """A training folder in the documented format, with randomly initialised (seeded) weights."""
    path.mkdir(parents=True, exist_ok=True)
    if net is None:
        torch.manual_seed(seed)
        net = build_network(genome, len(modalities), len(labels))
    torch.save(net.state_dict(), path / "weights.pt")
    if plan is None:
        plan = Plan(
            target_spacing=(1.0, 1.0, 1.0),
            patch_size=(32, 32, 32),
            batch_size=2,
            normalization=[{"modality": m, "scheme": "zscore", "use_nonzero_mask": False} for m in modalities],
            pool_schedule=[(2, 2, 2)] * 4,
            modalities=list(modalities),
            labels=dict(labels),
        ).to_dict()
    meta = {
        "schema_version": 1,
        "genome": genome.to_dict(),
        "in_channels": len(modalities),
        "num_classes": len(labels),
        "labels": labels,
        "modalities": list(modalities),
        "plan": plan,
        "pool_sizes": [list(p) for p in net.arch.pool_sizes],
        "config": {"epochs": 1, "seed": seed},
        "metrics": {"dice": {k: 0.5 for k in list(labels)[1:]}},
        "best_epoch": 1,
    }
    (path / "training.json").write_text(json.dumps(meta, indent=2))
    return path


def dicom_series(folder: Path, n: int = 12) -> Path:
    """A real MR series: pydicom's MR_small slice repeated along its normal with new UIDs."""
    import copy

    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    src = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    folder.mkdir(parents=True)
    orient = np.array([float(v) for v in src.ImageOrientationPatient])
    normal = np.cross(orient[:3], orient[3:])
    pos0 = np.array([float(v) for v in src.ImagePositionPatient])
    series = generate_uid()
    base = src.pixel_array.astype(np.float64)
    for k in range(n):
        ds = copy.deepcopy(src)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos0 + k * 2.5 * normal]
        ds.SliceThickness = 2.5
        pixels = base * (1 + 0.3 * np.sin(k / 2)) * (k not in (0, n - 1))
        ds.PixelData = pixels.astype(src.pixel_array.dtype).tobytes()
        ds.save_as(folder / f"im{(k * 5) % n:03d}.dcm")  # file order differs from slice order
    return folder
