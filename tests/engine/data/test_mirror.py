"""Which axes training mirrors: label maps with and without a direction, label names, explicit
settings; shown by `emonas check` and kept in the plan."""

import json

import numpy as np
import pytest

from data_helpers import affine_for
from engine.data import make_plan, open_dataset
from engine.data.io import write_image
from test_check_cli import last_json, run_cli

SHAPE = (20, 24, 16)


def blob(grid, centre, radius):
    return np.sqrt(((grid - np.asarray(centre, float)[:, None, None, None]) ** 2).sum(0)) < radius


def make_two_label_set(root, names=("part a", "part b"), directed=True, n=6, meta_extra=None, orientation="RAS"):
    """Two blobs per case. ``directed``: label 1 always lies anterior (+y) of label 2 (a bit off in x
    and z at random); otherwise the two lie at random places of each other."""
    rng = np.random.default_rng(1)
    grid = np.indices(SHAPE)
    training = []
    for i in range(n):
        c = np.array([10, 12, 8]) + rng.integers(-2, 3, 3)
        if directed:
            off = np.array([rng.integers(-1, 2), 5, rng.integers(-1, 2)])
        else:
            off = rng.choice([-1, 1], 3) * rng.integers(2, 5, 3)
        lab = np.zeros(SHAPE, np.uint8)
        lab[blob(grid, c + off, 3)] = 1
        lab[blob(grid, c - off, 3)] = 2
        img = (100 + 40 * lab + rng.normal(0, 5, SHAPE)).astype(np.float32)
        cid = f"case_{i:03d}"
        aff = affine_for(orientation)
        if orientation != "RAS":  # the same anatomy stored in another voxel order
            import nibabel as nib

            t = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                                nib.orientations.axcodes2ornt(tuple(orientation)))
            lab = nib.orientations.apply_orientation(lab, t)
            img = nib.orientations.apply_orientation(img, t)
        write_image(root / "imagesTr" / f"{cid}.nii.gz", img, aff)
        write_image(root / "labelsTr" / f"{cid}.nii.gz", lab, aff)
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    meta = {"name": "T", "modality": {"0": "MRI"}, "labels": {"0": "background", "1": names[0], "2": names[1]},
            "training": training, **(meta_extra or {})}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_check_shows_no_mirroring_along_the_direction_the_labels_carry(tmp_path, capsys):
    root = make_two_label_set(tmp_path / "d")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    code, out, _ = run_cli(capsys, "check", str(root))
    assert code == 0
    from engine.train.augmentation import LIGHT_STEPS

    assert f"mirroring allowed (trainings of over {LIGHT_STEPS:,} steps, and --mirror after them): x, z" in out
    assert "y: not mirrored ('part a' lies anterior of 'part b' in 6 of 6 cases" in out
    code, out, _ = run_cli(capsys, "check", str(root), "--json")
    assert last_json(out)["plan"]["mirror_axes"] == [0, 2]
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


def test_the_mirror_test_works_in_ras_whatever_the_voxel_order(tmp_path):
    plan = make_plan(open_dataset(make_two_label_set(tmp_path / "d", orientation="PSL")))
    assert plan.mirror_axes == (0, 2)  # the direction is still anterior-posterior (RAS y)


def test_labels_without_a_direction_are_mirrored_along_every_axis(tmp_path):
    plan = make_plan(open_dataset(make_two_label_set(tmp_path / "d", directed=False)))
    assert plan.mirror_axes == (0, 1, 2)
    assert all("mirrored (no label carries a direction" in n for n in plan.mirror_notes)


def test_label_names_carry_a_direction(tmp_path):
    root = make_two_label_set(tmp_path / "d", names=("Left kidney", "right_kidney"), directed=False)
    plan = make_plan(open_dataset(root))
    assert plan.mirror_axes == (1, 2)
    assert plan.mirror_notes[0] == "x: not mirrored (label names Left kidney, right_kidney)"


def test_explicit_settings_win(tmp_path, capsys):
    root = make_two_label_set(tmp_path / "d", meta_extra={"mirror_axes": ["x", "y", "z"]})
    assert make_plan(open_dataset(root)).mirror_axes == (0, 1, 2)  # the dataset's own setting
    assert make_plan(open_dataset(root), overrides={"mirror_axes": []}).mirror_axes == ()
    bad = make_two_label_set(tmp_path / "bad", meta_extra={"mirror_axes": ["w"]})
    code, _, err = run_cli(capsys, "check", str(bad))
    assert code == 2 and "dataset.json" in err and "mirror_axes" in err and "Traceback" not in err


def test_hippocampus_demo_mirrors_left_right_only():
    plan = make_plan(open_dataset("demo-hippocampus"))
    assert plan.mirror_axes == (0,)
    assert plan.mirror_notes[1] == "y: not mirrored (label names anterior, posterior)"


def test_plan_json_keeps_the_axes_and_reads_older_plans(tmp_path):
    from engine.data import Plan

    plan = make_plan(open_dataset(make_two_label_set(tmp_path / "d")))
    again = Plan.from_dict(json.loads(plan.to_json()))
    assert again.mirror_axes == (0, 2) and again.mirror_notes == plan.mirror_notes
    old = {k: v for k, v in plan.to_dict().items() if k not in ("mirror_axes", "mirror_notes", "patch_rule")}
    assert Plan.from_dict(old).mirror_axes == (0, 1, 2)  # trained before the decision: every axis
    with pytest.raises(Exception, match="mirror_axes"):
        Plan.from_dict({**plan.to_dict(), "mirror_axes": [3]})
