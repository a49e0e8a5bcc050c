"""The model folder as a MONAI bundle: ``configs/metadata.json``, ``configs/inference.json``, ``models/model.ts``.

MONAI's own bundle tools read it (``monai.bundle.ConfigParser``, ``monai.bundle.run`` or
``python -m monai.bundle run`` with ``fire`` installed). ``inference.json`` holds the whole pipeline of
``emonas predict`` in MONAI transforms, so the bundle alone segments a scan:

1. ``LoadImaged`` + ``EnsureChannelFirstd``, ``Orientationd`` to RAS (flips and permutations only);
2. ``CropForegroundd`` to the voxels that are non-zero in any channel (if the plan crops);
3. ``Spacingd`` to the target spacing, cubic spline (``resampling.image_order``) with
   ``scale_extent`` so the grid's outer edges stay where they were, as the engine's resampling;
4. the plan's normalization per channel (z-score, optionally inside the non-zero region; CT clip and
   scale; optional clip in sigmas) as one ``Lambdad``;
5. ``SlidingWindowInferer`` with the model's patch, overlap and Gaussian weighting (sigma = patch / 8);
6. argmax, the largest connected component per class if the model keeps it;
7. back to the scan's grid: one-hot, ``Invertd`` (each class resampled linearly and kept where >= 0.5,
   as the engine does), class indices mapped to the dataset's label values; ``SaveImaged`` writes
   NAME_seg.nii.gz.

Test-time mirroring (``emonas predict --mirror``) is not part of the bundle.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

BUNDLE_CONFIG = "configs/inference.json"
BUNDLE_METADATA = "configs/metadata.json"
BUNDLE_MODEL = "models/model.ts"
BUNDLE_FILES = (BUNDLE_METADATA, BUNDLE_CONFIG, BUNDLE_MODEL)
METADATA_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
)


def _channel_expr(c: int, norm: Mapping[str, Any]) -> str:
    """A Python expression normalizing channel ``c`` of ``x`` as ``engine.data.preprocess._normalize``."""
    v = f"x[{c}]"
    scheme = norm.get("scheme")
    if scheme == "ct":
        expr = (f"(({v}.clamp({float(norm['clip_low'])!r}, {float(norm['clip_high'])!r}) - {float(norm['mean'])!r})"
                f" / {max(float(norm['std']), 1e-8)!r})")
    elif scheme == "zscore" and norm.get("use_nonzero_mask"):
        expr = (f"(lambda v, m: torch.where(m, (v - v[m].mean()) / v[m].std(unbiased=False).clamp_min(1e-8), "
                f"torch.zeros_like(v)) if m.any() else (v - v.mean()) / v.std(unbiased=False).clamp_min(1e-8))"
                f"({v}.float(), @nonzero(x))")
    elif scheme == "zscore":
        expr = f"(lambda v: (v - v.mean()) / v.std(unbiased=False).clamp_min(1e-8))({v}.float())"
    else:
        expr = f"{v}.float()"
    if norm.get("clip_sigma"):
        s = float(norm["clip_sigma"])
        expr = f"{expr}.clamp({-s!r}, {s!r})"
    return expr


def inference_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``configs/inference.json`` for a model folder's ``model.json`` contents."""
    pre, inf = meta["preprocessing"], meta["inference"]
    k = int(meta["architecture"]["num_classes"])
    values = [int(v) for v in meta["class_values"]]
    norms = list(pre.get("normalization") or [])
    channels = int(meta["architecture"]["in_channels"])
    norms += [{"scheme": "none"}] * (channels - len(norms))
    order = int((pre.get("resampling") or {}).get("image_order", 3))
    transforms: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": False},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": str(pre.get("orientation") or "RAS")},
    ]
    if pre.get("crop_to_nonzero"):
        transforms.append({"_target_": "CropForegroundd", "keys": "image", "source_key": "image",
                           "select_fn": "$lambda x: x != 0", "allow_smaller": True, "margin": 0})
    if pre.get("target_spacing"):
        # The engine's grid: round(size * spacing / target) voxels spanning the same extent (edges
        # aligned); Spacing at that grid's own spacing with scale_extent places the voxels there.
        # Undone with linear interpolation (spline order 1), as the engine resamples label masks back.
        transforms.append("@resample_transform")
    transforms.append({"_target_": "Lambdad", "keys": "image", "track_meta": True,
                       "func": "$lambda x: torch.stack([" + ", ".join(_channel_expr(c, n) for c, n in enumerate(norms[:channels])) + "])"})
    post: list[dict[str, Any]] = [{"_target_": "AsDiscreted", "keys": "pred", "argmax": True}]
    if inf.get("keep_largest_component"):
        post.append({"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "applied_labels": list(range(1, k)),
                     "independent": True, "connectivity": 3})
    post += [
        {"_target_": "AsDiscreted", "keys": "pred", "to_onehot": k},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": False, "to_tensor": True},
        # as the engine: each foreground class where its resampled mask is >= 0.5, the higher class
        # where two are, background elsewhere
        {"_target_": "Lambdad", "keys": "pred",
         "func": "$lambda p: (torch.arange(1, p.shape[0]).view(-1, 1, 1, 1) * (p[1:] >= 0.5)).amax(0, keepdim=True)"},
    ]
    if values != list(range(k)):
        post.append({"_target_": "MapLabelValued", "keys": "pred", "orig_labels": list(range(k)), "target_labels": values})
    post.append({"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
                 "output_dtype": "$numpy.uint8" if max(values) <= 255 else "$numpy.int16", "resample": False,
                 "separate_folder": False, "print_log": False})
    return {
        "imports": ["$import glob", "$import os", "$import numpy", "$import torch", "$import monai"],
        "bundle_root": ".",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "dataset_dir": "$os.path.join(@bundle_root, 'input')",
        "datalist": "$sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), map_location=@device)",
        "network": "$@network_def.eval()",
        "nonzero": "$lambda x: (x != 0).any(0)",
        "target_spacing": [float(v) for v in pre["target_spacing"]] if pre.get("target_spacing") else None,
        "image_order": order,
        "grid": "$lambda x: [max(1, int(round(n * s / t))) for n, s, t in zip(x.shape[1:], x.pixdim.tolist(), @target_spacing)]",
        "resample": "$lambda x, m: monai.transforms.Spacing(pixdim=[n * s / k for n, s, k in zip(x.shape[1:], "
                    "x.pixdim.tolist(), m)], mode=@image_order, padding_mode='nearest', scale_extent=True, "
                    "align_corners=False)(x, output_spatial_shape=m)",
        # the inverse of the resampling above, linear (spline order 1); a new SpatialResample undoes
        # the record of another instance only when the record names it
        "restore": "$lambda x: (lambda t: (x.applied_operations[-1].update(id=id(t)), x.applied_operations[-1]"
                   "['extra_info'].update(mode=1), t.inverse(x))[2])(monai.transforms.SpatialResample())",
        # Lambdad (MONAI 1.6) does not pass its inv_func on to its inner Lambda: set it there.
        "resample_transform": "$(lambda t: (setattr(t._lambd, 'inv_func', @restore), t)[1])("
                              "monai.transforms.Lambdad(keys='image', func=lambda x: @resample(x, @grid(x))))",
        "preprocessing": {"_target_": "Compose", "transforms": transforms},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': f} for f in @datalist]", "transform": "@preprocessing"},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [int(p) for p in inf["patch_size"]],
                    "sw_batch_size": 1, "overlap": float(inf["overlap"]),
                    "mode": "gaussian" if inf.get("gaussian", True) else "constant", "sigma_scale": 0.125,
                    "padding_mode": "constant", "cval": 0.0},
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "predict": "$lambda d: @postprocessing(dict(d, pred=@inferer(d['image'].unsqueeze(0).to(@device), @network)[0].cpu()))",
        "initialize": ["$torch.set_grad_enabled(False)"],
        "run": ["$[@predict(d) for d in @dataset]"],
    }


def bundle_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``configs/metadata.json`` (MONAI bundle metadata) for a model folder's ``model.json`` contents."""
    versions = meta.get("library_versions") or {}
    import monai
    import numpy

    patch = [int(p) for p in meta["inference"]["patch_size"]]
    return {
        "schema": METADATA_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": "exported by EMONAS Studio"},
        "monai_version": monai.__version__,
        "pytorch_version": str(versions.get("torch", "")),
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": _version("nibabel"), "scipy": _version("scipy")},
        "name": "EMONAS-Net segmentation",
        "task": "3D segmentation of " + ", ".join(n for n, v in meta["labels"].items() if v != 0),
        "description": "A network found by EMONAS-Net's architecture search; see MODEL_CARD.md and model.json. "
                       "For research use only; not a medical device.",
        "authors": "EMONAS Studio",
        "copyright": "see MODEL_CARD.md",
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": ", ".join(meta["modalities"]),
                "num_channels": int(meta["architecture"]["in_channels"]), "spatial_shape": patch,
                "dtype": "float32", "value_range": [], "is_patch_data": True,
                "channel_def": {str(i): m for i, m in enumerate(meta["modalities"])},
            }},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": int(meta["architecture"]["num_classes"]),
                "spatial_shape": patch, "dtype": "float32", "value_range": [], "is_patch_data": True,
                "channel_def": {str(i): name for i, (name, _) in
                                enumerate(sorted(meta["labels"].items(), key=lambda kv: kv[1]))},
            }},
        },
    }


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except Exception:  # an optional package that is missing or has no version
        return ""


def write_bundle(folder: Path, meta: Mapping[str, Any]) -> list[str]:
    """Write the bundle files into the model folder being built; returns their relative paths.

    ``models/model.ts`` is a copy of the folder's ``model.ts`` (MONAI looks for it there).
    """
    (folder / "configs").mkdir(exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    shutil.copyfile(folder / "model.ts", folder / BUNDLE_MODEL)
    (folder / BUNDLE_METADATA).write_text(json.dumps(bundle_metadata(meta), indent=2) + "\n", encoding="utf-8")
    (folder / BUNDLE_CONFIG).write_text(json.dumps(inference_config(meta), indent=2) + "\n", encoding="utf-8")
    return list(BUNDLE_FILES)
