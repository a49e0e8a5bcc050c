"""Patch sampling from preprocessed cases, with foreground oversampling, and the batch loader.

As nnU-Net does, the last third of every batch (at least one sample when the batch has two or more)
is centred on a random voxel of a random foreground class present in the case; the other samples
are centred uniformly where the patch fits inside the volume. Volumes smaller than the patch are
padded with zeros (image) and background (label).

The sampler only crops (numpy, on small regions: cheap) and draws the augmentation parameters; the
resampling and intensity work happen on the training device (``Batch.to_device``). A ``BatchLoader``
thread prepares the next batches while the network trains, on CPU and CUDA alike.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from engine.train.augmentation import (
    AugmentationProfile,
    IntensityParams,
    SpatialParams,
    apply_intensity,
    apply_spatial,
    draw_intensity,
    draw_spatial,
    is_identity,
    source_extent,
)

#: Foreground voxels remembered per class and case (a random subset of larger structures).
MAX_FOREGROUND_LOCATIONS = 20000


def crop_padded(array: np.ndarray, start: Sequence[int], size: Sequence[int], pad_value: float = 0) -> np.ndarray:
    """``array[..., start:start+size]`` over the last three axes, padded where it leaves the volume."""
    spatial = array.shape[-3:]
    out = np.full(array.shape[:-3] + tuple(size), pad_value, dtype=array.dtype)
    src, dst = [], []
    for s, n, dim in zip(start, size, spatial):
        lo, hi = max(s, 0), min(s + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[(..., *dst)] = array[(..., *src)]
    return out


def foreground_locations(label: np.ndarray, num_classes: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Voxel coordinates (n, 3) of each foreground class present in ``label``."""
    label = np.asarray(label)
    out = {}
    for k in range(1, num_classes):
        idx = np.flatnonzero(label.reshape(-1) == k)
        if idx.size == 0:
            continue
        if idx.size > MAX_FOREGROUND_LOCATIONS:
            idx = np.sort(rng.choice(idx, MAX_FOREGROUND_LOCATIONS, replace=False))
        out[k] = np.stack(np.unravel_index(idx, label.shape), axis=1).astype(np.int32)
    return out


@dataclass
class Batch:
    """One batch on the host: fixed-size crops, plus larger source crops for spatially augmented samples."""

    images: np.ndarray  # (N, C, X, Y, Z) float32
    labels: np.ndarray  # (N, X, Y, Z) uint8
    spatial: dict[int, tuple[np.ndarray, np.ndarray, SpatialParams]] = field(default_factory=dict)
    intensity: IntensityParams | None = None

    def to_device(
        self, device: torch.device, patch: tuple[int, int, int], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Move to ``device`` and apply the augmentation there; returns (images, labels as int64)."""
        cuda = device.type == "cuda"

        def move(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a)
            return t.pin_memory().to(device, non_blocking=True) if cuda else t

        images, labels = move(self.images), move(self.labels)
        for i, (img, lab, p) in self.spatial.items():
            images[i], labels[i] = apply_spatial(move(img), move(lab), p, patch)
        if self.intensity is not None:
            images = apply_intensity(images, self.intensity, generator)
        return images, labels.long()


class PatchSampler:
    """Draws augmented training batches from in-memory (or memory-mapped) cases.

    ``cases``: objects with ``.image`` (C, X, Y, Z) float32, ``.label`` (X, Y, Z) with class
    indices and ``.spacing``. All randomness comes from ``rng``.
    """

    def __init__(
        self,
        cases: Sequence,
        patch: Sequence[int],
        batch_size: int,
        num_classes: int,
        profile: AugmentationProfile,
        rng: np.random.Generator,
        oversample_foreground: float = 1 / 3,
    ):
        if not cases:
            raise ValueError("no training cases to sample from")
        self.cases = list(cases)
        self.patch = tuple(int(p) for p in patch)
        self.batch_size = int(batch_size)
        self.profile = profile
        self.rng = rng
        self.n_random = int(round(self.batch_size * (1 - oversample_foreground)))
        if self.batch_size >= 2:
            self.n_random = min(self.n_random, self.batch_size - 1)
        self.fg = [foreground_locations(c.label, num_classes, rng) for c in self.cases]

    def centre_range(self, shape) -> tuple[np.ndarray, np.ndarray]:
        """The lowest and highest centre of a patch that stays inside a volume of ``shape`` (its middle
        where the volume is smaller than the patch): where random patches are centred."""
        shape, half = np.asarray(shape), np.asarray(self.patch) // 2
        return np.minimum(half, shape // 2), np.maximum(shape - (np.asarray(self.patch) - half), shape // 2)

    def _centre(self, case_index: int, force_fg: bool) -> np.ndarray:
        fg = self.fg[case_index]
        if force_fg and fg:  # a foreground voxel, even near the edge: the patch may reach past it
            k = list(fg)[int(self.rng.integers(len(fg)))]
            locs = fg[k]
            return locs[int(self.rng.integers(len(locs)))].astype(int)
        lo, hi = self.centre_range(self.cases[case_index].label.shape)
        return np.array([int(self.rng.integers(a, b + 1)) for a, b in zip(lo, hi)])

    def sample(self) -> Batch:
        """One batch of ``batch_size`` samples."""
        n, patch = self.batch_size, self.patch
        first = self.cases[0]
        images = np.empty((n, first.image.shape[0], *patch), np.float32)
        labels = np.empty((n, *patch), np.uint8)
        spatial = {}
        half = np.asarray(patch) // 2
        for i in range(n):
            ci = int(self.rng.integers(len(self.cases)))
            case = self.cases[ci]
            centre = self._centre(ci, force_fg=i >= self.n_random)
            p = draw_spatial(self.profile, self.rng, case.spacing, patch)
            if is_identity(p):
                start = centre + p.shift.astype(int) - half
                img = crop_padded(case.image, start, patch)
                lab = crop_padded(case.label, start, patch)
                flip = tuple(a for a, f in enumerate(p.flips) if f)
                if flip:
                    img = np.flip(img, axis=tuple(a + 1 for a in flip))
                    lab = np.flip(lab, axis=flip)
                images[i], labels[i] = img, lab
            else:
                ext = source_extent(p, patch)
                start = centre - ext
                size = 2 * ext + 1
                img = crop_padded(case.image, start, size).astype(np.float32, copy=False)
                lab = crop_padded(case.label, start, size).astype(np.uint8, copy=False)
                spatial[i] = (np.ascontiguousarray(img), np.ascontiguousarray(lab), p)
        intensity = draw_intensity(self.profile, self.rng, n)
        has_intensity = any(
            np.any(a != v) for a, v in ((intensity.brightness, 1), (intensity.contrast, 1), (intensity.gamma, 1), (intensity.noise_std, 0))
        )
        return Batch(images, labels, spatial, intensity if has_intensity else None)


class BatchLoader:
    """Iterates ``sampler.sample()`` batches, prepared ahead in one background thread when asked.

    ``prefetch`` > 0 starts a thread that keeps up to that many batches ready. The thread only runs
    the sampler (numpy: patch choice, crops, flips, the augmentation's random parameters), so the
    batch sequence is the same as without it for a given seed. The torch part of the augmentation
    (``Batch.to_device``) stays on the training thread: torch's intra-op thread count is one
    process-wide setting, so torch work in a second thread would run a second team of OpenMP threads
    beside the training's and slow both (BENCHMARKS.md, "Training loop").

    Use as a context manager (or call ``close``) so the thread always ends, at the end of training
    and on an exception alike; an exception raised by the sampler in the thread is raised by the
    next call to ``next``.
    """

    #: Name of the loader threads (for the tests' check that none is left behind).
    THREAD_NAME = "emonas-batch-loader"

    def __init__(self, sampler: PatchSampler, prefetch: int = 0):
        self.sampler = sampler
        self.prefetch = int(prefetch)
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if self.prefetch > 0:
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._thread = threading.Thread(target=self._work, name=self.THREAD_NAME, daemon=True)
            self._thread.start()

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self.sampler.sample()
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.1)  # type: ignore[union-attr]
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # surfaced in next()
            self._error = exc
            self._stop.set()

    def next(self) -> Batch:
        """The next batch (waits for the thread when it is behind)."""
        if self._queue is None:
            return self.sampler.sample()
        while True:
            if self._thread is None:
                raise RuntimeError("the batch loader is closed")
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._error is not None:
                    raise self._error

    def close(self) -> None:
        """Stop the thread and wait for it (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> "BatchLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
