"""The engine's jobs (export, retrain, evaluate a case, predict) run in child processes and from the
CLI: they finish, are cancelled half-way without leaving anything half-written, and survive being killed."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.run.child import ChildJob, JobControl
from engine.run.jobs import (EvaluateCaseRequest, ExportRequest, JobCancelled, PredictRequest, evaluate_case,
                             validation_cases)

LEGACY = Path(__file__).resolve().parents[2] / "fixtures" / "legacy_2026_12"


def _digests(root: Path) -> dict[str, str]:
    """Every file's bytes (SQLite's own -wal/-shm companions and the lock file aside)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm", ".lock"))}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, object]:
    """The committed run, its candidate 4 exported with one epoch of retraining by a child process
    (which also fills the run's preprocessing cache, so the tests below skip that work)."""
    root = tmp_path_factory.mktemp("jobs")
    shutil.copytree(LEGACY / "run", root / "run")
    result = ChildJob("export", (ExportRequest(out_dir=str(root / "model"), run_dir=str(root / "run"), candidate_id=4,
                                               formats=("onnx",), retrain=True, epochs=1),)).run()
    return root, result


@pytest.fixture
def run_dir(tmp_path, exported) -> Path:
    shutil.copytree(exported[0] / "run", tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def demo_scans(tmp_path) -> Path:
    from engine.cli import main as cli_main

    assert cli_main(["demo-data", str(tmp_path / "demo")]) == 0
    return tmp_path / "demo" / "imagesTr"


def _messages_until(job: ChildJob, want, limit_s: float = 240.0) -> list:
    """The child's messages until ``want(kind, payload)`` is true (or the job ends)."""
    seen, t0 = [], time.monotonic()
    while time.monotonic() - t0 < limit_s:
        kind, payload = job.next_message()
        seen.append((kind, payload))
        if want(kind, payload) or kind in ("finished", "failed"):
            return seen
    raise AssertionError(f"no matching message within {limit_s} s: {seen[-5:]}")


def test_predict_in_a_child_process(tmp_path, demo_scans):
    scans = sorted(str(p) for p in demo_scans.glob("brain_00[0-2].nii.gz"))
    before = _digests(demo_scans) | _digests(LEGACY / "model")
    job = ChildJob("predict", (PredictRequest(model=str(LEGACY / "model"), output=str(tmp_path / "pred"),
                                              inputs=tuple(scans)),))
    events: list[dict] = []
    result = job.run(on_event=events.append)
    assert sorted(Path(p).name for p in result.outputs) == ["brain_000.nii.gz", "brain_001.nii.gz", "brain_002.nii.gz"]
    assert all(Path(p).is_file() for p in result.outputs)
    cases = [e for e in events if e["stage"] == "case"]
    assert [e["done"] for e in cases] == [0, 1, 2] and all(e["total"] == 3 for e in cases)
    assert job.join(30) and job.proc.exitcode == 0
    assert _digests(demo_scans) | _digests(LEGACY / "model") == before  # inputs are only read


def test_predict_cancelled_keeps_whole_cases_only(tmp_path, demo_scans):
    scans = tuple(sorted(str(p) for p in demo_scans.glob("brain_00*.nii.gz")))
    control = JobControl()
    out = tmp_path / "pred"

    def stop_after_first(p) -> None:
        if p.stage == "case" and p.done == 0:  # while the first case is segmented
            control.stop()

    from engine.run.jobs import predict

    with pytest.raises(JobCancelled, match="cancelled after 1 of"):
        predict(PredictRequest(model=str(LEGACY / "model"), output=str(out), inputs=scans), stop_after_first, control)
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["brain_000.nii.gz"]
    # --continue finishes the rest, leaving the whole case as it was
    first = (out / "brain_000.nii.gz").read_bytes()
    result = predict(PredictRequest(model=str(LEGACY / "model"), output=str(out), inputs=scans, resume=True))
    assert result.skipped == ["brain_000"] and len(result.outputs) == len(scans) - 1
    assert (out / "brain_000.nii.gz").read_bytes() == first


def test_evaluate_case_in_a_child_process(run_dir):
    before = _digests(run_dir)
    ref, cases = validation_cases(run_dir)
    assert ref == "demo" and cases
    job = ChildJob("evaluate_case", (EvaluateCaseRequest(str(run_dir), (4,), cases[0]),))
    result = job.run()
    assert result.case_id == cases[0] and set(result.predictions) == {4}
    assert result.predictions[4].shape == result.reference.shape == result.image.shape[1:]
    dice = [m["dice"] for m in result.metrics[4].values()]
    assert dice and all(0.0 <= d <= 1.0 for d in dice)
    assert _digests(run_dir) == before  # the run is only read

    control = JobControl()
    control.stop()
    with pytest.raises(JobCancelled):
        evaluate_case(EvaluateCaseRequest(str(run_dir), (4,), cases[0]), None, control)


def test_a_child_job_paused_before_its_process_starts_stops_at_its_first_check(run_dir):
    """A pause set while the child is still starting is kept: the job stops at its first check (before
    any candidate loads), says so, and finishes once resumed."""
    _, cases = validation_cases(run_dir)
    job = ChildJob("evaluate_case", (EvaluateCaseRequest(str(run_dir), (4,), cases[0]),))
    job.control.pause()
    job.start()
    kinds, texts = [], []
    while True:
        kind, payload = job.next_message()
        kinds.append(kind)
        if kind == "event":
            texts.append(payload["text"])
        if kind == "paused":
            assert job.control.paused and not any("candidate" in t for t in texts)
            job.control.resume()
        if kind in ("finished", "failed"):
            break
    assert kinds.count("paused") == 1 and kinds[-1] == "finished", kinds
    assert texts[-1] == "done" and any("candidate 4: loading" in t for t in texts)
    assert job.join(30) and job.proc.exitcode == 0


def _export_with_retraining(run_dir: Path, out: Path, epochs: int = 20) -> ChildJob:
    job = ChildJob("export", (ExportRequest(out_dir=str(out), run_dir=str(run_dir), candidate_id=4, formats=("onnx",),
                                            retrain=True, epochs=epochs),))
    job.start()
    return job


def test_export_with_retraining_cancelled_half_way(run_dir, tmp_path):
    before = _digests(run_dir)
    out = tmp_path / "model"
    job = _export_with_retraining(run_dir, out)
    seen = _messages_until(job, lambda k, p: k == "event" and p["stage"] == "step")
    assert seen[-1][0] == "event", seen[-1]
    job.stop()
    kind, message = _messages_until(job, lambda k, p: False)[-1]
    assert kind == "failed" and "cancelled during its retraining; nothing was written" in message
    assert job.join(60) and job.proc.exitcode == 0
    assert not out.exists() and not (tmp_path / "model.training").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model")]  # no temporary folder left
    assert _digests(run_dir) == before


def test_export_with_retraining_killed(run_dir, tmp_path):
    before = _digests(run_dir)
    out = tmp_path / "model"
    job = _export_with_retraining(run_dir, out)
    _messages_until(job, lambda k, p: k == "event" and p["stage"] == "step")
    job.kill()
    kind, message = _messages_until(job, lambda k, p: False)[-1]
    assert kind == "failed" and "ended unexpectedly" in message and str(-signal.SIGKILL) in message
    assert job.join(30)
    assert not out.exists()  # a model folder appears whole or not at all
    assert _digests(run_dir) == before


def test_export_finishes_in_a_child_process(exported):
    root, result = exported
    assert result.model_dir == str(root / "model") and "model.onnx" in result.files and result.parameters > 0
    assert (root / "model" / "model.onnx").is_file() and Path(result.retrained_in, "weights.pt").is_file()


def _cli(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "EMONAS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "engine.cli", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_for_line(proc: subprocess.Popen, text: str) -> None:
    """Read the command's stderr until a line holds ``text`` (its job is then under way)."""
    for line in proc.stderr:
        if text in line:
            return
    raise AssertionError(f"the command ended without saying {text!r} (exit code {proc.wait()})")


def test_cli_export_with_retraining_interrupted_and_killed(run_dir, tmp_path):
    before = _digests(run_dir)
    out = tmp_path / "model"
    proc = _cli("export", run_dir, "--candidate", 4, "--retrain", "--epochs", 20, "--format", "onnx", "--out", out)
    _wait_for_line(proc, "retraining candidate 4 on the training and validation cases")
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop at the next step
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    assert "cancelled during its retraining; nothing was written" in err and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "model.training").exists()

    proc = _cli("export", run_dir, "--candidate", 4, "--retrain", "--epochs", 20, "--format", "onnx", "--out", out)
    _wait_for_line(proc, "retraining candidate 4 on the training and validation cases")
    time.sleep(2.0)
    proc.kill()
    proc.communicate(timeout=60)
    assert not out.exists()
    assert _digests(run_dir) == before

    # after both, the same command still works (the killed one's training folder is replaced)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "export", str(run_dir), "--candidate", "4", "--retrain",
                           "--epochs", "1", "--format", "onnx", "--out", str(out), "--json"],
                          env={**os.environ, "EMONAS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (out / "model.onnx").is_file() and (tmp_path / "model.training" / "weights.pt").is_file()
    assert np.isfinite(__import__("json").loads(done.stdout.splitlines()[-1])["parameters"])


def _label_maps(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.nii.gz")) if out.is_dir() else []


def test_cli_predict_interrupted_and_killed_leaves_whole_label_maps(tmp_path, demo_scans):
    import nibabel as nib

    out = tmp_path / "pred"
    n = len(list(demo_scans.glob("*.nii.gz")))
    scans_before = _digests(demo_scans)
    for stop in (signal.SIGINT, signal.SIGKILL):
        proc = _cli("predict", LEGACY / "model", demo_scans, "-o", out, "--continue")
        before = len(_label_maps(out))
        t0 = time.monotonic()
        while len(_label_maps(out)) <= before:  # one more case written: the job is half-way
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 240
            time.sleep(0.1)
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=120)
        if stop == signal.SIGINT:
            assert proc.returncode == 130 and "prediction cancelled after" in err and "Traceback" not in err, err
        written = _label_maps(out)
        assert 0 < len(written) < n
        for name in written:  # each label map that exists is whole
            assert nib.load(str(out / name)).get_fdata().shape[0] > 0
    done = subprocess.run([sys.executable, "-m", "engine.cli", "predict", str(LEGACY / "model"), str(demo_scans), "-o",
                           str(out), "--continue", "--json"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "EMONAS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert len(_label_maps(out)) == n
    assert _digests(demo_scans) == scans_before  # the scans are only read


def test_export_with_retraining_into_a_full_folder_is_refused_before_training(run_dir, tmp_path):
    from engine.errors import ExportError
    from engine.run.jobs import export

    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    events = []
    with pytest.raises(ExportError, match="already exists and is not empty"):
        export(ExportRequest(out_dir=str(out), run_dir=str(run_dir), candidate_id=4, formats=("onnx",), retrain=True,
                             epochs=1), events.append)
    assert events == [] and not (tmp_path / "model.training").exists()
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
