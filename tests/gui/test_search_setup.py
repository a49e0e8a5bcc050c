"""The search setup form edits the same TOML the CLI reads; validation and the cost estimate."""

from __future__ import annotations

import pytest

from engine.config import SearchConfig, default_config_path
from engine.errors import ConfigError
from engine.network import count_parameters, extreme_genomes
from engine.genome import SearchSpace
from emonas_gui.panels.search_setup import SearchSetupForm


def test_form_round_trips_the_cli_toml(qtbot, tmp_path):
    form = SearchSetupForm()
    qtbot.addWidget(form)
    form.load_toml(default_config_path())
    assert form.population.value() == 10 and form.generations.value() == 40
    assert all(cb.isChecked() for cb in form.op_checks.values())

    # a user restricts the space and shrinks the search by clicking
    for op, cb in form.op_checks.items():
        cb.setChecked(op in ("conv3d_3x3x3", "identity"))
    form.cell_checks[7].setChecked(False)
    form.cell_checks[9].setChecked(False)
    form.nf1_checks[16].setChecked(False)
    form.nf1_checks[32].setChecked(False)
    form.population.setValue(4)
    form.generations.setValue(2)
    form.epochs.setValue(1)
    form.patch_from_plan.setChecked(False)
    for sp in form.patch:
        sp.setValue(16)
    form.surrogate.setChecked(False)
    form.executor.setCurrentText("local")
    form.workers.setValue(2)
    path = tmp_path / "search.toml"
    form.save_toml(path)

    cfg = SearchConfig.load(path)  # what `emonas search --config` reads
    assert cfg.samea.population == 4 and cfg.samea.generations == 2 and not cfg.samea.prescreen
    assert cfg.training.epochs == 1 and cfg.training.patch_size == [16, 16, 16]
    assert cfg.space.op1 == ["conv3d_3x3x3", "identity"] and cfg.space.nf1 == [8] and cfg.space.n_cells == [5]
    assert cfg.space.lr == []  # untouched genes stay unrestricted
    assert cfg.resources.executor == "local" and cfg.resources.workers == 2

    other = SearchSetupForm()
    qtbot.addWidget(other)
    other.load_toml(path)
    assert other.config().to_dict() == cfg.to_dict()
    assert other.workers.isEnabled()  # local executor: workers editable
    assert not other.ray_address.isEnabled()


def test_invalid_settings_are_explained(qtbot, tmp_path):
    form = SearchSetupForm()
    qtbot.addWidget(form)
    for cb in form.op_checks.values():
        cb.setChecked(False)
    assert "operation" in form.problem.text()
    with pytest.raises(ConfigError):
        form.config()
    form.op_checks["identity"].setChecked(True)
    assert form.problem.text() == ""
    form.population.setValue(2)
    assert "neighbourhood" in form.problem.text()  # T=3 > N=2, the engine's own message

    bad = tmp_path / "bad.toml"
    bad.write_text("[samea]\npopulation = 'many'\n")
    with pytest.raises(ConfigError, match="samea.population"):
        form.load_toml(bad)
    for w in (form.population, form.theta, form.surrogate, form.ray_address, form.op_checks["identity"]):
        assert w.toolTip()


def test_cost_estimate_matches_the_engine(qtbot):
    form = SearchSetupForm()
    qtbot.addWidget(form)
    form.population.setValue(4)
    form.generations.setValue(3)
    for n in (7, 9):
        form.cell_checks[n].setChecked(False)
    est = form.estimate(in_channels=1, num_classes=4, patch=(32, 32, 32), batch=2)
    small, large = extreme_genomes(form.space())
    assert est.candidates == 12
    assert est.min_parameters == count_parameters(small, 1, 4) < est.max_parameters == count_parameters(large, 1, 4)
    assert est.memory_bytes and est.memory_bytes > 0
    assert "12 candidates" in est.text()
    assert form.space().n_cells == (5,)
    assert extreme_genomes(SearchSpace(n_cells=(5,)))[1] == large


def test_cost_estimate_uses_the_plans_pooling_and_explains_unpoolable_patches():
    from engine.network import estimate_cost
    from emonas_gui.panels.search_setup import search_cost

    cfg = SearchConfig().replace(space={"n_cells": [5, 9], "nf1": [8]})
    thin_z = lambda n: [(2, 2, 1)] * n  # noqa: E731 - a plan that never pools the thin slice axis
    est = search_cost(cfg, 1, 3, patch=(64, 64, 8), batch=2, pools=thin_z)
    small, large = extreme_genomes(cfg.space.search_space())
    assert est.max_parameters == count_parameters(large, 1, 3, thin_z(large.n_levels))
    assert est.memory_bytes == estimate_cost(large, 1, 3, (64, 64, 8), 2, thin_z(large.n_levels)).training_bytes
    assert est.note == ""
    # with 2x2x2 pooling the 8-slice patch cannot go 4 levels deep: said, not raised
    est = search_cost(cfg, 1, 3, patch=(64, 64, 8), batch=2)
    assert est.memory_bytes is None and "skips them" in est.text()


def test_profile_selector_writes_the_top_level_key(qtbot, tmp_path):
    form = SearchSetupForm()
    qtbot.addWidget(form)
    form.load_toml(default_config_path())
    assert form.profile.currentText() == "default"
    form.profile.setCurrentText("paper")
    path = tmp_path / "paper.toml"
    form.save_toml(path)
    assert 'profile = "paper"' in path.read_text().splitlines()
    cfg = SearchConfig.load(path)
    assert cfg.profile == "paper" and "profile" not in cfg.training.extra
    assert cfg.training.plan == {"pooling": "paper"}
    form.profile.setCurrentText("default")  # back: the paper's plan default goes with it
    assert form.config().training.plan == {} and form.config().profile == "default"
    # a run configured before the key (profile in [training.extra]) opens in the form as it was
    old = tmp_path / "old.toml"
    old.write_text('[training.extra]\nprofile = "paper"\n')
    form.load_toml(old)
    assert form.profile.currentText() == "paper" and form.config().training.plan == {"pooling": "adaptive"}
