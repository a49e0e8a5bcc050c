"""The benchmark runner works end to end (tiniest sizes); figures go to BENCHMARKS.md, never asserted here."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"emonas_benchmarks_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _script("compare")
bench_run = _script("run")


@pytest.mark.slow  # a minute of CPU: five sections, fresh processes for memory peaks, an ONNX export
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
    loop = result["sections"]["loop"]
    assert loop["bare_step_s"] > 0 and loop["pipeline_step_s"] > 0 and loop["no_prefetch_step_s"] > 0
    assert loop["protocol"] == {"steps": 2, "rounds": 1} and all(len(v) == 1 for v in loop["rounds_s"].values())
    assert loop["loop_efficiency_cpu"] > 0 and all(len(v) == 1 for v in loop["rounds_cpu_s"].values())
    ov = result["sections"]["overhead"]
    assert ov["data_setup_seconds"] > 0 and ov["algorithm_seconds"] > 0  # the search measured its own parts
    # the one-off opening of the dataset is reported apart from the overhead
    assert 0 <= ov["search_overhead"] <= ov["search_overhead_with_data_setup"] <= 1
    # every section's headline figures are in the JSON line
    assert set(result["figures"]) >= {"loop.loop_efficiency", "overhead.search_overhead", "inference.onnx_speedup",
                                      "data.speedup", "memory.growth_mb"}
    assert result["skipped"] == {}  # sections named with --only run even where --quick leaves them out
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


def test_the_quick_protocol_is_defined_once_and_large_enough():
    quick, skipped = bench_run.plan_sections([], quick=True, smoke=False)
    assert skipped == bench_run.QUICK_SKIPS and all(why for why in skipped.values())
    assert set(quick) == set(bench_run.SECTIONS) - set(bench_run.QUICK_SKIPS)
    assert quick["loop"]["rounds"] >= 3 and quick["loop"]["steps"] >= 16  # stable: 3 rounds of 16 steps or more
    assert quick["overhead"]["population"] * quick["overhead"]["generations"] >= 12
    for name, kinds in bench_run.PROTOCOLS.items():  # every section has the three protocols, and its figures
        assert set(kinds) == {"full", "quick", "smoke"} and name in bench_run.HEADLINES
    # the full run skips nothing; a section named with --only runs its quick protocol
    assert bench_run.plan_sections([], quick=False, smoke=False)[1] == {}
    plan, skipped = bench_run.plan_sections(["efficiency"], quick=True, smoke=False)
    assert plan == {"efficiency": bench_run.PROTOCOLS["efficiency"]["quick"]} and skipped == {}


def _run_json(tmp_path, name, date, loop_eff, overhead, extra=None):
    doc = {"date": date, "protocol": "quick", "figures": {"loop.loop_efficiency": loop_eff,
                                                          "overhead.search_overhead": overhead},
           "sections": {"loop": {"loop_efficiency": loop_eff, "bare_step_s": 0.1, "rounds_s": {"bare": [0.1]},
                                 "protocol": {"steps": 16, "rounds": 4}},
                        "overhead": {"search_overhead": overhead, "evaluations": {"done": 12}, **(extra or {})}}}
    path = tmp_path / name
    path.write_text("progress line\n" + json.dumps(doc) + "\n")  # a saved stdout: the JSON is its last line
    return path


def test_compare_prints_old_new_and_ratio_per_figure(tmp_path):
    old = _run_json(tmp_path, "old.json", "2026-12-01 10:00", 0.8, 0.016)
    new = _run_json(tmp_path, "new.json", "2026-12-02 10:00", 0.96, 0.004, {"data_setup_seconds": 1.5})
    rows = {r[0]: r[1:] for r in compare.compare(compare.load(str(old)), compare.load(str(new)))}
    assert rows["loop.loop_efficiency"] == pytest.approx((0.8, 0.96, 1.2))
    assert rows["overhead.search_overhead"] == pytest.approx((0.016, 0.004, 0.25))
    assert rows["overhead.data_setup_seconds"] == (None, 1.5, None)  # only in the new run
    assert "loop.bare_step_s" not in rows and "loop.protocol.steps" not in rows  # equal in both: left out
    assert list(rows)[:2] == ["loop.loop_efficiency", "overhead.search_overhead"]  # headline figures first
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare.py"), str(old), str(new)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.startswith("loop.loop_efficiency"))
    assert line.split()[1:] == ["0.8", "0.96", "1.2"]
    assert "loop.bare_step_s" in subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare.py"), str(old),
                                                 str(new), "--all"], capture_output=True, text=True, timeout=60).stdout


def test_compare_refuses_a_file_that_is_not_a_run_in_one_line(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("loop 0.93\n")
    good = _run_json(tmp_path, "new.json", "2026-12-02", 0.9, 0.01)
    for args in ([str(bad), str(good)], [str(tmp_path / "missing.json"), str(good)]):
        r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare.py"), *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and args[0] in r.stderr and "Traceback" not in r.stderr


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


def test_cost_aware_hypervolume_ratio_of_fronts_by_either_dice():
    """The fronts' hypervolumes against (Dice 0, 2x the slowest network), from the search's Dice or from
    the Dice of the networks trained again; the fastest network within 0.02 of the best, by either."""
    ca = _script("cost_aware")
    fronts = {"latency": [{"id": 1, "dice": 0.6, "dice_retrained": 0.8, "latency_ms": 100.0}],
              "parameters": [{"id": 2, "dice": 0.7, "dice_retrained": 0.7, "latency_ms": 200.0},
                             {"id": 3, "dice": 0.5, "dice_retrained": 0.69, "latency_ms": 50.0}]}
    h = ca.hv_ratios(fronts)
    assert h["reference"] == (1.0, 400.0)
    assert h["hv"]["latency"] == pytest.approx(0.6 * 300)
    assert h["hv"]["parameters"] == pytest.approx(0.5 * 350 + 0.2 * 200)
    assert h["ratios"]["latency"] == pytest.approx(180 / 215)
    r = ca.hv_ratios(fronts, "dice_retrained")
    assert r["ratios"]["latency"] == pytest.approx(0.8 * 300 / (0.69 * 350 + 0.01 * 200))
    assert ca.fastest_within(fronts["parameters"])["id"] == 2
    assert ca.fastest_within(fronts["parameters"], dice="dice_retrained")["id"] == 3


def test_accuracy_per_minute_report_lists_seeds_in_order(tmp_path):
    """Arms run two at a time end in any order; the report's "per seed" figures follow the seeds."""
    log = tmp_path / "apm.jsonl"
    base = {"tag": "after", "arm": "genome40", "variant": "default", "budget_s": None, "parameters": 109299,
            "steps": 480, "validations": 6, "val_seconds": 1.0, "seconds": 10.0, "wall_s": 10.0}
    lines = [{**base, "seed": 1, "test_dice": [0.7, 0.7], "best_val_dice": 0.71},
             {**base, "seed": 0, "test_dice": [0.8, 0.8], "best_val_dice": 0.81}]
    log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    before = log.read_bytes()
    rep = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "accuracy_per_minute.py"), "report", "--log",
                          str(log)], capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert "0.750 (0.800, 0.700)" in rep.stdout and "0.760 (0.810, 0.710)" in rep.stdout
    assert log.read_bytes() == before


@pytest.mark.slow  # 15 s of timing; the layout rule itself is tested in tests/engine/train
def test_cpu_layout_benchmark_smoke(tmp_path):
    """The memory-layout benchmark times the small genome in both layouts and prints the rule's choice."""
    env = dict(os.environ, EMONAS_NO_PROGRESS="1", EMONAS_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_layout.py"), "--genomes", "1", "--rounds", "1"],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "nf1  8  cells 5" in r.stdout and "rule: channels-last" in r.stdout
    assert "the rule against always contiguous: x" in r.stdout


def test_preprocess_benchmark_smoke(tmp_path):
    env = dict(os.environ, EMONAS_NO_PROGRESS="1", EMONAS_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "preprocess_bench.py"), "--cases", "4",
                        "--shape", "24,24,12", "--rounds", "1", "--json"],
                       capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["same_cache_bytes"] is True  # one process and two write the same cache
    assert len(result["one_process_s"]) == len(result["two_processes_s"]) == 1 and result["speedup"] > 0


def test_importing_the_runner_leaves_the_test_process_environment_alone():
    """The smoke tests import benchmarks/run.py into the test process: on import it must not set
    what changes every later test (EMONAS_NO_PROGRESS silenced the CLI's progress lines)."""
    code = ("import importlib.util, json, os, sys\n"
            "before = dict(os.environ)\n"
            "for name in ('run', 'compare'):\n"
            f"    spec = importlib.util.spec_from_file_location('b_' + name, {str(ROOT / 'benchmarks')!r} + '/' + name + '.py')\n"
            "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
            "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))\n")
    env = {k: v for k, v in os.environ.items() if k != "EMONAS_NO_PROGRESS"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow  # two fresh PyTorch processes beside one busy one
def test_omp_wait_benchmark_smoke(tmp_path):
    """The OpenMP benchmark times each setting in its own process, beside a busy one, and prints ratios."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "omp_wait.py"), "--rounds", "1", "--steps", "1",
                        "--others", "1", "--settings", "default,passive,spin3k,one"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| 1 | " in r.stdout and "(x1.00)" in r.stdout and r.stdout.count(" (x") == 4
    assert "others 1 one" in r.stdout and "(1 threads)" in r.stdout


@pytest.mark.slow  # 50 cases, about 15 s
def test_accuracy_per_minute_writes_the_wider_tube_variant(tmp_path):
    """``dataset OUT --tube-radius``: a new folder with the variant's 50 cases, and never over a folder
    that holds anything."""
    script = str(ROOT / "benchmarks" / "accuracy_per_minute.py")
    out = tmp_path / "wide"
    r = subprocess.run([sys.executable, script, "dataset", str(out), "--tube-radius", "7"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["generator"]["tube_radius_mm"] == 7.0 and len(meta["training"]) == 50
    before = (out / "dataset.json").read_bytes()
    r = subprocess.run([sys.executable, script, "dataset", str(out), "--tube-radius", "6"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode != 0 and "not an empty folder" in r.stderr and (out / "dataset.json").read_bytes() == before


def test_cost_aware_rank_agreement_counts_measured_latencies_once_per_genome(tmp_path):
    """Parameters that order networks the other way round from their measured latency show as
    discordant pairs; predicted latencies and a genome found in both runs are not counted twice."""
    from engine.run.store import RunStore

    ca = _script("cost_aware")
    rows = [  # (genome, parameters, GFLOPs, latency ms, predicted)
        ('{"g": 1}', 100, 1.0, 10.0, 0), ('{"g": 2}', 200, 2.0, 20.0, 0), ('{"g": 3}', 300, 0.5, 5.0, 0),
        ('{"g": 4}', 400, 4.0, 40.0, 0), ('{"g": 5}', 50, 9.0, 99.0, 1)]
    runs = {}
    for name, part in (("latency", rows[:3]), ("parameters", rows[2:])):
        with RunStore.create(tmp_path / name, {"config": {}}) as s:
            for genome, p, g, ms, predicted in part:
                (cid,) = s.add_candidates([{"genome": genome}])
                s.update_candidate(cid, status="done", f1=0.5, f2=0.5, parameters=p, gflops=g, latency_ms=ms,
                                   latency_predicted=predicted)
        runs[name] = tmp_path / name
    r = ca.rank_agreement(runs)
    assert r["networks"] == 4 and r["latency_ms_range"] == [5.0, 40.0]
    assert r["spearman_gflops"] == pytest.approx(1.0)  # GFLOPs order them as latency does
    # genome 3 has the third-most parameters but is the fastest: 2 of the 6 pairs are the other way round
    assert r["discordant_parameters"] == pytest.approx(2 / 6)
    assert r["spearman_parameters"] == pytest.approx(0.4)
    # genome 3 was trained by both runs
    assert ca.shared_training(runs) == {"trained": {"latency": 3, "parameters": 3}, "common": 1}


def test_limit_bounds_scores_only_candidates_within_the_limit_in_one_normalization(tmp_path):
    """The comparison of a parameter limit's bounds: candidates over the limit, failed or without f1 are
    left out; the rest are normalized between the smallest network and the limit whatever their f2."""
    import math

    from engine.run.store import RunStore
    from engine.search.pareto import hypervolume_2d

    lb = _script("limit_bounds")
    lo, limit = 1_000, 100_000
    rows = [('{"g": 1}', "done", 0.4, 10_000), ('{"g": 2}', "done", 0.3, 50_000), ('{"g": 3}', "done", 0.6, 2_000),
            ('{"g": 4}', "done", 0.1, 500_000), ('{"g": 5}', "failed", None, 3_000)]
    with RunStore.create(tmp_path / "run", {"config": {}}) as s:
        for genome, status, f1, p in rows:
            (cid,) = s.add_candidates([{"genome": genome}])
            s.update_candidate(cid, status=status, f1=f1, f2=0.99, parameters=p)
    r = lb.score(tmp_path / "run", lo, limit)
    assert (r["trained"], r["distinct"], r["within"]) == (4, 4, 3)

    def x(p):
        return (math.log(p) - math.log(lo)) / (math.log(limit) - math.log(lo))

    pts = [(0.4, x(10_000)), (0.3, x(50_000)), (0.6, x(2_000))]
    assert r["hypervolume"] == pytest.approx(hypervolume_2d(pts, (1.0, 1.0))) and r["front"] == 3
    low, cap = lb.space_limit(0.25)
    assert 0 < low < cap


def test_latency_model_errors_are_relative_and_rank_by_spearman():
    """The latency model benchmark's score: |predicted / measured - 1| (median, 90th percentile) and rho."""
    lm = _script("latency_model")
    points = [(1e9, 8, 10.0), (2e9, 8, 20.0), (4e9, 16, 40.0), (8e9, 16, 80.0), (16e9, 16, 160.0)]
    exact = lm.errors(lambda f, w: f * 1e-8, points)
    assert exact["median"] == pytest.approx(0.0) and exact["p90"] == pytest.approx(0.0) and exact["rho"] == pytest.approx(1.0)
    off = lm.errors(lambda f, w: f * 1e-8 * (2.0 if w == 8 else 1.0), points)
    assert off["median"] == pytest.approx(0.0) and off["p90"] == pytest.approx(1.0)
    assert off["rho"] < 1.0
