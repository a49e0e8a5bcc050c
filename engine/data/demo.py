"""The built-in demo dataset: real MRI derived from the MNI ICBM152 2009a template, offline.

The nilearn wheel ships the MNI152 T1 template with grey- and white-matter probability maps. They
are read with nibabel from nilearn's data folder (nilearn itself is never imported) and turned,
deterministically, into ``N_CASES`` small cases (about 34 x 42 x 34 voxels of about 3.5 mm) by a
random affine and smooth warp, a crop, a bias field, a gamma and gain change and Rician noise; the
labels (grey matter, white matter, CSF) are the most probable tissue of the warped maps. The dataset
is written once, in MSD layout, to the cache folder (``open_dataset("demo")``), or to a folder of
the user's choice (``emonas demo-data OUT_DIR``), with the template's copyright notice.
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

from engine.data.cache import cache_root, publish_dir, temp_dir_near
from engine.data.io import write_image
from engine.errors import DataError

log = logging.getLogger(__name__)

DEMO_VERSION = 1
N_CASES = 24
SEED = 2021
SHAPE = (34, 42, 34)
LABELS = {"0": "background", "1": "grey matter", "2": "white matter", "3": "CSF"}
NOTICE = "MNI_ICBM152_NOTICE.txt"
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


def _load_templates() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The template's affine and T1 / tissue-probability volumes, smoothed against aliasing at ~3.5 mm."""
    import nibabel as nib

    folder = template_folder()
    vols, affine = {}, None
    for key, name in _TEMPLATES.items():
        img = nib.load(str(folder / name))
        affine = np.asarray(img.affine, float)
        vols[key] = ndimage.gaussian_filter(np.asarray(img.dataobj, np.float32) / 255.0, sigma=1.2)
    brain = ndimage.gaussian_filter((np.asarray(nib.load(str(folder / _TEMPLATES["t1"])).dataobj) > 0)
                                    .astype(np.float32), sigma=1.2)
    vols["csf"] = np.clip(brain - vols["gm"] - vols["wm"], 0, 1)
    vols["bg"] = 1.0 - brain
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
    out_aff = np.eye(4)
    out_aff[:3, :3] = np.diag(spacing)
    out_aff[:3, 3] = center - spacing * (np.array(shape) - 1) / 2
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = out_aff[:3, :3] @ idx + out_aff[:3, 3:4]
    # random anatomy: a rotation and scaling about the centre plus a smooth warp of a few mm
    lin = _rotation(rng, 8.0) @ np.diag(rng.uniform(0.9, 1.1, size=3))
    warped = lin @ (world - center[:, None]) + center[:, None]
    warped += np.stack([_smooth_field(rng, shape, scale=3.0).ravel() for _ in range(3)])
    vox = np.linalg.inv(t_affine) @ np.vstack([warped, np.ones((1, warped.shape[1]))])
    coords = vox[:3]

    def sample(vol, outside=0.0):
        return ndimage.map_coordinates(vol, coords, order=1, mode="constant", cval=outside).reshape(shape)

    t1 = sample(vols["t1"])
    probs = np.stack([sample(vols["bg"], 1.0), sample(vols["gm"]),
                      sample(vols["wm"]), sample(vols["csf"])])
    label = np.argmax(probs, axis=0).astype(np.uint8)
    # scanner-like intensities: gamma, bias field, gain, Rician noise
    img = np.clip(t1, 0, None) ** rng.uniform(0.8, 1.25)
    img *= np.exp(_smooth_field(rng, shape, control=(3, 3, 3), scale=0.12))
    gain = rng.uniform(400.0, 1200.0)
    sigma = rng.uniform(0.015, 0.04)
    img = np.sqrt((img + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2) * gain
    return np.round(img).astype(np.int16), label, out_aff


def _generate(folder: Path, n_cases: int = N_CASES, seed: int = SEED) -> None:
    t_affine, vols = _load_templates()
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n_cases)]
    training = []
    for i, rng in enumerate(rngs):
        img, lab, aff = _make_case(rng, t_affine, vols)
        cid = f"brain_{i:03d}"
        write_image(folder / "imagesTr" / f"{cid}.nii.gz", img, aff)
        write_image(folder / "labelsTr" / f"{cid}.nii.gz", lab, aff)
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    meta = {
        "name": "EMONAS demo (MNI152 brain tissue)",
        "description": "Brain tissue segmentation on T1 MRI derived from the MNI ICBM152 2009a template "
                       "by random warps, crops, bias fields, intensity changes and noise; see " + NOTICE,
        "reference": "MNI ICBM152 non-linear symmetric 2009a (Fonov et al. 2009, 2011)",
        "licence": "see " + NOTICE,
        "tensorImageSize": "3D",
        "modality": {"0": "T1"},
        "labels": LABELS,
        "numTraining": n_cases,
        "numTest": 0,
        "training": training,
        "test": [],
        "generator": {"version": DEMO_VERSION, "seed": seed},
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.copyfile(notice_path(), folder / NOTICE)


def demo_dataset_path() -> Path:
    """The demo dataset's folder in the cache, generated on first use (a few seconds)."""
    final = cache_root() / "demo" / f"v{DEMO_VERSION}-seed{SEED}-n{N_CASES}"
    if not (final / "dataset.json").exists():
        log.info("generating the demo dataset in %s", final)
        tmp = temp_dir_near(final)
        try:
            _generate(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        publish_dir(tmp, final)
    return final


def write_demo_dataset(out_dir: str | os.PathLike) -> Path:
    """Write the demo dataset in MSD layout to ``out_dir`` (new or empty folder)."""
    from engine.outputs import Source, check_output, replace_dir
    from engine.outputs import temp_dir_near as temp_near

    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(out, "exists and is not an empty folder")
    src = demo_dataset_path()
    check_output(out, [Source(src, "demo dataset in the cache")], option="OUT_DIR")
    try:
        tmp = temp_near(out)
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            replace_dir(tmp, out)  # copied whole, then moved in: never half a dataset under its name
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    except OSError as exc:
        raise DataError(out, f"cannot write ({exc.strerror or exc})") from None
    return out
