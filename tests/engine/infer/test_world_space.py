"""Label maps are compared in world space: ``emonas evaluate`` on a prediction stored with flipped or
permuted axes (the same labels in the world) scores Dice 1.0; maps on different grids are refused
with both geometries named; grid tolerances are fractions of the voxel, wherever the origin lies."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.data.io import GRID_TOLERANCE, grid_mismatch, read_label, same_geometry, write_image


def emonas(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


def checksums(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(f.iterdir())}


@pytest.fixture
def reference(tmp_path) -> Path:
    """A real label map of the demo dataset (four labels, anisotropic voxels) as the reference."""
    from engine.data.demo import demo_dataset_path

    src = sorted((demo_dataset_path() / "labelsTr").iterdir())[0]
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "case.nii.gz").write_bytes(src.read_bytes())
    return ref / "case.nii.gz"


def _same_world(arr: np.ndarray, affine: np.ndarray, flip: int | None = None, perm=(0, 1, 2)):
    """The same labels in the same world positions, stored with axis ``flip`` reversed and axes permuted."""
    a, m = arr, np.asarray(affine, float).copy()
    if flip is not None:
        a = np.flip(a, flip)
        shift = np.eye(4)
        shift[flip, flip] = -1
        shift[flip, 3] = arr.shape[flip] - 1
        m = m @ shift
    a = np.transpose(a, perm)
    p = np.eye(4)
    p[:3, :3] = np.eye(3)[:, perm]
    return np.ascontiguousarray(a), m @ p


def test_a_flipped_and_permuted_prediction_scores_dice_one(reference, tmp_path):
    labels, img = read_label(reference)
    pred = tmp_path / "pred"
    pred.mkdir()
    arr, aff = _same_world(labels, img.affine, flip=0, perm=(2, 0, 1))
    write_image(pred / "case.mha", arr.astype(np.uint8), aff)  # MetaImage: stored LPS, axes permuted
    assert np.asarray(read_label(pred / "case.mha")[0]).shape != labels.shape
    before = checksums(reference.parent, pred)
    p = emonas("evaluate", "--pred", pred, "--ref", reference.parent, "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])["summary"]
    assert set(summary) == {"1", "2", "3"}
    for name, m in summary.items():
        assert m["dice"]["mean"] == 1.0, (name, m)
        assert m["hd"]["mean"] == 0.0 and m["asd"]["mean"] == 0.0
    assert checksums(reference.parent, pred) == before


def test_a_flipped_axis_alone_scores_dice_one(reference, tmp_path):
    labels, img = read_label(reference)
    pred = tmp_path / "pred"
    pred.mkdir()
    arr, aff = _same_world(labels, img.affine, flip=1)
    nib.save(nib.Nifti1Image(arr.astype(np.uint8), aff), str(pred / "case.nii.gz"))
    p = emonas("evaluate", "--pred", pred, "--ref", reference.parent, "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])["summary"]
    assert all(m["dice"]["mean"] == 1.0 for m in summary.values())


def test_maps_on_different_grids_are_refused_naming_both(reference, tmp_path):
    labels, img = read_label(reference)
    pred = tmp_path / "pred"
    pred.mkdir()
    aff = np.asarray(img.affine, float).copy()
    aff[:3, 3] += aff[:3, 0] * 0.5  # half a voxel along the first axis
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), aff), str(pred / "case.nii.gz"))
    before = checksums(reference.parent, pred)
    p = emonas("evaluate", "--pred", pred, "--ref", reference.parent)
    assert p.returncode == 2
    line = p.stderr.strip()
    assert "\n" not in line and "not on the reference's world grid" in line
    assert str(pred / "case.nii.gz") in line and str(reference) in line and line.count("origin") == 2
    assert checksums(reference.parent, pred) == before


def test_grid_tolerance_is_relative_to_the_voxel_not_the_origin():
    far = np.diag([0.5, 0.5, 0.5, 1.0])
    far[:3, 3] = [10000.0, -8000.0, 9000.0]  # scanner coordinates far from zero
    rounding = far.copy()
    rounding[:3, 3] += 1e-4  # float32 header rounding: a tiny fraction of a voxel
    shifted = far.copy()
    shifted[0, 3] += 0.2  # 0.4 voxel: a different grid, however large the origin
    assert same_geometry(far, rounding, (8, 8, 8), (8, 8, 8))
    assert not same_geometry(far, shifted, (8, 8, 8), (8, 8, 8))
    assert grid_mismatch(far, shifted) == pytest.approx(0.4)
    broken = far.copy()
    broken[0, 3] = np.nan  # a NaN origin is no grid at all, not a match
    assert not same_geometry(far, broken, (8, 8, 8), (8, 8, 8)) and grid_mismatch(far, broken) == np.inf
    fine = np.diag([0.1, 0.1, 0.1, 1.0])
    moved = fine.copy()
    moved[:3, 3] += 0.5 * GRID_TOLERANCE * 0.1
    assert same_geometry(fine, moved, (4, 4, 4), (4, 4, 4))
    moved[:3, 3] += 2 * GRID_TOLERANCE * 0.1
    assert not same_geometry(fine, moved, (4, 4, 4), (4, 4, 4))


def test_the_apps_label_overlay_is_placed_in_world_space(reference, tmp_path, monkeypatch):
    """The Data step shows a label map stored with a flipped axis where it belongs, and refuses one
    on another grid (the scan and the map named) instead of overlaying it shifted."""
    pytest.importorskip("PySide6")
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    from emonas_gui.panels.data import load_case
    from engine.data.demo import demo_dataset_path
    from engine.errors import DataError

    scan = sorted((demo_dataset_path() / "imagesTr").iterdir())[0]
    labels, img = read_label(reference)
    shown = load_case("case", [scan], reference).labels
    arr, aff = _same_world(labels, img.affine, flip=2)
    nib.save(nib.Nifti1Image(arr.astype(np.uint8), aff), str(tmp_path / "flipped.nii.gz"))
    np.testing.assert_array_equal(load_case("case", [scan], tmp_path / "flipped.nii.gz").labels, shown)
    moved = np.asarray(img.affine, float).copy()
    moved[:3, 3] += moved[:3, 1]  # one voxel along the second axis
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), moved), str(tmp_path / "moved.nii.gz"))
    with pytest.raises(DataError, match="not on the reference's world grid") as err:
        load_case("case", [scan], tmp_path / "moved.nii.gz")
    assert str(scan) in str(err.value) and str(tmp_path / "moved.nii.gz") in str(err.value)
