"""Shared helpers of the fault-injection suite: the stand-in evaluator, run comparison, a small demo."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

RUN_TESTS = Path(__file__).resolve().parents[1] / "engine" / "run"
sys.path.insert(0, str(RUN_TESTS))  # search_fakes: the analytic stand-in evaluator

from engine.config import SearchConfig  # noqa: E402
from engine.run import RunStore  # noqa: E402
from engine.faults import fault  # noqa: E402
from test_search_cli import TINY as TINY_SEARCH  # noqa: E402  one width, five cells, 16^3 patches at 7 mm

#: Columns that must match an uninterrupted run exactly (timings and pids excluded).
COMPARED = ("id", "genome", "status", "generation", "phase", "subproblem", "f1", "f2", "f1_raw", "parameters",
            "predicted_f1", "predicted_std", "curves", "error", "reused_from", "pruned")


def small_config(**samea) -> SearchConfig:
    s = {"population": 5, "generations": 5, "learning_generations": 2, "surrogate_trees": 20, **samea}
    return SearchConfig().replace(samea=s, training={"epochs": 3}, seed=3)


def logged_evaluate(task: dict, cancel=None) -> dict:
    """search_fakes.fake_evaluate with fault points while "training" and while writing the folder, and
    a line per finished training in $TRAIN_LOG (to prove nothing committed is trained again)."""
    from search_fakes import fake_evaluate

    fault("fake.train")
    try:
        result = fake_evaluate(task, cancel)  # raises for op1 = identity: a failed candidate
    finally:
        if os.environ.get("TRAIN_LOG"):
            with open(os.environ["TRAIN_LOG"], "a") as fh:
                fh.write(f"{task['candidate_id']}\n")
    out = Path(task["out_dir"])
    (out / "training.json").write_text(json.dumps({"genome": task["genome"]})[:20])
    fault("candidate.folder")  # half written: training.json truncated, curves missing
    (out / "training.json").write_text(json.dumps({"genome": task["genome"]}))
    (out / "curves.csv").write_text("epoch,val_dice_mean\n1,%r\n" % (1 - result["f1"]))
    result["metrics"].pop("pid", None)
    return result


def snapshot(run: Path) -> dict:
    """What a run holds: compared rows by id, the front, the final strategy state, integrity."""
    with RunStore.open_readonly(run) as s:
        rows = s.candidates()
        return {
            "rows": {r["id"]: {k: r[k] for k in COMPARED} for r in rows},
            "finished_at": {r["id"]: r["finished_at"] for r in rows if r["status"] in ("done", "failed")},
            "front": [c["id"] for c in s.front()],
            "state": s.latest_state(),
            "status": s.get_meta("status"),
            "integrity": s.integrity_check(),
            "genomes": [json.dumps(r["genome"], sort_keys=True) for r in rows],
        }


def demo_subset(dst: Path, n: int) -> Path:
    """The first ``n`` cases of the bundled demo dataset, copied into ``dst`` (MSD layout)."""
    from engine.data.demo import demo_dataset_path

    src = demo_dataset_path()
    (dst / "imagesTr").mkdir(parents=True)
    (dst / "labelsTr").mkdir()
    meta = json.loads((src / "dataset.json").read_text())
    meta["training"] = meta["training"][:n]
    meta["numTraining"] = n
    for entry in meta["training"]:
        for key in ("image", "label"):
            shutil.copy(src / entry[key], dst / entry[key])
    (dst / "dataset.json").write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """Five demo cases and a tiny search config: (dataset, config path)."""
    root = tmp_path_factory.mktemp("faults_demo")
    data = demo_subset(root / "demo5", 5)
    config = root / "tiny_search.toml"
    config.write_text(TINY_SEARCH)
    return data, config
