"""The training and validation cases of one dataset, preprocessed once and shared by every candidate."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from engine.data import Plan

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Preprocessed training and validation cases plus what a trained network must remember.

    ``labels`` maps label names to their values in the source label maps (background included);
    class index i of the network is the i-th label in ascending value order. ``ignore_label`` is
    the value of nnU-Net's ``ignore`` label (None without one): it is not among ``labels`` nor the
    network's classes, and its voxels carry class index ``num_classes`` in the preprocessed labels,
    which the loss, the patch sampling and the metrics leave out.
    """

    train: list
    val: list
    plan: Plan
    labels: dict[str, int]
    modalities: list[str]
    dataset_name: str = ""
    split: dict[str, list[str]] = field(default_factory=dict)
    ignore_label: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def in_channels(self) -> int:
        return len(self.modalities) if self.modalities else int(self.train[0].image.shape[0])

    @property
    def class_names(self) -> list[str]:
        """Label names in class-index order (background first)."""
        return [name for name, _ in sorted(self.labels.items(), key=lambda kv: kv[1])]

    @property
    def foreground(self) -> dict[str, int]:
        """Foreground label name -> class index."""
        return {name: i for i, name in enumerate(self.class_names) if i > 0}


def prepare_training_data(
    dataset,
    seed: int = 0,
    plan_overrides: Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    split=None,
    progress: Callable[[int, int, str], None] | None = None,
    plan=None,
) -> TrainingData:
    """Open ``dataset`` ("demo", a folder or a ``Dataset``), plan and preprocess its train and val cases.

    The split is the dataset's reproducible ``split(seed)`` unless ``split`` (an object with
    ``train``/``val`` lists of case ids, or a dict of them) is given; test cases are never loaded.
    ``progress(done, total, case_id)`` follows the preprocessing. ``plan`` (a Plan or its dict), when
    given, is used instead of planning from the dataset: a run keeps the plan it started with.
    """
    from engine import data as D
    from engine.errors import DataError

    ds = dataset if hasattr(dataset, "cases") else D.open_dataset(dataset)
    if split is None:
        split = ds.split(seed)
    train_ids = list(split["train"] if isinstance(split, Mapping) else split.train)
    val_ids = list(split["val"] if isinstance(split, Mapping) else split.val)
    test_ids = list(split.get("test", []) if isinstance(split, Mapping) else getattr(split, "test", []))
    if not train_ids:
        raise DataError(getattr(ds, "root", None), "the split leaves no training case")
    if not val_ids:
        raise DataError(getattr(ds, "root", None), "the split leaves no validation case")
    if plan is None:
        plan = D.make_plan(ds, overrides=dict(plan_overrides or {}))
    elif not isinstance(plan, D.Plan):
        plan = D.Plan.from_dict(plan)  # a run's pinned plan: used as it is, whatever the dataset holds now
    cases = D.preprocess_dataset(ds, plan, case_ids=train_ids + val_ids, cache_dir=cache_dir, progress=progress)
    log.info("training data: %d train, %d val cases", len(train_ids), len(val_ids))
    labels, ignore = D.split_ignore(dict(ds.labels))  # the ignore value is the highest: index num_classes
    return TrainingData(
        train=[cases[c] for c in train_ids],
        val=[cases[c] for c in val_ids],
        plan=plan,
        labels=labels,
        ignore_label=ignore,
        modalities=list(ds.modalities),
        dataset_name=str(getattr(ds, "name", "")),
        split={"train": train_ids, "val": val_ids, "test": test_ids},
    )
