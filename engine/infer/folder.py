"""Reading a training folder (written by ``emonas train``), and predicting one case's files.

A training folder holds all prediction needs: ``training.json`` (genome, channels, classes, label
names and values, modalities, the plan with its normalization, patch and pooling) and
``weights.pt`` (the best state_dict, loaded with ``weights_only=True``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import DataError, EmonasError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

SUPPORTED_SCHEMA = 1


@dataclass
class TrainingFolder:
    """The contents of a training folder, as plain data plus the path of its weights."""

    path: Path
    genome: Any
    in_channels: int
    num_classes: int
    labels: dict[str, int]
    modalities: list[str]
    plan: Any  # engine.data.Plan
    patch_size: tuple[int, int, int]
    pool_sizes: list | None
    config: dict[str, Any]
    doc: dict[str, Any]

    @property
    def mirror_axes(self) -> list[int]:
        """The axes training mirrored (what ``--mirror`` averages over); folders written before the
        record: x for the paper profile, every axis for the default one, as those trainings did."""
        from engine.data.mirror import parse_axes

        given = self.doc.get("mirror_axes")
        if given is None:
            return [0] if self.config.get("profile") == "paper" else [0, 1, 2]
        try:
            return parse_axes(given, "mirror_axes")
        except EmonasError as exc:
            raise DataError(self.path / "training.json", str(exc)) from None

    @property
    def weights_path(self) -> Path:
        return self.path / "weights.pt"

    def build_model(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The network with the folder's best weights, in eval mode on ``device``."""
        import torch

        from engine.network import build_network

        model = build_network(self.genome, self.in_channels, self.num_classes, self.pool_sizes)
        try:
            state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise DataError(self.weights_path, "missing: the training folder has no weights") from None
        except Exception as exc:  # a truncated or foreign file: one line, not a traceback
            raise DataError(self.weights_path, f"cannot load weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as exc:
            raise DataError(self.weights_path, f"weights do not fit the genome's network ({str(exc).splitlines()[0]})") from None
        return model.to(device).eval()


def load_training_folder(folder: str | Path) -> TrainingFolder:
    """Read ``folder/training.json``; raises ``DataError`` naming the file and the problem."""
    from engine.data import Plan
    from engine.data.io import check_voxels
    from engine.data.layouts import label_value
    from engine.genome import Genome

    folder = Path(folder)
    meta = folder / "training.json"
    if not folder.is_dir():
        raise DataError(folder, "not a training folder (no such directory)")
    if not meta.is_file():
        raise DataError(meta, "missing: not a training folder written by emonas train")
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(meta, f"cannot read ({exc})") from None
    if not isinstance(doc, dict):
        raise DataError(meta, "expected a JSON object")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > SUPPORTED_SCHEMA:
        raise DataError(meta, f"unsupported schema_version {version!r} (this version reads up to {SUPPORTED_SCHEMA})")
    try:
        genome = Genome.from_dict(doc["genome"])
        plan = Plan.from_dict(doc["plan"])
        labels = {str(k): label_value(k, v, meta) for k, v in doc["labels"].items()}
        tf = TrainingFolder(
            path=folder,
            genome=genome,
            in_channels=int(doc["in_channels"]),
            num_classes=int(doc["num_classes"]),
            labels=labels,
            modalities=list(doc.get("modalities") or []),
            plan=plan,
            patch_size=tuple(int(p) for p in (doc.get("patch_size") or plan.patch_size)),  # type: ignore[arg-type]
            pool_sizes=doc.get("pool_sizes"),
            config=dict(doc.get("config") or {}),
            doc=doc,
        )
    except KeyError as exc:
        raise DataError(meta, f"missing field {exc.args[0]!r}") from None
    except EmonasError as exc:
        raise DataError(meta, str(exc)) from None
    except (TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise DataError(meta, f"malformed field ({exc})") from None
    check_voxels(meta, tf.patch_size, tf.in_channels + tf.num_classes, "patch_size")
    if len(tf.labels) != tf.num_classes:
        raise DataError(meta, f"{len(tf.labels)} labels for {tf.num_classes} classes")
    return tf


def output_name(first_input: Path) -> str:
    """The output file name of a case: its first input's name as NIfTI (``scan.mha`` gives
    ``scan.nii.gz``, a DICOM folder ``NAME`` gives ``NAME.nii.gz``)."""
    from engine.data.io import image_suffix, split_series, strip_suffix

    folder, uid = split_series(first_input)
    if uid is not None:  # FOLDER#SERIES_UID: one of several series in a folder
        return f"{folder.name}_{uid}.nii.gz"
    if first_input.is_dir() or image_suffix(first_input) is None:
        return first_input.name + ".nii.gz"
    return strip_suffix(first_input) + ".nii.gz"


def predict_case_files(predictor, paths: list[Path], out_dir: Path) -> Path:
    """Read one case (a path per modality), predict, write its label map in the source geometry."""
    from engine.data import preprocess_images, read_image, restore_label, write_label

    if predictor.plan is None:
        raise DataError(None, "this predictor has no plan: it cannot preprocess scans")
    try:
        images = [read_image(p) for p in paths]
        array, props = preprocess_images(images, predictor.plan)
        labels = predictor.predict_array(array)
    except MemoryError:
        raise DataError(paths[0], "out of memory segmenting this scan") from None
    restored = restore_label(labels, props)
    out = out_dir / output_name(paths[0])
    written = write_label(out, restored, images[0])
    log.info("%s -> %s", paths[0], written)
    return Path(written)


def case_inputs(inputs: list[str | Path], n_modalities: int) -> list[list[Path]]:
    """Group command-line inputs into cases: with one modality each input is a case; with more,
    consecutive groups of ``n_modalities`` paths, in the training's modality order."""
    from engine.data.io import read_header, split_series

    paths = [Path(p) for p in inputs]
    for p in paths:
        if not split_series(p)[0].exists():
            raise DataError(p, "input does not exist")
        read_header(p)  # every input checked (DICOM series included) before anything is written
    n = max(1, int(n_modalities))
    if n == 1:
        return [[p] for p in paths]
    if len(paths) % n:
        raise DataError(paths[0], f"{len(paths)} inputs do not divide into cases of {n} modalities")
    return [paths[i : i + n] for i in range(0, len(paths), n)]
