"""Reading scans and writing label maps while keeping their geometry exactly.

Every image is held as an :class:`Image`: voxels as a ``(C, X, Y, Z)`` array (channels first; a
4D file's last axis becomes the channels) and a 4x4 voxel-to-world ``affine`` in RAS+ millimetres
(nibabel's convention). NIfTI goes through nibabel; MetaImage (``.mha``/``.mhd``), NRRD and DICOM
series folders go through SimpleITK, whose LPS geometry is converted to RAS on reading and back on
writing.

Headers are read and checked (:func:`read_header`) before any voxel is, so a header that claims an
absurd volume never allocates it: the limit (:func:`max_voxels`) derives from the memory budget.
Every file a header names (a MetaImage ``ElementDataFile``, also as ``LIST`` or file pattern, an
NRRD ``data file``) must lie in the header's folder, and only regular files are opened (a FIFO,
device or socket is refused, never read). A DICOM folder is read only when it holds one image
series (or one is chosen with ``FOLDER#SERIES_UID``) whose slices are evenly spaced. RGB and
complex images are refused. Every failure is a one-line :class:`~engine.errors.DataError` naming
the file.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import DataError

log = logging.getLogger(__name__)

#: Memory budget the size limits derive from when none is given (bytes): a common 8 GiB GPU, or that
#: much RAM on CPU; also the plan's default budget of one training step.
DEFAULT_MEMORY_BUDGET = 8 * 2**30
#: Bytes a case holds per voxel while it is read and resampled: the float32 array, its resampled
#: copy, the foreground mask and the normalized result.
BYTES_PER_VOXEL = 16


def max_voxels(memory_budget_bytes: int | None = None) -> int:
    """Largest image (voxels of all channels) read or resampled: the memory budget / 16 bytes
    (2**29 voxels, 2 GiB as float32, for the default 8 GiB)."""
    return int(memory_budget_bytes or DEFAULT_MEMORY_BUDGET) // BYTES_PER_VOXEL


#: Largest number of voxels (all channels together) a header may claim, for the default budget.
MAX_VOXELS = max_voxels()
#: Largest number of channels (modalities) of one image.
MAX_CHANNELS = 64

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + SITK_SUFFIXES

# RAS <-> LPS: flip the first two world axes.
_FLIP = np.diag([-1.0, -1.0, 1.0])


def image_suffix(path: str | os.PathLike) -> str | None:
    """The recognised image suffix of ``path`` (``.nii.gz``, ``.mha``, ...), or None."""
    name = Path(path).name.lower()
    for s in IMAGE_SUFFIXES:
        if name.endswith(s):
            return s
    return None


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a file of a format the engine reads (by its suffix)."""
    return image_suffix(path) is not None


def strip_suffix(path: str | os.PathLike) -> str:
    """The file name of ``path`` without its image suffix."""
    name = Path(path).name
    s = image_suffix(name)
    return name[: -len(s)] if s else name


class _Geometry:
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array's axes."""
        return affine_spacing(self.affine)

    @property
    def orientation(self) -> str:
        """Axis codes such as ``"RAS"`` or ``"LPS"`` (closest axes for oblique scans)."""
        return affine_orientation(self.affine)


@dataclass(frozen=True)
class ImageHeader(_Geometry):
    """What a file says about its image, read without touching the voxels."""

    path: Path
    shape: tuple[int, int, int]  # spatial (X, Y, Z)
    channels: int
    affine: np.ndarray  # 4x4 voxel -> world, RAS+ mm
    format: str  # "nifti", "sitk" or "dicom"
    dtype: str = ""

    @property
    def exact_geometry(self) -> bool:
        """False for a DICOM series, whose slice spacing and direction are only known once it is read."""
        return self.format != "dicom"


@dataclass
class Image(_Geometry):
    """A scan: ``array`` (C, X, Y, Z) and its voxel-to-world RAS ``affine``."""

    array: np.ndarray
    affine: np.ndarray
    path: Path | None = None
    format: str = "nifti"
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape (X, Y, Z)."""
        return tuple(int(s) for s in self.array.shape[1:])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return int(self.array.shape[0])


def affine_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes (mm) of a 4x4 affine: the lengths of its first three columns."""
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))  # type: ignore[return-value]


def affine_orientation(affine: np.ndarray) -> str:
    import nibabel as nib

    return "".join(nib.aff2axcodes(np.asarray(affine)))


#: Largest difference between two grids taken as the same grid, as a fraction of the voxel size
#: (float32 headers and rounded DICOM positions differ by far less; a real shift by far more).
GRID_TOLERANCE = 1e-2


def grid_mismatch(a: np.ndarray, b: np.ndarray) -> float:
    """How far apart two voxel-to-world affines are, in voxels: the largest difference of an axis step
    (a column) or of the origin, divided by the voxel size along it (the smallest one for the origin).
    Independent of where the origin lies, so large scanner coordinates do not loosen it."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.inf  # a NaN or infinite affine places no voxel anywhere: never the same grid
    size = np.maximum(np.minimum(np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0)), 1e-12)
    steps = np.linalg.norm(a[:3, :3] - b[:3, :3], axis=0) / size
    origin = np.linalg.norm(a[:3, 3] - b[:3, 3]) / size.min()
    return float(max(steps.max(), origin))


def same_geometry(a: np.ndarray, b: np.ndarray, shape_a, shape_b, tol: float = GRID_TOLERANCE) -> bool:
    """Whether two grids coincide: same shape and affines within ``tol`` voxels (:func:`grid_mismatch`)."""
    if tuple(shape_a) != tuple(shape_b):
        return False
    return grid_mismatch(a, b) <= tol


def describe_grid(shape, affine: np.ndarray) -> str:
    """``shape 36x41x34, spacing 1x1x1.2 mm, origin (-90, -126, -72) mm, RAS``: a grid in one line."""
    sp = affine_spacing(affine)
    o = np.asarray(affine, float)[:3, 3]
    return (f"shape {'x'.join(str(int(n)) for n in shape)}, spacing {'x'.join(f'{v:.4g}' for v in sp)} mm, "
            f"origin ({', '.join(f'{v:.4g}' for v in o)}) mm, {affine_orientation(affine)}")


# ---------------------------------------------------------------------------------------- headers


def check_voxels(path, shape, channels: int = 1, what: str = "image", memory_budget_bytes: int | None = None) -> None:
    """Refuse, before anything is allocated, an array of ``shape`` x ``channels`` over :func:`max_voxels`."""
    limit = max_voxels(memory_budget_bytes)
    try:
        n = float(np.prod([float(s) for s in shape])) * float(channels)
    except (TypeError, ValueError, OverflowError):
        n = float("inf")
    if not np.isfinite(n) or n > limit:
        dims = "x".join(f"{int(s)}" if np.isfinite(float(s)) and abs(float(s)) < 1e15 else f"{float(s):.3g}" for s in shape)
        budget = (memory_budget_bytes or DEFAULT_MEMORY_BUDGET) / 2**30
        raise DataError(path, f"{what} of {dims} voxels x {channels} channel(s) exceeds the limit of {limit:,} voxels "
                              f"(memory budget {budget:.3g} GiB / {BYTES_PER_VOXEL} bytes per voxel); refused")


def _check_size(path: Path, shape: tuple[int, ...], channels: int) -> None:
    if any(int(s) < 1 for s in shape) or channels < 1:
        raise DataError(path, f"header declares an empty image of shape {tuple(shape)}")
    n = int(np.prod([int(s) for s in shape], dtype=np.float64)) * channels
    if n > 64 * MAX_VOXELS or channels > MAX_CHANNELS:
        raise DataError(
            path, f"header declares an absurd size {'x'.join(str(s) for s in shape)} x {channels} channels; not read"
        )
    check_voxels(path, shape, channels, "header declares an image")


def _spatial_and_channels(path: Path, shape: tuple[int, ...]) -> tuple[tuple[int, int, int], int]:
    """Split a file's array shape into (X, Y, Z) and a channel count; never squeeze an axis."""
    if len(shape) < 3:
        raise DataError(path, f"2D image of shape {tuple(shape)} where a 3D image is expected")
    if len(shape) == 3:
        return tuple(shape), 1  # type: ignore[return-value]
    if len(shape) == 4:
        return tuple(shape[:3]), int(shape[3])  # type: ignore[return-value]
    if len(shape) == 5 and shape[3] == 1:  # NIfTI vector images: (X, Y, Z, 1, C)
        return tuple(shape[:3]), int(shape[4])  # type: ignore[return-value]
    raise DataError(path, f"{len(shape)}D image of shape {tuple(shape)}; expected 3D or 4D (channels last)")


def _sitk():
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    return sitk


def _sitk_affine(spacing, origin, direction, dim: int) -> np.ndarray:
    """RAS affine of a SimpleITK geometry (LPS), for the first three axes."""
    d = np.asarray(direction, float).reshape(dim, dim)[:3, :3]
    m = _FLIP @ d @ np.diag(np.asarray(spacing, float)[:3])
    aff = np.eye(4)
    aff[:3, :3] = m
    aff[:3, 3] = _FLIP @ np.asarray(origin, float)[:3]
    return aff


# ---------------------------------------------------------------------------------------- files read

#: Most bytes of a MetaImage or NRRD header read to find the data files it names.
MAX_HEADER_BYTES = 2**20
#: Most data files one header may name (a ``LIST`` or a file pattern).
MAX_DATA_FILES = 100_000


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` when it is a regular file (links followed); a one-line DataError for a missing file,
    a link loop, or a FIFO, device or socket, which are never opened (reading one can hang)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(path, f"{what} not found") from None
    except OSError as exc:
        raise DataError(path, f"cannot read {what} ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise DataError(path, f"is a folder where a {what} is expected")
    if not stat.S_ISREG(mode):
        kind = "FIFO" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
        raise DataError(path, f"is a {kind}, not a regular {what}; refused (reading it could block forever)")
    return path


def _numbers(tokens: list[str]) -> list[int] | None:
    try:
        return [int(t) for t in tokens]
    except ValueError:
        return None


def _named_files(value: str, rest: list[str], key: str, header: Path) -> list[str]:
    """The file names of a data-file field: one name, ``LIST`` (names on the following lines) or a
    printf pattern ``fmt min max step [subdim]`` (MetaImage and NRRD share these forms)."""
    if value.split()[:1] and value.split()[0].upper() == "LIST":
        names = [ln.strip() for ln in rest if ln.strip()]
        if not names:
            raise DataError(header, f"{key} LIST names no file")
        return names
    parts = value.split()
    nums = _numbers(parts[1:4]) if len(parts) >= 4 and "%" in parts[0] else None
    if nums is not None:
        lo, hi, step = nums
        count = (hi - lo) // step + 1 if step and (hi - lo) * step >= 0 else 0
        if count < 1 or count > MAX_DATA_FILES:
            raise DataError(header, f"{key} pattern {value!r} names {max(count, 0)} files; expected 1 to {MAX_DATA_FILES}")
        try:
            return [parts[0] % k for k in range(lo, hi + (1 if step > 0 else -1), step)]
        except (TypeError, ValueError) as exc:
            raise DataError(header, f"{key} pattern {parts[0]!r} is not a valid file pattern ({exc})") from None
    return [value]


def _header_lines(path: Path) -> list[str]:
    with open(regular_file(path, "image file"), "rb") as fh:
        head = fh.read(MAX_HEADER_BYTES)
    return head.decode("latin-1").splitlines()


def _detached_names(path: Path) -> tuple[str, list[str]]:
    """(field name, file names) of the data files a MetaImage or NRRD header names; no names when the
    data sits in the header's own file."""
    suffix = image_suffix(path)
    lines = _header_lines(path)
    if suffix in (".mha", ".mhd"):
        for i, line in enumerate(lines):
            key, sep, value = line.partition("=")
            if sep and key.strip().lower() == "elementdatafile":
                value = value.strip()
                if value.upper() == "LOCAL":
                    return "ElementDataFile", []
                return "ElementDataFile", _named_files(value, lines[i + 1:], "ElementDataFile", path)
        return "ElementDataFile", []
    if suffix in (".nrrd", ".nhdr"):
        for i, line in enumerate(lines[1:], start=1):
            if not line.strip():
                break  # end of the header: the data follows in this file
            key, sep, value = line.partition(":")
            if sep and not value.startswith("=") and key.strip().lower() in ("data file", "datafile"):
                return "data file", _named_files(value.strip(), lines[i + 1:], "data file", path)
        return "data file", []
    return "", []


def image_files(path: str | os.PathLike) -> list[Path]:
    """Every file reading the image at ``path`` opens: the file itself and the data files its header
    names (MetaImage ``ElementDataFile``, ``LIST`` and patterns included; NRRD ``data file``), or the
    files of a DICOM folder. Names are joined to the header's folder as written (not resolved)."""
    path, _ = split_series(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if not p.name.startswith(".") and not p.is_dir())
    if image_suffix(path) in SITK_SUFFIXES:
        _, names = _detached_names(path)
        return [path] + [path.parent / n for n in names]
    return [path]


def _check_data_files(path: Path) -> None:
    """Every data file a header names is a regular file inside the header's folder."""
    key, names = _detached_names(path)
    base = path.parent.resolve()
    for name in names:
        target = path.parent / name
        try:
            real = target.resolve()
        except (OSError, RuntimeError):
            raise DataError(path, f"{key} {name!r} is a link loop") from None
        if not real.is_relative_to(base):
            raise DataError(path, f"{key} {name!r} lies outside the folder of its header (an absolute or ../ "
                                  "path, or a link pointing out of it); refused")
        regular_file(target, f"data file named by {key}")


# ---------------------------------------------------------------------------------------- DICOM

#: SOP classes that are DICOM objects but no image slice (segmentations, structures, reports ...).
_NON_IMAGE_SOP = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set",
    "1.2.840.10008.5.1.4.1.1.66": "Raw Data",
    "1.2.840.10008.5.1.4.1.1.11.1": "Presentation State",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
}
_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
#: Relative tolerance on the gaps between slices of one series (positions are written rounded).
SLICE_GAP_TOLERANCE = 0.01


def split_series(path: str | os.PathLike) -> tuple[Path, str | None]:
    """A path and the DICOM SeriesInstanceUID chosen with ``FOLDER#SERIES_UID`` (None when not given)."""
    text = os.fspath(path)
    if "#" in text and not os.path.exists(text):
        folder, _, uid = text.rpartition("#")
        if folder and os.path.isdir(folder):
            return Path(folder), uid.strip()
    return Path(text), None


@dataclass(frozen=True)
class _Series:
    files: list[str]  # sorted along the slice normal
    shape: tuple[int, int, int]
    affine: np.ndarray | None  # RAS, from the slices' positions (None for a single multi-frame file)
    channels: int


def _dicom_series(folder: Path, uid: str | None) -> _Series:
    """The one image series of ``folder`` (or series ``uid``), checked: image objects only, one grid,
    evenly spaced slices; files sorted along the slice normal."""
    base = folder.resolve()
    groups: dict[str, list[tuple[Path, object]]] = {}
    non_image: list[tuple[Path, str, str]] = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or f.is_dir():
            continue
        regular_file(f, "DICOM file")
        if not f.resolve().is_relative_to(base):
            raise DataError(f, f"links out of the DICOM folder {folder}; refused")
        ds = _dicom_dataset(f)
        if ds is None:
            continue  # not DICOM: notes, thumbnails
        sop = str(getattr(ds, "SOPClassUID", "") or getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", ""))
        if sop == _DICOMDIR_SOP or "DirectoryRecordSequence" in ds:
            continue
        series = str(getattr(ds, "SeriesInstanceUID", "") or "")
        if sop in _NON_IMAGE_SOP or "Rows" not in ds:
            non_image.append((f, series, _NON_IMAGE_SOP.get(sop, "non-image")))
            continue
        groups.setdefault(series, []).append((f, ds))
    if uid is not None:
        non_image = [n for n in non_image if n[1] == uid]
    if non_image:
        f, _, kind = non_image[0]
        raise DataError(f, f"is a DICOM {kind} object, not an image slice; a series folder must hold only its "
                           "slices (move it out, or choose the image series with FOLDER#SERIES_UID)")
    if uid is not None:
        if uid not in groups:
            raise DataError(folder, f"holds no DICOM image series {uid} (series here: {', '.join(groups) or 'none'})")
        files = groups[uid]
    elif not groups:
        raise DataError(folder, "folder holds no DICOM image series")
    elif len(groups) > 1:
        shown = ", ".join(f"{k} ({len(v)} files)" for k, v in list(groups.items())[:4])
        raise DataError(folder, f"holds {len(groups)} DICOM series: {shown}; choose one as {folder}#SERIES_UID")
    else:
        files = next(iter(groups.values()))
    return _check_series(folder, files)


def _dicom_dataset(path: Path):
    """The header of a DICOM file (without pixels), or None for a file that is not DICOM. Files
    without the 128-byte preamble (older exports) are read too when they hold an SOP class or rows."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    errors = (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError)
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, defer_size="1 KB")
    except InvalidDicomError:
        pass
    except errors:
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size="1 KB", force=True)
        return ds if ("SOPClassUID" in ds or "Rows" in ds) else None
    except errors:
        return None


def dicom_series_files(path: str | os.PathLike) -> list[Path]:
    """The slice files of the DICOM series at ``path`` (a folder or ``FOLDER#SERIES_UID``), checked as
    :func:`read_image` checks them, sorted along the slice normal."""
    folder, uid = split_series(path)
    return [Path(f) for f in _dicom_series(folder, uid).files]


def _floats(ds, tag: str, n: int):
    v = getattr(ds, tag, None)
    try:
        out = np.array([float(x) for x in v], float)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.isfinite(out).all() else None


def _check_series(folder: Path, files: list) -> _Series:
    first = files[0][1]
    photometric = str(getattr(first, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(getattr(first, "SamplesPerPixel", 1) or 1) != 1 or not photometric.startswith("MONOCHROME"):
        raise DataError(files[0][0], f"colour DICOM image ({photometric}); a scan must hold grey values")
    frames = int(getattr(first, "NumberOfFrames", 1) or 1)
    if len(files) == 1:
        return _Series([str(files[0][0])], (int(first.Columns), int(first.Rows), frames), None, 1)
    rows, cols = int(first.Rows), int(first.Columns)
    iop = _floats(first, "ImageOrientationPatient", 6)
    spacing = _floats(first, "PixelSpacing", 2)
    placed = []
    for f, ds in files:
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
            raise DataError(f, "multi-frame file in a series of several files; not supported")
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise DataError(f, f"slice of {ds.Rows}x{ds.Columns} pixels in a series of {rows}x{cols}")
        o, sp, pos = _floats(ds, "ImageOrientationPatient", 6), _floats(ds, "PixelSpacing", 2), \
            _floats(ds, "ImagePositionPatient", 3)
        if o is None or pos is None or sp is None or iop is None or spacing is None:
            raise DataError(f, "slice without a valid ImagePositionPatient, ImageOrientationPatient or PixelSpacing; "
                               "its place in the volume is unknown")
        if not np.allclose(o, iop, atol=1e-4) or not np.allclose(sp, spacing, rtol=1e-4):
            raise DataError(f, "slice orientation or pixel spacing differs from the rest of the series")
        placed.append((f, pos))
    normal = np.cross(iop[:3], iop[3:])
    if not np.isfinite(normal).all() or np.linalg.norm(normal) < 0.5:
        raise DataError(files[0][0], f"ImageOrientationPatient {list(iop)} does not give two axes")
    normal /= np.linalg.norm(normal)
    placed.sort(key=lambda fp: float(fp[1] @ normal))
    depth = np.array([float(p @ normal) for _, p in placed])
    gaps = np.diff(depth)
    i = int(np.argmin(gaps))
    if gaps[i] < 1e-3:
        raise DataError(folder, f"two slices at the same position ({placed[i][0].name} and {placed[i + 1][0].name}): "
                                "the series holds several volumes (echoes, phases, time points) or duplicates")
    j = int(np.argmax(gaps))
    if gaps[j] - gaps[i] > SLICE_GAP_TOLERANCE * gaps[i] + 1e-3:
        raise DataError(folder, f"slice spacing is not uniform: gaps from {gaps[i]:.4g} to {gaps[j]:.4g} mm "
                                f"(between {placed[j][0].name} and {placed[j + 1][0].name}); a slice is missing or "
                                "the series mixes volumes")
    step = (placed[-1][1] - placed[0][1]) / (len(placed) - 1)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * spacing[1]  # along a row: the column index x, spacing between columns
    lps[:3, 1] = iop[3:] * spacing[0]
    lps[:3, 2] = step
    lps[:3, 3] = placed[0][1]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return _Series([str(f) for f, _ in placed], (cols, rows, len(placed)), affine, 1)


# ---------------------------------------------------------------------------------------- header reading


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Read and check an image's header (shape, channels, geometry) without reading its voxels.

    ``path`` is an image file, a DICOM series folder, or ``FOLDER#SERIES_UID`` for one series of a
    folder holding several.
    """
    header, _ = _read_header(path)
    return header


def _read_header(path: str | os.PathLike) -> tuple[ImageHeader, _Series | None]:
    folder, uid = split_series(path)
    if uid is not None or folder.is_dir():
        return _dicom_header(folder, uid)
    path = Path(path)
    if not os.path.lexists(path):
        raise DataError(path, "file not found")
    regular_file(path, "image file")
    suffix = image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        try:
            img = nib.load(str(path))
            shape = tuple(int(s) for s in img.shape)
            affine = np.asarray(img.affine, float)
            dt = img.get_data_dtype()
            dtype = str(dt)
        except Exception as exc:  # nibabel raises many types for a bad header
            raise DataError(path, f"not a readable NIfTI image ({_reason(exc)})") from None
        if dt.fields is not None:
            raise DataError(path, f"RGB colour image (NIfTI data type {dtype}); a scan must hold grey values")
        if dt.kind == "c":
            raise DataError(path, f"complex-valued voxels ({dtype}); their imaginary part would be lost: "
                                  "save the magnitude (or real part) as a real image")
        spatial, channels = _spatial_and_channels(path, shape)
        _check_size(path, spatial, channels)
        return ImageHeader(path, spatial, channels, affine, "nifti", dtype), None
    if suffix in SITK_SUFFIXES:
        _check_data_files(path)
        sitk = _sitk()
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise DataError(path, f"not a readable image ({_reason(exc)})") from None
        size = tuple(int(s) for s in reader.GetSize())
        dim = reader.GetDimension()
        comps = int(reader.GetNumberOfComponents())
        pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
        if "complex" in pixel:
            raise DataError(path, f"complex-valued voxels ({pixel}); their imaginary part would be lost: "
                                  "save the magnitude (or real part) as a real image")
        if comps in (3, 4) and ("8-bit unsigned" in pixel or "RGB" in pixel.upper()):
            raise DataError(path, f"RGB colour image ({comps} components of {pixel.replace('vector of ', '')}); "
                                  "a scan must hold grey values")
        if dim < 3:
            raise DataError(path, f"2D image of shape {size} where a 3D image is expected")
        if dim > 4:
            raise DataError(path, f"{dim}D image of shape {size}; expected 3D or 4D")
        channels = comps * (size[3] if dim == 4 else 1)
        if dim == 4 and comps > 1:
            raise DataError(path, "4D image with vector voxels is not supported")
        spatial = size[:3]
        _check_size(path, spatial, channels)
        affine = _sitk_affine(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), dim)
        return ImageHeader(path, spatial, channels, affine, "sitk", pixel), None  # type: ignore[arg-type]
    raise DataError(path, "not an image file (expected .nii.gz, .nii, .mha, .mhd, .nrrd or a DICOM folder)")


def _dicom_header(path: Path, uid: str | None) -> tuple[ImageHeader, _Series]:
    series = _dicom_series(path, uid)
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(series.files[0])
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(series.files[0], f"not a readable DICOM file ({_reason(exc)})") from None
    if "complex" in sitk.GetPixelIDValueAsString(reader.GetPixelID()) or reader.GetNumberOfComponents() != 1:
        raise DataError(series.files[0], "DICOM image with vector or complex pixels; a scan must hold grey values")
    _check_size(path, series.shape, series.channels)
    affine = series.affine
    if affine is None:  # one multi-frame file: its geometry is the reader's
        affine = _sitk_affine(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), reader.GetDimension())
    name = path if uid is None else Path(f"{path}#{uid}")
    return ImageHeader(name, series.shape, series.channels, affine, "dicom"), series  # type: ignore[arg-type]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # ITK messages end in their useful part; keep one short line
    msg = lines[-1] if lines else type(exc).__name__
    if len(msg) > 160:
        msg = msg[:157] + "..."
    return f"{type(exc).__name__}: {msg}" if not msg.startswith(type(exc).__name__) else msg


# ---------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike, dtype=None) -> Image:
    """Read a scan with its geometry.

    ``path`` is a NIfTI, MetaImage or NRRD file, a folder holding a DICOM series, or
    ``FOLDER#SERIES_UID``. The array is ``(C, X, Y, Z)`` in the file's voxel order (nothing is
    reoriented here), in the file's data type unless ``dtype`` is given; the affine maps voxel
    indices to RAS+ millimetres. Running out of memory is a DataError naming the file.
    """
    header, series = _read_header(path)
    try:
        return _read_voxels(header, series, dtype)
    except MemoryError:
        raise DataError(header.path, f"out of memory reading this image ({'x'.join(map(str, header.shape))} voxels x "
                                     f"{header.channels} channel(s))") from None


def _read_voxels(header: ImageHeader, series: _Series | None, dtype) -> Image:
    path = header.path
    if header.format == "nifti":
        import nibabel as nib

        try:
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
        except MemoryError:
            raise
        except Exception as exc:  # truncated gzip raises EOFError, zlib.error, OSError ...
            raise DataError(path, f"cannot read voxel data ({_reason(exc)}); the file may be truncated") from None
        data = np.asarray(data)
        if not data.dtype.isnative:
            data = data.astype(data.dtype.newbyteorder("="))
        if data.ndim == 3:
            data = data[None]
        elif data.ndim == 4:
            data = np.moveaxis(data, 3, 0)
        else:
            data = np.moveaxis(data[:, :, :, 0, :], 3, 0)
        arr = np.ascontiguousarray(data if dtype is None else data.astype(dtype, copy=False))
        return Image(arr, header.affine.copy(), path, "nifti", {"suffix": image_suffix(path)})
    sitk = _sitk()
    try:
        if series is not None:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(series.files)
            img = reader.Execute()
        else:
            img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(path, f"cannot read voxel data ({_reason(exc)}); the file may be truncated") from None
    dim = img.GetDimension()
    size = tuple(int(v) for v in img.GetSize())
    if size[:3] != tuple(header.shape):
        raise DataError(path, f"voxel data of shape {size} where the header says {header.shape}")
    arr = sitk.GetArrayFromImage(img)  # (Z, Y, X[, C]) or (T, Z, Y, X)
    if dim == 4:
        arr = np.transpose(arr, (0, 3, 2, 1))
    elif img.GetNumberOfComponentsPerPixel() > 1:
        arr = np.transpose(arr, (3, 2, 1, 0))
    else:
        arr = np.transpose(arr, (2, 1, 0))[None]
    affine = _sitk_affine(img.GetSpacing(), img.GetOrigin(), img.GetDirection(), dim)
    if series is not None and series.affine is not None and not same_geometry(affine, series.affine, size, size):
        # the slices' own positions are the truth; a reader that placed them otherwise is not trusted
        raise DataError(path, "the DICOM reader placed the slices differently from their ImagePositionPatient; not read")
    arr = np.ascontiguousarray(arr if dtype is None else arr.astype(dtype, copy=False))
    return Image(arr, affine, path, header.format, {"suffix": image_suffix(path) if header.format == "sitk" else None})


def as_image(obj) -> Image:
    """An :class:`Image` from an Image, a path, or a nibabel image."""
    if isinstance(obj, Image):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return read_image(obj)
    if hasattr(obj, "affine") and hasattr(obj, "dataobj"):  # nibabel spatial image
        data = np.asarray(obj.dataobj)
        data = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
        return Image(np.ascontiguousarray(data), np.asarray(obj.affine, float), None, "nifti")
    raise DataError(None, f"expected an image or a path to one, got {type(obj).__name__}")


def read_label(path: str | os.PathLike) -> tuple[np.ndarray, Image]:
    """Read a label map: its (X, Y, Z) array (file's data type) and the Image holding its geometry."""
    img = read_image(path)
    if img.channels != 1:
        raise DataError(img.path, f"label map has {img.channels} channels; expected a single 3D volume")
    return img.array[0], img


# ---------------------------------------------------------------------------------------- writing


def write_label(path: str | os.PathLike, array: np.ndarray, reference: Image, format: str | None = None) -> Path:
    """Write a label map in the exact geometry of ``reference``.

    ``array`` is (X, Y, Z) on the reference's grid. The format follows the suffix of ``path``
    (``.nii.gz``/``.nii`` through nibabel, ``.mha``/``.mhd``/``.nrrd`` through SimpleITK); with
    ``format="source"`` the reference's own file format is used (NIfTI for a DICOM series).
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if tuple(array.shape) != tuple(reference.shape):
        raise DataError(path, f"label of shape {array.shape} does not match the reference grid {reference.shape}")
    if format == "source":
        src = reference.meta.get("suffix") if reference.format != "dicom" else None
        src = src or ".nii.gz"
        path = path.with_name(strip_suffix(path) + src)
    suffix = image_suffix(path)
    if suffix is None:
        raise DataError(path, "unknown output format; use .nii.gz, .nii, .mha, .mhd or .nrrd")
    if array.dtype == bool or array.dtype.kind not in "iu":
        array = array.astype(np.uint8)
    elif array.max(initial=0) <= 255 and array.min(initial=0) >= 0:
        array = array.astype(np.uint8)
    try:
        return _write(path, array, reference.affine)
    except OSError as exc:
        raise DataError(path, f"cannot write ({exc.strerror or exc})") from None


def write_image(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write a (X, Y, Z) or (C, X, Y, Z) float image with ``affine`` (used for generated data)."""
    path = Path(path)
    array = np.asarray(array)
    if array.ndim == 4:
        array = np.moveaxis(array, 0, -1) if array.shape[0] > 1 else array[0]
    return _write(path, array, affine)


def _write(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write (X, Y, Z) or (X, Y, Z, C) ``array`` with a RAS ``affine`` in the format of ``path``'s suffix.

    The file (with a MetaImage's data file) is written in a temporary folder next to ``path`` and moved
    into place, the header last, so a crash never leaves half a file under the final name.
    """
    from engine.atomic import publish_files, temp_dir_near

    suffix = image_suffix(path)
    if suffix is None:
        raise DataError(path, "unknown output format; use .nii.gz, .nii, .mha, .mhd or .nrrd")
    tmp = temp_dir_near(path)
    try:
        _write_now(tmp / path.name, array, affine, suffix)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_files(tmp, path.parent, last=[path.name])
    return path


def _write_now(path: Path, array: np.ndarray, affine: np.ndarray, suffix: str) -> None:
    affine = np.asarray(affine, float)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        img = nib.Nifti1Image(np.ascontiguousarray(array), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
        nib.save(img, str(path))
        return
    sitk = _sitk()
    order = (2, 1, 0, 3) if array.ndim == 4 else (2, 1, 0)
    out = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, order)), isVector=array.ndim == 4)
    m = _FLIP @ affine[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    out.SetSpacing([float(v) for v in spacing])
    out.SetDirection([float(v) for v in (m / spacing).ravel()])
    out.SetOrigin([float(v) for v in _FLIP @ affine[:3, 3]])
    sitk.WriteImage(out, str(path), True)
