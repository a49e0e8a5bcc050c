"""Random search: a baseline with the same budget of evaluations (population x generations)."""

from __future__ import annotations

from engine.search.strategy import BaseStrategy


class RandomSearch(BaseStrategy):
    """Each generation, ``population`` new genomes drawn uniformly from the space (within budget)."""

    name = "random"

    def _propose(self) -> None:
        taken: set = set()
        for _ in range(self.population):
            genes = self.random_genes(taken)
            taken.add(tuple(int(v) for v in genes))
            self._pend(genes, generation=self.generation, phase="random", subproblem=None)

    def _absorb(self, told: list[dict]) -> None:
        self.generation += 1
