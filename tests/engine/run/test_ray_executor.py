"""The Ray executor on a local Ray with 2 CPUs, with injected failures (an exception and a lost worker).

Runs in its own subprocess with a timeout; skipped when Ray is not installed.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ray")

HERE = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {here!r})
    from engine.config import SearchConfig
    from engine.genome import Genome
    from engine.run import SearchSession, RunStore
    from search_fakes import PROBLEM, fake_evaluate

    def evaluate(task, cancel=None):
        g = Genome.from_dict(task["genome"])
        if g.op2 == "identity":
            os._exit(3)  # the worker process dies
        result = fake_evaluate(task, cancel)  # raises for op1 = identity
        result["metrics"]["pid"] = os.getpid()
        return result

    cfg = SearchConfig().replace(
        samea={{"population": 4, "generations": 3, "learning_generations": 1, "surrogate_trees": 10}},
        resources={{"executor": "ray", "ray_num_cpus": 2}}, seed=11,
        space={{"op1": ["identity", "conv3d_1x1x1", "conv3d_3x3x3"], "op2": ["identity", "conv3d_1x1x1"]}})
    summary = SearchSession(sys.argv[1], cfg, evaluate, PROBLEM).run()
    with RunStore.open_readonly(sys.argv[1]) as s:
        rows = s.candidates()
    print(json.dumps({{"pid": os.getpid(), "summary": summary, "rows": [[r["status"], r["genome"], r["error"], (r["metrics"] or {{}}).get("pid")] for r in rows]}}))
""")


@pytest.mark.ray
def test_search_on_local_ray_survives_failures(tmp_path):
    p = subprocess.run([sys.executable, "-c", SCRIPT.format(here=str(HERE)), str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["summary"]["status"] == "finished"
    rows = out["rows"]
    assert all(status in ("done", "failed") for status, *_ in rows)
    died = [r for r in rows if r[1]["op2"] == "identity"]
    raised = [r for r in rows if r[1]["op1"] == "identity" and r[1]["op2"] != "identity"]
    fine = [r for r in rows if r[1]["op1"] != "identity" and r[1]["op2"] != "identity"]
    assert died and all(r[0] == "failed" and r[2].startswith("Ray:") for r in died)
    assert raised and all(r[0] == "failed" and "injected failure" in r[2] for r in raised)
    assert fine and all(r[0] == "done" for r in fine)
    assert all(r[3] is not None and r[3] != out["pid"] for r in fine)  # trained in Ray workers
