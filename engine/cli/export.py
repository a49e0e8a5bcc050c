"""``emonas export``: package a trained network as a self-contained model folder."""

from __future__ import annotations

from pathlib import Path

from engine.cli._common import subcommand
from engine.errors import ConfigError


def _run(args) -> dict:
    from engine.export.package import FORMAT_FILES, export_model, parse_formats

    formats = parse_formats(args.format)
    if args.checkpoint and (args.run or args.candidate is not None):
        raise ConfigError("give either RUN --candidate ID or --checkpoint DIR, not both")
    if args.checkpoint:
        meta = export_model(args.checkpoint, args.out, formats, overwrite=args.force, dataset=args.dataset)
        source = str(args.checkpoint)
    else:
        if not args.run or args.candidate is None:
            raise ConfigError("give RUN --candidate ID (a candidate of a search) or --checkpoint DIR (a training folder)")
        from engine.run.export import export_candidate

        meta = export_candidate(args.run, args.candidate, args.out, formats, overwrite=args.force,
                                device=args.device, dataset=args.dataset)
        source = f"{args.run} candidate {args.candidate}"
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
        "format_files": {f: FORMAT_FILES[f] for f in formats},
    }


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
    p.add_argument("--device", default="cpu", help="device for retraining a pruned candidate (cpu or cuda)")
