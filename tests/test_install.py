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


def test_the_wheel_installs_and_runs_without_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(wheels)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = wheels.glob("emonas_studio-*.whl")
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
