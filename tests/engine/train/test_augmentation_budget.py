"""The default profile's augmentation follows the labels and the budget, validation stays a small share
of training, and test-time mirroring uses the axes training mirrored."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from engine.train import TrainerConfig, train_candidate
from engine.train.augmentation import (
    DEFAULT,
    LIGHT_STEPS,
    PAPER,
    STRONG_STEPS,
    draw_spatial,
    strength_for,
    training_augmentation,
)
from engine.train.trainer import Trainer, sliding_windows, validation_interval


def MirrorPlan():
    """A real plan for the tiny data whose labels may be mirrored along x only."""
    from engine.data import Plan

    return Plan(target_spacing=(1.0, 1.0, 1.5), patch_size=(16, 16, 16), batch_size=2,
                normalization=[{"modality": "MRI", "scheme": "zscore"}], pool_schedule=[(2, 2, 2)] * 4,
                modalities=["MRI"], labels={"background": 0, "left": 1, "right": 2}, mirror_axes=(0,))


def with_plan(data, plan):
    return type(data)(**{**vars(data), "plan": plan})


def test_strength_grows_with_the_planned_steps():
    assert strength_for("auto", 15 * 20) == 0.0 == strength_for("auto", LIGHT_STEPS)
    assert strength_for("auto", STRONG_STEPS) == 1.0 == strength_for("auto", 1000 * 250)
    assert strength_for("auto", (LIGHT_STEPS + STRONG_STEPS) // 2) == pytest.approx(0.5)
    assert strength_for("light", 10**6) == 0.0 and strength_for("strong", 10) == 1.0
    light, rec = training_augmentation("default", "auto", None, (0,), 300)
    assert (light.p_rotate, light.p_scale, light.p_gamma, light.p_noise, light.p_flip) == (0, 0, 0, 0, 0)
    # a short training mirrors nothing, so test-time mirroring averages over nothing either
    assert light.flip_axes == () and rec["mirror_axes"] == [] and rec["strength"] == 0.0
    half, rec = training_augmentation("default", "auto", None, (0, 2), (LIGHT_STEPS + STRONG_STEPS) // 2)
    assert half.flip_axes == (0, 2) and half.p_flip == pytest.approx(DEFAULT.p_flip / 2) and rec["mirror_axes"] == [0, 2]
    full, rec = training_augmentation("default", "strong", None, (0,), 300)
    assert full.flip_axes == (0,) and full.p_flip == DEFAULT.p_flip and rec["mirror_axes"] == [0]
    strong, rec = training_augmentation("default", "auto", [1, 2], (0,), 10**6)
    assert strong.p_rotate == DEFAULT.p_rotate and strong.p_gamma == DEFAULT.p_gamma
    assert strong.flip_axes == (1, 2) and rec["mirror_axes"] == [1, 2]  # the config's axes win
    asked, rec = training_augmentation("default", "auto", [0], (1, 2), 300)
    assert asked.flip_axes == (0,) and asked.p_flip == DEFAULT.p_flip and asked.p_rotate == 0  # asked for: mirrored
    none, rec = training_augmentation("default", "strong", [], (0, 1, 2), 10**6)
    assert none.flip_axes == () and none.p_flip == 0 and rec["mirror_axes"] == []
    paper, rec = training_augmentation("paper", "auto", None, (1,), 300)
    assert paper == PAPER and rec["strength"] is None


def test_only_allowed_axes_are_ever_flipped():
    prof, _ = training_augmentation("default", "strong", None, (0,), 100)
    rng = np.random.default_rng(0)
    flips = np.array([draw_spatial(prof, rng, (1, 1, 1), (16, 16, 16)).flips for _ in range(400)])
    assert flips[:, 0].any() and not flips[:, 1:].any()


def test_trainer_mirrors_the_plans_axes_and_validates_a_small_share(tiny_data, small_genome, tmp_path):
    data = with_plan(tiny_data, MirrorPlan())
    t = Trainer(small_genome, data, TrainerConfig(epochs=5, seed=1, device="cpu", iterations_per_epoch=2))
    assert t.augmentation_profile.flip_axes == () and t.augmentation["strength"] == 0.0  # 10 steps: none
    t = Trainer(small_genome, data, TrainerConfig(epochs=5, device="cpu", iterations_per_epoch=2, augmentation="strong"))
    assert t.augmentation_profile.flip_axes == (0,) and t.augmentation["strength"] == 1.0
    # two 24x24x16 validation volumes, 16^3 patches: 2 x (1.2 + 4 x 0.2) against 2 x 2 samples per epoch
    assert sum(sliding_windows(c.label.shape, t.patch) for c in data.val) == 8
    assert t.val_every == validation_interval([c.label.shape for c in data.val], t.patch, 2, 2) == 9
    r = train_candidate(small_genome, data, TrainerConfig(epochs=5, seed=1, device="cpu", iterations_per_epoch=2,
                                                          augmentation="strong"), out_dir=tmp_path)
    validated = [c["epoch"] for c in r.curves if "val_loss" in c]
    assert validated == [5]  # every 9th epoch and the last
    assert 0 < r.f1 < 1 and r.best_epoch == 5
    doc = json.loads((tmp_path / "training.json").read_text())
    assert doc["mirror_axes"] == [0] and doc["augmentation"]["mirror_axes"] == [0] and doc["val_every"] == 9
    paper = Trainer(small_genome, data, TrainerConfig(epochs=5, device="cpu", profile="paper"))
    assert paper.val_every == 1  # the paper's f1 reads every epoch's validation loss
    fixed = Trainer(small_genome, data, TrainerConfig(epochs=5, device="cpu", val_every=2, mirror_axes=["y"]))
    assert fixed.val_every == 2 and fixed.augmentation_profile.flip_axes == (1,)


def test_predict_mirror_uses_the_trained_axes_only(tiny_data, small_genome, tmp_path):
    from engine.infer.predictor import Predictor

    data = with_plan(tiny_data, MirrorPlan())
    short = tmp_path / "short"
    train_candidate(small_genome, data, TrainerConfig(epochs=1, device="cpu", iterations_per_epoch=1), out_dir=short)
    assert Predictor.from_training_folder(short, mirror=True).mirror == []  # its training mirrored nothing
    train_candidate(small_genome, data, TrainerConfig(epochs=1, device="cpu", iterations_per_epoch=1,
                                                      augmentation="strong"), out_dir=tmp_path)
    calls = []
    pred = Predictor.from_training_folder(tmp_path, mirror=True)
    assert pred.mirror == [0]
    inner = pred.logits_fn
    pred.logits_fn = lambda x: calls.append(1) or inner(x)
    image = np.asarray(data.val[0].image, np.float32)
    mirrored = pred.predict_logits(image)
    n_mirrored, calls[:] = len(calls), []
    pred.mirror = False
    plain = pred.predict_logits(image)
    assert n_mirrored == 2 * len(calls)  # the volume and its x flip, not 8 flips
    assert mirrored.shape == plain.shape and not torch.allclose(mirrored, plain)
    doc = json.loads((tmp_path / "training.json").read_text())
    del doc["mirror_axes"]  # a folder written before the record: as its training did, every axis
    (tmp_path / "training.json").write_text(json.dumps(doc))
    assert Predictor.from_training_folder(tmp_path, mirror=True).mirror == [0, 1, 2]


GENOME = json.dumps({"in2": 0, "in3": 1, "in4": 1, "op1": "conv3d_3x3x3", "op2": "p3d_3x3x3", "op3": "p3d_3x3x3",
                     "op4": "conv2d_5x5x1", "n_cells": 5, "nf1": 8, "lr": 1e-3})


def test_train_cli_refuses_a_bad_validation_interval(tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "never"
    code = main(["train", "--dataset", "demo", "--genome", GENOME, "--out", str(out),
                 "--val-every", "0", "--augmentation", "light"])
    err = capsys.readouterr().err
    assert code == 2 and "val_every must be a positive integer" in err and not out.exists()


def test_train_cli_lr_schedule_poly_decays_and_is_recorded(tmp_path):
    from engine.cli import main

    out = tmp_path / "poly"
    code = main(["train", "--dataset", "demo", "--genome", GENOME, "--out", str(out), "--epochs", "2",
                 "--iterations-per-epoch", "1", "--lr-schedule", "poly", "--threads", "1"])
    assert code == 0
    text = json.dumps(json.loads((out / "training.json").read_text()))
    assert '"lr_schedule": "poly"' in text
    with open(out / "curves.csv", newline="") as f:
        rates = [float(row["lr"]) for row in csv.DictReader(f)]
    assert rates == pytest.approx([1e-3, 1e-3 * 0.5 ** 0.9])  # steps 0 and 1 of 2
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "demo", "--genome", GENOME, "--out", str(tmp_path / "x"), "--lr-schedule", "cosine"])
    assert e.value.code == 2 and not (tmp_path / "x").exists()


def test_train_cli_default_schedule_decays_in_the_last_fifth_and_is_recorded(tmp_path):
    from engine.cli import main

    out = tmp_path / "tail"
    code = main(["train", "--dataset", "demo", "--genome", GENOME, "--out", str(out), "--epochs", "5",
                 "--iterations-per-epoch", "2", "--threads", "1"])
    assert code == 0
    assert json.loads((out / "training.json").read_text())["config"]["lr_schedule"] == "tail"
    with open(out / "curves.csv", newline="") as f:
        rates = [float(row["lr"]) for row in csv.DictReader(f)]
    assert rates == pytest.approx([1e-3] * 4 + [0.5e-3])  # 10 steps: the last two decay


def test_train_cli_mirror_axes_mirrors_the_axes_asked_for_and_refuses_others(tmp_path, capsys):
    from engine.cli import main
    from engine.data.demo import write_demo_dataset

    dataset = write_demo_dataset(tmp_path / "data")
    genome = tmp_path / "genome.json"
    genome.write_text(GENOME)
    inputs = [p for p in [*dataset.rglob("*"), genome] if p.is_file()]
    before = {p: p.read_bytes() for p in inputs}
    out = tmp_path / "xz"
    code = main(["train", "--dataset", str(dataset), "--genome", str(genome), "--out", str(out), "--epochs", "1",
                 "--iterations-per-epoch", "1", "--mirror-axes", "x,z", "--threads", "1"])
    assert code == 0
    assert {p: p.read_bytes() for p in inputs} == before  # the dataset and the genome file untouched
    capsys.readouterr()
    doc = json.loads((out / "training.json").read_text())
    assert doc["mirror_axes"] == [0, 2] and doc["augmentation"]["p_flip"] == DEFAULT.p_flip
    assert doc["augmentation"]["strength"] == 0.0  # the rest of the augmentation still follows the budget
    bad = tmp_path / "bad"
    code = main(["train", "--dataset", str(dataset), "--genome", str(genome), "--out", str(bad), "--mirror-axes", "xw"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--mirror-axes" in err[0] and "'w'" in err[0] and not bad.exists()
    assert {p: p.read_bytes() for p in inputs} == before
