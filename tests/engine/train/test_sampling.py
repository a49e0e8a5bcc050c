"""Patch sampling, foreground oversampling and augmentation of image and label together."""

from __future__ import annotations

import types

import numpy as np
import torch

from engine.train.augmentation import DEFAULT, PAPER, SpatialParams, apply_spatial, draw_spatial
from engine.train.sampling import BatchLoader, PatchSampler, crop_padded


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
