"""Deploying a model folder: ONNX Runtime vs PyTorch parity, geometry of the label maps, the CLI,
DICOM-SEG for DICOM series, tampering refused, and the standalone onnxruntime + numpy + scipy script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from engine.data.preprocess import preprocess_images
from engine.data.io import read_image
from engine.errors import ExportError
from engine.export.deploy import load_model
from engine.export.package import export_model
from export_helpers import dicom_series, make_training_folder

ROOT = Path(__file__).resolve().parents[3]
STANDALONE = ROOT / "resources" / "examples" / "standalone_predict.py"


def emonas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300)


def scan_array(shape, seed: int) -> np.ndarray:
    """A smooth, head-like intensity volume: a blob of tissue textures inside a zero background."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.85
    img = 100 + 400 * field / field.std() + 150 * (np.abs(grid[0]) < 0.3)
    return np.where(inside, img, 0).astype(np.float32)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def rotation_z(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    r = np.eye(4)
    r[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return r


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("deploy")
    tf = make_training_folder(base / "trained", seed=5)
    export_model(tf, base / "model", "onnx,torchscript")
    return base / "model"


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, Path]:
    """One anatomy stored four ways: RAS 1 mm, LPS (flipped storage), oblique, anisotropic."""
    base = tmp_path_factory.mktemp("scans")
    arr = scan_array((40, 36, 28), seed=1)
    ras = np.diag([1.0, 1.0, 1.0, 1.0])
    ras[:3, 3] = [-20, -18, -14]
    lps = ras.copy()
    lps[:3, :3] = np.diag([-1.0, -1.0, 1.0])
    lps[:3, 3] = [19, 17, -14]
    aniso = np.diag([0.8, 1.1, 2.5, 1.0])
    return {
        "ras": write_nifti(base / "ras.nii.gz", arr, ras),
        "lps": write_nifti(base / "lps.nii.gz", arr[::-1, ::-1].copy(), lps),
        "oblique": write_nifti(base / "oblique.nii.gz", arr, rotation_z(20) @ ras),
        "aniso": write_nifti(base / "aniso.nii.gz", scan_array((44, 32, 12), seed=2), aniso),
    }


def test_onnxruntime_and_pytorch_agree(model_dir, scans):
    onnx_model = load_model(model_dir, backend="onnxruntime")
    torch_model = load_model(model_dir, backend="torch")
    plan = onnx_model.plan()
    for name in ("ras", "oblique", "aniso"):
        arr, _ = preprocess_images([read_image(scans[name])], plan)
        a = onnx_model.predictor().predict_logits(arr).numpy()
        b = torch_model.predictor().predict_logits(arr).numpy()
        assert a.shape == (3, *arr.shape[1:])
        assert np.abs(a - b).max() < 1e-4, name
        la, lb = a.argmax(0), b.argmax(0)
        assert (la == lb).mean() >= 0.999
        assert len(np.unique(la)) >= 2, "a test model that predicts one class proves little"


def test_predictions_overlay_each_input_voxel_for_voxel(model_dir, scans, tmp_path):
    from engine.data.io import write_image

    out = tmp_path / "pred"
    ras = nib.load(str(scans["ras"]))
    mha = write_image(tmp_path / "ras_copy.mha", np.asarray(ras.dataobj), ras.affine)  # MetaImage stores LPS
    r = emonas("predict", str(model_dir), *(str(scans[k]) for k in ("ras", "lps", "oblique", "aniso")), str(mha),
               "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["backend"] == "onnxruntime" and result["model_folder"] is True
    assert [Path(p).name for p in result["outputs"]] == [
        "ras.nii.gz", "lps.nii.gz", "oblique.nii.gz", "aniso.nii.gz", "ras_copy.nii.gz"]  # label maps are NIfTI whatever the input
    from_mha = read_image(out / "ras_copy.nii.gz")
    assert from_mha.shape == ras.shape and np.allclose(from_mha.affine, ras.affine, atol=1e-4)
    preds = {}
    for key, src in scans.items():
        pred, img = nib.load(str(out / src.name)), nib.load(str(src))
        assert pred.shape == img.shape
        assert np.allclose(pred.affine, img.affine, atol=1e-4)
        preds[key] = np.asarray(pred.dataobj)
        assert set(np.unique(preds[key])) <= {0, 1, 2}
    # the same anatomy stored flipped (LPS) or with an oblique affine gets the same labels in space
    assert np.array_equal(preds["lps"], preds["ras"][::-1, ::-1])
    assert np.array_equal(preds["oblique"], preds["ras"])
    assert np.array_equal(from_mha.array[0], preds["ras"])
    assert len(np.unique(preds["aniso"])) >= 2


def test_torch_backend_matches_onnx_on_files(model_dir, scans, tmp_path):
    a = load_model(model_dir, "onnxruntime").predict_files([[scans["aniso"]], [scans["lps"]]], tmp_path / "a")
    b = load_model(model_dir, "torch").predict_files([[scans["aniso"]], [scans["lps"]]], tmp_path / "b")
    for pa, pb in zip(a, b):
        la, lb = np.asarray(nib.load(str(pa)).dataobj), np.asarray(nib.load(str(pb)).dataobj)
        assert (la == lb).mean() >= 0.999


def test_standalone_script_matches_the_engine(model_dir, scans, tmp_path):
    engine_out = load_model(model_dir).predict_files([[scans["lps"]], [scans["aniso"]]], tmp_path / "engine")
    for src, ref in zip((scans["lps"], scans["aniso"]), engine_out):
        out = tmp_path / f"standalone_{src.name}"
        # run as a user would, from a folder where the project cannot be imported
        r = subprocess.run([sys.executable, str(STANDALONE), str(model_dir), str(out), str(src)],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        got, want = nib.load(str(out)), nib.load(str(ref))
        assert got.shape == want.shape and np.allclose(got.affine, want.affine, atol=1e-4)
        agree = (np.asarray(got.dataobj) == np.asarray(want.dataobj)).mean()
        assert agree >= 0.999, agree
    assert "import engine" not in STANDALONE.read_text() and "from engine" not in STANDALONE.read_text()
    # the arguments swapped (scan where the output goes): one line, and the scan is left as it was
    before = scans["lps"].read_bytes()
    r = subprocess.run([sys.executable, str(STANDALONE), str(model_dir), str(scans["lps"]), str(tmp_path / "no.nii.gz")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr == f"error: {tmp_path / 'no.nii.gz'}: no such scan\n"
    r = subprocess.run([sys.executable, str(STANDALONE), str(model_dir), str(scans["lps"]), str(scans["lps"])],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and "would overwrite an input scan" in r.stderr and "Traceback" not in r.stderr
    assert scans["lps"].read_bytes() == before


def test_multimodal_case_option(tmp_path, scans):
    tf = make_training_folder(tmp_path / "t", modalities=("T1", "FLAIR"), seed=2)
    export_model(tf, tmp_path / "m", "onnx")
    second = write_nifti(tmp_path / "flair.nii.gz", scan_array((40, 36, 28), seed=9), nib.load(str(scans["ras"])).affine)
    r = emonas("predict", str(tmp_path / "m"), "--case", f"{scans['ras']},{second}", "-o", str(tmp_path / "o"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["outputs"] == [str(tmp_path / "o" / "ras.nii.gz")]
    r = emonas("predict", str(tmp_path / "m"), "--case", str(second), "-o", str(tmp_path / "o2"))
    assert r.returncode == 2 and "FLAIR" in r.stderr and "Traceback" not in r.stderr


def test_tampered_model_folder_is_refused_by_predict(model_dir, scans, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    r = emonas("predict", str(bad), str(scans["ras"]), "-o", str(tmp_path / "o"), "--json")
    assert r.returncode == 2
    assert "model.onnx: checksum mismatch" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "o" / "ras.nii.gz").exists()
    with pytest.raises(ExportError, match="checksum mismatch"):
        load_model(bad, backend="torch")


def test_dicom_series_gives_nifti_and_dicom_seg(model_dir, tmp_path):
    import highdicom as hd
    import pydicom

    series = dicom_series(tmp_path / "series")
    r = emonas("predict", str(model_dir), str(series), "-o", str(tmp_path / "out"), "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    nifti = Path(result["outputs"][0])
    assert nifti.name == "series.nii.gz"
    img = read_image(series)
    pred = nib.load(str(nifti))
    assert pred.shape == img.shape and np.allclose(pred.affine, img.affine, atol=1e-4)
    labels = np.asarray(pred.dataobj)
    assert labels.any(), "a DICOM-SEG of an empty label map proves little"
    seg = hd.seg.segread(result["dicom_seg"][str(nifti)])
    assert seg.number_of_segments == 2
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["grey matter", "white matter"]
    # every slice of the SEG equals the NIfTI label map on that source slice
    inv = np.linalg.inv(img.affine)
    for f in series.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        k = int(round((inv[:3, :3] @ (np.array([-1, -1, 1]) * np.array([float(v) for v in ds.ImagePositionPatient])) + inv[:3, 3])[2]))
        want = labels[:, :, k].T
        got = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], combine_segments=True,
                                                assert_missing_frames_are_empty=True)[0]
        assert np.array_equal(got, want), k


def test_unavailable_device_or_backend_is_a_clear_error(model_dir, scans, tmp_path):
    import torch

    if not torch.cuda.is_available():
        r = emonas("predict", str(model_dir), str(scans["ras"]), "-o", str(tmp_path / "o"), "--backend", "torch",
                   "--device", "cuda")
        assert r.returncode == 2 and "cuda" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(Exception, match="backend must be one of"):
        load_model(model_dir, backend="tensorrt")


def test_standalone_script_follows_ct_normalization_mirroring_and_largest_component(scans, tmp_path):
    """The other branches of model.json: CT clipping, z-score inside the non-zero mask, test-time
    mirroring and largest-component post-processing, with cubic resampling of an anisotropic scan."""
    from engine.data.plan import Plan

    plan = Plan(
        target_spacing=(1.0, 1.0, 1.5), patch_size=(32, 32, 16), batch_size=2,
        normalization=[{"modality": "CT", "scheme": "ct", "clip_low": 0.0, "clip_high": 600.0, "mean": 250.0,
                        "std": 180.0},
                       {"modality": "T1", "scheme": "zscore", "use_nonzero_mask": True, "clip_sigma": 3.0}],
        pool_schedule=[(2, 2, 2)] * 4, modalities=["CT", "T1"], labels={"background": 0, "organ": 1, "lesion": 4},
        resampling={"image_order": 3, "label": "linear_per_label"},
    ).to_dict()
    tf = make_training_folder(tmp_path / "t", labels={"background": 0, "organ": 1, "lesion": 4},
                              modalities=("CT", "T1"), plan=plan, seed=3)
    meta = json.loads((tf / "training.json").read_text())
    meta["inference"] = {"mirror_axes": [0, 1, 2], "keep_largest_component": True}
    (tf / "training.json").write_text(json.dumps(meta))
    model = tmp_path / "m"
    export_model(tf, model, "onnx")
    second = write_nifti(tmp_path / "t1.nii.gz", scan_array((44, 32, 12), seed=4),
                         nib.load(str(scans["aniso"])).affine)
    (ref,) = load_model(model).predict_files([[scans["aniso"], second]], tmp_path / "engine")
    out = tmp_path / "standalone.nii.gz"
    r = subprocess.run([sys.executable, str(STANDALONE), str(model), str(out), str(scans["aniso"]), str(second)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got, want = np.asarray(nib.load(str(out)).dataobj), np.asarray(nib.load(str(ref)).dataobj)
    assert set(np.unique(want)) <= {0, 1, 4} and len(np.unique(want)) >= 2
    assert (got == want).mean() >= 0.999


def test_standalone_script_resamples_thick_slices_apart_as_the_engine(tmp_path):
    """An anisotropic plan (separate z): cubic within each slice, nearest across 4 mm slices, in the
    engine and in the standalone script alike (preprocessed arrays and label maps)."""
    import importlib.util

    from engine.data.plan import Plan

    plan = Plan(
        target_spacing=(0.9, 0.9, 3.0), patch_size=(32, 32, 8), batch_size=2,
        normalization=[{"modality": "T2", "scheme": "zscore", "use_nonzero_mask": False}],
        pool_schedule=[(2, 2, 1)] * 4, modalities=["T2"], labels={"background": 0, "gland": 1, "zone": 2},
        resampling={"image_order": 3, "label": "linear_per_label", "separate_z": True},
    )
    tf = make_training_folder(tmp_path / "t", labels=plan.labels, modalities=("T2",), plan=plan.to_dict(), seed=6)
    model = tmp_path / "m"
    export_model(tf, model, "onnx")
    meta = json.loads((model / "model.json").read_text())
    assert meta["preprocessing"]["resampling"]["separate_z"] is True
    scan = write_nifti(tmp_path / "t2.nii.gz", scan_array((40, 44, 10), seed=7), np.diag([0.7, 0.7, 4.0, 1.0]))
    engine_arr, props = preprocess_images([read_image(scan)], load_model(model).plan())
    assert props["separate_z_axis"] == 2 and engine_arr.shape[3] > props["cropped_shape"][2]  # resampled in z
    spec = importlib.util.spec_from_file_location("standalone_predict", STANDALONE)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    arr, geometry = script.preprocess([nib.load(str(scan))], meta)
    assert geometry["separate_z_axis"] == 2
    assert np.abs(arr - engine_arr).max() < 1e-4
    (ref,) = load_model(model).predict_files([[scan]], tmp_path / "engine")
    out = tmp_path / "standalone.nii.gz"
    r = subprocess.run([sys.executable, str(STANDALONE), str(model), str(out), str(scan)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got, want = np.asarray(nib.load(str(out)).dataobj), np.asarray(nib.load(str(ref)).dataobj)
    assert len(np.unique(want)) >= 2, "a test model that predicts one class proves little"
    assert (got == want).mean() >= 0.999


def test_prediction_loads_no_training_or_search_code(model_dir, scans, tmp_path):
    code = (
        "import sys\n"
        "from engine.export import load_model\n"
        f"load_model({str(model_dir)!r}).predict_files([[{str(scans['ras'])!r}]], {str(tmp_path / 'o')!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('engine.train', 'engine.run', 'engine.search'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "o" / "ras.nii.gz").is_file()
