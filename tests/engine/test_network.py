"""Network builder and analytic costs: shapes, exact parameter counts, the paper's sizes."""

import itertools

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.genome import GENE_NAMES, OPS, PAPER_GENOMES, Genome, SearchSpace
from engine.network import build_network, count_parameters, estimate_cost, extreme_genomes
from engine.network.ops import make_op, op_parameters


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def small(**kw) -> Genome:
    base = dict(in2=1, in3=0, in4=2, op1="conv3d_3x3x3", op2="p3d_3x3x3", op3="conv2d_3x3x1",
                op4="identity", n_cells=5, nf1=8, lr=1e-3)
    base.update(kw)
    return Genome(**base)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("c_in, c_out", [(4, 4), (4, 8)])
def test_every_op_alone_shape_and_parameters(op, c_in, c_out):
    m = make_op(op, c_in, c_out)
    x = torch.randn(2, c_in, 6, 10, 7)  # odd and anisotropic: "same" padding keeps the shape
    y = m(x)
    assert y.shape == (2, c_out, 6, 10, 7)
    assert n_params(m) == op_parameters(op, c_in, c_out)
    if op == "identity" and c_out == 2 * c_in:
        assert torch.equal(y[:, :c_in], x) and torch.equal(y[:, c_in:], x)  # channel tiling


def test_pseudo3d_is_kxkx1_then_1x1xk_without_norm_between():
    m = make_op("p3d_5x5x5", 3, 6)
    convs = [l for l in m if isinstance(l, torch.nn.Conv3d)]
    assert [c.kernel_size for c in convs] == [(5, 5, 1), (1, 1, 5)]
    kinds = [type(l).__name__ for l in m]
    assert kinds == ["ReLU", "Conv3d", "Conv3d", "InstanceNorm3d"]
    assert [type(l).__name__ for l in make_op("conv2d_7x7x1", 3, 6, preact=False)] == ["Conv3d", "InstanceNorm3d"]


@pytest.mark.parametrize("in2, in3, in4", list(itertools.product(range(2), range(3), range(4))))
def test_every_cell_wiring_builds_and_runs(in2, in3, in4):
    g = small(in2=in2, in3=in3, in4=in4, op4="conv3d_1x1x1")
    net = build_network(g, 1, 3)
    y = net(torch.randn(1, 1, 16, 16, 8 * 2))
    assert y.shape == (1, 3, 16, 16, 16)
    assert n_params(net) == count_parameters(g, 1, 3)


def test_cell_output_is_the_sum_of_its_four_nodes():
    g = small(in2=0, in3=1, in4=3)
    net = build_network(g, 1, 2)
    cell = net.encoder[1]
    x = torch.randn(1, 8, 8, 8, 8)
    n1 = cell.nodes[0](x)
    n2 = cell.nodes[1](x)
    n3 = cell.nodes[2](n1)
    n4 = cell.nodes[3](n3)
    assert torch.allclose(cell(x), n1 + n2 + n3 + n4)


@pytest.mark.parametrize("n_cells, nf1", list(itertools.product((5, 7, 9), (8, 16, 32))))
def test_all_cell_counts_and_widths(n_cells, nf1):
    g = small(n_cells=n_cells, nf1=nf1, op1="conv2d_3x3x1", op2="conv3d_1x1x1", op3="identity")
    net = build_network(g, 2, 4)
    assert len(net.encoder) + len(net.decoder) == n_cells
    assert n_params(net) == count_parameters(g, 2, 4)
    if nf1 == 8:  # forward only for the cheap ones
        side = 2 ** g.n_levels
        assert net(torch.randn(1, 2, side, 2 * side, side)).shape == (1, 4, side, 2 * side, side)


@pytest.mark.parametrize("in_channels", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("op1", ["identity", "p3d_3x3x3"])
def test_multichannel_input_and_identity_stem(in_channels, op1):
    g = small(op1=op1)
    net = build_network(g, in_channels, 2)
    assert net(torch.randn(1, in_channels, 8, 12, 4)).shape == (1, 2, 8, 12, 4)
    assert n_params(net) == count_parameters(g, in_channels, 2)
    # identity stem: tiles when in_channels divides nf1 (no parameters), 1x1x1 projection otherwise
    assert net.arch.stem_projection == (op1 == "identity" and 8 % in_channels != 0)


def test_anisotropic_pooling_skips_thin_axes():
    g = small(n_cells=7)
    pools = [(2, 2, 1), (2, 2, 2), (2, 2, 1)]
    net = build_network(g, 1, 2, pool_sizes=pools)
    y = net(torch.randn(1, 1, 24, 16, 6))  # z only pools once: 6 is divisible by 2
    assert y.shape == (1, 2, 24, 16, 6)
    assert n_params(net) == count_parameters(g, 1, 2, pools)
    with pytest.raises(ConfigError, match="pool_sizes"):
        build_network(g, 1, 2, pool_sizes=[(2, 2, 2)])


def test_analytic_count_equals_module_count_on_random_genomes():
    rng = np.random.default_rng(1234)
    space = SearchSpace()
    for _ in range(60):
        g = space.sample(rng)
        c = int(rng.integers(1, 5))
        k = int(rng.integers(2, 6))
        with torch.device("meta"):  # no memory for the big ones
            net = build_network(g, c, k)
        assert n_params(net) == count_parameters(g, c, k), g


def test_paper_genomes_have_the_published_sizes():
    # the talk's "Best Hyperparameter Values" table: 5.9 M (prostate), 7.0 M (hippocampus), 7.1 M (cardiac)
    assert count_parameters(PAPER_GENOMES["prostate"], 1, 2) == pytest.approx(5.9e6, rel=0.02)
    assert count_parameters(PAPER_GENOMES["hippocampus"], 1, 3) == pytest.approx(7.0e6, rel=0.02)
    assert count_parameters(PAPER_GENOMES["cardiac"], 1, 4) == pytest.approx(7.1e6, rel=0.03)
    # the plain reference build (InstanceNorm without affine weights) counts exactly this
    assert count_parameters(PAPER_GENOMES["hippocampus"], 1, 3) == 7_050_563


def test_patch_divisibility_is_checked_with_a_clear_error():
    g = small(n_cells=9)
    with pytest.raises(ConfigError, match="not divisible by 16 on axis y"):
        estimate_cost(g, 1, 2, (32, 40, 32))
    with pytest.raises(ConfigError, match="three positive"):
        estimate_cost(g, 1, 2, (32, 32))


def test_cost_estimates_scale_and_match_reference_flops():
    hip = PAPER_GENOMES["hippocampus"]
    c = estimate_cost(hip, 1, 3, (40, 56, 40), batch=2)
    # ENVIRONMENT.md: one Adam step of this network on 2 patches of 40x56x40 is ~291 GFLOP
    assert c.train_step_flops == pytest.approx(291e9, rel=0.02)
    c2 = estimate_cost(hip, 1, 3, (40, 56, 40), batch=4)
    assert c2.forward_flops == 2 * c.forward_flops and c2.activation_bytes == 2 * c.activation_bytes
    small_cost = estimate_cost(small(), 1, 3, (32, 32, 32))
    assert small_cost.training_bytes < c.training_bytes


def test_activation_estimate_is_the_right_order_of_magnitude():
    """The estimate must be within a factor of ~2.5 of what autograd really keeps."""
    g = small(n_cells=5, nf1=8)
    net = build_network(g, 1, 3)
    x = torch.randn(2, 1, 32, 32, 32)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x).sum()
    measured = sum(saved)
    est = estimate_cost(g, 1, 3, (32, 32, 32), batch=2).activation_bytes
    assert measured / 2.5 < est < measured * 2.5


def test_extreme_genomes_bound_the_space():
    s = SearchSpace(nf1=(8, 16), n_cells=(5, 7))
    lo, hi = extreme_genomes(s)
    p_lo, p_hi = count_parameters(lo, 1, 2), count_parameters(hi, 1, 2)
    rng = np.random.default_rng(0)
    for _ in range(300):
        p = count_parameters(s.sample(rng), 1, 2)
        assert p_lo <= p <= p_hi
    assert (lo.nf1, lo.n_cells, hi.nf1, hi.n_cells) == (8, 5, 16, 7)
