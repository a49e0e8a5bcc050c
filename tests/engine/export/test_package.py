"""Writing and verifying model folders: formats, metadata, every op, tampering refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from engine.errors import ExportError
from engine.export.package import export_model, verify_model_folder
from engine.genome import OPS, Genome
from engine.network import build_network

from export_helpers import LABELS, SMALL, make_training_folder


def _onnx_logits(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"image": x})[0]


def test_export_writes_a_complete_verified_model_folder(training_folder, tmp_path):
    out = tmp_path / "model"
    meta = export_model(training_folder, out, "onnx,torchscript,pt2")
    names = {p.name for p in out.iterdir()}
    assert names == {"model.json", "model.onnx", "model.ts", "model.pt2", "weights.pt", "MODEL_CARD.md",
                     "labels-ColorTable.ctbl", "labels-ITKSNAP.txt", "configs", "models"}
    onnx.checker.check_model(onnx.load(str(out / "model.onnx")), full_check=True)
    on_disk = verify_model_folder(out)
    assert on_disk == json.loads((out / "model.json").read_text())
    assert on_disk["schema_version"] == 1
    assert on_disk["labels"] == LABELS and on_disk["class_values"] == [0, 1, 2]
    assert on_disk["modalities"] == ["T1"]
    assert on_disk["genome"] == SMALL.to_dict()
    assert on_disk["architecture"]["parameters"] == sum(
        p.numel() for p in build_network(SMALL, 1, 3).parameters())
    assert on_disk["preprocessing"]["target_spacing"] == [1.0, 1.0, 1.0]
    assert on_disk["inference"]["patch_size"] == [32, 32, 32]
    assert {"torch", "onnx", "onnxruntime", "numpy"} <= set(on_disk["library_versions"])
    assert on_disk["export_check"]["onnx_vs_torch_max_abs_logit_diff"] < 1e-4
    for name, info in on_disk["files"].items():
        assert len(info["sha256"]) == 64 and (out / name).stat().st_size == info["bytes"]
    card = (out / "MODEL_CARD.md").read_text()
    assert "white matter" in card and f"{on_disk['architecture']['parameters']:,}" in card
    assert on_disk["files"]["model.onnx"]["sha256"] in card
    assert "- training profile: default" in card.splitlines()  # the folder's config names no profile
    assert meta["files"] == on_disk["files"]
    from engine.atomic import umask

    assert out.stat().st_mode & 0o777 == 0o777 & ~umask()  # a model folder is meant to be shared, not private


def test_programs_accept_any_divisible_shape_and_match_the_network(training_folder, tmp_path):
    out = tmp_path / "model"
    export_model(training_folder, out, "onnx,torchscript,pt2")
    net = build_network(SMALL, 1, 3).eval()
    net.load_state_dict(torch.load(training_folder / "weights.pt", weights_only=True))
    ts = torch.jit.load(str(out / "model.ts"))
    pt2 = torch.export.load(str(out / "model.pt2")).module()
    rng = np.random.default_rng(1)
    for shape in [(1, 1, 16, 16, 16), (2, 1, 24, 40, 8), (1, 1, 44, 12, 20)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
            got_ts = ts(torch.from_numpy(x)).numpy()
            got_pt2 = pt2(torch.from_numpy(x)).numpy()
        got_onnx = _onnx_logits(out / "model.onnx", x)
        assert got_onnx.shape == (shape[0], 3, *shape[2:])
        assert np.abs(got_onnx - want).max() < 1e-4
        assert np.abs(got_ts - want).max() < 1e-5
        assert np.abs(got_pt2 - want).max() < 1e-5


def _genomes_covering_every_op(rng: np.random.Generator) -> list[Genome]:
    """Random small genomes (nf1 8, 5 cells) whose nodes together use each of the 10 ops."""
    ops = list(rng.permutation(OPS)) + list(rng.choice(OPS, size=2))
    out = []
    for i in range(3):
        four = [str(o) for o in ops[4 * i: 4 * i + 4]]
        out.append(Genome(int(rng.integers(2)), int(rng.integers(3)), int(rng.integers(4)), *four, 5, 8, 1e-3))
    return out


def test_every_op_exports_to_onnx_and_matches_pytorch(tmp_path):
    genomes = _genomes_covering_every_op(np.random.default_rng(2026))
    assert {op for g in genomes for op in g.ops} == set(OPS)
    rng = np.random.default_rng(7)
    for i, g in enumerate(genomes):
        tf = make_training_folder(tmp_path / f"t{i}", genome=g, modalities=("T1", "T2"), seed=i)
        out = tmp_path / f"m{i}"
        export_model(tf, out, "onnx,torchscript")
        net = build_network(g, 2, 3).eval()
        net.load_state_dict(torch.load(tf / "weights.pt", weights_only=True))
        x = rng.standard_normal((1, 2, 20, 12, 16), dtype=np.float32)
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
        got = _onnx_logits(out / "model.onnx", x)
        assert np.abs(got - want).max() < 1e-4, g
        assert (got.argmax(1) == want.argmax(1)).mean() >= 0.999


def test_thick_slice_network_keeps_its_pooling(tmp_path):
    g = SMALL
    torch.manual_seed(3)
    net = build_network(g, 1, 3, pool_sizes=[(2, 2, 1), (2, 2, 2)])
    tf = make_training_folder(tmp_path / "t", net=net)
    meta = export_model(tf, tmp_path / "m", "onnx")
    assert meta["architecture"]["pool_sizes"] == [[2, 2, 1], [2, 2, 2]]
    assert meta["input"]["spatial_divisor"] == [4, 4, 2]
    x = np.random.default_rng(0).standard_normal((1, 1, 16, 8, 6), dtype=np.float32)
    with torch.no_grad():
        want = net.eval()(torch.from_numpy(x)).numpy()
    assert np.abs(_onnx_logits(tmp_path / "m" / "model.onnx", x) - want).max() < 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = tmp_path_factory.mktemp("exported")
    tf = make_training_folder(base / "trained")
    export_model(tf, base / "model", "onnx,torchscript")
    return base / "model"


def _copy(exported, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(exported, dst)
    return dst


@pytest.mark.parametrize("name", ["model.onnx", "weights.pt", "model.ts", "MODEL_CARD.md"])
def test_a_changed_file_is_refused(exported, tmp_path, name):
    folder = _copy(exported, tmp_path)
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(ExportError, match=f"{name}: checksum mismatch"):
        verify_model_folder(folder)


def _edit(folder, fn):
    meta = json.loads((folder / "model.json").read_text())
    fn(meta)
    (folder / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda m: m.pop("labels"), "'labels'"),
        (lambda m: m.update(schema_version=99), "newer"),
        (lambda m: m.update(schema_version="1"), "schema_version"),
        (lambda m: m.update(format="other"), "not an EMONAS model"),
        (lambda m: m["genome"].update(op1="conv9d"), "op1"),
        (lambda m: m["inference"].update(patch_size=[32, -1, 32]), "patch_size"),
        (lambda m: m["preprocessing"].update(target_spacing=[1, 0, 1]), "target_spacing"),
        (lambda m: m["files"].update({"../evil.onnx": m["files"]["model.onnx"]}), "invalid name"),
        (lambda m: m["files"]["weights.pt"].update(sha256="0" * 64), "weights.pt: checksum mismatch"),
        (lambda m: m["files"].pop("model.onnx"), "not listed in model.json"),
        (lambda m: m["labels"].update({"extra": 9}), "class_values"),
    ],
)
def test_malformed_model_json_is_refused(exported, tmp_path, edit, needle):
    folder = _copy(exported, tmp_path)
    _edit(folder, edit)
    with pytest.raises(ExportError, match=needle) as info:
        verify_model_folder(folder)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '{"format": "emonas-model"}'])
def test_broken_model_json_text_is_refused(exported, tmp_path, text):
    folder = _copy(exported, tmp_path)
    (folder / "model.json").write_text(text)
    with pytest.raises(ExportError, match="model.json"):
        verify_model_folder(folder)


def test_bad_training_folders_are_refused(tmp_path):
    with pytest.raises(ExportError, match="no such directory"):
        export_model(tmp_path / "missing", tmp_path / "m")
    tf = make_training_folder(tmp_path / "t")
    # weights of another genome
    other = build_network(SMALL.replace(op4="conv3d_5x5x5"), 1, 3)
    torch.save(other.state_dict(), tf / "weights.pt")
    with pytest.raises(ExportError, match="do not fit the genome"):
        export_model(tf, tmp_path / "m")
    # a pickled Python object instead of tensors is never unpickled
    torch.save({"x": object()}, tf / "weights.pt")
    with pytest.raises(ExportError, match="weights.pt: cannot load weights"):
        export_model(tf, tmp_path / "m")
    assert not (tmp_path / "m").exists()
    (tf / "training.json").write_text('{"genome": {}}')
    with pytest.raises(ExportError, match="training.json: "):
        export_model(tf, tmp_path / "m")


def test_existing_output_is_not_overwritten_without_force(training_folder, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="already exists"):
        export_model(training_folder, out, "onnx")
    assert (out / "keep.txt").read_text() == "mine"
    export_model(training_folder, out, "onnx", overwrite=True)
    assert verify_model_folder(out)["formats"] == ["onnx"]


def test_unknown_format_is_refused(training_folder, tmp_path):
    with pytest.raises(ExportError, match="unknown export format"):
        export_model(training_folder, tmp_path / "m", "onnx,tensorflow")


@pytest.mark.slow
def test_random_genomes_of_the_whole_space_export(tmp_path):
    """Genomes drawn from the paper's full space (every cell count and width) export and match PyTorch."""
    from engine.genome import SearchSpace

    rng = np.random.default_rng(11)
    space = SearchSpace()
    genomes = [space.sample(rng) for _ in range(6)]
    assert {g.n_cells for g in genomes} >= {5, 7} and len({g.nf1 for g in genomes}) >= 2
    for i, g in enumerate(genomes):
        tf = make_training_folder(tmp_path / f"t{i}", genome=g, seed=i)
        export_model(tf, tmp_path / f"m{i}", "onnx,torchscript")
        net = build_network(g, 1, 3).eval()
        net.load_state_dict(torch.load(tf / "weights.pt", weights_only=True))
        side = 2 ** g.n_levels
        x = rng.standard_normal((1, 1, 2 * side, side, 3 * side), dtype=np.float32)
        with torch.no_grad():
            want = net(torch.from_numpy(x)).numpy()
        got = _onnx_logits(tmp_path / f"m{i}" / "model.onnx", x)
        assert np.abs(got - want).max() < 1e-4, g
