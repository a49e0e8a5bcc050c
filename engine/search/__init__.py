"""Search strategies (ask/tell) and their parts: MOEA/D decomposition, operators, surrogate, Pareto tools.

Names load on first use, so that the light parts (``engine.search.pareto``, ``engine.search.strategy``)
come without scikit-learn and SciPy.
"""

__all__ = ["BaseStrategy", "Evaluation", "MOEAD", "RandomSearch", "SaMEA", "STRATEGIES", "Strategy"]

_WHERE = {"RandomSearch": "random", "MOEAD": "samea", "SaMEA": "samea", "BaseStrategy": "strategy",
          "Evaluation": "strategy", "Strategy": "strategy"}


def __getattr__(name: str):
    import importlib

    if name == "STRATEGIES":
        from engine.search.random import RandomSearch
        from engine.search.samea import MOEAD, SaMEA

        return {"samea": SaMEA, "moead": MOEAD, "random": RandomSearch}
    if name in _WHERE:
        return getattr(importlib.import_module(f"engine.search.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'engine.search' has no attribute {name!r}")
