"""A stand-in evaluator for tests of the run machinery: analytic objectives, no training."""

import math
import os
import time

import numpy as np

from engine.genome import Genome, SearchSpace
from engine.run.session import SearchProblem

SPACE = SearchSpace()
PROBLEM = SearchProblem(in_channels=1, num_classes=3, patch_size=[32, 32, 32], batch_size=2, pool_sizes={})


def analytic_f1(genome: Genome) -> float:
    x = np.array(SPACE.encode(genome)) / (np.array(SPACE.cardinalities) - 1)
    return float(np.clip(0.6 * np.mean((x[:9] - 0.3) ** 2) + 0.4 * (1 - x[9]) ** 2, 0, 1))


def fake_evaluate(task: dict, cancel=None) -> dict:
    """Objectives from the genome; fails for op1 = identity; sleeps FAKE_SLEEP seconds; writes a folder."""
    genome = Genome.from_dict(task["genome"])
    started = time.time()
    delay = float(os.environ.get("FAKE_SLEEP", "0"))
    end = started + delay
    while time.time() < end:
        if cancel is not None and cancel.is_set():
            return {"candidate_id": task["candidate_id"], "status": "cancelled"}
        time.sleep(0.01)
    if genome.op1 == "identity" and os.environ.get("FAKE_FAIL_IDENTITY", "1") == "1":
        raise RuntimeError("injected failure for op1 = identity")
    os.makedirs(task["out_dir"], exist_ok=True)
    with open(os.path.join(task["out_dir"], "weights.pt"), "wb") as fh:
        fh.write(b"0" * 1000)
    f1 = analytic_f1(genome)
    return {"candidate_id": task["candidate_id"], "status": "done", "f1": f1, "f1_raw": f1 * 2.5,
            "parameters": None, "metrics": {"dice": {"a": 1 - f1}, "pid": os.getpid()},
            "curves": [{"epoch": 1, "val_dice_mean": 1 - f1}], "started_at": started, "finished_at": time.time(),
            "seconds": time.time() - started, "device": "cpu"}
