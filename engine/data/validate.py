"""Checks of one case: headers first (cheap), then every voxel, collecting problems and statistics.

``check_headers`` opens only the headers (shape, channels, geometry), which ``open_dataset`` does
for every case. ``inspect_case`` reads every voxel and returns the problems together with the
case's fingerprint entry (shape, spacing and crop in the canonical orientation, foreground intensity
statistics, voxel counts per label), which the plan and ``emonas check`` use. ``to_ras``,
``integer_labels`` and ``label_values_present`` prepare a case for display the same way.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from engine.data.io import Image, affine_spacing, read_header, read_image, read_label, same_geometry
from engine.data.layouts import Case, FileProblem
from engine.errors import DataError

#: Foreground intensities kept per case and channel for the dataset-wide statistics.
SAMPLES_PER_CASE = 1000


@dataclass
class CaseReport:
    case_id: str
    problems: list[FileProblem] = field(default_factory=list)
    fingerprint: dict | None = None

    @property
    def fatal(self) -> bool:
        return any(p.fatal for p in self.problems)


def ras_ornt(affine: np.ndarray) -> np.ndarray:
    """The nibabel orientation transform from an image's voxel axes to RAS (flips and permutations only)."""
    import nibabel as nib

    return nib.orientations.ornt_transform(nib.io_orientation(affine), nib.orientations.axcodes2ornt("RAS"))


def ras_spacing_shape(affine: np.ndarray, shape) -> tuple[list[float], list[int]]:
    """Spacing and shape along the R, A and S axes after reorienting (no resampling)."""
    ornt = ras_ornt(affine)
    sp, sh = [0.0] * 3, [0] * 3
    for src, (dst, _) in enumerate(ornt):
        sp[int(dst)] = affine_spacing(affine)[src]
        sh[int(dst)] = int(shape[src])
    return sp, sh


def reorient(arr: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Apply a nibabel orientation transform to the spatial axes of (X, Y, Z) or (C, X, Y, Z)."""
    import nibabel as nib

    if arr.ndim == 3:
        return np.ascontiguousarray(nib.orientations.apply_orientation(arr, ornt))
    moved = np.moveaxis(arr, 0, -1)
    return np.ascontiguousarray(np.moveaxis(nib.orientations.apply_orientation(moved, ornt), -1, 0))


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``array`` ((X, Y, Z) or (C, X, Y, Z) on the grid of ``affine``) turned to the closest RAS axes
    (flips and axis order only, no resampling), and its spacing along R, A and S."""
    spacing, _ = ras_spacing_shape(affine, array.shape[-3:])
    return reorient(array, ras_ornt(affine)), tuple(spacing)


def integer_labels(raw: np.ndarray, path) -> np.ndarray:
    """A label map's values as integers: uint8 when they all lie in 0..255, else int32.

    Raises ``DataError`` naming ``path`` for NaN or infinite values, non-integer values or a data type
    that is not a number."""
    msg = _label_type_problem(raw)
    if msg:
        raise DataError(path, msg)
    small = raw.size == 0 or (raw.min() >= 0 and raw.max() <= 255)
    return raw.astype(np.uint8 if small else np.int32, copy=False)


def label_values_present(labels: np.ndarray) -> list[int]:
    """The non-zero values present in an integer label map, ascending."""
    if labels.dtype == np.uint8:  # a histogram is much faster than sorting for the common case
        return [int(v) for v in np.flatnonzero(np.bincount(labels.ravel(), minlength=1)) if v]
    return [int(v) for v in np.unique(labels) if v]


def _dims_problem(path, shape) -> str | None:
    if min(shape) < 2:
        return f"2D image of shape {tuple(shape)} (a single slice) where a 3D image is expected"
    return None


def check_headers(case: Case, n_modalities: int) -> list[FileProblem]:
    """Problems visible in the headers: unreadable files, channel count, 2D images, image/label grids."""
    cid = case.case_id
    headers, problems = [], []
    for p in case.image_paths:
        try:
            headers.append(read_header(p))
        except DataError as exc:
            problems.append(FileProblem(exc.path or str(p), exc.problem, True, cid))
    if problems:
        return problems
    ref = headers[0]
    msg = _dims_problem(ref.path, ref.shape)
    if msg:
        problems.append(FileProblem(str(ref.path), msg, True, cid))
    channels = sum(h.channels for h in headers)
    if channels != n_modalities:
        problems.append(FileProblem(str(ref.path), f"image has {channels} channel(s) but the dataset declares "
                                f"{n_modalities} modalit{'y' if n_modalities == 1 else 'ies'}", True, cid))
    for h in headers[1:]:
        if ref.exact_geometry and h.exact_geometry and not same_geometry(ref.affine, h.affine, ref.shape, h.shape):
            problems.append(FileProblem(str(h.path), f"channel grid differs from {ref.path.name} "
                                    f"(shape {h.shape} vs {ref.shape})", True, cid))
    if case.label_path is not None:
        try:
            lh = read_header(case.label_path)
        except DataError as exc:
            problems.append(FileProblem(exc.path or str(case.label_path), exc.problem, True, cid))
            return problems
        if lh.channels != 1:
            problems.append(FileProblem(str(lh.path), f"label map has {lh.channels} channels; expected one 3D volume", True, cid))
        elif tuple(lh.shape) != tuple(ref.shape):
            problems.append(FileProblem(str(lh.path), f"label shape {lh.shape} differs from image shape {ref.shape}", True, cid))
        elif ref.exact_geometry and lh.exact_geometry and not same_geometry(ref.affine, lh.affine, ref.shape, lh.shape):
            problems.append(FileProblem(str(lh.path), "label geometry (spacing, origin or orientation) differs from "
                                    f"the image's (spacing {_fmt(lh.spacing)} vs {_fmt(ref.spacing)})", True, cid))
    return problems


def _fmt(v) -> str:
    return "x".join(f"{x:.3g}" for x in v)


def read_case_images(case: Case) -> Image:
    """All of a case's image files as one multi-channel Image (float32), channels in file order."""
    images = [read_image(p, dtype=np.float32) for p in case.image_paths]
    if len(images) == 1:
        return images[0]
    ref = images[0]
    for im in images[1:]:
        if not same_geometry(ref.affine, im.affine, ref.shape, im.shape):
            raise DataError(im.path, f"channel grid differs from {ref.path.name if ref.path else 'the first channel'}")
    return Image(np.concatenate([im.array for im in images]), ref.affine, ref.path, ref.format, dict(ref.meta))


def inspect_case(case: Case, modalities: list[str], labels: dict[str, int]) -> CaseReport:
    """Read every voxel of ``case``: its problems and, when usable, its fingerprint entry.

    Running out of memory on a case is a fatal problem of that case, naming its file."""
    try:
        return _inspect_case(case, modalities, labels)
    except MemoryError:
        return CaseReport(case.case_id, [FileProblem(str(case.image_paths[0]), "out of memory reading this case", True,
                                                 case.case_id)])


def _inspect_case(case: Case, modalities: list[str], labels: dict[str, int]) -> CaseReport:
    cid = case.case_id
    report = CaseReport(cid, check_headers(case, len(modalities)))
    if report.fatal:
        return report
    try:
        image = read_case_images(case)
    except DataError as exc:
        report.problems.append(FileProblem(exc.path or str(case.image_paths[0]), exc.problem, True, cid))
        return report
    src = str(case.image_paths[0])
    finite = np.isfinite(image.array)
    if not finite.all():
        n_bad = int(image.array.size - np.count_nonzero(finite))
        report.problems.append(FileProblem(src, f"{n_bad} NaN or infinite intensities", True, cid))
    label = None
    if case.label_path is not None:
        try:
            raw, lab_img = read_label(case.label_path)
        except DataError as exc:
            report.problems.append(FileProblem(exc.path or str(case.label_path), exc.problem, True, cid))
            return report
        if not same_geometry(image.affine, lab_img.affine, image.shape, lab_img.shape):
            report.problems.append(FileProblem(str(case.label_path), "label geometry (shape, spacing, origin or "
                                           "orientation) differs from the image's", True, cid))
            return report
        label, msg = _check_label_values(raw, labels)
        if msg:
            report.problems.append(FileProblem(str(case.label_path), msg, True, cid))
            label = None
    if report.fatal:
        return report
    counts = {}
    if label is not None:
        bc = np.bincount(label.ravel(), minlength=256)
        counts = {name: int(bc[v]) for name, v in labels.items()}
        if sum(c for name, c in counts.items() if labels[name] != 0) == 0:
            report.problems.append(FileProblem(str(case.label_path), "label volume is empty (background only)", False, cid))
    report.fingerprint = _fingerprint(image, label, counts, cid)
    if label is not None:
        from engine.data.mirror import label_moments

        report.fingerprint["label_moments"] = label_moments(label, labels, image.spacing, ras_ornt(image.affine))
    return report


def _check_label_values(raw: np.ndarray, labels: dict[str, int]) -> tuple[np.ndarray | None, str | None]:
    """The label map as uint8 label values, or a message on non-integer or undeclared values."""
    msg = _label_type_problem(raw)
    if msg:
        return None, msg
    values = np.unique(raw)
    undeclared = sorted(int(v) for v in values if int(v) not in set(labels.values()))
    if undeclared:
        shown = ", ".join(str(v) for v in undeclared[:8]) + (" ..." if len(undeclared) > 8 else "")
        return None, f"label values {shown} not declared (declared: {', '.join(str(v) for v in labels.values())})"
    return raw.astype(np.uint8), None


def _label_type_problem(raw: np.ndarray) -> str | None:
    """Why ``raw`` cannot be a label map (NaN, non-integer values, a non-numeric type), or None."""
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all():
            return "label map contains NaN or infinite values"
        frac = raw != np.round(raw)
        if frac.any():
            example = float(raw[frac].flat[0])
            return f"non-integer label values (e.g. {example:g}) in {int(frac.sum())} voxels"
    elif raw.dtype.kind not in "iub":
        return f"label map of data type {raw.dtype} is not integer"
    return None


def nonzero_bbox(array: np.ndarray) -> list[list[int]]:
    """[[lo, hi), ...] of the voxels non-zero in any channel of (C, X, Y, Z) ``array`` (whole grid if none)."""
    mask = np.any(array != 0, axis=0)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        box.append([int(idx[0]), int(idx[-1]) + 1] if idx.size else [0, int(mask.shape[axis])])
    return box


def _fingerprint(image: Image, label: np.ndarray | None, counts: dict, cid: str) -> dict:
    spacing, shape = ras_spacing_shape(image.affine, image.shape)
    box = nonzero_bbox(image.array)
    crop = [hi - lo for lo, hi in box]
    ornt = ras_ornt(image.affine)
    crop_ras = [0] * 3
    for src, (dst, _) in enumerate(ornt):
        crop_ras[int(dst)] = crop[src]
    fg = label > 0 if label is not None and label.any() else np.any(image.array != 0, axis=0)
    rng = np.random.default_rng(zlib.crc32(cid.encode()))  # same sample for the same case, every run
    stats = []
    for c in range(image.channels):
        vals = image.array[c][fg]
        if vals.size == 0:
            vals = image.array[c].ravel()
        sample = rng.choice(vals, size=min(SAMPLES_PER_CASE, vals.size), replace=False) if vals.size else vals
        stats.append({
            "mean": float(vals.mean()), "std": float(vals.std()),
            "p00_5": float(np.percentile(vals, 0.5)), "p99_5": float(np.percentile(vals, 99.5)),
            "sample": [float(v) for v in sample],
        })
    return {
        "case_id": cid,
        "shape": list(image.shape),
        "spacing": list(image.spacing),
        "orientation": image.orientation,
        "ras_shape": shape,
        "ras_spacing": spacing,
        "crop_shape": crop_ras,
        "intensity": stats,
        "voxel_counts": counts,
    }
