"""Split files: nnU-Net's ``splits_final.json`` and a plain ``{"train", "val", "test"}`` file.

nnU-Net writes ``splits_final.json`` as a list of folds, each ``{"train": [case ids], "val": [case
ids]}``; ``--fold N`` picks one, and the test cases are the dataset's ``imagesTs`` with ``labelsTs``
when it has them. A plain file names the three parts itself (``test`` may be left out). Case ids are
those of the dataset (nnU-Net's: the image name without ``_0000.nii.gz``).

A split resolved here is plain data: ``{"train": [...], "val": [...], "test": [...]}`` plus
``"test_folder": "imagesTs"`` when the test cases are the dataset's labelled test folder, and
``"source"``, the file it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import DataError

#: The value of a split's ``test_folder`` when its test cases are the dataset's imagesTs/labelsTs.
TEST_FOLDER = "imagesTs"


def read_split_file(path: str | Path, fold: int | None = None) -> dict:
    """The train/val(/test) case ids of ``path``: fold ``fold`` (default 0) of a splits_final.json,
    or a plain object with ``train``, ``val`` and optionally ``test``; raises ``DataError``."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "split file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if isinstance(doc, list):  # nnU-Net: one {"train", "val"} per fold
        fold = 0 if fold is None else fold
        if not doc:
            raise DataError(path, "holds no fold")
        if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < len(doc):
            raise DataError(path, f"has folds 0..{len(doc) - 1}; fold {fold} asked for")
        part, keys = doc[fold], ("train", "val")
        where = f"fold {fold}"
    elif isinstance(doc, dict):
        if fold not in (None, 0):
            raise DataError(path, f"holds one split, not folds; fold {fold} asked for")
        part, keys, where = doc, ("train", "val", "test"), "the split"
    else:
        raise DataError(path, "expected nnU-Net's list of folds or an object with train, val and test")
    if not isinstance(part, dict) or "train" not in part or "val" not in part:
        raise DataError(path, f"{where} needs 'train' and 'val' lists of case ids")
    out: dict[str, list[str]] = {}
    for key in keys:
        ids = part.get(key, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise DataError(path, f"{where}: '{key}' must be a list of case ids (strings)")
        if len(set(ids)) != len(ids):
            raise DataError(path, f"{where}: '{key}' names a case twice")
        out[key] = list(ids)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = sorted(set(out.get(a, [])) & set(out.get(b, [])))
        if both:
            raise DataError(path, f"{where}: case(s) {', '.join(both[:5])} in both '{a}' and '{b}'")
    return out


def split_for_dataset(dataset, path: str | Path, fold: int | None = None) -> dict:
    """The split of ``path`` checked against ``dataset`` (a ``Dataset``): every train/val/test id
    must be one of its cases. Without test ids, the dataset's labelled test folder (imagesTs with
    labelsTs) is the test set when it has one."""
    from engine.data.layouts import detect_test_layout

    split = read_split_file(path, fold)
    known = set(dataset.case_ids)
    for key, ids in split.items():
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise DataError(path, f"'{key}' names case(s) not in the dataset {dataset.root}: {', '.join(unknown[:5])}")
    if not split["train"] or not split["val"]:
        raise DataError(path, "the split needs at least one training and one validation case")
    out = {"train": sorted(split["train"]), "val": sorted(split["val"]), "test": sorted(split.get("test", [])),
           "source": str(Path(path).resolve())}
    if not out["test"] and detect_test_layout(Path(dataset.root)) is not None:
        out["test_folder"] = TEST_FOLDER
    return out
