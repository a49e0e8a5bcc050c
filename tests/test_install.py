"""A plain, non-editable install: the wheel carries the engine, the app, main.py and the resources,
and the installed copy works on its own (not through this checkout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(tmp_path: Path) -> Path:
    """The project's wheel, built from this checkout without build isolation (no downloads)."""
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(wheels)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = wheels.glob("emonas_studio-*.whl")
    return wheel


def test_the_wheel_installs_and_runs_without_the_checkout(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for needed in ("main.py", "engine/cli/__init__.py", "emonas_gui/app.py", "resources/default_search.toml",
                   "resources/demo/MNI_ICBM152_NOTICE.txt", "resources/examples/standalone_predict.py"):
        assert needed in names, needed
    assert not any(n.startswith("tests/") for n in names)
    assert "emonas = engine.cli:main" in entry_points and "emonas-studio = emonas_gui.app:main" in entry_points

    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # the installed copy first on the path; run from elsewhere so the checkout is not the current folder
    env = dict(os.environ, PYTHONPATH=str(target))
    probe = ("import engine, resources, json; from engine.config import SearchConfig, default_config_path; "
             "from engine.data.demo import notice_path; "
             "print(json.dumps([engine.__file__, resources.__file__, str(default_config_path()), "
             "str(notice_path()), SearchConfig.load(default_config_path()).samea.population]))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    engine_file, resources_file, config_path, notice, population = json.loads(r.stdout.strip().splitlines()[-1])
    for path in (engine_file, resources_file, config_path, notice):
        assert Path(path).is_relative_to(target) and Path(path).is_file(), path
    assert population >= 2
    r = subprocess.run([sys.executable, "-m", "engine.cli", "params", "--classes", "2", "--json", "--genome",
                        '{"in2": 1, "in3": 0, "in4": 2, "op1": "p3d_3x3x3", "op2": "conv3d_3x3x3", '
                        '"op3": "conv2d_5x5x1", "op4": "conv3d_1x1x1", "n_cells": 7, "nf1": 32, "lr": 0.0003}'],
                       capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["parameters"] == 5_944_386


#: Distributions of the ``gui`` extra and their import names: kept out of the headless environment.
GUI_ENTRIES = ("pyside6", "shiboken6", "pyqtgraph", "vtk", "pytest_qt", "pytestqt")


def _headless_site(tmp_path: Path) -> Path:
    """This environment's installed packages minus the app's (and this checkout's editable install),
    as links in one folder that a fresh virtual environment puts on its path: pip there sees them as
    installed, so the wheel installs with ``--no-index`` (no downloads), and only if it needs no app package."""
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    out = tmp_path / "deps"
    out.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if (name.startswith(GUI_ENTRIES) or name.startswith(("emonas", "__editable__", "engine", "resources"))
                or name.endswith(".pth") or name in ("main.py", "__pycache__")):
            continue
        (out / entry.name).symlink_to(entry)
    return out


def test_the_wheel_installs_headless_and_runs_the_cli_without_the_app_packages(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        metadata = next(z.read(n).decode() for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    for pkg in ("pyside6", "pyqtgraph", "vtk"):
        needed = [line for line in requires if line.lower().split()[1].startswith(pkg)]
        assert needed and all("extra == \"gui\"" in line for line in needed), needed

    venv = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    py = venv / "bin" / "python"
    venv_site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    (venv_site / "headless_deps.pth").write_text(str(_headless_site(tmp_path)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["EMONAS_NO_PROGRESS"] = "1"
    # pip of this environment installs into the fresh one: no index, the dependencies already there
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    for module in ("PySide6", "pyqtgraph", "vtkmodules", "vtk"):
        probe = subprocess.run([str(py), "-c", f"import {module}"], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert probe.returncode != 0, f"{module} is importable in the headless environment"

    r = subprocess.run([str(venv / "bin" / "emonas"), "check", "demo", "--json"], capture_output=True, text=True,
                       timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ok"] and len(report["cases"]) == 24
    where = subprocess.run([str(py), "-c", "import engine; print(engine.__file__)"], capture_output=True, text=True,
                           env=env, cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # the wheel's copy, not this checkout

    r = subprocess.run([str(venv / "bin" / "emonas-studio")], capture_output=True, text=True, timeout=120, env=env,
                       cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'emonas-studio[gui]'" in lines[0], r.stderr
