"""Load a model folder and predict with ONNX Runtime or PyTorch, no training code involved.

``load_model(folder, backend, device)`` verifies the folder (checksums, ``model.json`` schema) and
returns an :class:`ExportedModel` whose ``predictor`` is the engine's whole inference pipeline
(``engine.infer.predictor.Predictor``: preprocessing from the plan, sliding window, mirroring,
largest-component post-processing, labels back in each scan's geometry) driven by the exported
network. Nothing is unpickled: the ONNX backend reads ``model.onnx``; the torch backend rebuilds the
network from the genome in ``model.json`` and reads ``weights.pt`` with ``weights_only=True``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from engine.errors import ConfigError, ExportError
from engine.export.package import (
    FORMAT_FILES,
    INPUT_NAME,
    OUTPUT_NAME,
    WEIGHTS_FILE,
    load_state_dict,
    verify_model_folder,
)
from engine.genome import Genome

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "torch")


def onnx_session(path: str | os.PathLike, device: str = "cpu"):
    """An ONNX Runtime session on ``device`` (``cpu`` or ``cuda``); a clear error if CUDA is missing."""
    import onnxruntime as ort

    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError("--device cuda: this onnxruntime has no CUDA provider (install onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif device == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise ConfigError(f"device must be cpu or cuda, got {device!r}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        raise ExportError(f"{path}: ONNX Runtime cannot load the model ({str(exc).splitlines()[0][:200]})") from None


@dataclass
class ExportedModel:
    """A verified model folder ready to predict; ``logits_fn`` maps (N, C, X, Y, Z) to logits."""

    path: Path
    meta: dict[str, Any]
    backend: str
    device: str
    logits_fn: Callable

    @property
    def labels(self) -> dict[str, int]:
        return dict(self.meta["labels"])

    def label_info(self) -> dict[str, dict]:
        """``label_codes`` and ``label_colors`` of ``model.json`` (generic ones for earlier exports)."""
        from engine.data.labels import resolve_label_info

        info = resolve_label_info(self.labels)
        for key in info:
            info[key].update(self.meta.get(key) or {})
        return info

    @property
    def modalities(self) -> list[str]:
        return list(self.meta["modalities"])

    @property
    def num_classes(self) -> int:
        return int(self.meta["architecture"]["num_classes"])

    @property
    def genome(self) -> Genome:
        return Genome.from_dict(self.meta["genome"])

    def plan(self):
        """The data plan the network was trained with (``engine.data.plan.Plan``)."""
        from engine.data.plan import Plan

        try:
            return Plan.from_dict(self.meta["plan"])
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(f"{self.path / 'model.json'}: plan is not usable ({str(exc).splitlines()[0]})") from None

    def predictor(self, **overrides):
        """The engine's ``Predictor`` over this network with the model's inference settings.

        ``overrides`` may change ``overlap``, ``gaussian``, ``mirror`` or ``keep_largest``;
        ``mirror=True`` averages over the axes the training mirrored (``training.mirror_axes``;
        models exported before that record: x for the paper profile, every axis otherwise).
        """
        from engine.infer.predictor import Predictor

        inf = self.meta["inference"]
        options = {
            "overlap": float(inf["overlap"]),
            "gaussian": bool(inf["gaussian"]),
            "mirror": [int(a) for a in inf.get("mirror_axes") or []],
            "keep_largest": bool(inf["keep_largest_component"]),
        }
        options.update(overrides)
        if options["mirror"] is True:
            training = self.meta.get("training") or {}
            trained = training.get("mirror_axes")
            if trained is None:
                trained = [0] if (training.get("config") or {}).get("profile") == "paper" else [0, 1, 2]
            options["mirror"] = [int(a) for a in trained]
        return Predictor(
            self.logits_fn,
            patch=inf["patch_size"],
            num_classes=self.num_classes,
            plan=self.plan(),
            labels=self.labels,
            modalities=self.modalities,
            device="cuda" if self.device == "cuda" and self.backend == "torch" else "cpu",
            **options,
        )

    def predict_files(self, cases: Sequence[Sequence[str | os.PathLike]], out_dir: str | os.PathLike,
                      progress: Callable[[int, int], None] | None = None, names: Sequence[str] | None = None,
                      **overrides) -> list[Path]:
        """Label maps for ``cases`` (one path per modality, in the model's order) written to ``out_dir``
        (as ``NAME.nii.gz`` with ``names``), each with its 3D Slicer colour table and ITK-SNAP label
        description next to it."""
        from engine.data.labels import write_colour_tables

        for paths in cases:
            if len(paths) != len(self.modalities):
                raise ConfigError(
                    f"{paths[0]}: the model expects {len(self.modalities)} modalities "
                    f"({', '.join(self.modalities)}) per case, got {len(paths)}"
                )
        written = self.predictor(**overrides).predict_files(cases, out_dir, progress=progress, names=names)
        colors = self.label_info()["label_colors"]
        for path in written:
            write_colour_tables(path, self.labels, colors)
        return written


def _onnx_logits_fn(path: Path, device: str) -> Callable:
    from engine.infer.predictor import numpy_logits_fn

    sess = onnx_session(path, device)

    def run(x: np.ndarray) -> np.ndarray:
        return sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]

    return numpy_logits_fn(run)


def _torch_logits_fn(folder: Path, meta: dict[str, Any], device: str) -> Callable:
    from engine.infer.predictor import torch_logits_fn
    from engine.network import build_network

    arch = meta["architecture"]
    net = build_network(Genome.from_dict(meta["genome"]), int(arch["in_channels"]), int(arch["num_classes"]),
                        [tuple(p) for p in arch["pool_sizes"]])
    try:
        net.load_state_dict(load_state_dict(folder / WEIGHTS_FILE), strict=True)
    except RuntimeError:
        raise ExportError(f"{folder / WEIGHTS_FILE}: weights do not fit the genome in model.json") from None
    return torch_logits_fn(net.to(device), device)


def _cuda_available(backend: str) -> bool:
    if backend == "onnxruntime":
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()
    from engine.device import cuda_count

    return cuda_count() > 0


def load_model(path: str | os.PathLike, backend: str = "onnxruntime", device: str = "cpu") -> ExportedModel:
    """Verify the model folder at ``path`` and prepare ``backend`` (``onnxruntime`` or ``torch``) on ``device``."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":  # the engine's resolver: auto, cpu, cuda, cuda:N
        from engine.device import resolve_device_name

        device = resolve_device_name(device)
    elif device == "auto":
        device = "cuda" if _cuda_available(backend) else "cpu"
    if backend != "torch" and device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu, cuda or auto for ONNX Runtime, got {device!r}")
    folder = Path(path)
    meta = verify_model_folder(folder)
    if backend == "onnxruntime":
        if FORMAT_FILES["onnx"] not in meta["files"]:
            raise ExportError(f"{folder}: exported without model.onnx; use --backend torch or export with --format onnx")
        fn = _onnx_logits_fn(folder / FORMAT_FILES["onnx"], device)
    else:
        fn = _torch_logits_fn(folder, meta, device)
    log.info("loaded %s with %s on %s", folder, backend, device)
    return ExportedModel(folder, meta, backend, device, fn)


# ---------------------------------------------------------------------------------------------
# DICOM-SEG for DICOM series inputs
# ---------------------------------------------------------------------------------------------
def write_dicom_seg(
    labels: np.ndarray,
    affine: np.ndarray,
    series_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    label_values: dict[str, int],
    *,
    label_codes: dict[str, dict] | None = None,
    label_colors: dict[str, Sequence[int]] | None = None,
    model_name: str = "EMONAS-Net",
    model_version: str = "1",
) -> Path:
    """Write a DICOM Segmentation object (highdicom) for ``labels`` predicted on a DICOM series.

    ``labels`` (X, Y, Z) holds label values on the grid of the series as read by
    ``engine.data.io.read_image`` (RAS ``affine``). Each source slice is matched to its plane of
    ``labels`` by its ImagePositionPatient, so the file order on disk does not matter. One segment
    per foreground label, labelled with its name as in ``label_values``, coded by ``label_codes``
    (the generic code where a label has none) and coloured by ``label_colors``; empty slices are
    omitted. Text is UTF-8 (SpecificCharacterSet ISO_IR 192), cut to its VR's length by
    ``engine.data.labels.dicom_text``.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from engine import __version__
    from engine.errors import DataError
    from engine.data.io import dicom_series_files
    from engine.data.labels import SH_LIMIT, SPECIFIC_CHARACTER_SET, dicom_text, resolve_label_info

    datasets = []
    for f in dicom_series_files(series_dir):  # the series' slices only, as they were read
        ds = pydicom.dcmread(f)
        if "ImagePositionPatient" in ds and "PixelData" in ds:
            datasets.append(ds)
    series_dir = Path(series_dir)
    if not datasets:
        raise DataError(series_dir, "no DICOM image with a position found for the DICOM-SEG")
    inv = np.linalg.inv(np.asarray(affine, float))
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    frames, sources = [], []
    for ds in datasets:
        ras = lps_to_ras * np.asarray([float(v) for v in ds.ImagePositionPatient])
        ijk = inv[:3, :3] @ ras + inv[:3, 3]
        k = int(round(ijk[2]))
        if not (abs(ijk[0]) < 0.01 and abs(ijk[1]) < 0.01 and abs(ijk[2] - k) < 0.01 and 0 <= k < labels.shape[2]):
            continue  # a slice of another series in the same folder
        plane = labels[:, :, k].T  # rows follow y, columns follow x
        if plane.shape != (int(ds.Rows), int(ds.Columns)):
            raise DataError(series_dir, f"slice size {ds.Rows}x{ds.Columns} does not match the label map")
        sources.append(ds)
        frames.append(plane)
    if not sources:
        raise DataError(series_dir, "no slice of the series lies on the label map's grid")
    value_to_segment = {}
    descriptions = []
    algo = hd.AlgorithmIdentificationSequence(
        name=dicom_text(model_name), version=dicom_text(model_version, SH_LIMIT),
        family=codes.cid7162.ArtificialIntelligence,
    )
    info = resolve_label_info(label_values, {"codes": label_codes or {}, "colors": label_colors or {}})

    def concept(code: Sequence[str]):
        scheme, value, meaning = code
        return hd.sr.CodedConcept(value=value, scheme_designator=dicom_text(scheme, SH_LIMIT), meaning=dicom_text(meaning))

    for name, value in sorted(label_values.items(), key=lambda kv: kv[1]):
        if value == 0:
            continue
        number = len(descriptions) + 1
        value_to_segment[value] = number
        code = info["label_codes"][name]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=dicom_text(name),
            segmented_property_category=concept(code["category"]),
            segmented_property_type=concept(code["type"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
            display_color=hd.color.CIELabColor.from_rgb(*info["label_colors"][name]),
        ))
    if not descriptions:
        raise DataError(series_dir, "the model has no foreground label to write as DICOM-SEG")
    lut = np.zeros(int(max(max(label_values.values()), int(labels.max(initial=0)))) + 1, dtype=np.uint8)
    for value, number in value_to_segment.items():
        lut[value] = number
    pixel = lut[np.stack(frames).astype(np.int64)]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="EMONAS Studio",
        manufacturer_model_name=dicom_text(model_name),
        software_versions=dicom_text(__version__),
        device_serial_number="0",
        series_description="EMONAS-Net segmentation (research use)",
        specific_character_set=SPECIFIC_CHARACTER_SET,
    )
    from engine.atomic import atomic_file

    out = Path(out_path)
    with atomic_file(out) as tmp:
        seg.save_as(tmp)
    return out


def write_case_dicom_segs(cases: Sequence[Sequence[str | os.PathLike]], written: Sequence[str | os.PathLike],
                          out_dir: str | os.PathLike, labels: dict[str, int],
                          label_info: dict[str, dict] | None = None) -> dict[Path, Path]:
    """For each case whose first input is a DICOM series folder, a DICOM-SEG next to its label map.

    Returns {written label map: DICOM-SEG path}. The label map is read back from its file, so the
    DICOM-SEG holds exactly what was written, on the series' own grid. ``label_info`` holds the
    ``label_codes`` and ``label_colors`` (``ExportedModel.label_info()``).
    """
    label_info = label_info or {}
    from engine.data.io import read_label, split_series, strip_suffix

    out: dict[Path, Path] = {}
    for paths, label_path in zip(cases, written):
        series = paths[0]
        if not split_series(series)[0].is_dir():
            continue
        labels_arr, label_img = read_label(label_path)
        seg_path = Path(out_dir) / f"{strip_suffix(label_path)}_seg.dcm"
        out[Path(label_path)] = write_dicom_seg(labels_arr, label_img.affine, series, seg_path, labels,
                                                label_codes=label_info.get("label_codes"),
                                                label_colors=label_info.get("label_colors"))
        log.info("%s -> %s (DICOM-SEG)", series, seg_path)
    return out
