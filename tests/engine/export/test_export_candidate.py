"""`emonas export RUN --candidate ID`: a candidate of a search's run database becomes a model folder
that says where it sat on the Pareto front."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.export.package import verify_model_folder
from engine.run.store import RunStore
from export_helpers import SMALL, make_training_folder


def emonas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300)


def make_run(run_dir):
    """A run database with three finished candidates (two on the front, one dominated) and a failed one."""
    genomes = [SMALL, SMALL.replace(op4="conv3d_1x1x1"), SMALL.replace(op2="conv2d_3x3x1"), SMALL.replace(nf1=16)]
    store = RunStore.create(run_dir, {"config": {}})
    try:
        ids = store.add_candidates([{"genome": g.to_json(), "generation": 0, "phase": "init"} for g in genomes])
        objectives = [(0.30, 0.50), (0.40, 0.20), (0.45, 0.60)]
        for cid, g, (f1, f2) in zip(ids, genomes, objectives):
            store.update_candidate(cid, status="done", f1=f1, f2=f2, parameters=1000,
                                   metrics={"dice": {"grey matter": 1 - f1}})
            make_training_folder(store.candidate_dir(cid), genome=g, seed=cid)
        store.update_candidate(ids[3], status="failed", error="out of memory")
    finally:
        store.close()
    return ids


def test_export_candidates_of_a_run(tmp_path):
    run = tmp_path / "run"
    ids = make_run(run)
    r = emonas("export", str(run), "--candidate", str(ids[1]), "--out", str(tmp_path / "m1"), "--format", "onnx", "--json")
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    meta = verify_model_folder(tmp_path / "m1")
    assert meta["genome"] == last["genome"] == SMALL.replace(op4="conv3d_1x1x1").to_dict()
    cand = meta["candidate"]
    assert cand["id"] == ids[1] and cand["on_pareto_front"] is True
    assert cand["front_position"] == 1 and cand["front_size"] == 2 and cand["f1"] == 0.40
    assert cand["validation"] == {"dice": {"grey matter": 0.6}}
    assert "position 2 of 2 on the Pareto front" in (tmp_path / "m1" / "MODEL_CARD.md").read_text()

    r = emonas("export", str(run), "--candidate", str(ids[2]), "--out", str(tmp_path / "m2"), "--format", "onnx", "--json")
    assert r.returncode == 0, r.stderr
    cand = verify_model_folder(tmp_path / "m2")["candidate"]
    assert cand["on_pareto_front"] is False and cand["front_position"] is None


def test_export_refuses_failed_missing_and_unknown_candidates(tmp_path):
    run = tmp_path / "run"
    ids = make_run(run)
    for args, needle in [
        ([str(run), "--candidate", str(ids[3])], "failed"),
        ([str(run), "--candidate", "999"], "no candidate 999"),
        ([str(run), "--candidate", "abc"], "abc"),
        ([str(tmp_path / "norun"), "--candidate", "1"], "not a run directory"),
        ([str(run), "--candidate", "1", "--checkpoint", str(run)], "not both"),
    ]:
        r = emonas("export", *args, "--out", str(tmp_path / "m"), "--json")
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
        assert "error" in json.loads(r.stdout.strip().splitlines()[-1])
    assert not (tmp_path / "m").exists()
