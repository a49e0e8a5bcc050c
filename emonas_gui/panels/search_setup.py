"""The search setup form: search space, SaMEA settings, training and resources, as point and click.

``SearchSetupForm(parent=None)`` edits an ``engine.config.SearchConfig``: ``set_config(cfg)`` fills
the widgets, ``config()`` returns a validated ``SearchConfig`` (raising the engine's ``ConfigError``
with the bad key), ``load_toml(path)`` / ``save_toml(path)`` read and write the same TOML file the
CLI reads (``emonas search --config``). Every widget has a tooltip that explains the setting.
``estimate(dataset, plan)`` computes the cost shown before starting: number of candidates, the
parameter range of the configured space, and the training memory of its largest network per step.
``changed()`` is emitted on every edit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.config import SearchConfig
from engine.errors import ConfigError, EmonasError
from engine.genome import LR_VALUES, N_CELLS_VALUES, NF1_VALUES, OPS, SearchSpace
from engine.network import count_parameters, estimate_cost, extreme_genomes
from engine.run.estimate import excluded_share

log = logging.getLogger(__name__)

_OP_TIPS = {
    "conv3d": "3D convolution (k x k x k)",
    "conv2d": "in-plane 2D convolution (k x k x 1), cheap on thick-slice data",
    "p3d": "pseudo-3D: k x k x 1 then 1 x 1 x k convolution",
    "identity": "passes the tensor through (channels tiled where the width doubles)",
}


def _tip(widget: QWidget, text: str) -> QWidget:
    widget.setToolTip(text)
    return widget


def _spin(lo: int, hi: int, value: int, tip: str) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    s.setToolTip(tip)
    return s


def _dspin(lo: float, hi: float, value: float, decimals: int, step: float, tip: str) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setDecimals(decimals)
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(value)
    s.setToolTip(tip)
    return s


@dataclass
class CostEstimate:
    """What a search will cost, shown before starting."""

    candidates: int
    min_parameters: int
    max_parameters: int
    memory_bytes: int | None  # training peak of the largest network at the patch and batch
    patch: tuple[int, int, int] | None
    batch: int | None
    note: str = ""
    excluded_by_parameters: float | None = None  # share of the space over resources.max_parameters
    max_latency_ms: float = 0.0
    wall_time: str = ""  # the calibrated estimate (engine.run.estimate), when computed

    def text(self) -> str:
        mem = ("unknown until the plan is known" if not self.note else "unknown") if self.memory_bytes is None else \
            f"{self.memory_bytes / 2**20:,.0f} MiB per candidate (largest network, patch " \
            f"{'x'.join(map(str, self.patch or ()))}, batch {self.batch})"
        limits = ""
        if self.excluded_by_parameters is not None:
            limits += f" The parameter limit excludes {100 * self.excluded_by_parameters:.0f} % of the space."
        if self.max_latency_ms:
            limits += (f" The latency limit ({self.max_latency_ms:g} ms) excludes the genomes predicted slower; "
                       "the wall-time estimate measures a few genomes and says its share of the space.")
        return (f"At most {self.candidates} candidates trained; networks of "
                f"{self.min_parameters:,} to {self.max_parameters:,} parameters; training memory up to {mem}."
                + limits + (f" Note: {self.note}." if self.note else "")
                + (f"\nWall time: {self.wall_time}" if self.wall_time else ""))


class SearchSetupForm(QWidget):
    """Form over a SearchConfig with validation and tooltips."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._base = SearchConfig()
        lay = QVBoxLayout(self)
        lay.addWidget(self._space_box())
        lay.addWidget(self._samea_box())
        lay.addWidget(self._training_box())
        lay.addWidget(self._resources_box())
        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet("color: #c0392b;")
        lay.addWidget(self.problem)
        lay.addStretch(1)
        self.set_config(self._base)
        for w in self.findChildren(QWidget):
            for sig in ("toggled", "valueChanged", "currentIndexChanged", "textChanged"):
                if hasattr(w, sig) and isinstance(w, (QCheckBox, QSpinBox, QDoubleSpinBox, QComboBox, QLineEdit)):
                    try:
                        getattr(w, sig).connect(self._on_edit)
                    except (AttributeError, TypeError):
                        pass

    # ---- building ----------------------------------------------------------------------------
    def _space_box(self) -> QGroupBox:
        box = QGroupBox("Search space")
        grid = QGridLayout(box)
        grid.addWidget(QLabel("Operations"), 1, 0, Qt.AlignmentFlag.AlignTop)
        ops = QGridLayout()
        self.op_checks: dict[str, QCheckBox] = {}
        for i, op in enumerate(OPS):
            cb = QCheckBox(op)
            cb.setToolTip(f"{_OP_TIPS[op.split('_')[0]]}; allowed for every node of the cell")
            self.op_checks[op] = cb
            ops.addWidget(cb, i // 2, i % 2)
        grid.addLayout(ops, 1, 1, 4, 3)
        grid.addWidget(_tip(QLabel("Cells"), "number of cells = 2 x pooling levels + 1"), 5, 0)
        self.cell_checks = {n: _tip(QCheckBox(str(n)), f"{n} cells: {(n - 1) // 2} pooling levels") for n in N_CELLS_VALUES}
        for i, cb in enumerate(self.cell_checks.values()):
            grid.addWidget(cb, 5, 1 + i)
        grid.addWidget(_tip(QLabel("Filters at level 0"), "nf1: filters of the first cell; doubles at each level"), 6, 0)
        self.nf1_checks = {n: _tip(QCheckBox(str(n)), f"nf1 = {n}") for n in NF1_VALUES}
        for i, cb in enumerate(self.nf1_checks.values()):
            grid.addWidget(cb, 6, 1 + i)
        grid.addWidget(_tip(QLabel("Learning rate"), "Adam learning rate range (grid {1..9} x {1e-5, 1e-4, 1e-3})"), 7, 0)
        self.lr_min = QComboBox()
        self.lr_max = QComboBox()
        for c, tip in ((self.lr_min, "smallest learning rate searched"), (self.lr_max, "largest learning rate searched")):
            c.addItems([f"{v:g}" for v in LR_VALUES])
            c.setToolTip(tip)
        grid.addWidget(self.lr_min, 7, 1)
        grid.addWidget(QLabel("to"), 7, 2)
        grid.addWidget(self.lr_max, 7, 3)
        return box

    def _samea_box(self) -> QGroupBox:
        box = QGroupBox("Search algorithm")
        f = QFormLayout(box)
        self.strategy = QComboBox()
        self.strategy.addItems(["samea", "moead", "random"])
        self.strategy.setToolTip("samea: surrogate-assisted MOEA/D (the paper); moead: plain MOEA/D; random: random search")
        f.addRow("Strategy", self.strategy)
        self.population = _spin(2, 500, 10, "N: subproblems (weight vectors) and genomes per generation")
        f.addRow("Population", self.population)
        self.generations = _spin(1, 1000, 40, "G: generations including the initial one")
        f.addRow("Generations", self.generations)
        self.learning = _spin(0, 1000, 10, "generations of the learning phase (plain MOEA/D) before exploitation")
        f.addRow("Learning phase", self.learning)
        self.neighbours = _spin(1, 500, 3, "T: neighbourhood size of each subproblem")
        f.addRow("Neighbourhood", self.neighbours)
        self.surrogate = _tip(QCheckBox("random-forest surrogate pre-screening"),
                              "exploitation phase: predict children's error with a random forest and train "
                              "only promising ones (off: every child is trained)")
        f.addRow("Surrogate", self.surrogate)
        self.theta = _dspin(0.0, 100.0, 0.001, 4, 0.001, "PBI penalty theta (distance from the weight vector)")
        f.addRow("PBI theta", self.theta)
        self.alpha = _dspin(0.0, 10.0, 0.25, 3, 0.05, "alpha: weight of the training Dice loss in f1")
        f.addRow("alpha", self.alpha)
        self.beta = _dspin(0.0, 10.0, 0.25, 3, 0.05, "beta: weight of late convergence (E - e_max) / E in f1")
        f.addRow("beta", self.beta)
        self.seed = _spin(0, 2**31 - 1, 0, "seed of every random choice; the same seed gives the same search")
        f.addRow("Seed", self.seed)
        self.objective = QComboBox()
        for label, key in (("parameters (the paper's)", "parameters"), ("inference FLOPs", "flops"),
                           ("measured latency", "latency")):
            self.objective.addItem(label, key)
        self.objective.setToolTip(
            "second objective beside segmentation error: log parameter count (the paper's), log inference FLOPs "
            "of one patch, or log latency measured segmenting the plan's median volume on the latency target")
        f.addRow("Second objective", self.objective)
        self.latency_target = QComboBox()
        self.latency_target.addItems(["cpu", "cuda"])
        self.latency_target.setToolTip("where latency is measured: cpu (ONNX Runtime, fixed threads) or cuda "
                                       "(PyTorch, bf16); used by the latency objective and the latency limit")
        f.addRow("Latency target", self.latency_target)
        return box

    def _training_box(self) -> QGroupBox:
        box = QGroupBox("Training of each candidate")
        f = QFormLayout(box)
        self.epochs = _spin(1, 10000, 120, "maximum epochs per candidate")
        f.addRow("Epochs", self.epochs)
        self.patience = _spin(1, 10000, 20, "stop when validation Dice has not improved for this many epochs")
        f.addRow("Patience", self.patience)
        self.patch_from_plan = _tip(QCheckBox("from the plan"), "use the patch size the dataset's plan chose")
        self.patch = [_spin(4, 1024, 32, "patch size on this axis (divisible by 2^levels)") for _ in range(3)]
        prow = QHBoxLayout()
        prow.addWidget(self.patch_from_plan)
        for s in self.patch:
            prow.addWidget(s)
        self.patch_from_plan.toggled.connect(lambda on: [s.setEnabled(not on) for s in self.patch])
        f.addRow("Patch", prow)
        self.batch = _spin(0, 256, 0, "patches per step; 0 = the plan's batch size")
        self.batch.setSpecialValueText("from plan")
        f.addRow("Batch", self.batch)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.device.setToolTip("auto: CUDA when a GPU is present, else the CPU")
        f.addRow("Device", self.device)
        self.amp = _tip(QCheckBox("mixed precision (CUDA only)"), "bf16/fp16 autocast on CUDA; ignored on the CPU")
        f.addRow("", self.amp)
        self.profile = QComboBox()
        self.profile.addItems(["default", "paper"])
        self.profile.setToolTip("paper: the authors' protocol (batch 2, 2x2x2 pooling at every level, early stopping on the "
                                "validation loss, plateau LR schedule, their augmentation, soft Dice); "
                                "default: Dice + CE, nnU-Net-style augmentation, the plan's pooling and batch")
        f.addRow("Profile", self.profile)
        return box

    def _resources_box(self) -> QGroupBox:
        box = QGroupBox("Resources")
        f = QFormLayout(box)
        self.executor = QComboBox()
        self.executor.addItems(["inprocess", "local", "ray"])
        self.executor.setToolTip("inprocess: one candidate at a time in this app; local: several worker processes; ray: a Ray cluster")
        f.addRow("Executor", self.executor)
        self.workers = _spin(1, 256, 1, "candidates trained at the same time (local and Ray executors)")
        f.addRow("Workers", self.workers)
        self.ray_address = QLineEdit()
        self.ray_address.setPlaceholderText("empty: start Ray on this machine")
        self.ray_address.setToolTip("address of a running Ray cluster, e.g. 10.0.0.5:6379 (only with the Ray executor)")
        f.addRow("Ray address", self.ray_address)
        self.executor.currentTextChanged.connect(self._sync_resources)
        self.max_parameters = _spin(0, 2**31 - 1, 0, "never train networks with more parameters; 0 = no limit")
        self.max_parameters.setSpecialValueText("no limit")
        self.max_parameters.setSingleStep(10000)
        f.addRow("Max parameters", self.max_parameters)
        self.max_latency = _dspin(0.0, 1e7, 0.0, 1, 10.0, "never train networks slower than this on the latency "
                                  "target (ms; measured before training); 0 = no limit")
        self.max_latency.setSpecialValueText("no limit")
        f.addRow("Max latency (ms)", self.max_latency)
        return box

    def _sync_resources(self, *_: Any) -> None:
        ex = self.executor.currentText()
        self.workers.setEnabled(ex != "inprocess")
        self.ray_address.setEnabled(ex == "ray")

    def _on_edit(self, *_: Any) -> None:
        try:
            self.config()
            self.problem.setText("")
        except EmonasError as exc:
            self.problem.setText(str(exc))
        self.changed.emit()

    # ---- config in/out -----------------------------------------------------------------------
    def set_config(self, cfg: SearchConfig) -> None:
        """Fill the widgets from ``cfg``."""
        self._base = cfg
        space = cfg.space.search_space()
        ops = set(space.op1) | set(space.op2) | set(space.op3) | set(space.op4)
        for op, cb in self.op_checks.items():
            cb.setChecked(op in ops)
        for n, cb in self.cell_checks.items():
            cb.setChecked(n in space.n_cells)
        for n, cb in self.nf1_checks.items():
            cb.setChecked(n in space.nf1)
        self.lr_min.setCurrentIndex(LR_VALUES.index(min(space.lr)))
        self.lr_max.setCurrentIndex(LR_VALUES.index(max(space.lr)))
        s, t, r = cfg.samea, cfg.training, cfg.resources
        self.strategy.setCurrentText(s.strategy)
        self.population.setValue(s.population)
        self.generations.setValue(s.generations)
        self.learning.setValue(s.learning_generations)
        self.neighbours.setValue(s.neighbourhood)
        self.surrogate.setChecked(bool(s.prescreen))
        self.theta.setValue(s.theta)
        self.seed.setValue(cfg.seed)
        self.objective.setCurrentIndex(max(0, self.objective.findData(s.objective)))
        self.latency_target.setCurrentText(s.latency_target)
        self.max_parameters.setValue(int(min(cfg.resources.max_parameters, 2**31 - 1)))
        self.max_latency.setValue(float(cfg.resources.max_latency_ms))
        self.alpha.setValue(t.alpha)
        self.beta.setValue(t.beta)
        self.epochs.setValue(t.epochs)
        self.patience.setValue(t.patience)
        patch = list(t.patch_size or [])
        self.patch_from_plan.setChecked(not patch)
        for sp, v in zip(self.patch, patch or (32, 32, 32)):
            sp.setValue(int(v))
        for sp in self.patch:
            sp.setEnabled(bool(patch))
        self.batch.setValue(int(t.batch_size or 0))
        self.amp.setChecked(bool(t.extra.get("amp", True)))
        self.profile.setCurrentText(cfg.profile)
        dev = r.device if r.device in ("auto", "cpu", "cuda") else r.device
        if self.device.findText(dev) < 0:
            self.device.addItem(dev)
        self.device.setCurrentText(dev)
        self.executor.setCurrentText(r.executor)
        self.workers.setValue(r.workers)
        self.ray_address.setText(r.ray_address or "")
        self._sync_resources()

    def space(self) -> SearchSpace:
        """The search space the widgets describe; raises ConfigError when a gene has no value."""
        ops = tuple(op for op, cb in self.op_checks.items() if cb.isChecked())
        lo, hi = sorted((self.lr_min.currentIndex(), self.lr_max.currentIndex()))
        base = self._base.space.search_space()
        if not ops:
            raise ConfigError("space.op1..op4: tick at least one operation")
        cells = tuple(n for n, cb in self.cell_checks.items() if cb.isChecked())
        nf1 = tuple(n for n, cb in self.nf1_checks.items() if cb.isChecked())
        if not cells:
            raise ConfigError("space.n_cells: tick at least one cell count")
        if not nf1:
            raise ConfigError("space.nf1: tick at least one filter count")
        return SearchSpace(in2=base.in2, in3=base.in3, in4=base.in4, op1=ops, op2=ops, op3=ops, op4=ops,
                           n_cells=cells, nf1=nf1, lr=LR_VALUES[lo:hi + 1])

    def config(self) -> SearchConfig:
        """A validated SearchConfig from the widgets; raises ConfigError naming the bad key."""
        full = SearchSpace().to_dict()
        # a gene keeping all of the paper's values is written as [] (the TOML's "no restriction")
        space = {g: (v if v != full[g] else []) for g, v in self.space().to_dict().items()}
        extra = dict(self._base.training.extra)
        extra["amp"] = self.amp.isChecked()
        return self._base.with_profile(self.profile.currentText()).replace(
            seed=self.seed.value(),
            space=space,
            samea={
                "strategy": self.strategy.currentText(),
                "population": self.population.value(),
                "generations": self.generations.value(),
                "learning_generations": self.learning.value(),
                "neighbourhood": self.neighbours.value(),
                "prescreen": self.surrogate.isChecked(),
                "theta": self.theta.value(),
                "objective": self.objective.currentData(),
                "latency_target": self.latency_target.currentText(),
            },
            training={
                "epochs": self.epochs.value(),
                "patience": self.patience.value(),
                "patch_size": [] if self.patch_from_plan.isChecked() else [s.value() for s in self.patch],
                "batch_size": self.batch.value(),
                "alpha": self.alpha.value(),
                "beta": self.beta.value(),
                "extra": extra,
            },
            resources={
                "executor": self.executor.currentText(),
                "workers": self.workers.value(),
                "device": self.device.currentText(),
                "ray_address": self.ray_address.text().strip(),
                "max_parameters": self.max_parameters.value(),
                "max_latency_ms": self.max_latency.value(),
            },
        )

    def load_toml(self, path: str | Path) -> SearchConfig:
        """Read a search config TOML (the CLI's ``--config`` file) into the form."""
        cfg = SearchConfig.load(path)
        self.set_config(cfg)
        self._on_edit()
        return cfg

    def save_toml(self, path: str | Path) -> SearchConfig:
        """Validate the form and write it as TOML to ``path``."""
        cfg = self.config()
        cfg.save(path)
        return cfg

    # ---- cost ----------------------------------------------------------------------------
    def estimate(self, in_channels: int = 1, num_classes: int = 2,
                 patch: tuple[int, int, int] | None = None, batch: int | None = None) -> CostEstimate:
        """Cost of the configured search (see ``search_cost``); the form's overrides win over the plan's."""
        return search_cost(self.config(), in_channels, num_classes, patch, batch)


def search_cost(cfg: SearchConfig, in_channels: int = 1, num_classes: int = 2,
                patch: tuple[int, int, int] | None = None, batch: int | None = None,
                pools: Callable[[int], Sequence[Sequence[int]]] | None = None) -> CostEstimate:
    """What ``cfg`` will cost on data with ``in_channels`` and ``num_classes``.

    ``patch`` / ``batch`` are the plan's, used unless the config overrides them; ``pools(n_levels)``
    the plan's per-level pooling (``Plan.pool_sizes_for``; None: 2x2x2 everywhere). The parameter
    range comes from the space's smallest and largest networks (``engine.network.extreme_genomes``, a
    few seconds for the paper's whole space: call it off the GUI thread), the memory from the
    largest one's training step. When the largest network cannot pool the patch that deep, the
    memory is left unknown and ``note`` says that such genomes will be skipped, as the search does.
    """
    space = cfg.space.search_space()
    small, large = extreme_genomes(space)
    if cfg.training.patch_size:
        patch = tuple(cfg.training.patch_size)  # type: ignore[assignment]
    batch = cfg.training.batch_size or batch or 2

    def pooling(g):
        try:
            return None if pools is None else pools(g.n_levels)
        except EmonasError:
            return None

    mem, note = None, ""
    if patch is not None:
        try:
            mem = estimate_cost(large, in_channels, num_classes, patch, batch=batch,
                                pool_sizes=pooling(large)).training_bytes
        except EmonasError as exc:
            note = f"the deepest networks cannot pool this patch ({exc}); the search skips them"
    excluded = None
    if cfg.resources.max_parameters:
        excluded = excluded_share(space, lambda g: count_parameters(g, in_channels, num_classes, pooling(g))
                                  > cfg.resources.max_parameters)
    return CostEstimate(
        excluded_by_parameters=excluded,
        max_latency_ms=cfg.resources.max_latency_ms,
        candidates=cfg.samea.population * cfg.samea.generations,
        min_parameters=count_parameters(small, in_channels, num_classes, pooling(small)),
        max_parameters=count_parameters(large, in_channels, num_classes, pooling(large)),
        memory_bytes=mem,
        patch=None if patch is None else tuple(patch),
        batch=batch,
        note=note,
    )
