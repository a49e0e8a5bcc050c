"""A family of plain MONAI U-Nets trained exactly as a run's candidates, the report's fair comparison.

Each member is a MONAI ``UNet`` (no residual units) of a first-level width ``w`` (doubling per level)
and a depth of ``levels`` poolings, pooling as the run's plan pools a network that deep (anisotropic
strides included). It trains with the candidates' own :class:`engine.train.trainer.Trainer` and the
run's stored training settings (plan, patch, batch, sampling, augmentation, loss, validation,
patience, seed, threads); only the network and its optimizer (Adam at :data:`UNET_LR`, the usual
choice for plain U-Nets, where a candidate's learning rate is one of its genes) differ. Two budgets:

- ``epochs``: the candidates' number of epochs;
- ``time``: the median wall time the run's candidates took to train (their ``fit_seconds``), as
  many epochs as fit in it on this machine (estimated from the member's ``epochs`` training, which
  is always run first; held by a deadline checked before each epoch). A member whose time budget gives the
  same epochs as the ``epochs`` budget is that training (deterministic for one seed), not a second one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from engine.errors import ConfigError
from engine.train.trainer import Trainer

log = logging.getLogger(__name__)

#: Adam learning rate of the U-Nets.
UNET_LR = 1e-3
#: First-level widths of the default family.
DEFAULT_WIDTHS: tuple[int, ...] = (4, 8, 16, 32)
BUDGETS: tuple[str, ...] = ("epochs", "time")


def unet(in_channels: int, num_classes: int, width: int, pools: Sequence[Sequence[int]]):
    """A MONAI U-Net: ``width * 2**i`` channels at level ``i``, one pooling (stride) per entry of ``pools``."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes,
                channels=tuple(int(width) * 2 ** i for i in range(len(pools) + 1)),
                strides=tuple(tuple(int(v) for v in p) for p in pools), num_res_units=0)


def allowed_depths(problem: dict) -> list[int]:
    """The pooling depths the run's plan allows: those it has a pooling for whose total pooling divides
    the training patch along every axis."""
    patch = [int(v) for v in problem["patch_size"]]
    out = []
    for key, pools in sorted((problem.get("pool_sizes") or {}).items(), key=lambda kv: int(kv[0])):
        total = np.prod(np.asarray(pools, int), axis=0)
        if all(p % int(t) == 0 for p, t in zip(patch, total)):
            out.append(int(key))
    return out


def median_fit_seconds(candidates: list[dict]) -> float | None:
    """The median training wall time of a run's finished candidates (their ``fit_seconds``; the whole
    evaluation's ``seconds`` for runs that did not record it), or None when none is known."""
    times = []
    for c in candidates:
        if c.get("status") != "done":
            continue
        t = (c.get("metrics") or {}).get("fit_seconds") or c.get("seconds")
        if t and math.isfinite(float(t)) and float(t) > 0:
            times.append(float(t))
    return float(np.median(times)) if times else None


def _shape_genome(levels: int):
    """The smallest genome with ``levels`` poolings: the Trainer's pooling and patch checks for that depth."""
    from engine.genome import SearchSpace
    from engine.network.cost import extreme_genomes

    return extreme_genomes(SearchSpace(n_cells=(2 * int(levels) + 1,), nf1=(8,)))[0]


class UNetTrainer(Trainer):
    """The candidates' Trainer with a MONAI U-Net in place of a genome's network, and an optional
    wall-time budget ``seconds``: an epoch that would end past it is not started, and the epoch
    before it is validated, so the best weights are chosen as a candidate's are."""

    def __init__(self, width: int, levels: int, data, config, seconds: float | None = None, **kwargs):
        self.width, self.levels = int(width), int(levels)  # read by build_model, inside Trainer.__init__
        super().__init__(_shape_genome(levels), data, config, **kwargs)
        self.parameters = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.seconds = seconds
        self._t0: float | None = None
        self._epoch_seconds: list[float] = []
        self._last_start: float | None = None
        self._stop_after: int | None = None
        self.hit_budget = False

    def build_model(self):
        """The U-Net in place of the genome's network, seeded as a candidate's weights are."""
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.config.seed))
            return unet(self.data.in_channels, self.data.num_classes, self.width,
                        self.pool_sizes or [(2, 2, 2)] * self.levels)

    def first_level_width(self) -> int:
        return self.width

    def learning_rate(self) -> float:
        return UNET_LR

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        if self._last_start is not None:
            self._epoch_seconds.append(now - self._last_start)
        self._last_start = now
        if self.seconds is not None and self._epoch_seconds:
            # this epoch is the last if the next one would end past the budget: validate it
            per = float(np.median(self._epoch_seconds))
            if now - self._t0 + 2 * per > self.seconds:
                self.config.validate_at = sorted({*(self.config.validate_at or ()), epoch})
                self.hit_budget = True
                self._stop_after = epoch

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        super().on_epoch_end(epoch, record)
        if self._stop_after == epoch and self.status == "done":
            self.status = "cancelled"  # ends fit()'s loop after this epoch, the best weights restored


@dataclass
class Member:
    """One trained U-Net of the family."""

    width: int
    levels: int
    budget: str  # "epochs" or "time"
    model: Any  # the trained torch module (best weights), eval mode
    parameters: int
    epochs: int  # epochs trained
    planned_epochs: int
    fit_seconds: float
    best_epoch: int
    val_dice: dict
    settings: dict = field(default_factory=dict)  # the training settings it ran with

    @property
    def name(self) -> str:
        return f"unet_w{self.width}_l{self.levels}_{self.budget}"


def train_member(data, train: dict, width: int, levels: int, budget: str, device: str = "auto",
                 epochs: int | None = None, seconds: float | None = None, callback: Callable[[dict], None] | None = None
                 ) -> Member:
    """Train one U-Net with the run's training settings ``train`` (TrainerConfig fields); ``epochs``
    replaces their number of epochs, ``seconds`` adds the wall-time budget."""
    from engine.train.config import TrainerConfig
    from engine.train.sinks import CallbackSink, MetricsLogger

    settings = {**train, "device": device if device in ("auto", "cpu", "cuda") else "auto", "validate_at": None}
    if epochs is not None:
        settings["epochs"] = max(1, int(epochs))
    config = TrainerConfig.from_dict(settings)
    logger = MetricsLogger([CallbackSink(callback)] if callback is not None else [])
    trainer = UNetTrainer(width, levels, data, config, seconds=seconds, logger=logger, callback=callback)
    try:
        result = trainer.fit()
    finally:
        logger.close()
    trainer.model.eval()
    return Member(width=int(width), levels=int(levels), budget=budget, model=trainer.model,
                  parameters=int(trainer.parameters), epochs=int(result.epochs), planned_epochs=int(config.epochs),
                  fit_seconds=float(result.seconds), best_epoch=int(result.best_epoch), val_dice=dict(result.dice),
                  settings={"epochs": int(config.epochs), "patience": config.patience, "profile": config.profile,
                            "patch_size": list(trainer.patch), "batch_size": trainer.batch_size,
                            "iterations_per_epoch": trainer.iterations, "val_every": trainer.val_every,
                            "augmentation": dict(trainer.augmentation), "loss": config.profile, "seed": config.seed,
                            "pool_sizes": [list(p) for p in (trainer.pool_sizes or [])], "optimizer": "Adam",
                            "lr": UNET_LR, "hit_time_budget": trainer.hit_budget})


def parse_widths(text: str | Sequence[int] | None) -> list[int]:
    """``"4,8,16,32"`` (or a list) as distinct positive widths; raises ``ConfigError``."""
    if text is None:
        return list(DEFAULT_WIDTHS)
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        widths = [int(str(v).strip()) for v in items if str(v).strip()]
    except ValueError:
        raise ConfigError(f"--family-widths must list positive integers, got {text!r}") from None
    if not widths or any(w < 1 or w > 512 for w in widths):
        raise ConfigError(f"--family-widths must list integers from 1 to 512, got {text!r}")
    return sorted(set(widths))


def parse_depths(text: str | Sequence[int] | None, allowed: list[int]) -> list[int]:
    """``"2,3"`` (or a list; None: every depth the plan allows) checked against ``allowed``."""
    if text is None:
        if not allowed:
            raise ConfigError("the run's plan allows no U-Net depth for its patch")
        return list(allowed)
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        depths = sorted({int(str(v).strip()) for v in items if str(v).strip()})
    except ValueError:
        raise ConfigError(f"--family-depths must list integers, got {text!r}") from None
    bad = [d for d in depths if d not in allowed]
    if not depths or bad:
        raise ConfigError(f"--family-depths {text!r}: the run's plan allows depths {', '.join(map(str, allowed)) or 'none'}")
    return depths


def parse_budgets(text: str | Sequence[str] | None) -> list[str]:
    """``"epochs,time"`` (or a list; None: both) as budget names; raises ``ConfigError``."""
    if text is None:
        return list(BUDGETS)
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not items or any(b not in BUDGETS for b in items):
        raise ConfigError(f"--family-budgets must list {' and/or '.join(BUDGETS)}, got {text!r}")
    return [b for b in BUDGETS if b in items]


def train_family(data, train: dict, widths: Sequence[int], depths: Sequence[int], budgets: Sequence[str],
                 median_seconds: float | None, device: str = "auto",
                 progress: Callable[[str], None] | None = None) -> list[Member]:
    """Every (width, depth) U-Net in every budget; the ``time`` budget needs ``median_seconds``."""
    if "time" in budgets and not median_seconds:
        raise ConfigError("the run records no candidate's training time: use --family-budgets epochs")
    members: list[Member] = []
    epochs = int(train.get("epochs") or 1)
    for levels in depths:
        for width in widths:
            same_epochs = None
            if "epochs" in budgets or "time" in budgets:
                if progress:
                    progress(f"U-Net width {width}, depth {levels}: {epochs} epochs")
                same_epochs = train_member(data, train, width, levels, "epochs", device)
                if "epochs" in budgets:
                    members.append(same_epochs)
            if "time" in budgets:
                per_epoch = same_epochs.fit_seconds / max(same_epochs.epochs, 1)
                fit = max(1, int(median_seconds // max(per_epoch, 1e-9)))  # type: ignore[operator]
                if fit == epochs:
                    timed = Member(**{**same_epochs.__dict__, "budget": "time"})  # the same training
                else:
                    if progress:
                        progress(f"U-Net width {width}, depth {levels}: {median_seconds:.0f} s (about {fit} epochs)")
                    timed = train_member(data, train, width, levels, "time", device, epochs=fit, seconds=median_seconds)
                members.append(timed)
    return members
