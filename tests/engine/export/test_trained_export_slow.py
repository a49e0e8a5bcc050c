"""Slow: a network trained by `emonas train` on the demo data, exported, reproduces its validation Dice
through `emonas predict` with ONNX Runtime; a candidate whose weights were pruned is retrained on export."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from engine.data import open_dataset
from engine.export.package import verify_model_folder
from engine.infer.metrics import dice
from engine.run.store import RunStore

pytestmark = pytest.mark.slow

GENOME = {"in2": 1, "in3": 2, "in4": 3, "op1": "p3d_3x3x3", "op2": "identity", "op3": "conv2d_5x5x1",
          "op4": "conv3d_3x3x3", "n_cells": 5, "nf1": 8, "lr": 0.003}


def emonas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=1800)


def test_exported_model_reproduces_validation_dice(tmp_path):
    r = emonas("train", "--dataset", "demo", "--genome", json.dumps(GENOME), "--out", str(tmp_path / "trained"),
               "--epochs", "3", "--patch", "32,32,32", "--device", "cpu", "--seed", "0", "--json")
    assert r.returncode == 0, r.stderr
    trained = json.loads((tmp_path / "trained" / "training.json").read_text())
    per_case = json.loads((tmp_path / "trained" / "metrics.json").read_text())["per_case"]
    r = emonas("export", "--checkpoint", str(tmp_path / "trained"), "--out", str(tmp_path / "model"), "--json")
    assert r.returncode == 0, r.stderr
    assert verify_model_folder(tmp_path / "model")["metrics"]
    ds = open_dataset("demo")
    val = trained["split"]["val"]
    inputs = [str(ds.case(cid).image_paths[0]) for cid in val]
    r = emonas("predict", str(tmp_path / "model"), *inputs, "-o", str(tmp_path / "pred"), "--json")
    assert r.returncode == 0, r.stderr
    outputs = json.loads(r.stdout.strip().splitlines()[-1])["outputs"]
    # the training folder itself, through PyTorch, gives the same label maps
    r = emonas("predict", str(tmp_path / "trained"), *inputs, "-o", str(tmp_path / "pred_torch"), "--json")
    assert r.returncode == 0, r.stderr
    for a, b in zip(outputs, json.loads(r.stdout.strip().splitlines()[-1])["outputs"]):
        assert (np.asarray(nib.load(a).dataobj) == np.asarray(nib.load(b).dataobj)).mean() >= 0.999
    pairs = []
    for cid, out in zip(val, outputs):
        pred = np.asarray(nib.load(out).dataobj)
        ref = np.asarray(nib.load(str(ds.case(cid).label_path)).dataobj)
        for name, value in trained["labels"].items():
            if value == 0:
                continue
            pairs.append((cid, name, dice(pred == value, ref == value), per_case[cid][name]["dice"]))
    for cid, name, got, want in pairs:
        # validation measured the same network on the same scans on the plan's grid, the prediction is
        # scored in each scan's own: resampling to and from that grid moves a few boundary voxels, a
        # few hundredths of Dice for a label the network has learned. A thin label it has barely learned
        # in 3 epochs (CSF, Dice 0.06 - 0.19 on the plan's grid, scattered voxels, all boundary) moved by
        # up to 0.08 (measured): there the two only agree that it is not learned.
        if want >= 0.5:
            assert abs(got - want) < 0.03, (cid, name, got, want)
        else:
            assert got < 0.5, (cid, name, got, want)
    learned = [p for p in pairs if p[3] >= 0.5]
    assert len(learned) >= len(pairs) // 2  # the tight bound covers most of what is compared


def test_pruned_candidate_is_retrained_on_export(tmp_path):
    run = tmp_path / "run"
    store = RunStore.create(run, {"config": {}, "problem": {"data": {"dataset": "demo", "seed": 0}},
                                  "train_config": {"epochs": 1, "patience": 5, "seed": 0,
                                                   "patch_size": [32, 32, 32], "iterations_per_epoch": 2}})
    try:
        (cid,) = store.add_candidates([{"genome": json.dumps(GENOME)}])
        store.update_candidate(cid, status="done", f1=0.5, f2=0.5, parameters=106516, pruned=1)
    finally:
        store.close()
    r = emonas("export", str(run), "--candidate", str(cid), "--out", str(tmp_path / "model"), "--format", "onnx", "--json")
    assert r.returncode == 0, r.stderr
    meta = verify_model_folder(tmp_path / "model")
    assert meta["candidate"]["retrained"] is True and meta["candidate"]["on_pareto_front"] is True
    assert meta["genome"] == GENOME
    assert not any(p.name.startswith(".model.retrain") for p in tmp_path.iterdir())
