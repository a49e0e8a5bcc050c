"""Dataset layouts, detected from a folder: MSD, nnU-Net v2 raw, ACDC, PROMISE12 and plain folders.

A layout reader only lists files and reads ``dataset.json``; it never opens an image. It returns a
:class:`LayoutResult` with the cases, the modalities, the labels (name -> value, background first,
names exactly as declared) and the structural problems it found (a listed file that is missing, a
label file with no image ...), which ``open_dataset`` and ``emonas check`` report.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from engine.data.io import IMAGE_SUFFIXES, image_files, image_suffix, split_series, strip_suffix
from engine.errors import DataError

log = logging.getLogger(__name__)

LAYOUTS = ("msd", "nnunet", "acdc", "promise12", "plain")


@dataclass(frozen=True)
class Case:
    """One training case: its image file(s) (one per modality, or one multi-channel file) and label."""

    case_id: str
    image_paths: list[Path]
    label_path: Path | None
    group: str = ""  # cases of one patient (ACDC's ED and ES frames) share a group and a split

    @property
    def patient(self) -> str:
        return self.group or self.case_id


@dataclass(frozen=True)
class FileProblem:
    """A problem with a file; ``fatal`` ones make a case unusable, the others are warnings."""

    path: str
    message: str
    fatal: bool = True
    case_id: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_dict(self) -> dict:
        return {"path": self.path, "message": self.message, "fatal": self.fatal, "case_id": self.case_id}


@dataclass
class LayoutResult:
    layout: str
    name: str
    cases: list[Case]
    modalities: list[str]
    labels: dict[str, int]
    problems: list[FileProblem] = field(default_factory=list)
    description: str = ""
    mirror_axes: list[int] | None = None  # dataset.json's explicit "mirror_axes" (engine.data.mirror)


def label_value(name, value, path: Path, key: str = "labels") -> int:
    """A declared label value as an integer in 0..255; a non-integer, non-finite or out-of-range value
    (``1.5``, ``Infinity``, ``true``, ``300``) is refused naming the key, never rounded."""
    v = value
    if isinstance(v, str):
        try:
            v = int(v.strip())
        except ValueError:
            v = None
    elif isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise DataError(path, f"{key}: label {name!r} has value {value!r}; label values are integers in 0..255")
    if not 0 <= v <= 255:
        raise DataError(path, f"{key}: label {name!r} has value {v}; label values must lie in 0..255")
    return v


def _sorted_labels(labels: dict[str, int], path: Path) -> dict[str, int]:
    values = list(labels.values())
    if len(set(values)) != len(values):
        raise DataError(path, f"labels declare the same value twice: {labels}")
    if 0 not in values:
        raise DataError(path, "labels must declare the background value 0")
    if any(v < 0 or v > 255 for v in values):
        raise DataError(path, "label values must lie in 0..255")
    if len(values) < 2:
        raise DataError(path, "labels must declare at least one foreground label")
    if IGNORE_LABEL in labels and labels[IGNORE_LABEL] != max(values):
        raise DataError(path, f"the '{IGNORE_LABEL}' label must have the highest value, as nnU-Net v2 requires "
                              f"(it has {labels[IGNORE_LABEL]}, another {max(values)})")
    if IGNORE_LABEL in labels and len(values) < 3:
        raise DataError(path, f"labels must declare a foreground label besides '{IGNORE_LABEL}'")
    return dict(sorted(labels.items(), key=lambda kv: kv[1]))


#: nnU-Net v2's ignore label: the highest label value, named exactly so; its voxels are unannotated.
IGNORE_LABEL = "ignore"


def split_ignore(labels: dict[str, int]) -> tuple[dict[str, int], int | None]:
    """``labels`` without nnU-Net's ``ignore`` label, and its value (None without one)."""
    if IGNORE_LABEL not in labels:
        return dict(labels), None
    return {k: v for k, v in labels.items() if k != IGNORE_LABEL}, int(labels[IGNORE_LABEL])


#: Public dataset.json files are at most a few megabytes; a larger one is refused before parsing.
MAX_DATASET_JSON_BYTES = 64 * 2**20


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(path, "missing: an MSD or nnU-Net dataset folder needs dataset.json")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(path, f"cannot read ({exc.strerror or exc})") from None
    if size > MAX_DATASET_JSON_BYTES:
        raise DataError(path, f"is {size / 2**20:.0f} MB; a dataset description over {MAX_DATASET_JSON_BYTES // 2**20} MB is refused")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise DataError(path, "must hold a JSON object")
    return data


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if image_suffix(p) and not p.name.startswith("."))


def _unique(pairs, what: str = "case id") -> dict:
    """{id: path} of (id, path) pairs; two files giving one id are refused, never merged into one case."""
    out: dict = {}
    for key, path in pairs:
        if key in out:
            raise DataError(path, f"gives the {what} {key!r} already given by {out[key]}; two cases with one id "
                                  "would be merged: rename or remove one")
        out[key] = path
    return out


def _in_folder(root: Path, rel: str) -> Path:
    rel = str(rel)
    return (root / rel[2:]) if rel.startswith("./") else (root / rel)


def _mirror_setting(js: Path, meta: dict) -> list[int] | None:
    """dataset.json's "mirror_axes" (axes training may mirror), checked; None when absent."""
    if meta.get("mirror_axes") is None:
        return None
    from engine.data.mirror import parse_axes
    from engine.errors import ConfigError

    try:
        return parse_axes(meta["mirror_axes"], "mirror_axes")
    except ConfigError as exc:
        raise DataError(js, str(exc)) from None


# ---------------------------------------------------------------------------------------- MSD


def _msd(root: Path, meta: dict) -> LayoutResult:
    js = root / "dataset.json"
    modality = meta.get("modality")
    if not isinstance(modality, dict) or not modality:
        raise DataError(js, "'modality' must map channel numbers to names, e.g. {\"0\": \"MRI\"}")
    try:
        modalities = [str(modality[k]) for k in sorted(modality, key=int)]
        raw = meta.get("labels", {})
        pairs = list(raw.items())
    except (ValueError, TypeError, AttributeError):
        raise DataError(js, "'modality' and 'labels' keys must be integers as strings, e.g. {\"0\": \"background\"}") from None
    labels = {}
    for v, name in pairs:
        if str(name) in labels:
            raise DataError(js, f"labels: the name {str(name)!r} is declared twice")
        labels[str(name)] = label_value(name, v, js)
    labels = _sorted_labels(labels, js)
    training = meta.get("training")
    if not isinstance(training, list) or not training:
        raise DataError(js, "'training' must list the training cases ({\"image\": ..., \"label\": ...})")
    cases, problems, used_labels = [], [], set()
    for i, entry in enumerate(training):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise DataError(js, f"training entry {i} must have 'image' and 'label'")
        img, lab = _in_folder(root, entry["image"]), _in_folder(root, entry["label"])
        cid = strip_suffix(img)
        if any(c.case_id == cid for c in cases):
            raise DataError(js, f"training entry {i} ({entry['image']}) repeats the case id {cid!r}; two cases with "
                                "one id would be merged: remove or rename one")
        used_labels.add(lab.name)
        if not split_series(img)[0].exists():  # a file, a DICOM folder or FOLDER#SERIES_UID
            problems.append(FileProblem(str(img), "image listed in dataset.json not found", True, cid))
        if not lab.exists():
            problems.append(FileProblem(str(lab), "label listed in dataset.json not found", True, cid))
        cases.append(Case(cid, [img], lab))
    images_tr = {p.name for p in _image_files(root / "imagesTr")}
    for lab in _image_files(root / "labelsTr"):
        if lab.name not in used_labels and lab.name not in images_tr:
            problems.append(FileProblem(str(lab), "label file with no image (not listed in dataset.json)", True))
    return LayoutResult("msd", str(meta.get("name") or root.name), cases, modalities, labels, problems,
                        str(meta.get("description", "")), _mirror_setting(js, meta))


# ---------------------------------------------------------------------------------------- nnU-Net v2


def _nnunet(root: Path, meta: dict, images: str = "imagesTr", labels_dir: str = "labelsTr") -> LayoutResult:
    """The cases of ``images``/``labels_dir`` (imagesTr/labelsTr, or imagesTs/labelsTs for a test set)."""
    js = root / "dataset.json"
    channels = meta.get("channel_names")
    if not isinstance(channels, dict) or not channels:
        raise DataError(js, "'channel_names' must map channel numbers to names, e.g. {\"0\": \"T2\"}")
    try:
        modalities = [str(channels[k]) for k in sorted(channels, key=int)]
    except ValueError:
        raise DataError(js, "'channel_names' keys must be integers as strings") from None
    raw = meta.get("labels")
    if not isinstance(raw, dict):
        raise DataError(js, "'labels' must map names to values, e.g. {\"background\": 0, \"tumour\": 1}")
    labels = {}
    for name, v in raw.items():
        if isinstance(v, (list, tuple)):
            raise DataError(js, f"label {name!r} is a region (list of values {list(v)}); region-based training "
                                "(nnU-Net's overlapping regions) is not supported: give each structure one value")
        labels[str(name)] = label_value(name, v, js)
    labels = _sorted_labels(labels, js)
    ending = str(meta.get("file_ending", ".nii.gz"))
    pat = re.compile(r"^(.*)_(\d{4})" + re.escape(ending) + r"$")
    by_case: dict[str, dict[int, Path]] = {}
    problems = []
    for p in sorted((root / images).iterdir()) if (root / images).is_dir() else []:
        if p.name.startswith("."):
            continue
        m = pat.match(p.name)
        if not m:
            if image_suffix(p):
                problems.append(FileProblem(str(p), f"image name does not follow CASE_XXXX{ending}", False))
            continue
        by_case.setdefault(m.group(1), {})[int(m.group(2))] = p
    if not by_case:
        raise DataError(root / images, f"no images named CASE_0000{ending}")
    cases = []
    for cid, chans in sorted(by_case.items()):
        lab = root / labels_dir / f"{cid}{ending}"
        missing = [c for c in range(len(modalities)) if c not in chans]
        extra = [c for c in chans if c >= len(modalities)]
        if missing:
            problems.append(FileProblem(str(root / images / f"{cid}_{missing[0]:04d}{ending}"),
                                    f"channel file missing ({len(modalities)} channels declared in dataset.json)", True, cid))
        if extra:
            problems.append(FileProblem(str(chans[extra[0]]), f"channel {extra[0]} beyond the {len(modalities)} declared", True, cid))
        if not lab.exists():
            problems.append(FileProblem(str(lab), "label file not found for this case", True, cid))
        paths = [chans.get(c, root / images / f"{cid}_{c:04d}{ending}") for c in range(len(modalities))]
        cases.append(Case(cid, paths, lab))
    known = {f"{cid}{ending}" for cid in by_case}
    for lab in [p for p in _image_files(root / labels_dir) if p.name.endswith(ending)]:
        if lab.name not in known:
            problems.append(FileProblem(str(lab), "label file with no image", True))
    n = meta.get("numTraining")
    if images == "imagesTr" and isinstance(n, int) and n != len(cases):
        problems.append(FileProblem(str(js), f"numTraining says {n} but imagesTr holds {len(cases)} cases", False))
    return LayoutResult("nnunet", str(meta.get("name") or root.name), cases, modalities, labels, problems,
                        str(meta.get("description", "")), _mirror_setting(js, meta))


# ---------------------------------------------------------------------------------------- ACDC

ACDC_LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
_ACDC_DIR = re.compile(r"^patient\d+$")


def _acdc_root(root: Path) -> Path | None:
    for base in (root, root / "training"):
        if base.is_dir() and any(p.is_dir() and _ACDC_DIR.match(p.name) for p in base.iterdir()):
            return base
    return None


def _acdc(root: Path, base: Path) -> LayoutResult:
    cases, problems = [], []
    frame = re.compile(r"^(patient\d+)_frame(\d+)(_gt)?\.nii(\.gz)?$")
    for pdir in sorted(p for p in base.iterdir() if p.is_dir() and _ACDC_DIR.match(p.name)):
        found: list = []
        for f in sorted(pdir.iterdir()):
            m = frame.match(f.name)
            if m:
                found.append((bool(m.group(3)), f"{m.group(1)}_frame{m.group(2)}", f))
        images = _unique((cid, f) for is_label, cid, f in found if not is_label)
        labels = _unique(((cid, f) for is_label, cid, f in found if is_label), "label of case")
        for cid, lab in labels.items():
            if cid not in images:
                problems.append(FileProblem(str(lab), "label file with no image", True))
            else:
                cases.append(Case(cid, [images[cid]], lab, group=pdir.name))
    if not cases and not problems:
        raise DataError(base, "ACDC folder without any patientXXX_frameYY.nii.gz / _gt.nii.gz pair")
    return LayoutResult("acdc", root.name, cases, ["cine-MRI"], dict(ACDC_LABELS), problems,
                        "ACDC cardiac cine MRI, ED and ES frames")


# ---------------------------------------------------------------------------------------- PROMISE12

_PROMISE = re.compile(r"^(Case\d+)(_segmentation)?\.(mhd|mha)$", re.IGNORECASE)


def _promise_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if _PROMISE.match(p.name)) if root.is_dir() else []


def _promise(root: Path) -> LayoutResult:
    files = [(_PROMISE.match(f.name), f) for f in _promise_files(root)]
    images = _unique((m.group(1), f) for m, f in files if not m.group(2))
    labels = _unique(((m.group(1), f) for m, f in files if m.group(2)), "label of case")
    cases, problems = [], []
    for cid, lab in sorted(labels.items()):
        if cid not in images:
            problems.append(FileProblem(str(lab), "label file with no image", True))
        else:
            cases.append(Case(cid, [images[cid]], lab))
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        log.info("%s: %d PROMISE12 images without segmentation (test cases) left out", root, len(unlabelled))
    return LayoutResult("promise12", root.name, cases, ["T2"], {"background": 0, "prostate": 1}, problems,
                        "PROMISE12 prostate T2 MRI")


# ---------------------------------------------------------------------------------------- plain

PLAIN_IMAGE_DIRS = ("images", "image", "imgs", "scans")
PLAIN_LABEL_DIRS = ("labels", "label", "masks", "segmentations", "gt")
_LABEL_TAGS = ("_segmentation", "_seg", "_label", "_labels", "_mask", "_gt")


def _plain_dirs(root: Path) -> tuple[Path, Path] | None:
    imgs = next((root / d for d in PLAIN_IMAGE_DIRS if (root / d).is_dir()), None)
    labs = next((root / d for d in PLAIN_LABEL_DIRS if (root / d).is_dir()), None)
    return (imgs, labs) if imgs is not None and labs is not None else None


def _plain(root: Path, imgs: Path, labs: Path) -> LayoutResult:
    """Images in one folder, labels with the same names (optionally ``_seg``, ``_mask`` ...) in another.

    An optional ``labels.json`` in the root names the labels ({"background": 0, "liver": 1}, or
    {"labels": {...}, "modalities": [...]}); without it the labels are read from the label files.
    """
    stems = []
    for lab in _image_files(labs):
        stem = strip_suffix(lab)
        for tag in _LABEL_TAGS:
            if stem.lower().endswith(tag):
                stem = stem[: -len(tag)]
                break
        stems.append((stem, lab))
    label_files = _unique(stems, "label of case")
    images = _unique([(strip_suffix(p), p) for p in _image_files(imgs)]
                     + [(p.name, p) for p in sorted(imgs.iterdir()) if p.is_dir()])  # DICOM series folders
    cases, problems = [], []
    for cid, lab in sorted(label_files.items()):
        if cid not in images:
            problems.append(FileProblem(str(lab), "label file with no image", True))
        else:
            cases.append(Case(cid, [images[cid]], lab))
    for cid in sorted(set(images) - set(label_files)):
        problems.append(FileProblem(str(images[cid]), "image without a label file (left out)", False))
    modalities, labels = ["image"], None
    meta_path = root / "labels.json"
    if meta_path.exists():
        meta = _read_json(meta_path)
        raw = meta.get("labels", meta)
        if not isinstance(raw, dict):
            raise DataError(meta_path, "must map label names to integer values")
        labels = _sorted_labels({str(k): label_value(k, v, meta_path) for k, v in raw.items()}, meta_path)
        if isinstance(meta.get("modalities"), list):
            modalities = [str(m) for m in meta["modalities"]]
    if labels is None:
        labels = _labels_from_files([c.label_path for c in cases])
    return LayoutResult("plain", root.name, cases, modalities, labels, problems)


def _labels_from_files(paths: list[Path]) -> dict[str, int]:
    """Label names and values found in the label files themselves (plain folders without labels.json)."""
    import numpy as np

    from engine.data.io import read_label

    values: set[int] = {0}
    for p in paths:
        try:
            arr, _ = read_label(p)
        except DataError:
            continue  # reported with the case
        u = np.unique(arr)
        values.update(int(v) for v in u if float(v).is_integer() and 0 <= v <= 255)
    return {("background" if v == 0 else f"label_{v}"): v for v in sorted(values)}


# ---------------------------------------------------------------------------------------- detection


def detect_layout(root: Path) -> LayoutResult:
    """Read a dataset folder in whichever known layout it has; every case file must lie inside it."""
    result = _detect(Path(root))
    _confine(Path(root), result)
    return result


def detect_test_layout(root: Path) -> LayoutResult | None:
    """The labelled test cases of an MSD or nnU-Net folder (``imagesTs`` with ``labelsTs``), or None
    when it has no ``labelsTs``; the modalities and labels are the training cases'."""
    root = Path(root)
    if not (root / "imagesTs").is_dir() or not (root / "labelsTs").is_dir():
        return None
    train = detect_layout(root)
    if train.layout == "nnunet":
        result = _nnunet(root, _read_json(root / "dataset.json"), "imagesTs", "labelsTs")
    elif train.layout == "msd":
        labels = {strip_suffix(p): p for p in _image_files(root / "labelsTs")}
        cases = [Case(strip_suffix(p), [p], labels[strip_suffix(p)]) for p in _image_files(root / "imagesTs")
                 if strip_suffix(p) in labels]
        result = LayoutResult("msd", train.name, cases, train.modalities, train.labels)
    else:
        return None
    if not result.cases:
        raise DataError(root / "labelsTs", "no label file matches an image of imagesTs")
    _confine(root, result)
    return result


def _confine(root: Path, result: LayoutResult) -> None:
    """Refuse a case file outside the dataset folder (a ../ or absolute entry, or a link pointing out)."""
    base = root.resolve()
    for case in result.cases:
        for path in [*case.image_paths, case.label_path]:
            if path is None:
                continue
            try:  # the header and every data file it names (a MetaImage's .raw, an NRRD's data file)
                files = image_files(path) if split_series(path)[0].exists() else [Path(path)]
            except (DataError, OSError):  # unreadable: the reader reports it with the case
                files = [Path(path)]
            for f in files:
                try:
                    real = Path(f).resolve()
                except (OSError, RuntimeError):  # a link loop: the reader reports it
                    continue
                if not real.is_relative_to(base):
                    named = "" if f == path else f" (named by {Path(path).name})"
                    raise DataError(f, f"lies outside the dataset folder {root}{named} (a ../ or absolute path, or a "
                                       "link pointing out of it); copy the file into the folder")


def _detect(root: Path) -> LayoutResult:
    if not root.exists():
        raise DataError(root, "dataset folder not found")
    if not root.is_dir():
        raise DataError(root, "not a folder; a dataset is a folder (MSD, nnU-Net, ACDC, PROMISE12 or images/ + labels/)")
    js = root / "dataset.json"
    if js.exists():
        meta = _read_json(js)
        if "channel_names" in meta:
            return _nnunet(root, meta)
        if "modality" in meta:
            return _msd(root, meta)
        raise DataError(js, "declares neither 'modality' (MSD) nor 'channel_names' (nnU-Net v2)")
    if (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
        raise DataError(js, "missing: an MSD or nnU-Net dataset folder (imagesTr/, labelsTr/) needs dataset.json")
    base = _acdc_root(root)
    if base is not None:
        return _acdc(root, base)
    for base in (root, root / "training_data", root / "training"):
        files = _promise_files(base)
        if any(_PROMISE.match(f.name).group(2) for f in files):
            return _promise(base)
    dirs = _plain_dirs(root)
    if dirs is not None:
        return _plain(root, *dirs)
    raise DataError(
        root,
        "no known dataset layout (MSD or nnU-Net dataset.json, ACDC patientXXX folders, PROMISE12 "
        f"CaseXX_segmentation.mhd, or images/ + labels/ folders with {'/'.join(IMAGE_SUFFIXES[:3])} files)",
    )
