"""The model folder is a MONAI bundle: MONAI's own bundle tools read it, and its inference config alone
segments a demo scan as `emonas predict` does."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.data.dataset import open_dataset
from engine.data.demo import demo_dataset_path
from engine.data.plan import make_plan
from export_helpers import make_training_folder


def emonas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory) -> Path:
    """A network on the demo dataset's own plan (resampling, cropping, z-score all in play), exported."""
    base = tmp_path_factory.mktemp("bundle")
    dataset = open_dataset(demo_dataset_path())
    trained = make_training_folder(base / "trained", labels=dict(dataset.labels), plan=make_plan(dataset).to_dict(), seed=3)
    r = emonas("export", "--checkpoint", str(trained), "--out", str(base / "model"), "--json")
    assert r.returncode == 0, r.stderr
    return base / "model"


def test_monai_reads_the_bundle(demo_model):
    from monai.bundle import ConfigParser, verify_net_in_out

    meta = json.loads((demo_model / "model.json").read_text())
    for name in ("configs/metadata.json", "configs/inference.json", "models/model.ts"):
        assert hashlib.sha256((demo_model / name).read_bytes()).hexdigest() == meta["files"][name]["sha256"]
    parser = ConfigParser()
    parser.read_meta(str(demo_model / "configs" / "metadata.json"))
    parser.read_config(str(demo_model / "configs" / "inference.json"))
    fmt = parser["_meta_"]["network_data_format"]
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "grey matter", "2": "white matter", "3": "CSF"}
    assert fmt["inputs"]["image"]["num_channels"] == 1
    # MONAI's check: the network from the config takes the declared input and gives the declared output
    verify_net_in_out(net_id="network_def", meta_file=str(demo_model / "configs" / "metadata.json"),
                      config_file=str(demo_model / "configs" / "inference.json"), device="cpu",
                      bundle_root=str(demo_model))


def test_bundle_run_by_monai_segments_like_emonas_predict(demo_model, tmp_path):
    scan = demo_dataset_path() / "imagesTr" / "brain_003.nii.gz"
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(scan, inputs / scan.name)
    r = emonas("predict", str(demo_model), str(scan), "-o", str(tmp_path / "emonas"), "--backend", "torch")
    assert r.returncode == 0, r.stderr
    code = ("from monai.bundle import run; run(run_id='run', init_id='initialize', "
            f"meta_file={str(demo_model / 'configs' / 'metadata.json')!r}, "
            f"config_file={str(demo_model / 'configs' / 'inference.json')!r}, bundle_root={str(demo_model)!r}, "
            f"dataset_dir={str(inputs)!r}, output_dir={str(tmp_path / 'bundle')!r})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    ours = nib.load(str(tmp_path / "emonas" / scan.name))
    theirs = nib.load(str(tmp_path / "bundle" / scan.name.replace(".nii.gz", "_seg.nii.gz")))
    assert np.allclose(theirs.affine, ours.affine, atol=1e-4)
    a, b = np.asarray(ours.dataobj), np.asarray(theirs.dataobj).reshape(ours.shape)
    assert len(np.unique(a)) == 4, "a prediction with fewer labels proves less"
    for value in range(4):
        x, y = a == value, b == value
        dice = 2 * (x & y).sum() / (x.sum() + y.sum())
        assert dice >= 0.99, (value, dice)
