"""``emonas search | resume | front | runs | retrain | report``: the architecture search from the shell."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

from engine.cli._common import count_arg, progress_bar, subcommand
from engine.cli.params import parse_triple
from engine.config import PROFILE_NAMES, SearchConfig, current_generation, run_profile
from engine.errors import ConfigError, RunError

log = logging.getLogger(__name__)


#: ``emonas search`` options that set one configuration key as given: option -> (section, key).
_OPTION_KEYS = {
    "generations": ("samea", "generations"), "strategy": ("samea", "strategy"), "objective": ("samea", "objective"),
    "latency_target": ("samea", "latency_target"), "max_parameters": ("resources", "max_parameters"),
    "max_latency_ms": ("resources", "max_latency_ms"), "epochs": ("training", "epochs"),
    "executor": ("resources", "executor"), "ray_address": ("resources", "ray_address"),
    "device": ("resources", "device"), "seed": ("top", "seed"), "dataset": ("top", "dataset"),
    "fold": ("top", "fold"),
}


def _config_from_args(args) -> SearchConfig:
    cfg = SearchConfig.load(args.config) if args.config else SearchConfig()
    if args.profile:
        cfg = cfg.with_profile(args.profile)
    keys: dict[str, dict] = {"samea": {}, "training": {}, "resources": {}, "top": {}}
    for option, (section, key) in _OPTION_KEYS.items():
        value = getattr(args, option)
        if value is not None and value != "":
            keys[section][key] = value
    samea, training, resources = keys["samea"], keys["training"], keys["resources"]
    # options whose value is translated, or that change a second key to stay consistent
    if args.population is not None:
        samea["population"] = args.population
        if cfg.samea.neighbourhood > args.population:
            samea["neighbourhood"] = max(2, args.population)
    if args.patch:
        training["patch_size"] = list(parse_triple(args.patch))
    if args.workers is not None:
        resources["workers"] = args.workers
        if not args.executor and args.workers > 1 and cfg.resources.executor == "inprocess":
            resources["executor"] = "local"
    if args.splits:
        keys["top"]["splits"] = str(Path(args.splits).resolve())
    return cfg.replace(samea=samea, training=training, resources=resources, **keys["top"])


class _Display:
    """Draws the session's progress record (``SearchEvent.progress``): candidates evaluated of those the
    strategy expects, generation, front, best f1, ETA (a bar on a terminal, lines otherwise)."""

    def __init__(self):
        self.bar = progress_bar(None, "search")
        self.shown = 0  # evaluations drawn so far

    def __call__(self, ev) -> None:
        p = ev.progress
        self.bar.total = p.expected
        if ev.kind in ("candidate_finished", "step"):
            best = min((f[1] for f in p.front), default=math.nan)
            eta = f", ETA {p.eta_seconds / 60:.0f} min" if p.eta_seconds else ""
            gen = current_generation(p.generation, p.generations)
            self.bar.set_postfix_str(f"generation {gen}/{p.generations}, front {len(p.front)}, best f1 {best:.3f}{eta}")
        if p.evaluated > self.shown:  # after the postfix: a plain progress line carries it
            self.bar.update(p.evaluated - self.shown)
            self.shown = p.evaluated

    def close(self) -> None:
        self.bar.close()


def _run_session(session, args) -> dict:
    display = _Display()
    try:
        summary = session.run(callback=display)
    except KeyboardInterrupt:
        raise
    finally:
        display.close()
    if not args.json:
        _print_summary(summary)
    return summary


def _print_summary(summary: dict) -> None:
    c = summary["counts"]
    print(f"run         {summary['run']} ({summary['status']}, generation {summary['generation']}/{summary['generations']})")
    print(f"candidates  {c['done']} done, {c['failed']} failed; per phase {summary['evaluations_per_phase']}")
    if summary.get("surrogate_spearman") is not None:
        print(f"surrogate   Spearman {summary['surrogate_spearman']:.3f} on {summary['surrogate_predictions']} held-out candidates")
    print(f"time        algorithm {summary['algorithm_seconds']:.1f} s, training {summary['training_seconds']:.1f} s")
    print(f"front       {len(summary['front'])} candidates, hypervolume {summary['hypervolume']:.4f} "
          f"(objectives f1 and {summary.get('objective', 'parameters')})")
    for f in summary["front"]:
        print(f"  #{f['id']:<5} f1 {f['f1']:.4f}  f2 {f['f2']:.4f}  {f['parameters']:,} parameters"
              f"{_cost_text(f)}")


def _cost_text(row: dict) -> str:
    """``, 0.42 GFLOPs, 13.1 ms`` (``~`` marks a predicted latency) for a front row."""
    out = ""
    if row.get("gflops") is not None:
        out += f", {row['gflops']:.3g} GFLOPs"
    if row.get("latency_ms") is not None:
        out += f", {'~' if row.get('latency_predicted') else ''}{row['latency_ms']:.1f} ms"
    return out


def _search(args) -> dict:
    cfg = _config_from_args(args)
    if not cfg.dataset:
        raise ConfigError("--dataset is required (a dataset folder or demo)")
    if args.estimate:
        return _estimate(cfg, args)
    from engine.run.store import check_new_run

    check_new_run(args.out, cfg.dataset)  # at once: the search's libraries take seconds to import
    from engine.run.session import SearchSession

    return _run_session(SearchSession(args.out, cfg), args)


def _estimate(cfg: SearchConfig, args) -> dict:
    """Print the expected wall time of the search (a calibration, cached; nothing is written to --out)."""
    from engine.run.session import estimate_search

    est = estimate_search(cfg, recalibrate=args.recalibrate, count_start=True)
    if not args.json:
        print(est.text())
    return est.to_dict()


def _resume(args) -> dict:
    from engine.run.session import SearchSession

    return _run_session(SearchSession.open(args.run), args)


def _front_rows(store) -> list[dict]:
    rows = []
    for c in store.front():
        rows.append({"id": c.id, "genome": c.genome, "f1": c.f1, "f2": c.f2, "parameters": c.parameters,
                     "gflops": c.gflops, "latency_ms": c.latency_ms, "latency_predicted": bool(c.latency_predicted),
                     "dice": (c.metrics or {}).get("dice", {}), "generation": c.generation, "phase": c.phase})
    return rows


def _front(args) -> dict:
    from engine.run.store import RunStore

    with RunStore.open_readonly(args.run) as store:
        rows = _front_rows(store)
        profile = run_profile(store.get_meta("config"))
        objective = store.get_meta("objective") or {"name": "parameters"}
    if not args.json:
        print(f"profile {profile}")
        lat = objective.get("latency") or {}
        where = f" (latency: {lat.get('target')}, {lat.get('hardware')}, {lat.get('threads')} thread(s); ~ predicted)" \
            if lat else " (latency not measured yet: the front's networks are measured when the search ends)"
        print(f"objectives: f1 and {objective.get('name', 'parameters')}{where}")
        print(f"{'id':>5}  {'f1':>7}  {'f2':>6}  {'parameters':>11}  {'GFLOPs':>8}  {'latency':>10}  dice per label / genome")
        for r in rows:
            dice = ", ".join(f"{k} {v:.3f}" for k, v in r["dice"].items())
            gf = "-" if r["gflops"] is None else f"{r['gflops']:.3g}"
            ms = "-" if r["latency_ms"] is None else f"{'~' if r['latency_predicted'] else ''}{r['latency_ms']:.1f} ms"
            print(f"{r['id']:>5}  {r['f1']:7.4f}  {r['f2']:6.4f}  {r['parameters']:>11,}  {gf:>8}  {ms:>10}  {dice}")
            print(f"{'':>57}{json.dumps(r['genome'])}")
    return {"run": args.run, "profile": profile, "objective": objective, "front": rows}


def find_runs(root: Path) -> list[Path]:
    """Run directories at ``root`` and up to two levels below it."""
    from engine.run.store import is_run

    if is_run(root):
        return [root]
    found = []
    for pattern in ("*", "*/*"):
        found += [p for p in sorted(root.glob(pattern)) if p.is_dir() and is_run(p)]
    return found


def run_info(path: Path) -> dict:
    """Status and progress of one run, read-only (safe while it runs): the engine's progress record."""
    from engine.run.progress import read_progress
    from engine.run.store import RunLock, RunStore

    with RunStore.open_readonly(path) as store:
        cfg = store.get_meta("config") or {}
        p = read_progress(store)
    return {"run": str(path), "status": p.status, "active": RunLock(path).is_held_elsewhere(),
            "strategy": cfg.get("samea", {}).get("strategy"), "profile": run_profile(cfg),
            "dataset": cfg.get("dataset"), "generation": p.generation, "generations": p.generations,
            "counts": p.counts, "fraction": p.fraction, "eta_seconds": p.eta_seconds}


def _runs(args) -> dict:
    root = Path(args.dir)
    if not root.exists():
        raise RunError(f"{root}: no such folder")
    runs = []
    for p in find_runs(root):
        try:
            runs.append(run_info(p))
        except RunError as exc:
            runs.append({"run": str(p), "status": "unreadable", "error": str(exc)})
    if not args.json:
        if not runs:
            print(f"no runs under {root}")
        for r in runs:
            if "counts" in r:
                c = r["counts"]
                print(f"{r['run']}  {r['status']:<9} {r['strategy']} ({r['profile']} profile)  generation {r['generation']}/{r['generations']}  "
                      f"{c['done']} done, {c['failed']} failed, {c['queued'] + c['running']} waiting")
            else:
                print(f"{r['run']}  {r['status']}  {r['error']}")
    return {"runs": runs}


def _fold_needs_splits(args) -> None:
    if args.fold is not None and not args.splits:
        raise ConfigError("--fold needs --splits FILE (the split file whose fold to use)")


def _retrain(args) -> dict:
    import dataclasses

    from engine.cli._common import cancel_on_interrupt
    from engine.run.jobs import RetrainRequest, retrain
    from engine.run.retrain import retrain_epochs

    _fold_needs_splits(args)
    request = RetrainRequest(str(args.run), int(args.candidate), str(args.out), epochs=args.epochs, device=args.device,
                             splits=None if args.splits is None else str(args.splits), fold=args.fold)
    with progress_bar(retrain_epochs(args.run, args.epochs), f"retraining candidate {args.candidate}") as bar, \
            cancel_on_interrupt() as control:

        def on_progress(p) -> None:
            if p.stage == "epoch":
                bar.update(1)
                if p.values and "train_loss" in p.values:
                    bar.set_postfix_str(f"loss {p.values['train_loss']:.3f}")

        result = dataclasses.asdict(retrain(request, on_progress, control))
    if not args.json:
        print(f"retrained candidate {args.candidate} for {result['epochs']} epochs: f1 {result['f1']:.4f}, "
              f"dice {result['dice']} -> {args.out}")
    return result


def _report(args) -> dict:
    from engine.run.report import write_report

    _fold_needs_splits(args)
    quiet = args.json
    result = write_report(args.run, args.out, device=args.device, family=not args.no_family,
                          splits=args.splits, fold=args.fold, family_widths=args.family_widths,
                          family_depths=args.family_depths, family_budgets=args.family_budgets,
                          progress=None if quiet else (lambda text: print(text, file=sys.stderr, flush=True)))
    if not args.json:
        for k in ("profile", "metrics_csv", "summary_csv", "figure_svg", "figure_png", "fronts_svg", "fronts_png"):
            print(f"{k:<12} {result[k]}")
        for m in result["models"]:
            print(f"{m['model']:<22} test Dice {m['test_dice']:.4f}  {m['parameters']:>10,} parameters  "
                  f"{m['cpu_ms']:9.1f} ms CPU")
        for line in result["comparison"]["verdict"]:
            print(line)
        print(f"report made in {result['report_seconds']:.0f} s")
    return result


def _split_args(p) -> None:
    p.add_argument("--splits", metavar="FILE", help="split file: nnU-Net's splits_final.json (with --fold) or "
                   "{\"train\": [...], \"val\": [...], \"test\": [...]} of case ids")
    p.add_argument("--fold", type=int, default=None, help="fold of a splits_final.json (default 0)")


def register(sub) -> None:
    p = subcommand(sub, "search", _search, "search the Pareto front of accurate and small networks for a dataset")
    p.add_argument("--dataset", help="dataset folder, or demo")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--config", help="search config TOML (see resources/default_search.toml)")
    p.add_argument("--population", type=int, help="genomes per generation (N subproblems)")
    p.add_argument("--generations", type=int, help="generations, counting the initial one")
    p.add_argument("--epochs", type=int, help="maximum training epochs per candidate")
    p.add_argument("--strategy", choices=("samea", "moead", "random"))
    p.add_argument("--executor", choices=("inprocess", "local", "ray"))
    p.add_argument("--workers", type=int, help="candidates trained at once")
    p.add_argument("--ray-address", help="Ray cluster address (default: a local Ray)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--patch", help="training patch X,Y,Z (default: the plan's)")
    p.add_argument("--profile", choices=PROFILE_NAMES,
                   help="paper: the authors' protocol (docs/paper_profile.md); default: this project's; "
                        "keys the config sets explicitly win")
    p.add_argument("--objective", choices=("parameters", "flops", "latency"),
                   help="second objective: parameter count (default), inference FLOPs or measured latency")
    p.add_argument("--latency-target", choices=("cpu", "cuda"), help="where latency is measured (default cpu)")
    p.add_argument("--max-parameters", type=count_arg, help="never train networks with more parameters (100000 or 1e5)")
    p.add_argument("--max-latency-ms", type=float, help="never train networks slower than this (ms)")
    p.add_argument("--estimate", action="store_true",
                   help="print the expected wall time (a short calibration, cached) and exit without searching")
    p.add_argument("--recalibrate", action="store_true", help="with --estimate: calibrate again, ignoring the cache")
    _split_args(p)

    p = subcommand(sub, "resume", _resume, "continue a stopped or killed search run")
    p.add_argument("run", help="run directory")

    p = subcommand(sub, "front", _front, "the Pareto-optimal candidates of a run")
    p.add_argument("run", help="run directory")

    p = subcommand(sub, "runs", _runs, "the runs found in a folder, with status and progress")
    p.add_argument("dir", nargs="?", default=".", help="folder to look in (default: here)")

    p = subcommand(sub, "retrain", _retrain, "train a run's candidate from scratch on the training and validation cases")
    p.add_argument("run", help="run directory")
    p.add_argument("--candidate", type=int, required=True, help="candidate id (see emonas front)")
    p.add_argument("--epochs", type=int, help="epochs (default: the search's)")
    p.add_argument("--out", required=True, help="training folder to write")
    p.add_argument("--device", default="auto")
    _split_args(p)

    p = subcommand(sub, "report", _report, "test-split metrics of the front against a U-Net family, with figures")
    p.add_argument("run", help="run directory")
    p.add_argument("--out", required=True, help="folder for the CSV files and figures")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-family", "--no-baseline", dest="no_family", action="store_true",
                   help="skip training the U-Net family (the front alone)")
    p.add_argument("--family-widths", metavar="W,W,...", help="first-level widths of the U-Nets (default 4,8,16,32)")
    p.add_argument("--family-depths", metavar="D,D,...", help="poolings of the U-Nets (default: every depth the plan allows)")
    p.add_argument("--family-budgets", metavar="epochs,time",
                   help="epochs: the candidates' epochs; time: the median candidate's wall time (default both)")
    _split_args(p)
