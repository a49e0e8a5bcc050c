"""The built-in demo dataset: real MRI derived from the MNI ICBM152 2009a template, offline.

The nilearn wheel ships the MNI152 T1 template with grey- and white-matter probability maps. They
are read with nibabel from nilearn's data folder (nilearn itself is never imported) and turned,
deterministically, into ``N_CASES`` small cases (about 34 x 42 x 34 voxels of about 3.5 mm) by a
random affine and smooth warp, a crop, a bias field, a gamma and gain change and Rician noise; the
labels (grey matter, white matter, CSF) are the most probable tissue of the warped maps. The dataset
is written once, in MSD layout, to the cache folder (``open_dataset("demo")``), or to a folder of
the user's choice (``emonas demo-data OUT_DIR``), with the template's copyright notice.

A second kind, ``hippocampus`` (``emonas demo-data OUT_DIR --kind hippocampus``,
``open_dataset("demo-hippocampus")``), is shaped like the Medical Segmentation Decathlon's Task04:
``HIPPO_CASES`` T1 cases at 1 mm of about 36 x 50 x 35 voxels, cropped around the template's left
hippocampus, each under its own random affine and smooth warp and scanner-like intensity changes,
with two labels that carry a direction: the anterior part (head) and the posterior part (body and
tail). The structure is the template's grey matter inside a 6 mm tube from the hippocampal head at
MNI (-23, -10, -20) to its tail at (-29, -38, -3), split 45 % along the tube: about an adult
hippocampus's volume (``HIPPO_RADIUS``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
from scipy import ndimage

from engine.atomic import temp_dir_near
from engine.data.cache import cache_root, publish_dir
from engine.data.io import write_image
from engine.errors import DataError

log = logging.getLogger(__name__)

DEMO_VERSION = 1
N_CASES = 24
SEED = 2021
SHAPE = (34, 42, 34)
LABELS = {"0": "background", "1": "grey matter", "2": "white matter", "3": "CSF"}
NOTICE = "MNI_ICBM152_NOTICE.txt"
KINDS = ("brain", "hippocampus")
HIPPO_VERSION = 2  # 2: 6 mm tube (an adult hippocampus's volume); 1 had 5 mm
HIPPO_CASES = 50
HIPPO_SEED = 2004
HIPPO_SHAPE = (36, 50, 35)
HIPPO_LABELS = {"0": "background", "1": "anterior", "2": "posterior"}
#: The left hippocampus of the MNI152 2009a template (MNI mm): head, tail, tube radius, split fraction.
#: The radius gives the structure an adult hippocampus's volume: a median of 3.0 cm3 over the 50 cases
#: (2.1 - 4.4), against 3.2 - 3.3 cm3 per side measured manually (Pruessner et al., Cereb Cortex 2000);
#: 5 mm gave 2.2 cm3.
HIPPO_HEAD = (-23.0, -10.0, -20.0)
HIPPO_TAIL = (-29.0, -38.0, -3.0)
HIPPO_RADIUS = 6.0
HIPPO_SPLIT = 0.45
_TEMPLATES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}


def template_folder() -> Path:
    """nilearn's data folder, found without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(None, "the demo dataset needs the nilearn package (pip install nilearn); it is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    for name in _TEMPLATES.values():
        if not (folder / name).is_file():
            raise DataError(folder / name, "MNI152 template missing from the nilearn package")
    return folder


def notice_path() -> Path:
    import resources

    return Path(resources.__file__).parent / "demo" / NOTICE


def _load_templates(sigma: float = 1.2, box_mm: tuple | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The template's affine and T1 / tissue-probability volumes, smoothed by ``sigma`` voxels (against
    aliasing at ~3.5 mm); ``box_mm`` ((lo, hi) MNI corners) keeps only that box of the template."""
    import nibabel as nib

    folder = template_folder()
    vols, affine = {}, None
    box = (slice(None),) * 3

    def smooth(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=sigma) if sigma else a

    for key, name in _TEMPLATES.items():
        img = nib.load(str(folder / name))
        affine = np.asarray(img.affine, float)
        if box_mm is not None:
            inv = np.linalg.inv(affine)
            lo, hi = (np.round(inv[:3, :3] @ np.asarray(c, float) + inv[:3, 3]).astype(int) for c in box_mm)
            box = tuple(slice(max(0, int(a)), int(b) + 1) for a, b in zip(np.minimum(lo, hi), np.maximum(lo, hi)))
        vols[key] = smooth(np.asarray(img.dataobj[box], np.float32) / 255.0)
    brain = smooth((np.asarray(nib.load(str(folder / _TEMPLATES["t1"])).dataobj[box]) > 0).astype(np.float32))
    vols["csf"] = np.clip(brain - vols["gm"] - vols["wm"], 0, 1)
    vols["bg"] = 1.0 - brain
    if box_mm is not None:
        shift = np.eye(4)
        shift[:3, 3] = [b.start for b in box]
        affine = affine @ shift
    return affine, vols  # type: ignore[return-value]


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    r = np.eye(3)
    for axis in range(3):
        a = np.deg2rad(rng.uniform(-max_deg, max_deg))
        c, s = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        r = r @ m
    return r


def _smooth_field(rng: np.random.Generator, shape, control=(4, 5, 4), scale=1.0) -> np.ndarray:
    coarse = rng.normal(0.0, scale, size=control).astype(np.float32)
    return ndimage.zoom(coarse, [s / c for s, c in zip(shape, control)], order=3, mode="nearest", grid_mode=True)


def _make_case(rng: np.random.Generator, t_affine: np.ndarray, vols: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape = tuple(int(s + rng.integers(-2, 3)) for s in SHAPE)
    spacing = rng.uniform(3.3, 3.7, size=3)
    center = np.array([0.0, -18.0, 8.0]) + rng.uniform(-6, 6, size=3)  # about the brain's centre (MNI mm)
    # random anatomy: a rotation and scaling about the centre plus a smooth warp of a few mm
    coords, out_aff = _warp_coords(rng, shape, spacing, center, t_affine, warp_mm=3.0)

    def sample(vol, outside=0.0):
        return ndimage.map_coordinates(vol, coords, order=1, mode="constant", cval=outside).reshape(shape)

    t1 = sample(vols["t1"])
    probs = np.stack([sample(vols["bg"], 1.0), sample(vols["gm"]),
                      sample(vols["wm"]), sample(vols["csf"])])
    label = np.argmax(probs, axis=0).astype(np.uint8)
    return _scanner(rng, t1), label, out_aff


def _scanner(rng: np.random.Generator, t1: np.ndarray) -> np.ndarray:
    """Scanner-like intensities: gamma, bias field, gain, Rician noise."""
    shape = t1.shape
    img = np.clip(t1, 0, None) ** rng.uniform(0.8, 1.25)
    img *= np.exp(_smooth_field(rng, shape, control=(3, 3, 3), scale=0.12))
    gain = rng.uniform(400.0, 1200.0)
    sigma = rng.uniform(0.015, 0.04)
    img = np.sqrt((img + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2) * gain
    return np.round(img).astype(np.int16)


def _warp_coords(rng: np.random.Generator, shape, spacing, center, t_affine, warp_mm: float) -> np.ndarray:
    """Template voxel coordinates (3, n) of a ``shape`` grid about ``center`` (MNI mm) under a random
    rotation (+-8 degrees), scaling (0.9-1.1) and smooth warp of about ``warp_mm``; and the grid's affine."""
    out_aff = np.eye(4)
    out_aff[:3, :3] = np.diag(spacing)
    out_aff[:3, 3] = center - np.asarray(spacing) * (np.array(shape) - 1) / 2
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = out_aff[:3, :3] @ idx + out_aff[:3, 3:4]
    lin = _rotation(rng, 8.0) @ np.diag(rng.uniform(0.9, 1.1, size=3))
    warped = lin @ (world - center[:, None]) + center[:, None]
    warped += np.stack([_smooth_field(rng, shape, scale=warp_mm).ravel() for _ in range(3)])
    vox = np.linalg.inv(t_affine) @ np.vstack([warped, np.ones((1, warped.shape[1]))])
    return vox[:3], out_aff


def _hippocampus_maps(t_affine: np.ndarray, vols: dict, radius: float = HIPPO_RADIUS) -> dict:
    """Soft anterior / posterior maps in template space: grey matter inside the tube (``radius`` mm),
    split along it."""
    gm = vols["gm"]
    head, tail = np.array(HIPPO_HEAD), np.array(HIPPO_TAIL)
    length = float(np.linalg.norm(tail - head))
    u = (tail - head) / length
    idx = np.indices(gm.shape, dtype=np.float32).reshape(3, -1)
    world = t_affine[:3, :3] @ idx + t_affine[:3, 3:4]
    rel = world - head[:, None]
    t = u @ rel
    perp = np.linalg.norm(rel - np.outer(u, t), axis=0)
    # smooth edges (1 mm logistic ramps) so the warped labels have no staircase
    ramp = lambda d: 1.0 / (1.0 + np.exp(-d))  # noqa: E731
    tube = ramp(radius - perp) * ramp(t + 3.0) * ramp(length + 3.0 - t)
    structure = (tube * np.clip(gm.reshape(-1) * 2 - 0.5, 0, 1)).reshape(gm.shape)
    anterior = ramp(HIPPO_SPLIT * length - t).reshape(gm.shape)
    return {"anterior": (structure * anterior).astype(np.float32), "posterior": (structure * (1 - anterior)).astype(np.float32)}


def _make_hippocampus_case(rng: np.random.Generator, t_affine: np.ndarray, vols: dict, maps: dict):
    shape = tuple(int(s + rng.integers(-2, 3)) for s in HIPPO_SHAPE)
    center = (np.array(HIPPO_HEAD) + np.array(HIPPO_TAIL)) / 2 + rng.uniform(-3, 3, size=3)
    coords, out_aff = _warp_coords(rng, shape, (1.0, 1.0, 1.0), center, t_affine, warp_mm=1.5)

    def sample(vol):
        return ndimage.map_coordinates(vol, coords, order=1, mode="constant", cval=0.0).reshape(shape)

    ant, post = sample(maps["anterior"]), sample(maps["posterior"])
    label = np.where(ant + post > 0.5, np.where(ant >= post, 1, 2), 0).astype(np.uint8)
    return _scanner(rng, sample(vols["t1"])), label, out_aff


def _generate(folder: Path, n_cases: int = N_CASES, seed: int = SEED) -> None:
    t_affine, vols = _load_templates()
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n_cases)]
    cases = [_make_case(rng, t_affine, vols) for rng in rngs]
    _write(folder, "brain", cases, {
        "name": "EMONAS demo (MNI152 brain tissue)",
        "description": "Brain tissue segmentation on T1 MRI derived from the MNI ICBM152 2009a template "
                       "by random warps, crops, bias fields, intensity changes and noise; see " + NOTICE,
        "labels": LABELS,
        "generator": {"version": DEMO_VERSION, "seed": seed},
    })


def _generate_hippocampus(folder: Path, n_cases: int = HIPPO_CASES, seed: int = HIPPO_SEED,
                          radius: float = HIPPO_RADIUS) -> None:
    """Write the hippocampus set; ``radius`` (mm) other than ``HIPPO_RADIUS`` makes a variant (labels
    with more of their boundary on the grey matter's edge), recorded in its dataset.json."""
    centre = (np.array(HIPPO_HEAD) + np.array(HIPPO_TAIL)) / 2
    t_affine, vols = _load_templates(sigma=0.0, box_mm=(centre - 45, centre + 45))
    maps = _hippocampus_maps(t_affine, vols, radius)
    generator = {"kind": "hippocampus", "version": HIPPO_VERSION, "seed": seed}
    if radius != HIPPO_RADIUS:
        generator["tube_radius_mm"] = float(radius)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n_cases)]
    cases = [_make_hippocampus_case(rng, t_affine, vols, maps) for rng in rngs]
    _write(folder, "hippocampus", cases, {
        "name": "EMONAS hippocampus (MNI152, Task04-shaped)",
        "description": "Anterior and posterior hippocampus on 1 mm T1 MRI cropped around the left hippocampus "
                       "of the MNI ICBM152 2009a template, under random warps, bias fields, intensity changes "
                       "and noise; shaped like the Medical Segmentation Decathlon's Task04; see " + NOTICE,
        "labels": HIPPO_LABELS,
        "generator": generator,
    })


def _write(folder: Path, prefix: str, cases: list, meta: dict) -> None:
    training = []
    for i, (img, lab, aff) in enumerate(cases):
        cid = f"{prefix}_{i:03d}"
        write_image(folder / "imagesTr" / f"{cid}.nii.gz", img, aff)
        write_image(folder / "labelsTr" / f"{cid}.nii.gz", lab, aff)
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    doc = {
        "name": meta["name"],
        "description": meta["description"],
        "reference": "MNI ICBM152 non-linear symmetric 2009a (Fonov et al. 2009, 2011)",
        "licence": "see " + NOTICE,
        "tensorImageSize": "3D",
        "modality": {"0": "T1"},
        "labels": meta["labels"],
        "numTraining": len(cases),
        "numTest": 0,
        "training": training,
        "test": [],
        "generator": meta["generator"],
    }
    (folder / "dataset.json").write_text(json.dumps(doc, indent=2) + "\n")
    shutil.copyfile(notice_path(), folder / NOTICE)


def demo_dataset_path(kind: str = "brain") -> Path:
    """The demo dataset's folder in the cache (``kind`` "brain" or "hippocampus"), generated on first use
    (a few seconds)."""
    if kind not in KINDS:
        raise DataError(None, f"unknown demo dataset kind {kind!r}; kinds: {', '.join(KINDS)}")
    if kind == "brain":
        final, make = cache_root() / "demo" / f"v{DEMO_VERSION}-seed{SEED}-n{N_CASES}", _generate
    else:
        final, make = cache_root() / "demo" / f"hippocampus-v{HIPPO_VERSION}-seed{HIPPO_SEED}-n{HIPPO_CASES}", \
            _generate_hippocampus
    if not (final / "dataset.json").exists():
        log.info("generating the %s demo dataset in %s", kind, final)
        tmp = temp_dir_near(final)
        try:
            make(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        publish_dir(tmp, final)
    return final


def write_demo_dataset(out_dir: str | os.PathLike, kind: str = "brain") -> Path:
    """Write the demo dataset of ``kind`` in MSD layout to ``out_dir`` (new or empty folder)."""
    from engine.atomic import replace_dir
    from engine.outputs import Source, check_output

    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(out, "exists and is not an empty folder")
    src = demo_dataset_path(kind)
    check_output(out, [Source(src, "demo dataset in the cache")], option="OUT_DIR")
    try:
        tmp = temp_dir_near(out)
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            replace_dir(tmp, out)  # copied whole, then moved in: never half a dataset under its name
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as exc:
        raise DataError(out, f"cannot write ({exc.strerror or exc})") from None
    return out
