"""A second corpus of hostile and odd-but-legal inputs: data files named inside headers that point out
of their folder, FIFOs where files are expected, DICOM series with a missing slice, uneven spacing,
two series or non-image objects, sizes that only explode after resampling or decompression, RGB and
complex voxels, non-finite numbers in configs, label tables, training.json and model.json, and
duplicate case ids.

Each case states its expected outcome before it runs: either a one-line error with exit code 2
naming the file or key (``Error(needle)``), or a pinned correct result (``Pinned(check)``). All run
through ``engine.cli.main`` in one child process under ``RLIMIT_AS`` = 8 GB (``ulimit -v 8000000``),
each under a 60 s alarm; every input file's bytes are compared before and after.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine" / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine" / "export"))
from data_helpers import write_dicom_series  # noqa: E402
from test_hostile_inputs import ADDRESS_LIMIT, CASE_SECONDS, DRIVER, _nifti, _tree_digest, img0, lab0, make_msd  # noqa: E402


@dataclass
class Error:
    """Expected: exit code 2, one ``emonas: error:`` line containing ``needle`` (a file or key)."""

    needle: str


@dataclass
class Pinned:
    """Expected: a correct result; ``check(result_json, root)`` asserts it exactly."""

    check: Callable[[dict, Path], None]
    rc: int = 0


# --------------------------------------------------------------------------------------- builders


def _clear(root: Path) -> None:
    for p in list(root.iterdir()):
        shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def _promise(root: Path, data_file: str | None = None, header_extra: str = "", write_raw: bool = True) -> Path:
    """A PROMISE12 folder: Case00 and Case01 as MetaImage .mhd + .raw with segmentations; Case00's
    image header names ``data_file`` when given."""
    _clear(root)
    rng = np.random.default_rng(1)
    for case in ("Case00", "Case01", "Case02"):
        img = rng.normal(100, 10, (12, 16, 16)).astype(np.float32)  # (Z, Y, X) on disk
        seg = np.zeros((12, 16, 16), np.uint8)
        seg[3:8, 4:10, 4:10] = 1
        for name, arr, et in ((case, img, "MET_FLOAT"), (f"{case}_segmentation", seg, "MET_UCHAR")):
            df = data_file if (name == "Case00" and data_file is not None) else f"{name}.raw"
            (root / f"{name}.mhd").write_text(
                "ObjectType = Image\nNDims = 3\nDimSize = 16 16 12\n" f"ElementType = {et}\n"
                f"ElementSpacing = 0.6 0.6 3.6\n{header_extra if name == 'Case00' else ''}ElementDataFile = {df}\n"
            )
            if write_raw:
                (root / f"{name}.raw").write_bytes(arr.tobytes())
    return root


def _outside(root: Path, name: str, data: bytes) -> Path:
    """A file next to (not inside) the dataset folder."""
    p = root.parent / f"{root.name}_outside" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


RAW_BYTES = np.zeros((12, 16, 16), np.float32).tobytes()


def mhd_data_file_absolute(root):
    _promise(root, "/etc/passwd")
    return ["check", str(root)], Error("Case00.mhd")


def mhd_data_file_dotdot(root):
    _outside(root, "x.raw", RAW_BYTES)
    _promise(root, f"../{root.name}_outside/x.raw")
    return ["check", str(root)], Error("Case00.mhd")


def mhd_data_file_list_escape(root):
    _outside(root, "s.raw", RAW_BYTES[: 16 * 16 * 4])
    names = "\n".join(["Case00_z00.raw"] + [f"../{root.name}_outside/s.raw"] * 11)
    _promise(root, f"LIST 2D\n{names}")
    (root / "Case00_z00.raw").write_bytes(RAW_BYTES[: 16 * 16 * 4])
    return ["check", str(root)], Error("Case00.mhd")


def mhd_data_file_pattern_escape(root):
    for k in range(1, 13):
        _outside(root, f"slice{k:03d}.raw", RAW_BYTES[: 16 * 16 * 4])
    _promise(root, f"../{root.name}_outside/slice%03d.raw 1 12 1 2")
    return ["check", str(root)], Error("Case00.mhd")


def mhd_data_file_link_out(root):
    target = _outside(root, "x.raw", RAW_BYTES)
    _promise(root)
    (root / "Case00.raw").unlink()
    os.symlink(target, root / "Case00.raw")
    return ["check", str(root)], Error("Case00")


def mhd_data_file_is_fifo(root):
    _promise(root)
    (root / "Case00.raw").unlink()
    os.mkfifo(root / "Case00.raw")  # opening it for reading would block forever
    return ["check", str(root)], Error("Case00.raw")


def mhd_pattern_of_a_billion_files(root):
    _promise(root, "Case00_%09d.raw 1 1000000000 1 2")
    return ["check", str(root)], Error("Case00.mhd")


def nrrd_data_file_absolute(root):
    _plain_nrrd(root, "/etc/hostname")
    return ["check", str(root)], Error("scan1.nhdr")


def nrrd_data_file_list_escape(root):
    _outside(root, "p.raw", RAW_BYTES[: 16 * 16 * 4])
    _plain_nrrd(root, "LIST 2\n" + "\n".join([f"../../{root.name}_outside/p.raw"] * 12))
    return ["check", str(root)], Error("scan1.nhdr")


def _plain_nrrd(root: Path, data_file: str) -> None:
    """images/ + labels/: scan1 is a detached NRRD header naming ``data_file``; scan2 and scan3 are NIfTI."""
    _clear(root)
    (root / "images").mkdir()
    (root / "labels").mkdir()
    (root / "images" / "scan1.nhdr").write_text(
        "NRRD0004\ntype: float\ndimension: 3\nsizes: 16 16 12\nspacings: 1 1 1\nendian: little\n"
        f"encoding: raw\ndata file: {data_file}\n"
    )
    lab = np.zeros((16, 16, 12), np.uint8)
    lab[4:9, 4:9, 3:7] = 1
    for name in ("scan1", "scan2", "scan3"):
        _nifti(root / "labels" / f"{name}.nii.gz", lab, np.eye(4))
        if name != "scan1":
            _nifti(root / "images" / f"{name}.nii.gz", np.ones((16, 16, 12), np.float32), np.eye(4))


def image_is_a_fifo(root):
    img0(root).unlink()
    os.mkfifo(img0(root))
    return ["check", str(root)], Error("case_000.nii.gz")


def label_is_a_fifo(root):
    lab0(root).unlink()
    os.mkfifo(lab0(root))
    return ["check", str(root)], Error("case_000.nii.gz")


# DICOM: images/<series>/ + labels/<series>.nii.gz, the label on the series' grid


def _dicom_plain(root: Path, first=None) -> Path:
    """Three MR series in a plain layout; ``first(folder)`` builds the first series instead."""
    _clear(root)
    for i in range(3):
        folder = root / "images" / f"mr{i}"
        if i == 0 and first is not None:
            first(folder)
        else:
            write_dicom_series(folder, n=8)
        lab = np.zeros((64, 64, 8), np.uint8)
        lab[20:40, 20:40, 2:6] = 1
        _nifti(root / "labels" / f"mr{i}.nii.gz", lab, np.eye(4))
    return root


def dicom_missing_slice(root):
    _dicom_plain(root, lambda f: write_dicom_series(f, depths=[0, 2.5, 5, 7.5, 12.5, 15, 17.5, 20]))
    return ["check", str(root)], Error("mr0")


def dicom_uneven_spacing(root):
    _dicom_plain(root, lambda f: write_dicom_series(f, depths=[0, 2.5, 5, 7.5, 10.5, 13.5, 16.5, 19.5]))
    return ["check", str(root)], Error("mr0")


def dicom_two_series_same_positions(root):
    def two(f):
        write_dicom_series(f, n=8, prefix="a")
        write_dicom_series(f, n=8, prefix="b")

    _dicom_plain(root, two)
    return ["check", str(root)], Error("mr0")


def _non_image(folder: Path, sop_class: str, keep_pixels: bool) -> None:
    import pydicom

    write_dicom_series(folder, n=8)
    ds = pydicom.dcmread(sorted(folder.iterdir())[0])
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    if not keep_pixels:
        for tag in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "SamplesPerPixel", "PhotometricInterpretation"):
            if tag in ds:
                delattr(ds, tag)
    ds.save_as(folder / "zz_object.dcm")


def dicom_segmentation_object_in_series(root):
    _dicom_plain(root, lambda f: _non_image(f, "1.2.840.10008.5.1.4.1.1.66.4", keep_pixels=True))
    return ["check", str(root)], Error("zz_object.dcm")


def dicom_structured_report_in_series(root):
    _dicom_plain(root, lambda f: _non_image(f, "1.2.840.10008.5.1.4.1.1.88.11", keep_pixels=False))
    return ["check", str(root)], Error("zz_object.dcm")


def dicom_fifo_in_series(root):
    def with_fifo(f):
        write_dicom_series(f, n=8)
        os.mkfifo(f / "im999.dcm")

    _dicom_plain(root, with_fifo)
    return ["check", str(root)], Error("im999.dcm")


# sizes


def compressed_bomb(root):
    """A ~1 MB .nii.gz whose header (and data) inflate to 2**30 voxels."""
    img0(root).write_bytes(_bomb())
    lab0(root).write_bytes(_bomb())
    return ["check", str(root)], Error("case_000.nii.gz")


@functools.lru_cache(maxsize=1)
def _bomb() -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_shape((1024, 1024, 1024))
    hdr.set_qform(np.eye(4), code=1)
    hdr.set_sform(np.eye(4), code=1)
    comp = zlib.compressobj(1, zlib.DEFLATED, 31)  # gzip container
    out = [comp.compress(hdr.binaryblock + b"\x00" * 4)]
    zeros = b"\x00" * 2**24
    for _ in range(64):
        out.append(comp.compress(zeros))
    out.append(comp.flush())
    return b"".join(out)


def compressed_bomb_skipped(root):
    compressed_bomb(root)

    def check(res, root):
        assert res["ok"] and res["skipped"] == ["case_000"] and res["n_cases"] == 2
        assert any("case_000.nii.gz" in p["path"] for p in res["problems"] if p["fatal"])

    return ["check", "--skip-bad", str(root)], Pinned(check)


def _scale_case0(root: Path, spacing: float, others: float | None = None) -> None:
    for i in range(3):
        s = spacing if i == 0 else others
        if s is None:
            continue
        for p in (root / "imagesTr" / f"case_{i:03d}.nii.gz", root / "labelsTr" / f"case_{i:03d}.nii.gz"):
            a = nib.load(str(p))
            _nifti(p, np.asarray(a.dataobj), np.diag([s, s, s, 1.0]))


def voxels_of_1e30_mm(root):
    _scale_case0(root, 1e30)
    return ["check", str(root)], Error("case_000.nii.gz")


def voxels_of_1e30_mm_skipped(root):
    _scale_case0(root, 1e30)

    def check(res, root):
        assert res["ok"] and res["skipped"] == ["case_000"]
        assert res["plan"]["target_spacing"] == [1.0, 1.0, 1.5]  # the plan of the two other cases

    return ["check", "--skip-bad", str(root)], Pinned(check)


def voxels_of_1e30_mm_train(root):
    _scale_case0(root, 1e30)
    genome = '{"in2": 1, "in3": 0, "in4": 2, "op1": "conv3d_3x3x3", "op2": "conv3d_3x3x3", "op3": "conv3d_3x3x3", ' \
             '"op4": "conv3d_3x3x3", "n_cells": 5, "nf1": 8, "lr": 0.001}'
    return ["train", "--dataset", str(root), "--genome", genome, "--epochs", "1", "--device", "cpu",
            "--out", str(root.parent / f"{root.name}_train")], Error("case_000.nii.gz")


def small_scan_at_20_mm(root):
    """16x16x12 voxels of 20 mm among scans of 0.3 mm: 1067x1067x800 voxels at the plan's spacing."""
    _scale_case0(root, 20.0, others=0.3)
    return ["check", str(root)], Error("case_000.nii.gz")


# RGB and complex voxels


def rgb_nifti(root):
    arr = np.zeros((16, 16, 12), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(img0(root)))
    return ["check", str(root)], Error("case_000.nii.gz")


def complex_nifti(root):
    a = np.asarray(nib.load(str(img0(root))).dataobj)
    _nifti(img0(root), (a + 1j * a).astype(np.complex64), np.diag([1.0, 1.0, 1.5, 1.0]))
    return ["check", str(root)], Error("case_000.nii.gz")


def rgb_metaimage(root):
    _promise(root)
    (root / "Case00.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 16 16 12\nElementType = MET_UCHAR\nElementNumberOfChannels = 3\n"
        "ElementSpacing = 0.6 0.6 3.6\nElementDataFile = Case00.raw\n"
    )
    (root / "Case00.raw").write_bytes(b"\x07" * (16 * 16 * 12 * 3))
    return ["check", str(root)], Error("Case00.mhd")


# numbers


def labels_json_infinity(root):
    _plain_nrrd(root, "scan1.raw")
    (root / "images" / "scan1.raw").write_bytes(RAW_BYTES)
    (root / "labels.json").write_text('{"background": 0, "liver": Infinity}')
    return ["check", str(root)], Error("liver")


def labels_json_fraction(root):
    _plain_nrrd(root, "scan1.raw")
    (root / "images" / "scan1.raw").write_bytes(RAW_BYTES)
    (root / "labels.json").write_text('{"background": 0, "liver": 1.5}')
    return ["check", str(root)], Error("liver")


def nnunet_label_overflow(root):
    for i in range(3):
        (root / "imagesTr" / f"case_{i:03d}.nii.gz").rename(root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
    (root / "dataset.json").write_text('{"channel_names": {"0": "T1"}, "file_ending": ".nii.gz", '
                                       '"labels": {"background": 0, "anterior": 1, "posterior": 1e400}}')
    return ["check", str(root)], Error("posterior")


def _search(root: Path, toml: str) -> list[str]:
    cfg = root / "search.toml"
    cfg.write_text(toml)
    return ["search", "--dataset", str(root), "--config", str(cfg), "--out", str(root.parent / f"{root.name}_run")]


def search_alpha_inf(root):
    return _search(root, "[training]\nalpha = inf\n"), Error("training.alpha")


def search_theta_nan(root):
    return _search(root, "[samea]\ntheta = nan\n"), Error("samea.theta")


def search_plan_override_nan(root):
    return _search(root, "[training.plan]\ntarget_spacing = [1.0, nan, 1.0]\n"), Error("training.plan.target_spacing")


def search_population_absurd(root):
    return _search(root, "[samea]\npopulation = 1000000000\nneighbourhood = 3\n"), Error("samea.population")


def search_plan_patch_absurd(root):
    return _search(root, "[training.plan]\npatch_size = [4096, 4096, 4096]\n"), Error("patch_size")


def duplicate_case_ids_msd(root):
    meta = json.loads((root / "dataset.json").read_text())
    meta["training"].append(dict(meta["training"][1]))
    (root / "dataset.json").write_text(json.dumps(meta))
    return ["check", str(root)], Error("dataset.json")


def duplicate_case_ids_plain(root):
    _plain_nrrd(root, "scan1.raw")
    (root / "images" / "scan1.raw").write_bytes(RAW_BYTES)
    shutil.copy(root / "images" / "scan2.nii.gz", root / "images" / "scan2.nii")  # scan2 twice
    return ["check", str(root)], Error("scan2")


def duplicate_case_ids_promise(root):
    _promise(root)
    (root / "Case01.mha").write_text("ObjectType = Image\nNDims = 3\nDimSize = 16 16 12\nElementType = MET_UCHAR\n"
                                     "ElementDataFile = LOCAL\n" + "\x00" * (16 * 16 * 12))
    return ["check", str(root)], Error("Case01")


# model.json, training.json, predict


def _out(root: Path) -> Path:
    """Where a case's predictions go: outside its folder, whose bytes are compared."""
    return root.parent / f"{root.name}_out"


def _model_json(model: Path, root: Path, edit) -> Path:
    dst = root / "model"
    shutil.copytree(model, dst)
    meta = json.loads((dst / "model.json").read_text())
    edit(meta)
    (dst / "model.json").write_text(json.dumps(meta))
    return dst


def model_json_patch_a_million(root, model, trained):
    dst = _model_json(model, root, lambda m: m["inference"].update(patch_size=[10**6] * 3))
    return ["predict", str(dst), str(img0(root)), "-o", str(_out(root))], Error("inference.patch_size")


def model_json_nan_mean(root, model, trained):
    def edit(m):
        m["plan"]["normalization"][0].update(scheme="ct", clip_low=0.0, clip_high=1.0, mean=float("nan"), std=1.0)
        m["preprocessing"]["normalization"] = m["plan"]["normalization"]

    dst = _model_json(model, root, edit)
    return ["predict", str(dst), str(img0(root)), "-o", str(_out(root))], Error("normalization[0].mean")


def training_json_infinite_label(root, model, trained):
    dst = root / "trained"
    shutil.copytree(trained, dst)
    text = (dst / "training.json").read_text().replace('"white matter": 2', '"white matter": Infinity')
    assert "Infinity" in text
    (dst / "training.json").write_text(text)
    return ["predict", str(dst), str(img0(root)), "-o", str(_out(root))], Error("white matter")


def predict_two_series_in_one_folder(root, model, trained):
    write_dicom_series(root / "dcm", n=8, prefix="a")
    write_dicom_series(root / "dcm", n=8, prefix="b")
    return ["predict", str(trained), str(root / "dcm"), "-o", str(_out(root))], Error("SERIES_UID")


def predict_missing_slice(root, model, trained):
    write_dicom_series(root / "dcm", depths=[0, 2.5, 5, 10, 12.5, 15, 17.5, 20])
    return ["predict", str(trained), str(root / "dcm"), "-o", str(_out(root))], Error("dcm")


def predict_chosen_series(root, model, trained):
    import pydicom

    write_dicom_series(root / "dcm", n=8, gap=2.5, prefix="a", series_uid="1.2.826.0.1.3680043.8.498.1")
    write_dicom_series(root / "dcm", n=6, gap=4.0, prefix="b", series_uid="1.2.826.0.1.3680043.8.498.2")

    def check(res, root):
        out = Path(res["outputs"][0])
        assert out.name == "dcm_1.2.826.0.1.3680043.8.498.2.nii.gz"
        img = nib.load(str(out))
        assert img.shape == (64, 64, 6)  # the chosen series, not the other one
        assert np.allclose(img.header.get_zooms(), (0.3125, 0.3125, 4.0), atol=1e-4)
        seg = pydicom.dcmread(next(iter(res["dicom_seg"].values())))
        refs = {str(r.ReferencedSOPInstanceUID) for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
        chosen = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in (root / "dcm").glob("b*.dcm")}
        assert refs <= chosen  # the DICOM-SEG refers to the chosen series' slices only

    return ["predict", str(trained), f"{root / 'dcm'}#1.2.826.0.1.3680043.8.498.2", "-o", str(_out(root))], \
        Pinned(check)


DATA_CASES = [
    mhd_data_file_absolute, mhd_data_file_dotdot, mhd_data_file_list_escape, mhd_data_file_pattern_escape,
    mhd_data_file_link_out, mhd_data_file_is_fifo, mhd_pattern_of_a_billion_files, nrrd_data_file_absolute,
    nrrd_data_file_list_escape, image_is_a_fifo, label_is_a_fifo, dicom_missing_slice, dicom_uneven_spacing,
    dicom_two_series_same_positions, dicom_segmentation_object_in_series, dicom_structured_report_in_series,
    dicom_fifo_in_series, compressed_bomb, compressed_bomb_skipped, voxels_of_1e30_mm, voxels_of_1e30_mm_skipped,
    voxels_of_1e30_mm_train, small_scan_at_20_mm, rgb_nifti, complex_nifti, rgb_metaimage, labels_json_infinity,
    labels_json_fraction, nnunet_label_overflow, search_alpha_inf, search_theta_nan, search_plan_override_nan,
    search_population_absurd, search_plan_patch_absurd, duplicate_case_ids_msd, duplicate_case_ids_plain,
    duplicate_case_ids_promise,
]
MODEL_CASES = [
    model_json_patch_a_million, model_json_nan_mean, training_json_infinite_label, predict_two_series_in_one_folder,
    predict_missing_slice, predict_chosen_series,
]
CASES = DATA_CASES + MODEL_CASES

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import torch  # noqa: F401  (the helpers build a real network)
    from export_helpers import make_training_folder

    from engine.export.package import export_model

    base = tmp_path_factory.mktemp("hostile2")
    trained = make_training_folder(base / "_trained", seed=2)
    model = base / "_model"
    export_model(trained, model, "onnx")
    jobs, expected = {}, {}
    for build in CASES:
        root = base / build.__name__
        make_msd(root)
        argv, outcome = build(root, model, trained) if build in MODEL_CASES else build(root)
        jobs[build.__name__] = argv + ["--json"]
        # the expected outcome is fixed here, before anything runs
        expected[build.__name__] = (root, outcome, _tree_digest(root), _fifos(root))
    jobs_file, result_file = base / "jobs.json", base / "results.json"
    jobs_file.write_text(json.dumps(jobs))
    code = DRIVER.format(limit=ADDRESS_LIMIT, jobs=str(jobs_file), result=str(result_file), seconds=CASE_SECONDS)
    env = dict(os.environ, EMONAS_CACHE_DIR=str(base / "cache"), EMONAS_NO_PROGRESS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=CASE_SECONDS * len(CASES), env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    results = json.loads(result_file.read_text())
    (base / "seconds.json").write_text(json.dumps({k: round(v["seconds"], 2) for k, v in results.items()}, indent=1))
    return results, expected


def _fifos(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_fifo())


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", [c.__name__ for c in CASES])
def test_hostile_input_gives_its_stated_outcome(case, corpus):
    results, expected = corpus
    res = results[case]
    root, outcome, before, fifos = expected[case]
    text = res["stdout"] + res["stderr"]
    assert "Traceback" not in text, text[-3000:]
    if isinstance(outcome, Error):
        assert res["rc"] == 2, f"exit {res['rc']}:\n{text[-2000:]}"
        errors = [ln for ln in res["stderr"].splitlines() if ln.startswith("emonas: error:")]
        assert len(errors) >= 1 and all(len(ln) < 600 for ln in errors), res["stderr"][-2000:]
        assert outcome.needle in errors[0], res["stderr"][-2000:]
        last = json.loads(res["stdout"].strip().splitlines()[-1])  # --json: an error, or check's report
        assert "error" in last or last.get("ok") is False
        assert not _out(root).exists() or not any(_out(root).iterdir()), "written before the refusal"
        assert not (root.parent / f"{root.name}_run").exists(), "a refused search left a run folder"
    else:
        assert res["rc"] == outcome.rc, f"exit {res['rc']}:\n{text[-2000:]}"
        outcome.check(json.loads(res["stdout"].strip().splitlines()[-1]), root)
    # nothing the user had was changed, FIFOs included (never opened, still there)
    assert _tree_digest(root) == before
    assert _fifos(root) == fifos


def test_a_search_refused_for_its_config_leaves_no_folder_and_then_runs(tmp_path):
    """The refusal comes late (no network fits the device budget, found while asking for the first
    generation); the run folder is removed, and the same folder then takes the fixed search."""
    from dataclasses import replace

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine" / "run"))
    from search_fakes import PROBLEM, fake_evaluate

    from engine.config import SearchConfig
    from engine.errors import ConfigError
    from engine.run import RunStore, SearchSession

    problem = replace(PROBLEM, patch_size=[64, 64, 64])
    small = {"population": 4, "generations": 2, "learning_generations": 1, "surrogate_trees": 10}
    bad = SearchConfig().replace(samea=small, resources={"max_memory_mb": 1.0})
    with pytest.raises(ConfigError, match="max_memory_mb"):
        SearchSession(tmp_path / "run", bad, fake_evaluate, problem).run()
    assert not (tmp_path / "run").exists()
    good = SearchConfig().replace(samea=small)
    summary = SearchSession(tmp_path / "run", good, fake_evaluate, problem).run()
    assert summary["status"] == "finished"
    with RunStore.open_readonly(tmp_path / "run") as s:
        assert len(s.candidates()) == 8


def test_a_folder_that_existed_is_kept_when_a_search_is_refused(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine" / "run"))
    from dataclasses import replace

    from search_fakes import PROBLEM, fake_evaluate

    from engine.config import SearchConfig
    from engine.errors import ConfigError
    from engine.run import SearchSession

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    bad = SearchConfig().replace(samea={"population": 4, "generations": 2, "learning_generations": 1},
                                 resources={"max_memory_mb": 1.0})
    with pytest.raises(ConfigError):
        SearchSession(tmp_path / "run", bad, fake_evaluate, replace(PROBLEM, patch_size=[64, 64, 64])).run()
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
