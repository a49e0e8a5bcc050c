"""Training one candidate network: an explicit loop with small hooks, and its result.

``Trainer`` runs epochs of ``train_step`` calls followed, every ``val_every`` epochs (and after the
last), by ``validate`` on whole validation volumes;
``on_epoch_start`` / ``on_epoch_end`` are the hooks a subclass overrides. Every epoch's record goes
to one ``MetricsLogger`` (CSV file, callback, ...). ``train_candidate`` is the function the search's
workers call.

Performance: the loss and Dice sums stay on the device during an epoch (no per-step ``.item()``);
they are read every ``CHECK_EVERY`` steps, where the NaN check, cancellation and the "step" event
happen, and at the end of the epoch. Best weights are kept as one CPU copy, replaced in place, so
memory stays flat over epochs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from engine.device import resolve_device, usable_cpus
from engine.genome import Genome
from engine.network import build_network, check_patch, count_parameters
from engine.network.builder import architecture
from engine.train.augmentation import training_augmentation
from engine.train.config import LR_TAIL, TrainerConfig
from engine.train.data import TrainingData
from engine.train.losses import PAPER_DICE, make_loss, per_class_soft_dice
from engine.train.objectives import objective_f1
from engine.train.sampling import BatchLoader, PatchSampler
from engine.train.sinks import CallbackSink, CsvSink, MetricsLogger

log = logging.getLogger(__name__)

#: Steps between host syncs (NaN check, cancellation, "step" progress events).
CHECK_EVERY = 5
#: The paper profile's callbacks, as the authors' Keras code sets them (Search/SaMEA_Algorithm.py):
#: EarlyStopping(monitor val_loss, min_delta 0.001, patience = TrainerConfig.patience) and
#: ReduceLROnPlateau(monitor training loss, factor 0.5, patience 30, min_lr 1e-7; Keras' min_delta 1e-4).
PAPER_MIN_DELTA = 0.001
PAPER_PLATEAU = {"factor": 0.5, "patience": 30, "min_lr": 1e-7, "min_delta": 1e-4}
#: Keras' InstanceNormalization (keras-contrib) epsilon.
PAPER_NORM_EPS = 1e-3
#: Version of training.json.
SCHEMA_VERSION = 1
#: Cost of validating one volume, in units of one sample's training step (sampling, augmentation,
#: forward and backward of one patch): ``VOLUME_COST + WINDOW_COST * windows``. Measured on CPU on the
#: hippocampus set with the small genome (nf1 8, 5 cells): 2.5 for 8 windows of 32x48x32, 1.3 for one
#: window of 40x56x40 (the whole volume: softmax, soft Dice and counts on it cost about one step).
WINDOW_COST = 0.2
VOLUME_COST = 1.2
#: The default profile validates at most this share of a candidate's time.
MAX_VALIDATION_SHARE = 0.1


class TrainingFailed(RuntimeError):
    """Training diverged (NaN or infinite loss); the message says when and why."""


@dataclass
class TrainResult:
    """What training one candidate gives the search (``to_dict`` is plain JSON data)."""

    f1: float
    f1_raw: float
    log_parameters: float  # log of the parameter count (the search's f2 normalizes its cost objective)
    parameters: int
    dice: dict[str, float]
    epochs: int
    best_epoch: int
    curves: list[dict[str, Any]]
    seconds: float
    device: str
    status: str
    train_step_seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sliding_windows(shape, patch, overlap: float = 0.5) -> int:
    """Windows MONAI's sliding window runs over a volume of ``shape`` (spatial) with ``patch``."""
    n = 1
    for size, p in zip(shape, patch):
        step = max(1, int(p * (1 - overlap)))
        n *= 1 if size <= p else math.ceil((size - p) / step) + 1
    return n


def validation_interval(val_shapes, patch, batch_size: int, iterations: int) -> int:
    """Epochs between validations so that validation costs at most ``MAX_VALIDATION_SHARE`` of the
    time: the fewest whose training steps cost at least (1 / share - 1) times one validation."""
    cost = sum(VOLUME_COST + WINDOW_COST * sliding_windows(s, patch) for s in val_shapes)
    per_epoch = batch_size * iterations
    need = (1 / MAX_VALIDATION_SHARE - 1) * cost
    return max(1, math.ceil(need / max(per_epoch, 1)))


def epochs_between_validations(config, val_shapes, patch, batch_size: int, iterations: int) -> int:
    """The ``val_every`` a ``Trainer`` with ``config`` uses: the configured one, 1 in the paper profile
    (its f1 reads the validation loss of every epoch), else ``validation_interval``."""
    if config.val_every is not None:
        return int(config.val_every)
    if config.profile == "paper":
        return 1
    return validation_interval(val_shapes, patch, batch_size, iterations)


#: On the CPU, train in channels-last-3D when the network's first level is at most this wide. oneDNN's
#: channels-last kernels ran the 3x3x3 and 5x5x1 convolutions of 8 channels 1.6 - 2.5x faster (fwd +
#: bwd), and training steps of nf1 8 genomes 1.1 - 2.1x faster, but those of nf1 32 genomes 0.77 - 0.88x
#: as fast and of nf1 16 mostly 0.8 - 1.0x (BENCHMARKS.md "Memory layout on the CPU").
CPU_CHANNELS_LAST_MAX_NF1 = 8


def uses_channels_last(device: torch.device, nf1: int, setting: bool | None = None) -> bool:
    """Whether a training step runs in channels-last-3D: ``setting`` if given, else always on CUDA and,
    on the CPU, for networks of first-level width ``CPU_CHANNELS_LAST_MAX_NF1`` or less."""
    if setting is not None:
        return bool(setting)
    return device.type == "cuda" or (device.type == "cpu" and int(nf1) <= CPU_CHANNELS_LAST_MAX_NF1)


def keras_init(model: torch.nn.Module) -> None:
    """The Keras defaults of the authors' code: Glorot-uniform kernels, zero biases, and the
    instance norms' epsilon 1e-3 (keras-contrib's InstanceNormalization)."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
            torch.nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.InstanceNorm3d):
            m.eps = PAPER_NORM_EPS


@contextlib.contextmanager
def _torch_settings(device: torch.device, num_threads: int | None):
    """Deterministic algorithms on CPU and the thread count, restored afterwards."""
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_threads = torch.get_num_threads()
    old_bench = torch.backends.cudnn.benchmark
    try:
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        else:
            torch.backends.cudnn.benchmark = True  # speed over bit-reproducibility on CUDA
        cpus = None if num_threads else usable_cpus()
        if num_threads:
            torch.set_num_threads(num_threads)
        elif old_threads > cpus:  # PyTorch counts the node's cores, not a container's quota
            torch.set_num_threads(cpus)
        yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.set_num_threads(old_threads)
        torch.backends.cudnn.benchmark = old_bench


class Trainer:
    """Trains ``genome``'s network on ``data`` as ``config`` says. Call ``fit()`` once.

    ``prefetch``: batches a loader thread keeps ready while the network trains (0: the training thread
    samples its own batches; the batches are the same either way). None (the default): 2 on CUDA, and
    on CPU 2 when torch's threads leave a core free for the loader, else 0: on a core of the training's
    OpenMP team the loader would stall the team at every batch (BENCHMARKS.md, "Training loop").
    """

    prefetch: int | None = None

    def __init__(
        self,
        genome: Genome,
        data: TrainingData,
        config: TrainerConfig,
        logger: MetricsLogger | None = None,
        callback: Callable[[dict], None] | None = None,
        cancel=None,
    ):
        self.genome = genome
        self.data = data
        self.config = config
        self.logger = logger or MetricsLogger()
        self.callback = callback
        self.cancel = cancel
        self.device = resolve_device(config.device)
        plan = data.plan
        self.patch = tuple(config.patch_size or plan.patch_size)
        self.batch_size = int(config.batch_size or plan.batch_size)
        self.pool_sizes = plan.pool_sizes_for(genome.n_levels) if hasattr(plan, "pool_sizes_for") else None
        arch = architecture(genome, data.in_channels, data.num_classes, self.pool_sizes)
        self.patch = check_patch(arch, self.patch)
        self.num_classes = data.num_classes
        self.fg_names = list(data.foreground)  # class index i = position + 1
        self.parameters = count_parameters(genome, data.in_channels, data.num_classes, self.pool_sizes)
        n_train = len(data.train)
        self.iterations = config.iterations_per_epoch or math.ceil(n_train / self.batch_size)
        self.val_every = epochs_between_validations(config, [c.label.shape for c in data.val], self.patch,
                                                    self.batch_size, self.iterations)
        self.augmentation_profile, self.augmentation = training_augmentation(
            config.profile, config.augmentation, config.mirror_axes,
            tuple(getattr(plan, "mirror_axes", (0, 1, 2))), config.epochs * self.iterations)
        cuda = self.device.type == "cuda"
        self.amp_dtype = None
        if cuda and config.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.channels_last = uses_channels_last(self.device, self.first_level_width(), config.channels_last)

        self.paper = config.profile == "paper"
        self.dice_options = PAPER_DICE if self.paper else {}
        # every random stream derives from the config's seed
        ss = np.random.SeedSequence(config.seed)
        sampler_seed, torch_seed, noise_seed = ss.spawn(3)
        with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's RNG
            torch.manual_seed(int(torch_seed.generate_state(1)[0]))
            self.model = self.build_model()
        self.model = self.model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.learning_rate())
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.plateau = None
        # the default profile's schedules run over the planned steps (an early stop or a budget ends
        # them early); the paper profile keeps its plateau rule
        self.lr_schedule = "plateau" if self.paper else config.lr_schedule
        self.planned_steps = config.epochs * self.iterations
        if self.paper:  # torch reduces after patience + 1 bad epochs, Keras after patience
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=PAPER_PLATEAU["factor"], patience=PAPER_PLATEAU["patience"] - 1,
                threshold=PAPER_PLATEAU["min_delta"], threshold_mode="abs", min_lr=PAPER_PLATEAU["min_lr"])
        self.best_val_loss = math.inf  # paper profile: e_max and the kept weights are the argmin of val_loss
        self._stop_best = math.inf  # paper profile: early stopping's reference (improvements > min_delta)
        self._stop_wait = 0
        self.loss_fn = make_loss(config.profile)
        self.sampler = PatchSampler(
            data.train, self.patch, self.batch_size, data.num_classes, self.augmentation_profile,
            np.random.default_rng(sampler_seed),
        )
        self.noise_gen = torch.Generator(device=self.device)
        self.noise_gen.manual_seed(int(noise_seed.generate_state(1)[0]))
        self.curves: list[dict[str, Any]] = []
        self.best_dice = -1.0
        self.best_epoch = 0
        self.best_per_label: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.train_step_seconds = math.nan
        self.status = "done"
        self._step_count = 0

    def build_model(self) -> torch.nn.Module:
        """The network to train: the genome's (called with torch's RNG seeded from the config's seed;
        a subclass may train another network with the same pipeline)."""
        model = build_network(self.genome, self.data.in_channels, self.data.num_classes, self.pool_sizes)
        if self.paper:
            keras_init(model)
        return model

    def first_level_width(self) -> int:
        """Channels of the network's first level (the genome's nf1): what the CPU's memory layout rule reads."""
        return int(self.genome.nf1)

    def learning_rate(self) -> float:
        """Adam's learning rate: the genome's gene."""
        return float(self.genome.lr)

    def scheduled_rate(self, step: int) -> float:
        """The rate of the 0-based training step ``step`` under the default profile's schedule."""
        base, n = self.learning_rate(), self.planned_steps
        if self.lr_schedule == "poly":  # nnU-Net's
            return base * (1.0 - min(step, n - 1) / n) ** 0.9
        if self.lr_schedule == "tail":
            # constant while the network still learns fast, then linearly towards 0: a short training
            # ends on weights annealed at a small rate (BENCHMARKS.md "Accuracy per minute")
            start = n * (1.0 - LR_TAIL)
            return base if step < start else base * max(n - step, 1) / (n - start)
        return base

    # ---- hooks -------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        """Hook: before the first training step of ``epoch`` (1-based)."""
        self.model.train()

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; returns the detached (loss, Dice loss) on the device."""
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            logits = self.model(images)
        loss, dice_loss = self.loss_fn(logits, labels)
        if self.lr_schedule in ("poly", "tail"):
            lr = self.scheduled_rate(self._step_count)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss.detach(), dice_loss

    def validate(self, epoch: int) -> dict[str, Any]:
        """Soft Dice loss and hard Dice per label on whole validation volumes (sliding window)."""
        from engine.infer.predictor import sliding_window_logits, torch_logits_fn

        fn = torch_logits_fn(self.model, self.device, amp=self.amp_dtype is not None)
        if self.channels_last:
            inner = fn
            fn = lambda x: inner(x.contiguous(memory_format=torch.channels_last_3d))  # noqa: E731
        losses, dices = [], []
        k = self.num_classes
        for case in self.data.val:
            # np.array copies: cached cases are read-only memory maps
            image = torch.from_numpy(np.array(case.image, dtype=np.float32)).to(self.device)
            label = torch.from_numpy(np.array(case.label)).to(self.device).long()
            logits = sliding_window_logits(fn, image, self.patch, overlap=0.5, gaussian=True)
            probs = torch.softmax(logits, 0)[None]
            losses.append((1 - per_class_soft_dice(probs, label[None], **self.dice_options)).sum())
            keep = label < k  # the ignore label's voxels (index k) count for no class
            pred, label = logits.argmax(0)[keep], label[keep]
            inter = torch.bincount(pred[pred == label], minlength=k)[1:].float()
            sizes = (torch.bincount(pred.reshape(-1), minlength=k) + torch.bincount(label.reshape(-1), minlength=k))[1:].float()
            # both empty -> 1 (see engine.infer.metrics)
            dices.append(torch.where(sizes > 0, 2 * inter / sizes.clamp(min=1), torch.ones_like(sizes)))
        val_loss = float(torch.stack(losses).mean())
        per_label = torch.stack(dices).mean(0).tolist()
        return {"val_loss": val_loss, "val_dice": dict(zip(self.fg_names, per_label))}

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        """Hook: after validation; logs the record and keeps the best weights."""
        val = record.get("val_dice")
        if val and self.paper:
            mean = float(np.mean(list(val.values())))
            record["val_dice_mean"] = mean
            loss = record["val_loss"]
            if loss < self.best_val_loss:
                self.best_val_loss, self.best_dice, self.best_epoch = loss, mean, epoch
                self.best_per_label = dict(val)
                self._keep_best()
            if loss < self._stop_best - PAPER_MIN_DELTA:
                self._stop_best, self._stop_wait = loss, 0
            else:
                self._stop_wait += 1
        elif val:
            mean = float(np.mean(list(val.values())))
            record["val_dice_mean"] = mean
            if mean > self.best_dice:
                self.best_dice, self.best_epoch = mean, epoch
                self.best_per_label = dict(val)
                self._keep_best()
        self.curves.append(record)
        self.logger.log({"event": "epoch", **record})

    # ---- loop ---------------------------------------------------------------------------------
    def _keep_best(self) -> None:
        state = self.model.state_dict()
        if self.best_state is None:
            self.best_state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
        else:
            for k, v in state.items():
                self.best_state[k].copy_(v.detach())

    def _cancelled(self) -> bool:
        return self.cancel is not None and bool(self.cancel.is_set())

    def _check(self, epoch: int, step: int, loss_sum: torch.Tensor, n: int) -> None:
        value = float(loss_sum) / max(n, 1)
        if not math.isfinite(value):
            raise TrainingFailed(
                f"training diverged: the loss became {value} in epoch {epoch} by step {step} "
                f"(learning rate {self.genome.lr:g}; try a smaller one)"
            )
        if self.callback is not None:
            self.callback({"event": "step", "epoch": epoch, "step": step, "steps": self.iterations, "loss": value})

    def batch_loader(self) -> BatchLoader:
        """The loader of this trainer's batches (``prefetch_depth()`` ahead in a thread); use it in a ``with``."""
        return BatchLoader(self.sampler, prefetch=self.prefetch_depth())

    def prefetch_depth(self) -> int:
        """Batches prepared ahead with the current torch thread count (see ``prefetch``)."""
        if self.prefetch is not None:
            return int(self.prefetch)
        if self.device.type == "cuda":
            return 2
        return 2 if torch.get_num_threads() < usable_cpus() else 0

    def _train_epoch(self, epoch: int, loader: BatchLoader) -> dict[str, Any] | None:
        self.on_epoch_start(epoch)
        loss_sum = torch.zeros((), device=self.device)
        dice_sum = torch.zeros((), device=self.device)
        t0 = time.perf_counter()
        for step in range(1, self.iterations + 1):
            images, labels = loader.next().to_device(self.device, self.patch, self.noise_gen)
            loss, dice_loss = self.train_step(images, labels)
            if _fault("train.step") == "nan":
                loss = torch.full_like(loss, math.nan)
            loss_sum += loss.float()
            dice_sum += dice_loss.float()
            self._step_count += 1
            if step % CHECK_EVERY == 0 or step == self.iterations:
                self._check(epoch, step, loss_sum, step)
                if self._cancelled():
                    self.status = "cancelled"
                    return None
        train_loss = float(loss_sum) / self.iterations
        train_seconds = time.perf_counter() - t0
        return {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_dice_loss": float(dice_sum) / self.iterations,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_seconds": train_seconds,
        }

    def fit(self) -> TrainResult:
        """Train until ``config.epochs``, early stopping or cancellation; returns the result."""
        cfg = self.config
        t_start = time.perf_counter()
        step_seconds = []
        with _torch_settings(self.device, cfg.num_threads), self.batch_loader() as loader:
            for epoch in range(1, cfg.epochs + 1):
                t0 = time.perf_counter()
                record = self._train_epoch(epoch, loader)
                if record is None:
                    break
                step_seconds.append(record["train_seconds"] / self.iterations)
                if epoch % self.val_every == 0 or epoch == cfg.epochs or epoch in (cfg.validate_at or ()):
                    self.model.eval()
                    t_val = time.perf_counter()
                    record.update(self.validate(epoch))
                    record["val_seconds"] = time.perf_counter() - t_val
                    if self._cancelled():
                        self.status = "cancelled"
                record["seconds"] = time.perf_counter() - t0
                self.on_epoch_end(epoch, record)
                if self.status == "cancelled":
                    break
                if self.plateau is not None:
                    self.plateau.step(record["train_loss"])
                if self.paper and self._stop_wait >= cfg.patience:
                    log.info("early stop at epoch %d (validation loss flat for %d epochs)", epoch, self._stop_wait)
                    break
                if not self.paper and self.best_epoch and epoch - self.best_epoch >= cfg.patience:
                    log.info("early stop at epoch %d (best %d)", epoch, self.best_epoch)
                    break
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        self.train_step_seconds = float(np.median(step_seconds)) if step_seconds else math.nan
        return self._result(time.perf_counter() - t_start)

    def _result(self, seconds: float) -> TrainResult:
        cfg = self.config
        validated = [r for r in self.curves if "val_loss" in r]
        f1, f1_raw = objective_f1(
            [r["train_dice_loss"] for r in self.curves],
            [r["val_loss"] for r in validated],
            self.best_epoch,
            len(self.fg_names),
            cfg.max_epochs_for_objective,
            cfg.alpha,
            cfg.beta,
        )
        return TrainResult(
            f1=f1,
            f1_raw=f1_raw,
            log_parameters=math.log(self.parameters),
            parameters=self.parameters,
            dice={k: float(v) for k, v in self.best_per_label.items()},
            epochs=len(self.curves),
            best_epoch=self.best_epoch,
            curves=self.curves,
            seconds=seconds,
            device=str(self.device),
            status=self.status,
            train_step_seconds=self.train_step_seconds,
        )


def validation_metrics(trainer: Trainer) -> dict[str, Any]:
    """Dice, HD, HD95 and ASD per validation case and label with the trained (best) weights."""
    from engine.infer.metrics import case_metrics, summarize
    from engine.infer.predictor import Predictor, torch_logits_fn

    pred = Predictor(
        torch_logits_fn(trainer.model, trainer.device, amp=trainer.amp_dtype is not None),
        trainer.patch,
        trainer.num_classes,
        keep_largest=trainer.config.profile == "paper",
        device=trainer.device,
    )
    classes = trainer.data.foreground
    ignore = trainer.num_classes if getattr(trainer.data, "ignore_label", None) is not None else None
    per_case = {}
    for i, case in enumerate(trainer.data.val):
        labels = pred.predict_array(np.asarray(case.image, dtype=np.float32))
        ids = trainer.data.split.get("val") or []
        cid = str(getattr(case, "case_id", None) or (ids[i] if i < len(ids) else f"val_{i}"))
        per_case[cid] = case_metrics(labels, np.asarray(case.label), case.spacing, classes, ignore=ignore)
    return {"per_case": per_case, "summary": summarize(per_case)}


def write_training_folder(trainer: Trainer, result: TrainResult, out_dir: str | Path) -> Path:
    """Write DIR/training.json, weights.pt (best state_dict), curves.csv and metrics.json.

    The files are written in a temporary folder next to DIR and moved in, training.json last: a
    crash leaves no half file under a final name, and a folder with training.json is complete.
    """
    from engine.atomic import publish_files, temp_dir_near

    final = Path(out_dir)
    out = temp_dir_near(final)
    try:
        _write_training_files(trainer, result, out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    publish_files(out, final, last=["training.json"])
    return final


def _write_training_files(trainer: Trainer, result: TrainResult, out: Path) -> None:
    data = trainer.data
    plan = data.plan.to_dict() if hasattr(data.plan, "to_dict") else dict(data.plan)
    state = trainer.best_state if trainer.best_state is not None else trainer.model.state_dict()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, out / "weights.pt")
    _fault("candidate.folder")
    csv = CsvSink(out / "curves.csv")
    for r in result.curves:
        csv.log(r)
    csv.close()
    (out / "metrics.json").write_text(json.dumps(result.metrics, indent=1, allow_nan=True))
    summary = {k: v for k, v in result.to_dict().items() if k not in ("curves", "metrics")}
    summary["validation"] = result.metrics.get("summary", {})
    doc = {
        "schema_version": SCHEMA_VERSION,
        "genome": trainer.genome.to_dict(),
        "in_channels": data.in_channels,
        "num_classes": data.num_classes,
        "labels": dict(data.labels),
        "modalities": list(data.modalities),
        "plan": plan,
        "patch_size": list(trainer.patch),
        "pool_sizes": [list(p) for p in trainer.pool_sizes] if trainer.pool_sizes else None,
        "config": trainer.config.to_dict(),
        "augmentation": trainer.augmentation,
        "mirror_axes": list(trainer.augmentation["mirror_axes"]),
        "val_every": trainer.val_every,
        "dataset": data.dataset_name,
        "split": data.split,
        "metrics": summary,
        "best_epoch": result.best_epoch,
    }
    (out / "training.json").write_text(json.dumps(doc, indent=1, allow_nan=True))


def _fault(point: str) -> str | None:
    """A fault-injection point for the reliability tests (see engine.faults); free when unused."""
    if not os.environ.get("EMONAS_FAULT"):
        return None
    from engine.faults import fault

    return fault(point)


def train_candidate(
    genome: Genome,
    data: TrainingData,
    config: TrainerConfig,
    out_dir: str | Path | None = None,
    callback: Callable[[dict], None] | None = None,
    cancel=None,
) -> TrainResult:
    """Train one candidate and return its objectives, Dice per label, curves and timings.

    ``callback(event)`` receives ``{"event": "epoch", ...}`` after every epoch and
    ``{"event": "step", ...}`` every few steps; ``cancel.is_set()`` is checked every few steps
    and ends training with status "cancelled". A diverging loss raises ``TrainingFailed``.
    With ``out_dir``, the training folder is written there (best weights, curves, metrics).
    """
    logger = MetricsLogger([CallbackSink(callback)] if callback is not None else [])
    trainer = Trainer(genome, data, config, logger=logger, callback=callback, cancel=cancel)
    try:
        result = trainer.fit()
    finally:
        logger.close()
    if out_dir is not None and trainer.best_state is not None:
        with _torch_settings(trainer.device, config.num_threads):
            result.metrics = validation_metrics(trainer)
        write_training_folder(trainer, result, out_dir)
    return result
