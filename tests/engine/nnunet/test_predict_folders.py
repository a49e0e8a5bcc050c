"""`emonas predict` on folders as nnU-Net users have them: CASE_XXXX files, --continue, probabilities."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from export_helpers import make_training_folder
from test_search_cli import cli, emonas, last_json

from engine.data.plan import Plan
from engine.genome import Genome

#: The smallest genome of the space (nf1 8, 5 cells).
SMALL = Genome(0, 1, 2, "conv3d_3x3x3", "conv3d_3x3x3", "conv3d_1x1x1", "identity", 5, 8, 3e-3)
LABELS = {"background": 0, "grey matter": 1, "white matter": 2, "CSF": 3}


def model(path, modalities):
    plan = Plan(target_spacing=(4.0, 4.0, 4.0), patch_size=(32, 32, 32), batch_size=2,
                normalization=[{"modality": m, "scheme": "zscore", "use_nonzero_mask": False} for m in modalities],
                pool_schedule=[(2, 2, 2)] * 4, modalities=list(modalities), labels=LABELS).to_dict()
    return make_training_folder(path, SMALL, LABELS, tuple(modalities), plan)


def images_ts(dst, n_cases, n_modalities):
    """An imagesTs/ folder of real demo scans named CASE_XXXX.nii.gz (the second modality: the scan again)."""
    from engine.data.demo import demo_dataset_path

    src = demo_dataset_path()
    entries = json.loads((src / "dataset.json").read_text())["training"][:n_cases]
    dst.mkdir(parents=True)
    for i, entry in enumerate(entries):
        for c in range(n_modalities):
            shutil.copy(src / entry["image"], dst / f"case{i}_{c:04d}.nii.gz")
    (dst / "notes.txt").write_text("not a scan")
    return dst


def snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(folder).iterdir())}


def test_imagests_folder_predicted_then_resumed_with_continue(tmp_path, capsys):
    trained = model(tmp_path / "model", ["T1"])
    scans = images_ts(tmp_path / "imagesTs", 3, 1)
    inputs = snapshot(scans)
    out = tmp_path / "out"
    first = last_json(emonas("predict", trained, scans, "-o", out, "--json"))
    assert first["cases"] == ["case0", "case1", "case2"] and first["device"] == "cpu"  # --device auto, no GPU here
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case0.nii.gz", "case1.nii.gz", "case2.nii.gz"]
    for i in range(3):
        assert nib.load(str(out / f"case{i}.nii.gz")).shape == nib.load(str(scans / f"case{i}_0000.nii.gz")).shape
    labels_1 = np.asarray(nib.load(str(out / "case1.nii.gz")).dataobj)

    (out / "case1.nii.gz").unlink()  # an interrupted run: one case missing ...
    (out / "case2.nii.gz").write_bytes((out / "case2.nii.gz").read_bytes()[:200])  # ... one cut short
    kept = snapshot(out)["case0.nii.gz"]
    again = last_json(cli(capsys, "predict", trained, scans, "-o", out, "--continue", "--json"))
    assert again["skipped"] == ["case0"] and again["cases"] == ["case1", "case2"]
    assert snapshot(out)["case0.nii.gz"] == kept  # bytes and modification time untouched
    assert np.array_equal(np.asarray(nib.load(str(out / "case1.nii.gz")).dataobj), labels_1)
    assert nib.load(str(out / "case2.nii.gz")).get_fdata().shape == nib.load(str(scans / "case2_0000.nii.gz")).shape
    assert snapshot(scans) == inputs


def test_two_modality_folder_and_probabilities(tmp_path, capsys):
    trained = model(tmp_path / "model", ["T1", "T2"])
    scans = images_ts(tmp_path / "imagesTs", 2, 2)
    inputs, model_files = snapshot(scans), snapshot(trained)
    out = tmp_path / "out"
    result = last_json(emonas("predict", trained, scans, "-o", out, "--save-probabilities", "--json"))
    assert result["cases"] == ["case0", "case1"]
    assert [Path(p).name for p in result["probabilities"]] == ["case0.npz", "case1.npz"]
    for cid, paths in zip(result["cases"], result["inputs"]):
        assert [Path(p).name for p in paths] == [f"{cid}_0000.nii.gz", f"{cid}_0001.nii.gz"]
        label_img = nib.load(str(out / f"{cid}.nii.gz"))
        with np.load(out / f"{cid}.npz") as npz:
            probs = npz["probabilities"]
        assert probs.dtype == np.float16 and probs.shape == (4, *label_img.shape)
        assert np.allclose(probs.astype(np.float32).sum(0), 1.0, atol=1e-2)
        values = np.array(list(LABELS.values()))
        assert np.array_equal(values[probs.argmax(0)], np.asarray(label_img.dataobj))
        assert np.allclose(label_img.affine, nib.load(str(scans / f"{cid}_0000.nii.gz")).affine)
    done = snapshot(out)
    again = last_json(cli(capsys, "predict", trained, scans, "-o", out, "--save-probabilities", "--continue", "--json"))
    assert again["skipped"] == ["case0", "case1"] and again["outputs"] == []
    (out / "case1.npz").unlink()  # the probabilities are part of a complete case
    again = last_json(cli(capsys, "predict", trained, scans, "-o", out, "--save-probabilities", "--continue", "--json"))
    assert again["skipped"] == ["case0"] and again["cases"] == ["case1"]
    assert snapshot(out)["case0.npz"] == done["case0.npz"]
    assert snapshot(scans) == inputs and snapshot(trained) == model_files  # the model folder is only read too

    (scans / "case1_0001.nii.gz").unlink()
    p = cli(capsys, "predict", trained, scans, "-o", tmp_path / "out2", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "case1" in p.stderr and "case1_0001" in p.stderr
    assert not (tmp_path / "out2").exists()


def test_folder_naming_rules(tmp_path):
    from engine.errors import ConfigError, DataError
    from engine.infer.folder import folder_cases, gather_cases

    d = tmp_path / "scans"
    d.mkdir()
    for name in ("a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz", "readme.md"):
        (d / name).write_bytes(b"")
    assert [(c, [p.name for p in ps]) for c, ps in folder_cases(d, 2)] == [
        ("a", ["a_0000.nii.gz", "a_0001.nii.gz"]), ("b", ["b_0000.nii.gz", "b_0001.nii.gz"])]
    with pytest.raises(DataError, match="beyond"):
        folder_cases(d, 1)  # a one-modality model given two channels per case
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("scan_2019.nii.gz", "other.mha"):
        (plain / name).write_bytes(b"")
    assert [c for c, _ in folder_cases(plain, 1)] == ["other", "scan_2019"]
    with pytest.raises(DataError, match="CASE_"):
        folder_cases(plain, 2)
    dup = tmp_path / "dup"
    dup.mkdir()
    (dup / "x.nii.gz").write_bytes(b"")
    (dup / "x.mha").write_bytes(b"")
    (plain / "mixed_0000.nii.gz").write_bytes(b"")  # scan_2019 has no scan_0000: each file is a case
    assert [c for c, _ in folder_cases(plain, 1)] == ["mixed_0000", "other", "scan_2019"]
    (plain / "mixed_0000.nii.gz").unlink()
    with pytest.raises(ConfigError, match="would both be written as x.nii.gz"):
        gather_cases([dup], 1)
    dicom = tmp_path / "series"
    dicom.mkdir()
    (dicom / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    assert folder_cases(dicom, 1) == [("series", [dicom])]
