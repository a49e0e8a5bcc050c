"""Whole-volume prediction: sliding window with overlap and Gaussian weighting, mirroring TTA,
per-class largest-component post-processing, and label maps back in the source geometry.

The network call is pluggable: everything here runs on a ``logits_fn`` that maps a float32 batch
(N, C, X, Y, Z) to logits (N, K, X, Y, Z). ``torch_logits_fn`` makes one from a torch module;
``numpy_logits_fn`` adapts a function on numpy arrays (an ONNX Runtime session, say), so another
backend reuses the whole pipeline through ``Predictor(logits_fn, ...)``.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

log = logging.getLogger(__name__)

LogitsFn = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]


def torch_logits_fn(model: torch.nn.Module, device: str | torch.device = "cpu", amp: bool = False) -> LogitsFn:
    """A ``logits_fn`` running ``model`` on ``device`` (eval mode, no autograd; bf16/fp16 autocast on CUDA if ``amp``)."""
    device = torch.device(device)
    model.eval()
    use_amp = amp and device.type == "cuda"
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16

    def fn(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=use_amp):
            return model(x.to(device)).float()

    return fn


def numpy_logits_fn(fn: Callable[[np.ndarray], np.ndarray]) -> LogitsFn:
    """Adapt a function on numpy float32 arrays (N, C, X, Y, Z) -> (N, K, X, Y, Z) to a ``logits_fn``."""

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        out = fn(np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32))
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)

    return wrapped


def as_float_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A float32 tensor of ``image``; read-only arrays (memory-mapped cache) are copied first."""
    if isinstance(image, np.ndarray):
        image = np.asarray(image, dtype=np.float32)
        if not image.flags.writeable:
            image = image.copy()
    return torch.as_tensor(image, dtype=torch.float32)


def sliding_window_logits(
    fn: LogitsFn,
    image: np.ndarray | torch.Tensor,
    patch: Sequence[int],
    overlap: float = 0.5,
    gaussian: bool = True,
    mirror: bool | Sequence[int] = False,
    batch_size: int = 2,
) -> torch.Tensor:
    """Logits (K, X, Y, Z) of a whole volume (C, X, Y, Z) from patch-sized windows.

    Windows overlap by ``overlap`` and are blended with a Gaussian weight (sigma = patch / 8, as
    nnU-Net) or uniformly; a volume smaller than the patch is padded and cropped back (MONAI's
    ``sliding_window_inference``). ``mirror`` averages over the flips of the given spatial axes (0, 1, 2;
``True``: all three, 8 flips). The
    result is a float32 tensor on the device of ``image`` (CPU for numpy input).
    """
    from monai.inferers import sliding_window_inference

    x = as_float_tensor(image)
    if x.dim() != 4:
        raise ValueError(f"image must be (C, X, Y, Z), got shape {tuple(x.shape)}")
    x = x[None]

    def call(t: torch.Tensor) -> torch.Tensor:
        out = fn(t)
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(out)
        return out.to(device=t.device, dtype=torch.float32)

    def window(t: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(
            t, tuple(int(p) for p in patch), batch_size, call, overlap=overlap,
            mode="gaussian" if gaussian else "constant", sigma_scale=0.125,
        )

    with torch.inference_mode():
        axes = mirror_dims(mirror)
        if not axes:
            return window(x)[0]
        total = None
        flips = [tuple(c) for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
        for dims in flips:
            t = x.flip(dims) if dims else x
            out = window(t)
            out = out.flip(dims) if dims else out
            total = out if total is None else total + out
        return (total / len(flips))[0]


def mirror_dims(mirror: bool | Sequence[int]) -> tuple[int, ...]:
    """The (N, C, X, Y, Z) tensor dims to flip for ``mirror``: True all three spatial axes, False none,
    or the listed spatial axes (0, 1, 2)."""
    if mirror is True:
        return (2, 3, 4)
    if not mirror:
        return ()
    axes = sorted({int(a) for a in mirror})  # type: ignore[union-attr]
    if any(a not in (0, 1, 2) for a in axes):
        raise ValueError(f"mirror axes must be 0, 1 or 2, got {list(mirror)}")  # type: ignore[arg-type]
    return tuple(a + 2 for a in axes)


def keep_largest_component(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """Keep only the largest 26-connected component of each class in ``classes``; the rest becomes 0."""
    out = np.array(labels, copy=True)
    structure = ndimage.generate_binary_structure(3, 3)
    for k in classes:
        mask = out == k
        if not mask.any():
            continue
        comp, n = ndimage.label(mask, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        out[mask & (comp != int(sizes.argmax()))] = 0
    return out


class Predictor:
    """Label maps from a ``logits_fn`` and the plan of the data it was trained on.

    ``predict_array`` works in the preprocessed space (class indices 0..K-1); ``predict_files`` reads
    scans, preprocesses them with ``plan``, predicts and writes label maps (label values of
    ``labels``) in each scan's own geometry.
    """

    def __init__(
        self,
        logits_fn: LogitsFn,
        patch: Sequence[int],
        num_classes: int,
        plan=None,
        labels: Mapping[str, int] | None = None,
        modalities: Sequence[str] | None = None,
        overlap: float = 0.5,
        gaussian: bool = True,
        mirror: bool | Sequence[int] = False,
        keep_largest: bool = False,
        device: str | torch.device = "cpu",
    ):
        self.logits_fn = logits_fn
        self.patch = tuple(int(p) for p in patch)
        self.num_classes = int(num_classes)
        self.plan = plan
        self.labels = dict(labels) if labels is not None else {str(i): i for i in range(self.num_classes)}
        self.modalities = list(modalities or [])
        self.overlap = overlap
        self.gaussian = gaussian
        self.mirror = mirror
        self.keep_largest = keep_largest
        self.device = torch.device(device)

    @classmethod
    def from_training_folder(cls, folder: str | Path, device: str = "auto", **options) -> "Predictor":
        """A predictor for the network of a training folder (``emonas train --out DIR``).

        Post-processing follows the folder's training profile (largest component kept for
        ``paper``) unless ``keep_largest`` is given; ``mirror=True`` turns on mirroring TTA along the
        axes the training mirrored (``TrainingFolder.mirror_axes``), no others.
        """
        from engine.infer.folder import load_training_folder

        from engine.device import resolve_device

        tf = load_training_folder(folder)
        dev = resolve_device(device)
        model = tf.build_model(dev)
        options.setdefault("keep_largest", tf.config.get("profile") == "paper")
        if options.get("mirror") is True:
            options["mirror"] = list(tf.mirror_axes)
        return cls(
            torch_logits_fn(model, dev, amp=bool(tf.config.get("amp", False))),
            patch=tf.patch_size,
            num_classes=tf.num_classes,
            plan=tf.plan,
            labels=tf.labels,
            modalities=tf.modalities,
            device=dev,
            **options,
        )

    # ---- arrays ------------------------------------------------------------------------------
    def predict_logits(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Logits (K, X, Y, Z) of a preprocessed volume (C, X, Y, Z)."""
        return sliding_window_logits(
            self.logits_fn, as_float_tensor(image).to(self.device), self.patch, self.overlap, self.gaussian, self.mirror
        )

    def postprocess(self, labels: np.ndarray) -> np.ndarray:
        if self.keep_largest:
            labels = keep_largest_component(labels, range(1, self.num_classes))
        return labels

    def predict_array(self, image: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class indices (X, Y, Z) uint8 of a preprocessed volume (C, X, Y, Z)."""
        logits = self.predict_logits(image)
        labels = logits.argmax(0).to(torch.uint8).cpu().numpy()
        return self.postprocess(labels)

    def predict_probabilities(self, image: np.ndarray | torch.Tensor) -> np.ndarray:
        """Softmax class probabilities (K, X, Y, Z) float32 of a preprocessed volume (C, X, Y, Z)."""
        return torch.softmax(self.predict_logits(image).float(), dim=0).cpu().numpy()

    # ---- files -------------------------------------------------------------------------------
    def predict_files(
        self,
        paths_per_case: Sequence[Sequence[str | Path]],
        out_dir: str | Path,
        progress: Callable[[int, int], None] | None = None,
        names: Sequence[str] | None = None,
        save_probabilities: bool = False,
    ) -> list[Path]:
        """Predict each case (one image path per modality, in the training's modality order) and
        write its label map into ``out_dir`` as ``NAME.nii.gz`` (``names``, by default the case's
        first image's name); with ``save_probabilities`` also ``NAME.npz`` (float16 class
        probabilities on the scan's grid). Returns the label maps' paths."""
        from engine.infer.folder import predict_case_files

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for i, paths in enumerate(paths_per_case):
            name = names[i] if names is not None else None
            written.append(predict_case_files(self, [Path(p) for p in paths], out_dir, name, save_probabilities))
            if progress is not None:
                progress(i + 1, len(paths_per_case))
        return written
