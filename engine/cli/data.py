"""``emonas check`` and ``emonas demo-data``: inspect a dataset, write out the demo dataset."""

from __future__ import annotations

import sys

from engine.cli._common import progress_bar, subcommand


def _check(args) -> dict:
    from engine.data.check import check_dataset, format_report

    with progress_bar(None, "checking cases") as bar:
        def progress(done: int, total: int, case_id: str) -> None:
            bar.total = total
            bar.update(1)

        report = check_dataset(args.dataset, skip_bad=args.skip_bad, progress=progress)
    if not args.json:
        print(format_report(report))
    for p in report["problems"]:
        if p["fatal"] and not report["ok"]:
            sys.stderr.write(f"emonas: error: {p['path']}: {p['message']}\n")
        elif p["fatal"]:  # --skip-bad and enough cases remain
            sys.stderr.write(f"emonas: warning: skipped: {p['path']}: {p['message']}\n")
        else:
            sys.stderr.write(f"emonas: warning: {p['path']}: {p['message']}\n")
    sys.stderr.flush()
    report["_exit_code"] = 0 if report["ok"] else 2
    return report


def _demo_data(args) -> dict:
    from engine.data.dataset import open_dataset
    from engine.data.demo import write_demo_dataset

    out = write_demo_dataset(args.out_dir, kind=args.kind)
    ds = open_dataset(out)
    if not args.json:
        print(f"wrote the {args.kind} demo dataset ({len(ds.cases)} cases, labels {', '.join(ds.labels)}) to {out}")
    return {"path": str(out), "layout": ds.layout, "n_cases": len(ds.cases), "labels": ds.labels,
            "modalities": ds.modalities}


def register(sub) -> None:
    p = subcommand(sub, "check", _check,
                   "check a dataset: layout, every voxel of every case, problems, and the plan it would use")
    p.add_argument("dataset", help="dataset folder (MSD, nnU-Net v2, ACDC, PROMISE12, images/ + labels/), 'demo' or 'demo-hippocampus'")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave broken cases out; exit 0 if enough usable cases remain")
    p = subcommand(sub, "demo-data", _demo_data, "write the built-in demo dataset (MSD layout) to a folder")
    p.add_argument("out_dir", metavar="OUT_DIR", help="new or empty folder")
    p.add_argument("--kind", choices=("brain", "hippocampus"), default="brain",
                   help="brain: tissue classes at ~3.5 mm (the default); hippocampus: anterior/posterior "
                        "hippocampus at 1 mm, shaped like the Decathlon's Task04 (50 cases)")
