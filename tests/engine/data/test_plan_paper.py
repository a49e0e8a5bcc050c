"""The paper profile's plan: 2x2x2 pooling at every level on a patch that divides by 2^4, batch 2."""

import pytest
import torch

from data_helpers import make_msd
from engine.data import Plan, make_plan, open_dataset
from engine.errors import ConfigError
from engine.genome import PAPER_GENOMES
from engine.network import build_network, count_parameters


@pytest.fixture(scope="module")
def hippo(tmp_path_factory):
    """A Task04_Hippocampus-like dataset: ~35x50x35 voxels at 1 mm, background + 2 labels."""
    return open_dataset(make_msd(tmp_path_factory.mktemp("d") / "Task04", n=4, shape=(35, 50, 35)))


def test_paper_pooling_pools_2x2x2_four_times_on_a_hippocampus_patch(hippo):
    plan = make_plan(hippo, overrides={"pooling": "paper"})
    assert plan.pooling == "paper" and plan.batch_size == 2
    assert plan.patch_size == (32, 48, 32)  # the median case 35 x 50 x 35 to the nearest multiple of 16
    genome = PAPER_GENOMES["hippocampus"].replace(n_cells=9)
    pools = plan.pool_sizes_for(genome.n_levels)
    assert pools == [(2, 2, 2)] * 4
    net = build_network(genome, 1, 3, pools)
    built = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert count_parameters(genome, 1, 3, pools) == built
    # the network runs on the patch and gives back its shape
    with torch.no_grad():
        assert net(torch.zeros(1, 1, *plan.patch_size)).shape == (1, 3, *plan.patch_size)
    # the default plan pools the fourth level 1x1x1 on this patch: another network
    default = make_plan(hippo)
    assert default.pool_sizes_for(4)[3] == (1, 1, 1)
    assert count_parameters(genome, 1, 3, default.pool_sizes_for(4)) != built


def test_paper_pooling_keeps_explicit_keys_and_checks_the_patch(hippo):
    plan = make_plan(hippo, overrides={"pooling": "paper", "batch_size": 3, "patch_size": [48, 48, 32]})
    assert (plan.batch_size, plan.patch_size) == (3, (48, 48, 32))
    with pytest.raises(ConfigError, match="not divisible by 16"):
        make_plan(hippo, overrides={"pooling": "paper", "patch_size": [35, 50, 35]})
    with pytest.raises(ConfigError, match="pooling must be one of adaptive, paper"):
        make_plan(hippo, overrides={"pooling": "2x2x2"})


def test_plans_saved_without_pooling_still_load(hippo):
    d = make_plan(hippo).to_dict()
    d.pop("pooling")
    assert Plan.from_dict(d).pooling == "adaptive"
    paper = make_plan(hippo, overrides={"pooling": "paper"})
    assert Plan.from_dict(paper.to_dict()) == paper
