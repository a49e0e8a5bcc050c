"""Split files as nnU-Net users have them: splits_final.json folds and a plain train/val/test file."""

from __future__ import annotations

import json

import pytest

from engine.data import open_dataset
from engine.data.splits import read_split_file, split_for_dataset
from engine.errors import DataError
from engine.run import RunStore
from test_search_cli import emonas

FOLDS = [
    {"train": ["brain_000", "brain_001", "brain_002", "brain_003"], "val": ["brain_004", "brain_005"]},
    {"train": ["brain_002", "brain_003", "brain_004", "brain_005"], "val": ["brain_000", "brain_001"]},
]


def test_read_split_files(tmp_path, nnunet_dataset):
    nn = tmp_path / "splits_final.json"
    nn.write_text(json.dumps(FOLDS))
    assert read_split_file(nn, 1) == FOLDS[1]
    plain = tmp_path / "split.json"
    plain.write_text(json.dumps({"train": ["brain_000", "brain_001"], "val": ["brain_002"], "test": ["brain_003"]}))
    ds = open_dataset(nnunet_dataset)
    s = split_for_dataset(ds, plain)
    assert (s["train"], s["val"], s["test"]) == (["brain_000", "brain_001"], ["brain_002"], ["brain_003"])
    assert "test_folder" not in s
    assert split_for_dataset(ds, nn, 0)["test_folder"] == "imagesTs"  # no test list: the labelled test folder
    for doc, fold, words in (
        (FOLDS, 2, "folds 0..1"),
        ({"train": ["brain_000"], "val": ["brain_000"]}, None, "in both 'train' and 'val'"),
        ({"train": ["nobody"], "val": ["brain_000"]}, None, "not in the dataset"),
        ({"train": "brain_000", "val": []}, None, "must be a list"),
    ):
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(doc))
        with pytest.raises(DataError, match=words) as exc:
            split_for_dataset(ds, bad, fold)
        assert str(bad) in str(exc.value)


@pytest.fixture(scope="module")
def searched(nnunet_dataset, tiny_config, tmp_path_factory):
    """A finished tiny search on fold 1 of a splits_final.json: (run, splits file, folder for outputs)."""
    tmp_path = tmp_path_factory.mktemp("split_run")
    splits = tmp_path / "splits_final.json"
    splits.write_text(json.dumps(FOLDS))
    run = tmp_path / "run"
    emonas("search", "--dataset", nnunet_dataset, "--config", tiny_config, "--population", 2, "--generations", 1,
           "--epochs", 1, "--out", run, "--splits", splits, "--fold", 1, "--json")
    return run, splits, tmp_path


def test_search_and_report_honour_splits_final(searched):
    run, splits, tmp_path = searched
    with RunStore.open_readonly(run) as store:
        split = store.get_meta("problem")["data"]["split"]
        done = [c for c in store.candidates() if c["status"] == "done"]
    assert (split["train"], split["val"]) == (sorted(FOLDS[1]["train"]), sorted(FOLDS[1]["val"]))
    assert done
    for c in done:  # every candidate trained and validated on exactly the fold's cases
        trained = json.loads((run / "candidates" / str(c["id"]) / "training.json").read_text())
        assert (sorted(trained["split"]["train"]), sorted(trained["split"]["val"])) == (
            sorted(FOLDS[1]["train"]), sorted(FOLDS[1]["val"]))

    # the report's test set: the dataset's imagesTs with labelsTs (splits_final.json names no test case)
    report = json.loads(emonas("report", run, "--out", tmp_path / "report", "--no-baseline", "--json")
                        .stdout.strip().splitlines()[-1])
    assert sorted(report["test_cases"]) == ["brain_006", "brain_007"]

    # a plain split file on report: its test cases; one the search trained on is refused
    plain = tmp_path / "split.json"
    plain.write_text(json.dumps({"train": ["brain_002", "brain_003"], "val": ["brain_004"], "test": ["brain_005"]}))
    p = emonas("report", run, "--out", tmp_path / "report2", "--no-baseline", "--splits", plain, check=False)
    assert p.returncode == 2 and "brain_005" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_retrain_on_another_fold_of_the_file(searched):
    run, splits, tmp_path = searched
    with RunStore.open_readonly(run) as store:
        done = [c for c in store.candidates() if c["status"] == "done"]
    # retrain on fold 0 of the file: training on its train + val cases
    out = tmp_path / "final"
    emonas("retrain", run, "--candidate", done[0]["id"], "--epochs", 1, "--out", out, "--splits", splits, "--fold", 0)
    trained = json.loads((out / "training.json").read_text())
    assert sorted(trained["split"]["train"]) == sorted(FOLDS[0]["train"] + FOLDS[0]["val"])
