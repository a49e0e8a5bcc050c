"""The network of a genome as plain numbers, without PyTorch: its layer plan, the patch sizes it
accepts and the analytic size of each operation (METHOD.md sections 1-2).

``engine.network.builder`` builds modules from this plan and ``engine.network.cost`` counts from it,
so the analytic count and the module cannot drift apart; the app imports this (through
``engine.network.cost``) to estimate a search's cost without loading PyTorch.
Kernel sizes are in (x, y, z) order on tensors laid out (N, C, X, Y, Z); z is the slice axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from engine.errors import ConfigError
from engine.genome import OPS, Genome

#: Convolution kernels of each op, applied in sequence; identity has none.
OP_KERNELS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "conv3d_1x1x1": ((1, 1, 1),),
    "conv3d_3x3x3": ((3, 3, 3),),
    "conv3d_5x5x5": ((5, 5, 5),),
    "conv2d_3x3x1": ((3, 3, 1),),
    "conv2d_5x5x1": ((5, 5, 1),),
    "conv2d_7x7x1": ((7, 7, 1),),
    "p3d_3x3x3": ((3, 3, 1), (1, 1, 3)),
    "p3d_5x5x5": ((5, 5, 1), (1, 1, 5)),
    "p3d_7x7x7": ((7, 7, 1), (1, 1, 7)),
    "identity": (),
}
assert tuple(OP_KERNELS) == OPS

#: InstanceNorm without affine weights, as in the reference parameter counts of the paper's networks.
NORM_AFFINE = False


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


def op_parameters(name: str, c_in: int, c_out: int) -> int:
    """Exact trainable parameter count of ``make_op(name, c_in, c_out)``."""
    total, c = 0, c_in
    for k in OP_KERNELS[name]:
        total += c * c_out * k[0] * k[1] * k[2] + c_out
        c = c_out
    if OP_KERNELS[name] and NORM_AFFINE:
        total += 2 * c_out
    return total


def op_flops(name: str, c_in: int, c_out: int, voxels: int) -> int:
    """Forward floating-point operations (2 per multiply-add) of the op's convolutions."""
    total, c = 0, c_in
    for k in OP_KERNELS[name]:
        total += 2 * c * c_out * k[0] * k[1] * k[2] * voxels
        c = c_out
    return total


def op_activation_elements(name: str, c_in: int, c_out: int, voxels: int, preact: bool = True) -> int:
    """Elements the op keeps for the backward pass (ReLU output, each conv output, norm output)."""
    kernels = OP_KERNELS[name]
    if not kernels:
        return c_out * voxels if c_out != c_in else 0
    return ((c_in * voxels) if preact else 0) + len(kernels) * c_out * voxels + c_out * voxels
