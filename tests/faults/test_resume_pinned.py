"""A run pins its cases and its plan when it starts: ``resume`` after the dataset changed continues with
them (cases added since are left out) or stops with one line naming what changed; one run never
trains candidates at two plans."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SEARCH, demo_subset, small_config
from engine.data import make_plan, open_dataset
from engine.errors import RunError
from engine.run import RunStore, SearchSession

# the plan's spacing is planned from the data (only the patch is fixed), so added cases could move it
CONFIG = "[training]\nbatch_size = 2\n" + TINY_SEARCH.replace("target_spacing = [7.0, 7.0, 7.0]\n", "")


def files(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def add_coarse_cases(data: Path, n: int) -> list[str]:
    """``n`` more cases at twice the voxel size (every second voxel of existing ones): a dataset whose
    median spacing, and so a fresh plan, differs from the one the run started with."""
    import nibabel as nib

    meta = json.loads((data / "dataset.json").read_text())
    added = []
    for i in range(n):
        src = meta["training"][i % len(meta["training"])]
        cid = f"coarse_{i:03d}"
        for key, folder in (("image", "imagesTr"), ("label", "labelsTr")):
            img = nib.load(str(data / src[key]))
            arr = np.asarray(img.dataobj)[::2, ::2, ::2]
            aff = img.affine.copy()
            aff[:3, :3] *= 2
            nib.save(nib.Nifti1Image(arr, aff), str(data / folder / f"{cid}.nii.gz"))
        meta["training"].append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
        added.append(cid)
    meta["numTraining"] = len(meta["training"])
    (data / "dataset.json").write_text(json.dumps(meta))
    return added


def remove_case(data: Path, cid: str) -> None:
    meta = json.loads((data / "dataset.json").read_text())
    meta["training"] = [e for e in meta["training"] if cid not in e["image"]]
    meta["numTraining"] = len(meta["training"])
    (data / "dataset.json").write_text(json.dumps(meta))


def recording_evaluate(task: dict, cancel=None) -> dict:
    """The analytic stand-in, noting the plan each task carries in $PLAN_LOG."""
    from search_fakes import fake_evaluate

    with open(os.environ["PLAN_LOG"], "a") as fh:
        fh.write(json.dumps(task["data"].get("plan"), sort_keys=True) + "\n")
    return fake_evaluate(task, cancel)


def test_resume_after_cases_were_added_keeps_the_pinned_cases_and_plan(tmp_path, monkeypatch):
    data = demo_subset(tmp_path / "data", 5)
    log = tmp_path / "plans.jsonl"
    monkeypatch.setenv("PLAN_LOG", str(log))
    run = tmp_path / "run"
    cfg = small_config(population=3, generations=3).replace(dataset=str(data))
    session = SearchSession(run, cfg, recording_evaluate)
    session.run(callback=lambda ev: ev.kind == "candidate_finished" and session.stop())
    with RunStore.open_readonly(run) as s:
        assert s.get_meta("status") == "paused"
        problem = s.get_meta("problem")
        pinned = s.get_meta("pinned_cases")
        done_before = s.counts()["done"]
    pinned_ids = problem["data"]["split"]["train"] + problem["data"]["split"]["val"] + problem["data"]["split"]["test"]
    assert sorted(pinned) == sorted(pinned_ids) and len(pinned_ids) == 5

    added = add_coarse_cases(data, 6)
    fresh = make_plan(open_dataset(data), overrides=dict(cfg.training.plan)).to_dict()
    assert fresh["target_spacing"] != problem["plan"]["target_spacing"]  # re-planning would change the run
    before = files(data)
    SearchSession.open(run, recording_evaluate).run()
    with RunStore.open_readonly(run) as s:
        assert s.get_meta("status") == "finished" and s.counts()["done"] > done_before
        assert s.get_meta("problem") == problem  # cases and plan as pinned
    plans = {line for line in log.read_text().splitlines()}
    assert plans == {json.dumps(problem["plan"], sort_keys=True)}  # every candidate, before and after: one plan
    assert not set(added) & set(pinned_ids)
    assert files(data) == before


def test_resume_after_a_pinned_case_was_removed_or_changed_stops_with_one_line(tmp_path, monkeypatch):
    data = demo_subset(tmp_path / "data", 5)
    monkeypatch.setenv("PLAN_LOG", str(tmp_path / "plans.jsonl"))
    run = tmp_path / "run"
    cfg = small_config(population=3, generations=2).replace(dataset=str(data))
    session = SearchSession(run, cfg, recording_evaluate)
    session.run(callback=lambda ev: ev.kind == "candidate_finished" and session.stop())
    with RunStore.open_readonly(run) as s:
        train_ids = s.get_meta("problem")["data"]["split"]["train"]
    kept = files(run)

    label = next((data / "labelsTr").glob(f"{train_ids[0]}.nii.gz"))
    original = label.read_bytes()
    import nibabel as nib

    img = nib.load(str(label))
    arr = np.asarray(img.dataobj).copy()
    arr[arr == 1] = 2
    nib.save(nib.Nifti1Image(arr, img.affine, img.header), str(label))
    with pytest.raises(RunError) as err:
        SearchSession.open(run, recording_evaluate).run()
    msg = str(err.value)
    assert "changed since the run started" in msg and train_ids[0] in msg and "\n" not in msg

    label.write_bytes(original)
    remove_case(data, train_ids[1])
    with pytest.raises(RunError, match=f"case\\(s\\) {train_ids[1]} removed"):
        SearchSession.open(run, recording_evaluate).run()
    assert {k: v for k, v in files(run).items() if not k.endswith(("-wal", "-shm"))} == \
        {k: v for k, v in kept.items() if not k.endswith(("-wal", "-shm"))}  # the run is left as it was


def _emonas(*args, fault=None, env=None):
    e = {**os.environ, "EMONAS_NO_PROGRESS": "1", **(env or {})}
    if fault:
        e["EMONAS_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=2400, env=e)


@pytest.mark.slow
def test_cli_resume_of_a_killed_search_after_cases_were_added(tmp_path):
    """Real training: killed after its first candidate, cases added, resumed: every candidate's
    training folder holds the run's one plan, and the dataset is not written to."""
    data = demo_subset(tmp_path / "data", 5)
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG)
    run = tmp_path / "run"
    env = {"EMONAS_CACHE_DIR": str(tmp_path / "cache")}
    args = ["--population", 2, "--generations", 1, "--epochs", 1, "--seed", 2, "--device", "cpu"]
    p = _emonas("search", "--dataset", data, "--config", config, "--out", run, *args,
                fault="candidate.after_commit:1:kill", env=env)
    assert p.returncode == -9, p.stderr[-2000:]
    with RunStore.open_readonly(run) as s:
        problem = s.get_meta("problem")
    add_coarse_cases(data, 6)
    before = files(data)
    p = _emonas("resume", run, "--json", env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "added since the run started" in p.stderr
    assert files(data) == before
    with RunStore.open_readonly(run) as s:
        done = [c for c in s.candidates() if c["status"] == "done"]
    assert len(done) == 2
    for c in done:
        doc = json.loads((run / "candidates" / str(c["id"]) / "training.json").read_text())
        assert doc["plan"] == problem["plan"], c["id"]
        assert doc["split"]["train"] == problem["data"]["split"]["train"]
