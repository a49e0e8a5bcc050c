"""`emonas report`: test cases scored in each scan's own geometry, the U-Net family trained as the
candidates are, and the hypervolumes of both fronts against the fixed reference point.

One tiny real search (two candidates, one epoch) on six demo cases whose two test cases are stored
unusually: one with an oblique affine, one with its first axis flipped (the same anatomy in world space).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.infer.metrics import case_metrics, evaluate_folders
from engine.run.report import hypervolume_2d
from test_search_cli import small_demo  # noqa: F401 - a fixture of this module too

TEST = ["brain_004", "brain_005"]


def _rewrite(path: Path, affine: np.ndarray, flip: bool = False) -> None:
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if flip:
        data = data[::-1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine, img.header), str(path))


@pytest.fixture(scope="module")
def odd_demo(small_demo, tmp_path_factory):
    """Six demo cases; brain_004 with an oblique affine (20 degrees about z), brain_005 stored with its
    first axis flipped (the affine flips it back: the same labels in world space); a split file."""
    dst, config = small_demo
    for sub in ("imagesTr", "labelsTr"):
        oblique = dst / sub / "brain_004.nii.gz"
        a = nib.load(str(oblique)).affine
        t = math.radians(20)
        rot = np.array([[math.cos(t), -math.sin(t), 0, 0], [math.sin(t), math.cos(t), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        _rewrite(oblique, rot @ a)
        flipped = dst / sub / "brain_005.nii.gz"
        img = nib.load(str(flipped))
        n = img.shape[0]
        flip = np.array([[-1, 0, 0, n - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
        _rewrite(flipped, img.affine @ flip, flip=True)
    split = tmp_path_factory.mktemp("split") / "split.json"
    split.write_text(json.dumps({"train": ["brain_000", "brain_001", "brain_002"], "val": ["brain_003"], "test": TEST}))
    return dst, split, config


@pytest.fixture(scope="module")
def run(odd_demo, tmp_path_factory):
    from engine.cli import main

    data, split, config = odd_demo
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["search", "--dataset", str(data), "--config", str(config), "--out", str(out), "--population", "2",
                 "--generations", "1", "--epochs", "1", "--seed", "3", "--splits", str(split), "--json"]) == 0
    return out


def _digests(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (SQLite's -shm/-wal, which any reader creates, left out)."""
    import hashlib

    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for root in roots for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(("-shm", "-wal"))}


@pytest.fixture(scope="module")
def report(odd_demo, run, tmp_path_factory):
    from engine.cli import main

    out = tmp_path_factory.mktemp("report") / "report"
    before = _digests(run, odd_demo[0])
    assert main(["report", str(run), "--out", str(out), "--family-widths", "2,3,4,6", "--family-depths", "2",
                 "--json"]) == 0
    doc = json.loads((out / "report.json").read_text())
    doc["_inputs"] = (before, _digests(run, odd_demo[0]))
    return doc


def test_the_report_changes_no_byte_of_its_run_or_dataset(report):
    before, after = report["_inputs"]
    assert len(before) > 10 and after == before


def test_front_is_scored_as_predict_and_evaluate_score_it_in_each_scans_geometry(odd_demo, run, report, tmp_path):
    """The report's numbers equal `emonas predict` on the scans then evaluation against the original label
    files (oblique and flipped included), and differ from scoring on the preprocessed grid."""
    from engine.cli import main
    from engine.data import Plan, preprocess_images, preprocess_label
    from engine.data.io import read_label
    from engine.data.validate import read_case_images
    from engine.data.layouts import Case
    from engine.infer.predictor import Predictor

    data, _, _ = odd_demo
    assert report["test_cases"] == TEST
    assert report["scored_in"].startswith("each scan's own geometry")
    refs = tmp_path / "refs"
    refs.mkdir()
    for cid in TEST:
        shutil.copy(data / "labelsTr" / f"{cid}.nii.gz", refs / f"{cid}.nii.gz")
    searched = [m for m in report["models"] if m["kind"] == "searched"]
    assert searched
    rows = list(csv.DictReader(open(report["metrics_csv"])))
    some_differ = False
    for m in searched:
        folder = run / "candidates" / str(m["candidate"])
        preds = tmp_path / f"pred{m['candidate']}"
        assert main(["predict", str(folder), *(str(data / "imagesTr" / f"{c}.nii.gz") for c in TEST),
                     "-o", str(preds), "--json"]) == 0
        truth = evaluate_folders(preds, refs, labels={"grey matter": 1, "white matter": 2, "CSF": 3})
        mine = {(r["case"], r["label"]): r for r in rows if r["model"] == m["model"]}
        assert len(mine) == 6
        for cid in TEST:
            for label, v in truth.per_case[cid].items():
                assert float(mine[cid, label]["dice"]) == pytest.approx(v["dice"], abs=1e-6)
                assert float(mine[cid, label]["hd95_mm"]) == pytest.approx(v["hd95"], abs=1e-3)
        # the same network scored on the cropped, resampled grid gives other numbers
        predictor = Predictor.from_training_folder(folder, device="cpu")
        plan = Plan.from_dict(json.loads((folder / "training.json").read_text())["plan"])
        for cid in TEST:
            case = Case(cid, [data / "imagesTr" / f"{cid}.nii.gz"], data / "labelsTr" / f"{cid}.nii.gz")
            array, props = preprocess_images(read_case_images(case), plan)
            ref_grid = preprocess_label(read_label(case.label_path)[0], props)
            grid = case_metrics(predictor.predict_array(array), ref_grid, props["spacing"],
                                {"grey matter": 1, "white matter": 2, "CSF": 3})
            some_differ |= any(abs(grid[k]["hd95"] - truth.per_case[cid][k]["hd95"]) > 1e-3 for k in grid)
    assert some_differ


def test_family_is_trained_with_the_candidates_settings(run, report):
    family = [m for m in report["models"] if m["kind"] == "family"]
    assert report["family"]["widths"] == [2, 3, 4, 6] and report["family"]["depths"] == [2]
    assert sorted((m["width"], m["budget"]) for m in family) == sorted(
        (w, b) for w in (2, 3, 4, 6) for b in ("epochs", "time"))
    cand = json.loads((run / "candidates" / str(report["models"][0]["candidate"]) / "training.json").read_text())
    sizes = [m["parameters"] for m in family if m["budget"] == "epochs"]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4  # four distinct widths
    for m in family:
        s = m["settings"]
        assert s["patch_size"] == cand["patch_size"] and s["pool_sizes"] == cand["pool_sizes"]
        assert s["profile"] == cand["config"]["profile"] and s["seed"] == cand["config"]["seed"]
        assert s["iterations_per_epoch"] == cand["config"]["iterations_per_epoch"]
        assert s["patience"] == cand["config"]["patience"]
        assert 0.0 <= m["test_dice"] <= 1.0 and m["cpu_ms"] > 0 and m["fit_seconds"] > 0
        if m["budget"] == "epochs":  # the very settings, augmentation planned for the same steps
            assert s["epochs"] == m["epochs"] == cand["config"]["epochs"] == report["family"]["epochs"]
            assert s["augmentation"] == cand["augmentation"]
            assert s["val_every"] == cand["val_every"]
        else:
            assert m["budget_value"] == pytest.approx(report["family"]["median_candidate_seconds"])
    assert Path(report["fronts_png"]).read_bytes()[:4] == b"\x89PNG"


def _by_hand(points, ref):
    """Union of the rectangles [cost, ref] x [0, dice], summed level by level of Dice."""
    levels = sorted({d for _, d in points if d > 0})
    area, below = 0.0, 0.0
    for d in levels:
        cheapest = min(c for c, dd in points if dd >= d)
        area += (d - below) * max(ref - cheapest, 0.0)
        below = d
    return area


def test_hypervolumes_match_a_hand_computation(report):
    assert hypervolume_2d([(1, 0.5), (2, 0.8), (3, 0.6)], 10) == pytest.approx(1 * 0.5 + 8 * 0.8)
    assert hypervolume_2d([(12, 0.9)], 10) == 0.0  # beyond the reference point
    models = report["models"]
    planes = report["comparison"]["planes"]
    assert set(planes) == {"parameters", "cpu_ms"}
    for key, plane in planes.items():
        ref = plane["reference_point"][key]
        assert ref == pytest.approx(2 * max(m[key] for m in models))
        assert plane["reference_point"]["dice"] == 0.0
        groups = {"searched": [m for m in models if m["kind"] == "searched"],
                  "family_epochs": [m for m in models if m.get("budget") == "epochs"],
                  "family_time": [m for m in models if m.get("budget") == "time"]}
        assert set(plane["hypervolume"]) == set(groups)
        for g, ms in groups.items():
            hand = _by_hand([(m[key], m["test_dice"]) for m in ms], ref) / ref
            assert plane["hypervolume"][g] == pytest.approx(hand, rel=1e-9)
    verdict = report["comparison"]["verdict"]
    assert len(verdict) == 4 and all("ahead" in v or "level" in v for v in verdict)
    assert any("same epochs" in v for v in verdict) and any("wall time" in v for v in verdict)


def test_bad_family_options_are_one_line_errors(run, tmp_path, capsys):
    from engine.cli import main

    for args, text in ((["--family-widths", "4,x"], "--family-widths"), (["--family-depths", "9"], "allows depths"),
                       (["--family-budgets", "minutes"], "--family-budgets")):
        capsys.readouterr()
        assert main(["report", str(run), "--out", str(tmp_path / "r"), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0] and "Traceback" not in err[0]
        assert not (tmp_path / "r").exists()
