"""Reading a training folder (written by ``emonas train``), and predicting one case's files.

A training folder holds all prediction needs: ``training.json`` (genome, channels, classes, label
names and values, modalities, the plan with its normalization, patch and pooling) and
``weights.pt`` (the best state_dict, loaded with ``weights_only=True``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from engine.errors import DataError, EmonasError

if TYPE_CHECKING:
    import torch

    from engine.data import Plan

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
    plan: Plan
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


def predict_case_files(predictor, paths: list[Path], out_dir: Path, name: str | None = None,
                       save_probabilities: bool = False) -> Path:
    """Read one case (a path per modality), predict, write its label map in the source geometry.

    The output is ``out_dir/NAME.nii.gz`` (``name`` defaults to the first input's, see
    :func:`output_name`). With ``save_probabilities``, ``NAME.npz`` beside it holds ``probabilities``,
    float16 (classes, X, Y, Z) on the scan's own grid, and the label map is their argmax (before the
    largest-component post-processing, as nnU-Net's probabilities are)."""
    from engine.data import preprocess_images, read_image, restore_label, write_label

    if predictor.plan is None:
        raise DataError(None, "this predictor has no plan: it cannot preprocess scans")
    out = out_dir / (f"{name}.nii.gz" if name is not None else output_name(paths[0]))
    try:
        images = [read_image(p) for p in paths]
        array, props = preprocess_images(images, predictor.plan)
        if save_probabilities:
            probs = restore_probabilities(predictor.predict_probabilities(array), props)
        else:
            labels = predictor.predict_array(array)
    except MemoryError:
        raise DataError(paths[0], "out of memory segmenting this scan") from None
    if save_probabilities:
        values = np.asarray(props["label_values"])
        restored = values.astype(np.uint8 if values.max() <= 255 else np.int16)[predictor.postprocess(
            probs.argmax(0).astype(np.uint8))]
        _save_npz(probability_path(out), probs)
    else:
        restored = restore_label(labels, props)
    written = write_label(out, restored, images[0])
    log.info("%s -> %s", paths[0], written)
    return Path(written)


def probability_path(label_path: Path) -> Path:
    """``CASE.npz`` beside the label map ``CASE.nii.gz``."""
    from engine.data.io import strip_suffix

    return Path(label_path).with_name(strip_suffix(label_path) + ".npz")


def _save_npz(path: Path, probs: np.ndarray) -> None:
    from engine.atomic import atomic_file

    with atomic_file(path) as tmp:  # never half a file under the final name
        np.savez_compressed(tmp, probabilities=probs)


def restore_probabilities(probs: np.ndarray, properties: dict) -> np.ndarray:
    """Class probabilities (K, X, Y, Z) at the plan's spacing back on the source scan's grid, float16.

    Each class is resampled linearly (within slices only across a thick-slice axis), the cropped
    border is background, and the reorientation is undone: the inverse of the preprocessing, as
    :func:`engine.data.restore_label` does for label maps."""
    from engine.data.preprocess import _inverse_ornt, _resample
    from engine.data.validate import reorient

    probs = np.asarray(probs, np.float32)
    if tuple(probs.shape[1:]) != tuple(properties["shape"]):
        raise DataError(None, f"probabilities of shape {probs.shape[1:]} do not match the grid {tuple(properties['shape'])}")
    box = tuple(slice(lo, hi) for lo, hi in properties["bbox"])
    inverse = _inverse_ornt(np.asarray(properties["ornt"]))
    out = []
    for k, channel in enumerate(probs):
        full = np.full(properties["ras_shape"], 1.0 if k == 0 else 0.0, np.float32)
        full[box] = _resample(channel, properties["cropped_shape"], 1, properties.get("separate_z_axis"))
        out.append(reorient(full, inverse))
    restored = np.stack(out).astype(np.float16)
    assert tuple(restored.shape[1:]) == tuple(properties["source_shape"])
    return restored


def output_complete(label_path: Path, first_input: Path, num_classes: int, probabilities: bool) -> bool:
    """Whether a case's outputs exist whole: the label map reads back in full on its scan's grid, and
    with ``probabilities`` its ``.npz`` holds float16 ``probabilities`` (classes x that grid)."""
    from engine.data.io import read_header, read_label

    try:
        shape = tuple(read_header(first_input).shape)
        labels, _ = read_label(label_path)  # reads every voxel: a truncated file fails here
        if tuple(labels.shape) != shape:
            return False
        if probabilities:
            with np.load(probability_path(label_path)) as npz:
                p = npz["probabilities"]
                return p.dtype == np.float16 and tuple(p.shape) == (num_classes, *shape)
    except Exception:  # noqa: BLE001 - unreadable, missing or foreign: predicted again
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Inputs: files, folders of files (nnU-Net's CASE_XXXX naming) and DICOM series folders
# ---------------------------------------------------------------------------------------------
_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


def is_dicom_folder(folder: Path) -> bool:
    """Whether ``folder`` holds DICOM files, judged by content on its first few files, not by their
    names: the ``DICM`` marker after the 128-byte preamble, or (older exports without a preamble) a
    file that is no scan format and that the DICOM reader accepts."""
    from engine.data.io import _dicom_dataset, image_suffix

    if not folder.is_dir():
        return False
    checked = 0
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        try:
            with open(p, "rb") as fh:
                fh.seek(128)
                if fh.read(4) == b"DICM":
                    return True
        except OSError:
            pass
        if image_suffix(p) is None and _dicom_dataset(p) is not None:
            return True
        checked += 1
        if checked >= 8:
            break
    return False


def folder_cases(folder: Path, n_modalities: int) -> list[tuple[str, list[Path]]]:
    """The cases of a folder: (case id, one path per modality).

    A folder of DICOM files is one case named by the folder. Otherwise its scans (NIfTI, MetaImage,
    NRRD) group by nnU-Net's modality suffix (``CASE_0000.nii.gz``, ``CASE_0001.nii.gz`` ... one per
    modality, in channel order); with a one-modality model, scans without the suffix are one case each,
    named by the file. Sub-folders of DICOM files are one case each. Other files are left alone.
    """
    from engine.data.io import image_suffix, strip_suffix

    if is_dicom_folder(folder):
        return [(folder.name, [folder])]
    n = max(1, int(n_modalities))
    entries = [p for p in sorted(folder.iterdir()) if not p.name.startswith(".")]
    scans = [p for p in entries if p.is_file() and image_suffix(p)]
    series = [p for p in entries if p.is_dir() and is_dicom_folder(p)]
    if series and n > 1:
        raise DataError(series[0], f"a DICOM series folder is one modality; the model expects {n}: give each case "
                                   "with --case SERIES_A,SERIES_B")
    cases: list[tuple[str, list[Path]]] = [(p.name, [p]) for p in series]
    parsed = [(p, _CHANNEL.match(strip_suffix(p))) for p in scans]
    suffixed = [(p, m) for p, m in parsed if m]
    if n == 1 and {m.group(1) for _, m in suffixed} != {m.group(1) for _, m in suffixed if int(m.group(2)) == 0}:
        suffixed = []  # names like scan_2019 without a scan_0000: not modality numbers for a one-modality model
    if not suffixed:
        if n > 1 and scans:
            raise DataError(scans[0], f"the model expects {n} modalities: name each case's files CASE_0000, "
                                      f"CASE_0001 ... CASE_{n - 1:04d} (nnU-Net's naming), or give --case A,B")
        return cases + [(strip_suffix(p), [p]) for p in scans]
    plain = [p for p, m in parsed if not m or (p, m) not in suffixed]
    if plain:
        raise DataError(plain[0], "does not follow CASE_XXXX naming like the other scans of the folder")
    grouped: dict[str, dict[int, Path]] = {}
    for p, m in suffixed:
        channels = grouped.setdefault(m.group(1), {})
        channel = int(m.group(2))
        if channel in channels:
            raise DataError(p, f"case {m.group(1)} has channel {channel:04d} twice ({channels[channel].name})")
        channels[channel] = p
    for cid, channels in sorted(grouped.items()):
        if sorted(channels) != list(range(n)):
            missing = [f"{cid}_{c:04d}" for c in range(n) if c not in channels]
            extra = [channels[c].name for c in sorted(channels) if c >= n]
            what = f"misses {', '.join(missing)}" if missing else f"has {', '.join(extra)} beyond them"
            raise DataError(folder, f"case {cid}: the model expects {n} modalities (channels 0000..{n - 1:04d}); it {what}")
        cases.append((cid, [channels[c] for c in range(n)]))
    return cases


def gather_cases(inputs: Sequence[str | Path], n_modalities: int,
                 groups: Sequence[Sequence[str | Path]] = ()) -> list[tuple[str, list[Path]]]:
    """Cases named by id from command-line inputs: each folder's cases (:func:`folder_cases`), the
    files between them grouped as :func:`case_inputs` does, and the explicit ``groups`` (one path per
    modality each); loose files and groups are named like their first file. Two cases with one name
    are refused before anything is predicted."""
    from engine.data.io import read_header, split_series

    cases: list[tuple[str, list[Path]]] = []
    loose: list[Path] = []
    folder_paths: list[Path] = []

    def named(group: list[Path]) -> tuple[str, list[Path]]:
        return (output_name(group[0])[: -len(".nii.gz")], group)

    def flush() -> None:
        cases.extend(named(g) for g in (case_inputs(loose, n_modalities) if loose else []))
        loose.clear()

    for raw in inputs:
        p = Path(raw)
        if not split_series(p)[0].exists():
            raise DataError(p, "input does not exist")
        if p.is_dir() and not is_dicom_folder(p):
            flush()
            found = folder_cases(p, n_modalities)
            if not found:
                raise DataError(p, "folder holds no scans (NIfTI, MetaImage, NRRD) and no DICOM series")
            folder_paths += [q for _, paths in found for q in paths]
            cases += found
        else:
            loose.append(p)
    flush()
    for group in groups:
        cases.append(named(case_inputs(list(group), len(group))[0]))
    from engine.outputs import check_distinct_names

    check_distinct_names([(f"{cid}.nii.gz", paths[0]) for cid, paths in cases], option="-o")
    for q in folder_paths:  # every scan checked before anything is written (loose ones by case_inputs)
        read_header(q)
    return cases


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


def check_prediction_outputs(cases, out_dir, model=None, option: str = "-o", names=None,
                             probabilities: bool = False) -> None:
    """Before any work: ``out_dir`` and every file predicting ``cases`` (lists of scan paths) writes
    there must be neither a source (an input scan or its data files, the model folder) nor hold one,
    and no two cases may map to one output name (label map, colour tables, DICOM-SEG, and with
    ``probabilities`` the ``.npz``). ``names`` are the cases' output names (default: their first scan's)."""
    from engine.data.io import split_series
    from engine.data.labels import ITKSNAP_SUFFIX, SLICER_SUFFIX
    from engine.outputs import Source, check_distinct_names, check_output, image_sources

    sources = [Source(model, "model folder")] if model is not None else []
    for case in cases:
        for p in case:
            sources += image_sources(p)
    out_dir = Path(out_dir)
    check_output(out_dir, sources, option=option)
    outputs = []
    for i, case in enumerate(cases):
        stem = names[i] if names is not None else output_name(Path(case[0]))[: -len(".nii.gz")]
        suffixes = [".nii.gz", SLICER_SUFFIX, ITKSNAP_SUFFIX] + ([".npz"] if probabilities else [])
        outputs += [(stem + suffix, case[0]) for suffix in suffixes]
        if split_series(case[0])[0].is_dir():  # a DICOM series: its DICOM-SEG too
            outputs.append((f"{stem}_seg.dcm", case[0]))
    check_distinct_names(outputs, option=option)
    for name, _ in outputs:
        check_output(out_dir / name, sources, option=option)
