"""Search strategies (ask/tell) and their parts: MOEA/D decomposition, operators, surrogate, Pareto tools."""

from engine.search.random import RandomSearch
from engine.search.samea import MOEAD, SaMEA
from engine.search.strategy import BaseStrategy, Evaluation, Strategy

STRATEGIES = {"samea": SaMEA, "moead": MOEAD, "random": RandomSearch}

__all__ = ["BaseStrategy", "Evaluation", "MOEAD", "RandomSearch", "SaMEA", "STRATEGIES", "Strategy"]
