"""Build the U-shaped EMONAS-Net network of a genome (METHOD.md sections 1-2).

Macro structure: stem (op1 without its ReLU) -> cell at level 0 -> n_c times (max-pool, cell with
twice the filters) -> n_c times (stride-2 transposed conv to the level's width, added to the
encoder output of that level, cell) -> 1x1x1 head. Every cell is the same searched 4-node cell
whose output is the sum of its four nodes.

``architecture()`` describes the layers as plain data; ``build_network`` builds modules from it and
``engine.network.cost`` counts from it, so the analytic count and the module cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from engine.errors import ConfigError
from engine.genome import Genome
from engine.network.ops import make_op

PoolSize = tuple[int, int, int]


@dataclass(frozen=True)
class CellSpec:
    """One cell: the width of its input and of its output (and of every node)."""

    c_in: int
    width: int
    level: int


@dataclass(frozen=True)
class Architecture:
    """The layer plan of a genome's network, as plain numbers."""

    genome: Genome
    in_channels: int
    num_classes: int
    pool_sizes: tuple[PoolSize, ...]
    stem_projection: bool  # identity stem whose input channels do not divide nf1 -> 1x1x1 conv

    @property
    def widths(self) -> list[int]:
        return [self.genome.nf1 * 2**level for level in range(self.genome.n_levels + 1)]

    def encoder_cells(self) -> list[CellSpec]:
        w = self.widths
        return [CellSpec(w[0], w[0], 0)] + [CellSpec(w[l - 1], w[l], l) for l in range(1, len(w))]

    def decoder_cells(self) -> list[CellSpec]:
        w = self.widths
        return [CellSpec(w[l], w[l], l) for l in range(len(w) - 2, -1, -1)]

    def node_inputs(self, cell: CellSpec) -> list[int]:
        """Input width of each of the four nodes of ``cell``."""
        return [cell.c_in if src == 0 else cell.width for src in self.genome.inputs]


def default_pool_sizes(n_levels: int) -> tuple[PoolSize, ...]:
    return tuple((2, 2, 2) for _ in range(n_levels))


def architecture(
    genome: Genome, in_channels: int, num_classes: int, pool_sizes: Sequence[Sequence[int]] | None = None
) -> Architecture:
    """Validate the arguments and return the layer plan of ``genome``'s network."""
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(f"in_channels must be a positive integer, got {in_channels!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes counts the background too and must be at least 2, got {num_classes!r}")
    if pool_sizes is None:
        pools = default_pool_sizes(genome.n_levels)
    else:
        pools = tuple(tuple(int(s) for s in p) for p in pool_sizes)
        if len(pools) != genome.n_levels or any(len(p) != 3 or any(s not in (1, 2) for s in p) for p in pools):
            raise ConfigError(
                f"pool_sizes must list {genome.n_levels} triples of 1 or 2 (one per level), got {pool_sizes!r}"
            )
    stem_projection = genome.op1 == "identity" and genome.nf1 % in_channels != 0
    return Architecture(genome, in_channels, num_classes, pools, stem_projection)


def divisor(pool_sizes: Sequence[Sequence[int]], axis: int) -> int:
    """The factor a patch must be divisible by on ``axis``."""
    d = 1
    for p in pool_sizes:
        d *= int(p[axis])
    return d


def check_patch(arch: Architecture, patch: Sequence[int]) -> tuple[int, int, int]:
    """Raise ``ConfigError`` unless ``patch`` is divisible by the network's pooling on every axis."""
    patch = tuple(int(p) for p in patch)
    if len(patch) != 3 or any(p < 1 for p in patch):
        raise ConfigError(f"patch size must be three positive integers, got {patch!r}")
    for axis, p in enumerate(patch):
        d = divisor(arch.pool_sizes, axis)
        if p % d:
            raise ConfigError(
                f"patch size {patch} is not divisible by {d} on axis {'xyz'[axis]} "
                f"(a network with {arch.genome.n_cells} cells pools {arch.genome.n_levels} times)"
            )
    return patch  # type: ignore[return-value]


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
