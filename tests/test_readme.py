"""The README stays true: its opening commands, and every `emonas` command it shows parses and says
what the README says it prints."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.S)


def emonas_commands() -> list[list[str]]:
    """Each `.venv/bin/emonas ...` command of the README's bash blocks, as argv after `emonas`."""
    out = []
    for block in BLOCKS:
        for line in block.splitlines():
            for part in line.split("&&"):
                argv = shlex.split(part, comments=True)
                if argv and argv[0] == ".venv/bin/emonas":
                    out.append(argv[1:])
    return out


def test_the_readme_opens_with_the_two_commands_that_ci_runs():
    first = [line for line in BLOCKS[0].splitlines() if line.strip()]
    assert len(first) == 2
    install_and_run, install_and_test = (shlex.split(line, comments=True) for line in first)
    assert install_and_run == ["bash", "scripts/setup.sh", "&&", ".venv/bin/emonas-studio"]
    assert install_and_test == ["bash", "scripts/setup.sh", "&&", ".venv/bin/python", "-m", "pytest"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/setup.sh" in ci and "\n.venv/bin/python -m pytest\n" in ci


def test_every_emonas_command_in_the_readme_parses():
    from engine.cli import build_parser

    commands = emonas_commands()
    assert {c[0] for c in commands} >= {"search", "front", "export", "demo-data", "predict", "params"}
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)  # an unknown option or a missing argument exits here


def test_every_emonas_example_in_the_docs_parses():
    from engine.cli import build_parser

    parser = build_parser()
    seen = 0
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", doc.read_text(), flags=re.S):
            for line in block.splitlines():
                argv = shlex.split(line, comments=True) if line.startswith("emonas ") else []
                if argv and not any(a.startswith("[") for a in argv):  # not usage notation
                    parser.parse_args(argv[1:])
                    seen += 1
    assert seen >= 6


def test_the_readmes_parameter_counts_are_what_params_prints(capsys):
    from engine.cli import main

    claims = re.findall(r"^\.venv/bin/emonas (params .*)\n# parameters\s+([\d,]+)", README, flags=re.M)
    assert len(claims) == 2  # the paper's prostate and hippocampus genomes
    for command, count in claims:
        capsys.readouterr()
        assert main(shlex.split(command) + ["--json"]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert printed["parameters"] == int(count.replace(",", ""))


def test_the_standalone_example_names_the_output_before_the_scans():
    (line,) = [l for b in BLOCKS for l in b.splitlines() if "standalone_predict.py" in l]
    argv = shlex.split(line, comments=True)
    usage = (ROOT / "resources" / "examples" / "standalone_predict.py").read_text()
    assert "standalone_predict.py MODEL_DIR OUT.nii.gz SCAN.nii.gz" in usage
    model, out, *scans = argv[2:]
    assert (model, out) == ("models/demo", "labels.nii.gz") and scans == ["scan.nii.gz"]
