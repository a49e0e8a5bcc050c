"""Small in-memory training data: two labelled blobs in noise, 8 cases of 24 x 24 x 16 voxels."""

from __future__ import annotations

import types

import numpy as np
import pytest

from engine.genome import Genome
from engine.train import TrainingData

#: The smallest genome of the space's shape (nf1 8, 5 cells), as the tests use.
SMALL = Genome(0, 1, 2, "conv3d_3x3x3", "conv3d_3x3x3", "conv3d_1x1x1", "identity", 5, 8, 3e-3)


class TinyPlan:
    patch_size = (16, 16, 16)
    batch_size = 2

    def pool_sizes_for(self, n_levels):
        return [(2, 2, 2)] * n_levels

    def to_dict(self):
        return {"patch_size": list(self.patch_size), "batch_size": self.batch_size}


def synthetic_case(rng, i, shape=(24, 24, 16)):
    lab = np.zeros(shape, np.uint8)
    g = np.indices(shape)
    c = rng.integers(7, 13, 3)
    r = np.sqrt(((g - c[:, None, None, None]) ** 2).sum(0))
    lab[r < 5] = 1
    lab[(r < 5) & (g[0] > c[0])] = 2
    img = (lab.astype(np.float32) + rng.normal(0, 0.4, shape).astype(np.float32))[None]
    return types.SimpleNamespace(image=img, label=lab, spacing=(1.0, 1.0, 1.5), case_id=f"c{i}")


@pytest.fixture
def small_genome() -> Genome:
    return SMALL


@pytest.fixture(scope="session")
def tiny_data() -> TrainingData:
    rng = np.random.default_rng(0)
    cases = [synthetic_case(rng, i) for i in range(8)]
    return TrainingData(
        train=cases[:6], val=cases[6:], plan=TinyPlan(), labels={"background": 0, "left": 1, "right": 2},
        modalities=["MRI"], split={"train": [c.case_id for c in cases[:6]], "val": ["c6", "c7"]},
    )
