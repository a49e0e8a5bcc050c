"""The trainer on small in-memory data: reproducibility, events, cancellation, divergence, objectives."""

from __future__ import annotations

import gc
import math
import threading
import tracemalloc

import numpy as np
import pytest

from engine.train import TrainerConfig, TrainingFailed, objective_f1, train_candidate


def cfg(**kw):
    base = dict(epochs=3, seed=5, device="cpu", num_threads=2, val_every=1)
    base.update(kw)
    return TrainerConfig(**base)


def test_same_seed_same_curves_and_different_seed_differs(tiny_data, small_genome):
    strip = lambda r: [{k: v for k, v in e.items() if "seconds" not in k} for e in r.curves]  # noqa: E731
    a = train_candidate(small_genome, tiny_data, cfg())
    b = train_candidate(small_genome, tiny_data, cfg())
    c = train_candidate(small_genome, tiny_data, cfg(seed=6))
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)
    assert a.status == "done" and a.epochs == 3 and 1 <= a.best_epoch <= 3
    assert set(a.dice) == {"left", "right"} and all(0 <= v <= 1 for v in a.dice.values())
    assert a.log_parameters == pytest.approx(math.log(a.parameters))
    assert 0 < a.f1 < 1


def test_events_and_cancellation(tiny_data, small_genome):
    events = []
    stop = threading.Event()

    def on_event(e):
        events.append(e)
        if e["event"] == "epoch" and e["epoch"] == 2:
            stop.set()

    r = train_candidate(small_genome, tiny_data, cfg(epochs=10, iterations_per_epoch=6), callback=on_event, cancel=stop)
    assert r.status == "cancelled"
    epochs = [e for e in events if e["event"] == "epoch"]
    steps = [e for e in events if e["event"] == "step"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert steps and steps[0]["steps"] == 6
    # cancelled within the first check of epoch 3
    assert max(e["epoch"] for e in steps) == 3 and r.epochs == 2
    assert {"train_loss", "val_loss", "val_dice", "lr", "seconds"} <= set(epochs[0])


def test_divergence_raises_training_failed(tiny_data, small_genome):
    bad = [type(c)(**{**vars(c), "image": np.full_like(c.image, np.nan)}) for c in tiny_data.train]
    data = type(tiny_data)(**{**vars(tiny_data), "train": bad})
    with pytest.raises(TrainingFailed, match="diverged"):
        train_candidate(small_genome, data, cfg(epochs=1))


def test_memory_stays_flat_over_epochs(tiny_data, small_genome):
    sizes = []

    def on_event(e):
        if e["event"] == "epoch":
            gc.collect()
            sizes.append(tracemalloc.get_traced_memory()[0])

    tracemalloc.start()
    try:
        train_candidate(small_genome, tiny_data, cfg(epochs=5, iterations_per_epoch=2, patience=100), callback=on_event)
    finally:
        tracemalloc.stop()
    # python-side allocations after epoch 2 grow by no more than the small curve records
    assert sizes[-1] - sizes[1] < 200_000, sizes


def test_objective_f1_follows_the_method():
    # C = 2, last 5 epochs of train / val Dice losses, best epoch 60 of E = 120
    f1, raw = objective_f1([9, 9, 1, 1, 1, 1, 1], [9, 0.5, 0.5, 0.5, 0.5, 0.5], 60, 2)
    assert raw == pytest.approx(0.25 * 1 + 0.5 + 0.25 * 60 / 120)
    assert f1 == pytest.approx(raw / (2 + 0.25 * 2 + 0.25))
    assert objective_f1([0] * 5, [0] * 5, 120, 2)[0] == 0
    assert objective_f1([2] * 5, [2] * 5, 0, 2)[0] == pytest.approx(1.0)


def test_bad_config_is_a_one_line_config_error():
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="profile"):
        TrainerConfig(profile="fancy")
    with pytest.raises(ConfigError, match="epochs"):
        TrainerConfig(epochs=0)
    assert TrainerConfig.from_dict(TrainerConfig(patch_size=(16, 16, 16)).to_dict()) == TrainerConfig(patch_size=(16, 16, 16))


def test_paper_profile_trains_with_soft_dice_and_writes_a_folder(tiny_data, small_genome, tmp_path):
    r = train_candidate(small_genome, tiny_data, cfg(epochs=1, iterations_per_epoch=2, profile="paper"), out_dir=tmp_path)
    rec = r.curves[0]
    # the paper's loss is the soft Dice loss itself
    assert rec["train_loss"] == pytest.approx(rec["train_dice_loss"])
    doc = __import__("json").loads((tmp_path / "training.json").read_text())
    assert doc["config"]["profile"] == "paper" and doc["best_epoch"] == 1
    assert set(r.metrics["per_case"]) == {"c6", "c7"}


def test_early_stopping_after_patience_epochs_without_improvement(tiny_data, small_genome):
    from engine.train import Trainer

    class Scripted(Trainer):
        """Validation Dice scripted through the ``validate`` hook: best at epoch 2, then worse."""

        def validate(self, epoch):
            d = {1: 0.3, 2: 0.6}.get(epoch, 0.5 - 0.01 * epoch)
            return {"val_loss": 1.0, "val_dice": {"left": d, "right": d}}

    t = Scripted(small_genome, tiny_data, cfg(epochs=20, patience=3, iterations_per_epoch=1))
    r = t.fit()
    assert r.best_epoch == 2 and r.epochs == 5
    assert r.dice == {"left": 0.6, "right": 0.6}
    # f1 uses e_max = 2 of E = 120 and the last 5 epochs
    assert r.f1_raw == pytest.approx(0.25 * np.mean([c["train_dice_loss"] for c in r.curves]) + 1.0 + 0.25 * 118 / 120)


def test_the_mixed_precision_channels_last_step_runs_on_cpu(tiny_data, small_genome):
    """The lines the CUDA path takes (bf16 autocast, channels-last 3D in training and validation),
    exercised on the CPU, where PyTorch also autocasts to bfloat16."""
    import torch

    from engine.train.trainer import Trainer

    trainer = Trainer(small_genome, tiny_data, cfg(epochs=1))
    assert trainer.amp_dtype is None  # CPU default: fp32
    assert trainer.channels_last  # nf1 8 on the CPU: channels-last
    trainer.amp_dtype = torch.bfloat16
    trainer.model.train()
    x = torch.randn(trainer.batch_size, tiny_data.in_channels, *trainer.patch)
    y = torch.randint(0, tiny_data.num_classes, (trainer.batch_size, *trainer.patch))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    losses = [float(trainer.train_step(x, y)[0]) for _ in range(3)]
    assert all(math.isfinite(v) for v in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))  # it learned
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32
    val = trainer.validate(1)
    assert math.isfinite(val["val_loss"]) and all(0 <= d <= 1 for d in val["val_dice"].values())


def test_poly_schedule_decays_the_learning_rate_over_the_planned_steps(tiny_data, small_genome):
    """lr_schedule "poly": nnU-Net's lr * (1 - step / steps) ** 0.9 per step; "constant" keeps the gene's."""
    from engine.errors import ConfigError

    steps = 2
    poly = train_candidate(small_genome, tiny_data, cfg(epochs=3, iterations_per_epoch=steps, lr_schedule="poly"))
    total = 3 * steps
    # an epoch's record holds the rate of its last step (0-based index epoch * steps - 1)
    expected = [small_genome.lr * (1 - (e * steps - 1) / total) ** 0.9 for e in (1, 2, 3)]
    assert [r["lr"] for r in poly.curves] == pytest.approx(expected)
    const = train_candidate(small_genome, tiny_data, cfg(epochs=2, iterations_per_epoch=steps))
    assert [r["lr"] for r in const.curves] == pytest.approx([small_genome.lr] * 2)
    with pytest.raises(ConfigError, match="lr_schedule must be one of constant, poly, tail"):
        TrainerConfig(lr_schedule="cosine")


def test_tail_schedule_keeps_the_rate_then_decays_it_over_the_last_fifth(tiny_data, small_genome):
    """lr_schedule "tail", the default: the gene's rate for the first 80 % of the planned steps, then
    linearly down to rate / (steps in the tail) at the last step; the paper profile keeps its plateau rule."""
    from engine.train import Trainer

    b = small_genome.lr
    assert TrainerConfig().lr_schedule == "tail"
    trainer = Trainer(small_genome, tiny_data, cfg(epochs=5, iterations_per_epoch=4))  # 20 steps, tail from 16
    assert [trainer.scheduled_rate(k) for k in range(20)] == pytest.approx([b] * 17 + [b * 3 / 4, b / 2, b / 4])
    tail = train_candidate(small_genome, tiny_data, cfg(epochs=5, iterations_per_epoch=2))  # 10 steps, tail from 8
    assert [r["lr"] for r in tail.curves] == pytest.approx([b, b, b, b, b / 2])  # each epoch's last step
    assert Trainer(small_genome, tiny_data, cfg(profile="paper")).lr_schedule == "plateau"


def test_memory_layout_follows_the_width_rule_and_the_setting(tiny_data, small_genome):
    """On the CPU, channels-last-3D for networks of first-level width 8 (weights and the step's input
    in that layout), the default layout above it; ``channels_last`` true / false forces either."""
    import dataclasses

    import torch

    from engine.train.trainer import CPU_CHANNELS_LAST_MAX_NF1, Trainer, uses_channels_last

    wide = dataclasses.replace(small_genome, nf1=16)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert uses_channels_last(cpu, CPU_CHANNELS_LAST_MAX_NF1) and not uses_channels_last(cpu, 16)
    assert uses_channels_last(cuda, 32) and not uses_channels_last(cuda, 8, False)
    assert uses_channels_last(cpu, 32, True)

    def layout(trainer):
        conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv3d) and m.in_channels > 1 and m.kernel_size == (3, 3, 3))
        return conv.weight.is_contiguous(memory_format=torch.channels_last_3d) and not conv.weight.is_contiguous()

    narrow = Trainer(small_genome, tiny_data, cfg(epochs=1))
    assert narrow.channels_last and layout(narrow)
    assert not Trainer(wide, tiny_data, cfg(epochs=1)).channels_last
    forced_off = Trainer(small_genome, tiny_data, cfg(epochs=1, channels_last=False))
    assert not forced_off.channels_last and not layout(forced_off)
    assert Trainer(wide, tiny_data, cfg(epochs=1, channels_last=True)).channels_last
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="channels_last"):
        cfg(channels_last="yes")
    assert TrainerConfig.from_dict(cfg(channels_last=False).to_dict()).channels_last is False


def test_memory_layout_changes_the_speed_not_the_training(tiny_data, small_genome):
    """The same seed trains to the same curves in either layout, to float rounding; the channels-last
    weights load into a network in the default layout (as a training folder's are read for export and
    inference) and give the same logits."""
    import torch

    from engine.network import build_network
    from engine.train.trainer import Trainer

    losses = lambda r: [e["train_loss"] for e in r.curves]  # noqa: E731
    last = train_candidate(small_genome, tiny_data, cfg(epochs=2, iterations_per_epoch=3))
    plain = train_candidate(small_genome, tiny_data, cfg(epochs=2, iterations_per_epoch=3, channels_last=False))
    assert losses(last) == pytest.approx(losses(plain), rel=1e-3)
    assert last.dice == pytest.approx(plain.dice, abs=0.02)

    trainer = Trainer(small_genome, tiny_data, cfg(epochs=1, iterations_per_epoch=2))
    trainer.fit()
    assert trainer.channels_last
    model = build_network(small_genome, tiny_data.in_channels, tiny_data.num_classes, trainer.pool_sizes)
    model.load_state_dict(trainer.model.state_dict())
    assert all(p.is_contiguous() for p in model.parameters())
    x = torch.from_numpy(np.asarray(tiny_data.val[0].image, np.float32))[None, :, :16, :16, :16]
    with torch.no_grad():
        out = model.eval()(x)
        out_cl = trainer.model.eval()(x.contiguous(memory_format=torch.channels_last_3d))
    assert out.is_contiguous() and torch.isfinite(out).all()
    assert torch.allclose(out, out_cl.contiguous(), atol=1e-4)
