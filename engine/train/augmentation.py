"""Augmentation of image and label together, in two named profiles.

The random parameters of every sample are drawn with numpy from the sampler's seeded Generator (so a
run is reproducible and the draw can run in a loader thread); the voxel work runs in torch on the
training device, on the whole batch where it can:

- spatial (rotation, scaling, shift, flips): one affine map per sample from output voxel to source
  voxel, in millimetres so rotations stay rigid on anisotropic grids; the sampler crops just the
  source region the map reads, and ``apply_spatial`` resamples it with ``grid_sample`` (linear for
  the image, nearest for the label). Samples without a spatial transform are plain crops;
- intensity (brightness, contrast, gamma, Gaussian noise): vectorized over the batch.

Profiles:
- ``paper`` (EMONAS-Net's Keras ImageDataGenerator): always an in-plane rotation of +-90 degrees,
  shift up to 40 % of the patch in-plane, zoom of x and y each drawn uniform in [0.5, 1.5] (Keras'
  ``zoom_range``: the factor multiplies source coordinates, z unchanged), horizontal (x) flip with
  p = 0.5; no intensity augmentation.
- ``default`` (nnU-Net-style at full strength): rotation +-30 degrees (about every axis, or only
  in-plane when the spacing is more than 3x anisotropic) with p = 0.2, scaling 0.7-1.4 with
  p = 0.2, mirroring of each allowed axis with p = 0.5, brightness x0.75-1.25 (p = 0.15), contrast
  x0.75-1.25 (p = 0.15), gamma 0.7-1.5 (p = 0.3), Gaussian noise of variance up to 0.1 (p = 0.1).

What the default profile trains with (``training_augmentation``):

- mirroring only along the axes the plan allows (``Plan.mirror_axes``: none along which the labels
  carry a direction, see ``engine.data.mirror``), or the training config's ``mirror_axes``;
- a strength that grows with the training budget (``augmentation``: "auto", the default): the
  probabilities of mirroring, rotation, scaling and the intensity changes are those above times
  ``strength = clip((steps - LIGHT_STEPS) / (STRONG_STEPS - LIGHT_STEPS), 0, 1)``, ``steps`` being the
  planned optimizer steps (epochs x iterations per epoch). A search candidate (tens of epochs of a
  few dozen steps) trains "light" (no augmentation but the patches' random placement), a long final
  training at nnU-Net's strength (the final retraining of a run asks for "strong"). Every one of
  them slows down what a short training learns; they pay over long schedules on varied subjects,
  which a set of one warped anatomy cannot show (BENCHMARKS.md, "accuracy per minute", records what
  was measured: mirroring even the left-right axis cost a 480-step training 0.03 - 0.04 of Dice on
  the hippocampus set, whose structure is one side's). "light" and "strong" fix the strength at 0
  or 1. Axes named in the training config's ``mirror_axes`` are mirrored with p = 0.5 whatever the
  strength: the user asked for them.

The paper profile keeps its own fixed augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentationProfile:
    """Probabilities and ranges of one profile (see the module docstring)."""

    name: str
    p_rotate: float
    max_rotation_deg: float
    in_plane_only: bool
    p_scale: float
    scale_range: tuple[float, float]  # > 1 magnifies (reads a smaller source region)
    shift_fraction: float  # in-plane shift, as a fraction of the patch
    flip_axes: tuple[int, ...]
    p_flip: float
    p_brightness: float
    brightness_range: tuple[float, float]
    p_contrast: float
    contrast_range: tuple[float, float]
    p_gamma: float
    gamma_range: tuple[float, float]
    p_noise: float
    max_noise_variance: float
    keras_zoom: bool = False  # scale_range is Keras' zoom_range: x and y each times U(range), z kept


PAPER = AugmentationProfile(
    name="paper", p_rotate=1.0, max_rotation_deg=90.0, in_plane_only=True, p_scale=1.0,
    scale_range=(0.5, 1.5), shift_fraction=0.4, flip_axes=(0,), p_flip=0.5,
    p_brightness=0.0, brightness_range=(1.0, 1.0), p_contrast=0.0, contrast_range=(1.0, 1.0),
    p_gamma=0.0, gamma_range=(1.0, 1.0), p_noise=0.0, max_noise_variance=0.0, keras_zoom=True,
)

DEFAULT = AugmentationProfile(
    name="default", p_rotate=0.2, max_rotation_deg=30.0, in_plane_only=False, p_scale=0.2,
    scale_range=(0.7, 1.4), shift_fraction=0.0, flip_axes=(0, 1, 2), p_flip=0.5,
    p_brightness=0.15, brightness_range=(0.75, 1.25), p_contrast=0.15, contrast_range=(0.75, 1.25),
    p_gamma=0.3, gamma_range=(0.7, 1.5), p_noise=0.1, max_noise_variance=0.1,
)

PROFILES = {"paper": PAPER, "default": DEFAULT}
#: Planned steps at or below which the default profile trains light (no augmentation), and at or above
#: which it trains at full strength; linear in between.
LIGHT_STEPS = 2000
STRONG_STEPS = 20000
STRENGTHS = ("auto", "light", "strong")


def strength_for(setting: str, steps: int) -> float:
    """The augmentation strength (0 light .. 1 nnU-Net's) of ``setting`` for ``steps`` planned steps."""
    if setting == "light":
        return 0.0
    if setting == "strong":
        return 1.0
    return float(min(1.0, max(0.0, (steps - LIGHT_STEPS) / (STRONG_STEPS - LIGHT_STEPS))))


def scaled_profile(profile: AugmentationProfile, strength: float, flip_axes, flip_strength: float | None = None
                   ) -> AugmentationProfile:
    """``profile`` with the probabilities of rotation, scaling and intensity changes times ``strength``
    and mirroring of ``flip_axes`` only, with its probability times ``flip_strength`` (default
    ``strength``); no axis is listed when that probability is 0 (what test-time mirroring reads)."""
    s = float(strength)
    p_flip = profile.p_flip * (s if flip_strength is None else float(flip_strength))
    axes = tuple(int(a) for a in flip_axes) if p_flip > 0 else ()
    return replace(
        profile, flip_axes=axes, p_flip=p_flip if axes else 0.0,
        p_rotate=profile.p_rotate * s, p_scale=profile.p_scale * s, p_brightness=profile.p_brightness * s,
        p_contrast=profile.p_contrast * s, p_gamma=profile.p_gamma * s, p_noise=profile.p_noise * s,
    )


def training_augmentation(profile_name: str, setting: str, mirror_axes, plan_mirror_axes, steps: int
                          ) -> tuple[AugmentationProfile, dict]:
    """The augmentation a training uses and its record (for training.json): the paper profile as it
    is; the default one scaled to the budget, mirroring the plan's axes as often as the strength says,
    or ``mirror_axes`` (given: the user's choice) at the profile's own probability."""
    base = PROFILES[profile_name]
    if profile_name == "paper":
        prof, strength = base, None
    else:
        axes = plan_mirror_axes if mirror_axes is None else mirror_axes
        strength = strength_for(setting, steps)
        prof = scaled_profile(base, strength, sorted(int(a) for a in axes), None if mirror_axes is None else 1.0)
    record = {"profile": profile_name, "setting": setting, "strength": strength, "planned_steps": int(steps),
              "mirror_axes": list(prof.flip_axes), "p_flip": prof.p_flip, "p_rotate": prof.p_rotate,
              "p_scale": prof.p_scale, "p_brightness": prof.p_brightness, "p_contrast": prof.p_contrast,
              "p_gamma": prof.p_gamma, "p_noise": prof.p_noise}
    return prof, record


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@dataclass
class SpatialParams:
    """Affine map of one sample: source voxel offset = ``matrix @ (output voxel - centre) + shift``."""

    matrix: np.ndarray  # (3, 3), voxels to voxels
    shift: np.ndarray  # (3,), in source voxels
    flips: tuple[bool, bool, bool]


def draw_spatial(
    profile: AugmentationProfile, rng: np.random.Generator, spacing: Sequence[float], patch: Sequence[int]
) -> SpatialParams:
    """Draw one sample's spatial transform; ``matrix`` is the identity when none applies."""
    spacing = np.asarray(spacing, float)
    m = np.eye(3)
    transformed = False
    if profile.p_rotate and rng.random() < profile.p_rotate:
        limit = math.radians(profile.max_rotation_deg)
        in_plane = profile.in_plane_only or spacing.max() > 3 * spacing.min()
        axes = (2,) if in_plane else (0, 1, 2)
        for axis in axes:
            m = _rotation(axis, float(rng.uniform(-limit, limit))) @ m
        transformed = True
    if profile.p_scale and rng.random() < profile.p_scale:
        if profile.keras_zoom:
            m = m @ np.diag([*rng.uniform(*profile.scale_range, 2), 1.0])
        else:
            m = m / float(rng.uniform(*profile.scale_range))
        transformed = True
    shift = np.zeros(3)
    if profile.shift_fraction:
        shift[:2] = rng.uniform(-profile.shift_fraction, profile.shift_fraction, 2) * np.asarray(patch[:2], float)
    flips = [False, False, False]
    for axis in profile.flip_axes:
        flips[axis] = bool(rng.random() < profile.p_flip)
    if transformed:
        # output voxel -> mm -> rotate/scale -> source voxel
        m = np.diag(1 / spacing) @ m @ np.diag(spacing)
    return SpatialParams(matrix=m if transformed else np.eye(3), shift=np.round(shift) if not transformed else shift,
                         flips=tuple(flips))  # type: ignore[arg-type]


def is_identity(p: SpatialParams) -> bool:
    return bool(np.array_equal(p.matrix, np.eye(3)) and not np.any(p.shift % 1))


def source_extent(p: SpatialParams, patch: Sequence[int]) -> np.ndarray:
    """Half-size (voxels, per axis) of the source region the transformed patch reads, plus a margin."""
    corners = np.array(np.meshgrid(*[[-(n // 2), n - 1 - n // 2] for n in patch], indexing="ij")).reshape(3, -1)
    reach = np.abs(p.matrix @ corners).max(axis=1) + np.abs(p.shift)
    return np.ceil(reach).astype(int) + 1


@dataclass
class IntensityParams:
    """Per-sample intensity factors for a batch (1 / 0 where a transform does not apply)."""

    brightness: np.ndarray
    contrast: np.ndarray
    gamma: np.ndarray
    noise_std: np.ndarray


def draw_intensity(profile: AugmentationProfile, rng: np.random.Generator, n: int) -> IntensityParams:
    def factor(p: float, lo_hi: tuple[float, float]) -> np.ndarray:
        hit = rng.random(n) < p
        return np.where(hit, rng.uniform(*lo_hi, n), 1.0)

    brightness = factor(profile.p_brightness, profile.brightness_range)
    contrast = factor(profile.p_contrast, profile.contrast_range)
    gamma = factor(profile.p_gamma, profile.gamma_range)
    noise_hit = rng.random(n) < profile.p_noise
    noise_std = np.where(noise_hit, np.sqrt(rng.uniform(0, profile.max_noise_variance, n)), 0.0)
    return IntensityParams(brightness, contrast, gamma, noise_std)


_GRID_CACHE: dict[tuple, torch.Tensor] = {}


def _centred_grid(patch: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    key = (patch, str(device))
    g = _GRID_CACHE.get(key)
    if g is None:
        # output voxel o reads source offset o - n // 2 from the centre voxel, as a plain crop does
        axes = [torch.arange(n, dtype=torch.float32, device=device) - n // 2 for n in patch]
        g = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        _GRID_CACHE[key] = g
    return g


def apply_spatial(
    image: torch.Tensor, label: torch.Tensor, p: SpatialParams, patch: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample one sample's source crop (C, ...) and label (...) around the crop's centre voxel."""
    dev = image.device
    m = torch.as_tensor(p.matrix, dtype=torch.float32, device=dev)
    flips = torch.tensor([-1.0 if f else 1.0 for f in p.flips], device=dev)
    centre = torch.tensor([n // 2 for n in image.shape[1:]], dtype=torch.float32, device=dev)
    src = (_centred_grid(patch, dev) * flips) @ m.T + torch.as_tensor(p.shift, dtype=torch.float32, device=dev) + centre
    # grid_sample wants (z, y, x) order for a (N, C, X, Y, Z) tensor, normalized to [-1, 1]
    norm = 2 * src / (torch.tensor(image.shape[1:], dtype=torch.float32, device=dev) - 1).clamp(min=1) - 1
    grid = norm.flip(-1).reshape(1, *patch, 3)
    out_img = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    out_lab = F.grid_sample(label[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=True)
    return out_img, out_lab[0, 0].to(label.dtype)


def apply_intensity(images: torch.Tensor, p: IntensityParams, generator: torch.Generator | None) -> torch.Tensor:
    """Brightness, contrast, gamma and noise on a batch (N, C, X, Y, Z), sample by sample."""
    dev, dt = images.device, images.dtype
    shape = (-1,) + (1,) * (images.dim() - 1)

    def col(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=dt, device=dev).reshape(shape)

    if np.any(p.brightness != 1):
        images = images * col(p.brightness)
    if np.any(p.contrast != 1):
        mean = images.mean(dim=tuple(range(1, images.dim())), keepdim=True)
        images = (images - mean) * col(p.contrast) + mean
    if np.any(p.gamma != 1):
        dims = tuple(range(1, images.dim()))
        lo, hi = images.amin(dim=dims, keepdim=True), images.amax(dim=dims, keepdim=True)
        rng = (hi - lo).clamp(min=1e-7)
        images = ((images - lo) / rng).clamp(min=0).pow(col(p.gamma)) * rng + lo
    if np.any(p.noise_std > 0):
        noise = torch.randn(images.shape, generator=generator, device=dev, dtype=dt)
        images = images + noise * col(p.noise_std)
    return images
