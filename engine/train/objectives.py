"""The first search objective of one trained candidate, f1 (METHOD.md section 3).

The second, ``f2``, is not a property of a training: it is the network's cost (parameter count,
FLOPs or latency) on a log scale normalized between the run's bounds,
``engine.search.objective.normalized``; a training reports the raw ``log_parameters``.
"""

from __future__ import annotations

import math
from typing import Sequence

#: The paper's code averages the train and validation Dice losses over the last 5 epochs.
LAST_EPOCHS = 5


def objective_f1(
    train_dice_losses: Sequence[float],
    val_dice_losses: Sequence[float],
    best_epoch: int,
    num_foreground: int,
    max_epochs: int = 120,
    alpha: float = 0.25,
    beta: float = 0.25,
) -> tuple[float, float]:
    """The expected segmentation error f1, as (normalized to [0, 1], raw).

    ``f1_raw = alpha * (C - MCDice_train) + (C - MCDice_val) + beta * (E - e_max) / E``, where the
    two Dice-loss terms (each the sum of per-class soft Dice losses, between 0 and C) are the means
    over the last 5 epochs of ``train_dice_losses`` (per epoch, averaged over its training patches)
    and ``val_dice_losses`` (per validated epoch, on whole validation volumes), and ``e_max`` is
    the 1-based epoch of the best validation Dice. Training past E counts as E (the term stays
    >= 0). Normalized: divided by ``C + alpha * C + beta``.
    """
    if not train_dice_losses or not val_dice_losses:
        return math.nan, math.nan
    c = int(num_foreground)
    t = sum(train_dice_losses[-LAST_EPOCHS:]) / len(train_dice_losses[-LAST_EPOCHS:])
    v = sum(val_dice_losses[-LAST_EPOCHS:]) / len(val_dice_losses[-LAST_EPOCHS:])
    late = max(0, max_epochs - int(best_epoch)) / max_epochs
    raw = alpha * t + v + beta * late
    return raw / (c + alpha * c + beta), raw

