"""Security and privacy defaults: nothing user-supplied is unpickled, Ray binds to 127.0.0.1 with no
dashboard, the CLI opens no network connection, no patient identifier from DICOM tags reaches any
output, a run on a network file system is warned about, and one run has one writer."""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import RUN_TESTS, logged_evaluate, small_config
from engine.errors import RunError
from engine.run import RunStore, SearchSession
from search_fakes import PROBLEM

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("DOE^JANE-SECRET", "JANE-SECRET", "PID-SECRET-4711", "19010203", "ACC-SECRET-99", "Secret Hospital")
TINY_GENOME = json.dumps({"in2": 0, "in3": 1, "in4": 2, "op1": "conv3d_3x3x3", "op2": "conv3d_1x1x1",
                          "op3": "conv2d_3x3x1", "op4": "identity", "n_cells": 5, "nf1": 8, "lr": 1e-3})

# ------------------------------------------------------------------------------ (a) no unpickling


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            yield owner, node.func.attr, {k.arg: k.value for k in node.keywords}, node.lineno


def test_checkpoints_are_only_loaded_with_weights_only():
    found, bad = 0, []
    for path in sorted([*(ROOT / "engine").rglob("*.py"), *(ROOT / "emonas_gui").rglob("*.py"), ROOT / "main.py"]):
        if not path.is_file():
            continue
        for owner, attr, kw, line in _calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{line}"
            if owner == "torch" and attr == "load":
                found += 1
                w = kw.get("weights_only")
                if not (isinstance(w, ast.Constant) and w.value is True):
                    bad.append(f"{where} torch.load without weights_only=True")
            elif owner in ("pickle", "dill", "cloudpickle", "joblib") and attr in ("load", "loads"):
                bad.append(f"{where} {owner}.{attr}")
            elif owner in ("np", "numpy") and attr == "load":
                a = kw.get("allow_pickle")
                if isinstance(a, ast.Constant) and a.value is True:
                    bad.append(f"{where} np.load(allow_pickle=True)")
    assert found >= 2, "the scan found no torch.load at all: is it looking in the right place?"
    assert not bad, bad


class _Evil:
    """Pickles to a call of os.system: loading it without weights_only runs a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _write_evil(path: Path, marker: Path) -> None:
    import torch

    torch.save({"conv.weight": _Evil(marker)}, path)


# ------------------------------------------------------------------------------ (c) Ray binds locally


def test_ray_starts_locally_on_loopback_without_dashboard(monkeypatch):
    import types

    from engine.run.executors import RayExecutor

    calls = []
    fake = types.SimpleNamespace(
        is_initialized=lambda: False, init=lambda **kw: calls.append(kw), cluster_resources=lambda: {"CPU": 2.0},
        remote=lambda **kw: (lambda f: f), put=lambda x: x, shutdown=lambda: None)
    monkeypatch.setitem(sys.modules, "ray", fake)
    RayExecutor(lambda t, c=None: {}, address="")
    RayExecutor(lambda t, c=None: {}, address="10.0.0.5:6379")
    local, cluster = calls
    for kw in (local, cluster):
        assert kw["include_dashboard"] is False and kw["dashboard_host"] == "127.0.0.1"
    assert "address" not in local and local["_node_ip_address"] == "127.0.0.1"
    assert cluster["address"] == "10.0.0.5:6379"  # only the address the user gave


# ------------------------------------------------- (d) no network, (e) no patient identifiers, (a) refusal

SITE = textwrap.dedent("""
    import json, os, socket, sys, traceback
    _LOG = os.environ["NET_LOG"]
    open(_LOG + ".loaded", "a").close()

    def _record(sock, address, how):
        if sock.family != socket.AF_UNIX:
            with open(_LOG, "a") as fh:
                fh.write(json.dumps({"how": how, "address": repr(address), "argv": sys.argv,
                                     "stack": traceback.format_stack(limit=6)}) + "\\n")

    def _wrap(name):
        orig = getattr(socket.socket, name)
        def patched(self, address, *a):
            _record(self, address, name)
            return orig(self, address, *a)
        setattr(socket.socket, name, patched)

    for _n in ("connect", "connect_ex"):
        _wrap(_n)
    _sendto = socket.socket.sendto
    def _patched_sendto(self, data, *a):
        _record(self, a[-1], "sendto")
        return _sendto(self, data, *a)
    socket.socket.sendto = _patched_sendto
""")


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """Run emonas with every non-AF_UNIX connect/sendto recorded: returns (run(args) -> CompletedProcess, log)."""
    base = tmp_path_factory.mktemp("net")
    (base / "site").mkdir()
    (base / "site" / "sitecustomize.py").write_text(SITE)
    log = base / "connections.jsonl"

    def run(*args, timeout=900, **env):
        e = {**os.environ, "NET_LOG": str(log), "EMONAS_NO_PROGRESS": "1", "EMONAS_CACHE_DIR": str(base / "cache"),
             "PYTHONPATH": os.pathsep.join([str(base / "site"), str(ROOT)]), **env}
        return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=e)

    return run, log, base


def test_the_network_watch_sees_a_connection(watched, tmp_path):
    run, log, base = watched
    code = "import socket; s = socket.socket(); s.settimeout(1); print(s.connect_ex(('127.0.0.1', 9)))"
    e = {**os.environ, "NET_LOG": str(tmp_path / "probe.jsonl"), "PYTHONPATH": str(base / "site")}
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=e, timeout=60)
    assert "127.0.0.1" in (tmp_path / "probe.jsonl").read_text()  # the watch works, so silence means none


def test_check_and_train_make_no_network_connection(watched, tiny_demo, tmp_path):
    run, log, _ = watched
    p = run("check", "demo", "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    p = run("train", "--dataset", tiny_demo[0], "--genome", TINY_GENOME, "--out", tmp_path / "train", "--epochs", 1,
            "--iterations-per-epoch", 1, "--patch", "16,16,16", "--device", "cpu")
    assert p.returncode == 0 and (tmp_path / "train" / "weights.pt").is_file(), p.stderr[-2000:]
    assert Path(str(log) + ".loaded").exists()
    assert not log.exists(), log.read_text()[:3000]


def _dicom_dataset(root: Path, cases: int = 4, slices: int = 8) -> Path:
    """images/<pseudonym>/ DICOM series built from pydicom's CT_small.dcm, tagged with made-up patient
    identifiers, and labels/<pseudonym>.nii.gz on each series' grid."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from engine.data.io import read_image, write_label

    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(0)
    for c in range(cases):
        folder = root / "images" / f"scan{c:02d}"
        folder.mkdir(parents=True)
        series = generate_uid()
        for k in range(slices):
            ds = src.copy()
            ds.PatientName = "DOE^JANE-SECRET"
            ds.PatientID = "PID-SECRET-4711"
            ds.PatientBirthDate = "19010203"
            ds.AccessionNumber = "ACC-SECRET-99"
            ds.InstitutionName = "Secret Hospital"
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [-158.1, -179.0, -75.7 + 5.0 * k]
            ds.SliceLocation = -75.7 + 5.0 * k
            px = src.pixel_array.astype(np.int16) + rng.integers(0, 20, src.pixel_array.shape).astype(np.int16)
            ds.PixelData = px.tobytes()
            ds.save_as(folder / f"IM{k:04d}.dcm")
        image = read_image(folder)
        lab = np.zeros(image.array.shape[1:], np.uint8)
        x, y, z = lab.shape
        lab[x // 4: x // 2, y // 4: y // 2, 1: z - 1] = 1
        (root / "labels").mkdir(exist_ok=True)
        write_label(root / "labels" / f"scan{c:02d}.nii.gz", lab, image)
    return root


def _leaks(folder: Path) -> list[str]:
    """Files under ``folder`` holding any of the secrets (as bytes, also UTF-16 and inside the SQLite WAL)."""
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            for s in SECRETS:
                if s.encode() in data or s.encode("utf-16-le") in data:
                    out.append(f"{p}: {s}")
    return out


@pytest.mark.slow
def test_dicom_identifiers_never_leave_the_scans_and_no_network(watched, tmp_path):
    """check, train, export, predict and a search on DICOM series with patient tags: no secret in any
    output file, database, log or model card; case ids are the folder names; no connection opened."""
    run, log, _ = watched
    data = _dicom_dataset(tmp_path / "dicom")
    out = tmp_path / "out"
    out.mkdir()
    logs = []

    def emonas(*args):
        p = run(*args, EMONAS_CACHE_DIR=str(out / "cache"))
        logs.append(p.stdout + p.stderr)
        assert p.returncode == 0, p.stderr[-3000:]
        return p

    checked = json.loads(emonas("check", data, "--json").stdout.strip().splitlines()[-1])
    assert sorted(c["case_id"] for c in checked["cases"]) == [f"scan{c:02d}" for c in range(4)]
    common = ["--epochs", 1, "--iterations-per-epoch", 1, "--patch", "16,16,16", "--device", "cpu"]
    emonas("train", "--dataset", data, "--genome", TINY_GENOME, "--out", out / "train", *common)
    emonas("export", "--checkpoint", out / "train", "--out", out / "model", "--format", "onnx")
    emonas("predict", out / "model", data / "images" / "scan03", "-o", out / "pred")
    cfg = out / "search.toml"
    cfg.write_text("[space]\nnf1 = [8]\nn_cells = [5]\n[training.plan]\npatch_size = [16, 16, 16]\n"
                   "[training.extra]\niterations_per_epoch = 1\n")
    emonas("search", "--dataset", data, "--config", cfg, "--out", out / "run", "--population", 2,
           "--generations", 1, "--epochs", 1, "--device", "cpu", "--seed", 1)
    (out / "cli_output.txt").write_text("\n".join(logs))
    assert (out / "model" / "MODEL_CARD.md").is_file() and (out / "run" / "run.db").is_file()
    # a prediction for a DICOM series is a DICOM SEG filed back to that same patient: it must carry the
    # patient module (that is its point); everything else the engine writes must not
    assert all(line.rsplit(": ", 1)[0].endswith(".dcm") for line in _leaks(out / "pred")), _leaks(out / "pred")
    shutil.rmtree(out / "pred")
    assert not _leaks(out), _leaks(out)
    assert _leaks(data)  # the scans do hold the secrets: the search above could have found them
    assert not log.exists(), log.read_text()[:3000]

    # (a) a pickled payload in place of weights is refused, in a training folder and a model folder
    marker = tmp_path / "pwned"
    _write_evil(out / "train" / "weights.pt", marker)
    p = run("export", "--checkpoint", out / "train", "--out", out / "model2")
    assert p.returncode == 2 and "weights.pt" in p.stderr and "Traceback" not in p.stderr, p.stderr[-2000:]
    model = out / "model"
    (model / "model.onnx").write_bytes((model / "model.onnx").read_bytes()[:-1] + b"\x00")
    p = run("predict", model, data / "images" / "scan03", "-o", out / "pred2")
    assert p.returncode == 2 and "checksum mismatch" in p.stderr, p.stderr[-2000:]
    assert not marker.exists(), "a pickled payload was executed"


def test_a_pickled_payload_is_not_run_when_loading_weights(tmp_path):
    from engine.errors import DataError
    from engine.genome import Genome
    from engine.infer.folder import TrainingFolder

    marker = tmp_path / "pwned"
    _write_evil(tmp_path / "weights.pt", marker)
    folder = TrainingFolder(tmp_path, Genome.from_dict(json.loads(TINY_GENOME)), 1, 2, {"background": 0, "a": 1},
                            ["CT"], None, (16, 16, 16), None, {}, {})
    with pytest.raises(DataError, match="weights.pt"):
        folder.build_model()
    assert not marker.exists()
    import pickle

    pickle.loads(pickle.dumps(_Evil(tmp_path / "oracle")))  # the oracle: plain unpickling runs the payload
    assert (tmp_path / "oracle").exists()


# ------------------------------------------------------------------------------ (f) network file systems


def test_a_run_on_a_network_file_system_is_warned_about(tmp_path, monkeypatch, caplog):
    from engine.run import store

    run = tmp_path / "shared" / "run"
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\nnas:/export {tmp_path / 'shared'} nfs4 rw,relatime 0 0\n"
                      f"tmpfs {tmp_path / 'shared' / 'ru'} tmpfs rw 0 0\n")
    monkeypatch.setattr(store, "MOUNTS", str(mounts))
    assert store.filesystem_type(run) == "nfs4" and store.filesystem_type(tmp_path) == "ext4"
    with caplog.at_level(logging.WARNING, logger="engine.run.store"):
        SearchSession(run, small_config(generations=1), logged_evaluate, PROBLEM).run()
    assert any("network file system (nfs4)" in r.getMessage() for r in caplog.records)
    with RunStore.open_readonly(run) as s:
        assert "nfs4" in s.get_meta("filesystem_warning")
    mounts.write_text(f"/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 {tmp_path / 'shared'} xfs rw 0 0\n")  # moved to a local disk
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.run.store"):
        SearchSession.open(run, logged_evaluate, PROBLEM).run()
    assert not any("network file system" in r.getMessage() for r in caplog.records)
    with RunStore.open_readonly(run) as s:
        assert s.get_meta("filesystem_warning") is None


# ------------------------------------------------------------------------------ one writer per run

HOLDER = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {str(RUN_TESTS)!r})
    from engine.config import SearchConfig
    from engine.run import SearchSession
    from search_fakes import PROBLEM, fake_evaluate
    cfg = SearchConfig().replace(samea={{"population": 4, "generations": 50}}, seed=1)
    SearchSession(sys.argv[1], cfg, fake_evaluate, PROBLEM).run()
""")


def test_a_second_process_on_the_same_run_is_refused_naming_the_owner(tmp_path):
    import socket

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], env={**os.environ, "FAKE_SLEEP": "0.2"},
                              stderr=subprocess.PIPE, text=True)
    try:
        end = time.time() + 120
        while not (run / "run.lock").exists() or not (run / "run.lock").read_text():
            assert holder.poll() is None, holder.stderr.read()[-2000:]
            assert time.time() < end, "the first process did not start its run"
            time.sleep(0.05)
        owner = f"process {holder.pid} on {socket.gethostname()}"
        p = subprocess.run([sys.executable, "-m", "engine.cli", "resume", str(run)], capture_output=True, text=True,
                           timeout=300)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert owner in p.stderr.strip().splitlines()[-1], p.stderr
        with pytest.raises(RunError, match=owner):
            SearchSession.open(run, logged_evaluate, PROBLEM).run()
        with RunStore.open_readonly(run) as s:  # readers need no lock
            assert s.integrity_check() == "ok"
        assert holder.poll() is None  # the owner is undisturbed
    finally:
        holder.kill()
        holder.wait()
    summary = SearchSession.open(run, logged_evaluate, PROBLEM).run(cancel=_after(3))  # the lock is free again
    assert summary["status"] == "paused"


def _after(n: int):
    class Flag:
        calls = 0

        def is_set(self):
            self.calls += 1
            return self.calls > n

    return Flag()
