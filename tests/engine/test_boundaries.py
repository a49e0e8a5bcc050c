"""The engine stays headless (importable and usable with Qt, pyqtgraph and VTK absent) and layered."""

import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import engine

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph', 'vtk', 'vtkmodules', 'emonas_gui'):
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Block())
import importlib, pkgutil, engine
failed = []
for m in pkgutil.walk_packages(engine.__path__, 'engine.'):
    if m.name.endswith('__main__'):
        continue
    try:
        importlib.import_module(m.name)
    except ImportError as e:
        if 'blocked' in str(e):
            failed.append(m.name + ': ' + str(e))
    except Exception:
        pass  # optional dependencies (ray) are not the point here
print('\n'.join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_engine_module_imports_without_qt_or_vtk():
    r = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    # and it did look at the engine's modules
    assert len(list(pkgutil.walk_packages(engine.__path__, "engine."))) > 5


def test_import_linter_contract_holds():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed")
    r = subprocess.run([exe, str(ROOT / "pyproject.toml")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    # every contract ran and held: the headless one and the engine's layers
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert {c["type"] for c in contracts} >= {"forbidden", "layers"}
    for c in contracts:
        assert f"{c['name']} KEPT" in r.stdout, r.stdout


def test_cli_parser_builds_without_importing_torch():
    """`emonas --help` and argument errors answer at once: heavy imports happen inside handlers."""
    code = "import sys, engine.cli; engine.cli.build_parser(); print(sorted(m for m in ('torch', 'monai', 'sklearn', 'ray') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_apps_steps_and_cost_estimates_load_without_torch_or_sklearn():
    """Switching to the Search, Results or Export step never waits for PyTorch or scikit-learn: the
    steps' modules, reading a run and the analytic cost of a genome need neither (the jobs load them
    in their own thread or process)."""
    code = (
        "import sys\n"
        "import emonas_gui.panels.search, emonas_gui.panels.results, emonas_gui.panels.export\n"
        "from engine.genome import PAPER_GENOMES\n"
        "from engine.network import count_parameters\n"
        "from engine.run.store import RunStore\n"
        "from engine.search.pareto import hypervolume_2d\n"
        "assert count_parameters(next(iter(PAPER_GENOMES.values())), 1, 3) > 0\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'scipy', 'monai') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
