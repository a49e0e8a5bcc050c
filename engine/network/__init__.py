"""Networks of the EMONAS-Net search space: op registry, builder, analytic costs.

The layer plan and the analytic costs (``engine.network.arch``, ``engine.network.cost``) need no
PyTorch; the builder's names load it on first use, so that planning and cost estimates stay light.
"""

from engine.network.arch import Architecture, architecture, check_patch
from engine.network.cost import Cost, count_parameters, estimate_cost, extreme_genomes

_BUILDER = ("EmonasNet", "build_network")

__all__ = [
    "Architecture",
    "Cost",
    "EmonasNet",
    "architecture",
    "build_network",
    "check_patch",
    "count_parameters",
    "estimate_cost",
    "extreme_genomes",
]


def __getattr__(name: str):
    if name in _BUILDER:
        from engine.network import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'engine.network' has no attribute {name!r}")
