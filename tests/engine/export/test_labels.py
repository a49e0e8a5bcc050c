"""Label meaning outside EMONAS: colour tables (3D Slicer, ITK-SNAP) next to every prediction, and a
DICOM-SEG whose segments carry the dataset's codes and names in UTF-8, read back with pydicom."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from engine.data.labels import (
    GENERIC_CODE,
    LO_LIMIT,
    PALETTE,
    dicom_text,
    read_itksnap_labels,
    read_slicer_color_table,
)
from export_helpers import dicom_series, make_training_folder

LONG = "Substantia alba cerebri – weiße Substanz, région périventriculaire et capsule interne"  # 84 characters
LABELS = {"background": 0, "Graue Substanz (grey matter) – cortex": 1, LONG: 2}
BRAIN = ["SCT", "12738006", "Brain"]
ANATOMY = ["SCT", "123037004", "Anatomical Structure"]


def emonas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def coded_model(tmp_path_factory) -> Path:
    """A model folder exported with a dataset whose dataset.json codes and colours label 1 only."""
    base = tmp_path_factory.mktemp("coded")
    trained = make_training_folder(base / "trained", labels=LABELS, seed=5)
    dataset = base / "dataset"
    dataset.mkdir()
    (dataset / "dataset.json").write_text(json.dumps({
        "name": "coded", "labels": {str(v): k for k, v in LABELS.items()}, "modality": {"0": "T1"},
        "label_codes": {"Graue Substanz (grey matter) – cortex": {"category": ANATOMY, "type": BRAIN}},
        "label_colors": {"Graue Substanz (grey matter) – cortex": [10, 20, 30]},
    }, ensure_ascii=False), encoding="utf-8")
    r = emonas("export", "--checkpoint", str(trained), "--out", str(base / "model"), "--format", "onnx",
               "--dataset", str(dataset), "--json")
    assert r.returncode == 0, r.stderr
    return base / "model"


def test_dicom_text_rule():
    assert dicom_text("grey matter") == "grey matter"
    cut = dicom_text(LONG)
    assert cut.endswith("~") and LONG.startswith(cut[:-1])
    assert len(cut.encode("utf-8")) <= LO_LIMIT and len((cut + LONG[len(cut) - 1]).encode("utf-8")) > LO_LIMIT
    assert dicom_text("é" * 40) == "é" * 31 + "~"  # 2 bytes a character: 63 bytes kept
    assert dicom_text("a\\b\nc") == "a b c"  # the value separator and control characters never reach the file
    assert dicom_text("x" * 20, 16) == "x" * 15 + "~"


def test_model_json_records_codes_and_colours(coded_model):
    meta = json.loads((coded_model / "model.json").read_text(encoding="utf-8"))
    grey, white = list(LABELS)[1:]
    assert meta["label_codes"][grey] == {"category": ANATOMY, "type": BRAIN, "source": "dataset"}
    assert meta["label_codes"][white] == {**GENERIC_CODE, "source": "generic"}
    assert meta["label_colors"] == {"background": [0, 0, 0], grey: [10, 20, 30], white: list(PALETTE[1])}
    table = read_slicer_color_table(coded_model / "labels-ColorTable.ctbl")
    assert table[1] == ("Graue_Substanz_(grey_matter)_–_cortex", (10, 20, 30, 255))
    assert "labels-ColorTable.ctbl" in meta["files"] and "labels-ITKSNAP.txt" in meta["files"]


def test_predict_writes_colour_tables_and_a_coded_utf8_dicom_seg(coded_model, tmp_path):
    import highdicom as hd
    import pydicom

    series = dicom_series(tmp_path / "series")
    before = tree_digest(series), tree_digest(coded_model)
    r = emonas("predict", str(coded_model), str(series), "-o", str(tmp_path / "out"), "--json")
    assert r.returncode == 0, r.stderr
    assert (tree_digest(series), tree_digest(coded_model)) == before
    result = json.loads(r.stdout.strip().splitlines()[-1])
    nifti = Path(result["outputs"][0])
    present = set(np.unique(np.asarray(nib.load(str(nifti)).dataobj)).astype(int))
    assert {1, 2} <= present, "both foreground labels must be predicted for the test to mean something"

    tables = result["color_tables"][str(nifti)]
    assert Path(tables["slicer"]).name == "series-ColorTable.ctbl"
    slicer = read_slicer_color_table(tables["slicer"])
    assert slicer == {0: ("background", (0, 0, 0, 0)),
                      1: ("Graue_Substanz_(grey_matter)_–_cortex", (10, 20, 30, 255)),
                      2: (LONG.replace(" ", "_"), (*PALETTE[1], 255))}
    itk = read_itksnap_labels(tables["itksnap"])
    assert itk == {0: ("background", (0, 0, 0), 0.0), 1: (list(LABELS)[1], (10, 20, 30), 1.0),
                   2: (LONG, PALETTE[1], 1.0)}

    path = result["dicom_seg"][str(nifti)]
    ds = pydicom.dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    raw = Path(path).read_bytes()
    assert "Graue Substanz (grey matter) – cortex".encode("utf-8") in raw  # stored as UTF-8 bytes
    segs = {int(s.SegmentNumber): s for s in ds.SegmentSequence}
    assert [segs[n].SegmentLabel for n in (1, 2)] == [list(LABELS)[1], dicom_text(LONG)]
    assert len(segs[2].SegmentLabel.encode("utf-8")) <= 64 and segs[2].SegmentLabel.endswith("~")

    def code(item):
        return [item.CodingSchemeDesignator, item.CodeValue, item.CodeMeaning]

    assert code(segs[1].SegmentedPropertyCategoryCodeSequence[0]) == ANATOMY
    assert code(segs[1].SegmentedPropertyTypeCodeSequence[0]) == BRAIN
    assert code(segs[2].SegmentedPropertyCategoryCodeSequence[0]) == GENERIC_CODE["category"]
    assert code(segs[2].SegmentedPropertyTypeCodeSequence[0]) == GENERIC_CODE["type"]
    rgb = hd.color.CIELabColor.from_dicom_value(segs[1].RecommendedDisplayCIELabValue).to_rgb()
    assert np.allclose(rgb, (10, 20, 30), atol=2)
    # highdicom reads the same segments back
    assert hd.seg.segread(path).number_of_segments == 2


def test_bad_label_codes_are_one_clear_line(tmp_path):
    trained = make_training_folder(tmp_path / "trained")
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "labels.json").write_text(json.dumps({"labels": {"background": 0, "grey matter": 1, "white matter": 2},
                                                     "label_codes": {"grey mater": {"category": ANATOMY, "type": BRAIN}}}))
    r = emonas("export", "--checkpoint", str(trained), "--out", str(tmp_path / "model"), "--dataset", str(dataset))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "labels.json" in r.stderr and "grey mater" in r.stderr
    assert not (tmp_path / "model").exists()
