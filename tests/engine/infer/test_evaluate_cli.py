"""``emonas evaluate`` on folders of real label files."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from engine.cli import main


def write(path, arr, spacing=(1.0, 1.0, 2.0)):
    nib.save(nib.Nifti1Image(arr.astype(np.uint8), np.diag([*spacing, 1.0])), str(path))


@pytest.fixture
def folders(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    for i, shift in enumerate((0, 2)):
        r = np.zeros((20, 20, 10), np.uint8)
        r[4:12, 4:12, 2:6] = 1
        r[13:17, 13:17, 2:6] = 2
        p = np.roll(r, shift, axis=0)
        write(ref / f"case_{i}.nii.gz", r)
        write(pred / f"case_{i}.nii.gz", p)
    return pred, ref


def test_evaluate_json_gives_per_case_and_summary(folders):
    pred, ref = folders
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "evaluate", "--pred", str(pred), "--ref", str(ref), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out["per_case"]) == {"case_0", "case_1"}
    assert out["per_case"]["case_0"]["1"]["dice"] == 1.0
    shifted = out["per_case"]["case_1"]["1"]
    assert shifted["dice"] == pytest.approx(2 * 6 / 16)
    assert shifted["hd"] == pytest.approx(2.0)  # a 2-voxel shift along x at 1 mm
    assert out["summary"]["1"]["dice"]["mean"] == pytest.approx((1 + 0.75) / 2)


def test_evaluate_reports_a_missing_prediction_in_one_line(folders, capsys):
    pred, ref = folders
    (pred / "case_1.nii.gz").unlink()
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "case_1" in err[0] and str(pred) in err[0]


def test_evaluate_names_classes_from_a_dataset_json(folders, tmp_path, capsys):
    pred, ref = folders
    meta = tmp_path / "dataset.json"
    meta.write_text(json.dumps({"labels": {"0": "background", "1": "anterior", "2": "posterior"}}))
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--labels", str(meta), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out["summary"]) == {"anterior", "posterior"}
    assert out["labels"] == {"anterior": 1, "posterior": 2}
