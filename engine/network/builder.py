"""Build the U-shaped EMONAS-Net network of a genome (METHOD.md sections 1-2).

Macro structure: stem (op1 without its ReLU) -> cell at level 0 -> n_c times (max-pool, cell with
twice the filters) -> n_c times (stride-2 transposed conv to the level's width, added to the
encoder output of that level, cell) -> 1x1x1 head. Every cell is the same searched 4-node cell
whose output is the sum of its four nodes.

``architecture()`` describes the layers as plain data; ``build_network`` builds modules from it and
``engine.network.cost`` counts from it, so the analytic count and the module cannot drift apart.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from engine.genome import Genome
from engine.network.arch import (  # noqa: F401 - the layer plan lives in arch; re-exported here
    Architecture,
    CellSpec,
    PoolSize,
    architecture,
    check_patch,
    default_pool_sizes,
    divisor,
)
from engine.network.ops import make_op

class Cell(nn.Module):
    """4-node DAG: node 1 reads the cell input, node i reads the tensor chosen by its gene."""

    def __init__(self, arch: Architecture, spec: CellSpec):
        super().__init__()
        g = arch.genome
        self.inputs = g.inputs
        self.nodes = nn.ModuleList(
            make_op(op, c_in, spec.width) for op, c_in in zip(g.ops, arch.node_inputs(spec))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tensors = [x]
        for node, src in zip(self.nodes, self.inputs):
            tensors.append(node(tensors[src]))
        return tensors[1] + tensors[2] + tensors[3] + tensors[4]


class EmonasNet(nn.Module):
    """The network of one genome; input (N, C, X, Y, Z), output logits (N, K, X, Y, Z)."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        g, w = arch.genome, arch.widths
        if arch.stem_projection:
            self.stem = nn.Conv3d(arch.in_channels, g.nf1, kernel_size=1, bias=True)
        else:
            self.stem = make_op(g.op1, arch.in_channels, g.nf1, preact=False)
        self.encoder = nn.ModuleList(Cell(arch, spec) for spec in arch.encoder_cells())
        self.pools = nn.ModuleList(nn.MaxPool3d(kernel_size=p, stride=p) for p in arch.pool_sizes)
        self.ups = nn.ModuleList(
            nn.ConvTranspose3d(w[l + 1], w[l], kernel_size=arch.pool_sizes[l], stride=arch.pool_sizes[l])
            for l in range(len(w) - 2, -1, -1)
        )
        self.decoder = nn.ModuleList(Cell(arch, spec) for spec in arch.decoder_cells())
        self.head = nn.Conv3d(g.nf1, arch.num_classes, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder[0](self.stem(x))
        skips = [x]
        for pool, cell in zip(self.pools, self.encoder[1:]):
            x = cell(pool(x))
            skips.append(x)
        for up, cell, skip in zip(self.ups, self.decoder, reversed(skips[:-1])):
            x = cell(up(x) + skip)
        return self.head(x)


def build_network(
    genome: Genome,
    in_channels: int,
    num_classes: int,
    pool_sizes: Sequence[Sequence[int]] | None = None,
) -> EmonasNet:
    """Build ``genome``'s network: a pure function of its arguments (weights from torch's RNG).

    ``num_classes`` counts the background (a binary task has 2). ``pool_sizes`` lists one
    (x, y, z) pooling factor per level, 1 to skip an axis the plan marks as too thin; the default
    is the paper's 2x2x2 everywhere.
    """
    return EmonasNet(architecture(genome, in_channels, num_classes, pool_sizes))
