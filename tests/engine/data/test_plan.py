"""Plans for Task04- and PROMISE12-like datasets, overrides, versioned JSON."""

import json

import numpy as np
import pytest

from data_helpers import make_msd
from engine.data import Plan, make_plan, open_dataset
from engine.data.dataset import Dataset
from engine.errors import ConfigError


@pytest.fixture(scope="module")
def hippo(tmp_path_factory):
    """A Task04_Hippocampus-like dataset: ~35x50x35 voxels at 1 mm, background + 2 labels."""
    return open_dataset(make_msd(tmp_path_factory.mktemp("d") / "Task04", n=4, shape=(35, 50, 35)))


def test_task04_like_plan(hippo):
    plan = make_plan(hippo)
    assert plan.target_spacing == pytest.approx((1.0, 1.0, 1.0))
    assert plan.orientation == "RAS" and plan.num_classes == 3
    assert plan.median_shape == (35, 50, 35)
    assert plan.patch_size == (32, 48, 32)
    assert plan.batch_size == 2
    assert plan.pool_sizes_for(4) == [(2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 1, 1)]
    assert plan.normalization == [{"modality": "MRI", "scheme": "zscore", "use_nonzero_mask": False}]
    assert plan.resampling == {"image_order": 3, "label": "linear_per_label", "separate_z": False}


@pytest.mark.parametrize("budget", [None, 2**29])
def test_patch_divisible_for_every_network_depth(hippo, budget):
    plan = make_plan(hippo, memory_budget_bytes=budget)
    for n in (2, 3, 4):
        pools = plan.pool_sizes_for(n)
        assert len(pools) == n and all(p in (1, 2) for pool in pools for p in pool)
        for axis in range(3):
            assert plan.patch_size[axis] % int(np.prod([p[axis] for p in pools])) == 0


def test_smaller_memory_budget_gives_smaller_patch(hippo):
    big = make_plan(hippo)
    small = make_plan(hippo, memory_budget_bytes=2**29)
    assert np.prod(small.patch_size) < np.prod(big.patch_size)
    from engine.data.plan import _training_bytes

    assert _training_bytes(small.patch_size, small.pool_schedule, 2, 1, 3) <= 2**29


def _promise_like_fingerprint():
    rng = np.random.default_rng(0)
    z = [2.2, 3.0, 3.6, 3.6, 4.0, 3.6, 2.5, 3.6, 3.6, 3.3]
    cases = []
    for i, sz in enumerate(z):
        inplane = float(rng.choice([0.27, 0.55, 0.625, 0.625, 0.6]))
        n = int(round(190 / inplane))
        shape = [n, n, int(round(90 / sz))]
        cases.append({"case_id": f"Case{i:02d}", "ras_spacing": [inplane, inplane, sz], "ras_shape": shape,
                      "crop_shape": shape, "intensity": [{"sample": list(rng.normal(300, 80, 50))}]})
    return {"cases": cases}, z


def test_promise12_like_plan_handles_thick_slices():
    fp, z = _promise_like_fingerprint()
    ds = Dataset(None, "promise12", "PROMISE12", [], ["T2"], {"background": 0, "prostate": 1})
    plan = make_plan(ds, fingerprint=fp)
    tx, ty, tz = plan.target_spacing
    assert tx == ty == pytest.approx(0.6)
    assert tz == pytest.approx(np.percentile(z, 10), abs=1e-4)  # nnU-Net's rule for the thick axis
    # cubic within slices, nearest across the thick ones (nnU-Net's separate z): no ringing between slices
    assert plan.resampling == {"image_order": 3, "label": "linear_per_label", "separate_z": True}
    assert plan.pool_schedule[0] == (2, 2, 1)  # do not pool the thick axis at first
    assert plan.patch_size[0] > 2 * plan.patch_size[2]
    assert plan.patch_size[2] <= plan.median_shape[2] + 8
    from engine.data.plan import DEFAULT_MEMORY_BUDGET, _training_bytes

    assert _training_bytes(plan.patch_size, plan.pool_schedule, plan.batch_size, 1, 2) <= DEFAULT_MEMORY_BUDGET


def test_ct_normalization_uses_foreground_percentiles():
    fp, _ = _promise_like_fingerprint()
    ds = Dataset(None, "msd", "liver", [], ["CT"], {"background": 0, "liver": 1})
    norm = make_plan(ds, fingerprint=fp).normalization[0]
    sample = np.concatenate([c["intensity"][0]["sample"] for c in fp["cases"]])
    assert norm["scheme"] == "ct"
    assert norm["clip_low"] == pytest.approx(np.percentile(sample, 0.5))
    assert norm["clip_high"] == pytest.approx(np.percentile(sample, 99.5))


def test_overrides(hippo):
    plan = make_plan(hippo, overrides={"target_spacing": [1.5, 1.5, 1.5], "batch_size": 4,
                                       "normalization": [{"scheme": "zscore", "clip_sigma": 3}]})
    assert plan.target_spacing == (1.5, 1.5, 1.5) and plan.batch_size == 4
    assert plan.normalization[0]["clip_sigma"] == 3
    assert plan.median_shape == (23, 33, 23)
    assert sorted(plan.overrides) == ["batch_size", "normalization", "target_spacing"]
    assert make_plan(hippo, overrides={"patch_size": [16, 32, 16]}).patch_size == (16, 32, 16)
    with pytest.raises(ConfigError, match="not divisible"):
        make_plan(hippo, overrides={"patch_size": [30, 48, 32]})
    with pytest.raises(ConfigError, match="unknown plan field"):
        make_plan(hippo, overrides={"patchsize": [32, 32, 32]})
    with pytest.raises(ConfigError, match="target_spacing"):
        make_plan(hippo, overrides={"target_spacing": [1, -1, 1]})


def test_json_round_trip_and_version(hippo, tmp_path):
    plan = make_plan(hippo)
    path = plan.save(tmp_path / "plan.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["patch_size"] == [32, 48, 32]
    assert Plan.load(path) == plan
    data["schema_version"] = 99
    with pytest.raises(ConfigError, match="schema_version"):
        Plan.from_dict(data)


def test_separate_z_overrides_and_validation(hippo):
    fp, _ = _promise_like_fingerprint()
    ds = Dataset(None, "promise12", "PROMISE12", [], ["T2"], {"background": 0, "prostate": 1})
    assert make_plan(ds, fingerprint=fp, overrides={"resampling": {"separate_z": False}}).resampling["separate_z"] is False
    on = make_plan(hippo, overrides={"resampling": {"separate_z": True}})
    assert on.resampling["separate_z"] is True and on.overrides == ["resampling"]
    assert Plan.from_dict(json.loads(on.to_json())) == on
    with pytest.raises(ConfigError, match="separate_z must be true or false"):
        make_plan(hippo, overrides={"resampling": {"separate_z": "yes"}})
    data = on.to_dict()
    data["resampling"]["separate_z"] = 1
    with pytest.raises(ConfigError, match="separate_z"):
        Plan.from_dict(data)
    # a plan saved before the key existed reads back without it (its arrays stay as they were)
    del data["resampling"]["separate_z"]
    assert "separate_z" not in Plan.from_dict(data).resampling


def _shape_fingerprint(shapes, spacing):
    rng = np.random.default_rng(0)
    return {"cases": [{"case_id": f"c{i}", "ras_spacing": list(spacing), "ras_shape": list(s), "crop_shape": list(s),
                       "intensity": [{"sample": list(rng.normal(300, 80, 20))}]} for i, s in enumerate(shapes)]}


@pytest.mark.parametrize("kind, shapes, spacing, median_rule, nnunet_rule", [
    # Task04-like: 1 mm, median 36x50x35; nnU-Net's own Task04 plan is 40x56x40
    ("task04", [(34, 48, 33), (36, 50, 35), (38, 52, 37)], (1.0, 1.0, 1.0), (32, 48, 32), (40, 56, 40)),
    # demo-like: ~3.5 mm brains of 34x42x34
    ("demo", [(33, 41, 33), (34, 42, 34), (35, 43, 35)], (3.5, 3.5, 3.5), (32, 40, 32), (40, 48, 40)),
])
def test_patch_rules_on_small_shapes(kind, shapes, spacing, median_rule, nnunet_rule):
    ds = Dataset(None, "msd", kind, [], ["MRI"], {"background": 0, "a": 1, "b": 2})
    fp = _shape_fingerprint(shapes, spacing)
    default = make_plan(ds, fingerprint=fp)
    nnunet = make_plan(ds, fingerprint=fp, overrides={"patch_rule": "nnunet"})
    assert default.patch_rule == "median" and default.patch_size == median_rule
    assert nnunet.patch_rule == "nnunet" and nnunet.patch_size == nnunet_rule
    assert all(p >= m for p, m in zip(nnunet.patch_size, nnunet.median_shape))  # covers the median case


def test_patch_rules_on_a_promise12_like_set_stay_in_the_memory_budget():
    from engine.data.plan import _training_bytes

    fp, _ = _promise_like_fingerprint()
    ds = Dataset(None, "promise12", "PROMISE12", [], ["T2"], {"background": 0, "prostate": 1})
    default = make_plan(ds, fingerprint=fp)
    nnunet = make_plan(ds, fingerprint=fp, overrides={"patch_rule": "nnunet"})
    for plan in (default, nnunet):
        assert _training_bytes(plan.patch_size, plan.pool_schedule, 2, 1, 2) <= plan.memory_budget_bytes
        # thick slices: the slice axis is pooled less than the in-plane axes
        assert plan.pool_schedule[0][2] == 1 and plan.pool_schedule[0][:2] == (2, 2)
    assert all(n >= d for n, d in zip(nnunet.patch_size, default.patch_size))
    with pytest.raises(ConfigError, match="patch_rule"):
        make_plan(ds, fingerprint=fp, overrides={"patch_rule": "largest"})
