#!/usr/bin/env python3
"""Segment a scan with an exported EMONAS-Net model folder, without EMONAS Studio.

Needs only onnxruntime, numpy and scipy, plus nibabel to read and write NIfTI files:

    pip install onnxruntime numpy scipy nibabel
    python standalone_predict.py MODEL_DIR OUT.nii.gz SCAN.nii.gz [SCAN_MODALITY2.nii.gz ...]

Give one scan per modality, in the order model.json lists under "modalities". Everything the
network expects is read from model.json: the canonical orientation (RAS), the target spacing, the
crop to the non-zero region, the resampling order (and nnU-Net's "separate z" for thick slices),
the normalization of each modality, the patch
size and overlap of the sliding window, the Gaussian weighting, test-time mirroring, the
post-processing and the label values. The label map is written on the input scan's own grid (same
shape, same affine), so it overlays the scan voxel for voxel.

The steps below follow the engine's own pipeline (engine.data.preprocess and
engine.infer.predictor) so that the label maps agree with `emonas predict`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
from scipy import ndimage


# ---------------------------------------------------------------------------------------- model folder
def load_model(model_dir: Path) -> tuple[dict, ort.InferenceSession]:
    """model.json and an ONNX Runtime session, after checking model.onnx against its SHA-256."""
    meta = json.loads((model_dir / "model.json").read_text())
    if meta.get("format") != "emonas-model" or meta.get("schema_version") != 1:
        raise SystemExit(f"{model_dir}: not a model folder this script knows (schema_version 1)")
    onnx_path = model_dir / "model.onnx"
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    if digest != meta["files"]["model.onnx"]["sha256"]:
        raise SystemExit(f"{onnx_path}: checksum mismatch with model.json; refusing to run it")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return meta, session


# ---------------------------------------------------------------------------------------- preprocessing
def zoom_to(array: np.ndarray, shape, order: int) -> np.ndarray:
    """Resample a 3D array to ``shape``; voxels are areas, so the grid's outer edges stay aligned."""
    shape = tuple(int(s) for s in shape)
    if array.shape == shape:
        return array.copy()
    factors = [n / o for n, o in zip(shape, array.shape)]
    return ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)


def slice_axis(source_spacing, target_spacing):
    """The thick slice axis (nnU-Net's rule): the source's coarsest axis when max / min spacing > 3,
    else the target's when that is so anisotropic; None otherwise or when two axes tie."""
    for spacing in (source_spacing, target_spacing):
        sp = np.asarray(spacing, float)
        if sp.max() / sp.min() > 3.0:
            coarsest = np.flatnonzero(sp == sp.max())
            return int(coarsest[0]) if coarsest.size == 1 else None
    return None


def resample(array: np.ndarray, shape, order: int, axis=None) -> np.ndarray:
    """``zoom_to``; with a slice ``axis``, the spline within each slice, then nearest neighbour along it."""
    if axis is None:
        return zoom_to(array, shape, order)
    plane = [int(n) for a, n in enumerate(shape) if a != axis]
    slices = np.stack([zoom_to(s, plane, order) for s in np.moveaxis(array, axis, 0)], axis=axis)
    return zoom_to(slices, shape, 0)


def preprocess(scans: list[nib.Nifti1Image], meta: dict) -> tuple[np.ndarray, dict]:
    """Reorient to RAS, crop to the non-zero region, resample to the target spacing, normalize."""
    pre = meta["preprocessing"]
    affine = scans[0].affine
    image = np.stack([np.asarray(s.dataobj, dtype=np.float32) for s in scans])  # (C, X, Y, Z)
    # 1. reorient to RAS by flipping and permuting axes (no interpolation)
    ornt = nib.orientations.ornt_transform(nib.io_orientation(affine), nib.orientations.axcodes2ornt("RAS"))
    image = np.stack([nib.orientations.apply_orientation(ch, ornt) for ch in image])
    voxel_sizes = np.linalg.norm(affine[:3, :3], axis=0)
    spacing = [0.0] * 3
    for src, (dst, _) in enumerate(ornt):
        spacing[int(dst)] = float(voxel_sizes[src])
    ras_shape = list(image.shape[1:])
    # 2. crop to the box of voxels that are non-zero in any channel
    if pre.get("crop_to_nonzero"):
        nonzero = np.any(image != 0, axis=0)
        box = []
        for axis in range(3):
            idx = np.flatnonzero(nonzero.any(axis=tuple(a for a in range(3) if a != axis)))
            box.append([int(idx[0]), int(idx[-1]) + 1] if idx.size else [0, ras_shape[axis]])
    else:
        box = [[0, s] for s in ras_shape]
    image = image[(slice(None),) + tuple(slice(lo, hi) for lo, hi in box)]
    cropped = [hi - lo for lo, hi in box]
    # 3. resample to the target spacing
    shape = [max(1, int(round(n * s / t))) for n, s, t in zip(cropped, spacing, pre["target_spacing"])]
    resampling = pre.get("resampling", {})
    order = int(resampling.get("image_order", 3))
    axis = slice_axis(spacing, pre["target_spacing"]) if resampling.get("separate_z", False) else None
    resampled = np.stack([resample(ch, shape, order, axis) for ch in image])
    mask = resample(np.any(image != 0, axis=0).astype(np.float32), shape, 1, axis) >= 0.5
    # 4. normalize each modality as the model was trained
    out = np.empty_like(resampled, dtype=np.float32)
    for c, norm in enumerate(pre["normalization"]):
        x = resampled[c].astype(np.float32)
        if norm["scheme"] == "ct":
            x = (np.clip(x, norm["clip_low"], norm["clip_high"]) - norm["mean"]) / max(norm["std"], 1e-8)
        elif norm["scheme"] == "zscore":
            use = mask if norm.get("use_nonzero_mask") and mask.any() else np.ones_like(mask)
            values = x[use]
            x = (x - values.mean()) / max(float(values.std()), 1e-8)
            if norm.get("use_nonzero_mask"):
                x[~mask] = 0.0
        if norm.get("clip_sigma"):
            x = np.clip(x, -float(norm["clip_sigma"]), float(norm["clip_sigma"]))
        out[c] = x
    geometry = {"affine": affine, "source_shape": scans[0].shape[:3], "ornt": ornt, "ras_shape": ras_shape,
                "box": box, "cropped": cropped, "separate_z_axis": axis}
    return np.ascontiguousarray(out), geometry


# ---------------------------------------------------------------------------------------- sliding window
def gaussian_weights(patch) -> np.ndarray:
    """Gaussian importance of each voxel of a patch (sigma = patch / 8), at least 1e-3."""
    w = np.ones((), dtype=np.float32)
    for n in patch:
        x = np.arange(n, dtype=np.float32) - (n - 1) / 2.0
        g = np.exp(x**2 / (-2.0 * (n * 0.125) ** 2)).astype(np.float32)
        w = np.multiply.outer(w, g)
    return np.clip(w, max(float(w.min()), 1e-3), None).astype(np.float32)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    step = patch if patch == size else max(int(patch * (1 - overlap)), 1)
    count = next((d for d in range(math.ceil(size / step)) if d * step + patch >= size), 0) + 1
    return [min(i * step, size - patch) for i in range(count)]


def sliding_window(session: ort.InferenceSession, image: np.ndarray, meta: dict) -> np.ndarray:
    """Logits (K, X, Y, Z) of a preprocessed volume (C, X, Y, Z), windows blended by their weights."""
    inf = meta["inference"]
    patch = [int(p) for p in inf["patch_size"]]
    shape = image.shape[1:]
    # volumes smaller than the patch are padded with zeros (half on each side) and cropped back
    pad = [max(p - s, 0) for p, s in zip(patch, shape)]
    padded = np.pad(image, [(0, 0)] + [(d // 2, d - d // 2) for d in pad])
    size = padded.shape[1:]
    weights = gaussian_weights(patch) if inf["gaussian"] else np.ones(patch, np.float32)
    k = int(meta["output"]["classes"])
    total = np.zeros((k, *size), np.float32)
    count = np.zeros(size, np.float32)
    input_name, output_name = meta["input"]["name"], meta["output"]["name"]
    for sx, sy, sz in itertools.product(*(window_starts(s, p, inf["overlap"]) for s, p in zip(size, patch))):
        region = (slice(sx, sx + patch[0]), slice(sy, sy + patch[1]), slice(sz, sz + patch[2]))
        x = padded[(slice(None),) + region][None]
        logits = session.run([output_name], {input_name: np.ascontiguousarray(x)})[0][0]
        total[(slice(None),) + region] += logits * weights
        count[region] += weights
    out = total / count
    return out[(slice(None),) + tuple(slice(d // 2, d // 2 + s) for d, s in zip(pad, shape))]


def predict_logits(session: ort.InferenceSession, image: np.ndarray, meta: dict) -> np.ndarray:
    """Sliding-window logits, averaged over the flips of the mirrored axes (test-time augmentation)."""
    axes = [int(a) for a in meta["inference"].get("mirror_axes") or []]
    flips = [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    total = None
    for flip in flips:
        dims = tuple(a + 1 for a in flip)
        x = np.ascontiguousarray(np.flip(image, dims)) if dims else image
        out = sliding_window(session, x, meta)
        out = np.flip(out, dims) if dims else out
        total = out if total is None else total + out
    return total / len(flips)


# ---------------------------------------------------------------------------------------- back to the scan
def keep_largest_component(labels: np.ndarray, classes) -> np.ndarray:
    out = labels.copy()
    structure = ndimage.generate_binary_structure(3, 3)
    for k in classes:
        mask = out == k
        comp, n = ndimage.label(mask, structure=structure)
        if n > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            out[mask & (comp != int(sizes.argmax()))] = 0
    return out


def resize_classes(labels: np.ndarray, shape, num_classes: int, axis=None, mode: str = "linear_per_label") -> np.ndarray:
    """Resample class indices: each class's mask linearly (nearest along a slice ``axis``), kept where
    >= 0.5; or the indices by nearest neighbour when ``mode`` is "nearest"."""
    if labels.shape == tuple(shape):
        return labels.copy()
    if mode == "nearest":
        return resample(labels.astype(np.uint8), shape, 0, axis)
    out = np.zeros(shape, np.uint8)
    for c in range(1, num_classes):
        mask = labels == c
        if mask.any():
            out[resample(mask.astype(np.float32), shape, 1, axis) >= 0.5] = c
    return out


def to_source_grid(classes: np.ndarray, geometry: dict, meta: dict) -> np.ndarray:
    """Undo the resampling, the crop and the reorientation; class indices become label values."""
    k = int(meta["output"]["classes"])
    mode = meta["preprocessing"].get("resampling", {}).get("label", "linear_per_label")
    small = resize_classes(classes, geometry["cropped"], k, geometry["separate_z_axis"], mode)
    full = np.zeros(geometry["ras_shape"], np.uint8)
    full[tuple(slice(lo, hi) for lo, hi in geometry["box"])] = small
    inverse = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.io_orientation(geometry["affine"]))
    back = nib.orientations.apply_orientation(full, inverse)
    values = np.asarray(meta["class_values"])
    return values.astype(np.uint8 if values.max() <= 255 else np.int16)[back]


def segment(model_dir: Path, scan_paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """The label map (X, Y, Z) of a scan on its own grid, and that grid's affine."""
    meta, session = load_model(model_dir)
    if len(scan_paths) != len(meta["modalities"]):
        raise SystemExit(f"the model expects {len(meta['modalities'])} scans: {', '.join(meta['modalities'])}")
    scans = [nib.load(str(p)) for p in scan_paths]
    image, geometry = preprocess(scans, meta)
    logits = predict_logits(session, image, meta)
    classes = logits.argmax(0).astype(np.uint8)
    if meta["inference"]["keep_largest_component"]:
        classes = keep_largest_component(classes, range(1, int(meta["output"]["classes"])))
    return to_source_grid(classes, geometry, meta), geometry["affine"]


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    model_dir, out_path, scans = Path(argv[0]), Path(argv[1]), [Path(p) for p in argv[2:]]
    # the usual slips, each one line: a missing file, or the output named where a scan is (never overwrite it)
    problems = [f"{model_dir}: no model.json (not an exported model folder)"] if not (model_dir / "model.json").is_file() else []
    problems += [f"{p}: no such scan" for p in scans if not p.is_file()]
    if any(out_path.resolve() == p.resolve() for p in scans):
        problems.append(f"{out_path}: the output would overwrite an input scan (arguments: MODEL_DIR OUT SCAN...)")
    if problems:
        print(f"error: {problems[0]}", file=sys.stderr)
        return 2
    labels, affine = segment(model_dir, scans)
    out = nib.Nifti1Image(labels, affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    nib.save(out, str(out_path))
    print(f"wrote {out_path}: {labels.shape}, labels {sorted(np.unique(labels).tolist())}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
