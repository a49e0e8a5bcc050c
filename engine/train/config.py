"""The configuration of one training run (part of a run's configuration, stored as plain data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from engine.errors import ConfigError

PROFILES: tuple[str, ...] = ("default", "paper")
DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto")
#: "constant": Adam at the genome's learning rate throughout; "poly": nnU-Net's decay,
#: ``lr * (1 - step / planned_steps) ** 0.9`` per step; "tail": the genome's rate, then a linear decay
#: to 0 over the last ``LR_TAIL`` of the planned steps (default profile only).
LR_SCHEDULES: tuple[str, ...] = ("constant", "poly", "tail")
#: The share of the planned steps over which the "tail" schedule decays the rate to 0.
LR_TAIL = 0.2


@dataclass
class TrainerConfig:
    """The settings of one training by the ``Trainer``: how to train one network.

    ``batch_size`` and ``patch_size`` default (None) to the dataset plan's. ``iterations_per_epoch``
    None means the paper's ``ceil(n_train / batch_size)``. ``max_epochs_for_objective`` is E of the
    objective f1 (METHOD.md section 3), ``alpha`` and ``beta`` its weights. ``amp`` applies on CUDA
    only (bf16 where supported, else fp16 with a gradient scaler). ``num_threads`` sets torch's CPU
    threads for the run (None leaves them alone).

    ``augmentation`` ("auto", "light" or "strong") and ``mirror_axes`` (None: the plan's) shape the
    default profile's augmentation (``engine.train.augmentation``). ``val_every`` validates every that
    many epochs; None chooses it: every epoch in the paper profile, in the default profile the
    fewest epochs whose training costs at least 9x one validation (``validation_interval``).
    ``validate_at`` lists epochs validated whatever ``val_every`` says: the checkpoints of the
    search's early-stopping rule, which must read a validated Dice.

    ``channels_last``: the memory layout of the training step. None follows the device's rule
    (``engine.train.trainer.uses_channels_last``: always on CUDA; on the CPU for networks whose
    first level is at most ``CPU_CHANNELS_LAST_MAX_NF1`` channels wide); True or False forces it.
    """

    epochs: int = 120
    patience: int = 20
    batch_size: int | None = None
    patch_size: tuple[int, int, int] | None = None
    profile: str = "default"
    iterations_per_epoch: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    max_epochs_for_objective: int = 120
    alpha: float = 0.25
    beta: float = 0.25
    val_every: int | None = None
    num_threads: int | None = None
    augmentation: str = "auto"
    mirror_axes: list[int] | None = None
    validate_at: list[int] | None = None
    lr_schedule: str = "tail"
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        def positive_int(name: str, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"train config: {name} must be a positive integer, got {v!r}")

        for name in ("epochs", "patience", "max_epochs_for_objective"):
            positive_int(name)
        for name in ("batch_size", "iterations_per_epoch", "num_threads", "val_every"):
            positive_int(name, allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"train config: seed must be a non-negative integer, got {self.seed!r}")
        if self.profile not in PROFILES:
            raise ConfigError(f"train config: profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"train config: device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        for name in ("alpha", "beta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ConfigError(f"train config: {name} must be a non-negative number, got {v!r}")
            setattr(self, name, float(v))
        if self.patch_size is not None:
            p = tuple(self.patch_size)
            if len(p) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in p):
                raise ConfigError(f"train config: patch_size must be three positive integers, got {self.patch_size!r}")
            self.patch_size = p  # type: ignore[assignment]
        self.amp = bool(self.amp)
        if self.channels_last is not None and not isinstance(self.channels_last, bool):
            raise ConfigError(f"train config: channels_last must be true, false or unset, got {self.channels_last!r}")
        from engine.train.augmentation import STRENGTHS

        if self.augmentation not in STRENGTHS:
            raise ConfigError(f"train config: augmentation must be one of {', '.join(STRENGTHS)}, got {self.augmentation!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"train config: lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.validate_at is not None:
            at = list(self.validate_at)
            if any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in at):
                raise ConfigError(f"train config: validate_at must list positive integers, got {self.validate_at!r}")
            self.validate_at = sorted(set(at))
        if self.mirror_axes is not None:
            from engine.data.mirror import parse_axes

            self.mirror_axes = parse_axes(self.mirror_axes, "train config: mirror_axes")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["patch_size"] is not None:
            d["patch_size"] = list(d["patch_size"])
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "TrainerConfig":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"train config: unknown key(s) {', '.join(unknown)}")
        if data.get("patch_size") is not None:
            data["patch_size"] = tuple(data["patch_size"])
        return cls(**data)
