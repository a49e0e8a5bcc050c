"""Costs of a genome's network computed from the genome alone, without building or running it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

from engine.genome import Genome, SearchSpace
from engine.network.arch import (
    Architecture,
    architecture,
    check_patch,
    op_activation_elements,
    op_flops,
    op_parameters,
)


def _arch_parameters(arch: Architecture) -> int:
    g = arch.genome
    total = (arch.in_channels * g.nf1 + g.nf1) if arch.stem_projection else op_parameters(g.op1, arch.in_channels, g.nf1)
    for cell in arch.encoder_cells() + arch.decoder_cells():
        total += sum(op_parameters(op, c_in, cell.width) for op, c_in in zip(g.ops, arch.node_inputs(cell)))
    w = arch.widths
    for l in range(len(w) - 1):
        p = arch.pool_sizes[l]
        total += w[l + 1] * w[l] * p[0] * p[1] * p[2] + w[l]
    total += g.nf1 * arch.num_classes + arch.num_classes
    return total


@lru_cache(maxsize=65536)
def _count(genome: Genome, in_channels: int, num_classes: int, pools) -> int:
    return _arch_parameters(architecture(genome, in_channels, num_classes, pools))


def count_parameters(
    genome: Genome, in_channels: int, num_classes: int, pool_sizes: Sequence[Sequence[int]] | None = None
) -> int:
    """Exact number of trainable parameters of ``build_network(genome, in_channels, num_classes)``."""
    pools = None if pool_sizes is None else tuple(tuple(int(s) for s in p) for p in pool_sizes)
    return _count(genome, in_channels, num_classes, pools)


@dataclass(frozen=True)
class Cost:
    """Size and compute of one network for a patch and batch size."""

    parameters: int
    forward_flops: int  # per batch
    activation_bytes: int  # kept for backward, per batch
    training_bytes: int  # rough peak of one training step: activations, weights, grads, Adam state

    @property
    def train_step_flops(self) -> int:
        """Forward + backward, the usual 3x forward."""
        return 3 * self.forward_flops

    def to_dict(self) -> dict:
        return {
            "parameters": self.parameters,
            "forward_flops": self.forward_flops,
            "train_step_flops": self.train_step_flops,
            "activation_bytes": self.activation_bytes,
            "training_bytes": self.training_bytes,
        }


def estimate_cost(
    genome: Genome,
    in_channels: int,
    num_classes: int,
    patch: Sequence[int],
    batch: int = 2,
    pool_sizes: Sequence[Sequence[int]] | None = None,
    bytes_per_element: int = 4,
) -> Cost:
    """Parameters, forward FLOPs and activation memory for ``batch`` patches of size ``patch``.

    Raises ``ConfigError`` when the patch is not divisible by the network's pooling.
    """
    arch = architecture(genome, in_channels, num_classes, pool_sizes)
    patch = check_patch(arch, patch)
    g = arch.genome
    vox = [patch[0] * patch[1] * patch[2]]
    shape = list(patch)
    for p in arch.pool_sizes:
        shape = [s // f for s, f in zip(shape, p)]
        vox.append(shape[0] * shape[1] * shape[2])

    flops = 0
    elems = in_channels * vox[0]
    if arch.stem_projection:
        flops += 2 * in_channels * g.nf1 * vox[0]
        elems += g.nf1 * vox[0]
    else:
        flops += op_flops(g.op1, in_channels, g.nf1, vox[0])
        elems += op_activation_elements(g.op1, in_channels, g.nf1, vox[0], preact=False)

    def cell_cost(cell) -> tuple[int, int]:
        v = vox[cell.level]
        f = sum(op_flops(op, c, cell.width, v) for op, c in zip(g.ops, arch.node_inputs(cell)))
        e = sum(op_activation_elements(op, c, cell.width, v) for op, c in zip(g.ops, arch.node_inputs(cell)))
        return f, e + cell.width * v  # + the summed output

    for cell in arch.encoder_cells():
        f, e = cell_cost(cell)
        flops += f
        elems += e + (cell.c_in * vox[cell.level] if cell.level else 0)  # pooled input
    w = arch.widths
    for cell in arch.decoder_cells():
        l = cell.level
        p = arch.pool_sizes[l]
        flops += 2 * w[l + 1] * w[l] * p[0] * p[1] * p[2] * vox[l + 1]
        elems += 2 * w[l] * vox[l]  # transposed conv output and the sum with the skip
        f, e = cell_cost(cell)
        flops += f
        elems += e
    flops += 2 * g.nf1 * num_classes * vox[0]
    elems += num_classes * vox[0] * 3  # logits, softmax, loss terms

    params = _arch_parameters(arch)
    act = elems * batch * bytes_per_element
    # weights + grads + two Adam moments, plus the activations and their gradients at the peak
    training = 4 * params * 4 + int(act * 1.5)
    return Cost(params, flops * batch, act, training)


def extreme_genomes(space: SearchSpace) -> tuple[Genome, Genome]:
    """The smallest and the largest network of ``space`` by parameter count.

    Exact without enumerating the whole space: for a fixed (n_cells, nf1, wiring) the count is
    a constant plus one term per node that depends only on that node's op, so each node's op
    is chosen on its own.
    """
    lr = space.lr[0]
    found: dict[str, tuple[int, Genome]] = {}
    for n_cells, nf1, in2, in3, in4 in itertools.product(space.n_cells, space.nf1, space.in2, space.in3, space.in4):
        base = Genome(in2, in3, in4, space.op1[0], space.op2[0], space.op3[0], space.op4[0], n_cells, nf1, lr)
        for which, pick in (("min", min), ("max", max)):
            g = base
            for gene in ("op1", "op2", "op3", "op4"):
                choice = pick(space.values(gene), key=lambda o: count_parameters(base.replace(**{gene: o}), 1, 2))
                g = g.replace(**{gene: choice})
            p = count_parameters(g, 1, 2)
            cur = found.get(which)
            if cur is None or (p < cur[0] if which == "min" else p > cur[0]):
                found[which] = (p, g)
    return found["min"][1], found["max"][1]
