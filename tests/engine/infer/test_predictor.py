"""Sliding-window prediction on synthetic volumes, and largest-component post-processing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.infer.predictor import (
    Predictor,
    keep_largest_component,
    numpy_logits_fn,
    sliding_window_logits,
)


def pointwise(x: torch.Tensor) -> torch.Tensor:
    """Two-class logits that depend only on each voxel: the exact answer is known everywhere."""
    return torch.cat([-x[:, :1], x[:, :1] * 2], dim=1)


@pytest.mark.parametrize("shape", [(40, 52, 20), (12, 20, 9)])  # larger and smaller than the patch
@pytest.mark.parametrize("gaussian", [True, False])
def test_sliding_window_reproduces_a_pointwise_network(shape, gaussian):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, *shape)).astype(np.float32)
    out = sliding_window_logits(pointwise, image, (16, 16, 16), overlap=0.5, gaussian=gaussian)
    assert tuple(out.shape) == (2, *shape)
    np.testing.assert_allclose(out.numpy(), pointwise(torch.from_numpy(image)[None])[0].numpy(), atol=1e-5)


def test_mirroring_and_numpy_backend_give_the_same_labels():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 24, 24, 16)).astype(np.float32)
    calls = []

    def np_fn(x: np.ndarray) -> np.ndarray:
        assert isinstance(x, np.ndarray) and x.dtype == np.float32
        calls.append(x.shape)
        return np.concatenate([-x, 2 * x], axis=1)

    plain = Predictor(pointwise, (16, 16, 16), 2).predict_array(image)
    mirrored = Predictor(numpy_logits_fn(np_fn), (16, 16, 16), 2, mirror=True).predict_array(image)
    np.testing.assert_array_equal(plain, (image[0] > 0).astype(np.uint8))
    np.testing.assert_array_equal(mirrored, plain)
    assert calls and all(c[2:] == (16, 16, 16) for c in calls)


def test_sliding_window_uses_the_network_on_a_real_model():
    from engine.genome import Genome
    from engine.network import build_network
    from engine.infer.predictor import torch_logits_fn

    torch.manual_seed(0)
    net = build_network(Genome(0, 1, 2, "conv3d_3x3x3", "conv3d_1x1x1", "identity", "conv2d_3x3x1", 5, 8, 1e-3), 1, 3)
    image = np.random.default_rng(2).normal(size=(1, 30, 20, 18)).astype(np.float32)
    out = sliding_window_logits(torch_logits_fn(net), image, (16, 16, 16))
    assert tuple(out.shape) == (3, 30, 20, 18)
    assert torch.isfinite(out).all()
    # a window equal to the whole (padded) volume gives the network's own output
    whole = sliding_window_logits(torch_logits_fn(net), image[:, :16, :16, :16], (16, 16, 16))
    with torch.no_grad():
        direct = net(torch.from_numpy(image[None, :, :16, :16, :16]))[0]
    np.testing.assert_allclose(whole.numpy(), direct.numpy(), atol=1e-4)


def test_keep_largest_component_per_class():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[1:6, 1:6, 1:6] = 1  # large
    lab[15:17, 15:17, 15:17] = 1  # small, removed
    lab[8:10, 1:3, 1:3] = 2  # class 2 kept (one component)
    lab[12, 12, 12] = 3  # not in classes: untouched
    lab[14, 14, 14] = 3
    out = keep_largest_component(lab, [1, 2])
    assert (out == 1).sum() == 125
    assert (out == 2).sum() == 8
    assert (out == 3).sum() == 2
    assert out[16, 16, 16] == 0
