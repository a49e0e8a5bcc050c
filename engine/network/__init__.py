"""Networks of the EMONAS-Net search space: op registry, builder, analytic costs."""

from engine.network.builder import Architecture, EmonasNet, architecture, build_network, check_patch
from engine.network.cost import Cost, count_parameters, estimate_cost

__all__ = [
    "Architecture",
    "Cost",
    "EmonasNet",
    "architecture",
    "build_network",
    "check_patch",
    "count_parameters",
    "estimate_cost",
]
