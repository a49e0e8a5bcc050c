"""An nnU-Net v2 raw dataset folder built from real demo cases (imagesTr, labelsTr, imagesTs, labelsTs)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "run"))  # the search CLI tests' tiny config and helpers
sys.path.insert(0, str(Path(__file__).parents[1] / "export"))  # real training folders
from test_search_cli import TINY  # noqa: E402


def make_nnunet(dst, n_train=6, n_test=2, modalities=("T1",)):
    """Demo cases in nnU-Net v2's raw layout; with two modalities the second channel is the first
    scan again (a real file with the same geometry). Returns the dataset folder."""
    from engine.data.demo import demo_dataset_path

    src = demo_dataset_path()
    meta = json.loads((src / "dataset.json").read_text())
    entries = meta["training"][: n_train + n_test]
    for d in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (dst / d).mkdir(parents=True)
    for i, entry in enumerate(entries):
        part = "Tr" if i < n_train else "Ts"
        cid = f"brain_{i:03d}"
        for c in range(len(modalities)):
            shutil.copy(src / entry["image"], dst / f"images{part}" / f"{cid}_{c:04d}.nii.gz")
        shutil.copy(src / entry["label"], dst / f"labels{part}" / f"{cid}.nii.gz")
    (dst / "dataset.json").write_text(json.dumps({
        "name": "demo-nnunet", "channel_names": {str(i): m for i, m in enumerate(modalities)},
        "labels": {"background": 0, "grey matter": 1, "white matter": 2, "CSF": 3},
        "numTraining": n_train, "file_ending": ".nii.gz",
    }))
    return dst


@pytest.fixture(scope="session")
def nnunet_dataset(tmp_path_factory):
    return make_nnunet(tmp_path_factory.mktemp("Dataset001_demo"))


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(TINY.replace("iterations_per_epoch = 2", "iterations_per_epoch = 1"))
    return path


@pytest.fixture(scope="session")
def nnunet_factory():
    """``make_nnunet`` itself, for tests that need their own variant of the folder."""
    return make_nnunet
