"""The search configuration: TOML in and out, packaged defaults, errors naming the bad key."""

import pytest

from engine.config import SearchConfig, default_config_path
from engine.errors import ConfigError


def test_packaged_defaults_are_the_paper_defaults():
    cfg = SearchConfig.load(default_config_path())
    assert cfg == SearchConfig()
    s = cfg.samea
    assert (s.population, s.generations, s.learning_generations, s.neighbourhood, s.theta) == (10, 40, 10, 3, 0.001)
    assert (s.surrogate_trees, cfg.training.epochs, cfg.training.patience, cfg.training.alpha) == (100, 120, 20, 0.25)
    assert cfg.space.search_space().size() == SearchConfig().space.search_space().size()


def test_toml_round_trip(tmp_path):
    cfg = SearchConfig().replace(
        seed=4, dataset="demo", space={"nf1": [8, 16], "n_cells": [5]}, samea={"population": 6, "strategy": "moead"},
        training={"patch_size": [32, 32, 32], "plan": {"target_spacing": [2.0, 2.0, 2.0]}, "extra": {"amp": False}},
        resources={"executor": "ray", "gpus_per_candidate": 0.5, "early_stopping": "halving"},
    )
    path = tmp_path / "s.toml"
    cfg.save(path)
    back = SearchConfig.load(path)
    assert back == cfg
    assert back.space.search_space().nf1 == (8, 16)
    assert back.to_dict()["schema_version"] == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("[samea]\npopulation = 1\n", "samea.population must be an integer >= 2, got 1"),
        ("[samea]\npopulaton = 4\n", "unknown key samea.populaton"),
        ("[samea]\nneighbourhood = 12\n", "samea.neighbourhood must be an integer in 2..population (10)"),
        ("[samea]\ntheta = \"big\"\n", "samea.theta must be float"),
        ("[samea]\nstrategy = \"nsga\"\n", "samea.strategy must be one of samea, moead, random"),
        ("[training]\npatch_size = [32, 32]\n", "training.patch_size must be three positive integers"),
        ("[resources]\nexecutor = \"slurm\"\n", "resources.executor must be one of inprocess, local, ray"),
        ("[resources]\ndevice = \"tpu\"\n", "resources.device must be auto, cpu, cuda or cuda:N"),
        ("[space]\nnf1 = [12]\n", "[space] search space: 12 is not a valid value of gene nf1"),
        ("samea = 3\n", "[samea] must be a table"),
        ("schema_version = 9\n", "schema_version 9 is not supported"),
        ("[samea\n", "not valid TOML"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        SearchConfig.load(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read the search config"):
        SearchConfig.load("/nonexistent/search.toml")

def test_the_generation_shown_counts_from_one_and_stops_at_the_last():
    from engine.config import current_generation

    # the search reports generations completed: 0 while the initial population trains, G at the end
    assert [current_generation(g, 3) for g in range(4)] == [1, 2, 3, 3]
    assert current_generation(0, 1) == 1 and current_generation(1, 1) == 1
