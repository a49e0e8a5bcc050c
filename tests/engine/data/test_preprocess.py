"""Preprocessing round trips keep geometry; the cache is reused and never stale."""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from data_helpers import affine_for, make_msd, make_volume
from engine.data import (
    Plan,
    make_plan,
    open_dataset,
    preprocess_dataset,
    preprocess_images,
    preprocess_label,
    read_image,
    read_label,
    restore_label,
    write_label,
)
from engine.data import preprocess as pre_mod
from engine.data.io import write_image
from engine.errors import DataError
from engine.data.plan import pool_schedule_for

LABELS = {"background": 0, "a": 1, "b": 2}


def plan_for(spacing, crop=True, order=3):
    d = {
        "schema_version": 1, "target_spacing": list(spacing), "patch_size": [16, 16, 16], "batch_size": 2,
        "normalization": [{"modality": "MRI", "scheme": "zscore", "use_nonzero_mask": False}],
        "pool_schedule": [[2, 2, 2], [2, 2, 2], [1, 1, 1], [1, 1, 1]], "modalities": ["MRI"], "labels": LABELS,
        "crop_to_nonzero": crop, "resampling": {"image_order": order, "label": "linear_per_label"},
    }
    return Plan.from_dict(d)


def dice(a, b, v):
    a, b = a == v, b == v
    return 2 * (a & b).sum() / (a.sum() + b.sum())


GEOMETRIES = {
    "RAS": affine_for("RAS", (1.0, 1.0, 1.0)),
    "LPS": affine_for("LPS", (0.9, 1.1, 1.3), origin=(20.0, 30.0, -10.0)),
    "oblique": affine_for("LAS", (1.0, 1.2, 1.5), oblique_deg=20),
    "anisotropic": affine_for("RAS", (0.6, 0.6, 3.6)),
    "PIR": affine_for("PIR", (1.0, 2.0, 1.0)),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_round_trip_without_resampling_is_exact(tmp_path, name, suffix):
    affine = GEOMETRIES[name]
    image, label = make_volume(1, shape=(18, 20, 14))
    image[:, :2] = 0  # a zero border, so cropping to the non-zero region has something to do
    write_image(tmp_path / f"img{suffix}", image, affine)
    write_image(tmp_path / f"lab{suffix}", label, affine)
    src = read_image(tmp_path / f"img{suffix}")
    raw, _ = read_label(tmp_path / f"lab{suffix}")
    canon = nib.as_closest_canonical(nib.Nifti1Image(raw, src.affine))
    plan = plan_for(canon.header.get_zooms()[:3])
    arr, props = preprocess_images([src], plan)
    assert arr.dtype == np.float32 and arr.shape[0] == 1
    assert abs(float(arr.mean())) < 1e-3 and float(arr.std()) == pytest.approx(1.0, abs=1e-3)
    lab = preprocess_label(raw, props)
    # reoriented to RAS: equals nibabel's canonical orientation, cropped to the non-zero box
    box = tuple(slice(lo, hi) for lo, hi in props["bbox"])
    np.testing.assert_array_equal(lab, np.asarray(canon.dataobj)[box])
    back = restore_label(lab, props)
    out = read_image(write_label(tmp_path / f"pred{suffix}", back, src))
    assert out.shape == src.shape
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
    np.testing.assert_array_equal(out.array[0], raw)


@pytest.mark.parametrize("name", ["LPS", "oblique", "anisotropic"])
def test_round_trip_with_resampling_overlays_the_source(tmp_path, name):
    affine = GEOMETRIES[name]
    image, label = make_volume(2, shape=(24, 26, 12), n_labels=2)
    write_image(tmp_path / "img.nii.gz", image, affine)
    write_image(tmp_path / "lab.nii.gz", label, affine)
    src = read_image(tmp_path / "img.nii.gz")
    raw, _ = read_label(tmp_path / "lab.nii.gz")
    plan = plan_for((1.0, 1.0, 1.0) if name != "anisotropic" else (0.8, 0.8, 2.0))
    arr, props = preprocess_images([tmp_path / "img.nii.gz"], plan)
    assert props["shape"] != props["cropped_shape"]
    assert props["spacing"] == pytest.approx(plan.target_spacing, rel=0.1)
    lab = preprocess_label(raw, props)
    assert lab.shape == arr.shape[1:] and set(np.unique(lab)) == {0, 1, 2}
    back = restore_label(lab, props)
    out = read_image(write_label(tmp_path / "pred.nii.gz", back, src))
    assert out.shape == src.shape
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
    for v in (1, 2):
        assert dice(out.array[0], raw, v) > 0.85
        # same place: centroids within half a voxel
        np.testing.assert_allclose(np.argwhere(out.array[0] == v).mean(0), np.argwhere(raw == v).mean(0), atol=0.5)


def test_preprocess_dataset_caches_and_reads_memory_mapped(tmp_path, monkeypatch):
    ds = open_dataset(make_msd(tmp_path / "T", n=3))
    plan = make_plan(ds)
    cache = tmp_path / "cache"
    calls = []
    first = preprocess_dataset(ds, plan, cache_dir=cache, progress=lambda d, t, c: calls.append((d, t, c)))
    assert [c[:2] for c in calls] == [(1, 3), (2, 3), (3, 3)]  # cases finish in any order in parallel
    assert sorted(c[2] for c in calls) == ["case_000", "case_001", "case_002"]
    c0 = first["case_000"]
    assert c0.image.dtype == np.float32 and c0.image.ndim == 4 and c0.label.dtype == np.uint8
    assert c0.label.shape == c0.image.shape[1:] and len(c0.spacing) == 3

    def boom(*a, **k):
        raise AssertionError("preprocessed again although cached")

    monkeypatch.setattr(pre_mod, "_preprocess_case", boom)  # reaches this process only: workers=1 below
    again = preprocess_dataset(ds, plan, cache_dir=cache, workers=1)
    assert isinstance(again["case_000"].image, np.memmap)
    np.testing.assert_array_equal(again["case_001"].label, first["case_001"].label)
    # a different patch size shares the cache; a different spacing does not
    other = Plan.from_dict({**plan.to_dict(), "patch_size": [8, 8, 8], "batch_size": 4})
    preprocess_dataset(ds, other, case_ids=["case_000"], cache_dir=cache, workers=1)
    with pytest.raises(AssertionError, match="again"):
        preprocess_dataset(ds, make_plan(ds, overrides={"target_spacing": [2, 2, 2]}), cache_dir=cache, workers=1)


def test_replaced_file_is_never_served_stale(tmp_path):
    ds = open_dataset(make_msd(tmp_path / "T", n=2))
    plan = make_plan(ds)
    before = preprocess_dataset(ds, plan)["case_001"].label.copy()
    lab_path = ds.case("case_001").label_path
    raw, img = read_label(lab_path)
    write_image(lab_path, np.where(raw == 2, 1, raw).astype(np.uint8), img.affine)  # same size, new content
    after = preprocess_dataset(ds, plan)["case_001"].label
    assert (before == 2).any() and not (after == 2).any()


def test_class_indices_follow_the_declared_label_order(tmp_path):
    root = make_msd(tmp_path / "T", n=2)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "one", "2": "two", "5": "five"}
    (root / "dataset.json").write_text(json.dumps(meta))
    lab_path = root / "labelsTr" / "case_000.nii.gz"
    raw, img = read_label(lab_path)
    write_image(lab_path, np.where(raw == 2, 5, raw).astype(np.uint8), img.affine)
    ds = open_dataset(root)
    assert list(ds.labels.values()) == [0, 1, 2, 5] and ds.num_classes == 4
    case = preprocess_dataset(ds, make_plan(ds))["case_000"]
    assert set(np.unique(case.label)) == {0, 1, 3}  # value 5 is class index 3
    back = restore_label(np.asarray(case.label), case.properties)
    np.testing.assert_array_equal(back, np.where(raw == 2, 5, raw))


def test_preprocess_images_refuses_wrong_channel_count(tmp_path):
    write_image(tmp_path / "two.nii.gz", np.ones((2, 8, 8, 8), np.float32), np.eye(4))
    with pytest.raises(Exception, match="2 channel"):
        preprocess_images([tmp_path / "two.nii.gz"], plan_for((1, 1, 1)))


def test_pool_schedule_respects_anisotropy():
    assert pool_schedule_for((0.6, 0.6, 3.0), (160, 160, 24))[0] == (2, 2, 1)
    assert pool_schedule_for((1, 1, 1), (32, 48, 32)) == [(2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1)]
    assert pool_schedule_for((1, 1, 1), (64, 64, 64))[3] == (2, 2, 2)


# ---------------------------------------------------------------------------------------- separate z


def thin_slab_scan(tmp_path, spacing=(1.2, 1.2, 6.0), shape=(20, 18, 7)):
    """A 1.2 x 1.2 x 6 mm scan: smooth tissue, and a bright structure in one slice only (thinner than a slice)."""
    rng = np.random.default_rng(7)
    x, y, _ = np.indices(shape)
    image = 100 + 20 * np.sin(x / 3.0) + 10 * np.cos(y / 4.0) + rng.normal(0, 1, shape)
    image[6:14, 5:13, 3] = 1000.0
    path = write_image(tmp_path / "aniso.nii.gz", image.astype(np.float32)[None], affine_for("RAS", spacing))
    return path, read_image(path).array[0]


def old_plan_dict(target, order=1, **resampling):
    """A plan as saved before ``separate_z`` existed (anisotropic plans then used linear resampling)."""
    d = plan_for(target, crop=False).to_dict()
    d["normalization"] = [{"modality": "MRI", "scheme": "none"}]
    d["resampling"] = {"image_order": order, "label": "linear_per_label", **resampling}
    return d


def zoom_oracle(arr, shape, order):
    """The pre-separate-z resampling: one spline over all three axes (scipy directly)."""
    factors = [n / o for n, o in zip(shape, arr.shape)]
    return ndimage.zoom(arr, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)


def test_separate_z_interpolates_nothing_between_thick_slices(tmp_path):
    path, source = thin_slab_scan(tmp_path)
    target = (0.8, 0.8, 2.0)
    new, props = preprocess_images([path], Plan.from_dict(old_plan_dict(target, order=3, separate_z=True)))
    assert props["separate_z_axis"] == 2 and props["shape"] == [30, 27, 21]
    # every output slice is one of the source slices, cubic-resampled within the slice: no new intensities
    in_plane = [zoom_oracle(source[..., k], (30, 27), 3) for k in range(source.shape[2])]
    picked = []
    for z in range(new.shape[3]):
        matches = [k for k, s in enumerate(in_plane) if np.allclose(new[0, ..., z], s, rtol=0, atol=1e-3)]
        assert matches, f"slice {z} holds intensities interpolated between slices"
        picked.append(matches[0])
    assert picked == sorted(picked) and set(picked) == set(range(7))  # nearest neighbour, in order
    assert new[0].max() == pytest.approx(in_plane[3].max(), abs=1e-3)  # the thin structure keeps its intensity
    # the old plan (no separate_z, linear on all axes) blends the bright slice into its neighbours
    old, old_props = preprocess_images([path], Plan.from_dict(old_plan_dict(target)))
    assert old_props["separate_z_axis"] is None
    column = old[0, 15, 13]
    assert ((column > 200) & (column < 900)).sum() >= 2
    assert not ((new[0, 15, 13] > 200) & (new[0, 15, 13] < 900)).any()


def test_plan_saved_without_separate_z_gives_the_old_arrays(tmp_path):
    path, source = thin_slab_scan(tmp_path)
    label = np.zeros(source.shape, np.uint8)
    label[4:16, 3:15, 2:5] = 1
    label[8:12, 7:11, 3] = 2
    old = old_plan_dict((0.8, 0.8, 2.0))
    plan = Plan.from_dict(json.loads(json.dumps(old)))
    assert plan.to_dict()["resampling"] == old["resampling"]  # no key added: the cache key is unchanged too
    arr, props = preprocess_images([path], plan)
    np.testing.assert_array_equal(arr[0], zoom_oracle(source.astype(np.float32), props["shape"], 1))
    lab = preprocess_label(label, props)
    want = np.zeros(props["shape"], np.uint8)
    for c in (1, 2):
        want[zoom_oracle((label == c).astype(np.float32), props["shape"], 1) >= 0.5] = c
    np.testing.assert_array_equal(lab, want)
    back = np.zeros(source.shape, np.uint8)
    for c in (1, 2):
        back[zoom_oracle((lab == c).astype(np.float32), source.shape, 1) >= 0.5] = c
    np.testing.assert_array_equal(restore_label(lab, props), back)
    # switching the key off explicitly is the same; on, it is not
    off = preprocess_images([path], Plan.from_dict({**old, "resampling": {**old["resampling"], "separate_z": False}}))[0]
    np.testing.assert_array_equal(off, arr)
    on = preprocess_images([path], Plan.from_dict({**old, "resampling": {**old["resampling"], "separate_z": True}}))[0]
    assert not np.array_equal(on, arr)


def test_separate_z_dataset_round_trip(tmp_path):
    """A 1 x 1 x 6 mm dataset planned to 0.8 x 0.8 x 2 mm: thick slices repeated, labels restored exactly in z."""
    ds = open_dataset(make_msd(tmp_path / "T", n=2, shape=(24, 22, 8), spacing=(1.0, 1.0, 6.0)))
    plan = make_plan(ds, overrides={"target_spacing": [0.8, 0.8, 2.0], "resampling": {"separate_z": True}})
    assert plan.resampling == {"image_order": 3, "label": "linear_per_label", "separate_z": True}
    for cid, case in preprocess_dataset(ds, plan).items():
        assert case.properties["separate_z_axis"] == 2
        image, label = np.asarray(case.image), np.asarray(case.label)
        assert image.shape[3] == label.shape[2] == 3 * case.properties["cropped_shape"][2]
        # nearest along z: every source slice becomes three identical slices, image and label alike
        groups = image.reshape(*image.shape[:3], -1, 3)
        assert (groups == groups[..., :1]).all()
        assert (label.reshape(*label.shape[:2], -1, 3) == label[..., ::3, None]).all()
        raw, _ = read_label(ds.case(cid).label_path)
        back = restore_label(label, case.properties)
        assert back.shape == raw.shape
        for v in (1, 2):
            assert dice(back, raw, v) > 0.97
        # in z the round trip is exact: each source slice holds the same structures
        np.testing.assert_array_equal(back.any(axis=(0, 1)), raw.any(axis=(0, 1)))


def test_preprocessing_key_follows_separate_z(tmp_path):
    """The cache is keyed by the plan's resampling: a plan with the key never reads arrays made without it."""
    old = Plan.from_dict(old_plan_dict((0.8, 0.8, 2.0), order=3))
    on = Plan.from_dict({**old.to_dict(), "resampling": {**old.resampling, "separate_z": True}})
    off = Plan.from_dict({**old.to_dict(), "resampling": {**old.resampling, "separate_z": False}})
    assert len({old.preprocessing_key(), on.preprocessing_key(), off.preprocessing_key()}) == 3
    assert Plan.from_dict(old.to_dict()).preprocessing_key() == old.preprocessing_key()


def test_parallel_preprocessing_writes_the_same_cache_as_one_process(tmp_path):
    import hashlib

    ds = open_dataset(make_msd(tmp_path / "T", n=4))
    plan = make_plan(ds)

    def entries(cache):
        return {str(p.relative_to(cache)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(cache.rglob("*")) if p.is_file()}

    one = preprocess_dataset(ds, plan, cache_dir=tmp_path / "c1", workers=1)
    two = preprocess_dataset(ds, plan, cache_dir=tmp_path / "c2", workers=2)
    assert entries(tmp_path / "c1") == entries(tmp_path / "c2") and len(entries(tmp_path / "c1")) == 12
    for cid in ds.case_ids:
        np.testing.assert_array_equal(one[cid].image, two[cid].image)
        assert one[cid].properties == two[cid].properties
    assert not [p for p in (tmp_path / "c2").rglob("*") if p.name.startswith(".")]  # no temporary folder left


def test_parallel_preprocessing_reports_the_first_bad_case_and_keeps_the_good_ones(tmp_path):
    root = make_msd(tmp_path / "T", n=4)
    ds = open_dataset(root)
    plan = make_plan(ds)
    bad = [ds.case(c).label_path for c in ("case_001", "case_003")]
    for path in bad:  # a label map with a fractional value: refused while preprocessing
        img = nib.load(str(path))
        lab = np.asarray(img.dataobj).astype(np.float32)
        lab[0, 0, 0] = 0.5
        nib.save(nib.Nifti1Image(lab, img.affine, img.header), str(path))
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        preprocess_dataset(ds, plan, cache_dir=cache, workers=2)
    assert str(info.value) == f"{bad[0]}: non-integer label values"
    done = preprocess_dataset(ds, plan, case_ids=["case_000", "case_002"], cache_dir=cache, workers=1)
    assert set(done) == {"case_000", "case_002"}
    assert len(list(cache.rglob("properties.json"))) == 2
