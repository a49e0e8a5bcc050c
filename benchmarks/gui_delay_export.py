"""GUI-thread delay during an export with retraining: the job in a worker thread against a child process.

The app's export (with "retrain first") runs ``engine.run.jobs.export``. Run in a worker thread of the app
(``emonas_gui.workers.EngineJob``), PyTorch's import and training hold Python's global interpreter lock in
stretches that the GUI thread feels; run in a child process (``ProcessJob``, the app's way now), the app
process only reads the progress records and the result. Both arms export candidate 4 of the committed run
``tests/fixtures/legacy_2026_12/run`` (demo data set) to ONNX after ``--epochs`` epochs of retraining, in
alternating rounds (thread, process, thread, process ...) so that the machine's noise hits both, each into
a fresh output folder, while a 20 ms QTimer on the GUI thread records its gaps (as ``app_bench.py`` does).
The first thread round also imports PyTorch into the app process (the first export of an app session).

Offscreen Qt, no assertions. Run: ``python benchmarks/gui_delay_export.py [--rounds 2] [--epochs 2] [--json]``
(torch threads as the app leaves them; try it with and without ``OMP_NUM_THREADS=1``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_RUN = ROOT / "tests" / "fixtures" / "legacy_2026_12" / "run"
CANDIDATE = 4
TICK_MS = 20
#: the project's goal for the process arm: the GUI thread never waits longer than this
GOAL_MS = 50.0
ARMS = ("thread", "process")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank: a value that occurred."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered))) - 1))]


def make_job(arm: str, request):
    """The export job as the app ran it (``thread``: an EngineJob) or runs it now (``process``)."""
    from emonas_gui.workers import EngineJob, ProcessJob

    if arm == "thread":
        def run(cb, ctl):
            from engine.run.jobs import export

            return export(request, lambda p: cb(p.to_dict()), ctl)

        return EngineJob(run, "export")
    return ProcessJob("export", (request,), "export")


def measure(job, timeout_s: float) -> dict:
    """Run ``job`` to its ``done`` in a QEventLoop while a 20 ms GUI-thread timer records its gaps.

    Returns the gaps' largest, 99th percentile and median (ms), the three largest with when each began
    (s after ``start()``) and the job's last progress text the GUI thread had received by then, the job's
    wall time from ``start()`` to ``done`` on the GUI thread, the progress events received, and the
    failure message if any."""
    from PySide6.QtCore import QEventLoop, QTimer

    gaps: list[float] = []
    ends: list[float] = []  # when each gap ended
    last = [time.perf_counter()]
    out: dict = {"events": 0, "error": None}
    stages: list[tuple[float, str]] = [(0.0, "starting the job")]  # (when received, the job's text)

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        ends.append(now)
        last[0] = now

    def on_event(ev) -> None:
        out["events"] += 1
        stages.append((time.perf_counter(), str(ev.get("text") or ev.get("event"))))

    def on_done() -> None:
        out["wall_s"] = time.perf_counter() - out["t0"]
        stages.append((time.perf_counter(), "done (the result delivered)"))
        QTimer.singleShot(5 * TICK_MS, loop.quit)  # a few ticks after the end (unpickling, slots)

    def begin() -> None:
        out["t0"] = time.perf_counter()
        job.start()

    def give_up() -> None:
        out["error"] = f"no end within {timeout_s:.0f} s: stopped"
        job.stop()

    loop = QEventLoop()
    job.event.connect(on_event)
    job.failed.connect(lambda msg: out.__setitem__("error", msg))
    job.done.connect(on_done)
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    guard = QTimer()
    guard.setSingleShot(True)
    guard.timeout.connect(give_up)
    timer.start()
    QTimer.singleShot(10 * TICK_MS, begin)  # a few quiet ticks first
    guard.start(int(timeout_s * 1000))
    loop.exec()
    guard.stop()
    timer.stop()
    job.wait(120_000)
    t0 = out.get("t0", ends[0])

    def gap(i: int) -> dict:  # a gap, when it began, and the job's last progress text the GUI had by then
        began = ends[i] - gaps[i]
        return {"ms": round(1000 * gaps[i], 1), "at_s": round(began - t0, 2),
                "during": [text for at, text in stages if at <= began][-1]}

    top = sorted(range(len(gaps)), key=gaps.__getitem__, reverse=True)[:3]
    return {"max_gap_ms": 1000 * gaps[top[0]], "max_gap_at_s": gap(top[0])["at_s"],
            "largest_gaps": [gap(i) for i in top], "p99_gap_ms": 1000 * percentile(gaps, 99),
            "median_gap_ms": 1000 * statistics.median(gaps), "ticks": len(gaps),
            "wall_s": out.get("wall_s", float("nan")), "events": out["events"], "error": out["error"]}


def run_rounds(rounds: int, epochs: int, folder: Path, timeout_s: float, say=print) -> list[dict]:
    """Alternate the arms ``rounds`` times over a copy of the committed run; one row per job."""
    from engine.run.jobs import ExportRequest

    run_dir = folder / "run"
    shutil.copytree(FIXTURE_RUN, run_dir)
    rows = []
    for r in range(1, rounds + 1):
        for arm in ARMS:
            torch_loaded = "torch" in sys.modules  # in the app process, before this job
            out = folder / f"round{r}-{arm}" / "model"
            request = ExportRequest(out_dir=str(out), run_dir=str(run_dir), candidate_id=CANDIDATE, formats=("onnx",),
                                    retrain=True, epochs=epochs)
            row = {"round": r, "arm": arm, "torch_in_app_before": torch_loaded,
                   **measure(make_job(arm, request), timeout_s)}
            row["exported"] = (out / "model.onnx").is_file()
            rows.append(row)
            say(f"round {r} {arm:7s}: largest gap {row['max_gap_ms']:7.1f} ms, p99 {row['p99_gap_ms']:6.1f} ms, "
                f"wall {row['wall_s']:6.1f} s, {row['events']} events; the largest gap began "
                f"{row['max_gap_at_s']:.1f} s after the start, during: {row['largest_gaps'][0]['during']}" + (f"  FAILED: {row['error']}" if row['error'] else ""))
    return rows


def summarize(rows: list[dict]) -> dict:
    """Per arm the worst and median of each figure over the rounds, and thread/process ratios per round."""
    arms = {}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm and not r["error"]]
        if not mine:
            continue
        arms[arm] = {k: {"max": max(r[k] for r in mine), "median": statistics.median(r[k] for r in mine)}
                     for k in ("max_gap_ms", "p99_gap_ms", "wall_s", "events")}
    ratios = []
    for r in sorted({row["round"] for row in rows}):
        pair = {row["arm"]: row for row in rows if row["round"] == r and not row["error"]}
        if set(pair) == set(ARMS):
            t, p = pair["thread"], pair["process"]
            ratios.append({"round": r, **{k: t[k] / p[k] for k in ("max_gap_ms", "p99_gap_ms", "wall_s")}})
    return {"arms": arms, "ratios_thread_over_process": ratios}


def print_table(rows: list[dict], summary: dict) -> None:
    print()
    print(f"{'round':>5} | {'thread: max gap':>15} {'p99':>7} {'wall':>7} {'events':>6} | "
          f"{'process: max gap':>16} {'p99':>7} {'wall':>7} {'events':>6} | {'max gap x':>9} {'p99 x':>6} {'wall x':>6}")
    by_round = {}
    for row in rows:
        by_round.setdefault(row["round"], {})[row["arm"]] = row
    ratios = {x["round"]: x for x in summary["ratios_thread_over_process"]}

    def cells(row, width):
        if row is None or row["error"]:
            return f"{'failed':>{width}} {'':>7} {'':>7} {'':>6}"
        return (f"{row['max_gap_ms']:>{width - 3}.1f} ms {row['p99_gap_ms']:>4.1f} ms {row['wall_s']:>5.1f} s "
                f"{row['events']:>6}")

    for r, pair in sorted(by_round.items()):
        x = ratios.get(r)
        ratio = f"{x['max_gap_ms']:>8.1f}x {x['p99_gap_ms']:>5.2f}x {x['wall_s']:>5.2f}x" if x else ""
        print(f"{r:>5} | {cells(pair.get('thread'), 15)} | {cells(pair.get('process'), 16)} | {ratio}")
    for row in rows:
        print(f"round {row['round']} {row['arm']}: largest gaps " + "; ".join(
            f"{g['ms']:.0f} ms at {g['at_s']:.1f} s ({g['during']})" for g in row["largest_gaps"]))
    proc = summary["arms"].get("process")
    if proc:
        worst = proc["max_gap_ms"]["max"]
        verdict = "met" if worst < GOAL_MS else f"missed by {worst - GOAL_MS:.1f} ms"
        print(f"goal: largest GUI-thread delay under {GOAL_MS:.0f} ms with the process arm: {verdict} "
              f"(worst {worst:.1f} ms over {len([r for r in rows if r['arm'] == 'process'])} rounds)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (thread, process)")
    parser.add_argument("--epochs", type=int, default=2, help="retraining epochs of each export")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one job may take before it is stopped")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])  # noqa: F841 - the event loop needs it
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="emonas-gui-delay-") as tmp:
        rows = run_rounds(args.rounds, args.epochs, Path(tmp), args.timeout)
    summary = summarize(rows)
    print_table(rows, summary)
    torch_threads = None
    if "torch" in sys.modules:  # loaded by a thread round; read only now, not to skew the first import
        torch_threads = sys.modules["torch"].get_num_threads()
    doc = {"date": started, "rounds": args.rounds, "epochs": args.epochs, "cpus": os.cpu_count(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads_in_app": torch_threads,
           "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
           "goal_ms": GOAL_MS, "rows": rows, **summary}
    print(f"load average before {doc['load_before']}, after {doc['load_after']}; OMP_NUM_THREADS="
          f"{doc['omp_num_threads'] or 'unset'}, torch threads in the app {torch_threads}")
    if args.json:
        print(json.dumps(doc))
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
