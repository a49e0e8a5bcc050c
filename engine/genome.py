"""The EMONAS-Net genome: ten categorical genes, and the search space over them.

A genome describes one network of the search space (see ``engine.network.build_network``):
the wiring of the 4-node cell (``in2``, ``in3``, ``in4``), the operation of each node
(``op1`` .. ``op4``), the number of cells, the number of filters at level 0 and the Adam
learning rate. Its JSON form is stable plain data (no Python import paths)::

    {"in2": 1, "in3": 0, "in4": 2, "op1": "p3d_3x3x3", "op2": "conv3d_3x3x3",
     "op3": "conv2d_5x5x1", "op4": "conv3d_1x1x1", "n_cells": 7, "nf1": 32, "lr": 0.0003}
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from engine.errors import GenomeError

#: The operation vocabulary, kernel sizes in (x, y, z) order; z is the slice axis.
OPS: tuple[str, ...] = (
    "conv3d_1x1x1",
    "conv3d_3x3x3",
    "conv3d_5x5x5",
    "conv2d_3x3x1",
    "conv2d_5x5x1",
    "conv2d_7x7x1",
    "p3d_3x3x3",
    "p3d_5x5x5",
    "p3d_7x7x7",
    "identity",
)

#: Gene names in their canonical order.
GENE_NAMES: tuple[str, ...] = ("in2", "in3", "in4", "op1", "op2", "op3", "op4", "n_cells", "nf1", "lr")

#: The 27 learning rates {1..9} x {1e-5, 1e-4, 1e-3}, ascending.
LR_VALUES: tuple[float, ...] = tuple(
    float(f"{m}e{e}") for e in (-5, -4, -3) for m in range(1, 10)
)

N_CELLS_VALUES: tuple[int, ...] = (5, 7, 9)
NF1_VALUES: tuple[int, ...] = (8, 16, 32)

_PAPER_VALUES: dict[str, tuple] = {
    "in2": (0, 1),
    "in3": (0, 1, 2),
    "in4": (0, 1, 2, 3),
    "op1": OPS,
    "op2": OPS,
    "op3": OPS,
    "op4": OPS,
    "n_cells": N_CELLS_VALUES,
    "nf1": NF1_VALUES,
    "lr": LR_VALUES,
}


def snap_lr(value: float) -> float:
    """Return the grid learning rate equal to ``value`` within a relative 1e-6, else raise."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise GenomeError(f"lr must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise GenomeError(f"lr must be a positive number, got {value!r}")
    for grid in LR_VALUES:
        if abs(v - grid) <= 1e-6 * grid:
            return grid
    raise GenomeError(f"lr {value!r} is not one of the 27 grid values {{1..9}} x {{1e-5, 1e-4, 1e-3}}")


@dataclass(frozen=True)
class Genome:
    """One architecture of the EMONAS-Net space; validated on construction, immutable, hashable."""

    in2: int
    in3: int
    in4: int
    op1: str
    op2: str
    op3: str
    op4: str
    n_cells: int
    nf1: int
    lr: float

    def __post_init__(self) -> None:
        for name, limit in (("in2", 1), ("in3", 2), ("in4", 3)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= limit:
                raise GenomeError(f"{name} must be an integer in 0..{limit}, got {v!r}")
            object.__setattr__(self, name, int(v))
        for name in ("op1", "op2", "op3", "op4"):
            v = getattr(self, name)
            if v not in OPS:
                raise GenomeError(f"{name} must be one of {', '.join(OPS)}; got {v!r}")
        if isinstance(self.n_cells, bool) or self.n_cells not in N_CELLS_VALUES:
            raise GenomeError(f"n_cells must be one of 5, 7, 9; got {self.n_cells!r}")
        object.__setattr__(self, "n_cells", int(self.n_cells))
        if isinstance(self.nf1, bool) or self.nf1 not in NF1_VALUES:
            raise GenomeError(f"nf1 must be one of 8, 16, 32; got {self.nf1!r}")
        object.__setattr__(self, "nf1", int(self.nf1))
        object.__setattr__(self, "lr", snap_lr(self.lr))

    # ---- derived -------------------------------------------------------------------------
    @property
    def n_levels(self) -> int:
        """Number of pooling levels n_c (n_cells = 2 * n_c + 1)."""
        return (self.n_cells - 1) // 2

    @property
    def ops(self) -> tuple[str, str, str, str]:
        return (self.op1, self.op2, self.op3, self.op4)

    @property
    def inputs(self) -> tuple[int, int, int, int]:
        """Input of each node: node 1 always reads the cell input (0)."""
        return (0, self.in2, self.in3, self.in4)

    # ---- plain data ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_json(self) -> str:
        """The stable JSON form, genes in canonical order."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Genome":
        if not isinstance(data, Mapping):
            raise GenomeError(f"a genome must be a JSON object, got {type(data).__name__}")
        missing = [g for g in GENE_NAMES if g not in data]
        extra = [k for k in data if k not in GENE_NAMES]
        if missing:
            raise GenomeError(f"genome is missing gene(s): {', '.join(missing)}")
        if extra:
            raise GenomeError(f"genome has unknown gene(s): {', '.join(map(str, extra))}")
        return cls(**{g: data[g] for g in GENE_NAMES})

    @classmethod
    def from_json(cls, text: str) -> "Genome":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenomeError(f"genome is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "Genome":
        d = self.to_dict()
        d.update(changes)
        return Genome(**d)

    def __str__(self) -> str:
        return self.to_json()


def load_genome(spec: str | os.PathLike) -> Genome:
    """A genome from a JSON string or from a JSON file's path; raises ``GenomeError``."""
    text = str(spec)
    if text.lstrip().startswith("{"):
        return Genome.from_json(text)
    path = Path(text)
    if not path.is_file():
        raise GenomeError(f"{text}: not a genome JSON string nor an existing file")
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GenomeError(f"{path}: cannot read genome file ({exc})") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise GenomeError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, Mapping) and "genome" in data and isinstance(data["genome"], Mapping):
        data = data["genome"]  # accept training.json / model.json style files
    try:
        return Genome.from_dict(data)
    except GenomeError as exc:
        raise GenomeError(f"{path}: {exc}") from None


#: Named genomes from the paper's "Best Hyperparameter Values" table.
PAPER_GENOMES: dict[str, Genome] = {
    "prostate": Genome(1, 0, 2, "p3d_3x3x3", "conv3d_3x3x3", "conv2d_5x5x1", "conv3d_1x1x1", 7, 32, 3e-4),
    "hippocampus": Genome(0, 1, 1, "conv3d_3x3x3", "p3d_3x3x3", "p3d_3x3x3", "conv2d_5x5x1", 7, 32, 4e-4),
    "cardiac": Genome(0, 1, 3, "conv2d_3x3x1", "p3d_3x3x3", "conv3d_1x1x1", "conv2d_7x7x1", 7, 32, 4e-4),
}


@dataclass(frozen=True)
class SearchSpace:
    """The values each gene may take. Defaults are the paper's; a user may restrict any gene.

    Genes are encoded as integer indices into ``values(gene)`` for the search operators and the
    surrogate (``encode`` / ``decode``).
    """

    in2: tuple[int, ...] = _PAPER_VALUES["in2"]
    in3: tuple[int, ...] = _PAPER_VALUES["in3"]
    in4: tuple[int, ...] = _PAPER_VALUES["in4"]
    op1: tuple[str, ...] = OPS
    op2: tuple[str, ...] = OPS
    op3: tuple[str, ...] = OPS
    op4: tuple[str, ...] = OPS
    n_cells: tuple[int, ...] = N_CELLS_VALUES
    nf1: tuple[int, ...] = NF1_VALUES
    lr: tuple[float, ...] = LR_VALUES

    def __post_init__(self) -> None:
        for g in GENE_NAMES:
            raw = getattr(self, g)
            if isinstance(raw, (str, int, float)):
                raw = (raw,)
            vals = list(raw)
            if not vals:
                raise GenomeError(f"search space: gene {g} has no allowed value")
            allowed = _PAPER_VALUES[g]
            norm = []
            for v in vals:
                if g == "lr":
                    v = snap_lr(v)
                if v not in allowed or isinstance(v, bool):
                    raise GenomeError(f"search space: {v!r} is not a valid value of gene {g}")
                if v not in norm:
                    norm.append(v)
            # keep the canonical order so that indices are stable
            norm.sort(key=allowed.index)
            object.__setattr__(self, g, tuple(norm))

    # ---- queries -------------------------------------------------------------------------
    def values(self, gene: str) -> tuple:
        if gene not in GENE_NAMES:
            raise GenomeError(f"unknown gene {gene!r}")
        return getattr(self, gene)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(len(self.values(g)) for g in GENE_NAMES)

    def size(self) -> int:
        """Number of distinct genomes in the space."""
        return int(np.prod([len(self.values(g)) for g in GENE_NAMES], dtype=object))

    def contains(self, genome: Genome) -> bool:
        return all(getattr(genome, g) in self.values(g) for g in GENE_NAMES)

    def validate(self, genome: Genome) -> Genome:
        """Return ``genome`` if it lies in the space, else raise ``GenomeError`` naming the gene."""
        for g in GENE_NAMES:
            if getattr(genome, g) not in self.values(g):
                raise GenomeError(
                    f"gene {g}={getattr(genome, g)!r} is outside the search space (allowed: {list(self.values(g))})"
                )
        return genome

    # ---- encoding ------------------------------------------------------------------------
    def encode(self, genome: Genome) -> tuple[int, ...]:
        self.validate(genome)
        return tuple(self.values(g).index(getattr(genome, g)) for g in GENE_NAMES)

    def decode(self, indices: Sequence[int]) -> Genome:
        if len(indices) != len(GENE_NAMES):
            raise GenomeError(f"expected {len(GENE_NAMES)} gene indices, got {len(indices)}")
        kw = {}
        for g, i in zip(GENE_NAMES, indices):
            vals = self.values(g)
            if not 0 <= int(i) < len(vals):
                raise GenomeError(f"index {i} out of range for gene {g}")
            kw[g] = vals[int(i)]
        return Genome(**kw)

    def sample(self, rng: np.random.Generator) -> Genome:
        """One genome drawn uniformly; ``rng`` is required (no hidden global seed)."""
        return self.decode([int(rng.integers(n)) for n in self.cardinalities])

    def enumerate_structures(self) -> Iterator[Genome]:
        """Every genome of the space with the smallest learning rate (lr does not change size)."""
        genes = [g for g in GENE_NAMES if g != "lr"]
        for combo in itertools.product(*(self.values(g) for g in genes)):
            yield Genome(**dict(zip(genes, combo)), lr=self.lr[0])

    # ---- plain data ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, list]:
        return {g: list(self.values(g)) for g in GENE_NAMES}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "SearchSpace":
        data = dict(data or {})
        unknown = [k for k in data if k not in GENE_NAMES]
        if unknown:
            raise GenomeError(f"search space: unknown gene(s) {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in data.items()})
