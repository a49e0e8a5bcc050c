"""End to end with real training: `emonas search`, `front`, `runs`, `resume` on a small demo dataset."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.run import RunStore
from engine.run.latency import latency_key

TINY = """
[space]
nf1 = [8]
n_cells = [5]
[samea]
learning_generations = 1
surrogate_trees = 20
[training.plan]
target_spacing = [7.0, 7.0, 7.0]
patch_size = [16, 16, 16]
[training.extra]
iterations_per_epoch = 2
"""


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """Six real cases of the demo dataset (MSD layout): four to train, one to validate, one to test."""
    from engine.data.demo import demo_dataset_path

    src = demo_dataset_path()
    dst = tmp_path_factory.mktemp("demo6")
    (dst / "imagesTr").mkdir()
    (dst / "labelsTr").mkdir()
    meta = json.loads((src / "dataset.json").read_text())
    meta["training"] = meta["training"][:6]
    meta["numTraining"] = 6
    for entry in meta["training"]:
        for key in ("image", "label"):
            shutil.copy(src / entry[key], dst / entry[key])
    (dst / "dataset.json").write_text(json.dumps(meta))
    config = dst.parent / "tiny_search.toml"
    config.write_text(TINY)
    return dst, config


def _bytes_of(*roots: Path) -> dict[str, bytes]:
    """Every file under ``roots`` (or the file itself), by path: what a command must leave as it found it."""
    files = [p for r in roots for p in ([r] if r.is_file() else sorted(r.rglob("*"))) if p.is_file()]
    return {str(p): p.read_bytes() for p in files}


def emonas(*args, check=True):
    p = subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True, timeout=900)
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def last_json(p):
    return json.loads(p.stdout.strip().splitlines()[-1])


class Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(capsys, *args, check=True):
    """`emonas ARGS` in this process (engine.cli.main): the quick commands need no fresh interpreter."""
    from engine.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    if check:
        assert code == 0, out.err[-3000:]
    return Result(code, out.out, out.err)


def search_args(small_demo):
    data, config = small_demo
    return ["--dataset", data, "--config", config, "--population", 4, "--generations", 2, "--epochs", 1, "--seed", 7, "--json"]


@pytest.fixture(scope="module")
def searched(small_demo, tmp_path_factory):
    """One finished search: (run directory, summary)."""
    runs = tmp_path_factory.mktemp("runs")
    return runs / "a", last_json(emonas("search", "--out", runs / "a", *search_args(small_demo)))


def test_seeded_search_is_reproducible_and_listed(small_demo, searched, capsys):
    run_a, a = searched
    runs_dir = run_a.parent
    inputs = _bytes_of(*small_demo)  # the dataset and the config: read, never written
    b = last_json(emonas("search", "--out", run_a.parent / "b", *search_args(small_demo)))
    assert a["status"] == b["status"] == "finished"
    assert a["evaluations_per_phase"] == {"init": 4, "learning": 4}
    rows = {}
    for name in ("a", "b"):
        with RunStore.open_readonly(runs_dir / name) as s:
            rows[name] = s.candidates()
            assert s.integrity_check() == "ok"
    assert [r["genome"] for r in rows["a"]] == [r["genome"] for r in rows["b"]]  # same genomes, same order
    assert [r["f1"] for r in rows["a"]] == pytest.approx([r["f1"] for r in rows["b"]])
    for r in rows["a"]:
        assert r["status"] == "done" and 0 < r["f1"] <= 1 and r["parameters"] > 0
        assert set(r["metrics"]["dice"]) == {"grey matter", "white matter", "CSF"}
        folder = run_a / "candidates" / str(r["id"])
        assert (folder / "weights.pt").is_file() and (folder / "training.json").is_file()

    front = last_json(cli(capsys, "front", run_a, "--json"))["front"]
    assert front and [f["id"] for f in front] == [f["id"] for f in a["front"]]
    assert all(set(f) >= {"id", "genome", "f1", "f2", "parameters", "dice"} for f in front)
    text = cli(capsys, "front", run_a).stdout
    assert str(front[0]["id"]) in text and "parameters" in text
    # the paper's objective, and yet every candidate carries a latency: the front's networks measured
    # (ONNX Runtime, one thread) once the search ended, the others predicted from FLOPs by them
    assert all(f["latency_ms"] > 0 and not f["latency_predicted"] and f["gflops"] > 0 for f in front)
    assert "latency: cpu" in text and "latency not measured" not in text
    assert all(re.search(rf"^\s+{f['id']}\s.*\b{f['latency_ms']:.1f} ms", text, re.M) for f in front)
    front_ids = {f["id"] for f in front}
    others = [r for r in rows["a"] if r["id"] not in front_ids]
    assert others and all(r["latency_ms"] > 0 and r["latency_predicted"] for r in others)

    def measured() -> list:
        with RunStore.open_readonly(run_a) as s:
            return sorted(tuple(r) for r in s.conn.execute("SELECT genome, latency_ms FROM latency"))

    before = measured()
    assert len(before) == len({latency_key(f["genome"]) for f in front})  # the front's networks, once each

    runs = last_json(cli(capsys, "runs", runs_dir, "--json"))["runs"]
    assert [(Path(r["run"]).name, r["status"], r["generation"]) for r in runs] == [("a", "finished", 2), ("b", "finished", 2)]

    again = last_json(cli(capsys, "resume", run_a, "--json"))  # nothing left to do
    assert again["status"] == "finished" and again["counts"]["done"] == 8
    assert measured() == before  # nothing measured again
    assert [f["latency_ms"] for f in again["front"]] == [f["latency_ms"] for f in front]
    assert _bytes_of(*small_demo) == inputs


def test_user_errors_are_one_line(small_demo, tmp_path, capsys):
    data, config = small_demo
    p = emonas("search", "--dataset", data, "--out", tmp_path / "r", "--population", 1, "--json", check=False)
    assert p.returncode == 2 and "samea.population must be an integer >= 2" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[samea]\npopulaton = 4\n")
    p = cli(capsys, "search", "--dataset", data, "--out", tmp_path / "r", "--config", bad, check=False)
    assert p.returncode == 2 and "unknown key samea.populaton" in p.stderr and str(bad) in p.stderr
    p = cli(capsys, "resume", tmp_path / "nothing", check=False)
    assert p.returncode == 2 and "not a run directory" in p.stderr
    p = cli(capsys, "front", tmp_path / "nothing", "--json", check=False)
    assert not (tmp_path / "r").exists()  # a refused search leaves nothing behind
    assert p.returncode == 2 and "error" in last_json(p)
    p = emonas("search", "--dataset", data, "--config", config, "--out", "/proc/emonas-run", "--json", check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert last_json(p)["error"] == "/proc/emonas-run: cannot make the run folder here (No such file or directory)"


def test_retrain_and_report(searched, tmp_path, capsys):
    run, summary = searched
    best = summary["front"][0]["id"]
    r = last_json(cli(capsys, "retrain", run, "--candidate", best, "--epochs", 2, "--out", tmp_path / "final", "--json"))
    assert r["epochs"] == 2 and r["candidate"] == best
    assert (tmp_path / "final" / "weights.pt").is_file()
    doc = json.loads((tmp_path / "final" / "training.json").read_text())
    assert doc["genome"] == last_json(cli(capsys, "front", run, "--json"))["front"][0]["genome"]
    assert len(doc["split"]["train"]) == 5  # the training and the validation cases

    rep = last_json(cli(capsys, "report", run, "--out", tmp_path / "report", "--family-widths", "2,3,4,5",
                        "--family-depths", "2", "--family-budgets", "epochs", "--json"))
    assert rep["profile"] == "default"
    models = {m["model"] for m in rep["models"]}
    assert models == {f"emonas#{f['id']}" for f in summary["front"]} | {f"unet_w{w}_l2_epochs" for w in (2, 3, 4, 5)}
    import csv

    rows = list(csv.DictReader(open(rep["metrics_csv"])))
    assert {row["case"] for row in rows} == set(rep["test_cases"]) and len(rep["test_cases"]) == 1
    assert {row["label"] for row in rows} == {"grey matter", "white matter", "CSF"}
    assert all(0 <= float(row["dice"]) <= 1 and float(row["hd95_mm"]) >= 0 for row in rows)
    assert len(rows) == 3 * len(models)
    summary_rows = list(csv.DictReader(open(rep["summary_csv"])))
    assert {"dice_mean", "dice_std", "hd95_mm_mean", "hd95_mm_std"} <= set(summary_rows[0])
    assert Path(rep["figure_png"]).read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in Path(rep["figure_svg"]).read_text()
    p = cli(capsys, "retrain", run, "--candidate", 999, "--out", tmp_path / "x", check=False)
    assert p.returncode == 2 and "no candidate 999" in p.stderr
    p = cli(capsys, "report", run, "--out", "/proc/emonas-report", check=False)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [
        "emonas: error: /proc/emonas-report: cannot create the report folder (No such file or directory)"]


def test_a_run_keeps_its_resampling_when_planning_defaults_change(searched, tmp_path, monkeypatch):
    """Resume, retrain and the report re-plan from the run's data spec: what the run chose is pinned there."""
    from engine.data import plan as planning
    from engine.run.retrain import run_context
    from engine.train.data import prepare_training_data

    run, _ = searched
    ctx = run_context(run)
    spec = ctx["problem"]["data"]
    with RunStore.open_readonly(run) as store:
        stored = store.get_meta("plan")
    assert spec["plan_overrides"]["resampling"] == stored["resampling"]

    real = planning.make_plan

    def new_defaults(dataset, *args, overrides=None, **kwargs):  # a later version's other default
        plan = real(dataset, *args, overrides=overrides, **kwargs)
        if "resampling" not in (overrides or {}):
            plan.resampling = {**plan.resampling, "image_order": 1}
        return plan

    monkeypatch.setattr(planning, "make_plan", new_defaults)
    monkeypatch.setattr("engine.data.make_plan", new_defaults, raising=False)
    again = prepare_training_data(spec["dataset"], seed=spec["seed"], plan_overrides=spec["plan_overrides"],
                                  cache_dir=str(tmp_path / "cache"), split=spec.get("split"))
    assert again.plan.resampling == stored["resampling"]
    unpinned = prepare_training_data(spec["dataset"], seed=spec["seed"], cache_dir=str(tmp_path / "cache"),
                                     plan_overrides={k: v for k, v in spec["plan_overrides"].items() if k != "resampling"})
    assert unpinned.plan.resampling["image_order"] == 1  # the stand-in default did apply without the pin


def test_retrain_reports_progress_and_can_be_cancelled(searched, tmp_path):
    """What the app's Export step relies on: epoch events while retraining, and a clean cancel."""
    import threading

    from engine.errors import RunError
    from engine.run.retrain import train_final_model

    run, summary = searched
    best = summary["front"][0]["id"]
    events: list[dict] = []
    r = train_final_model(run, best, tmp_path / "final", epochs=2, device="cpu", callback=events.append)
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1, 2] and r["epochs"] == 2
    assert any(e["event"] == "step" for e in events)

    cancel = threading.Event()

    def stop_at_first_epoch(ev: dict) -> None:
        if ev["event"] == "epoch":
            cancel.set()

    with pytest.raises(RunError, match="cancelled"):
        train_final_model(run, best, tmp_path / "stopped", epochs=50, device="cpu", callback=stop_at_first_epoch,
                          cancel=cancel)


@pytest.mark.slow
def test_killed_real_search_resumes_without_retraining(small_demo, tmp_path):
    """SIGKILL `emonas search` during training and right after a commit; `emonas resume` finishes it."""
    import os
    import signal
    import sqlite3
    import time

    run = tmp_path / "run"
    args = [sys.executable, "-m", "engine.cli", "search", "--out", str(run), *map(str, search_args(small_demo))]
    kept: dict = {}

    def wait_until(pred, timeout=600):
        end = time.time() + timeout
        while time.time() < end:
            if (run / "run.db").exists():
                try:
                    with RunStore.open_readonly(run) as s:
                        if pred(s):
                            return
                except (sqlite3.OperationalError, Exception):
                    pass
            time.sleep(0.05)
        raise AssertionError("search did not get there")

    moments = [
        lambda s: s.counts()["running"] == 1 and s.counts()["done"] >= 1,
        lambda s: s.counts()["done"] > len(kept),
    ]
    for i, moment in enumerate(moments):
        cmd = args if i == 0 else [sys.executable, "-m", "engine.cli", "resume", str(run)]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda s: moment(s) and s.counts()["done"] > len(kept))
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
        with RunStore.open_readonly(run) as s:
            assert s.integrity_check() == "ok"
            done = {c["id"]: c["finished_at"] for c in s.candidates("done")}
        assert all(done[k] == v for k, v in kept.items())
        kept = done
    out = last_json(emonas("resume", run, "--json"))
    assert out["status"] == "finished" and out["counts"]["done"] + out["counts"]["failed"] == 8
    with RunStore.open_readonly(run) as s:
        assert s.integrity_check() == "ok"
        rows = s.candidates()
    assert len({json.dumps(r["genome"]) for r in rows}) == len(rows) == 8
    assert all(r["finished_at"] == kept[r["id"]] for r in rows if r["id"] in kept)


def test_the_run_writes_search_log(searched):
    run, summary = searched
    text = (run / "search.log").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) ", line) for line in lines), lines[:3]
    with RunStore.open_readonly(run) as store:
        done = {c["id"] for c in store.candidates() if c["status"] == "done"}
    assert {int(i) for i in re.findall(r"candidate (\d+) done", text)} == done
    assert any(re.search(r"generation \d+/2 done: front \d+, best f1 0\.\d{4}", line) for line in lines)
    assert "search finished" in lines[-1]


def test_every_search_option_sets_its_configuration_key(tmp_path):
    """Each `emonas search` option lands on the configuration key it names; unset options change nothing."""
    from engine.cli import build_parser
    from engine.cli.search import _config_from_args
    from engine.config import SearchConfig

    splits = tmp_path / "splits.json"
    argv = ["search", "--out", str(tmp_path / "run"), "--dataset", "demo", "--population", "3", "--generations", "4",
            "--epochs", "7", "--strategy", "moead", "--workers", "2", "--seed", "0", "--device", "cpu",
            "--patch", "16,24,32", "--objective", "flops", "--latency-target", "cuda", "--max-parameters", "0",
            "--max-latency-ms", "12.5", "--ray-address", "10.0.0.1:6379", "--splits", str(splits), "--fold", "2"]
    cfg = _config_from_args(build_parser().parse_args(argv))
    s, t, r = cfg.samea, cfg.training, cfg.resources
    assert (s.population, s.neighbourhood, s.generations, s.strategy, s.objective, s.latency_target) == \
        (3, 3, 4, "moead", "flops", "cuda")
    assert (t.epochs, list(t.patch_size)) == (7, [16, 24, 32])
    assert (r.workers, r.executor, r.device, r.max_parameters, r.max_latency_ms, r.ray_address) == \
        (2, "local", "cpu", 0, 12.5, "10.0.0.1:6379")
    assert (cfg.seed, cfg.dataset, cfg.splits, cfg.fold) == (0, "demo", str(splits.resolve()), 2)
    bare = _config_from_args(build_parser().parse_args(["search", "--out", str(tmp_path / "run")]))
    assert bare.to_dict() == SearchConfig().to_dict()


@pytest.mark.parametrize("text, count", [("100000", 100000), ("1e5", 100000), ("100_000", 100000),
                                         ("100,000", 100000), ("2.5E6", 2500000), ("0", 0)])
def test_a_parameter_limit_is_read_as_people_write_counts(tmp_path, text, count):
    from engine.cli import build_parser
    from engine.cli.search import _config_from_args

    args = build_parser().parse_args(["search", "--out", str(tmp_path / "run"), "--max-parameters", text])
    assert _config_from_args(args).resources.max_parameters == count


@pytest.mark.parametrize("text", ["1.5", "-1e5", "lots", "nan", "inf"])
def test_a_parameter_limit_that_is_no_count_is_a_usage_error(tmp_path, text, capsys):
    from engine.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["search", "--out", str(tmp_path / "run"), f"--max-parameters={text}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"--max-parameters: {text!r} is not a" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "run").exists()


def test_a_toml_count_written_as_a_float_is_read_when_whole():
    from engine.config import SearchConfig
    from engine.errors import ConfigError

    assert SearchConfig.from_toml("[resources]\nmax_parameters = 1e5\n").resources.max_parameters == 100000
    with pytest.raises(ConfigError, match="max_parameters must be int"):
        SearchConfig.from_toml("[resources]\nmax_parameters = 1.5e0\n")


REFUSE_LIGHT = """
import sys
from engine.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("HEAVY", sorted(m for m in ("torch", "sklearn", "monai") if m in sys.modules), code)
"""


@pytest.mark.parametrize("args", [
    ["search", "--dataset", "{data}", "--out", "{data}/imagesTr/run"],  # a run inside its dataset
    ["predict", "{tmp}/no_model", "{data}/imagesTr", "-o", "{tmp}/out"],  # no model folder there
])
def test_a_wrong_path_is_refused_before_the_heavy_libraries_load(tmp_path, args):
    """The refusal comes at once: neither PyTorch nor the search's libraries are imported to say it."""
    data = tmp_path / "data"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    argv = [a.format(data=data, tmp=tmp_path) for a in args]
    p = subprocess.run([sys.executable, "-c", REFUSE_LIGHT, *argv], capture_output=True, text=True, timeout=300)
    assert "emonas: error: " in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "HEAVY [] 2"
