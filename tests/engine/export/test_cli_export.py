"""`emonas export --checkpoint` as a user runs it: a subprocess, the --json contract, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.export.package import verify_model_folder


def emonas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300)


def test_export_checkpoint_json(training_folder, tmp_path):
    out = tmp_path / "model"
    r = emonas("export", "--checkpoint", str(training_folder), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # the JSON object is the last line of all output
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["model_dir"] == str(out)
    assert last["formats"] == ["onnx", "torchscript"]
    assert set(last["files"]) == {"model.onnx", "model.ts", "weights.pt", "MODEL_CARD.md",
                                  "labels-ColorTable.ctbl", "labels-ITKSNAP.txt",
                                  "configs/metadata.json", "configs/inference.json", "models/model.ts"}
    assert last["onnx_vs_torch_max_abs_logit_diff"] < 1e-4
    assert verify_model_folder(out)["architecture"]["parameters"] == last["parameters"]


def test_export_human_output_and_errors(training_folder, tmp_path):
    out = tmp_path / "model"
    r = emonas("export", "--checkpoint", str(training_folder), "--out", str(out), "--format", "onnx")
    assert r.returncode == 0, r.stderr
    assert "model.onnx" in r.stdout and "model.ts" not in r.stdout
    # the folder now exists: a second export refuses to overwrite it
    r = emonas("export", "--checkpoint", str(training_folder), "--out", str(out), "--json")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "already exists" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["error"]
    for args, needle in [
        (["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "m2")], "nope"),
        (["--checkpoint", str(training_folder), "--out", str(tmp_path / "m3"), "--format", "caffe"], "caffe"),
        (["--out", str(tmp_path / "m4")], "--candidate"),
    ]:
        r = emonas("export", *args)
        assert r.returncode == 2 and needle in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
