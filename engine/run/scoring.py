"""Scoring a network on cases in each scan's own geometry, as ``emonas predict`` and a challenge do.

A case's scan is read and preprocessed with the network's plan exactly as ``emonas predict`` does
(:func:`engine.data.preprocess_images`), the network segments it, and its class indices are mapped
back onto the scan's own grid (:func:`engine.data.restore_label`: resampling, crop and reorientation
undone, label values restored). That map is then compared with the ORIGINAL reference label file
through :func:`engine.infer.metrics.in_one_frame` (a reference stored with other axis order or flips
is reoriented; one on another world grid is refused), so Dice and distances in mm are those of the
scan, never of the cropped, resampled grid the network works on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np


@dataclass
class ScanCase:
    """One case ready to segment and score: the preprocessed scan and the original reference."""

    case_id: str
    image: np.ndarray  # float32 (C, X, Y, Z) at the plan's spacing
    properties: dict  # what restore_label needs to go back to the scan's grid
    scan: Path  # the scan's first file (its geometry is the prediction's)
    reference: np.ndarray  # the reference label file's values, on its own grid
    reference_image: object  # engine.data.io.Image of the reference file (its geometry)


def load_scan_case(case, plan) -> ScanCase:
    """Read ``case`` (an ``engine.data.layouts.Case`` with a label file) and preprocess its scan by
    ``plan``; the reference label map is read as stored. Raises ``DataError`` naming a bad file."""
    from engine.data import preprocess_images
    from engine.data.validate import read_case_images
    from engine.errors import DataError
    from engine.infer.metrics import _read_label_image

    if case.label_path is None:
        raise DataError(case.image_paths[0], f"case {case.case_id!r} has no reference label map to score against")
    image = read_case_images(case)
    array, props = preprocess_images(image, plan)
    ref, ref_img = _read_label_image(case.label_path)
    return ScanCase(case.case_id, array, props, Path(case.image_paths[0]), ref, ref_img)


def predict_in_scan(predictor, case: ScanCase) -> np.ndarray:
    """The label map (label values) of ``predictor`` on the case, on the scan's own grid: what
    ``emonas predict`` writes for it."""
    from engine.data import restore_label

    return restore_label(predictor.predict_array(case.image), case.properties)


def score_in_scan(labels: np.ndarray, case: ScanCase, classes: Mapping[str, int], ignore: int | None = None
                  ) -> dict[str, dict[str, float]]:
    """Metrics per class (``{name: {"dice", "hd", "hd95", "asd"}}``, distances in mm) of a label map
    on the scan's grid against the case's original reference, compared in world space.

    ``classes`` maps names to label VALUES (as in the files); ``ignore`` is the value of nnU-Net's
    ignore label in the reference (its voxels count for no class)."""
    from engine.data.io import Image
    from engine.infer.metrics import case_metrics, in_one_frame

    labels = np.asarray(labels)
    pred = Image(labels[None], np.asarray(case.properties["source_affine"], float), case.scan)
    p, r, spacing = in_one_frame(pred, case.reference_image, labels, case.reference)
    return case_metrics(p, r, spacing, classes, ignore=ignore)


def foreground_dice(per_case: Mapping[str, Mapping[str, Mapping[str, float]]]) -> float:
    """Mean over cases of each case's mean Dice over its classes (nnU-Net's foreground mean)."""
    means = [float(np.mean([m["dice"] for m in labels.values()])) for labels in per_case.values() if labels]
    return float(np.mean(means)) if means else float("nan")
