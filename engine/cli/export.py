"""``emonas export``: package a trained network as a self-contained model folder."""

from __future__ import annotations

import sys
from pathlib import Path

from engine.cli._common import cancel_on_interrupt, record_bar, subcommand
from engine.errors import ConfigError


def _run(args) -> dict:
    from engine.export.package import FORMAT_FILES, parse_formats
    from engine.run.jobs import ExportRequest, export

    formats = parse_formats(args.format)
    request = ExportRequest(out_dir=str(args.out), run_dir=None if args.run is None else str(args.run),
                            candidate_id=None if args.candidate is None else _candidate_id(args.candidate),
                            checkpoint=None if args.checkpoint is None else str(args.checkpoint),
                            formats=tuple(formats), retrain=bool(args.retrain), epochs=args.epochs,
                            dataset=args.dataset, overwrite=bool(args.force), device=args.device)
    if args.retrain and not request.run_dir:
        raise ConfigError("--retrain needs RUN --candidate ID")
    if args.epochs is not None and not args.retrain:
        raise ConfigError("--epochs goes with --retrain")
    def started(p) -> None:  # a long job says it started
        if p.stage == "stage" and p.job == "retrain" and not args.json:
            print(p.text, file=sys.stderr, flush=True)

    with record_bar("epoch", f"retraining candidate {args.candidate}", started) as progress, \
            cancel_on_interrupt() as control:
        result = export(request, progress, control)
    meta = result.meta
    source = str(args.checkpoint) if args.checkpoint else f"{args.run} candidate {args.candidate}"
    out = Path(args.out)
    files = {name: str(out / name) for name in meta["files"]}
    if not args.json:
        print(f"exported {source} to {out}")
        for name in sorted(meta["files"]):
            print(f"  {name:14s} {meta['files'][name]['bytes']:>10,d} bytes  sha256 {meta['files'][name]['sha256'][:16]}...")
        print(f"  parameters     {meta['architecture']['parameters']:,}")
    return {
        "model_dir": str(out),
        "formats": list(formats),
        "files": files,
        "parameters": meta["architecture"]["parameters"],
        "labels": meta["labels"],
        "genome": meta["genome"],
        "onnx_vs_torch_max_abs_logit_diff": (meta.get("export_check") or {}).get("onnx_vs_torch_max_abs_logit_diff"),
        "candidate": meta.get("candidate"),
        "retrained_in": result.retrained_in,
        "format_files": {f: FORMAT_FILES[f] for f in formats},
    }


def _candidate_id(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--candidate must be a candidate id (an integer), got {text!r}") from None


def register(sub) -> None:
    p = subcommand(sub, "export", _run, "export a trained network as a model folder (ONNX, TorchScript, model.json, model card)")
    p.add_argument("run", nargs="?", help="run directory of a search (with --candidate)")
    p.add_argument("--candidate", help="candidate id in RUN to export")
    p.add_argument("--checkpoint", help="training folder written by `emonas train` or `emonas retrain`")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--format", default="onnx,torchscript",
                   help="comma-separated formats: onnx, torchscript, pt2 (torch.export); default onnx,torchscript")
    p.add_argument("--dataset", default=None, metavar="DIR",
                   help="dataset folder whose dataset.json / labels.json gives label_codes and label_colors "
                        "(default: the run's dataset)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty --out folder")
    p.add_argument("--retrain", action="store_true",
                   help="train the candidate from scratch on the training and validation cases first (the final "
                        "model; its training folder OUT.training is kept beside the model folder)")
    p.add_argument("--epochs", type=int, default=None, help="with --retrain: epochs (default: the run's budget)")
    p.add_argument("--device", default="cpu", help="device for retraining (cpu or cuda)")
