"""The benchmark runner works end to end (tiniest sizes); figures go to BENCHMARKS.md, never asserted here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_runner_smoke(tmp_path):
    env = dict(os.environ, EMONAS_NO_PROGRESS="1")
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--json", "--only", "loop,overhead,inference,data,memory",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0 < result["loop_efficiency"] < 10
    assert 0 <= result["search_overhead"] <= 1
    ov = result["sections"]["overhead"]
    assert ov["data_setup_seconds"] > 0 and ov["algorithm_seconds"] > 0  # the search measured its own parts
    assert 0 <= ov["search_overhead_without_data_setup"] <= ov["search_overhead"]
    inf = result["sections"]["inference"]
    assert inf["label_agreement"] > 0.999  # ONNX Runtime and PyTorch agree through the sliding window
    mem = result["sections"]["memory"]
    assert len(mem["rss_mb"]) == mem["candidates"] and mem["peak_rss_mb"] > 0
    for what in ("step", "candidate"):  # peaks measured in fresh processes, next to the engine's estimate
        assert len(mem[what]["peak_mb"]) == len(mem[what]["estimated_mb"]) == 2
        assert all(p > 0 for p in mem[what]["peak_mb"]) and all(e > 0 for e in mem[what]["estimated_mb"])
    data = result["sections"]["data"]
    assert data["cases"] > 0 and data["cold_s"] > 0 and data["cached_s"] > 0
    assert (tmp_path / "benchmarks.json").exists()


# the GPU machine's Python has PyTorch and numpy only: the script must not reach for anything else
BARE = """
import runpy, sys
for name in ("scipy", "nibabel", "SimpleITK", "monai", "sklearn", "onnx", "onnxruntime", "PySide6", "pyqtgraph",
             "vtk", "vtkmodules", "pydicom", "highdicom", "ray", "pymoo", "nilearn", "skimage"):
    sys.modules[name] = None  # as if not installed: importing it fails, find_spec says None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_gpu_benchmark_script_runs_with_torch_and_numpy_alone(tmp_path):
    r = subprocess.run([sys.executable, "-c", BARE, str(ROOT / "benchmarks" / "gpu_bench.py"), "--smoke", "--json",
                        "--device", "cpu"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["modes"]
    assert all(m["sec_per_step"] > 0 and m["tflops"] > 0 for m in result["modes"].values())
    assert result["projection"]["candidates"] == 400 and result["projection"]["hours_one_gpu"] > 0


def test_accuracy_per_minute_help_names_the_arms():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accuracy_per_minute.py"), "run", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "peer, genome, unet, genome40" in r.stdout and "--clock" in r.stdout


@pytest.mark.slow
def test_accuracy_per_minute_smoke(tmp_path):
    """Two engine arms of a few steps on the hippocampus set, then the report's table."""
    env = dict(os.environ, EMONAS_NO_PROGRESS="1", EMONAS_CACHE_DIR=str(tmp_path / "cache"))
    script = str(ROOT / "benchmarks" / "accuracy_per_minute.py")
    log = tmp_path / "apm.jsonl"
    r = subprocess.run([sys.executable, script, "run", "--arms", "genome,unet", "--budgets", "1", "--seeds", "0",
                        "--clock", "cpu", "--threads", "1", "--log", str(log)],
                       capture_output=True, text=True, timeout=1200, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [row["arm"] for row in rows] == ["genome", "unet"]
    assert rows[0]["parameters"] == 109299 and rows[1]["parameters"] == 298206
    assert all(len(row["test_dice"]) == 2 and len(row["test_cases"]) == 5 and row["steps"] >= 1 for row in rows)
    rep = subprocess.run([sys.executable, script, "report", "--log", str(log)], capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0 and rep.stdout.count("| after | ") == 2


def test_preprocess_benchmark_smoke(tmp_path):
    env = dict(os.environ, EMONAS_NO_PROGRESS="1", EMONAS_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "preprocess_bench.py"), "--cases", "4",
                        "--shape", "24,24,12", "--rounds", "1", "--json"],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["same_cache_bytes"] is True  # one process and two write the same cache
    assert len(result["one_process_s"]) == len(result["two_processes_s"]) == 1 and result["speedup"] > 0
