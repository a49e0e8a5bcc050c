"""Reading real scans shipped by nibabel and pydicom, writing label maps in the source geometry."""

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_helpers import write_dicom_series

from engine.data.io import MAX_VOXELS, read_header, read_image, read_label, write_image, write_label
from engine.errors import DataError

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


def _radial_localizer() -> Path:
    """pydicom's MR700: seven 16x16 slices each at its own angle (a radial localizer), no volume."""
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892003" / "MR700"


@pytest.fixture
def mr_series(tmp_path):
    return write_dicom_series(tmp_path / "MR", n=7, gap=2.5)


def test_nifti_3d_keeps_geometry_of_a_real_scan():
    path = NIB_DATA / "anatomical.nii"
    ref = nib.load(str(path))
    img = read_image(path)
    assert img.array.shape == (1,) + ref.shape
    assert img.array.dtype.isnative
    np.testing.assert_allclose(img.affine, ref.affine)
    np.testing.assert_array_equal(img.array[0], np.asarray(ref.dataobj))
    assert img.orientation == "".join(nib.aff2axcodes(ref.affine))
    assert img.spacing == pytest.approx(ref.header.get_zooms()[:3])


def test_4d_nifti_becomes_channels():
    img = read_image(NIB_DATA / "example4d.nii.gz")
    ref = nib.load(str(NIB_DATA / "example4d.nii.gz"))
    assert img.channels == ref.shape[3] and img.shape == ref.shape[:3]
    np.testing.assert_array_equal(img.array[1], np.asarray(ref.dataobj)[..., 1])


def test_nifti2_and_gzip():
    img = read_image(NIB_DATA / "example_nifti2.nii.gz")
    assert img.shape == (32, 20, 12) and img.channels == 2


def test_dicom_series_folder(mr_series):
    import pydicom

    img = read_image(mr_series)
    assert img.shape == (64, 64, 7) and img.channels == 1
    assert img.spacing == pytest.approx((0.3125, 0.3125, 2.5), abs=1e-4)
    first = min((pydicom.dcmread(str(p)) for p in mr_series.iterdir()), key=lambda d: float(d.InstanceNumber))
    # the first slice in space is the origin, whatever the file order
    lps = np.array([float(v) for v in first.ImagePositionPatient])
    np.testing.assert_allclose(img.affine[:3, 3], lps * [-1, -1, 1], atol=1e-3)
    np.testing.assert_array_equal(img.array[0, :, :, 0], first.pixel_array.T)


def test_slices_at_their_own_angles_are_no_volume():
    with pytest.raises(DataError, match="orientation or pixel spacing differs"):
        read_image(_radial_localizer())


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".mha", ".mhd", ".nrrd"])
def test_write_label_in_the_geometry_of_a_dicom_scan(tmp_path, suffix):
    ref = read_image(write_dicom_series(tmp_path / "MR", n=7))
    label = (ref.array[0] > np.median(ref.array[0])).astype(np.uint8)
    out = read_image(write_label(tmp_path / f"seg{suffix}", label, ref))
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-4)
    np.testing.assert_array_equal(out.array[0], label)


def test_write_label_in_the_source_format(tmp_path):
    ref_path = tmp_path / "scan.mha"
    write_image(ref_path, np.ones((6, 7, 8), np.float32), np.diag([0.5, 0.7, 3.0, 1.0]))
    ref = read_image(ref_path)
    out = write_label(tmp_path / "pred.nii.gz", np.zeros(ref.shape, np.uint8), ref, format="source")
    assert out.name == "pred.mha"
    np.testing.assert_allclose(read_image(out).affine, ref.affine, atol=1e-6)


def test_write_label_wrong_shape_is_an_error(tmp_path):
    ref = read_image(NIB_DATA / "anatomical.nii")
    with pytest.raises(DataError, match="does not match"):
        write_label(tmp_path / "x.nii.gz", np.zeros((3, 3, 3), np.uint8), ref)


def test_absurd_header_is_refused_before_reading(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000, 30000))
    hdr.set_data_dtype(np.float32)
    path = tmp_path / "huge.nii"
    with open(path, "wb") as fh:  # header only: the data it claims (100 TB) does not exist
        fh.write(hdr.binaryblock + b"\x00" * 4)
    with pytest.raises(DataError, match="absurd") as exc:
        read_image(path)
    assert str(path) in str(exc.value)
    assert 30000**3 > MAX_VOXELS


def test_truncated_gzip_names_the_file(tmp_path):
    src = tmp_path / "full.nii.gz"
    write_image(src, np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32), np.eye(4))
    data = src.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated") as exc:
        read_image(bad)
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.nii.gz"
    p.write_bytes(gzip.compress(b"this is not a NIfTI file at all" * 20))
    with pytest.raises(DataError, match="notes.nii.gz"):
        read_image(p)
    q = tmp_path / "notes.txt"
    q.write_text("hello")
    with pytest.raises(DataError, match="not an image"):
        read_image(q)


def test_2d_image_is_refused(tmp_path):
    p = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 12), np.float32), np.eye(4)), str(p))
    with pytest.raises(DataError, match="2D image"):
        read_header(p)


def test_read_label_refuses_multichannel(tmp_path):
    p = tmp_path / "lab.nii.gz"
    write_image(p, np.zeros((2, 4, 4, 4), np.uint8), np.eye(4))
    with pytest.raises(DataError, match="channels"):
        read_label(p)


def test_absurd_metaimage_header_is_refused(tmp_path):
    path = tmp_path / "huge.mha"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\n"
                    "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    with pytest.raises(DataError, match="absurd") as exc:
        read_image(path)
    assert str(path) in str(exc.value)


def test_image_files_lists_the_data_files_a_header_names(tmp_path):
    from engine.data.io import image_files

    (tmp_path / "one.mhd").write_text("NDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = one.raw\n")
    (tmp_path / "list.mhd").write_text("NDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
                                       "ElementDataFile = LIST 2D\nz0.raw\nz1.raw\n")
    (tmp_path / "pat.mhd").write_text("NDims = 3\nDimSize = 2 2 3\nElementType = MET_UCHAR\n"
                                      "ElementDataFile = s%02d.raw 1 5 2 2\n")
    (tmp_path / "d.nhdr").write_text("NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: d.raw\n")
    assert [p.name for p in image_files(tmp_path / "one.mhd")] == ["one.mhd", "one.raw"]
    assert [p.name for p in image_files(tmp_path / "list.mhd")] == ["list.mhd", "z0.raw", "z1.raw"]
    assert [p.name for p in image_files(tmp_path / "pat.mhd")] == ["pat.mhd", "s01.raw", "s03.raw", "s05.raw"]
    assert [p.name for p in image_files(tmp_path / "d.nhdr")] == ["d.nhdr", "d.raw"]


def test_a_detached_data_file_is_read_from_the_headers_folder_only(tmp_path):
    write_image(tmp_path / "a" / "scan.mhd", np.arange(60, dtype=np.float32).reshape(3, 4, 5), np.eye(4))
    assert read_image(tmp_path / "a" / "scan.mhd").array.sum() == sum(range(60))
    (tmp_path / "b").mkdir()
    import re

    text = (tmp_path / "a" / "scan.mhd").read_text()
    (tmp_path / "b" / "scan.mhd").write_text(re.sub(r"ElementDataFile = (\S+)", r"ElementDataFile = ../a/\1", text))
    with pytest.raises(DataError, match="outside the folder of its header"):
        read_image(tmp_path / "b" / "scan.mhd")


def test_a_fifo_is_never_opened(tmp_path):
    import os

    os.mkfifo(tmp_path / "scan.nii.gz")
    with pytest.raises(DataError, match="FIFO"):
        read_image(tmp_path / "scan.nii.gz")  # would block forever if opened


def test_dicom_files_without_a_preamble_are_read(tmp_path):
    import pydicom
    from pydicom.dataset import FileMetaDataset

    folder = write_dicom_series(tmp_path / "MR", n=5)
    ref = read_image(folder)
    for p in sorted(folder.iterdir()):
        ds = pydicom.dcmread(p)
        ds.preamble = None
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        pydicom.dcmwrite(p, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    (folder / "notes.txt").write_text("not DICOM\n" * 20)
    img = read_image(folder)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
    np.testing.assert_array_equal(img.array, ref.array)
