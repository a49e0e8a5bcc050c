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


def test_evaluate_writes_a_csv_per_case_and_label_and_a_summary(folders, tmp_path):
    import csv

    pred, ref = folders
    before = {p: p.read_bytes() for d in (pred, ref) for p in d.iterdir()}
    out = tmp_path / "metrics.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "evaluate", "--pred", str(pred), "--ref", str(ref), "--csv", str(out),
         "--json"], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["csv"] == str(out) and result["summary_csv"] == str(tmp_path / "metrics_summary.csv")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["label"]) for r in rows] == [("case_0", "1"), ("case_0", "2"), ("case_1", "1"), ("case_1", "2")]
    shifted = next(r for r in rows if r["case"] == "case_1" and r["label"] == "1")
    assert float(shifted["dice"]) == pytest.approx(2 * 6 / 16)
    assert float(shifted["hd_mm"]) == pytest.approx(2.0)  # 2 voxels along x at 1 mm
    for r in rows:  # the CSV holds what the JSON holds
        for key, col in (("dice", "dice"), ("hd", "hd_mm"), ("hd95", "hd95_mm"), ("asd", "asd_mm")):
            assert float(r[col]) == pytest.approx(result["per_case"][r["case"]][r["label"]][key])
    with open(tmp_path / "metrics_summary.csv", newline="") as f:
        summary = {r["label"]: r for r in csv.DictReader(f)}
    assert set(summary) == {"1", "2", "foreground_mean"}
    assert float(summary["1"]["dice_mean"]) == pytest.approx((1 + 0.75) / 2)
    assert int(summary["1"]["cases"]) == 2
    per_case_fg = [np.mean([float(r["dice"]) for r in rows if r["case"] == c]) for c in ("case_0", "case_1")]
    assert float(summary["foreground_mean"]["dice_mean"]) == pytest.approx(np.mean(per_case_fg))
    assert {p: p.read_bytes() for d in (pred, ref) for p in d.iterdir()} == before


def test_evaluate_csv_must_be_a_csv_file_named_before_any_work(folders, capsys):
    pred, ref = folders
    before = {p: p.read_bytes() for p in ref.iterdir()}
    assert main(["evaluate", "--pred", str(pred), "--ref", str(ref), "--csv", str(ref / "case_0.nii.gz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ".csv" in err[0]
    assert {p: p.read_bytes() for p in ref.iterdir()} == before
