"""Caches follow content: a case's cache key covers every file reading it opens, detached data files
included, so a changed ``.raw`` behind an unchanged ``.nhdr`` or ``.mhd`` is preprocessed again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from engine.data.io import image_files


def test_image_files_lists_headers_and_their_data_files(tmp_path):
    (tmp_path / "a.mhd").write_text("NDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = a.raw\n")
    (tmp_path / "b.mhd").write_text("NDims = 3\nElementDataFile = LIST\nb0.raw\nb1.raw\n")
    (tmp_path / "c.mhd").write_text("NDims = 3\nElementDataFile = c%02d.raw 1 3 1\n")
    (tmp_path / "d.mha").write_text("NDims = 3\nElementDataFile = LOCAL\n")
    (tmp_path / "e.nhdr").write_text("NRRD0004\ntype: float\ndimension: 3\ndata file: sub/e.raw.gz\n\nignored: x\n")
    (tmp_path / "f.nhdr").write_text("NRRD0004\nkey:=data file: no\ndatafile: f.raw\n")
    (tmp_path / "g.nrrd").write_bytes(b"NRRD0004\ntype: float\n\n\x00\x01binary")
    dicom = tmp_path / "series"
    dicom.mkdir()
    for n in ("2.dcm", "1.dcm"):
        (dicom / n).write_bytes(b"x")
    t = tmp_path
    assert image_files(t / "a.mhd") == [t / "a.mhd", t / "a.raw"]
    assert image_files(t / "b.mhd") == [t / "b.mhd", t / "b0.raw", t / "b1.raw"]
    assert image_files(t / "c.mhd") == [t / "c.mhd", t / "c01.raw", t / "c02.raw", t / "c03.raw"]
    assert image_files(t / "d.mha") == [t / "d.mha"]
    assert image_files(t / "e.nhdr") == [t / "e.nhdr", t / "sub" / "e.raw.gz"]
    assert image_files(t / "f.nhdr") == [t / "f.nhdr", t / "f.raw"]
    assert image_files(t / "g.nrrd") == [t / "g.nrrd"]
    assert image_files(t / "i.nii.gz") == [t / "i.nii.gz"]
    assert image_files(dicom) == [dicom / "1.dcm", dicom / "2.dcm"]


def _nhdr_dataset(root: Path, n: int = 3) -> Path:
    """images/ + labels/ with each scan as a detached NRRD header and its raw data file."""
    import SimpleITK as sitk

    from engine.data.demo import demo_dataset_path

    src = demo_dataset_path()
    meta = json.loads((src / "dataset.json").read_text())
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, entry in enumerate(meta["training"][:n]):
        img = sitk.ReadImage(str(src / entry["image"]))
        sitk.WriteImage(img, str(root / "images" / f"case_{i}.nhdr"), False)  # writes case_i.raw beside it
        sitk.WriteImage(sitk.ReadImage(str(src / entry["label"])), str(root / "labels" / f"case_{i}.nii.gz"))
    return root


def test_a_changed_detached_data_file_is_preprocessed_again(tmp_path, monkeypatch):
    from engine.data import make_plan, open_dataset, preprocess_dataset

    monkeypatch.setenv("EMONAS_CACHE_DIR", str(tmp_path / "user_cache"))
    data = _nhdr_dataset(tmp_path / "data")
    header, raw = data / "images" / "case_0.nhdr", data / "images" / "case_0.raw"
    assert image_files(header) == [header, raw]
    ds = open_dataset(data)
    plan = make_plan(ds)
    cache = tmp_path / "cache"
    first = preprocess_dataset(ds, plan, cache_dir=cache)
    before = np.array(first["case_0"].image)
    entries = sorted(p.name for p in next(cache.iterdir()).iterdir())

    # new voxels in the data file, same size; the header is untouched (bytes and modification time)
    st = header.stat()
    voxels = np.fromfile(raw, dtype=np.float32)
    voxels[voxels > np.median(voxels)] *= 0.25
    voxels.tofile(raw)
    os.utime(header, ns=(st.st_atime_ns, st.st_mtime_ns))

    ds = open_dataset(data)
    second = preprocess_dataset(ds, plan, cache_dir=cache)
    after = sorted(p.name for p in next(cache.iterdir()).iterdir())
    assert len(after) == len(entries) + 1  # case_0 gets a new entry; the other cases are reused
    assert [n for n in after if n not in entries][0].startswith("case_0-")
    assert not np.allclose(np.array(second["case_0"].image), before)  # the new voxels, not the cached ones
    np.testing.assert_array_equal(np.array(second["case_1"].image), np.array(first["case_1"].image))


def test_a_missing_data_file_is_named(tmp_path, monkeypatch):
    from engine.data.cache import file_signature
    from engine.errors import DataError

    (tmp_path / "x.nhdr").write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 2 2 2\ndata file: x.raw\n\n")
    with pytest.raises(DataError, match="x.raw"):
        file_signature(tmp_path / "x.nhdr")
