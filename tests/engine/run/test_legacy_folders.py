"""Run folders and model folders written by earlier versions still open (committed fixtures)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.cli import main as cli_main
from engine.run.store import RunStore

LEGACY = Path(__file__).resolve().parents[2] / "fixtures" / "legacy_2026_12"


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def legacy(tmp_path) -> Path:
    before = _digests(LEGACY)
    shutil.copytree(LEGACY, tmp_path / "legacy")
    yield tmp_path / "legacy"
    assert _digests(LEGACY) == before  # nothing writes into the committed fixture


def test_legacy_run_opens_in_the_store(legacy):
    with RunStore.open_readonly(legacy / "run") as store:
        done = store.candidates("done")
        assert [c["id"] for c in done] == [1, 2, 3, 4]
        assert {c["id"] for c in store.front()} == {1, 4}
        assert store.get_meta("status") == "finished"
        assert all(0.0 <= c["f1"] <= 1.0 and c["parameters"] > 0 for c in done)
        # stored before the schedule was recorded: its candidates trained at a constant rate, and a
        # resume or a retraining keeps that rate (the default is now "tail")
        assert "lr_schedule" not in store.get_meta("train_config")
        assert store.train_config()["lr_schedule"] == "constant"


def test_legacy_run_front_and_export_from_the_cli(legacy, tmp_path, capsys):
    assert cli_main(["front", str(legacy / "run"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = doc["front"]
    assert {r["id"] for r in rows} == {1, 4}

    out = tmp_path / "exported"
    assert cli_main(["export", str(legacy / "run"), "--candidate", "4", "--out", str(out), "--format", "onnx"]) == 0
    assert (out / "model.onnx").is_file()
    assert json.loads((out / "model.json").read_text())["schema_version"] >= 1


def test_legacy_model_predicts(legacy, tmp_path):
    assert cli_main(["demo-data", str(tmp_path / "demo")]) == 0
    scan = tmp_path / "demo" / "imagesTr" / "brain_000.nii.gz"
    out = tmp_path / "pred"
    assert cli_main(["predict", str(legacy / "model"), str(scan), "-o", str(out)]) == 0
    seg = nib.load(str(out / "brain_000.nii.gz"))
    assert seg.shape == nib.load(str(scan)).shape
    values = set(np.unique(np.asarray(seg.dataobj)).tolist())
    assert values <= {0, 1, 2, 3} and len(values) >= 2


def test_legacy_run_progress_is_complete(legacy):
    """A finished run written before runs kept their progress basis: the watcher reads it complete."""
    from engine.run.progress import watch

    p = watch(legacy / "run")
    with RunStore.open_readonly(legacy / "run") as store:
        counts = store.counts()
    assert p.status == "finished" and p.fraction == 1.0 and p.eta_seconds == 0.0
    assert p.expected == counts["done"] + counts["failed"] and {c[0] for c in p.front} == {1, 4}
    assert p.hypervolume > 0
