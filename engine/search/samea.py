"""SaMEA: surrogate-assisted MOEA/D with PBI (METHOD.md section 4), and plain MOEA/D.

Generation 0 (initialization): N genomes by Latin-hypercube sampling, all trained; sorted by f1,
worst first, onto the subproblems so that the most accurate one sits on the accuracy weight (1, 0),
as the reference code does.

Generations 1..L (learning): for each subproblem two parents from its neighbourhood, uniform
crossover, per-gene mutation with the decaying schedule; every child is trained and replaces each
neighbour whose PBI value it matches or beats. Success counts are recorded per subproblem.

Generations L+1..G-1 (exploitation): subproblems drawn with the learned probabilities, mutation values
drawn with the learned value probabilities, and a random-forest surrogate pre-screens each child: one
predicted to beat a neighbour in PBI is trained at once (first batch of the generation); the others
wait in a pool, from which the end-of-generation picks are trained (second batch): the pool members
non-dominated against the archive by prediction, the lowest predicted f1 and the highest spread.

Batches instead of one child at a time: the children of a generation are made from the population as
it stood at the start of the generation, so that they can be trained in parallel; their results are
then applied in the order the children were made (the reference code updates the population after
each child). Selection probabilities are learned from generation L on and used for the whole
exploitation phase.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from engine.errors import ConfigError
from engine.search import moead, operators, pareto
from engine.search.strategy import BaseStrategy
from engine.search.surrogate import ForestSurrogate

log = logging.getLogger(__name__)


def exploitation_trainings(population: int, prescreen: bool = True, pick_min_f1: bool = True,
                           pick_max_std: bool = True) -> tuple[int, float, int]:
    """(fewest, expected, most) children one exploitation generation trains.

    Without pre-screening every child; with it, between the end-of-generation picks (the lowest
    predicted f1 and the highest spread, when on) and the whole population; expected: halfway.
    """
    n = int(population)
    if not prescreen:
        return n, float(n), n
    least = min(n, int(pick_min_f1) + int(pick_max_std))
    return least, (least + n) / 2, n


class SaMEA(BaseStrategy):
    """The paper's search strategy; every number is a constructor argument (see SamEAConfig)."""

    name = "samea"

    def __init__(
        self,
        space,
        rng,
        parameters,
        f2_bounds,
        feasible=None,
        population: int = 10,
        generations: int = 40,
        neighbourhood: int = 3,
        theta: float = 0.001,
        weight_start: float = 0.5,
        weight_end: float = 1.0,
        learning_generations: int = 10,
        crossover_probability: float = 0.5,
        mutation_scale: float = 1.0,
        subproblem_epsilon: float = 0.2,
        value_epsilon: float = 0.2,
        surrogate_trees: int = 100,
        surrogate_min_samples_split: int = 5,
        prescreen: bool = True,
        pick_front: bool = True,
        pick_min_f1: bool = True,
        pick_max_std: bool = True,
        surrogate_seed: int = 0,
        max_resample: int = 2000,
        cost=None,
    ):
        super().__init__(space, rng, parameters, f2_bounds, feasible, population, generations, max_resample, cost)
        if not 2 <= neighbourhood <= population:
            raise ConfigError(f"samea.neighbourhood must be in 2..population ({population}), got {neighbourhood}")
        self.weights = moead.weight_vectors(population, weight_start, weight_end)
        self.neighbours = moead.neighbourhoods(self.weights, neighbourhood)
        self.theta = float(theta)
        self.learning_generations = int(learning_generations)
        self.crossover_probability = float(crossover_probability)
        self.mutation_scale = float(mutation_scale)
        self.subproblem_epsilon = float(subproblem_epsilon)
        self.value_epsilon = float(value_epsilon)
        self.surrogate_trees = int(surrogate_trees)
        self.surrogate_min_samples_split = int(surrogate_min_samples_split)
        self.prescreen = bool(prescreen)
        self.picks = (bool(pick_front), bool(pick_min_f1), bool(pick_max_std))
        self.surrogate_seed = int(surrogate_seed)
        n = population
        self.slots: list[int] = []  # archive index of the solution of each subproblem
        self.stage = "init"  # init -> children -> (pool) -> children of the next generation ...
        self.pool: list[dict] = []
        self.success = np.zeros((generations, n), dtype=int)
        self.subproblem_probs = np.full(n, 1.0 / n)
        self.value_probs = [np.full(k, 1.0 / k) for k in self.cards]

    # ---- phases ------------------------------------------------------------------------------
    def phase_of(self, generation: int) -> str:
        if generation == 0:
            return "init"
        return "learning" if generation <= self.learning_generations else "exploitation"

    def _expected_in(self, generation: int) -> float:
        if generation >= self.generations or self.phase_of(generation) != "exploitation":
            return super()._expected_in(generation)
        return exploitation_trainings(self.population, self.prescreen, *self.picks[1:])[1]

    def _propose(self) -> None:
        if self.stage == "init":
            self._propose_init()
            return
        if self.stage == "children":
            self._propose_children()
        if self.stage == "pool" and not self.pending:
            self._propose_pool()
        if not self.pending:  # nothing of this generation is worth training: on to the next
            self._end_generation()
            if not self.done:
                self._propose()

    def _propose_init(self) -> None:
        taken: set = set()
        for genes in operators.latin_hypercube(self.population, self.cards, self.rng):
            if not self.acceptable(genes, taken):
                genes = self.random_genes(taken)  # duplicate or over the device budget: re-sample
            taken.add(tuple(int(v) for v in genes))
            self._pend(genes, generation=0, phase="init", subproblem=None)

    def _make_child(self, subproblem: int, taken: set) -> np.ndarray:
        pm = operators.mutation_probability(self.generation + 1, self.generations, len(self.cards), self.mutation_scale)
        nb = self.neighbours[subproblem]
        a, b = self.rng.choice(nb, 2, replace=False)
        parent1 = self.archive[self.slots[a]]["genes"]
        parent2 = self.archive[self.slots[b]]["genes"]
        child = operators.uniform_crossover(parent1, parent2, self.rng, self.crossover_probability)
        child = operators.mutate(child, pm, self.value_probs, self.rng)
        for _ in range(self.max_resample):
            if self.acceptable(child, taken):
                return child
            # evaluated before or over the device budget: mutate again, as the reference code does
            child = operators.mutate(child, pm, self.value_probs, self.rng)
        return self.random_genes(taken)

    def _propose_children(self) -> None:
        g = self.generation
        phase = self.phase_of(g)
        exploit = phase == "exploitation"
        taken: set = set()
        children = []
        for j in range(self.population):
            sp = int(self.rng.choice(self.population, p=self.subproblem_probs)) if exploit else j
            child = self._make_child(sp, taken)
            taken.add(tuple(int(v) for v in child))
            children.append((child, sp))
        if not (exploit and self.prescreen):
            for child, sp in children:
                self._pend(child, generation=g, phase=phase, subproblem=sp)
            return
        mean, std = self._predict([c for c, _ in children])
        for (child, sp), m, s in zip(children, mean, std):
            f = np.array([m, self.f2_of(self.cost_of(child))])
            meta = dict(generation=g, phase=phase, subproblem=sp, predicted_f1=float(m), predicted_std=float(s))
            if self._beats_a_neighbour(f, sp):
                self._pend(child, **meta)
            else:
                self.pool.append({"genes": [int(v) for v in child], **meta})
        self.stage = "pool"

    def _propose_pool(self) -> None:
        self.stage = "children"
        pool, self.pool = self.pool, []
        for i in self.pool_picks(pool):
            p = pool[i]
            self._pend(p["genes"], **{k: v for k, v in p.items() if k != "genes"})

    def pool_picks(self, pool: list[dict]) -> list[int]:
        """Indices of the pool members trained at the end of the generation (in pick order).

        Pool members that are non-dominated against the archive's front by their predicted f1 (and
        exact f2), then the lowest predicted f1, then the highest predicted spread among the rest.
        """
        if not pool:
            return []
        pick_front, pick_min, pick_std = self.picks
        chosen: list[int] = []
        if pick_front:
            arch = self.archive_objectives()
            front = arch[pareto.pareto_front(arch)] if len(arch) else np.zeros((0, 2))
            pred = np.array([[p["predicted_f1"], self.f2_of(self.cost_of(p["genes"]))] for p in pool])
            both = np.vstack([front, pred])
            nd = pareto.pareto_front(both)
            chosen = [int(i - len(front)) for i in nd if i >= len(front)]
        rest = [i for i in range(len(pool)) if i not in chosen]
        if pick_min and rest:
            best = min(rest, key=lambda i: pool[i]["predicted_f1"])
            chosen.append(best)
            rest.remove(best)
        if pick_std and rest:
            chosen.append(max(rest, key=lambda i: pool[i]["predicted_std"]))
        return sorted(chosen)

    def _predict(self, children) -> tuple[np.ndarray, np.ndarray]:
        genes = np.array([e["genes"] for e in self.archive])
        logp = np.log([self.params_of(e["genes"]) for e in self.archive])
        f1 = np.array([e["f1"] for e in self.archive])
        model = ForestSurrogate(self.surrogate_trees, self.surrogate_min_samples_split, self.surrogate_seed + self.generation)
        model.fit(genes, logp, f1)
        cg = np.array(children)
        return model.predict(cg, np.log([self.params_of(c) for c in children]))

    def _beats_a_neighbour(self, f: np.ndarray, subproblem: int) -> bool:
        for m in self.neighbours[subproblem]:
            w = self.weights[m]
            if moead.pbi(f, w, self.theta) <= moead.pbi(self.objectives_of(self.archive[self.slots[m]]), w, self.theta):
                return True
        return False

    # ---- tell --------------------------------------------------------------------------------
    def _absorb(self, told: list[dict]) -> None:
        if self.stage == "init":
            # worst f1 on the balanced weight, best on the accuracy weight; ties: smaller network first
            start = len(self.archive) - len(told)
            order = sorted(range(len(told)), key=lambda i: (-told[i]["f1"], told[i]["parameters"]))
            self.slots = [start + i for i in order]
            for k, idx in enumerate(self.slots):
                self.archive[idx]["subproblem"] = k
            self.generation = 1
            self.stage = "children"
            return
        start = len(self.archive) - len(told)
        for offset, child in enumerate(told):
            f = np.array(self.objectives_of(child))
            for m in self.neighbours[child["subproblem"]]:
                w = self.weights[m]
                if moead.pbi(f, w, self.theta) <= moead.pbi(self.objectives_of(self.archive[self.slots[m]]), w, self.theta):
                    self.slots[m] = start + offset
        if self.stage == "children":  # not waiting for the end-of-generation picks
            self._end_generation()

    def _end_generation(self) -> None:
        g = self.generation
        f = self.archive_objectives()
        for idx in pareto.best_n(f, self.population):
            e = self.archive[idx]
            if e["generation"] == g and e.get("subproblem") is not None:
                self.success[g, e["subproblem"]] += 1
        if g >= self.learning_generations:
            self.subproblem_probs = operators.subproblem_probabilities(self.success[: g + 1].sum(axis=0), self.subproblem_epsilon)
            genes = np.array([e["genes"] for e in self.archive])
            f1 = f[:, 0]
            self.value_probs = [
                operators.value_probabilities(genes[:, i], f1, k, 1.0, self.value_epsilon) for i, k in enumerate(self.cards)
            ]
        self.generation = g + 1
        self.stage = "children"
        self.pool = []

    # ---- results -----------------------------------------------------------------------------
    def metrics(self) -> dict:
        """Adds the surrogate's rank correlation on candidates it predicted before they were trained."""
        out = super().metrics()
        pairs = [(e["predicted_f1"], e["f1"]) for e in self.archive if e.get("predicted_f1") is not None and e["status"] == "done"]
        out["surrogate_predictions"] = len(pairs)
        out["surrogate_spearman"] = None
        if len(pairs) >= 3:
            from scipy.stats import spearmanr

            rho = spearmanr([p for p, _ in pairs], [a for _, a in pairs]).statistic
            out["surrogate_spearman"] = None if not math.isfinite(rho) else float(rho)
        return out

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        s = super().state_dict()
        s.update(
            stage=self.stage,
            slots=list(self.slots),
            pool=[dict(p) for p in self.pool],
            success=self.success.tolist(),
            subproblem_probs=self.subproblem_probs.tolist(),
            value_probs=[p.tolist() for p in self.value_probs],
        )
        return s

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.stage = state["stage"]
        self.slots = [int(i) for i in state["slots"]]
        self.pool = [dict(p) for p in state["pool"]]
        success = np.array(state["success"], dtype=int)
        if success.shape != self.success.shape:
            raise ConfigError("saved search state has another population or number of generations than the config")
        self.success = success
        self.subproblem_probs = np.array(state["subproblem_probs"], dtype=float)
        self.value_probs = [np.array(p, dtype=float) for p in state["value_probs"]]


class MOEAD(SaMEA):
    """Plain MOEA/D with PBI: SaMEA's learning phase all through (no learned probabilities, no surrogate)."""

    name = "moead"

    def __init__(self, *args, **kw):
        kw["learning_generations"] = kw.get("generations", 40)
        kw["prescreen"] = False
        super().__init__(*args, **kw)

    def phase_of(self, generation: int) -> str:
        return "init" if generation == 0 else "evolution"
