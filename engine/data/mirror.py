"""Which axes training may mirror: none along which the labels carry a direction.

Mirroring an axis along which two labels lie in a fixed order (anterior before posterior, left
beside right) shows the network each label where the other belongs; nnU-Net's long schedules get
past it, a candidate's short training does not. The decision, per axis of the canonical RAS grid
(0 = x, left-right; 1 = y, posterior-anterior; 2 = z, inferior-superior), in this order:

1. an explicit setting wins: ``"mirror_axes"`` in the dataset's ``dataset.json`` (a list of axes as
   0/1/2 or "x"/"y"/"z"), or the plan override ``mirror_axes``;
2. label names: an axis is not mirrored when a label's name holds a word of its direction
   (left/right for x, anterior/posterior for y, superior/inferior for z, and their abbreviations);
3. the mirror test of the label maps: an axis is not mirrored when, for some pair of foreground
   labels, one label's centroid lies on the same side of the other's in at least 90 % of the cases
   holding both, by a median of at least 1.5 pooled standard deviations of their extents (mirroring
   would swap the pair's order in every such case). The statistics come from the fingerprint.

Every other axis is mirrored. The plan records the axes (``mirror_axes``) and one note per axis
saying why (``mirror_notes``); ``emonas check`` shows them.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from engine.errors import ConfigError

AXIS_NAMES = ("x", "y", "z")
#: Words of a label name that give it a direction along each RAS axis.
DIRECTION_WORDS = (
    {"left", "right", "l", "r", "lt", "rt", "lh", "rh"},
    {"anterior", "posterior", "ant", "post", "front", "back"},
    {"superior", "inferior", "sup", "inf", "upper", "lower", "top", "bottom", "cranial", "caudal"},
)
#: Mirror test: share of cases in which the pair keeps its order, and the median separation (in
#: pooled standard deviations of the two labels' extents along the axis) that make an axis directed.
ORDER_SHARE = 0.9
MIN_SEPARATION = 1.5


def parse_axes(value: Any, what: str) -> list[int]:
    """Axes given as 0/1/2 or "x"/"y"/"z" (a list, or a string such as "xy") -> sorted unique ints."""
    items = list(value) if isinstance(value, (list, tuple, str)) else None
    if items is None:
        raise ConfigError(f"{what} must be a list of axes (0, 1, 2 or x, y, z), got {value!r}")
    out = set()
    for v in items:
        if isinstance(v, str) and v.lower() in AXIS_NAMES:
            out.add(AXIS_NAMES.index(v.lower()))
        elif isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= int(v) <= 2:
            out.add(int(v))
        else:
            raise ConfigError(f"{what} must list axes as 0, 1, 2 or x, y, z, got {v!r}")
    return sorted(out)


def named_direction_axes(labels: Mapping[str, int]) -> dict[int, list[str]]:
    """Axis -> the label names that carry a direction along it."""
    out: dict[int, list[str]] = {}
    for name, value in labels.items():
        if value == 0:
            continue
        words = set(re.split(r"[^a-z]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower())) - {""}
        for axis, vocab in enumerate(DIRECTION_WORDS):
            if words & vocab:
                out.setdefault(axis, []).append(name)
    return out


def label_moments(label: np.ndarray, labels: Mapping[str, int], spacing: Sequence[float],
                  ornt: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """Centroid and standard deviation (mm, along the RAS axes) of each foreground label present.

    ``label`` holds label values in the file's voxel order, ``spacing`` its voxel size per file axis
    and ``ornt`` (nibabel's orientation of the file to RAS) where each file axis goes.
    """
    label = np.asarray(label)
    present = {name: v for name, v in labels.items() if v != 0}
    hists = []
    for axis in range(3):
        moved = np.moveaxis(label, axis, 0)
        hists.append(np.stack([np.bincount(s.ravel(), minlength=256)[:256] for s in moved]).astype(np.float64))
    out: dict[str, dict[str, list[float]]] = {}
    for name, v in present.items():
        n = hists[0][:, v].sum()
        if n == 0:
            continue
        centroid, std = [0.0] * 3, [0.0] * 3
        for src in range(3):
            h = hists[src][:, v]
            idx = np.arange(h.size, dtype=np.float64)
            c = float((idx * h).sum() / n)
            s = float(np.sqrt(max(((idx - c) ** 2 * h).sum() / n, 0.0)))
            dst, sign = int(ornt[src][0]), float(ornt[src][1])
            centroid[dst] = round(sign * c * float(spacing[src]), 3)
            std[dst] = round(s * float(spacing[src]), 3)
        out[name] = {"centroid_mm": centroid, "std_mm": std}
    return out


def ordered_axes(cases: Sequence[Mapping[str, Any]], labels: Mapping[str, int]) -> dict[int, str]:
    """The mirror test: axis -> why it is directed, from the fingerprint entries' ``label_moments``."""
    names = [n for n, v in labels.items() if v != 0]
    found: dict[int, str] = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            seps = []
            for c in cases:
                m = c.get("label_moments") or {}
                if a in m and b in m:
                    ca, cb = np.asarray(m[a]["centroid_mm"]), np.asarray(m[b]["centroid_mm"])
                    pooled = np.sqrt((np.asarray(m[a]["std_mm"]) ** 2 + np.asarray(m[b]["std_mm"]) ** 2) / 2)
                    seps.append((ca - cb) / np.maximum(pooled, 1e-6))
            if len(seps) < 2:
                continue
            seps_arr = np.array(seps)
            for axis in range(3):
                if axis in found:
                    continue
                d = seps_arr[:, axis]
                median = float(np.median(d))
                share = float(np.mean(np.sign(d) == np.sign(median))) if median else 0.0
                if share >= ORDER_SHARE and abs(median) >= MIN_SEPARATION:
                    word = ("right of", "anterior of", "superior of")[axis] if median > 0 else \
                        ("left of", "posterior of", "inferior of")[axis]
                    found[axis] = (f"'{a}' lies {word} '{b}' in {int(round(share * len(d)))} of {len(d)} cases "
                                   f"(median {abs(median):.1f} pooled SD)")
    return found


def decide_mirror_axes(cases: Sequence[Mapping[str, Any]], labels: Mapping[str, int],
                       setting: Any = None, source: str = "dataset.json") -> tuple[list[int], list[str]]:
    """(axes training may mirror, one note per axis) for fingerprint entries ``cases``; ``setting``
    (the dataset's or the plan's explicit ``mirror_axes``) decides alone when given."""
    if setting is not None:
        axes = parse_axes(setting, f"{source} mirror_axes")
        return axes, [f"{AXIS_NAMES[a]}: {'mirrored' if a in axes else 'not mirrored'} ({source} mirror_axes)"
                      for a in range(3)]
    named = named_direction_axes(labels)
    tested = ordered_axes(cases, labels)
    axes, notes = [], []
    for axis in range(3):
        if axis in named:
            notes.append(f"{AXIS_NAMES[axis]}: not mirrored (label names {', '.join(named[axis])})")
        elif axis in tested:
            notes.append(f"{AXIS_NAMES[axis]}: not mirrored ({tested[axis]})")
        else:
            axes.append(axis)
            notes.append(f"{AXIS_NAMES[axis]}: mirrored (no label carries a direction along it)")
    return axes, notes
