"""The Task04-shaped hippocampus set: written by `emonas demo-data --kind hippocampus`, deterministic,
1 mm cases of about 36x50x35 voxels whose two labels lie anterior and posterior of each other."""

import json

import nibabel as nib
import numpy as np
from test_check_cli import last_json, run_cli

from engine.data import open_dataset
from engine.data.demo import HIPPO_CASES, _generate_hippocampus, demo_dataset_path


def test_hippocampus_demo_data_cli_and_generator(tmp_path, capsys):
    out = tmp_path / "hippo"
    code, text, _ = run_cli(capsys, "demo-data", str(out), "--kind", "hippocampus", "--json")
    assert code == 0
    res = last_json(text)
    assert res["n_cases"] == HIPPO_CASES >= 40 and res["layout"] == "msd"
    assert res["labels"] == {"background": 0, "anterior": 1, "posterior": 2}
    assert json.loads((out / "dataset.json").read_text())["generator"]["kind"] == "hippocampus"
    ds = open_dataset("demo-hippocampus")
    assert len(ds.cases) == HIPPO_CASES
    shapes = []
    for case in ds.cases:
        img = nib.load(str(case.image_paths[0]))
        lab = np.asarray(nib.load(str(case.label_path)).dataobj)
        shapes.append(img.shape)
        np.testing.assert_allclose(img.header.get_zooms()[:3], (1, 1, 1))
        assert 500 < (lab == 1).sum() < 3000 and 500 < (lab == 2).sum() < 3000
        # the anterior label lies anterior (+y in RAS) of the posterior one, in every case
        assert np.argwhere(lab == 1)[:, 1].mean() > np.argwhere(lab == 2)[:, 1].mean() + 8
    assert all(33 <= s[0] <= 39 and 47 <= s[1] <= 53 and 32 <= s[2] <= 38 for s in shapes)
    assert len(set(shapes)) > 5  # every case is its own warp and crop
    # the same seed writes the same voxels
    _generate_hippocampus(tmp_path / "again", n_cases=2)
    cached = demo_dataset_path("hippocampus")
    for sub in ("imagesTr", "labelsTr"):
        for i in range(2):
            a = nib.load(str(tmp_path / "again" / sub / f"hippocampus_{i:03d}.nii.gz"))
            b = nib.load(str(cached / sub / f"hippocampus_{i:03d}.nii.gz"))
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
            np.testing.assert_array_equal(a.affine, b.affine)


def test_a_wider_tube_changes_the_labels_only(tmp_path):
    """The benchmark's variant of the set (``accuracy_per_minute.py dataset --tube-radius``): the same
    scans, larger labels of the same two parts, and the radius recorded in dataset.json."""
    _generate_hippocampus(tmp_path / "own", n_cases=2)
    _generate_hippocampus(tmp_path / "wide", n_cases=2, radius=7.0)
    assert "tube_radius_mm" not in json.loads((tmp_path / "own" / "dataset.json").read_text())["generator"]
    assert json.loads((tmp_path / "wide" / "dataset.json").read_text())["generator"]["tube_radius_mm"] == 7.0
    for i in range(2):
        name = f"hippocampus_{i:03d}.nii.gz"
        a, b = (np.asarray(nib.load(str(tmp_path / k / "imagesTr" / name)).dataobj) for k in ("own", "wide"))
        np.testing.assert_array_equal(a, b)
        own, wide = (np.asarray(nib.load(str(tmp_path / k / "labelsTr" / name)).dataobj) for k in ("own", "wide"))
        for c in (1, 2):
            assert (wide == c).sum() > 1.3 * (own == c).sum()
            assert ((own == c) & (wide != c)).sum() < 0.05 * (own == c).sum()  # the wider tube holds the narrower
