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
