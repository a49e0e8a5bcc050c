"""No command writes over what it reads: the real CLI on real files, with the bytes of every input
checked before and after (nothing but the intended outputs may change).

Covered: ``predict`` with ``-o`` equal to the inputs' folder, a symlink to it, the model folder or a
folder inside it, inputs with colliding output names; ``export`` into its training folder or its
run (with ``--force``); ``train`` into an exported model folder, its dataset or an existing training
folder; ``retrain``/``report`` into their run; ``search`` into its dataset; ``demo-data`` into the
cache it copies from; and writes that fail half-way leave no file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import demo_subset, logged_evaluate, small_config
from engine.run import SearchSession
from search_fakes import PROBLEM

EXPORT_TESTS = Path(__file__).resolve().parents[1] / "engine" / "export"
sys.path.insert(0, str(EXPORT_TESTS))
from export_helpers import SMALL, make_training_folder  # noqa: E402

from engine.data.plan import Plan  # noqa: E402

GENOME = json.dumps(SMALL.to_dict())  # nf1 8, five cells


def tree(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (symlinks followed), by path: what must not change.

    SQLite's shared-memory and write-ahead files, which any reader of a run creates, are left out;
    the database file itself is compared."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            if p.name.endswith(("-wal", "-shm")):
                continue
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def emonas(*args, env=None):
    e = {**os.environ, "EMONAS_NO_PROGRESS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900, env=e)


def refused(p, *needles):
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emonas: error: "), p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset of five demo cases, scans to predict, a training folder and a model folder."""
    root = tmp_path_factory.mktemp("safety")
    data = demo_subset(root / "data", 5)
    scans = root / "scans"
    scans.mkdir()
    for i, src in enumerate(sorted((data / "imagesTr").iterdir())[:2]):
        (scans / src.name).write_bytes(src.read_bytes())
    plan = Plan(target_spacing=(4.0, 4.0, 4.0), patch_size=(32, 32, 32), batch_size=2,
                normalization=[{"modality": "T1", "scheme": "zscore", "use_nonzero_mask": False}],
                pool_schedule=[(2, 2, 2)] * 4, modalities=["T1"],
                labels={"background": 0, "grey matter": 1, "white matter": 2, "CSF": 3}).to_dict()
    trained = make_training_folder(root / "trained", labels=plan["labels"], plan=plan)
    return {"root": root, "data": data, "scans": scans, "trained": trained}


# ----------------------------------------------------------------------------------------- predict


def test_predict_into_the_inputs_folder_or_a_symlink_to_it_is_refused(world):
    scans, trained = world["scans"], world["trained"]
    inputs = sorted(scans.iterdir())
    link = world["root"] / "link_to_scans"
    link.symlink_to(scans, target_is_directory=True)
    before = tree(scans, trained)
    line = refused(emonas("predict", trained, *inputs, "-o", scans), "contains the input scan")
    assert str(scans) in line
    refused(emonas("predict", trained, *inputs, "-o", link), "contains the input scan")
    # an output file that is a hard link to the scan: the same file under another path, refused
    out = world["root"] / "out_hardlink"
    out.mkdir()
    os.link(inputs[0], out / inputs[0].name)
    refused(emonas("predict", trained, inputs[0], "-o", out), "is the input scan")
    assert tree(scans, trained) == before
    assert sorted(p.name for p in scans.iterdir()) == [p.name for p in inputs]


def test_predict_into_the_model_folder_or_inside_it_is_refused(world):
    scans, trained = world["scans"], world["trained"]
    before = tree(scans, trained)
    refused(emonas("predict", trained, sorted(scans.iterdir())[0], "-o", trained), "is the model folder")
    refused(emonas("predict", trained, sorted(scans.iterdir())[0], "-o", trained / "labels"), "inside the model folder")
    assert tree(scans, trained) == before
    assert not (trained / "labels").exists()


def test_colliding_output_names_are_refused_before_any_work(world):
    root, trained = world["root"], world["trained"]
    a, b = root / "a", root / "b"
    a.mkdir()
    b.mkdir()
    scans = sorted(world["scans"].iterdir())
    (a / "scan.nii.gz").write_bytes(scans[0].read_bytes())
    (b / "scan.nii.gz").write_bytes(scans[1].read_bytes())
    before = tree(a, b, trained)
    out = root / "collide_out"
    line = refused(emonas("predict", trained, a / "scan.nii.gz", b / "scan.nii.gz", "-o", out),
                   "would both be written as scan.nii.gz")
    assert str(a / "scan.nii.gz") in line and str(b / "scan.nii.gz") in line
    assert not out.exists()  # nothing was predicted, not even the first case
    # a .mha and a .nii.gz of one name collide too: both would become scan.nii.gz
    from engine.data.io import read_image, write_image

    img = read_image(b / "scan.nii.gz")
    write_image(b / "scan.mha", img.array, img.affine)
    before = tree(a, b, trained)
    refused(emonas("predict", trained, a / "scan.nii.gz", b / "scan.mha", "-o", out), "would both be written as scan.nii.gz")
    assert tree(a, b, trained) == before and not out.exists()


def test_predict_writes_only_its_outputs(world):
    scans, trained, root = world["scans"], world["trained"], world["root"]
    inputs = sorted(scans.iterdir())
    before = tree(scans, trained)
    out = root / "labels_out"
    p = emonas("predict", trained, *inputs, "-o", out, "--json")
    assert p.returncode == 0, p.stderr[-2000:]
    assert tree(scans, trained) == before
    from engine.data.labels import ITKSNAP_SUFFIX, SLICER_SUFFIX

    stems = [i.name[: -len(".nii.gz")] for i in inputs]
    expected = [s + ext for s in stems for ext in (".nii.gz", SLICER_SUFFIX, ITKSNAP_SUFFIX)]
    assert sorted(os.listdir(out)) == sorted(expected)  # the label maps and colour tables; nothing temporary
    assert not [n for n in os.listdir(root) if n.startswith(".")]


# ----------------------------------------------------------------------------------- export, train


def test_export_into_its_training_folder_is_refused_even_with_force(world):
    trained = world["trained"]
    before = tree(trained)
    refused(emonas("export", "--checkpoint", trained, "--out", trained, "--force"), "is the training folder")
    refused(emonas("export", "--checkpoint", trained, "--out", trained / "model", "--force"), "inside the training folder")
    refused(emonas("export", "--checkpoint", trained, "--out", trained.parent, "--force"), "contains the training folder")
    assert tree(trained) == before


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A real run database written by a search (analytic stand-in objectives, every candidate done)."""
    run = tmp_path_factory.mktemp("safety_run") / "run"
    SearchSession(run, small_config(population=3, generations=1), logged_evaluate, PROBLEM).run()
    return run


def test_export_report_retrain_into_their_run_are_refused(fake_run):
    before = tree(fake_run)
    refused(emonas("export", fake_run, "--candidate", "1", "--out", fake_run, "--force"), "is the run")
    refused(emonas("export", fake_run, "--candidate", "1", "--out", fake_run / "candidates" / "1", "--force"),
            "inside the run")
    refused(emonas("report", fake_run, "--out", fake_run, "--no-baseline"), "is the run")
    refused(emonas("report", fake_run, "--out", fake_run / "report", "--no-baseline"), "inside the run")
    refused(emonas("retrain", fake_run, "--candidate", "1", "--out", fake_run / "candidates" / "1"), "inside the run")
    assert tree(fake_run) == before
    assert not (fake_run / "report").exists()


def test_train_into_a_model_folder_its_dataset_or_its_genome_is_refused(world, tmp_path):
    data, trained = world["data"], world["trained"]
    model = tmp_path / "model"
    p = emonas("export", "--checkpoint", trained, "--out", model, "--format", "torchscript")
    assert p.returncode == 0, p.stderr[-2000:]
    genome_file = tmp_path / "genome.json"
    genome_file.write_text(GENOME)
    before = tree(data, model, trained, genome_file)
    common = ["--genome", GENOME, "--epochs", 1, "--patch", "16,16,16", "--iterations-per-epoch", 1, "--device", "cpu"]
    refused(emonas("train", "--dataset", data, "--out", model, "--force", *common), "not a training folder of this genome")
    refused(emonas("train", "--dataset", data, "--out", data, "--force", *common), "is the dataset")
    refused(emonas("train", "--dataset", data, "--out", data / "imagesTr" / "run", *common), "inside the dataset")
    refused(emonas("train", "--dataset", data, "--out", tmp_path / "t", "--cache-dir", data / "cache", *common),
            "--cache-dir lies inside the dataset")
    refused(emonas("train", "--dataset", data, "--out", genome_file, "--genome", genome_file, "--epochs", 1),
            "is the genome file")
    # an existing training folder of another genome: refused with or without --force
    refused(emonas("train", "--dataset", data, "--out", trained, "--force", *common), "not a training folder of this genome")
    assert tree(data, model, trained, genome_file) == before
    p = emonas("predict", model, sorted(world["scans"].iterdir())[0], "-o", tmp_path / "still_loads", "--backend", "torch")
    assert p.returncode == 0, p.stderr  # the model folder still verifies and runs


@pytest.mark.slow
def test_train_replaces_its_own_training_folder_only_with_force(world, tmp_path):
    data = world["data"]
    out = tmp_path / "t"
    common = ["--dataset", data, "--genome", GENOME, "--out", out, "--epochs", 1, "--patch", "16,16,16",
              "--iterations-per-epoch", 1, "--device", "cpu", "--threads", 1]
    before = tree(data)
    assert emonas("train", *common).returncode == 0
    first = tree(out)
    refused(emonas("train", *common), "add --force to replace it")
    assert tree(out) == first
    p = emonas("train", *common, "--force", "--seed", 1)
    assert p.returncode == 0, p.stderr[-2000:]
    assert tree(data) == before
    assert sorted(os.listdir(out)) == ["curves.csv", "metrics.json", "training.json", "weights.pt"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_search_and_demo_data_into_their_sources_are_refused(world, tmp_path):
    from engine.data.demo import demo_dataset_path

    data = world["data"]
    before = tree(data)
    refused(emonas("search", "--dataset", data, "--out", data / "run", "--population", 2, "--generations", 1),
            "inside the dataset")
    refused(emonas("search", "--dataset", data, "--out", data.parent, "--population", 2, "--generations", 1),
            "contains the dataset")
    assert tree(data) == before and not (data / "run").exists()
    cache = demo_dataset_path()
    cached = tree(cache)
    refused(emonas("demo-data", cache / "copy"), "inside the demo dataset")
    assert tree(cache) == cached and not (cache / "copy").exists()


# ---------------------------------------------------------------------------------- atomic writes


def test_a_label_map_write_that_fails_half_way_leaves_no_file(tmp_path, monkeypatch):
    from engine.data import io

    img = io.Image(np.zeros((1, 4, 4, 4), np.float32), np.eye(4))
    target = tmp_path / "case.mhd"
    io.write_label(target, np.ones((4, 4, 4), np.uint8), img)
    kept = tree(tmp_path)

    def broken(path, array, affine, suffix):
        Path(path).write_bytes(b"half")
        Path(path).with_suffix(".zraw").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "_write_now", broken)
    with pytest.raises(Exception, match="No space left"):
        io.write_label(target, np.zeros((4, 4, 4), np.uint8), img)
    assert tree(tmp_path) == kept  # the earlier file intact, no half file, no temporary folder
    with pytest.raises(Exception, match="No space left"):
        io.write_label(tmp_path / "new.nii.gz", np.zeros((4, 4, 4), np.uint8), img)
    assert not (tmp_path / "new.nii.gz").exists() and tree(tmp_path) == kept


# ------------------------------------------------------------------------------ the app's Segment, Export


def test_the_apps_segment_and_export_jobs_follow_the_same_rule(world, fake_run):
    """The jobs behind the app's Segment and Export buttons (the engine's jobs, run in child processes;
    an error becomes a dialog): refused before any work, the same way as the command line."""
    from engine.errors import ConfigError
    from engine.run.child import JobControl
    from engine.run.jobs import ExportRequest, PredictRequest, export, predict

    scans, trained = world["scans"], world["trained"]
    inputs = tuple(str(p) for p in sorted(scans.iterdir()))
    before = tree(scans, trained, fake_run)
    events = []
    with pytest.raises(ConfigError, match="contains the input scan"):
        predict(PredictRequest(model=str(trained), output=str(scans), inputs=inputs), events.append, JobControl())
    with pytest.raises(ConfigError, match="is the model folder"):
        predict(PredictRequest(model=str(trained), output=str(trained), inputs=inputs), events.append, JobControl())
    for retrain in (False, True):
        with pytest.raises(ConfigError, match="is the run"):
            export(ExportRequest(out_dir=str(fake_run), run_dir=str(fake_run), candidate_id=1, formats=("onnx",),
                                 retrain=retrain, epochs=1), events.append, JobControl())
    assert tree(scans, trained, fake_run) == before
    assert events == []  # nothing started
