"""Surface metrics against analytic spheres (anisotropic spacing) and against MONAI on random masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from engine.infer.metrics import binary_metrics, case_metrics, summarize, worst_distance

SPACING = (0.8, 1.0, 1.6)


def sphere(shape, spacing, centre_mm, radius_mm) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grids, centre_mm)) <= radius_mm**2


def test_concentric_spheres_match_analytic_values():
    shape = (80, 64, 40)
    centre = (32.0, 32.0, 32.0)
    r1, r2 = 14.0, 10.0
    a, b = sphere(shape, SPACING, centre, r1), sphere(shape, SPACING, centre, r2)
    m = binary_metrics(a, b, SPACING)
    assert m["dice"] == pytest.approx(2 * r2**3 / (r1**3 + r2**3), rel=0.03)
    # every surface point of one sphere lies r1 - r2 from the other's surface
    tol = max(SPACING)
    for key in ("hd", "hd95", "asd"):
        assert m[key] == pytest.approx(r1 - r2, abs=tol)


def test_offset_spheres_match_analytic_values():
    shape = (90, 64, 40)
    r, d = 12.0, 6.0
    a = sphere(shape, SPACING, (30.0, 32.0, 32.0), r)
    b = sphere(shape, SPACING, (30.0 + d, 32.0, 32.0), r)
    m = binary_metrics(a, b, SPACING)
    lens = math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12
    assert m["dice"] == pytest.approx(lens / (4 / 3 * math.pi * r**3), rel=0.03)
    assert m["hd"] == pytest.approx(d, abs=max(SPACING))
    # distances on the sphere vary between 0 and d: the mean is well inside
    assert 0.2 * d < m["asd"] < 0.8 * d


def random_mask(rng, shape):
    return ndimage.gaussian_filter(rng.random(shape), 2.5) > 0.5


@pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI deprecation inside its own code
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_monai_on_random_masks(seed):
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    rng = np.random.default_rng(seed)
    shape = (28, 36, 20)
    a, b = random_mask(rng, shape), random_mask(rng, shape)
    assert a.any() and b.any()
    m = binary_metrics(a, b, SPACING)
    A = torch.from_numpy(a)[None, None].float()
    B = torch.from_numpy(b)[None, None].float()
    assert m["dice"] == pytest.approx(float(compute_dice(A, B, include_background=True)), abs=1e-6)
    assert m["hd"] == pytest.approx(float(compute_hausdorff_distance(A, B, True, spacing=SPACING)), abs=1e-4)
    hd95 = float(compute_hausdorff_distance(A, B, True, percentile=95, spacing=SPACING))
    assert m["hd95"] == pytest.approx(hd95, abs=1e-4)
    asd = float(compute_average_surface_distance(A, B, True, symmetric=True, spacing=SPACING))
    assert m["asd"] == pytest.approx(asd, abs=1e-4)


def test_empty_masks_follow_the_documented_conventions():
    shape = (10, 12, 8)
    empty = np.zeros(shape, bool)
    full = np.zeros(shape, bool)
    full[2:5, 3:7, 1:4] = True
    assert binary_metrics(empty, empty, SPACING) == {"dice": 1.0, "hd": 0.0, "hd95": 0.0, "asd": 0.0}
    worst = worst_distance(shape, SPACING)
    for m in (binary_metrics(empty, full, SPACING), binary_metrics(full, empty, SPACING)):
        assert m == {"dice": 0.0, "hd": worst, "hd95": worst, "asd": worst}


def test_case_metrics_per_class_and_summary():
    ref = np.zeros((20, 20, 10), np.uint8)
    ref[2:8, 2:8, 2:6] = 1
    ref[10:16, 10:16, 2:6] = 2
    pred = ref.copy()
    pred[10:16, 10:13, 2:6] = 0  # half of class 2 missed
    per_case = {"a": case_metrics(pred, ref, (1, 1, 1), {"one": 1, "two": 2}), "b": case_metrics(ref, ref, (1, 1, 1), {"one": 1, "two": 2})}
    assert per_case["a"]["one"]["dice"] == 1.0
    assert per_case["a"]["two"]["dice"] == pytest.approx(2 * 72 / (144 + 72))
    s = summarize(per_case)
    assert s["two"]["dice"]["mean"] == pytest.approx((2 * 72 / 216 + 1) / 2)
    assert s["two"]["dice"]["std"] > 0 and s["one"]["dice"]["std"] == 0
