"""`emonas check` and `emonas demo-data` as a user runs them; every kind of bad input."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from data_helpers import SHAPE, affine_for, make_msd
from engine.cli import main
from engine.data import make_plan, open_dataset, preprocess_dataset
from engine.data.io import write_image
from engine.errors import DataError


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _img(root, i=1):
    return root / "imagesTr" / f"case_{i:03d}.nii.gz"


def _lab(root, i=1):
    return root / "labelsTr" / f"case_{i:03d}.nii.gz"


def truncated(root):
    data = _img(root).read_bytes()
    _img(root).write_bytes(data[: len(data) // 2])
    return _img(root), "truncated"


def not_an_image(root):
    _img(root).write_bytes(b"PK\x03\x04 a zip file, not a scan" * 10)
    return _img(root), "not a readable"


def shape_mismatch(root):
    write_image(_lab(root), np.zeros((10, 10, 10), np.uint8), affine_for())
    return _lab(root), "shape"


def geometry_mismatch(root):
    lab = np.asarray(nib.load(str(_lab(root))).dataobj)
    write_image(_lab(root), lab, affine_for(spacing=(1.0, 1.0, 2.0)))
    return _lab(root), "geometry"


def undeclared_values(root):
    lab = np.asarray(nib.load(str(_lab(root))).dataobj).copy()
    lab[0, 0, 0] = 7
    write_image(_lab(root), lab, affine_for())
    return _lab(root), "values 7 not declared"


def non_integer(root):
    lab = np.asarray(nib.load(str(_lab(root))).dataobj).astype(np.float32)
    lab[1, 1, 1] = 0.5
    write_image(_lab(root), lab, affine_for())
    return _lab(root), "non-integer"


def nan_intensity(root):
    img = nib.load(str(_img(root))).get_fdata().astype(np.float32)
    img[2, 3, 4] = np.nan
    write_image(_img(root), img, affine_for())
    return _img(root), "NaN or infinite"


def inf_intensity(root):
    img = nib.load(str(_img(root))).get_fdata().astype(np.float32)
    img[2, 3, 4] = np.inf
    write_image(_img(root), img, affine_for())
    return _img(root), "NaN or infinite"


def image_2d(root):
    nib.save(nib.Nifti1Image(np.zeros(SHAPE[:2], np.float32), np.eye(4)), str(_img(root)))
    return _img(root), "2D image"


def label_without_image(root):
    write_image(root / "labelsTr" / "orphan.nii.gz", np.zeros(SHAPE, np.uint8), affine_for())
    return root / "labelsTr" / "orphan.nii.gz", "label file with no image"


BREAKERS = [truncated, not_an_image, shape_mismatch, geometry_mismatch, undeclared_values, non_integer,
            nan_intensity, inf_intensity, image_2d, label_without_image]


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__)
def test_bad_case_is_one_line_exit_2_and_skippable(tmp_path, capsys, breaker):
    root = make_msd(tmp_path / "T", n=4)
    path, needle = breaker(root)
    code, out, err = run_cli(capsys, "check", str(root), "--json")
    assert code == 2
    report = last_json(out)
    fatal = [p for p in report["problems"] if p["fatal"]]
    assert len(fatal) == 1 and fatal[0]["path"] == str(path) and needle in fatal[0]["message"]
    errors = [ln for ln in err.splitlines() if ln.startswith("emonas: error:")]
    assert errors == [f"emonas: error: {path}: {fatal[0]['message']}"]
    assert "Traceback" not in err
    # the rest stays usable when the user chooses to skip the broken case
    code, out, _ = run_cli(capsys, "check", str(root), "--skip-bad", "--json")
    report = last_json(out)
    assert code == 0 and report["n_cases"] == (4 if breaker is label_without_image else 3)
    with pytest.raises(DataError) as exc:  # headers at open, every voxel by the plan's fingerprint
        make_plan(open_dataset(root))
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)
    ds = open_dataset(root, skip_bad=True)
    plan = make_plan(ds)
    pre = preprocess_dataset(ds, plan)
    assert len(pre) == len(ds.cases) and all(c.image.dtype == np.float32 for c in pre.values())


def test_empty_label_is_a_warning(tmp_path, capsys):
    root = make_msd(tmp_path / "T", n=3)
    write_image(_lab(root), np.zeros(SHAPE, np.uint8), affine_for())
    code, out, err = run_cli(capsys, "check", str(root), "--json")
    assert code == 0
    report = last_json(out)
    assert report["n_cases"] == 3 and report["problems"][0]["fatal"] is False
    assert "empty" in report["problems"][0]["message"] and "emonas: warning:" in err


@pytest.mark.parametrize("content, needle", [(None, "missing"), ("{not json", "not valid JSON")])
def test_missing_or_unreadable_dataset_json(tmp_path, content, needle):
    root = make_msd(tmp_path / "T", n=2)
    if content is None:
        (root / "dataset.json").unlink()
    else:
        (root / "dataset.json").write_text(content)
    r = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(root), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"emonas: error: {root / 'dataset.json'}: " + r.stderr.split(": ", 3)[-1].strip()]
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert "dataset.json" in json.loads(r.stdout.strip().splitlines()[-1])["error"]


def test_check_good_dataset_prints_table_and_plan(tmp_path, capsys):
    root = make_msd(tmp_path / "T", n=3)
    code, out, err = run_cli(capsys, "check", str(root))
    # stderr is not a terminal here: plain progress lines only, no warning or error
    assert code == 0 and err and all(" checking cases " in line for line in err.splitlines())
    assert "layout      msd" in out and "case_002" in out and "plan        spacing 1x1x1 mm" in out


def test_demo_data_and_check_demo(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "demo-data", str(tmp_path / "demo"), "--json")
    assert code == 0
    res = last_json(out)
    assert res["n_cases"] >= 20 and res["layout"] == "msd" and len(res["labels"]) >= 4
    assert (tmp_path / "demo" / "MNI_ICBM152_NOTICE.txt").read_text().count("Louis Collins") == 1
    code, out, _ = run_cli(capsys, "check", str(tmp_path / "demo"), "--json")
    report = last_json(out)
    assert code == 0 and report["n_cases"] == res["n_cases"]
    assert report["labels"] == {"background": 0, "grey matter": 1, "white matter": 2, "CSF": 3}
    assert report["modalities"] == ["T1"]
    patch = report["plan"]["patch_size"]
    assert len(patch) == 3 and all(isinstance(v, int) for v in patch)
    assert patch[0] * patch[1] * patch[2] <= 32 * 48 * 32
    assert len(report["plan"]["spacing"]) == 3
    code, _, err = run_cli(capsys, "demo-data", str(tmp_path / "demo"))
    assert code == 2 and "not an empty folder" in err


def test_demo_generation_is_deterministic(tmp_path):
    from engine.data.demo import _generate, demo_dataset_path

    _generate(tmp_path, n_cases=2)
    cached = demo_dataset_path()
    for sub in ("imagesTr", "labelsTr"):
        for i in range(2):
            a = nib.load(str(tmp_path / sub / f"brain_{i:03d}.nii.gz"))
            b = nib.load(str(cached / sub / f"brain_{i:03d}.nii.gz"))
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
            np.testing.assert_array_equal(a.affine, b.affine)
    ds = open_dataset("demo")
    assert len(ds.cases) >= 20 and ds.num_classes == 4 and ds.modalities == ["T1"]
    shapes = [nib.load(str(c.image_paths[0])).shape for c in ds.cases]
    assert all(30 <= s[0] <= 44 and 38 <= s[1] <= 52 and 30 <= s[2] <= 44 for s in shapes)
    assert len(set(shapes)) > 1  # crops differ between cases


@pytest.mark.parametrize("layout", ["msd", "nnunet", "acdc", "promise12", "plain"])
def test_check_every_layout(tmp_path, capsys, layout):
    import data_helpers as h

    make = {"msd": h.make_msd, "nnunet": h.make_nnunet, "acdc": h.make_acdc, "promise12": h.make_promise,
            "plain": h.make_plain}[layout]
    root = make(tmp_path / layout)
    code, out, err = run_cli(capsys, "check", str(root), "--json")
    report = last_json(out)
    assert code == 0, err
    assert report["layout"] == layout and report["n_cases"] >= 3 and report["problems"] == []
    assert all(sum(c["voxel_counts"].values()) == np.prod(c["shape"]) for c in report["cases"])
    if layout == "promise12":  # 0.6 x 0.6 x 3.6 mm scans in LPS: thick axis not pooled first
        assert report["plan"]["spacing"] == pytest.approx([0.6, 0.6, 3.6], abs=1e-3)
        assert report["plan"]["pool_schedule"][0] == [2, 2, 1]
        assert {c["orientation"] for c in report["cases"]} == {"LPS"}


def test_skip_bad_reports_skipped_cases_as_warnings(tmp_path, capsys):
    root = make_msd(tmp_path / "T", n=3)
    path, _ = truncated(root)
    def messages(err: str) -> str:  # stderr without the plain progress lines (it is not a terminal here)
        return "\n".join(line for line in err.splitlines() if " checking cases " not in line)

    code, out, err = run_cli(capsys, "check", str(root), "--skip-bad")
    assert code == 0 and "1 case(s) unusable" in out
    assert messages(err).startswith(f"emonas: warning: skipped: {path}: ") and "error" not in err
    make_msd(tmp_path / "U", n=2)
    truncated(tmp_path / "U")
    code, _, err = run_cli(capsys, "check", str(tmp_path / "U"), "--skip-bad")
    assert code == 2 and messages(err).startswith("emonas: error:")  # one usable case is not enough
