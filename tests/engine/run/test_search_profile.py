"""`emonas search --profile paper` with real training: the run stores the profile and plans and trains
the paper's way; `emonas front` and `emonas runs` show it."""

import json

from engine.run import RunStore
from test_search_cli import cli, emonas, last_json, small_demo  # noqa: F401 - small_demo is a fixture


def test_search_with_the_paper_profile(small_demo, tmp_path, capsys):
    data, config = small_demo
    before = {p: p.read_bytes() for p in [config, *sorted(data.rglob("*"))] if p.is_file()}
    run = tmp_path / "paper"
    out = last_json(emonas("search", "--out", run, "--dataset", data, "--config", config, "--profile", "paper",
                           "--population", 2, "--generations", 1, "--epochs", 1, "--seed", 1, "--json"))
    assert out["status"] == "finished" and out["counts"]["done"] == 2
    with RunStore.open_readonly(run) as store:
        cfg, train, problem = store.get_meta("config"), store.get_meta("train_config"), store.get_meta("problem")
        plan = store.get_meta("plan")
    assert cfg["profile"] == "paper" and train["profile"] == "paper"
    # the config's [training.plan] keys stay; the profile adds the paper's pooling and its batch of 2
    assert cfg["training"]["plan"]["pooling"] == "paper" and cfg["training"]["plan"]["patch_size"] == [16, 16, 16]
    assert plan["pooling"] == "paper" and problem["batch_size"] == 2
    assert all(level == [2, 2, 2] for pools in problem["pool_sizes"].values() for level in pools)
    front = cli(capsys, "front", run)
    assert front.stdout.splitlines()[0] == "profile paper"
    assert json.loads(cli(capsys, "front", run, "--json").stdout.strip().splitlines()[-1])["profile"] == "paper"
    assert "(paper profile)" in cli(capsys, "runs", tmp_path).stdout
    assert before == {p: p.read_bytes() for p in before}
