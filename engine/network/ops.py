"""The operation vocabulary as a registry: op name -> module factory and analytic costs.

Every op except identity is pre-activation: ReLU -> Conv3d (bias, "same" padding) ->
InstanceNorm3d. Pseudo-3D k is a k x k x 1 conv followed at once by a 1 x 1 x k conv.
Kernel sizes are in (x, y, z) order on tensors laid out (N, C, X, Y, Z); z is the slice axis.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from engine.network.arch import (  # noqa: F401 - analytic sizes live in arch; re-exported here
    NORM_AFFINE,
    OP_KERNELS,
    op_activation_elements,
    op_flops,
    op_parameters,
)


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
