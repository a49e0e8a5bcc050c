"""``emonas predict``: label maps for new scans from a training folder or a model folder."""

from __future__ import annotations

from engine.cli._common import cancel_on_interrupt, device_arg, record_bar, subcommand
from engine.device import DEVICE_HELP


def _predict(args) -> dict:
    from engine.run.jobs import PredictRequest, predict

    request = PredictRequest(
        model=str(args.model), output=str(args.output), inputs=tuple(str(p) for p in args.inputs or ()),
        cases=tuple(tuple(p for p in group.split(",") if p) for group in args.case or ()), device=args.device,
        backend=args.backend, mirror=bool(args.mirror),
        keep_largest=None if args.keep_largest is None else args.keep_largest == "on",
        resume=bool(args.resume), save_probabilities=bool(args.save_probabilities))
    with record_bar("case", "predicting") as progress, cancel_on_interrupt() as control:
        result = predict(request, progress, control)  # Ctrl-C: stop after the case being written
    if not args.json:
        for case, path in zip(result.inputs, result.outputs):
            tables = result.color_tables[path]
            print(f"{case[0]} -> {path} (colour tables {_name(tables['slicer'])}, {_name(tables['itksnap'])})")
        for path in result.dicom_seg.values():
            print(f"DICOM-SEG -> {path}")
        if result.skipped:
            print(f"{len(result.skipped)} case(s) already complete in {args.output}, skipped: {', '.join(result.skipped)}")
    doc = result.to_dict()
    doc.pop("labels")
    return doc


def _name(path: str) -> str:
    from pathlib import Path

    return Path(path).name


def register(sub) -> None:
    p = subcommand(sub, "predict", _predict, "label maps for new scans, each written in its scan's geometry")
    p.add_argument("model", metavar="DIR", help="model folder (from emonas export) or training folder (from emonas train)")
    p.add_argument("inputs", metavar="INPUT", nargs="*",
                   help="scans (NIfTI, MetaImage, NRRD, or a DICOM folder) or folders of them: a folder's files group "
                        "into cases by nnU-Net's modality suffix (CASE_0000.nii.gz, CASE_0001.nii.gz ...); loose files "
                        "with several modalities: one path per modality, case after case")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR",
                   help="folder for the label maps, one CASE.nii.gz per case")
    p.add_argument("--device", type=device_arg, default="auto", help=f"{DEVICE_HELP} (default auto)")
    p.add_argument("--backend", choices=["onnxruntime", "torch"], default=None,
                   help="for a model folder: run model.onnx with ONNX Runtime (default) or the network with PyTorch")
    p.add_argument("--case", action="append", metavar="A,B", help="one case's scans, one per modality in the "
                   "model's order, comma-separated (repeatable)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="skip cases whose outputs in OUT_DIR exist and read back whole (resume an interrupted run)")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write CASE.npz: float16 'probabilities' (classes x the scan's grid); the label map "
                        "is their argmax")
    p.add_argument("--mirror", action="store_true", help="mirroring test-time augmentation along the axes the training mirrored "
                        "(2x slower per axis; `emonas check` shows them)")
    p.add_argument("--keep-largest", choices=["on", "off"], default=None,
                   help="keep the largest component per class (default: on for the paper profile)")
