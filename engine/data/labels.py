"""What a label value means outside EMONAS: colours, colour tables, DICOM codes and DICOM text.

- Colours: the dataset's ``label_colors`` where given, else the app's palette (label 1 red, 2 green,
  3 blue, ...), so a label map looks the same in the app, 3D Slicer and ITK-SNAP.
- Colour tables: a 3D Slicer colour table (``.ctbl``, "# Color table file" text format) and an
  ITK-SNAP label description file, both written next to each predicted label map and parsed back by
  :func:`read_slicer_color_table` / :func:`read_itksnap_labels`.
- Codes: each foreground label of a DICOM-SEG carries a segmented property category and type. They
  come from the dataset's ``label_codes`` (``dataset.json`` or ``labels.json``)::

      "label_codes": {"liver": {"category": ["SCT", "123037004", "Anatomical Structure"],
                                "type": ["SCT", "10200004", "Liver"]}}

  (each a [coding scheme designator, code value, code meaning] triple); a label without one gets
  the generic code :data:`GENERIC_CODE`: category and type SCT 85756007 "Tissue", the default of
  3D Slicer's segment editor, with the dataset's label name as the segment label.
- DICOM text (:func:`dicom_text`): UTF-8, declared by SpecificCharacterSet ``ISO_IR 192``; a value
  whose UTF-8 bytes exceed its VR's limit (LO 64, SH 16) keeps as many whole leading characters as fit
  in ``limit - 1`` bytes and ends with "~"; backslashes (the DICOM value separator) and control
  characters become spaces.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from engine.errors import DataError

#: The app's label palette (emonas_gui.widgets.slice_views.DEFAULT_PALETTE): label v gets entry (v - 1) mod 10.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 80, 70), (80, 180, 90), (70, 130, 230), (240, 200, 60), (180, 90, 200),
    (60, 200, 200), (240, 140, 60), (150, 150, 150), (250, 120, 180), (120, 90, 50),
)

#: The code of a label whose dataset gives none: SNOMED CT 85756007 "Tissue" as category and type.
GENERIC_CODE: dict[str, list[str]] = {"category": ["SCT", "85756007", "Tissue"], "type": ["SCT", "85756007", "Tissue"]}

SPECIFIC_CHARACTER_SET = "ISO_IR 192"  # UTF-8
LO_LIMIT = 64
SH_LIMIT = 16
TRUNCATION_MARK = "~"

SLICER_SUFFIX = "-ColorTable.ctbl"
ITKSNAP_SUFFIX = "-ITKSNAP.txt"


def default_colour(value: int) -> tuple[int, int, int]:
    """The colour of label ``value`` in the app when the dataset names none."""
    return PALETTE[(int(value) - 1) % len(PALETTE)]


def dicom_text(value: Any, limit: int = LO_LIMIT) -> str:
    """``value`` as a DICOM string whose UTF-8 encoding takes at most ``limit`` bytes (the module's rule).

    Counting bytes, not characters, keeps the value (and its even-length padding) inside the VR's
    limit for readers that count either way.
    """
    text = re.sub(r"[\x00-\x1f\x7f\\]", " ", str(value)).strip()
    if len(text.encode("utf-8")) > limit:
        while len(text.encode("utf-8")) > limit - len(TRUNCATION_MARK):
            text = text[:-1]
        text = text.rstrip() + TRUNCATION_MARK
    return text


# ------------------------------------------------------------------------------------- dataset metadata
def _code(raw: Any, where: str, path: Path) -> list[str]:
    if (not isinstance(raw, (list, tuple)) or len(raw) != 3
            or not all(isinstance(s, str) and s.strip() for s in raw)):
        raise DataError(path, f"{where} must be [scheme, value, meaning], three non-empty strings, got {raw!r}")
    scheme, value, meaning = (s.strip() for s in raw)
    if len(scheme) > SH_LIMIT or len(value) > LO_LIMIT:
        raise DataError(path, f"{where}: coding scheme at most {SH_LIMIT} characters, code value at most {LO_LIMIT}")
    return [scheme, value, meaning]


def read_label_metadata(dataset_dir: str | os.PathLike, labels: Mapping[str, int]) -> dict[str, dict]:
    """The optional ``label_codes`` and ``label_colors`` of a dataset folder for ``labels``.

    Read from ``dataset.json`` (MSD, nnU-Net) or ``labels.json`` (a plain folder); returns
    ``{"codes": {name: {"category", "type"}}, "colors": {name: [r, g, b]}}`` for the labels that
    have them. A malformed entry is a ``DataError`` naming the file; entries for names the dataset
    does not declare are refused too (a misspelt name would otherwise silently fall back).
    """
    root = Path(dataset_dir)
    found = {"codes": {}, "colors": {}}
    for name in ("dataset.json", "labels.json"):
        path = root / name
        if path.is_file():
            break
    else:
        return found
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read label metadata ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict):
        return found
    codes, colors = meta.get("label_codes") or {}, meta.get("label_colors") or {}
    for key, given in (("label_codes", codes), ("label_colors", colors)):
        if not isinstance(given, dict):
            raise DataError(path, f"{key} must map label names to entries")
        unknown = sorted(set(given) - set(labels))
        if unknown:
            raise DataError(path, f"{key} names labels the dataset does not declare: {', '.join(unknown)}")
    for name, entry in codes.items():
        if not isinstance(entry, dict) or "category" not in entry or "type" not in entry:
            raise DataError(path, f"label_codes.{name} must hold 'category' and 'type'")
        found["codes"][name] = {k: _code(entry[k], f"label_codes.{name}.{k}", path) for k in ("category", "type")}
    for name, rgb in colors.items():
        if (not isinstance(rgb, (list, tuple)) or len(rgb) != 3
                or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in rgb)):
            raise DataError(path, f"label_colors.{name} must be [r, g, b], integers 0-255, got {rgb!r}")
        found["colors"][name] = [int(c) for c in rgb]
    return found


def resolve_label_info(labels: Mapping[str, int], given: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """Every label's colour and every foreground label's codes, the dataset's where given.

    Returns ``{"label_codes": {name: {"category", "type", "source"}}, "label_colors": {name: [r, g, b]}}``
    with ``source`` ``"dataset"`` or ``"generic"`` (model.json stores both).
    """
    given = given or {}
    codes, colors = dict(given.get("codes") or {}), dict(given.get("colors") or {})
    out_codes, out_colors = {}, {}
    for name, value in sorted(labels.items(), key=lambda kv: kv[1]):
        out_colors[name] = list(colors.get(name) or ((0, 0, 0) if value == 0 else default_colour(value)))
        if value == 0:
            continue
        if name in codes:
            out_codes[name] = {"category": list(codes[name]["category"]), "type": list(codes[name]["type"]),
                               "source": "dataset"}
        else:
            out_codes[name] = {**{k: list(v) for k, v in GENERIC_CODE.items()}, "source": "generic"}
    return {"label_codes": out_codes, "label_colors": out_colors}


# ------------------------------------------------------------------------------------------ colour tables
def _slicer_name(name: str) -> str:
    # Slicer's format separates fields by spaces: spaces in a name become underscores.
    return re.sub(r"\s+", "_", name.strip()) or "unnamed"


def slicer_color_table(labels: Mapping[str, int], colors: Mapping[str, Any]) -> str:
    """A 3D Slicer colour table ("# Color table file" .ctbl text): value, name, R G B A."""
    rows = sorted(labels.items(), key=lambda kv: kv[1])
    lines = ["# Color table file written by EMONAS Studio", f"# {len(rows)} values"]
    for name, value in rows:
        r, g, b = (int(c) for c in colors.get(name, default_colour(value) if value else (0, 0, 0)))
        lines.append(f"{int(value)} {_slicer_name(name)} {r} {g} {b} {0 if value == 0 else 255}")
    return "\n".join(lines) + "\n"


def itksnap_label_description(labels: Mapping[str, int], colors: Mapping[str, Any]) -> str:
    """An ITK-SNAP label description file: IDX R G B A VIS MSH "LABEL" per label."""
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# File format: ",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "################################################",
    ]
    for name, value in sorted(labels.items(), key=lambda kv: kv[1]):
        r, g, b = (int(c) for c in colors.get(name, default_colour(value) if value else (0, 0, 0)))
        vis = 0 if value == 0 else 1
        label = name.replace('"', "'")  # the label is double-quoted in this format
        lines.append(f"{int(value):5d} {r:5d} {g:4d} {b:4d} {float(vis):8.2f} {vis:2d} {vis:2d}    \"{label}\"")
    return "\n".join(lines) + "\n"


def read_slicer_color_table(path: str | os.PathLike) -> dict[int, tuple[str, tuple[int, int, int, int]]]:
    """A Slicer colour table read back: {value: (name, (r, g, b, a))}."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        value, name, *rgba = line.split()
        if len(rgba) != 4:
            raise DataError(path, f"colour table line {line!r} is not 'value name r g b a'")
        out[int(value)] = (name, tuple(int(c) for c in rgba))
    return out


def read_itksnap_labels(path: str | os.PathLike) -> dict[int, tuple[str, tuple[int, int, int], float]]:
    """An ITK-SNAP label description read back: {value: (label, (r, g, b), alpha)}."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        m = re.match(r'\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d)\s+(\d)\s+"(.*)"\s*$', line)
        if m:
            out[int(m[1])] = (m[8], (int(m[2]), int(m[3]), int(m[4])), float(m[5]))
    return out


def write_colour_tables(label_map: str | os.PathLike, labels: Mapping[str, int],
                        colors: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``NAME-ColorTable.ctbl`` (3D Slicer) and ``NAME-ITKSNAP.txt`` next to ``label_map``."""
    path = Path(label_map)
    stem = path.name
    for ext in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    slicer = path.with_name(stem + SLICER_SUFFIX)
    itk = path.with_name(stem + ITKSNAP_SUFFIX)
    _write_text_atomic(slicer, slicer_color_table(labels, colors))
    _write_text_atomic(itk, itksnap_label_description(labels, colors))
    return slicer, itk


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
