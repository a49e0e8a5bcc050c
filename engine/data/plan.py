"""Fingerprint of a dataset and the preprocessing / training plan derived from it, nnU-Net style.

The fingerprint lists, per case, the shape and spacing (in the canonical RAS orientation), the
size of the non-zero region, foreground intensity statistics and voxel counts per label. The plan
derived from it (versioned JSON, every field overridable):

- ``target_spacing``: the median spacing; on a strongly anisotropic axis (spacing > 3x the others
  and fewer than a third of the voxels) the 10th percentile instead, as nnU-Net does;
- ``resampling``: cubic splines for images, per-label linear for label maps; when the target spacing
  is anisotropic, ``separate_z`` (nnU-Net's "separate z"): the spline within each slice and nearest
  neighbour along the thick slice axis, so nothing is interpolated across thick slices;
- ``normalization``: one entry per modality: z-score per case for MRI (inside the non-zero region
  when cropping removed much), for CT clipping to the foreground's 0.5/99.5 percentiles then
  z-score with the dataset's foreground mean and std;
- ``patch_size``: the median case at the target spacing, rounded to the nearest multiple of the
  pooling of the deepest network (``patch_rule`` "median"; "nnunet" rounds up, as nnU-Net does, so
  the patch covers the median case; docs/data.md says why the nearest multiple is the default)
  (``pool_schedule``, 4 levels; an axis is pooled while it keeps at least 4 voxels and its
  spacing is within 2x the finest), shrunk until a large network of the search space trains within
  the memory budget; ``batch_size``: 2, more when memory allows and the batch covers under 5% of the data;
- ``mirror_axes``: the RAS axes training may mirror, none along which the labels carry a direction
  (``engine.data.mirror``), with ``mirror_notes`` saying why for each axis.
- ``pooling``: ``adaptive`` (the rule above) or ``paper`` (the EMONAS-Net protocol: 2x2x2 at every
  level, the patch rounded to a multiple of 2^4 on every axis, cases smaller than it padded by the
  sampler, batch 2).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from engine.data.cache import cache_root, digest, file_signature, write_json_atomic
from engine.data.io import DEFAULT_MEMORY_BUDGET, max_voxels
from engine.data.mirror import decide_mirror_axes, parse_axes
from engine.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_LEVELS = 4
ANISOTROPY = 3.0
MIN_FEATURE_MAP = 4
MAX_PATCH_AXIS = 256
POOLINGS = ("adaptive", "paper")
FINGERPRINT_VERSION = 2  # 2: label centroids and extents (label_moments) for the mirror test

Triple = tuple


def _ct_like(modality: str) -> bool:
    words = modality.replace("-", " ").replace("_", " ").lower().split()
    return "ct" in words or modality.lower() in ("ct", "cect", "ncct")


@dataclass
class Plan:
    """How to preprocess a dataset and the patch and batch sizes to train on it."""

    target_spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    batch_size: int
    normalization: list[dict]
    pool_schedule: list[tuple[int, int, int]]
    modalities: list[str]
    labels: dict[str, int]
    orientation: str = "RAS"
    resampling: dict = field(default_factory=lambda: {"image_order": 3, "label": "linear_per_label"})
    crop_to_nonzero: bool = True
    median_shape: tuple[int, int, int] = (0, 0, 0)
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET
    dataset: str = ""
    overrides: list[str] = field(default_factory=list)
    mirror_axes: tuple[int, ...] = (0, 1, 2)
    mirror_notes: list[str] = field(default_factory=list)
    patch_rule: str = "median"
    pooling: str = "adaptive"  # or "paper": 2x2x2 at every level
    schema_version: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def in_channels(self) -> int:
        return len(self.modalities)

    def pool_sizes_for(self, n_levels: int) -> list[tuple[int, int, int]]:
        """Per-level (x, y, z) max-pool factors of a network with ``n_levels`` poolings (1 to 4)."""
        if not isinstance(n_levels, int) or not 1 <= n_levels <= len(self.pool_schedule):
            raise ConfigError(f"n_levels must be between 1 and {len(self.pool_schedule)}, got {n_levels!r}")
        return [tuple(p) for p in self.pool_schedule[:n_levels]]  # type: ignore[misc]

    def preprocessing_key(self) -> str:
        """Hash of the fields that change preprocessed arrays (not patch or batch size)."""
        d = self.to_dict()
        keep = ("target_spacing", "orientation", "normalization", "resampling", "crop_to_nonzero", "labels", "modalities")
        return digest({k: d[k] for k in keep})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target_spacing"] = [float(v) for v in self.target_spacing]
        d["patch_size"] = [int(v) for v in self.patch_size]
        d["median_shape"] = [int(v) for v in self.median_shape]
        d["pool_schedule"] = [[int(v) for v in p] for p in self.pool_schedule]
        d["mirror_axes"] = [int(v) for v in self.mirror_axes]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        """A plan from its JSON form; ``ConfigError`` on a wrong version or malformed field."""
        if not isinstance(data, Mapping):
            raise ConfigError("a plan must be a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ConfigError(f"plan schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
        try:
            plan = cls(
                target_spacing=_floats3(data["target_spacing"], "target_spacing"),
                patch_size=_ints3(data["patch_size"], "patch_size"),
                batch_size=int(data["batch_size"]),
                normalization=[dict(n) for n in data["normalization"]],
                pool_schedule=[tuple(int(v) for v in p) for p in data["pool_schedule"]],  # type: ignore[misc]
                modalities=[str(m) for m in data["modalities"]],
                labels=_labels(data["labels"]),
                orientation=str(data.get("orientation", "RAS")),
                resampling=dict(data.get("resampling", {"image_order": 3, "label": "linear_per_label"})),
                crop_to_nonzero=bool(data.get("crop_to_nonzero", True)),
                median_shape=tuple(int(v) for v in data.get("median_shape", (0, 0, 0))),  # type: ignore[arg-type]
                memory_budget_bytes=int(data.get("memory_budget_bytes", DEFAULT_MEMORY_BUDGET)),
                dataset=str(data.get("dataset", "")),
                overrides=[str(o) for o in data.get("overrides", [])],
                # plans written before the mirror decision: training mirrored every axis
                mirror_axes=tuple(parse_axes(data.get("mirror_axes", [0, 1, 2]), "plan mirror_axes")),
                mirror_notes=[str(n) for n in data.get("mirror_notes", [])],
                patch_rule=str(data.get("patch_rule", "median")),
                pooling=str(data.get("pooling", "adaptive")),
            )
        except KeyError as exc:
            raise ConfigError(f"plan lacks the field {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"malformed plan ({exc})") from None
        plan.validate()
        return plan

    def validate(self) -> "Plan":
        if self.pooling not in POOLINGS:
            raise ConfigError(f"plan pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.pooling == "paper" and any(tuple(p) != (2, 2, 2) for p in self.pool_schedule):
            raise ConfigError("a plan with pooling 'paper' pools 2x2x2 at every level")
        if self.orientation != "RAS":
            raise ConfigError(f"plan orientation must be 'RAS', got {self.orientation!r}")
        if len(self.normalization) != len(self.modalities):
            raise ConfigError(f"plan has {len(self.normalization)} normalization entries for {len(self.modalities)} modalities")
        for n in self.normalization:
            if n.get("scheme") not in ("zscore", "ct", "none"):
                raise ConfigError(f"normalization scheme must be 'zscore', 'ct' or 'none', got {n.get('scheme')!r}")
            if n["scheme"] == "ct" and not all(k in n for k in ("clip_low", "clip_high", "mean", "std")):
                raise ConfigError("a 'ct' normalization needs clip_low, clip_high, mean and std")
        if self.patch_rule not in PATCH_RULES:
            raise ConfigError(f"patch_rule must be one of {', '.join(PATCH_RULES)}, got {self.patch_rule!r}")
        for i, n in enumerate(self.normalization):
            for key in ("clip_low", "clip_high", "mean", "std", "clip_sigma"):
                v = n.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v)):
                    raise ConfigError(f"normalization[{i}].{key} must be a finite number, got {v!r}")
            if n["scheme"] == "ct" and (n["std"] <= 0 or n["clip_low"] > n["clip_high"]):
                raise ConfigError(f"normalization[{i}] needs std > 0 and clip_low <= clip_high, got {n!r}")
        if not 1 <= self.batch_size <= 4096:
            raise ConfigError(f"batch_size must be between 1 and 4096, got {self.batch_size}")
        if self.memory_budget_bytes <= 0:
            raise ConfigError(f"memory_budget_bytes must be positive, got {self.memory_budget_bytes}")
        patch_voxels = int(np.prod([int(v) for v in self.patch_size], dtype=object)) * self.batch_size
        if patch_voxels * (len(self.modalities) + len(self.labels)) > max_voxels(self.memory_budget_bytes):
            raise ConfigError(f"patch_size {list(self.patch_size)} x batch {self.batch_size} exceeds the limit of "
                              f"{max_voxels(self.memory_budget_bytes):,} voxels over all channels (memory budget "
                              f"{self.memory_budget_bytes / 2**30:.3g} GiB / 16 bytes per voxel)")
        if self.resampling.get("image_order") not in (0, 1, 2, 3):
            raise ConfigError(f"resampling image_order must be 0..3, got {self.resampling.get('image_order')!r}")
        if self.resampling.get("label") not in ("nearest", "linear_per_label"):
            raise ConfigError(f"resampling label must be 'nearest' or 'linear_per_label', got {self.resampling.get('label')!r}")
        if not isinstance(self.resampling.get("separate_z", False), bool):
            raise ConfigError(f"resampling separate_z must be true or false, got {self.resampling.get('separate_z')!r}")
        if len(self.pool_schedule) != MAX_LEVELS or any(len(p) != 3 or any(v not in (1, 2) for v in p) for p in self.pool_schedule):
            raise ConfigError(f"pool_schedule must list {MAX_LEVELS} triples of 1 or 2")
        for axis in range(3):
            d = int(np.prod([p[axis] for p in self.pool_schedule]))
            if self.patch_size[axis] % d:
                raise ConfigError(
                    f"patch_size {list(self.patch_size)} is not divisible by {d} on axis {'xyz'[axis]} "
                    f"(pooling {[list(p) for p in self.pool_schedule]}); try {_round_to(self.patch_size, self.pool_schedule)}"
                )
        return self

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Plan":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except OSError as exc:
            raise DataError(path, f"cannot read plan ({exc.strerror or exc})") from None
        except json.JSONDecodeError as exc:
            raise DataError(path, f"plan is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        except ConfigError as exc:
            raise DataError(path, str(exc)) from None


def _labels(raw: Mapping) -> dict[str, int]:
    """A plan's {name: value} labels; a value that is not an integer in 0..255 is refused, never rounded."""
    out = {}
    for name, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255:
            raise ConfigError(f"labels: label {name!r} has value {v!r}; label values are integers in 0..255")
        out[str(name)] = v
    return out


def _floats3(v, name) -> tuple[float, float, float]:
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be three numbers, got {v!r}") from None
    if len(vals) != 3 or not all(np.isfinite(vals)) or min(vals) <= 0:
        raise ConfigError(f"{name} must be three positive numbers, got {v!r}")
    return vals  # type: ignore[return-value]


def _ints3(v, name) -> tuple[int, int, int]:
    try:
        vals = tuple(int(x) for x in v)
        if any(float(x) != int(x) for x in v):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be three integers, got {v!r}") from None
    if len(vals) != 3 or min(vals) < 1:
        raise ConfigError(f"{name} must be three positive integers, got {v!r}")
    return vals  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------- fingerprint


def dataset_fingerprint(dataset, progress: Callable[[int, int, str], None] | None = None,
                        entries: Mapping[str, dict] | None = None) -> dict:
    """Per-case statistics of ``dataset`` (reads every voxel once; cached by the files' signatures).

    ``entries`` (case id -> fingerprint entry from ``inspect_case``) spares reading cases already read.
    """
    from engine.data.validate import inspect_case

    sigs = [[c.case_id, [file_signature(p) for p in c.image_paths], file_signature(c.label_path) if c.label_path else None]
            for c in dataset.cases]
    key = digest([FINGERPRINT_VERSION, dataset.modalities, dataset.labels, sigs])
    path = cache_root() / "fingerprints" / f"{key}.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("ignoring unreadable cached fingerprint %s", path)
    cases = []
    for i, case in enumerate(dataset.cases):
        if entries and case.case_id in entries:
            cases.append(entries[case.case_id])
            continue
        report = inspect_case(case, dataset.modalities, dataset.labels)
        fatal = [p for p in report.problems if p.fatal]
        if fatal:
            raise DataError(fatal[0].path, fatal[0].message)
        cases.append(report.fingerprint)
        if progress:
            progress(i + 1, len(dataset.cases), case.case_id)
    fp = {"version": FINGERPRINT_VERSION, "modalities": list(dataset.modalities), "labels": dict(dataset.labels),
          "cases": cases}
    write_json_atomic(path, fp)
    return fp


# ---------------------------------------------------------------------------------------- plan rules


def target_spacing_rule(spacings: np.ndarray, sizes: np.ndarray) -> list[float]:
    """nnU-Net's target spacing: the median, except on a strongly anisotropic axis (10th percentile)."""
    target = np.percentile(spacings, 50, axis=0)
    size = np.percentile(sizes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    aniso_spacing = target[worst] > ANISOTROPY * max(target[a] for a in others)
    aniso_voxels = size[worst] * ANISOTROPY < min(size[a] for a in others)
    if aniso_spacing and aniso_voxels:
        t = float(np.percentile(spacings[:, worst], 10))
        if t < max(target[a] for a in others):
            t = max(target[a] for a in others) + 1e-5
        target[worst] = t
    return [float(round(v, 5)) for v in target]


def pool_schedule_for(spacing, shape, levels: int = MAX_LEVELS) -> list[tuple[int, int, int]]:
    """Per-level pooling: an axis is pooled while it keeps >= 4 voxels and is within 2x the finest spacing."""
    sp = [float(s) for s in spacing]
    sh = [int(s) for s in shape]
    out = []
    for _ in range(levels):
        finest = min(sp)
        pool = tuple(2 if sh[a] >= 2 * MIN_FEATURE_MAP and sp[a] <= 2 * finest else 1 for a in range(3))
        out.append(pool)
        sh = [s // p for s, p in zip(sh, pool)]
        sp = [s * p for s, p in zip(sp, pool)]
    return out  # type: ignore[return-value]


def _divisors(schedule) -> list[int]:
    return [int(np.prod([p[a] for p in schedule])) for a in range(3)]


def _round_to(shape, schedule, up: bool = False) -> list[int]:
    if up:
        return [max(d, -(-int(s) // d) * d) for s, d in zip(shape, _divisors(schedule))]
    return [max(d, int(round(s / d)) * d) for s, d in zip(shape, _divisors(schedule))]


_REF_GENOME = None


def _reference_genome():
    """A large network of the search space (the paper's hippocampus cell, 9 cells) to size patches with."""
    global _REF_GENOME
    if _REF_GENOME is None:
        from engine.genome import PAPER_GENOMES

        _REF_GENOME = PAPER_GENOMES["hippocampus"].replace(n_cells=9)
    return _REF_GENOME


def _training_bytes(patch, schedule, batch, in_channels, num_classes) -> int:
    from engine.network.cost import estimate_cost

    return estimate_cost(_reference_genome(), in_channels, num_classes, patch, batch=batch,
                         pool_sizes=schedule).training_bytes


def _fit_patch(median_shape, spacing, budget, in_channels, num_classes, rule: str = "median") -> tuple[list[int], list]:
    """The patch rule: the median shape rounded to the pooling ("median": to the nearest multiple;
    "nnunet": up), then shrunk, largest axis relative to the median first, into the memory budget."""
    start = [min(max(1, int(round(s))), MAX_PATCH_AXIS) for s in median_shape]
    schedule = pool_schedule_for(spacing, start)
    patch = _round_to(start, schedule, up=rule == "nnunet")
    while _training_bytes(patch, schedule, 2, in_channels, num_classes) > budget:
        # shrink the axis that is largest relative to the median case (nnU-Net's rule)
        divs = _divisors(schedule)
        ratios = [p / m if p > d else -1 for p, m, d in zip(patch, median_shape, divs)]
        axis = int(np.argmax(ratios))
        if ratios[axis] < 0:
            log.warning("even the smallest patch %s exceeds the memory budget of %d bytes", patch, budget)
            break
        patch[axis] -= divs[axis]
        new = pool_schedule_for(spacing, patch)
        if new != schedule:  # fewer poolings now fit: keep the patch divisible by the new schedule
            schedule = new
            patch = [max(d, (p // d) * d) for p, d in zip(patch, _divisors(schedule))]
    return patch, schedule


def _ct_entry(cases: list[dict], ch: int, name: str) -> dict:
    """Clip to the dataset's foreground 0.5/99.5 percentiles, then z-score with its foreground mean and std."""
    sample = np.concatenate([np.asarray(c["intensity"][ch]["sample"], float) for c in cases])
    return {"modality": name, "scheme": "ct", "clip_low": float(np.percentile(sample, 0.5)),
            "clip_high": float(np.percentile(sample, 99.5)), "mean": float(sample.mean()),
            "std": float(max(sample.std(), 1e-8))}


def _normalization(cases: list[dict], modalities: list[str], given=None) -> list[dict]:
    full = np.array([np.prod(c["ras_shape"]) for c in cases], float)
    crop = np.array([np.prod(c["crop_shape"]) for c in cases], float)
    use_mask = bool(np.median(crop / full) < 0.75)  # nnU-Net: cropping removed a lot -> normalize inside
    if given is None:
        given = [None] * len(modalities)
    else:
        given = [given] * len(modalities) if isinstance(given, (Mapping, str)) else list(given)
        if len(given) != len(modalities):
            raise ConfigError(f"normalization override needs {len(modalities)} entries (one per modality), got {len(given)}")
    out = []
    for ch, (name, new) in enumerate(zip(modalities, given)):
        new = {"scheme": new} if isinstance(new, str) else dict(new or {})
        scheme = new.get("scheme") or ("ct" if _ct_like(name) else "zscore")
        if scheme == "ct":
            entry = _ct_entry(cases, ch, name)
        else:
            entry = {"modality": name, "scheme": scheme, "use_nonzero_mask": use_mask}
        entry.update(new)
        out.append(entry)
    return out


PLAN_FIELDS = ("target_spacing", "patch_size", "batch_size", "normalization", "resampling", "crop_to_nonzero",
               "orientation", "memory_budget_bytes", "mirror_axes", "patch_rule", "pooling")
PATCH_RULES = ("median", "nnunet")


def make_plan(dataset, memory_budget_bytes: int | None = None, overrides: Mapping[str, Any] | None = None,
              fingerprint: dict | None = None) -> Plan:
    """The plan for ``dataset`` (computing its fingerprint unless given); ``overrides`` replace any field."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(PLAN_FIELDS))
    if unknown:
        raise ConfigError(f"unknown plan field(s) {', '.join(unknown)}; fields: {', '.join(PLAN_FIELDS)}")
    budget = int(overrides.get("memory_budget_bytes") or memory_budget_bytes or DEFAULT_MEMORY_BUDGET)
    if budget <= 0:
        raise ConfigError(f"memory budget must be positive, got {budget}")
    fp = fingerprint if fingerprint is not None else dataset_fingerprint(dataset)
    cases = fp["cases"]
    if not cases:
        raise DataError(dataset.root, "no usable case to plan from")
    spacings = np.array([c["ras_spacing"] for c in cases], float)
    crops = np.array([c["crop_shape"] for c in cases], float)
    if "target_spacing" in overrides:
        target = list(_floats3(overrides["target_spacing"], "target_spacing"))
    else:
        target = target_spacing_rule(spacings, crops)
    crop_to_nonzero = bool(overrides.get("crop_to_nonzero", True))
    sizes = crops if crop_to_nonzero else np.array([c["ras_shape"] for c in cases], float)
    median = np.median(sizes * spacings / np.array(target), axis=0)
    median_shape = tuple(int(round(v)) for v in median)
    anisotropic = max(target) > ANISOTROPY * min(target)
    # anisotropic: cubic in-plane, nearest across the thick slices (plans saved without the key: all axes alike)
    resampling = {"image_order": 3, "label": "linear_per_label", "separate_z": bool(anisotropic)}
    resampling.update(dict(overrides.get("resampling", {})))
    norm = _normalization(cases, dataset.modalities, overrides.get("normalization"))
    in_ch, n_cls = len(dataset.modalities), len(dataset.labels)
    patch_rule = str(overrides.get("patch_rule", "median"))
    if patch_rule not in PATCH_RULES:
        raise ConfigError(f"patch_rule must be one of {', '.join(PATCH_RULES)}, got {patch_rule!r}")
    pooling = str(overrides.get("pooling", "adaptive"))
    if pooling not in POOLINGS:
        raise ConfigError(f"plan pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if pooling == "paper":
        schedule = [(2, 2, 2)] * MAX_LEVELS
        if "patch_size" in overrides:
            patch = list(_ints3(overrides["patch_size"], "patch_size"))
        else:  # the median case rounded to a multiple of 16 by the patch rule (smaller cases are padded)
            patch = _round_to([min(max(1, int(round(s))), MAX_PATCH_AXIS) for s in median], schedule,
                              up=patch_rule == "nnunet")
    elif "patch_size" in overrides:
        patch = list(_ints3(overrides["patch_size"], "patch_size"))
        schedule = pool_schedule_for(target, patch)
    else:
        patch, schedule = _fit_patch(median, target, budget, in_ch, n_cls, patch_rule)
    if "batch_size" in overrides or pooling == "paper":
        batch = int(overrides.get("batch_size", 2))
    else:
        total = float(np.sum(np.prod(sizes * spacings / np.array(target), axis=1)))
        vox = float(np.prod(patch))
        batch = 2
        while (batch + 1) * vox <= 0.05 * total and batch < 64 and \
                _training_bytes(patch, schedule, batch + 1, in_ch, n_cls) <= budget:
            batch += 1
    if "mirror_axes" in overrides:
        mirror, notes = decide_mirror_axes(cases, dataset.labels, overrides["mirror_axes"], "plan override")
    else:
        mirror, notes = decide_mirror_axes(cases, dataset.labels, getattr(dataset, "mirror_axes", None))
    plan = Plan(
        target_spacing=tuple(target),  # type: ignore[arg-type]
        patch_size=tuple(patch),  # type: ignore[arg-type]
        batch_size=batch,
        normalization=norm,
        pool_schedule=[tuple(p) for p in schedule],  # type: ignore[misc]
        modalities=list(dataset.modalities),
        labels=dict(dataset.labels),
        orientation=str(overrides.get("orientation", "RAS")),
        resampling=resampling,
        crop_to_nonzero=crop_to_nonzero,
        median_shape=median_shape,
        memory_budget_bytes=budget,
        dataset=str(getattr(dataset, "name", "")),
        overrides=sorted(overrides),
        mirror_axes=tuple(mirror),
        mirror_notes=notes,
        patch_rule=patch_rule,
        pooling=pooling,
    )
    return plan.validate()
