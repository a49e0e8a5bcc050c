"""Where the wall-time estimate of a finished search went right or wrong, candidate by candidate.

For each trained candidate of RUN: its measured seconds beside the time model's prediction (the cached
calibration of this device and the run's plan, as `emonas search --estimate` left it), split into the
fixed cost (building, final metrics), the training steps and the validations; the latency measurement
the model adds per candidate is listed apart (the run measures it outside the candidate's seconds);
then the run's wall time beside the sum of its candidates (what is spent outside
them: start, the normalization bounds, the surrogate); and how far the in-search ETA's model was from
the time still to go after each candidate. Reads the run only.

Usage: python benchmarks/estimate_breakdown.py RUN [--device cpu|cuda] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.genome import Genome  # noqa: E402
from engine.config import SearchConfig  # noqa: E402
from engine.run.session import SearchProblem, SearchSession  # noqa: E402
from engine.run.store import RunStore  # noqa: E402


def _read_run(run_dir: Path) -> tuple[SearchSession, list, dict]:
    """(a session with the run's config and problem, nothing opened for writing; its trained candidates
    with recorded seconds, by start; the run's summary)."""
    with RunStore.open_readonly(run_dir) as ro:
        config = SearchConfig.from_dict(ro.get_meta("config"), f"{run_dir}/run.db")
        problem = SearchProblem.from_dict(ro.get_meta("problem"))
        rows = sorted((r for r in ro.candidates("done") if r.seconds), key=lambda r: r.started_at or 0.0)
        summary = ro.get_meta("summary") or {}
    session = SearchSession.__new__(SearchSession)
    session.config, session.problem = config, problem
    return session, rows, summary


def breakdown(run_dir: Path, device: str) -> dict:
    """Per-candidate measured and predicted seconds of ``run_dir`` (see the module docstring)."""
    session, rows, summary = _read_run(run_dir)
    first = min((r.started_at for r in rows if r.started_at), default=math.nan)
    last = max((r.finished_at for r in rows if r.finished_at), default=math.nan)
    model, _, cached, _ = session.time_model(device)
    if not cached:
        raise SystemExit(f"{run_dir}: no cached calibration for this device and plan; run `emonas search "
                         "--estimate` with the run's settings first")
    out = []
    for r in rows:
        g = Genome.from_dict(r.genome)
        parts = model.parts(g)
        # a candidate's recorded seconds are its evaluation (fit, final metrics); its latency is measured
        # apart (before training), so it is left out of the comparison and listed on its own
        predicted = model.trained_seconds(g)
        out.append({"id": r.id, "nf1": g.nf1, "cells": g.n_cells, "measured_s": float(r.seconds),
                    "predicted_s": predicted, "ratio": float(r.seconds) / predicted, **parts})
    total = sum(c["measured_s"] for c in out)
    latency = {"measured_s": float(summary.get("latency_seconds") or 0.0),  # the bound genomes and every candidate
               "predicted_s": model.begin_s + sum(c["latency_s"] for c in out)}
    return {"latency": latency, "run": str(run_dir), "device": device, "candidates": out,
            "calibration": [{"nf1": p.genome["nf1"], "step_s": p.step_s, "val_s": p.val_s, "overhead_s": p.overhead_s,
                             "cold_s": p.cold_s, "excess_s": p.excess_s} for p in model.calibration.points],
            "epochs": model.epochs, "iterations": model.iterations, "val_every": model.val_every,
            "candidates_s": total, "first_to_last_s": last - first,
            "median_ratio": statistics.median(c["ratio"] for c in out) if out else math.nan}


def eta_errors(run_dir: Path, device: str) -> dict:
    """How far the in-search ETA's model was from the time the run still took, after each candidate:
    the remaining candidates' predicted seconds (the genomes the run did train, so only the model's
    error counts) against their measured ones, |log ratio| as a percentage, median and mean over the
    run; with the model's correction per width (``TimeModel.correction_for``) and with one correction
    for all candidates."""
    session, rows, _ = _read_run(run_dir)
    rows = [r for r in rows if not r.reused_from]
    genomes = [Genome.from_dict(r.genome) for r in rows]
    out = {}
    for scheme in ("per width", "one for all"):
        model = session.time_model(device)[0]
        if scheme == "one for all":
            model.correction_for = lambda nf1, m=model: m.correction
        errors = []
        for k in range(len(rows) - 1):
            model.observe(genomes[k], rows[k].seconds)
            # the recorded seconds leave out the latency measurement: so does the prediction here
            predicted = sum(model.trained_seconds(g) * model.correction_for(g.nf1) for g in genomes[k + 1:])
            errors.append(100 * abs(math.log(predicted / sum(r.seconds for r in rows[k + 1:]))))
        out[scheme] = {"median": statistics.median(errors), "mean": statistics.fmean(errors)} if errors else None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    b = breakdown(Path(a.run), a.device)
    print(f"{b['run']}: {len(b['candidates'])} candidates, {b['epochs']} epochs of {b['iterations']} steps, "
          f"validation every {b['val_every']}")
    for p in b["calibration"]:
        print(f"  calibration nf1 {p['nf1']:2d}: step {p['step_s'] * 1e3:7.1f} ms, validation {p['val_s']:6.2f} s, "
              f"fixed {p['overhead_s']:6.2f} s, cold {p['cold_s']:5.1f} s, shapes' set-up {p['excess_s']:5.2f} s")
    print("     id  nf1 cells  measured  predicted  ratio   fixed   steps  valid.  latency")
    for c in b["candidates"]:
        print(f"  {c['id']:5d} {c['nf1']:4d} {c['cells']:5d} {c['measured_s']:8.1f} s {c['predicted_s']:8.1f} s "
              f"{c['ratio']:6.2f} {c['fixed_s']:7.1f} {c['steps_s']:7.1f} {c['validations_s']:7.1f} {c['latency_s']:8.1f}")
    print(f"  median measured/predicted {b['median_ratio']:.2f}; candidates {b['candidates_s']:.0f} s in all, "
          f"first start to last finish {b['first_to_last_s']:.0f} s; latency measured for {b['latency']['measured_s']:.0f} s "
          f"(predicted {b['latency']['predicted_s']:.0f} s)")
    for scheme, e in eta_errors(Path(a.run), a.device).items():
        if e:
            print(f"  ETA after each candidate, correction {scheme}: remaining time off by a median {e['median']:.0f} % "
                  f"(mean {e['mean']:.0f} %)")
    if a.json:
        print(json.dumps(b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
