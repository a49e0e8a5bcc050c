"""benchmarks/gui_delay_export.py runs both arms end to end (one round of one epoch, about 100 s on 2
cores, hence slow); its figures go to BENCHMARKS.md, never asserted here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gui_delay_export_benchmark_smoke(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gui_delay_export.py"), "--rounds", "1", "--epochs", "1",
                        "--json"], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert [(row["round"], row["arm"]) for row in doc["rows"]] == [(1, "thread"), (1, "process")]
    for row in doc["rows"]:
        # each arm exported the retrained candidate and its progress reached the GUI thread
        assert row["error"] is None and row["exported"] and row["events"] > 0
        assert row["ticks"] > 0 and row["max_gap_ms"] >= row["p99_gap_ms"] >= row["median_gap_ms"] > 0
        assert row["wall_s"] > 0
    # the first job imported PyTorch into the benchmark's process (the app's first export); the child did not need it
    assert doc["rows"][0]["torch_in_app_before"] is False
    assert set(doc["arms"]) == {"thread", "process"} and len(doc["ratios_thread_over_process"]) == 1
