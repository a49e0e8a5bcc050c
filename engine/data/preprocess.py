"""Preprocessing by a plan, its on-disk cache, and the inverse back to a scan's own grid.

Steps (nnU-Net's order): reorient to RAS by flipping and permuting axes (no interpolation), crop to
the region that is non-zero in any channel, resample to the plan's spacing (images by spline of
``resampling.image_order``; labels per label, linearly, as nnU-Net's ``resize_segmentation``; with
``resampling.separate_z`` and an anisotropic scan or target, nnU-Net's "separate z": those within
each slice and nearest neighbour along the thick slice axis), normalize each channel. ``properties`` records each step so that :func:`restore_label` undoes them
exactly and a predicted label map overlays the source scan voxel for voxel.

``preprocess_dataset`` stores its arrays as ``.npy`` files in the cache folder and hands them out
memory-mapped. An entry is keyed by the plan's preprocessing fields and each source file's size,
modification time and content hash, so a search over hundreds of candidates preprocesses once and a
replaced file is never served stale.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from engine.atomic import temp_dir_near
from engine.data.cache import cache_root, digest, file_signature, publish_dir
from engine.data.io import Image, as_image, check_voxels, same_geometry
from engine.data.plan import ANISOTROPY
from engine.data.validate import nonzero_bbox, ras_ornt, ras_spacing_shape, reorient
from engine.errors import DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 1


@dataclass
class PreprocessedCase:
    """One case at the plan's spacing: ``image`` float32 (C, X, Y, Z), ``label`` uint8 class indices.

    From ``preprocess_dataset`` both arrays are read-only memory maps: copy before changing them.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    properties: dict


# ---------------------------------------------------------------------------------------- resampling


def _zoom(arr: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    shape = tuple(int(s) for s in shape)
    if tuple(arr.shape) == shape:
        return arr.copy()
    factors = [n / o for n, o in zip(shape, arr.shape)]
    # grid_mode: voxels are areas, so the grid's outer edges stay aligned (as skimage's resize)
    out = ndimage.zoom(arr, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)
    if out.shape != shape:  # pragma: no cover - scipy rounds shape * factor, which gives ``shape``
        raise RuntimeError(f"resampling gave {out.shape}, expected {shape}")
    return out


def slice_axis(source_spacing: Sequence[float], target_spacing: Sequence[float]) -> int | None:
    """The thick slice axis to resample apart, as nnU-Net's ``get_do_separate_z`` / ``get_lowres_axis``.

    The source's coarsest axis when its spacing is anisotropic (max / min > 3), else the target's
    when that one is; None when neither is, or when two axes tie for the coarsest.
    """
    for spacing in (source_spacing, target_spacing):
        sp = np.asarray(spacing, float)
        if sp.max() / sp.min() > ANISOTROPY:
            coarsest = np.flatnonzero(sp == sp.max())
            return int(coarsest[0]) if coarsest.size == 1 else None
    return None


def _resample(arr: np.ndarray, shape: Sequence[int], order: int, axis: int | None = None) -> np.ndarray:
    """``_zoom`` (``axis`` None), or the spline of ``order`` within each slice across ``axis`` and then
    nearest neighbour along ``axis``, so no value is interpolated between thick slices."""
    if axis is None:
        return _zoom(arr, shape, order)
    plane = [int(n) for a, n in enumerate(shape) if a != axis]
    slices = np.stack([_zoom(s, plane, order) for s in np.moveaxis(arr, axis, 0)], axis=axis)
    return _zoom(slices, shape, 0)


def resize_labels(label: np.ndarray, shape: Sequence[int], num_classes: int, mode: str = "linear_per_label",
                  axis: int | None = None) -> np.ndarray:
    """Resample a map of class indices: each class's mask linearly, kept where >= 0.5 (or nearest).

    With ``axis``, linear within each slice across it and nearest along it (see :func:`slice_axis`).
    """
    shape = tuple(int(s) for s in shape)
    if tuple(label.shape) == shape:
        return label.astype(np.uint8, copy=True)
    if mode == "nearest":
        return _resample(label.astype(np.uint8), shape, 0, axis)
    out = np.zeros(shape, np.uint8)
    for c in range(1, num_classes):
        mask = label == c
        if mask.any():
            out[_resample(mask.astype(np.float32), shape, 1, axis) >= 0.5] = c
    return out


def _inverse_ornt(ornt: np.ndarray) -> np.ndarray:
    inv = np.zeros_like(ornt)
    for src, (dst, flip) in enumerate(ornt):
        inv[int(dst)] = [src, flip]
    return inv


# ---------------------------------------------------------------------------------------- images


def _stack(images, n_modalities: int) -> Image:
    imgs = [as_image(im) for im in (images if isinstance(images, (list, tuple)) else [images])]
    if not imgs:
        raise DataError(None, "no image given")
    ref = imgs[0]
    for im in imgs[1:]:
        if not same_geometry(ref.affine, im.affine, ref.shape, im.shape):
            raise DataError(im.path, f"grid differs from the first image's ({im.shape} vs {ref.shape})")
    arr = np.concatenate([np.asarray(im.array, np.float32) for im in imgs]) if len(imgs) > 1 else \
        np.asarray(ref.array, np.float32)
    if arr.shape[0] != n_modalities:
        raise DataError(ref.path, f"{arr.shape[0]} channel(s) given but the plan expects {n_modalities} "
                                  f"modalit{'y' if n_modalities == 1 else 'ies'}")
    if min(ref.shape) < 2:
        raise DataError(ref.path, f"2D image of shape {ref.shape} (a single slice) where a 3D image is expected")
    if not np.isfinite(arr).all():
        raise DataError(ref.path, f"{int(arr.size - np.isfinite(arr).sum())} NaN or infinite intensities")
    return Image(arr, ref.affine, ref.path, ref.format, dict(ref.meta))


def _normalize(arr: np.ndarray, mask: np.ndarray, plan) -> np.ndarray:
    out = np.empty_like(arr, dtype=np.float32)
    for c, norm in enumerate(plan.normalization):
        x = arr[c].astype(np.float32)
        scheme = norm["scheme"]
        if scheme == "ct":
            x = (np.clip(x, norm["clip_low"], norm["clip_high"]) - norm["mean"]) / max(norm["std"], 1e-8)
        elif scheme == "zscore":
            use = mask if norm.get("use_nonzero_mask") and mask.any() else np.ones_like(mask)
            vals = x[use]
            x = (x - vals.mean()) / max(float(vals.std()), 1e-8)
            if norm.get("use_nonzero_mask"):
                x[~mask] = 0.0
        if norm.get("clip_sigma"):
            x = np.clip(x, -float(norm["clip_sigma"]), float(norm["clip_sigma"]))
        out[c] = x
    return out


def resampled_shape(shape, spacing, target, path=None, channels: int = 1,
                    memory_budget_bytes: int | None = None) -> list[int]:
    """The shape of a ``shape`` grid at ``spacing`` resampled to ``target`` spacing; a DataError naming
    ``path`` when it would exceed the voxel limit of the memory budget (checked before any array is made)."""
    exact = [float(n) * float(s) / float(t) for n, s, t in zip(shape, spacing, target)]
    where = f"resampled from {'x'.join(f'{float(s):.3g}' for s in spacing)} mm to the plan's " \
            f"{'x'.join(f'{float(t):.3g}' for t in target)} mm, the image"
    if not all(np.isfinite(exact)):
        raise DataError(path, f"{where} would have no finite size (voxel size {list(spacing)} mm)")
    check_voxels(path, exact, channels, where, memory_budget_bytes)
    return [max(1, int(round(v))) for v in exact]


def preprocess_images(images, plan) -> tuple[np.ndarray, dict]:
    """Preprocess one scan (one Image or path per modality, or one multi-channel Image) by ``plan``.

    Returns the float32 (C, X, Y, Z) array at the plan's spacing and the ``properties`` that
    :func:`restore_label` needs to bring a label map back to this scan's grid.
    """
    img = _stack(images, len(plan.modalities))
    ornt = ras_ornt(img.affine)
    spacing, ras_shape = ras_spacing_shape(img.affine, img.shape)
    data = reorient(img.array, ornt)
    box = nonzero_bbox(data) if plan.crop_to_nonzero else [[0, s] for s in ras_shape]
    sl = (slice(None),) + tuple(slice(lo, hi) for lo, hi in box)
    data = data[sl]
    cropped = [hi - lo for lo, hi in box]
    target = plan.target_spacing
    shape = resampled_shape(cropped, spacing, target, img.path, len(plan.modalities), plan.memory_budget_bytes)
    order = int(plan.resampling.get("image_order", 3))
    # plans saved before separate_z existed lack the key: every axis alike, as they were trained
    axis = slice_axis(spacing, target) if plan.resampling.get("separate_z", False) else None
    res = np.stack([_resample(ch, shape, order, axis) for ch in data]) if data.shape[0] else data
    mask = _resample(np.any(data != 0, axis=0).astype(np.float32), shape, 1, axis) >= 0.5
    res = _normalize(res, mask, plan)
    properties = {
        "source_shape": list(img.shape),
        "source_affine": np.asarray(img.affine, float).tolist(),
        "source_path": str(img.path) if img.path else None,
        "ornt": ornt.tolist(),
        "ras_shape": ras_shape,
        "bbox": box,
        "cropped_shape": cropped,
        "shape": shape,
        "spacing": [n * s / m for n, s, m in zip(cropped, spacing, shape)],
        "label_values": list(plan.labels.values()),
        "label_resampling": plan.resampling.get("label", "linear_per_label"),
        "separate_z_axis": axis,
    }
    return np.ascontiguousarray(res, dtype=np.float32), properties


def preprocess_label(label: np.ndarray, properties: dict, path=None) -> np.ndarray:
    """A label map (label values, the source grid) as class indices on the preprocessed grid."""
    label = np.asarray(label)
    if tuple(label.shape) != tuple(properties["source_shape"]):
        raise DataError(path, f"label shape {label.shape} differs from the image's {tuple(properties['source_shape'])}")
    values = properties["label_values"]
    lut = np.full(256, 255, np.uint8)
    lut[values] = np.arange(len(values), dtype=np.uint8)
    if label.min(initial=0) < 0 or label.max(initial=0) > 255:
        raise DataError(path, "label values outside 0..255")
    idx = lut[label.astype(np.int64)]
    if (idx == 255).any():
        bad = sorted(set(np.unique(label[idx == 255]).tolist()))
        raise DataError(path, f"label values {bad} not declared (declared: {values})")
    idx = reorient(idx, np.asarray(properties["ornt"]))
    idx = idx[tuple(slice(lo, hi) for lo, hi in properties["bbox"])]
    return resize_labels(idx, properties["shape"], len(values), properties.get("label_resampling", "linear_per_label"),
                         properties.get("separate_z_axis"))


def restore_label(label: np.ndarray, properties: dict) -> np.ndarray:
    """Bring a map of class indices at the plan's spacing back to the source scan's grid.

    Undoes the resampling (per label, linearly; nearest along ``properties["separate_z_axis"]``), the crop and the reorientation, and maps class
    indices back to the dataset's label values; the result has the source's (X, Y, Z) shape and
    belongs with its affine (``properties["source_affine"]``).
    """
    label = np.asarray(label)
    if tuple(label.shape) != tuple(properties["shape"]):
        raise DataError(None, f"label of shape {label.shape} does not match the preprocessed grid {tuple(properties['shape'])}")
    values = np.asarray(properties["label_values"])
    if label.size and int(label.max()) >= len(values):
        raise DataError(None, f"class index {int(label.max())} beyond the {len(values)} classes of the plan")
    small = resize_labels(label.astype(np.uint8), properties["cropped_shape"], len(values),
                          properties.get("label_resampling", "linear_per_label"), properties.get("separate_z_axis"))
    full = np.zeros(properties["ras_shape"], np.uint8)
    full[tuple(slice(lo, hi) for lo, hi in properties["bbox"])] = small
    back = reorient(full, _inverse_ornt(np.asarray(properties["ornt"])))
    lut = values.astype(np.uint8 if values.max() <= 255 else np.int16)
    out = lut[back]
    assert tuple(out.shape) == tuple(properties["source_shape"])
    return out


# ---------------------------------------------------------------------------------------- dataset + cache


def _load_entry(folder: Path, case_id: str) -> PreprocessedCase:
    props = json.loads((folder / "properties.json").read_text())
    image = np.load(folder / "image.npy", mmap_mode="r")
    label = np.load(folder / "label.npy", mmap_mode="r") if (folder / "label.npy").exists() else None
    return PreprocessedCase(case_id, image, label, tuple(props["spacing"]), props)  # type: ignore[arg-type]


def _preprocess_case(case, plan, folder: Path) -> None:
    try:
        _preprocess_case_files(case, plan, folder)
    except MemoryError:
        raise DataError(case.image_paths[0], f"out of memory preprocessing case {case.case_id!r}") from None


def _preprocess_case_files(case, plan, folder: Path) -> None:
    from engine.data.io import read_label
    from engine.data.validate import read_case_images

    image = read_case_images(case)
    arr, props = preprocess_images(image, plan)
    label = None
    if case.label_path is not None:
        raw, lab_img = read_label(case.label_path)
        if not same_geometry(image.affine, lab_img.affine, image.shape, lab_img.shape):
            raise DataError(case.label_path, "label grid (shape, spacing, origin or orientation) differs from the image's")
        if raw.dtype.kind == "f" and (raw != np.round(raw)).any():
            raise DataError(case.label_path, "non-integer label values")
        label = preprocess_label(raw, props, case.label_path)
    props["case_id"] = case.case_id
    tmp = temp_dir_near(folder)
    try:
        np.save(tmp / "image.npy", arr)
        if label is not None:
            np.save(tmp / "label.npy", label)
        (tmp / "properties.json").write_text(json.dumps(props))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_dir(tmp, folder)


def case_cache_key(case) -> str:
    """The cache key of a case: its id and the signature of every file reading it opens (detached
    data files and DICOM slices included), so a changed file is preprocessed again."""
    return digest([case.case_id, [file_signature(p) for p in case.image_paths],
                   file_signature(case.label_path) if case.label_path else None])


def case_content_digest(case) -> str:
    """A digest of the contents of every file of a case (names and bytes; not times): what a run pins."""
    from engine.data.cache import content_hashes

    return digest([[content_hashes(p) for p in case.image_paths],
                   content_hashes(case.label_path) if case.label_path else None], n=32)


def preprocess_workers() -> int:
    """Processes that preprocess cases at once: ``EMONAS_PREPROCESS_WORKERS``, else the usable CPUs."""
    given = os.environ.get("EMONAS_PREPROCESS_WORKERS", "").strip()
    if given:
        try:
            return max(1, int(given))
        except ValueError:
            from engine.errors import ConfigError

            raise ConfigError(f"EMONAS_PREPROCESS_WORKERS must be a whole number, got {given!r}") from None
    from engine.device import usable_cpus

    return usable_cpus()


def _preprocess_case_in_worker(case, plan, folder: Path) -> tuple[str, str | None, str] | None:
    """``_preprocess_case`` in a worker process; an EmonasError comes back as plain data (its
    constructor's arguments do not survive pickling)."""
    from engine.errors import EmonasError

    try:
        _preprocess_case(case, plan, folder)
    except DataError as exc:
        return ("DataError", exc.path, exc.problem)
    except EmonasError as exc:
        return (type(exc).__name__, None, str(exc))
    return None


def _raise_worker_error(error: tuple[str, str | None, str]) -> None:
    import engine.errors as errors

    kind, path, message = error
    if kind == "DataError":
        raise DataError(path, message)
    raise getattr(errors, kind, errors.EmonasError)(message)


def _preprocess_in_parallel(todo: list[tuple[str, object, Path]], plan, workers: int,
                            on_done: Callable[[str], None]) -> None:
    """Preprocess ``todo`` ((case id, case, cache folder)) in ``workers`` processes.

    Each case is written by one process into its own temporary folder and renamed into place, as in
    one process. All cases are attempted; the first failure in case order is raised afterwards,
    so the error does not depend on which process finished first.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # forkserver: workers fork from a clean server process (not from a caller that may hold threads:
    # the app, torch), which imports the readers once, so a worker starts in milliseconds
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["engine.data.preprocess", "nibabel", "pydicom", "SimpleITK"])
    errors: dict[str, BaseException | tuple] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(_preprocess_case_in_worker, case, plan, folder): cid for cid, case, folder in todo}
        try:
            for fut in as_completed(futures):
                cid = futures[fut]
                try:
                    err = fut.result()
                except BaseException as exc:  # noqa: BLE001 - raised below, in case order
                    errors[cid] = exc
                    continue
                if err is not None:
                    errors[cid] = err
                else:
                    on_done(cid)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    for cid, _, _ in todo:
        if cid in errors:
            err = errors[cid]
            if isinstance(err, BaseException):
                raise err
            _raise_worker_error(err)


def preprocess_dataset(
    dataset,
    plan,
    case_ids: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    workers: int | None = None,
) -> dict[str, PreprocessedCase]:
    """Preprocess the cases (all, or ``case_ids``) once and hand them out memory-mapped from the cache.

    ``cache_dir`` defaults to ``<cache root>/preprocessed``; ``progress(done, total, case_id)`` is
    called after each case. Cases not yet in the cache are preprocessed by ``workers`` processes
    at once (default :func:`preprocess_workers`; 1, or inside a daemon process, in this process);
    the cache entries are the same whatever the number of processes.
    """
    import multiprocessing as mp

    root = Path(cache_dir) if cache_dir is not None else cache_root() / "preprocessed"
    plan_dir = root / f"v{CACHE_VERSION}-{plan.preprocessing_key()}"
    ids = list(case_ids) if case_ids is not None else dataset.case_ids
    folders: dict[str, Path] = {}
    todo = []
    for cid in ids:
        case = dataset.case(cid)
        folders[cid] = plan_dir / f"{cid}-{case_cache_key(case)}"
        if not (folders[cid] / "properties.json").exists():
            todo.append((cid, case, folders[cid]))
    workers = min(len(todo), preprocess_workers() if workers is None else max(1, int(workers)))
    done = [0]

    def report(cid: str) -> None:
        done[0] += 1
        if progress:
            progress(done[0], len(ids), cid)

    missing = {t[0] for t in todo}
    for cid in ids:  # cached cases first: they are done already
        if cid not in missing:
            report(cid)
    if workers > 1 and not mp.current_process().daemon:  # a daemon process may not start processes
        log.info("preprocessing %d cases in %d processes", len(todo), workers)
        _preprocess_in_parallel(todo, plan, workers, report)
    else:
        for cid, case, folder in todo:
            log.info("preprocessing %s", cid)
            _preprocess_case(case, plan, folder)
            report(cid)
    return {cid: _load_entry(folders[cid], cid) for cid in ids}
