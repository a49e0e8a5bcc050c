"""Patch sampling, foreground oversampling, augmentation of image and label together, and the batch
loader thread (the same batches as without it; it always ends)."""

from __future__ import annotations

import os
import threading
import types

import numpy as np
import pytest
import torch

from engine.train.augmentation import DEFAULT, PAPER, SpatialParams, apply_spatial, draw_spatial
from engine.train import TrainerConfig, TrainingFailed, train_candidate
from engine.train.sampling import BatchLoader, PatchSampler, crop_padded
from engine.train.trainer import Trainer


def blob_case(shape=(40, 48, 30), spacing=(1.0, 1.0, 1.0)):
    lab = np.zeros(shape, np.uint8)
    lab[30:34, 5:9, 20:24] = 1  # a small structure far from the centre
    lab[5:8, 40:44, 3:6] = 2
    image = lab.astype(np.float32)[None]
    return types.SimpleNamespace(image=image, label=lab, spacing=spacing)


def test_crop_padded_pads_outside_the_volume():
    a = np.arange(27, dtype=np.float32).reshape(1, 3, 3, 3)
    out = crop_padded(a, (-1, 1, 2), (3, 3, 3))
    assert out.shape == (1, 3, 3, 3)
    assert np.all(out[0, 0] == 0)
    np.testing.assert_array_equal(out[0, 1:, :2, :1], a[0, :2, 1:, 2:])


def test_identity_map_reproduces_the_crop():
    rng = np.random.default_rng(0)
    src = torch.from_numpy(rng.normal(size=(1, 21, 21, 21)).astype(np.float32))
    lab = torch.from_numpy(rng.integers(0, 3, (21, 21, 21)).astype(np.uint8))
    p = SpatialParams(np.eye(3), np.zeros(3), (False, False, False))
    img, out = apply_spatial(src, lab, p, (16, 16, 16))
    torch.testing.assert_close(img, src[:, 2:18, 2:18, 2:18])
    assert torch.equal(out, lab[2:18, 2:18, 2:18])


def test_image_and_label_stay_aligned_under_rotation_and_scaling():
    case = blob_case()
    case.label[:] = 0
    case.label[10:30, 12:36, 8:22] = 1
    case.image = case.label.astype(np.float32)[None] * 5
    sampler = PatchSampler([case], (24, 24, 16), 6, 2, PAPER, np.random.default_rng(3))
    batch = sampler.sample()
    assert batch.spatial, "the paper profile always transforms"
    images, labels = batch.to_device(torch.device("cpu"), (24, 24, 16))
    agree = ((images[:, 0] > 2.5).long() == labels).float().mean()
    assert agree > 0.97
    assert labels.sum() > 0 and (labels == 0).sum() > 0


def test_foreground_oversampling_centres_the_last_samples_on_foreground():
    case = blob_case()
    sampler = PatchSampler([case], (8, 8, 8), 3, 3, DEFAULT, np.random.default_rng(0))
    assert sampler.n_random == 2
    hits = 0
    for _ in range(30):
        b = sampler.sample()
        if 2 in b.spatial:
            lab = b.spatial[2][1]
        else:
            lab = b.labels[2]
        hits += int(lab.any())
    assert hits == 30
    # random patches mostly miss the small structures
    misses = sum(int(not sampler.sample().labels[0].any()) for _ in range(30))
    assert misses > 10


def test_same_seed_same_batches_with_and_without_the_loader_thread():
    case = blob_case()

    def batches(prefetch):
        s = PatchSampler([case], (16, 16, 16), 2, 3, DEFAULT, np.random.default_rng(7))
        with BatchLoader(s, prefetch=prefetch) as loader:
            return [loader.next().to_device(torch.device("cpu"), (16, 16, 16), torch.Generator().manual_seed(1)) for _ in range(5)]

    for (i1, l1), (i2, l2) in zip(batches(0), batches(2)):
        assert torch.equal(i1, i2) and torch.equal(l1, l2)


def test_rotations_stay_in_plane_on_anisotropic_spacing():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = draw_spatial(DEFAULT.__class__(**{**DEFAULT.__dict__, "p_rotate": 1.0}), rng, (1.0, 1.0, 5.0), (16, 16, 8))
        np.testing.assert_allclose(p.matrix[2, :2], 0, atol=1e-12)
        np.testing.assert_allclose(p.matrix[:2, 2], 0, atol=1e-12)



def loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == BatchLoader.THREAD_NAME and t.is_alive()]


def cfg(**kw):
    # "strong": rotation, scaling and intensity changes, so every random stream of the batches is used
    base = dict(epochs=2, iterations_per_epoch=4, seed=3, device="cpu", num_threads=1, val_every=1,
                augmentation="strong")
    base.update(kw)
    return TrainerConfig(**base)


def test_prefetching_trains_exactly_as_the_training_thread_alone(tiny_data, small_genome):
    runs = []
    for prefetch in (0, 2):
        trainer = Trainer(small_genome, tiny_data, cfg())
        trainer.prefetch = prefetch
        result = trainer.fit()
        curves = [{k: v for k, v in r.items() if "seconds" not in k} for r in result.curves]
        runs.append((curves, {k: v.clone() for k, v in trainer.model.state_dict().items()}))
    (c0, w0), (c2, w2) = runs
    assert c0 == c2
    assert all(torch.equal(w0[k], w2[k]) for k in w0)
    assert not loader_threads()


def test_same_batches_with_and_without_prefetch_over_many_batches():
    case = blob_case()

    def batches(prefetch):
        s = PatchSampler([case], (16, 16, 16), 3, 3, DEFAULT, np.random.default_rng(11))
        with BatchLoader(s, prefetch=prefetch) as loader:
            return [loader.next() for _ in range(12)]

    a, b = batches(0), batches(3)
    assert any(x.spatial for x in a) and any(x.intensity is not None for x in a)  # the strong profile's draws
    for x, y in zip(a, b):
        assert x.spatial.keys() == y.spatial.keys()
        plain = [i for i in range(len(x.images)) if i not in x.spatial]  # the others are resampled later
        np.testing.assert_array_equal(x.images[plain], y.images[plain])
        np.testing.assert_array_equal(x.labels[plain], y.labels[plain])
        for i in x.spatial:
            np.testing.assert_array_equal(x.spatial[i][0], y.spatial[i][0])
            np.testing.assert_array_equal(x.spatial[i][2].matrix, y.spatial[i][2].matrix)
        assert (x.intensity is None) == (y.intensity is None)
        if x.intensity is not None:
            np.testing.assert_array_equal(x.intensity.gamma, y.intensity.gamma)
    assert not loader_threads()


class FailingSampler:
    """Gives ``n`` batches of the real sampler, then raises."""

    def __init__(self, n):
        self.inner = PatchSampler([blob_case()], (8, 8, 8), 2, 3, DEFAULT, np.random.default_rng(0))
        self.n = n

    def sample(self):
        if self.n == 0:
            raise OSError("the cached case could not be read")
        self.n -= 1
        return self.inner.sample()


def test_an_error_in_the_loader_thread_reaches_the_training_thread_after_the_good_batches():
    with BatchLoader(FailingSampler(3), prefetch=2) as loader:
        got = [loader.next() for _ in range(3)]
        with pytest.raises(OSError, match="could not be read"):
            loader.next()
    assert len(got) == 3
    assert not loader_threads()


def test_closing_a_loader_with_a_full_queue_ends_its_thread():
    s = PatchSampler([blob_case()], (8, 8, 8), 2, 3, DEFAULT, np.random.default_rng(0))
    loader = BatchLoader(s, prefetch=1)
    loader.next()
    while loader._queue.qsize() < 1:  # the thread now waits to put its next batch
        threading.Event().wait(0.01)
    loader.close()
    loader.close()  # idempotent
    assert not loader_threads()
    with pytest.raises(RuntimeError, match="closed"):
        loader.next()


def test_no_loader_thread_is_left_when_training_fails_or_is_stopped(tiny_data, small_genome):
    bad = [type(c)(**{**vars(c), "image": np.full_like(c.image, np.nan)}) for c in tiny_data.train]
    data = type(tiny_data)(**{**vars(tiny_data), "train": bad})
    with pytest.raises(TrainingFailed):
        train_candidate(small_genome, data, cfg(epochs=1))
    assert not loader_threads()

    def broken_display(event):
        if event["event"] == "step":
            raise RuntimeError("display gone")

    with pytest.raises(RuntimeError, match="display gone"):
        train_candidate(small_genome, tiny_data, cfg(), callback=broken_display)
    assert not loader_threads()

    stop = threading.Event()
    stop.set()
    r = train_candidate(small_genome, tiny_data, cfg(), cancel=stop)
    assert r.status == "cancelled" and not loader_threads()


def test_the_loader_thread_runs_on_cpu_when_torch_leaves_a_core_free(tiny_data, small_genome):
    trainer = Trainer(small_genome, tiny_data, cfg())
    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(cores)  # every core in the training's team: the thread would stall it
        assert trainer.prefetch_depth() == 0
        if cores > 1:
            torch.set_num_threads(cores - 1)
            assert trainer.prefetch_depth() == 2
    finally:
        torch.set_num_threads(before)
    trainer.prefetch = 3  # set explicitly, it wins
    assert trainer.prefetch_depth() == 3
