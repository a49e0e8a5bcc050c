"""A corpus of malformed and hostile inputs, each generated here, each answered by the CLI with a
clear error (exit 2, no traceback, the offending file named), within 8 GB of address space, with
everything else left intact.

All cases run in one child process (importing torch once) whose address space is limited with
RLIMIT_AS, calling ``engine.cli.main`` as the ``emonas`` script does; a few also run as real
``emonas`` subprocesses.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ADDRESS_LIMIT = 8_000_000 * 1024  # `ulimit -v 8000000`

# --------------------------------------------------------------------------------------- builders


def _nifti(path: Path, array: np.ndarray, affine=None, dtype=None) -> Path:
    arr = np.asarray(array, dtype=dtype or array.dtype)
    img = nib.Nifti1Image(arr, np.diag([1.0, 1.0, 1.5, 1.0]) if affine is None else affine)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def _sform_only(path: Path, array: np.ndarray, affine: np.ndarray, zooms=None) -> Path:
    """Write a NIfTI whose only geometry is a (possibly degenerate) sform, as broken exporters do."""
    img = nib.Nifti1Image(np.asarray(array), None)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(None, code=0)
    if zooms is not None:
        img.header["pixdim"][1:4] = zooms
    nib.save(img, str(path))
    return path


def make_msd(root: Path, n: int = 3, shape=(16, 16, 12)) -> Path:
    """A small valid MSD-layout dataset: one T1 modality, labels 0, 1, 2."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(n):
        img = rng.normal(100, 20, shape).astype(np.float32)
        lab = np.zeros(shape, np.uint8)
        lab[4:10, 4:10, 3:8] = 1
        lab[10:13, 4:10, 3:8] = 2
        _nifti(root / "imagesTr" / f"case_{i:03d}.nii.gz", img)
        _nifti(root / "labelsTr" / f"case_{i:03d}.nii.gz", lab)
        training.append({"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    meta = {
        "name": "hostile-base",
        "modality": {"0": "T1"},
        "labels": {"0": "background", "1": "anterior", "2": "posterior"},
        "numTraining": n,
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def _meta(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def _set_meta(root: Path, meta: dict) -> None:
    (root / "dataset.json").write_text(json.dumps(meta))


def img0(root: Path) -> Path:
    return root / "imagesTr" / "case_000.nii.gz"


def lab0(root: Path) -> Path:
    return root / "labelsTr" / "case_000.nii.gz"


def _raw_header(shape, pixdim=(1.0, 1.0, 1.0), dtype=np.float32) -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(dtype)
    hdr.set_data_shape(shape)
    hdr.set_zooms(pixdim[: len(shape)] + (1.0,) * max(0, len(shape) - 3))
    hdr.set_qform(np.eye(4), code=1)
    hdr.set_sform(np.eye(4), code=1)
    return hdr.binaryblock + b"\x00" * 4


# Each builder edits a fresh copy of the base dataset and returns (argv, needle): the command to run
# and a string the error must contain (usually the offending file's name).


def truncated_gz(root):
    data = img0(root).read_bytes()
    img0(root).write_bytes(data[: len(data) // 2])
    return ["check", str(root)], "case_000.nii.gz"


def corrupted_gz(root):
    data = bytearray(img0(root).read_bytes())
    for i in range(40, len(data) - 20, 7):
        data[i] ^= 0x5A
    img0(root).write_bytes(bytes(data))
    return ["check", str(root)], "case_000.nii.gz"


def wrong_magic(root):
    img0(root).write_bytes(gzip.compress(b"NOT A NIFTI FILE" * 100))
    return ["check", str(root)], "case_000.nii.gz"


def plain_text_as_image(root):
    img0(root).unlink()
    p = root / "imagesTr" / "case_000.nii.gz"
    p.write_text("patient notes, not an image\n")
    return ["check", str(root)], "case_000.nii.gz"


def empty_file(root):
    img0(root).write_bytes(b"")
    return ["check", str(root)], "case_000.nii.gz"


def absurd_dimensions(root):
    # a header claiming 30000^3 float32 voxels (~100 TB); the data is a few bytes
    img0(root).write_bytes(gzip.compress(_raw_header((30000, 30000, 30000)) + b"\x00" * 64))
    return ["check", str(root)], "case_000.nii.gz"


def absurd_dimensions_uncompressed(root):
    img0(root).unlink()
    meta = _meta(root)
    meta["training"][0]["image"] = "./imagesTr/case_000.nii"
    _set_meta(root, meta)
    (root / "imagesTr" / "case_000.nii").write_bytes(_raw_header((32767, 32767, 32767), dtype=np.float64))
    return ["check", str(root)], "case_000.nii"


def zero_spacing(root):
    a = nib.load(str(img0(root)))
    aff = a.affine.copy()
    aff[2, 2] = 0.0
    _sform_only(img0(root), np.asarray(a.dataobj), aff, zooms=(1.0, 1.0, 0.0))
    return ["check", str(root)], "case_000.nii.gz"


def negative_pixdim(root):
    a = nib.load(str(img0(root)))
    hdr = a.header.copy()
    hdr["pixdim"][1] = -1.0
    hdr.set_qform(None, code=0)
    hdr.set_sform(None, code=0)
    nib.save(nib.Nifti1Image(np.asarray(a.dataobj), None, hdr), str(img0(root)))
    return ["check", str(root)], "case_000.nii.gz"


def nan_affine(root):
    a = nib.load(str(img0(root)))
    aff = a.affine.copy()
    aff[0, 3] = np.nan
    _sform_only(img0(root), np.asarray(a.dataobj), aff)
    return ["check", str(root)], "case_000.nii.gz"


def shape_mismatch(root):
    _nifti(lab0(root), np.zeros((16, 16, 10), np.uint8))
    return ["check", str(root)], "case_000"


def geometry_mismatch(root):
    lab = nib.load(str(lab0(root)))
    aff = lab.affine.copy()
    aff[:3, 3] += 25.0
    _nifti(lab0(root), np.asarray(lab.dataobj), aff)
    return ["check", str(root)], "case_000"


def undeclared_label(root):
    lab = np.asarray(nib.load(str(lab0(root))).dataobj).copy()
    lab[0, 0, 0] = 7
    _nifti(lab0(root), lab)
    return ["check", str(root)], "case_000.nii.gz"


def non_integer_label(root):
    lab = np.asarray(nib.load(str(lab0(root))).dataobj).astype(np.float32)
    lab[5, 5, 5] = 0.5
    _nifti(lab0(root), lab)
    return ["check", str(root)], "case_000.nii.gz"


def nan_intensities(root):
    a = nib.load(str(img0(root)))
    arr = np.asarray(a.dataobj).astype(np.float32)
    arr[3, 3, 3] = np.nan
    _nifti(img0(root), arr, a.affine)
    return ["check", str(root)], "case_000.nii.gz"


def inf_intensities(root):
    a = nib.load(str(img0(root)))
    arr = np.asarray(a.dataobj).astype(np.float32)
    arr[3, 3, 3] = np.inf
    _nifti(img0(root), arr, a.affine)
    return ["check", str(root)], "case_000.nii.gz"


def two_d_image(root):
    _nifti(img0(root), np.zeros((16, 16), np.float32))
    _nifti(lab0(root), np.zeros((16, 16), np.uint8))
    return ["check", str(root)], "case_000"


def five_d_image(root):
    _nifti(img0(root), np.zeros((16, 16, 12, 2, 2), np.float32))
    return ["check", str(root)], "case_000.nii.gz"


def channel_count_mismatch(root):
    _nifti(img0(root), np.zeros((16, 16, 12, 3), np.float32))
    return ["check", str(root)], "case_000.nii.gz"


def label_without_image(root):
    img0(root).unlink()
    return ["check", str(root)], "case_000"


def missing_dataset_json_entries(root):
    meta = _meta(root)
    del meta["training"]
    _set_meta(root, meta)
    return ["check", str(root)], "dataset.json"


def dataset_json_not_json(root):
    (root / "dataset.json").write_text("{'name': 'oops',")
    return ["check", str(root)], "dataset.json"


def dataset_json_wrong_types(root):
    meta = _meta(root)
    meta["labels"] = ["background", "anterior"]
    meta["training"] = "everything"
    _set_meta(root, meta)
    return ["check", str(root)], "dataset.json"


def huge_dataset_json(root):
    meta = _meta(root)
    meta["description"] = "x" * (300 * 2**20)  # 300 MB of text
    with open(root / "dataset.json", "w") as f:
        json.dump(meta, f)
    return ["check", str(root)], "dataset.json"


def path_traversal(root):
    meta = _meta(root)
    meta["training"][0]["image"] = "../../../../etc/passwd"
    _set_meta(root, meta)
    return ["check", str(root)], "etc/passwd"


def absolute_path_entry(root):
    meta = _meta(root)
    meta["training"][0]["label"] = "/etc/shadow"
    _set_meta(root, meta)
    return ["check", str(root)], "/etc/shadow"


def symlink_loop(root):
    os.symlink(root / "imagesTr" / "loop_b.nii.gz", root / "imagesTr" / "loop_a.nii.gz")
    os.symlink(root / "imagesTr" / "loop_a.nii.gz", root / "imagesTr" / "loop_b.nii.gz")
    meta = _meta(root)
    meta["training"][0]["image"] = "./imagesTr/loop_a.nii.gz"
    _set_meta(root, meta)
    return ["check", str(root)], "loop_a.nii.gz"


def directory_symlink_loop(root):
    os.symlink(root, root / "imagesTr" / "again")
    shutil.rmtree(root / "labelsTr")
    os.symlink(root / "labelsTr", root / "labelsTr")  # a link to itself
    return ["check", str(root)], "labelsTr"


def image_is_a_directory(root):
    img0(root).unlink()
    img0(root).mkdir()
    return ["check", str(root)], "case_000.nii.gz"


def mhd_missing_raw(root):
    for p in list(root.iterdir()):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    (root / "Case00.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 16 16 12\nElementType = MET_FLOAT\n"
        "ElementSpacing = 0.6 0.6 3.6\nElementDataFile = Case00.raw\n"
    )
    (root / "Case00_segmentation.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 16 16 12\nElementType = MET_UCHAR\n"
        "ElementSpacing = 0.6 0.6 3.6\nElementDataFile = Case00_segmentation.raw\n"
    )
    (root / "Case00_segmentation.raw").write_bytes(b"\x00" * 16 * 16 * 12)
    return ["check", str(root)], "Case00"


def mhd_absurd_dims(root):
    for p in list(root.iterdir()):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    for name, et in (("Case01", "MET_DOUBLE"), ("Case01_segmentation", "MET_UCHAR")):
        (root / f"{name}.mhd").write_text(
            f"ObjectType = Image\nNDims = 3\nDimSize = 40000 40000 40000\nElementType = {et}\n"
            f"ElementSpacing = 1 1 1\nElementDataFile = {name}.raw\n"
        )
        (root / f"{name}.raw").write_bytes(b"\x00" * 1024)
    return ["check", str(root)], "Case01"


def nrrd_garbage(root):
    for p in list(root.iterdir()):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    (root / "images").mkdir()
    (root / "labels").mkdir()
    (root / "images" / "scan1.nrrd").write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 9 9\nencoding: raw\n\n\x00\x01")
    (root / "labels" / "scan1.nrrd").write_bytes(b"NRRD0004\n\x00garbage")
    return ["check", str(root)], "scan1.nrrd"


def empty_dataset(root):
    meta = _meta(root)
    meta["training"] = []
    _set_meta(root, meta)
    return ["check", str(root)], "dataset.json"


def not_a_dataset(root):
    target = root / "notes.txt"
    target.write_text("hello")
    return ["check", str(target)], "notes.txt"


def missing_folder(root):
    return ["check", str(root / "does-not-exist")], "does-not-exist"


def search_config_out_of_range(root):
    cfg = root / "search.toml"
    cfg.write_text("[samea]\npopulation = -3\ngenerations = 0\ntheta = -1.0\n")
    return ["search", "--dataset", str(root), "--config", str(cfg), "--out", str(root / "run")], "population"


def search_config_not_toml(root):
    cfg = root / "search.toml"
    cfg.write_text("[samea\npopulation = = 3\n")
    return ["search", "--dataset", str(root), "--config", str(cfg), "--out", str(root / "run")], "search.toml"


def search_config_unknown_op(root):
    cfg = root / "search.toml"
    cfg.write_text('[space]\nop1 = ["conv3d_3x3x3", "conv9d_hyper"]\n')
    return ["search", "--dataset", str(root), "--config", str(cfg), "--out", str(root / "run")], "conv9d_hyper"


def genome_with_absurd_values(root):
    g = {"in2": 1, "in3": 0, "in4": 2, "op1": "p3d_3x3x3", "op2": "conv3d_3x3x3", "op3": "conv2d_5x5x1",
         "op4": "conv3d_1x1x1", "n_cells": 10**12, "nf1": 2**40, "lr": 1e308}
    f = root / "genome.json"
    f.write_text(json.dumps(g))
    return ["params", "--genome", str(f)], "n_cells"


def _outside_scan(root: Path) -> Path:
    """A valid scan next to (not inside) the dataset folder: what a link out of the folder points at."""
    return _nifti(root.parent / f"{root.name}_outside" / "scan.nii.gz", np.zeros((16, 16, 12), np.float32))


def plain_folder_link_out_of_root(root):
    outside = _outside_scan(root)
    (root / "dataset.json").unlink()
    (root / "imagesTr").rename(root / "images")
    (root / "labelsTr").rename(root / "labels")
    (root / "images" / "case_000.nii.gz").unlink()
    os.symlink(outside, root / "images" / "case_000.nii.gz")
    return ["check", str(root)], "outside the dataset folder"


def nnunet_link_out_of_root(root):
    outside = _outside_scan(root)
    for i in range(3):
        img = root / "imagesTr" / f"case_{i:03d}.nii.gz"
        img.rename(root / "imagesTr" / f"case_{i:03d}_0000.nii.gz")
    (root / "imagesTr" / "case_001_0000.nii.gz").unlink()
    os.symlink(outside, root / "imagesTr" / "case_001_0000.nii.gz")
    _set_meta(root, {"channel_names": {"0": "T1"}, "labels": {"background": 0, "anterior": 1, "posterior": 2},
                     "numTraining": 3, "file_ending": ".nii.gz"})
    return ["check", str(root)], "case_001_0000.nii.gz"


CASES = [
    truncated_gz, corrupted_gz, wrong_magic, plain_text_as_image, empty_file, absurd_dimensions,
    absurd_dimensions_uncompressed, zero_spacing, negative_pixdim, nan_affine, shape_mismatch,
    geometry_mismatch, undeclared_label, non_integer_label, nan_intensities, inf_intensities, two_d_image,
    five_d_image, channel_count_mismatch, label_without_image, missing_dataset_json_entries,
    dataset_json_not_json, dataset_json_wrong_types, huge_dataset_json, path_traversal, absolute_path_entry,
    symlink_loop, directory_symlink_loop, image_is_a_directory, mhd_missing_raw, mhd_absurd_dims,
    nrrd_garbage, empty_dataset, not_a_dataset, missing_folder, search_config_out_of_range,
    search_config_not_toml, search_config_unknown_op, genome_with_absurd_values,
    plain_folder_link_out_of_root, nnunet_link_out_of_root,
]

#: Seconds one case may take before it counts as hung (a FIFO opened, a resampling without end).
CASE_SECONDS = 60

DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, resource, signal, sys, time, traceback
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    sys.argv = ["emonas", "--json"]  # the parser's error path looks at sys.argv for --json
    from engine.cli import main

    def hung(signum, frame):
        raise TimeoutError("case ran over {seconds} s")

    signal.signal(signal.SIGALRM, hung)
    out = {{}}
    for name, argv in json.load(open({jobs!r})).items():
        so, se = io.StringIO(), io.StringIO()
        signal.alarm({seconds})
        t0 = time.monotonic()
        with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
            except BaseException:
                rc = "crash"
                traceback.print_exc()
        signal.alarm(0)
        out[name] = {{"rc": rc, "stdout": so.getvalue(), "stderr": se.getvalue(), "seconds": time.monotonic() - t0}}
    json.dump(out, open({result!r}, "w"))
    """
)


def _tree_digest(root: Path) -> dict[str, str]:
    d = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.stat().st_size < 50 * 2**20:
            d[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return d


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    jobs, digests = {}, {}
    for build in CASES:
        root = base / build.__name__
        make_msd(root)
        argv, needle = build(root)
        jobs[build.__name__] = argv + ["--json"]
        digests[build.__name__] = (root, _tree_digest(root), needle)
    jobs_file, result_file = base / "jobs.json", base / "results.json"
    jobs_file.write_text(json.dumps(jobs))
    code = DRIVER.format(limit=ADDRESS_LIMIT, jobs=str(jobs_file), result=str(result_file), seconds=CASE_SECONDS)
    env = dict(os.environ, EMONAS_CACHE_DIR=str(base / "cache"), EMONAS_NO_PROGRESS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(result_file.read_text()), digests


@pytest.mark.parametrize("case", [c.__name__ for c in CASES])
def test_hostile_input_gives_a_clear_one_line_error(case, corpus_results):
    results, digests = corpus_results
    res = results[case]
    root, before, needle = digests[case]
    text = res["stdout"] + res["stderr"]
    assert res["rc"] == 2, f"exit {res['rc']}:\n{text[-2000:]}"
    assert "Traceback" not in text
    errors = [l for l in res["stderr"].splitlines() if l.strip()]
    assert errors and all(len(l) < 600 for l in errors), res["stderr"][-2000:]
    assert needle in res["stderr"], res["stderr"][-2000:]
    # --json: the last line of output is one JSON object
    assert isinstance(json.loads(res["stdout"].strip().splitlines()[-1]), dict)
    # nothing the user had was changed
    assert _tree_digest(root) == before


def test_the_real_script_answers_the_same(tmp_path):
    root = make_msd(tmp_path / "ds")
    truncated_gz(root)
    exe = Path(sys.executable).with_name("emonas")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "engine.cli"]
    r = subprocess.run(
        ["bash", "-c", f"ulimit -v 8000000; exec \"$@\"", "sh", *cmd, "check", str(root)],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, EMONAS_CACHE_DIR=str(tmp_path / "c")),
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "case_000.nii.gz" in r.stderr
