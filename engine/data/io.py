"""Reading scans and writing label maps while keeping their geometry exactly.

Every image is held as an :class:`Image`: voxels as a ``(C, X, Y, Z)`` array (channels first; a
4D file's last axis becomes the channels) and a 4x4 voxel-to-world ``affine`` in RAS+ millimetres
(nibabel's convention). NIfTI goes through nibabel; MetaImage (``.mha``/``.mhd``), NRRD and DICOM
series folders go through SimpleITK, whose LPS geometry is converted to RAS on reading and back on
writing.

Headers are read and checked (:func:`read_header`) before any voxel is, so a header that claims an
absurd volume never allocates it. Every failure is a one-line :class:`~engine.errors.DataError`
naming the file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import DataError

log = logging.getLogger(__name__)

#: Largest number of voxels (all channels together) a header may claim: 2**30 (4 GiB as float32).
MAX_VOXELS = 2**30
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


def same_geometry(a: np.ndarray, b: np.ndarray, shape_a, shape_b, tol: float = 1e-3) -> bool:
    """Whether two grids coincide: same shape and affines equal within ``tol`` (mm)."""
    if tuple(shape_a) != tuple(shape_b):
        return False
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = max(1.0, float(np.abs(a[:3, 3]).max(initial=0.0)))
    return bool(np.allclose(a[:3, :3], b[:3, :3], atol=tol) and np.allclose(a[:3, 3], b[:3, 3], atol=tol * scale))


# ---------------------------------------------------------------------------------------- headers


def _check_size(path: Path, shape: tuple[int, ...], channels: int) -> None:
    if any(int(s) < 1 for s in shape) or channels < 1:
        raise DataError(path, f"header declares an empty image of shape {tuple(shape)}")
    n = int(np.prod([int(s) for s in shape], dtype=np.float64)) * channels
    if n > MAX_VOXELS or channels > MAX_CHANNELS:
        raise DataError(
            path, f"header declares an absurd size {'x'.join(str(s) for s in shape)} x {channels} channels; not read"
        )


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


def _dicom_files(path: Path) -> list[str]:
    sitk = _sitk()
    try:
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    except RuntimeError as exc:
        raise DataError(path, f"cannot list DICOM series ({str(exc).strip().splitlines()[-1]})") from None
    if not ids:
        raise DataError(path, "folder holds no DICOM series")
    series = [sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), i) for i in ids]
    series.sort(key=len, reverse=True)
    if len(series) > 1:
        log.warning("%s: %d DICOM series; reading the largest (%d files)", path, len(series), len(series[0]))
    return list(series[0])


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Read and check an image's header (shape, channels, geometry) without reading its voxels."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        return _dicom_header(path)
    suffix = image_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        try:
            img = nib.load(str(path))
            shape = tuple(int(s) for s in img.shape)
            affine = np.asarray(img.affine, float)
            dtype = str(img.get_data_dtype())
        except Exception as exc:  # nibabel raises many types for a bad header
            raise DataError(path, f"not a readable NIfTI image ({_reason(exc)})") from None
        spatial, channels = _spatial_and_channels(path, shape)
        _check_size(path, spatial, channels)
        return ImageHeader(path, spatial, channels, affine, "nifti", dtype)
    if suffix in SITK_SUFFIXES:
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
        return ImageHeader(path, spatial, channels, affine, "sitk", sitk.GetPixelIDValueAsString(reader.GetPixelID()))  # type: ignore[arg-type]
    raise DataError(path, "not an image file (expected .nii.gz, .nii, .mha, .mhd, .nrrd or a DICOM folder)")


def _dicom_header(path: Path) -> ImageHeader:
    sitk = _sitk()
    files = _dicom_files(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(files[0], f"not a readable DICOM file ({_reason(exc)})") from None
    size = tuple(int(s) for s in reader.GetSize())
    spatial = (size[0], size[1], len(files) * (size[2] if len(size) > 2 else 1))
    _check_size(path, spatial, int(reader.GetNumberOfComponents()))
    # the slice spacing and direction are only known once the series is sorted: read it with the data
    affine = _sitk_affine(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection(), reader.GetDimension())
    return ImageHeader(path, spatial, int(reader.GetNumberOfComponents()), affine, "dicom")  # type: ignore[arg-type]


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

    ``path`` is a NIfTI, MetaImage or NRRD file, or a folder holding a DICOM series. The array is
    ``(C, X, Y, Z)`` in the file's voxel order (nothing is reoriented here), in the file's data type
    unless ``dtype`` is given; the affine maps voxel indices to RAS+ millimetres.
    """
    header = read_header(path)
    path = header.path
    if header.format == "nifti":
        import nibabel as nib

        try:
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
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
        if header.format == "dicom":
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(_dicom_files(path))
            img = reader.Execute()
        else:
            img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(path, f"cannot read voxel data ({_reason(exc)}); the file may be truncated") from None
    dim = img.GetDimension()
    arr = sitk.GetArrayFromImage(img)  # (Z, Y, X[, C]) or (T, Z, Y, X)
    if dim == 4:
        arr = np.transpose(arr, (0, 3, 2, 1))
    elif img.GetNumberOfComponentsPerPixel() > 1:
        arr = np.transpose(arr, (3, 2, 1, 0))
    else:
        arr = np.transpose(arr, (2, 1, 0))[None]
    affine = _sitk_affine(img.GetSpacing(), img.GetOrigin(), img.GetDirection(), dim)
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
    """Write (X, Y, Z) or (X, Y, Z, C) ``array`` with a RAS ``affine`` in the format of ``path``'s suffix."""
    suffix = image_suffix(path)
    if suffix is None:
        raise DataError(path, "unknown output format; use .nii.gz, .nii, .mha, .mhd or .nrrd")
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.asarray(affine, float)
    if suffix in NIFTI_SUFFIXES:
        import nibabel as nib

        img = nib.Nifti1Image(np.ascontiguousarray(array), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
        nib.save(img, str(path))
        return path
    sitk = _sitk()
    order = (2, 1, 0, 3) if array.ndim == 4 else (2, 1, 0)
    out = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, order)), isVector=array.ndim == 4)
    m = _FLIP @ affine[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    out.SetSpacing([float(v) for v in spacing])
    out.SetDirection([float(v) for v in (m / spacing).ravel()])
    out.SetOrigin([float(v) for v in _FLIP @ affine[:3, 3]])
    sitk.WriteImage(out, str(path), True)
    return path
