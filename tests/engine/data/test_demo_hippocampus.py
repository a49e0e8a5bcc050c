"""The Task04-shaped hippocampus set: written by `emonas demo-data --kind hippocampus`, deterministic,
1 mm cases of about 36x50x35 voxels whose two labels lie anterior and posterior of each other."""

import json

import nibabel as nib
import numpy as np
from test_check_cli import last_json, run_cli

from engine.data import open_dataset
from engine.data.demo import HIPPO_CASES, HIPPO_RADIUS, _generate_hippocampus, demo_dataset_path


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
    shapes, volumes = [], []
    for case in ds.cases:
        img = nib.load(str(case.image_paths[0]))
        lab = np.asarray(nib.load(str(case.label_path)).dataobj)
        shapes.append(img.shape)
        np.testing.assert_allclose(img.header.get_zooms()[:3], (1, 1, 1))
        assert 500 < (lab == 1).sum() < 3000 and 500 < (lab == 2).sum() < 3000
        volumes.append((lab > 0).sum() / 1000)  # cm3 at 1 mm
        # the anterior label lies anterior (+y in RAS) of the posterior one, in every case
        assert np.argwhere(lab == 1)[:, 1].mean() > np.argwhere(lab == 2)[:, 1].mean() + 8
    assert all(33 <= s[0] <= 39 and 47 <= s[1] <= 53 and 32 <= s[2] <= 38 for s in shapes)
    assert len(set(shapes)) > 5  # every case is its own warp and crop
    assert 2.7 < np.median(volumes) < 3.6  # an adult hippocampus: 3.2 - 3.3 cm3 (Pruessner et al. 2000)
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
    """The benchmark's variants of the set (``accuracy_per_minute.py dataset --tube-radius``): the same
    scans, larger labels of the same two parts for a wider tube, and the radius recorded in
    dataset.json; the set's own radius is recorded nowhere, the set before it (5 mm) is a variant."""
    assert HIPPO_RADIUS == 6.0
    sets = {"narrow": 5.0, "own": None, "wide": 7.0}
    for name, radius in sets.items():
        _generate_hippocampus(tmp_path / name, n_cases=2, **({"radius": radius} if radius else {}))
        recorded = json.loads((tmp_path / name / "dataset.json").read_text())["generator"].get("tube_radius_mm")
        assert recorded == radius
    for i in range(2):
        name = f"hippocampus_{i:03d}.nii.gz"
        scans = [np.asarray(nib.load(str(tmp_path / k / "imagesTr" / name)).dataobj) for k in sets]
        np.testing.assert_array_equal(scans[0], scans[1])
        np.testing.assert_array_equal(scans[1], scans[2])
        labels = [np.asarray(nib.load(str(tmp_path / k / "labelsTr" / name)).dataobj) for k in sets]
        for inner, outer in zip(labels, labels[1:]):
            for c in (1, 2):
                assert (outer == c).sum() > 1.2 * (inner == c).sum()
                assert ((inner == c) & (outer != c)).sum() < 0.05 * (inner == c).sum()  # the wider holds the narrower
