"""`emonas params` as a user runs it: a real subprocess, JSON contract, one-line errors."""

import json
import subprocess
import sys

import pytest

from engine.genome import PAPER_GENOMES

PROSTATE = PAPER_GENOMES["prostate"].to_json()


def emonas(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=120)


def test_params_json_is_the_last_line_and_matches_the_paper():
    r = emonas("params", "--genome", PROSTATE, "--in-channels", "1", "--classes", "2", "--patch", "32,48,32", "--json")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["parameters"] == pytest.approx(5.9e6, rel=0.02)
    assert last["patch"] == [32, 48, 32] and last["train_step_flops"] > 0


def test_params_human_output_and_genome_file(tmp_path):
    f = tmp_path / "hippo.json"
    f.write_text(PAPER_GENOMES["hippocampus"].to_json())
    r = emonas("params", "--genome", str(f), "--classes", "3")
    assert r.returncode == 0
    assert "7,050,563" in r.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["params", "--genome", '{"in2": 7}'], "missing"),
        (["params", "--genome", PROSTATE.replace('"nf1": 32', '"nf1": 12')], "nf1"),
        (["params", "--genome", "/no/such/file.json"], "/no/such/file.json"),
        (["params", "--genome", PROSTATE, "--patch", "30,48,32"], "not divisible"),
        (["params", "--genome", PROSTATE, "--patch", "a,b"], "--patch"),
        (["params", "--genome", PROSTATE, "--classes", "1"], "--classes"),
        (["params", "--genome", PROSTATE, "--bogus"], "unrecognized"),
        (["params"], "required"),
        (["no-such-command"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args, needle):
    r = emonas(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_errors_with_json_end_with_a_json_object():
    r = emonas("params", "--genome", '{"nf1": 8}', "--json")
    assert r.returncode == 2
    assert "error" in json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("exc, line", [
    (PermissionError(13, "Permission denied", "/data/share/labels"), "/data/share/labels: Permission denied"),
    (OSError(28, "No space left on device"), "OSError: [Errno 28] No space left on device"),
    (MemoryError(), "out of memory (try a smaller patch or batch, or fewer workers)"),
])
def test_an_unexpected_file_or_memory_failure_is_still_one_line(exc, line, capsys):
    """Whatever command meets it: the file and the problem on one line, exit 2, the JSON object last."""
    import argparse

    from engine.cli._common import run_command

    def handler(args):
        raise exc

    code = run_command(argparse.Namespace(handler=handler, json=True))
    out = capsys.readouterr()
    assert code == 2 and out.err == f"emonas: error: {line}\n"
    assert json.loads(out.out.strip().splitlines()[-1]) == {"error": line}


@pytest.mark.parametrize("name, published", [("prostate", 5.9e6), ("hippocampus", 7.0e6)])
def test_paper_profile_prints_the_published_sizes(name, published):
    r = emonas("params", "--profile", "paper", "--genome", PAPER_GENOMES[name].to_json(), "--classes", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["profile"] == "paper" and out["pool_sizes"] == [[2, 2, 2]] * 3
    assert out["parameters"] == pytest.approx(published, rel=0.02)


def test_cardiac_size_matches_the_published_one_with_in_plane_pooling():
    """7.28 M with 2x2x2 pooling; 7.11 M, the published 7.1 M, when the three levels pool 2x2x1 (the
    thick-slice ACDC volumes): the transposed convolutions then have 2x2x1 kernels."""
    from engine.network import count_parameters

    g = PAPER_GENOMES["cardiac"]
    assert count_parameters(g, 1, 4) == pytest.approx(7.28e6, rel=0.002)
    assert count_parameters(g, 1, 4, [(2, 2, 1)] * 3) == pytest.approx(7.1e6, rel=0.002)


def test_paper_profile_patch_must_divide_by_two_to_the_levels():
    g = PAPER_GENOMES["hippocampus"].replace(n_cells=9).to_json()
    r = emonas("params", "--profile", "paper", "--genome", g, "--classes", "3", "--patch", "35,50,35")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "emonas: error: --patch 35,50,35: the paper profile pools 2x2x2 4 times, so every axis must divide by 16; "
        "try --patch 32,48,32"]
    ok = emonas("params", "--profile", "paper", "--genome", g, "--classes", "3", "--patch", "32,48,32", "--json")
    paper = json.loads(ok.stdout.strip().splitlines()[-1])
    assert paper["pool_sizes"] == [[2, 2, 2]] * 4
    default = json.loads(emonas("params", "--genome", g, "--classes", "3", "--patch", "32,48,32", "--json")
                         .stdout.strip().splitlines()[-1])
    assert default["pool_sizes"][3] == [1, 1, 1] and default["parameters"] < paper["parameters"]
