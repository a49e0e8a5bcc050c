"""Random-forest surrogate of f1: scikit-learn's RandomForestRegressor, mean and spread over trees."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestRegressor


class ForestSurrogate:
    """Predicts normalized f1 from gene indices plus log(parameters), with the std over the trees.

    Defaults follow the reference code: 100 trees, ``min_samples_split=5``.
    """

    def __init__(self, n_trees: int = 100, min_samples_split: int = 5, random_state: int = 0):
        self.model = RandomForestRegressor(
            n_estimators=n_trees, min_samples_split=min_samples_split, random_state=random_state, n_jobs=1
        )
        self.fitted = False

    @staticmethod
    def features(genes: np.ndarray, log_params: np.ndarray) -> np.ndarray:
        g = np.atleast_2d(np.asarray(genes, dtype=float))
        return np.column_stack([g, np.asarray(log_params, dtype=float).reshape(-1)])

    def fit(self, genes: np.ndarray, log_params: np.ndarray, f1: np.ndarray) -> "ForestSurrogate":
        self.model.fit(self.features(genes, log_params), np.asarray(f1, dtype=float))
        self.fitted = True
        return self

    def predict(self, genes: np.ndarray, log_params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean prediction of the forest and standard deviation over its trees, per row."""
        x = self.features(genes, log_params)
        mean = self.model.predict(x)
        per_tree = np.stack([tree.predict(x) for tree in self.model.estimators_])
        return mean, per_tree.std(axis=0)
