"""The ``Dataset``: cases, modalities, labels and a reproducible train / validation / test split."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.data.layouts import Case, FileProblem, detect_layout
from engine.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Fewest usable cases a dataset may keep after ``skip_bad`` dropped the broken ones.
MIN_CASES = 2


@dataclass(frozen=True)
class Split:
    """Case ids of the three parts; the test cases are never seen by the search."""

    train: list[str]
    val: list[str]
    test: list[str]

    def to_dict(self) -> dict:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}


@dataclass
class Dataset:
    """A labelled dataset read from a folder in one of the known layouts.

    ``labels`` maps each name, exactly as the dataset declares it, to its value, background first
    and sorted by value; class index ``i`` of a network's output is ``list(labels.values())[i]``.
    """

    root: Path
    layout: str
    name: str
    cases: list[Case]
    modalities: list[str]
    labels: dict[str, int]
    problems: list[FileProblem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    description: str = ""
    mirror_axes: list[int] | None = None  # the dataset's explicit setting (engine.data.mirror), if any

    @property
    def num_classes(self) -> int:
        """Output classes of a network for this dataset, background included."""
        return len(self.labels)

    @property
    def label_values(self) -> list[int]:
        return list(self.labels.values())

    @property
    def case_ids(self) -> list[str]:
        return [c.case_id for c in self.cases]

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise DataError(self.root, f"no case {case_id!r} in this dataset")

    def split(
        self,
        seed: int = 0,
        val_fraction: float = 0.2,
        test_fraction: float = 0.1,
        k: int | None = None,
        fold: int | None = None,
    ) -> Split:
        """Split the cases reproducibly (same seed, same cases -> same split).

        Cases of one patient (ACDC's two frames) always land in the same part. The test part is
        ``test_fraction`` of the patients; of the rest, ``val_fraction`` are validation, or with
        ``k`` folds, fold ``fold`` (0-based) is the validation part.
        """
        if not 0 <= test_fraction < 1 or not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
            raise ConfigError(f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in [0, 1) and sum below 1")
        groups: dict[str, list[str]] = {}
        for c in sorted(self.cases, key=lambda c: c.case_id):
            groups.setdefault(c.patient, []).append(c.case_id)
        keys = sorted(groups)
        n = len(keys)
        if n < 2:
            raise DataError(self.root, f"{n} usable case(s); at least 2 are needed to train and validate")
        order = [keys[i] for i in np.random.default_rng(seed).permutation(n)]
        n_test = int(round(test_fraction * n))
        if test_fraction > 0 and n >= 4:
            n_test = max(1, n_test)
        n_test = min(n_test, n - 2)
        test, rest = order[:n_test], order[n_test:]
        if k is not None:
            if not isinstance(k, int) or k < 2 or k > len(rest):
                raise ConfigError(f"k must be between 2 and {len(rest)} folds for this dataset, got {k!r}")
            fold = 0 if fold is None else fold
            if not isinstance(fold, int) or not 0 <= fold < k:
                raise ConfigError(f"fold must be between 0 and {k - 1}, got {fold!r}")
            val = [g for i, g in enumerate(rest) if i % k == fold]
        else:
            n_val = min(max(1, int(round(val_fraction * n))) if val_fraction > 0 else 0, len(rest) - 1)
            val = rest[:n_val]
        train = [g for g in rest if g not in set(val)]

        def ids(gs):
            return sorted(cid for g in gs for cid in groups[g])

        return Split(ids(train), ids(val), ids(test))

    def summary(self) -> dict:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "name": self.name,
            "n_cases": len(self.cases),
            "modalities": list(self.modalities),
            "labels": dict(self.labels),
            "skipped": list(self.skipped),
        }


def open_dataset(path: str | os.PathLike, skip_bad: bool = False, test: bool = False) -> Dataset:
    """Open a dataset folder (layout detected), or ``"demo"`` / ``"demo-hippocampus"`` for a built-in one.

    Every case's headers are checked (cheap). Without ``skip_bad`` the first fatal problem raises
    ``DataError`` naming the file; with it, every voxel of every case is checked and the broken
    cases are left out (``Dataset.skipped``), as long as at least ``MIN_CASES`` remain. ``test``
    opens the labelled test cases instead (``imagesTs`` with ``labelsTs`` of an MSD or nnU-Net folder).
    """
    if str(path) in ("demo", "demo-hippocampus"):
        from engine.data.demo import demo_dataset_path

        path = demo_dataset_path("brain" if str(path) == "demo" else "hippocampus")
    root = Path(path).expanduser()
    if test:
        from engine.data.layouts import detect_test_layout

        found = detect_test_layout(root)
        if found is None:
            raise DataError(root, "has no imagesTs/ with labelsTs/ (an MSD or nnU-Net folder's labelled test cases)")
    else:
        found = detect_layout(root)
    from engine.data.validate import check_headers, inspect_case

    problems = list(found.problems)
    for case in found.cases:
        if not any(p.case_id == case.case_id and p.fatal for p in problems):
            problems.extend(check_headers(case, len(found.modalities)))
    if skip_bad:
        for case in found.cases:
            if not any(p.case_id == case.case_id and p.fatal for p in problems):
                problems.extend(p for p in inspect_case(case, found.modalities, found.labels).problems
                                if p.fatal)
    bad = {p.case_id for p in problems if p.fatal and p.case_id}
    fatal = [p for p in problems if p.fatal]
    if fatal and not skip_bad:
        more = f" (and {len(fatal) - 1} more problem(s); see `emonas check`)" if len(fatal) > 1 else ""
        raise DataError(fatal[0].path, fatal[0].message + more)
    cases = [c for c in found.cases if c.case_id not in bad]
    for p in fatal:
        log.warning("skipped: %s", p)
    if not cases:
        raise DataError(root, "no usable labelled case")
    if skip_bad and len(cases) < MIN_CASES:
        raise DataError(root, f"only {len(cases)} usable case(s) left after skipping {len(bad)} broken one(s)")
    return Dataset(root, found.layout, found.name, cases, found.modalities, found.labels, problems,
                   sorted(bad), found.description, found.mirror_axes)
