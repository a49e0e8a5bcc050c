"""Write and verify a model folder: a found network packaged for deployment without this project.

A model folder holds::

    model.json      versioned metadata (``schema_version``): labels, modalities and their order,
                    preprocessing (orientation, target spacing, normalization), inference settings
                    (patch, overlap, test-time mirroring, post-processing), genome, parameter count,
                    validation metrics, Pareto position, library versions, SHA-256 of every file
    model.onnx      one self-contained ONNX file, opset 17, dynamic batch and spatial axes;
                    input ``image`` (N, C, X, Y, Z) float32, output ``logits`` (N, K, X, Y, Z)
    model.ts        TorchScript program (format ``torchscript``), loadable from Python or libtorch
    model.pt2       ``torch.export`` program (format ``pt2``, optional)
    weights.pt      the state_dict, read by the engine with ``torch.load(weights_only=True)``
    MODEL_CARD.md   the same facts for people
    labels-ColorTable.ctbl, labels-ITKSNAP.txt   label names and colours for 3D Slicer and ITK-SNAP
    configs/metadata.json, configs/inference.json, models/model.ts
                    a MONAI bundle (with the torchscript format): ``engine.export.bundle``

``verify_model_folder`` refuses a folder whose files do not match their checksums or whose
``model.json`` is malformed, with one ``ExportError`` line naming the file and the problem.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from engine.data.io import check_voxels
from engine.errors import DataError, EmonasError, ExportError
from engine.genome import Genome
from engine.infer.folder import TrainingFolder, load_training_folder

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MODEL_FORMAT = "emonas-model"
MODEL_JSON = "model.json"
CARD_FILE = "MODEL_CARD.md"
WEIGHTS_FILE = "weights.pt"
#: export format name -> file it writes
FORMAT_FILES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.ts", "pt2": "model.pt2"}
DEFAULT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
TRAINING_JSON = "training.json"
TRAINING_WEIGHTS = "weights.pt"

#: Inference defaults used when the training folder does not say otherwise.
DEFAULT_INFERENCE: dict[str, Any] = {
    "overlap": 0.5,
    "gaussian": True,
    "mirror_axes": [],  # axes whose flips are averaged (test-time mirroring); none by default
    "keep_largest_component": False,
}


# ---------------------------------------------------------------------------------------------
# training folders
# ---------------------------------------------------------------------------------------------
def _read_json(path: Path, error=ExportError) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read ({exc.__class__.__name__}: {exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None


def load_state_dict(path: Path) -> dict[str, Any]:
    """A state_dict saved with ``torch.save``, loaded without pickle (``weights_only=True``)."""
    import torch

    if not path.is_file():
        raise ExportError(f"{path}: weights file not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or hostile files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ExportError(f"{path}: not a plain tensor state_dict ({first[:200]})") from None
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ExportError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    return dict(sd)


def _as_int(value: Any, what: str, path: Path, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ExportError(f"{path}: {what} must be an integer >= {minimum}, got {value!r}")
    return value


def _labels(value: Any, path: Path) -> dict[str, int]:
    if not isinstance(value, Mapping) or not value:
        raise ExportError(f"{path}: labels must be an object {{name: value}}")
    out: dict[str, int] = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ExportError(f"{path}: label {k!r} must have a non-negative integer value, got {v!r}")
        out[str(k)] = int(v)
    if len(set(out.values())) != len(out):
        raise ExportError(f"{path}: labels have duplicate values {sorted(out.values())}")
    return out


def read_training_folder(path: str | os.PathLike) -> tuple[TrainingFolder, Any]:
    """A training folder written by ``emonas train`` / ``emonas retrain``, and its network with the
    folder's best weights (in eval mode on the CPU), for export.

    Reading and checking is ``engine.infer.folder.load_training_folder``'s (weights with
    ``weights_only=True``); its ``DataError`` becomes an ``ExportError`` with the same line.
    """
    try:
        tf = load_training_folder(path)
        net = tf.build_model("cpu")
    except EmonasError as exc:
        raise ExportError(str(exc)) from None
    if len(_modalities(tf)) != tf.in_channels:
        raise ExportError(f"{tf.path / TRAINING_JSON}: modalities must list {tf.in_channels} names, got {_modalities(tf)!r}")
    return tf, net


def _modalities(tf: TrainingFolder) -> list[str]:
    """The folder's input names; a folder that names none gets ``channel0``, ``channel1``, ..."""
    return list(tf.modalities) or [f"channel{i}" for i in range(tf.in_channels)]


def _pool_sizes(net) -> tuple[tuple[int, int, int], ...]:
    """The per-level pooling the network was built with (the plan's, or the default 2x2x2)."""
    return tuple(tuple(int(v) for v in p) for p in net.arch.pool_sizes)  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that made the files (for reproducing a deployment)."""
    import onnx
    import onnxruntime
    import torch

    from engine import __version__

    return {
        "emonas": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "onnx_opset": str(ONNX_OPSET),
    }


def class_values(labels: Mapping[str, int]) -> list[int]:
    """Label value of each output channel: channel k holds the k-th smallest declared value."""
    return sorted(int(v) for v in labels.values())


def _plan_get(plan: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for n in names:
        if n in plan and plan[n] is not None:
            return plan[n]
    return default


def _inference_settings(tf: TrainingFolder) -> dict[str, Any]:
    """Sliding-window, test-time augmentation and post-processing settings of the model.

    The engine's rules for a training folder: largest component kept for the ``paper`` training
    profile, no mirroring, the plan's patch; a training.json ``inference`` object may override them.
    """
    cfg = tf.doc.get("config") if isinstance(tf.doc.get("config"), dict) else {}
    inf = dict(DEFAULT_INFERENCE)
    inf["keep_largest_component"] = cfg.get("profile") == "paper"
    given = tf.doc.get("inference") if isinstance(tf.doc.get("inference"), dict) else {}
    inf.update({k: v for k, v in given.items() if k in DEFAULT_INFERENCE or k == "patch_size"})
    patch = inf.pop("patch_size", None) or tf.doc.get("patch_size") or _plan_get(tf.plan.to_dict(), "patch_size")
    inf["patch_size"] = [int(p) for p in patch]
    inf["overlap"] = float(inf["overlap"])
    inf["gaussian"] = bool(inf["gaussian"])
    inf["mirror_axes"] = [int(a) for a in (inf["mirror_axes"] or [])]
    inf["keep_largest_component"] = bool(inf["keep_largest_component"])
    return inf


def build_metadata(tf: TrainingFolder, pool_sizes: tuple[tuple[int, int, int], ...], *,
                   candidate: Mapping[str, Any] | None = None,
                   label_metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``model.json`` contents (without ``files``) for a training folder whose network pools by ``pool_sizes``.

    ``label_metadata`` is the dataset's ``label_codes`` / ``label_colors``
    (``engine.data.labels.read_label_metadata``); labels without them get the generic code and
    the app's colours.
    """
    from engine.data.labels import resolve_label_info
    from engine.network.cost import count_parameters

    plan = tf.plan.to_dict()
    spacing = _plan_get(plan, "target_spacing", "spacing")
    orientation = _plan_get(plan, "orientation", default="RAS")
    normalization = _plan_get(plan, "normalization", default=[])
    divisor = [int(np.prod([p[a] for p in pool_sizes])) if pool_sizes else 1 for a in range(3)]
    metrics = tf.doc.get("metrics") if isinstance(tf.doc.get("metrics"), dict) else {}
    return {
        "schema_version": SCHEMA_VERSION,
        "format": MODEL_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "labels": dict(tf.labels),
        "class_values": class_values(tf.labels),
        **resolve_label_info(tf.labels, label_metadata),
        "modalities": _modalities(tf),
        "input": {
            "name": INPUT_NAME,
            "layout": "NCXYZ",
            "dtype": "float32",
            "channels": tf.in_channels,
            "spatial_divisor": divisor,
            "description": "normalized image patches at the target spacing in the canonical orientation",
        },
        "output": {"name": OUTPUT_NAME, "layout": "NKXYZ", "dtype": "float32", "classes": tf.num_classes},
        "preprocessing": {
            "orientation": orientation,
            "target_spacing": None if spacing is None else [float(s) for s in spacing],
            "normalization": normalization,
            "resampling": _plan_get(plan, "resampling", default={}),
            "crop_to_nonzero": bool(_plan_get(plan, "crop_to_nonzero", default=False)),
        },
        "inference": _inference_settings(tf),
        "plan": plan,
        "genome": tf.genome.to_dict(),
        "architecture": {
            "in_channels": tf.in_channels,
            "num_classes": tf.num_classes,
            "pool_sizes": [list(p) for p in pool_sizes],
            "parameters": count_parameters(tf.genome, tf.in_channels, tf.num_classes, pool_sizes),
        },
        "metrics": metrics,
        "best_epoch": tf.doc.get("best_epoch"),
        "training": {k: tf.doc[k] for k in ("config", "mirror_axes") if k in tf.doc},
        "candidate": dict(candidate) if candidate else None,
        "library_versions": library_versions(),
    }


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def parse_formats(formats: str | Iterable[str] | None) -> tuple[str, ...]:
    """Normalize ``"onnx,torchscript"`` or a list to known format names, in a stable order."""
    if formats is None:
        return DEFAULT_FORMATS
    items = [f.strip().lower() for f in (formats.split(",") if isinstance(formats, str) else formats)]
    items = [f for f in items if f]
    unknown = [f for f in items if f not in FORMAT_FILES]
    if unknown or not items:
        raise ExportError(
            f"unknown export format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMAT_FILES)}"
        )
    return tuple(f for f in FORMAT_FILES if f in items)


def _example_input(net, in_channels: int, scale: int = 2):
    """A small patch divisible by the network's pooling, batch 2 so the batch axis stays dynamic."""
    import torch

    shape = [scale * int(np.prod([p[a] for p in _pool_sizes(net)])) for a in range(3)]
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, in_channels, *shape, generator=gen)


def _export_onnx(net, example, path: Path) -> None:
    import onnx
    import torch

    dyn = {0: "batch", 2: "x", 3: "y", 4: "z"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # eval-mode InstanceNorm notice; the graph is right
        torch.onnx.export(
            net, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: dyn, OUTPUT_NAME: dyn},
        )
    model = onnx.load(str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path}: ONNX checker refused the exported graph ({str(exc).splitlines()[0]})") from None
    model.doc_string = "EMONAS-Net segmentation network; preprocessing and labels in model.json"
    onnx.save(model, str(path))


def _export_torchscript(net, example, path: Path) -> None:
    import torch

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit deprecation notice
        # No shape-dependent Python control flow in EmonasNet, so the trace holds for any size.
        program = torch.jit.trace(net, example[:1], check_trace=False)
        program.save(str(path))


def _export_pt2(net, example, path: Path) -> None:
    import torch
    from torch.export import Dim

    div = [int(np.prod([p[a] for p in _pool_sizes(net)])) for a in range(3)]
    dims = [Dim(f"d{name}", min=1, max=8192 // div[a]) for a, name in enumerate("xyz")]
    dynamic = {"x": {0: Dim("batch", min=1, max=1024), 2: div[0] * dims[0], 3: div[1] * dims[1], 4: div[2] * dims[2]}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(net, (example,), dynamic_shapes=dynamic)
        torch.export.save(program, str(path))


def _check_parity(net, example, onnx_path: Path) -> float:
    """Largest |ONNX Runtime - PyTorch| logit difference on a random patch (recorded in model.json)."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = example[:1].numpy()
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    with torch.no_grad():
        want = net(example[:1]).numpy()
    return float(np.max(np.abs(got - want)))


def write_model_card(meta: Mapping[str, Any]) -> str:
    """The human-readable model card (Markdown) with the facts of ``model.json``."""
    g = meta["genome"]
    pre, inf, arch = meta["preprocessing"], meta["inference"], meta["architecture"]
    lines = [
        "# EMONAS-Net segmentation model",
        "",
        "For research use only; not a medical device.",
        "",
        "## What it segments",
        "",
        "| label | value | output channel |",
        "|---|---|---|",
    ]
    values = meta["class_values"]
    for name, value in sorted(meta["labels"].items(), key=lambda kv: kv[1]):
        lines.append(f"| {name} | {value} | {values.index(value)} |")
    codes = meta.get("label_codes") or {}
    if codes:
        lines += ["", "Codes in DICOM-SEG (segmented property category / type; `generic` where the dataset gives none):", ""]
        for name, c in codes.items():
            pair = " / ".join(f"{x[0]} {x[1]} {json.dumps(x[2])}" for x in (c["category"], c["type"]))
            lines.append(f"- {name}: {pair} ({c.get('source', 'dataset')})")
    lines += [
        "",
        f"Input modalities, in this order: {', '.join(meta['modalities'])}.",
        "",
        "## Preprocessing the network expects",
        "",
        f"- canonical orientation: {pre.get('orientation')}",
        f"- target spacing (mm, x y z): {pre.get('target_spacing')}",
        f"- normalization per modality: `{json.dumps(pre.get('normalization'))}`",
        "",
        "## Inference",
        "",
        f"- sliding window, patch {inf['patch_size']}, overlap {inf['overlap']}, "
        f"{'Gaussian' if inf['gaussian'] else 'uniform'} weighting",
        f"- test-time mirroring on axes: {inf['mirror_axes'] or 'none'}",
        f"- keep the largest connected component per class: {'yes' if inf['keep_largest_component'] else 'no'}",
        f"- ONNX input `{meta['input']['name']}` (N, C, X, Y, Z) float32, X, Y, Z divisible by "
        f"{meta['input']['spatial_divisor']}; output `{meta['output']['name']}` (N, K, X, Y, Z)",
        "",
        "## Network",
        "",
        f"- genome: `{json.dumps(g)}`",
        f"- {arch['parameters']:,} trainable parameters; pooling per level {arch['pool_sizes']}",
        f"- training profile: {((meta.get('training') or {}).get('config') or {}).get('profile', 'default')}",
    ]
    metrics = meta.get("metrics") or {}
    if metrics:
        lines += ["", "## Validation metrics", ""]
        for k, v in metrics.items():
            lines.append(f"- {k}: {json.dumps(v)}")
    cand = meta.get("candidate")
    if cand:
        lines += ["", "## Where it came from", ""]
        if cand.get("front_position") is not None:
            lines.append(f"Candidate {cand.get('id')} of the search in `{cand.get('run')}`: position "
                         f"{cand['front_position'] + 1} of {cand.get('front_size')} on the Pareto front "
                         "(most accurate first).")
        elif "on_pareto_front" in cand:
            lines.append(f"Candidate {cand.get('id')} of the search in `{cand.get('run')}`: not on the Pareto front.")
        lines.append("")
        for k, v in cand.items():
            lines.append(f"- {k}: {json.dumps(v)}")
    lines += ["", "## Files", "", "| file | SHA-256 |", "|---|---|"]
    for name, info in sorted((meta.get("files") or {}).items()):
        lines.append(f"| {name} | `{info['sha256']}` |")
    lines += ["", "Libraries: " + ", ".join(f"{k} {v}" for k, v in meta["library_versions"].items()), ""]
    return "\n".join(lines)


def export_model(
    source: str | os.PathLike | TrainingFolder,
    out_dir: str | os.PathLike,
    formats: str | Iterable[str] | None = None,
    *,
    candidate: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    dataset: str | os.PathLike | None = None,
    sources: Iterable[Any] = (),
) -> dict[str, Any]:
    """Export a training folder as a model folder at ``out_dir``; returns ``model.json``'s contents.

    ``formats`` chooses among ``onnx``, ``torchscript`` and ``pt2`` (default onnx and torchscript);
    ``candidate`` adds where the network came from (run, candidate id, objectives, Pareto rank);
    ``dataset``, the dataset folder, gives the labels' codes and colours where its metadata has them.
    ``out_dir`` may never be, hold or lie inside the training folder or the other ``sources``
    (:class:`engine.outputs.Source`), not even with ``overwrite``.
    The folder is written next to its destination and renamed into place, so a failed export
    never leaves a half-written model folder behind.
    """
    from engine.atomic import replace_dir
    from engine.outputs import Source, check_output

    fmts = parse_formats(formats)
    out = Path(out_dir)
    src_path = source.path if isinstance(source, TrainingFolder) else Path(source)
    read = [Source(src_path, "training folder"), *([Source(dataset, "dataset")] if dataset else []), *sources]
    check_output(out, read, option="--out")  # before anything is read

    import torch

    tf, net = read_training_folder(src_path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise ExportError(f"{out}: already exists and is not empty (choose another --out)")
    label_metadata = None
    if dataset is not None:
        from engine.data.labels import read_label_metadata

        if not Path(dataset).is_dir():
            raise ExportError(f"{dataset}: not a dataset folder (--dataset gives the labels' codes and colours)")
        try:
            label_metadata = read_label_metadata(dataset, tf.labels)
        except EmonasError as exc:
            raise ExportError(str(exc)) from None
    meta = build_metadata(tf, _pool_sizes(net), candidate=candidate, label_metadata=label_metadata)
    example = _example_input(net, tf.in_channels)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise ExportError(f"{out}: cannot create the model folder ({exc.strerror or exc})") from None
    try:
        torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, tmp / WEIGHTS_FILE)
        if "onnx" in fmts:
            _export_onnx(net, example, tmp / FORMAT_FILES["onnx"])
            diff = _check_parity(net, example, tmp / FORMAT_FILES["onnx"])
            meta["export_check"] = {"onnx_vs_torch_max_abs_logit_diff": diff, "input_shape": list(example[:1].shape)}
            if not diff <= 1e-3:
                raise ExportError(f"{out}: ONNX Runtime disagrees with PyTorch by {diff:.3g} on a test patch")
        if "torchscript" in fmts:
            _export_torchscript(net, example, tmp / FORMAT_FILES["torchscript"])
        if "pt2" in fmts:
            _export_pt2(net, example, tmp / FORMAT_FILES["pt2"])
        meta["formats"] = list(fmts)
        meta["files"] = {
            name: {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
            for name in [WEIGHTS_FILE] + [FORMAT_FILES[f] for f in fmts]
        }
        if "torchscript" in fmts:  # the folder is a MONAI bundle too (its network is model.ts)
            from engine.export.bundle import write_bundle

            for name in write_bundle(tmp, meta):
                meta["files"][name] = {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
        from engine.data.labels import write_colour_tables

        for f in write_colour_tables(tmp / "labels", meta["labels"], meta["label_colors"]):
            meta["files"][f.name] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        (tmp / CARD_FILE).write_text(write_model_card(meta), encoding="utf-8")
        meta["files"][CARD_FILE] = {"sha256": sha256_file(tmp / CARD_FILE), "bytes": (tmp / CARD_FILE).stat().st_size}
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        replace_dir(tmp, out, overwrite=overwrite)  # the old folder goes only once the new one is in place
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(f"{out}: cannot write the model folder ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s to %s (%s)", tf.path, out, ", ".join(fmts))
    return meta


# ---------------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------------
def _require(cond: bool, path: Path, problem: str) -> None:
    if not cond:
        raise ExportError(f"{path}: {problem}")


def _check_schema(meta: Any, path: Path) -> None:
    _require(isinstance(meta, dict), path, "must hold a JSON object")
    _require(meta.get("format") == MODEL_FORMAT, path, f"not an EMONAS model description (format is {meta.get('format')!r})")
    sv = meta.get("schema_version")
    _require(isinstance(sv, int) and not isinstance(sv, bool), path, f"schema_version must be an integer, got {sv!r}")
    _require(sv <= SCHEMA_VERSION, path, f"schema_version {sv} is newer than this program reads ({SCHEMA_VERSION}); update EMONAS")
    for key, kind in (("labels", dict), ("class_values", list), ("modalities", list), ("input", dict), ("output", dict),
                      ("preprocessing", dict), ("inference", dict), ("genome", dict), ("architecture", dict),
                      ("files", dict), ("plan", dict)):
        _require(isinstance(meta.get(key), kind), path, f"field {key!r} missing or not a JSON {kind.__name__.replace('dict', 'object').replace('list', 'array')}")
    try:
        Genome.from_dict(meta["genome"])
    except EmonasError as exc:
        raise ExportError(f"{path}: {exc}") from None
    labels = _labels(meta["labels"], path)
    _require(meta["class_values"] == class_values(labels), path, "class_values do not match the labels")
    arch = meta["architecture"]
    for key in ("in_channels", "num_classes"):
        _as_int(arch.get(key), f"architecture.{key}", path, 1)
    _require(arch["num_classes"] == len(labels), path, "architecture.num_classes differs from the number of labels")
    _require(len(meta["modalities"]) == arch["in_channels"], path, "modalities do not match architecture.in_channels")
    pools = arch.get("pool_sizes")
    _require(isinstance(pools, list) and all(isinstance(p, list) and len(p) == 3 for p in pools), path,
             "architecture.pool_sizes must list (x, y, z) triples")
    inf = meta["inference"]
    patch = inf.get("patch_size")
    _require(isinstance(patch, list) and len(patch) == 3 and all(isinstance(p, int) and p > 0 for p in patch),
             path, f"inference.patch_size must be three positive integers, got {patch!r}")
    try:
        check_voxels(path, patch, arch["in_channels"] + arch["num_classes"], "inference.patch_size")
    except DataError as exc:
        raise ExportError(str(exc)) from None
    ov = inf.get("overlap")
    _require(isinstance(ov, (int, float)) and 0 <= ov < 1, path, f"inference.overlap must be in [0, 1), got {ov!r}")
    sp = meta["preprocessing"].get("target_spacing")
    _require(sp is None or (isinstance(sp, list) and len(sp) == 3 and all(
        isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in sp)), path,
        f"preprocessing.target_spacing must be three positive numbers, got {sp!r}")
    for key in ("label_codes", "label_colors"):  # optional: absent in folders of earlier exports
        _require(isinstance(meta.get(key, {}), dict) and set(meta.get(key, {})) <= set(labels), path,
                 f"{key} must map the model's label names to entries")
    for name, c in (meta.get("label_codes") or {}).items():
        _require(isinstance(c, dict) and all(isinstance(c.get(k), list) and len(c[k]) == 3
                                              and all(isinstance(v, str) and v for v in c[k]) for k in ("category", "type")),
                 path, f"label_codes.{name} must hold category and type as [scheme, value, meaning]")
    for name, rgb in (meta.get("label_colors") or {}).items():
        _require(isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in rgb),
                 path, f"label_colors.{name} must be [r, g, b] in 0-255")
    from engine.export.bundle import BUNDLE_FILES

    for name, info in meta["files"].items():
        _require(isinstance(name, str) and (name in BUNDLE_FILES or (
            name and "/" not in name and "\\" not in name and name not in (".", ".."))),
                 path, f"files lists an invalid name {name!r}")
        _require(isinstance(info, dict) and isinstance(info.get("sha256"), str) and len(info["sha256"]) == 64, path,
                 f"files.{name} has no SHA-256 checksum")
    _require(WEIGHTS_FILE in meta["files"], path, f"files does not list {WEIGHTS_FILE}")


def verify_model_folder(path: str | os.PathLike, *, check_files: bool = True) -> dict[str, Any]:
    """Check a model folder and return its ``model.json``; raise ``ExportError`` if anything is off.

    Checks the metadata's structure and version, that every listed file exists and matches its
    SHA-256 checksum, and that no unlisted model file sits in the folder.
    """
    folder = Path(path)
    _require(folder.is_dir(), folder, "not a model folder (no such directory)")
    mj = folder / MODEL_JSON
    _require(mj.is_file(), folder, f"not a model folder ({MODEL_JSON} missing)")
    meta = _read_json(mj)
    _check_schema(meta, mj)
    if check_files:
        for name, info in meta["files"].items():
            f = folder / name
            _require(f.is_file(), f, "listed in model.json but missing")
            _require(sha256_file(f) == info["sha256"], f,
                     "checksum mismatch with model.json (the file was changed after export); refusing to load it")
        from engine.export.bundle import BUNDLE_MODEL

        for f in [*FORMAT_FILES.values(), BUNDLE_MODEL]:
            _require(not (folder / f).exists() or f in meta["files"], folder / f,
                     "not listed in model.json; refusing an unverified model file")
    return meta


def is_model_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like a model folder (has ``model.json``), verified or not."""
    return (Path(path) / MODEL_JSON).is_file()
