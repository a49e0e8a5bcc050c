"""One candidate as a worker trains it (real training): results, early stopping, failures."""

import json
import math
import shutil

import pytest

from engine.genome import Genome
from engine.run.evaluate import evaluate_candidate

GENOME = Genome(1, 0, 2, "conv3d_3x3x3", "conv3d_1x1x1", "conv2d_3x3x1", "identity", 5, 8, 1e-3)


@pytest.fixture(scope="module")
def task_data(tmp_path_factory):
    from engine.data.demo import demo_dataset_path

    src = demo_dataset_path()
    dst = tmp_path_factory.mktemp("demo4")
    (dst / "imagesTr").mkdir()
    (dst / "labelsTr").mkdir()
    meta = json.loads((src / "dataset.json").read_text())
    meta["training"] = meta["training"][:4]
    meta["numTraining"] = 4
    for entry in meta["training"]:
        for key in ("image", "label"):
            shutil.copy(src / entry[key], dst / entry[key])
    (dst / "dataset.json").write_text(json.dumps(meta))
    return {"dataset": str(dst), "seed": 0, "cache_dir": str(dst.parent / "cache"),
            "plan_overrides": {"target_spacing": [7.0, 7.0, 7.0], "patch_size": [16, 16, 16]}}


def task(data, out_dir, **kw):
    train = {"epochs": 3, "patience": 20, "iterations_per_epoch": 1, "max_epochs_for_objective": 3, "seed": 0}
    return {"candidate_id": 1, "genome": GENOME.to_dict(), "out_dir": str(out_dir), "data": data, "train": train,
            "device": "cpu", **kw}


def test_early_stopping_ends_a_hopeless_candidate(task_data, tmp_path):
    # nobody can reach a mean Dice of 2 by epoch 1: the rule stops the candidate there
    r = evaluate_candidate(task(task_data, tmp_path / "c1", stop_below={"1": 2.0}))
    assert r["status"] == "done" and r["metrics"]["early_stopped"] is True
    assert r["metrics"]["epochs"] == 1 and len(r["curves"]) == 1
    assert 0 < r["f1"] <= 1 and math.isfinite(r["f1_raw"])
    assert (tmp_path / "c1" / "weights.pt").is_file()
    json.dumps(r)  # plain data, fit for a process pool or Ray


def test_the_early_stopping_checkpoints_are_validated_whatever_the_interval(task_data, tmp_path):
    # validating every 3rd epoch only, a checkpoint at epoch 2 still reads a validated Dice: the
    # candidate is neither stopped unread nor failed for want of a validated epoch
    t = task(task_data, tmp_path / "c3", stop_below={"2": 0.0})
    t["train"] = {**t["train"], "val_every": 3, "epochs": 4, "max_epochs_for_objective": 4}
    r = evaluate_candidate(t)
    assert r["status"] == "done" and r["metrics"]["early_stopped"] is False
    assert ["val_loss" in c for c in r["curves"]] == [False, True, True, True]


def test_a_broken_task_is_a_failed_result_not_an_exception(task_data, tmp_path):
    bad = task(task_data, tmp_path / "c2")
    bad["data"] = {**task_data, "dataset": str(tmp_path / "missing")}
    r = evaluate_candidate(bad)
    assert r["status"] == "failed" and "missing" in r["error"] and "\n" not in r["error"]
