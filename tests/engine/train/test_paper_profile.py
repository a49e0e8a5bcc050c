"""The paper profile's training protocol: the authors' early stopping, plateau schedule, e_max,
soft Dice, augmentation ranges and Keras initialization, against values worked out by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import kstest

from engine.train import TrainerConfig, train_candidate
from engine.train.augmentation import PAPER, draw_spatial
from engine.train.losses import per_class_soft_dice
from engine.train.trainer import Trainer


def cfg(**kw):
    base = dict(epochs=3, seed=5, device="cpu", num_threads=2, profile="paper", iterations_per_epoch=1)
    base.update(kw)
    return TrainerConfig(**base)


def scripted(trainer: Trainer, losses: list[float]):
    """Replace validation by the given losses (epoch i gets losses[i - 1]); training stays real."""
    def validate(epoch):
        return {"val_loss": losses[epoch - 1], "val_dice": {"left": 1 - losses[epoch - 1] / 2, "right": 0.5}}
    trainer.validate = validate


def test_early_stopping_on_val_loss_with_min_delta_and_e_max_the_argmin(tiny_data, small_genome):
    # improvements by more than 0.001 reset the count: epochs 1, 2 and 5; epochs 6, 7, 8 improve by
    # less, so with patience 3 training stops after epoch 8, whose loss is the lowest: e_max = 8
    losses = [1.0, 0.9, 0.8995, 0.8992, 0.85, 0.8499, 0.8498, 0.8497, 0.1, 0.1]
    t = Trainer(small_genome, tiny_data, cfg(epochs=10, patience=3))
    scripted(t, losses)
    r = t.fit()
    assert r.epochs == 8
    assert r.best_epoch == 8 and r.dice["left"] == pytest.approx(1 - 0.8497 / 2)
    # the default profile watches the best Dice instead: it does not stop there
    d = Trainer(small_genome, tiny_data, cfg(epochs=10, patience=3, profile="default"))
    scripted(d, losses)
    assert d.fit().epochs == 10


def test_plateau_halves_the_rate_after_30_flat_training_epochs_down_to_1e_7(tiny_data, small_genome):
    t = Trainer(small_genome, tiny_data, cfg())
    lr0 = t.optimizer.param_groups[0]["lr"]
    t.plateau.step(1.0)  # the first epoch sets the reference
    for _ in range(29):
        t.plateau.step(1.0 - 5e-5)  # better by less than Keras' min_delta 1e-4: a flat epoch
    assert t.optimizer.param_groups[0]["lr"] == lr0  # 29 flat epochs: not yet
    t.plateau.step(1.0)
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(lr0 / 2)  # the 30th: halved
    for _ in range(30 * 40):
        t.plateau.step(1.0)
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(1e-7)
    assert Trainer(small_genome, tiny_data, cfg(profile="default")).plateau is None


def test_paper_soft_dice_smooths_by_half_with_squared_sums():
    probs = torch.tensor([[0.2, 0.6], [0.8, 0.4]]).reshape(1, 2, 2, 1, 1)  # (N, K, X, Y, Z)
    target = torch.tensor([1, 0]).reshape(1, 2, 1, 1)
    # class 1: |P.G| = 0.8; sum P^2 = 0.64 + 0.16 = 0.8; sum G^2 = 1  ->  (1.6 + 0.5) / (0.8 + 1 + 0.5)
    assert float(per_class_soft_dice(probs, target, smooth=0.5, squared=True)[0]) == pytest.approx(2.1 / 2.3)
    # the default: plain sums, smoothing 1  ->  (1.6 + 1) / (1.2 + 1 + 1)
    assert float(per_class_soft_dice(probs, target)[0]) == pytest.approx(2.6 / 3.2)


def test_paper_augmentation_zoom_uniform_in_half_to_one_and_a_half_and_shift_up_to_forty_percent():
    profile = dataclasses.replace(PAPER, p_rotate=0.0)  # zoom alone: the matrix is diag(zx, zy, 1)
    rng = np.random.default_rng(0)
    patch = (32, 48, 16)
    draws = [draw_spatial(profile, rng, (1.0, 1.0, 1.0), patch) for _ in range(3000)]
    zx = np.array([d.matrix[0, 0] for d in draws])
    zy = np.array([d.matrix[1, 1] for d in draws])
    assert all(d.matrix[2, 2] == 1.0 and d.matrix[0, 1] == 0.0 for d in draws)
    for z in (zx, zy):
        assert 0.5 <= z.min() and z.max() <= 1.5
        assert kstest(z, "uniform", args=(0.5, 1.0)).pvalue > 1e-3
    # the old rule (1 / s with s uniform) fails the same test
    assert kstest(1 / rng.uniform(1 / 1.5, 2.0, 3000), "uniform", args=(0.5, 1.0)).pvalue < 1e-6
    shift = np.array([d.shift[:2] / np.array(patch[:2]) for d in draws])
    assert np.abs(shift).max() <= 0.4 and np.abs(shift).max() > 0.38
    assert all(d.shift[2] == 0 for d in draws)


def test_keras_initialization_glorot_uniform_zero_bias_and_norm_epsilon(tiny_data, small_genome):
    t = Trainer(small_genome, tiny_data, cfg())
    convs = [m for m in t.model.modules() if isinstance(m, torch.nn.Conv3d)]
    for m in convs:
        fan_in = m.weight.shape[1] * m.weight[0, 0].numel()
        fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert float(m.weight.detach().abs().max()) <= bound and float(m.bias.detach().abs().max()) == 0.0
    norms = [m for m in t.model.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and all(m.eps == 1e-3 for m in norms)
    default = Trainer(small_genome, tiny_data, cfg(profile="default"))
    assert any(float(m.bias.detach().abs().max()) > 0 for m in default.model.modules() if isinstance(m, torch.nn.Conv3d))


def test_a_paper_run_is_reproducible_and_trains(tiny_data, small_genome):
    a = train_candidate(small_genome, tiny_data, cfg(epochs=2, iterations_per_epoch=2))
    b = train_candidate(small_genome, tiny_data, cfg(epochs=2, iterations_per_epoch=2))
    strip = lambda r: [{k: v for k, v in e.items() if "seconds" not in k} for e in r.curves]  # noqa: E731
    assert strip(a) == strip(b) and a.status == "done" and 0 < a.f1 < 1
    assert a.best_epoch == 1 + int(np.argmin([c["val_loss"] for c in a.curves]))
