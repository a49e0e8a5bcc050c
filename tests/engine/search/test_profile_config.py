"""The top-level ``profile`` key: defaults it sets, explicit keys winning, older configurations."""

import pytest

from engine.config import PROFILE_DEFAULTS, SearchConfig, default_config_path, run_profile
from engine.errors import ConfigError


def test_default_profile_and_the_packaged_toml():
    assert SearchConfig().profile == "default"
    cfg = SearchConfig.load(default_config_path())
    assert cfg.profile == "default" and cfg.training.plan == {}
    assert 'profile = "default"' in default_config_path().read_text()


def test_paper_profile_sets_the_plan_and_explicit_keys_win(tmp_path):
    cfg = SearchConfig.from_toml('profile = "paper"\n')
    assert cfg.profile == "paper" and cfg.training.plan == {"pooling": "paper"}
    given = SearchConfig.from_toml('profile = "paper"\n[training]\nbatch_size = 4\n[training.plan]\n'
                                   'target_spacing = [2.0, 2.0, 2.0]\npooling = "adaptive"\n')
    assert given.training.batch_size == 4
    assert given.training.plan == {"target_spacing": [2.0, 2.0, 2.0], "pooling": "adaptive"}
    merged = SearchConfig.from_toml('profile = "paper"\n[training.plan]\ntarget_spacing = [2.0, 2.0, 2.0]\n')
    assert merged.training.plan == {"pooling": "paper", "target_spacing": [2.0, 2.0, 2.0]}
    path = tmp_path / "paper.toml"
    merged.save(path)
    assert SearchConfig.load(path) == merged  # a saved configuration reads back the same


def test_with_profile_changes_only_what_still_has_the_old_profiles_default():
    cfg = SearchConfig().replace(training={"plan": {"target_spacing": [2.0, 2.0, 2.0]}})
    paper = cfg.with_profile("paper")
    assert paper.profile == "paper"
    assert paper.training.plan == {"target_spacing": [2.0, 2.0, 2.0], "pooling": "paper"}
    back = paper.with_profile("default")
    assert back == cfg
    chosen = SearchConfig().replace(training={"plan": {"pooling": "adaptive"}}).with_profile("paper")
    assert chosen.training.plan == {"pooling": "adaptive"}  # set explicitly: kept
    with pytest.raises(ConfigError, match="profile must be one of default, paper"):
        cfg.with_profile("fast")


def test_bad_profile_is_one_line_naming_the_key():
    with pytest.raises(ConfigError, match=r"s.toml: profile must be one of default, paper, got 'Paper'"):
        SearchConfig.from_toml('profile = "Paper"\n', "s.toml")
    with pytest.raises(ConfigError, match="disagree"):
        SearchConfig.from_dict({"profile": "default", "training": {"extra": {"profile": "paper"}}})


def test_configurations_from_before_the_key_open_unchanged():
    """Runs made when the app wrote the profile into [training.extra] keep planning as they did."""
    old = {"schema_version": 1, "seed": 3, "training": {"batch_size": 0, "extra": {"profile": "paper", "amp": False}}}
    cfg = SearchConfig.from_dict(old)
    assert cfg.profile == "paper" and cfg.training.extra == {"amp": False}
    assert cfg.training.plan == {"pooling": "adaptive"} and cfg.training.batch_size == 0
    assert SearchConfig.from_dict(cfg.to_dict()) == cfg
    assert run_profile(old) == "paper" and run_profile(cfg.to_dict()) == "paper" and run_profile({}) == "default"
    assert SearchConfig.from_dict({"training": {"extra": {"profile": "default"}}}).profile == "default"


def test_profile_defaults_are_plain_data():
    assert set(PROFILE_DEFAULTS) == {"default", "paper"}
    assert PROFILE_DEFAULTS["paper"]["training"]["plan"] == {"pooling": "paper"}
