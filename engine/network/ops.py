"""The operation vocabulary as a registry: op name -> module factory and analytic costs.

Every op except identity is pre-activation: ReLU -> Conv3d (bias, "same" padding) ->
InstanceNorm3d. Pseudo-3D k is a k x k x 1 conv followed at once by a 1 x 1 x k conv.
Kernel sizes are in (x, y, z) order on tensors laid out (N, C, X, Y, Z); z is the slice axis.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from engine.genome import OPS

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


class Identity(nn.Module):
    """Pass-through; tiles channels when the output is an integer multiple of the input width."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        if c_out % c_in:
            raise ValueError(f"identity cannot map {c_in} to {c_out} channels")
        self.repeats = c_out // c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.repeats == 1 else x.repeat(1, self.repeats, 1, 1, 1)


def _conv_op(kernels: tuple[tuple[int, int, int], ...]) -> Callable[..., nn.Module]:
    def factory(c_in: int, c_out: int, preact: bool = True) -> nn.Module:
        layers: list[nn.Module] = [nn.ReLU(inplace=False)] if preact else []
        c = c_in
        for k in kernels:
            layers.append(nn.Conv3d(c, c_out, kernel_size=k, padding=tuple(s // 2 for s in k), bias=True))
            c = c_out
        layers.append(nn.InstanceNorm3d(c_out, affine=NORM_AFFINE))
        return nn.Sequential(*layers)

    return factory


def _identity_factory(c_in: int, c_out: int, preact: bool = True) -> nn.Module:
    return Identity(c_in, c_out)


#: Registry: op name -> factory(c_in, c_out, preact=True) -> nn.Module
OP_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    name: (_identity_factory if name == "identity" else _conv_op(kernels)) for name, kernels in OP_KERNELS.items()
}


def make_op(name: str, c_in: int, c_out: int, preact: bool = True) -> nn.Module:
    """Build op ``name`` mapping ``c_in`` to ``c_out`` channels."""
    return OP_FACTORIES[name](c_in, c_out, preact=preact)


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
