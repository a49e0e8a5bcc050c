"""Layouts detected from small generated trees; the Dataset and its reproducible split."""

import json
from pathlib import Path

import pytest

from data_helpers import make_acdc, make_msd, make_nnunet, make_plain, make_promise, write_dicom_series
from engine.data import open_dataset
from engine.errors import ConfigError, DataError


def test_msd(tmp_path):
    ds = open_dataset(make_msd(tmp_path / "Task99", n=5))
    assert ds.layout == "msd"
    assert ds.labels == {"background": 0, "part 1": 1, "part 2": 2}
    assert ds.num_classes == 3 and ds.modalities == ["MRI"]
    assert [c.case_id for c in ds.cases] == [f"case_{i:03d}" for i in range(5)]
    assert ds.cases[0].image_paths[0].name == "case_000.nii.gz" and ds.cases[0].label_path.exists()


def test_msd_multimodal_4d(tmp_path):
    ds = open_dataset(make_msd(tmp_path / "Task05", n=3, channels=2))
    assert ds.modalities == ["MRI", "ADC"] and len(ds.cases[0].image_paths) == 1


def test_nnunet_v2(tmp_path):
    ds = open_dataset(make_nnunet(tmp_path / "Dataset099"))
    assert ds.layout == "nnunet" and ds.modalities == ["T2", "ADC"]
    assert ds.labels == {"background": 0, "PZ": 1, "TZ": 2}
    assert [p.name for p in ds.cases[0].image_paths] == ["pro_000_0000.nii.gz", "pro_000_0001.nii.gz"]


def test_acdc_frames_of_a_patient_share_a_split(tmp_path):
    ds = open_dataset(make_acdc(tmp_path / "ACDC", n_patients=6))
    assert ds.layout == "acdc" and len(ds.cases) == 12
    assert ds.labels == {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    split = ds.split(seed=3)
    for part in (split.train, split.val, split.test):
        patients = {cid.split("_")[0] for cid in part}
        for p in patients:
            assert f"{p}_frame01" in part and f"{p}_frame12" in part


def test_promise12_metaimage(tmp_path):
    ds = open_dataset(make_promise(tmp_path / "PROMISE12"))
    assert ds.layout == "promise12" and ds.labels == {"background": 0, "prostate": 1}
    assert ds.cases[0].label_path.name == "Case00_segmentation.mhd"


def test_plain_folders_with_and_without_labels_json(tmp_path):
    ds = open_dataset(make_plain(tmp_path / "plain"))
    assert ds.layout == "plain" and ds.labels == {"background": 0, "label_1": 1, "label_2": 2}
    ds = open_dataset(make_plain(tmp_path / "plain2", with_labels_json=True))
    assert ds.labels == {"background": 0, "liver": 1, "tumour": 2}


def test_split_is_reproducible_disjoint_and_complete(tmp_path):
    ds = open_dataset(make_msd(tmp_path / "T", n=10))
    a, b = ds.split(seed=7), ds.split(seed=7)
    assert a == b
    assert ds.split(seed=8) != a
    all_ids = a.train + a.val + a.test
    assert sorted(all_ids) == sorted(ds.case_ids) and len(set(all_ids)) == 10
    assert len(a.test) == 1 and len(a.val) == 2
    folds = [ds.split(seed=7, k=3, fold=f) for f in range(3)]
    assert all(f.test == a.test for f in folds)  # the test cases never move
    vals = sorted(c for f in folds for c in f.val)
    assert vals == sorted(set(ds.case_ids) - set(a.test))
    with pytest.raises(ConfigError):
        ds.split(k=3, fold=3)


def test_channel_count_differing_from_modalities(tmp_path):
    root = make_msd(tmp_path / "T", n=3, channels=2)
    meta = json.loads((root / "dataset.json").read_text())
    meta["modality"] = {"0": "MRI"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="2 channel.*1 modality"):
        open_dataset(root)


def test_no_known_layout(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="no known dataset layout"):
        open_dataset(tmp_path / "x")


def test_region_labels_not_supported(tmp_path):
    root = make_nnunet(tmp_path / "D")
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"]["whole"] = [1, 2]
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="region"):
        open_dataset(root)


def test_plain_folder_with_dicom_series_and_nifti_labels(tmp_path):
    import numpy as np

    from engine.data import make_plan, preprocess_dataset, read_image, restore_label, write_label

    root = tmp_path / "plain"
    for name in ("s1", "s2"):
        write_dicom_series(root / "images" / name, n=7)
        img = read_image(root / "images" / name)
        write_label(root / "labels" / f"{name}_seg.nii.gz", (img.array[0] > np.percentile(img.array, 60)).astype(np.uint8), img)
    ds = open_dataset(root)
    assert ds.layout == "plain" and ds.case_ids == ["s1", "s2"] and ds.labels == {"background": 0, "label_1": 1}
    case = preprocess_dataset(ds, make_plan(ds))["s1"]
    back = restore_label(np.asarray(case.label), case.properties)
    raw = read_image(root / "labels" / "s1_seg.nii.gz").array[0]
    assert back.shape == raw.shape and (back == raw).mean() > 0.9


@pytest.mark.parametrize("make", [make_msd, make_nnunet])
def test_macos_resource_forks_are_ignored(tmp_path, make):
    root = make(tmp_path / "T")  # the MSD archives carry ._name.nii.gz files next to the real ones
    for sub in ("imagesTr", "labelsTr"):
        (root / sub / "._junk_0000.nii.gz").write_bytes(b"\x00\x05\x16\x07 resource fork")
    ds = open_dataset(root)
    assert not any(c.case_id.startswith(".") for c in ds.cases) and ds.problems == []


def test_msd_entry_chooses_one_series_of_a_dicom_folder(tmp_path):
    import numpy as np

    from engine.data import read_image, write_label

    root = tmp_path / "msd"
    uids = {}
    for i in range(2):
        folder = root / "imagesTr" / f"mr{i}"
        write_dicom_series(folder, n=8, prefix="a", series_uid=f"1.2.826.0.1.3680043.8.498.{i}1")
        write_dicom_series(folder, n=5, gap=3.0, prefix="b", series_uid=f"1.2.826.0.1.3680043.8.498.{i}2")
        uids[i] = f"./imagesTr/mr{i}#1.2.826.0.1.3680043.8.498.{i}2"
        img = read_image(root / uids[i])
        lab = np.zeros(img.shape, np.uint8)
        lab[20:40, 20:40, 1:4] = 1
        write_label(root / "labelsTr" / f"mr{i}.nii.gz", lab, img)
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "MR"}, "labels": {"0": "background", "1": "organ"},
        "training": [{"image": uids[i], "label": f"./labelsTr/mr{i}.nii.gz"} for i in range(2)]}))
    ds = open_dataset(root)
    assert len(ds.cases) == 2 and read_image(ds.cases[0].image_paths[0]).shape == (64, 64, 5)
    with pytest.raises(DataError, match="holds 2 DICOM series"):
        read_image(root / "imagesTr" / "mr0")
