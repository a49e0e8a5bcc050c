"""Segmentation metrics per case and per class, in millimetres (METHOD.md section 6).

For each foreground class: Dice similarity coefficient, Hausdorff distance (HD, the maximum of both
directions' surface distances), HD95 (the larger of the two directions' 95th percentiles, as MONAI
and the surface-distance package compute it) and the average surface distance (ASD, the mean over
both directions' distances pooled together, MONAI's ``symmetric=True``).

Surfaces are the mask voxels that touch the background through a face (the mask minus its
erosion with the 6-connected cross, like MONAI's ``get_mask_edges``); distances run between voxel
centres and use the voxel spacing, so anisotropic scans are measured in millimetres.

Empty masks, the conventions of the field (BraTS, MetricsReloaded's recommendations):

- reference and prediction both empty: Dice 1, HD = HD95 = ASD = 0 (a correct "absent");
- exactly one of them empty: Dice 0, and HD, HD95 and ASD take the worst possible value, the
  length of the image diagonal in millimetres (BraTS does the same), so that a missed or a
  hallucinated structure is penalized rather than silently dropped from the mean.

``summarize`` gives the mean and standard deviation over cases (population std, ``ddof=0``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from engine.errors import DataError

log = logging.getLogger(__name__)

METRIC_NAMES: tuple[str, ...] = ("dice", "hd", "hd95", "asd")


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty."""
    pred = np.asarray(pred, bool)
    ref = np.asarray(ref, bool)
    denom = int(pred.sum()) + int(ref.sum())
    if denom == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / denom


def _surface(mask: np.ndarray) -> np.ndarray:
    # border_value=0: a mask touching the image border has a surface there too
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``pred`` to ``ref``'s surface, and the reverse.

    Both masks must be non-empty.
    """
    s_pred, s_ref = _surface(np.asarray(pred, bool)), _surface(np.asarray(ref, bool))
    spacing = tuple(float(s) for s in spacing)
    # Only the bounding box of both surfaces matters for the distance transform.
    both = s_pred | s_ref
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(both))
    s_pred, s_ref = s_pred[box], s_ref[box]
    dt_ref = ndimage.distance_transform_edt(~s_ref, sampling=spacing)
    dt_pred = ndimage.distance_transform_edt(~s_pred, sampling=spacing)
    return dt_ref[s_pred], dt_pred[s_ref]


def worst_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The image diagonal in mm: the distance given to a structure that one side misses."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """Dice, HD, HD95 and ASD (mm) of two boolean masks, with the empty-mask conventions above."""
    pred = np.asarray(pred, bool)
    ref = np.asarray(ref, bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    has_p, has_r = bool(pred.any()), bool(ref.any())
    if not has_p and not has_r:
        return {"dice": 1.0, "hd": 0.0, "hd95": 0.0, "asd": 0.0}
    if not has_p or not has_r:
        w = worst_distance(pred.shape, spacing)
        return {"dice": 0.0, "hd": w, "hd95": w, "asd": w}
    d_pr, d_rp = surface_distances(pred, ref, spacing)
    return {
        "dice": dice(pred, ref),
        "hd": float(max(d_pr.max(), d_rp.max())),
        "hd95": float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))),
        "asd": float(np.concatenate([d_pr, d_rp]).mean()),
    }


def case_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], classes: Mapping[str, int] | Sequence[int],
    ignore: int | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of one case for each foreground class: ``{class name: {"dice", "hd", "hd95", "asd"}}``.

    ``classes`` maps names to the label values to compare (or is a list of values, named by
    their string). Label maps are integer arrays of the same shape. ``ignore`` is the value of
    nnU-Net's ``ignore`` label in ``ref``: its voxels belong to no class in either map, so what the
    prediction holds there changes no metric.
    """
    items = classes.items() if isinstance(classes, Mapping) else ((str(v), v) for v in classes)
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    keep = ref != ignore if ignore is not None else True
    return {str(name): binary_metrics((pred == value) & keep, (ref == value) & keep, spacing) for name, value in items}


def summarize(per_case: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and standard deviation over cases: ``{class: {metric: {"mean", "std", "n"}}}``."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    cases = list(per_case.values())
    if not cases:
        return out
    for name in cases[0]:
        out[name] = {}
        for metric in METRIC_NAMES:
            vals = np.array([c[name][metric] for c in cases if name in c], dtype=float)
            out[name][metric] = {"mean": float(vals.mean()), "std": float(vals.std()), "n": int(vals.size)}
    return out


@dataclass
class FolderEvaluation:
    """Metrics of a folder of predictions against a folder of references."""

    per_case: dict[str, dict[str, dict[str, float]]]
    summary: dict[str, dict[str, dict[str, float]]]
    labels: dict[str, int]

    def to_dict(self) -> dict:
        return {"labels": self.labels, "summary": self.summary, "per_case": self.per_case}

    def write_csv(self, path: str | Path) -> tuple[Path, Path]:
        """Write one row per case and label to ``path`` and the mean and std per label to
        ``STEM_summary.csv`` beside it (distances in mm); returns both paths.

        The summary's ``foreground_mean`` rows average each case's labels first, as nnU-Net's
        ``summary.json`` does."""
        import csv
        import os

        path = Path(path)
        summary_path = path.with_name(_csv_stem(path) + "_summary.csv")
        head = ["dice", "hd_mm", "hd95_mm", "asd_mm"]
        rows = [["case", "label", "value", *head]]
        for case, per_label in self.per_case.items():
            for name, m in per_label.items():
                rows.append([case, name, self.labels.get(name, ""), *(_fmt(m[k]) for k in METRIC_NAMES)])
        fg = {case: {"foreground_mean": {k: float(np.mean([m[k] for m in per_label.values()])) for k in METRIC_NAMES}}
              for case, per_label in self.per_case.items() if per_label}
        summary = {**self.summary, **summarize(fg)}
        srows = [["label", "value", *(f"{k}_{s}" for k in head for s in ("mean", "std")), "cases"]]
        for name, m in summary.items():
            cells = [_fmt(m[k][s]) for k in METRIC_NAMES for s in ("mean", "std")]
            srows.append([name, self.labels.get(name, ""), *cells, m["dice"]["n"]])
        for target, table in ((path, rows), (summary_path, srows)):
            tmp = target.with_name(f".{target.name}.tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows(table)
            os.replace(tmp, target)  # a reader never sees half a table
        return path, summary_path

    def table(self) -> str:
        """A plain-text table: one row per class, mean ± std of each metric."""
        head = f"{'class':<16}{'Dice':>16}{'HD (mm)':>18}{'HD95 (mm)':>18}{'ASD (mm)':>18}"
        rows = [head, "-" * len(head)]
        for name, m in self.summary.items():
            cells = [f"{m[k]['mean']:.4f} ± {m[k]['std']:.4f}" if k == "dice" else f"{m[k]['mean']:.2f} ± {m[k]['std']:.2f}" for k in METRIC_NAMES]
            rows.append(f"{name:<16}{cells[0]:>16}{cells[1]:>18}{cells[2]:>18}{cells[3]:>18}")
        rows.append(f"{len(self.per_case)} case(s)")
        return "\n".join(rows)


def _csv_stem(path: Path) -> str:
    return path.name[:-4] if path.name.lower().endswith(".csv") else path.name


def _fmt(value: float) -> str:
    return repr(float(value))


_LABEL_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr")


def _case_name(path: Path) -> str | None:
    name = path.name
    for suffix in _LABEL_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def _label_files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(folder, f"{what} folder does not exist")
    files = {}
    for p in sorted(folder.iterdir()):
        name = _case_name(p)
        if name is not None and p.is_file():
            files[name] = p
    if not files:
        raise DataError(folder, f"{what} folder holds no label maps ({', '.join(_LABEL_SUFFIXES)})")
    return files


def _read_label_image(path: str | Path):
    from engine.data.io import read_label

    arr, img = read_label(path)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(path, "label map holds non-integer values")
        arr = arr.astype(np.int32)
    return arr, img


def in_one_frame(pred, ref, pred_array: np.ndarray | None = None, ref_array: np.ndarray | None = None,
                 tol: float | None = None) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Two label maps on one voxel grid, compared in world space: ``(pred, ref, spacing)`` as (X, Y, Z)
    arrays on the reference's grid and its spacing (mm).

    ``pred`` and ``ref`` are :class:`engine.data.io.Image` (their arrays, or ``pred_array``/``ref_array``
    on their grids). The prediction's axes are permuted and flipped to the reference's (a map stored
    LPS and one stored RAS hold the same labels); then both must cover the same world grid within
    ``tol`` voxels (:data:`engine.data.io.GRID_TOLERANCE`), else ``DataError`` names both geometries.
    Nothing is resampled: metrics on an interpolated map would not be the prediction's.
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    from engine.data.io import GRID_TOLERANCE, describe_grid, same_geometry

    p = np.asarray(pred.array[0] if pred_array is None else pred_array)
    r = np.asarray(ref.array[0] if ref_array is None else ref_array)
    p_aff, r_aff = np.asarray(pred.affine, float), np.asarray(ref.affine, float)
    t = ornt_transform(io_orientation(p_aff), io_orientation(r_aff))
    moved = apply_orientation(p, t)
    moved_aff = p_aff @ inv_ornt_aff(t, p.shape)
    if not same_geometry(moved_aff, r_aff, moved.shape, r.shape, GRID_TOLERANCE if tol is None else tol):
        raise DataError(pred.path, f"not on the reference's world grid ({describe_grid(p.shape, p_aff)}; reference "
                                   f"{ref.path}: {describe_grid(r.shape, r_aff)}); resample one onto the other first")
    return np.ascontiguousarray(moved), r, tuple(float(v) for v in ref.spacing)  # type: ignore[return-value]


def labels_from_file(path: str | Path) -> dict[str, int]:
    """Foreground label names -> values from a JSON file with a ``labels`` object: a training folder's
    ``training.json`` or ``model.json`` ({name: value}), or an MSD ``dataset.json`` ({"1": name}).
    A folder means its training.json, model.json or dataset.json."""
    import json

    path = Path(path)
    if path.is_dir():
        found = [path / n for n in ("training.json", "model.json", "dataset.json") if (path / n).is_file()]
        if not found:
            raise DataError(path, "holds no training.json, model.json or dataset.json to take label names from")
        path = found[0]
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))["labels"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise DataError(path, f"no readable 'labels' object ({type(exc).__name__})") from None
    if not isinstance(labels, dict) or not labels:
        raise DataError(path, "'labels' must be a non-empty object")
    try:
        if all(str(k).isdigit() for k in labels) and not all(isinstance(v, int) for v in labels.values()):
            pairs = {str(v): int(k) for k, v in labels.items()}  # MSD: value -> name
        else:
            pairs = {str(k): int(v) for k, v in labels.items()}
    except (TypeError, ValueError):
        raise DataError(path, "'labels' must map names to integer values") from None
    return {k: v for k, v in pairs.items() if v != 0}


def evaluate_folders(
    pred_dir: str | Path, ref_dir: str | Path, labels: Mapping[str, int] | None = None
) -> FolderEvaluation:
    """Compare every label map in ``pred_dir`` with the one of the same name in ``ref_dir``.

    Files pair by name without extension (``case_001.nii.gz`` ~ ``case_001.nii.gz``); a prediction
    without a reference, or a reference without a prediction, is a ``DataError``. ``labels`` maps
    class names to values; by default every non-zero value found in the references, named by value.
    Each pair is compared in world space (:func:`in_one_frame`): a prediction stored with other axis
    order or flips is reoriented; one on another grid is refused. Spacing comes from the reference.
    A label named ``ignore`` (nnU-Net v2) is no class: its voxels in the references are left out of
    every metric.
    """
    from engine.data.layouts import split_ignore

    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    preds = _label_files(pred_dir, "prediction")
    refs = _label_files(ref_dir, "reference")
    missing = sorted(set(refs) - set(preds))
    if missing:
        raise DataError(pred_dir, f"no prediction for reference case(s) {', '.join(missing[:5])}")
    extra = sorted(set(preds) - set(refs))
    if extra:
        raise DataError(ref_dir, f"no reference for predicted case(s) {', '.join(extra[:5])}")
    loaded = {}
    for name in sorted(refs):
        ref, ref_img = _read_label_image(refs[name])
        pred, pred_img = _read_label_image(preds[name])
        loaded[name] = in_one_frame(pred_img, ref_img, pred, ref)  # world space: axis order and flips agree
    if labels is None:
        values = sorted({int(v) for _, ref, _ in loaded.values() for v in np.unique(ref) if v != 0})
        if not values:
            raise DataError(ref_dir, "references hold no foreground label")
        labels = {str(v): v for v in values}
    labels, ignore = split_ignore({str(k): int(v) for k, v in labels.items()})
    per_case = {name: case_metrics(p, r, s, labels, ignore) for name, (p, r, s) in loaded.items()}
    return FolderEvaluation(per_case=per_case, summary=summarize(per_case), labels=labels)
