"""nnU-Net v2's ``ignore`` label: no class of the network, left out of the loss, sampling and metrics."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from engine.data import open_dataset
from engine.errors import DataError
from engine.infer.metrics import case_metrics
from engine.train.losses import DiceCELoss, SoftDiceLoss
from engine.train.sampling import foreground_locations
from test_search_cli import cli, last_json

GENOME = ('{"in2": 0, "in3": 1, "in4": 2, "op1": "conv3d_3x3x3", "op2": "conv3d_3x3x3", "op3": "conv3d_1x1x1", '
          '"op4": "identity", "n_cells": 5, "nf1": 8, "lr": 0.003}')


def test_ignore_voxels_change_neither_loss_nor_dice_term():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 8, 8, 8), generator=g)
    ignored = torch.zeros_like(target, dtype=torch.bool)
    ignored[:, :4] = True
    with_ignore = target.masked_fill(ignored, 3)  # class index 3 of a 3-class network: the ignore label
    other = logits.clone()
    other[ignored[:, None].expand_as(other)] = torch.randn(int(ignored.sum()) * 3, generator=g) * 5
    for loss in (DiceCELoss(), SoftDiceLoss()):
        a, da = loss(logits, with_ignore)
        b, db = loss(other, with_ignore)  # the network says anything where nothing is annotated
        assert torch.isfinite(a) and a.item() == pytest.approx(b.item(), rel=1e-6) and da.item() == pytest.approx(db.item(), rel=1e-6)
        kept, _ = loss(logits[:, :, 4:], target[:, 4:])  # the same as training on the annotated voxels only
        assert a.item() == pytest.approx(kept.item(), rel=1e-5)
        assert loss(logits, target)[0].item() != pytest.approx(a.item(), rel=1e-3)  # the ignored voxels did count before


def test_ignore_voxels_change_no_metric_and_are_not_sampled():
    ref = np.zeros((20, 20, 10), np.uint8)
    ref[4:12, 4:12, 2:6] = 1
    ref[12:16, 4:12, 2:6] = 3  # unannotated (the ignore label's index)
    pred = ref.copy()
    pred[ref == 3] = 0
    other = pred.copy()
    other[12:16, 4:12, 2:6] = 1  # the prediction differs only where nothing is annotated
    a = case_metrics(pred, ref, (1, 1, 2), {"fg": 1, "two": 2}, ignore=3)
    b = case_metrics(other, ref, (1, 1, 2), {"fg": 1, "two": 2}, ignore=3)
    assert a == b and a["fg"]["dice"] == 1.0 and a["fg"]["hd"] == 0.0
    assert case_metrics(other, ref, (1, 1, 2), {"fg": 1})["fg"]["dice"] < 1.0  # without ignore it would count
    locations = foreground_locations(ref, 3, np.random.default_rng(0))
    assert set(locations) == {1}  # foreground oversampling never centres a patch on unannotated voxels


@pytest.fixture(scope="module")
def ignore_dataset(nnunet_factory, tmp_path_factory):
    """Demo cases in nnU-Net's layout whose label maps leave a slab unannotated (value 4, named ignore)."""
    root = nnunet_factory(tmp_path_factory.mktemp("Dataset002_ignore"), n_train=5, n_test=0)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"]["ignore"] = 4
    (root / "dataset.json").write_text(json.dumps(meta))
    for path in sorted((root / "labelsTr").iterdir()):
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj).astype(np.uint8)
        arr[:, :, arr.shape[2] // 2:] = 4
        nib.save(nib.Nifti1Image(arr, img.affine, img.header), str(path))
    return root


def test_training_leaves_the_ignore_label_out_of_the_network(ignore_dataset, tmp_path, capsys):
    ds = open_dataset(ignore_dataset)
    assert ds.labels["ignore"] == 4
    out = tmp_path / "trained"
    result = last_json(cli(capsys, "train", "--dataset", ignore_dataset, "--genome", GENOME, "--out", out, "--epochs", 1,
                           "--iterations-per-epoch", 1, "--patch", "32,32,32", "--batch", 1, "--device", "cpu",
                           "--cache-dir", tmp_path / "cache", "--json"))
    assert set(result["dice"]) == {"grey matter", "white matter", "CSF"}
    assert set(result["validation"]) == {"grey matter", "white matter", "CSF"}
    meta = json.loads((out / "training.json").read_text())
    assert meta["num_classes"] == 4 and "ignore" not in meta["labels"]
    weights = torch.load(out / "weights.pt", weights_only=True)
    assert [v.shape[0] for k, v in weights.items() if k.endswith("weight")][-1] == 4  # four output channels

    # `emonas evaluate` with the dataset's labels: the unannotated voxels are no class and change nothing
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    src = sorted((ignore_dataset / "labelsTr").iterdir())[0]
    arr = np.asarray(nib.load(str(src)).dataobj).astype(np.uint8)
    nib.save(nib.load(str(src)), str(ref / src.name))
    guess = np.where(arr == 4, 2, arr).astype(np.uint8)  # "white matter" all over the unannotated slab
    nib.save(nib.Nifti1Image(guess, nib.load(str(src)).affine), str(pred / src.name))
    ev = last_json(cli(capsys, "evaluate", "--pred", pred, "--ref", ref, "--labels", ignore_dataset / "dataset.json",
                       "--json"))
    assert set(ev["labels"]) == {"grey matter", "white matter", "CSF"}
    assert all(m["dice"] == 1.0 for m in ev["per_case"][src.name[:-7]].values())


def test_ignore_must_be_the_highest_label_and_regions_are_refused(nnunet_factory, tmp_path):
    root = nnunet_factory(tmp_path / "ds", n_train=2, n_test=0)
    meta = json.loads((root / "dataset.json").read_text())
    bad = {**meta, "labels": {"background": 0, "ignore": 1, "grey matter": 2}}
    (root / "dataset.json").write_text(json.dumps(bad))
    with pytest.raises(DataError, match="'ignore' label must have the highest value"):
        open_dataset(root)
    regions = {**meta, "labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3]}, "regions_class_order": [1, 2]}
    (root / "dataset.json").write_text(json.dumps(regions))
    with pytest.raises(DataError, match="region-based training .* is not supported") as exc:
        open_dataset(root)
    assert str(root / "dataset.json") in str(exc.value)
