"""``emonas predict``: label maps for new scans from a training folder or a model folder."""

from __future__ import annotations

from pathlib import Path

from engine.cli._common import device_arg, progress_bar, subcommand
from engine.device import DEVICE_HELP


def _predict(args) -> dict:
    from engine.errors import ConfigError
    from engine.export.package import is_model_folder
    from engine.infer.folder import check_prediction_outputs

    options = {"mirror": args.mirror} if args.mirror else {}
    if args.keep_largest is not None:
        options["keep_largest"] = args.keep_largest == "on"
    exported = is_model_folder(args.model)
    backend = args.backend or ("onnxruntime" if exported else "torch")
    if not exported and backend != "torch":
        raise ConfigError(f"{args.model}: --backend {backend} needs a model folder from `emonas export`")
    if not args.inputs and not args.case:
        raise ConfigError("give the scans to segment (INPUT... or --case a.nii.gz,b.nii.gz)")
    modalities = _declared_modalities(args.model)
    n = max(1, len(modalities))
    groups = []
    for group in args.case or []:
        paths = [p for p in group.split(",") if p]
        if len(paths) != n:
            raise ConfigError(f"--case {group}: the model expects {len(modalities)} modalities "
                              f"({', '.join(modalities)}), in that order")
        groups.append(paths)
    from engine.infer.folder import gather_cases, output_complete, probability_path

    named = gather_cases(args.inputs or [], n, groups)  # folders: nnU-Net's CASE_XXXX files, DICOM series
    check_prediction_outputs([paths for _, paths in named], args.output, args.model, names=[cid for cid, _ in named],
                             probabilities=args.save_probabilities)  # before the model is even loaded

    from engine.export.deploy import load_model, write_case_dicom_segs
    from engine.data.labels import resolve_label_info, write_colour_tables
    from engine.infer.predictor import Predictor

    if exported:  # a model folder from `emonas export`: verified, run by ONNX Runtime or PyTorch
        model = load_model(args.model, backend=backend, device=args.device)
        predictor = model.predictor(**options)
        label_info = model.label_info()
    else:
        predictor = Predictor.from_training_folder(args.model, device=args.device, **options)
        label_info = resolve_label_info(predictor.labels)
    out = Path(args.output)
    skipped, todo = [], named
    if args.resume:  # cases whose outputs read back whole are left as they are
        todo = []
        for cid, paths in named:
            done = output_complete(out / f"{cid}.nii.gz", paths[0], predictor.num_classes, args.save_probabilities)
            (skipped if done else todo).append((cid, paths))
    cases = [paths for _, paths in todo]
    with progress_bar(len(cases), "predicting") as bar:
        written = predictor.predict_files(cases, args.output, progress=lambda i, n: bar.update(1),
                                          names=[cid for cid, _ in todo], save_probabilities=args.save_probabilities)
    tables = [write_colour_tables(path, predictor.labels, label_info["label_colors"]) for path in written]
    segs = write_case_dicom_segs(cases, written, args.output, predictor.labels, label_info)
    if not args.json:
        for case, path, (slicer, itk) in zip(cases, written, tables):
            print(f"{case[0]} -> {path} (colour tables {slicer.name}, {itk.name})")
        for path in segs.values():
            print(f"DICOM-SEG -> {path}")
        if skipped:
            print(f"{len(skipped)} case(s) already complete in {out}, skipped: {', '.join(c for c, _ in skipped)}")
    result = {"outputs": [str(p) for p in written], "inputs": [[str(p) for p in c] for c in cases],
              "cases": [cid for cid, _ in todo], "skipped": [cid for cid, _ in skipped],
              "color_tables": {str(p): {"slicer": str(t[0]), "itksnap": str(t[1])} for p, t in zip(written, tables)},
              "dicom_seg": {str(k): str(v) for k, v in segs.items()},
              "backend": backend, "model_folder": exported, "device": str(predictor.device)}
    if args.save_probabilities:
        result["probabilities"] = [str(probability_path(p)) for p in written]
    return result


def _declared_modalities(folder) -> list[str]:
    """The modalities a model or training folder declares (model.json or training.json), read
    without loading the network; loading it verifies everything else."""
    import json
    from pathlib import Path

    from engine.errors import DataError

    for name in ("model.json", "training.json"):
        path = Path(folder) / name
        if path.is_file():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                return [str(m) for m in (doc.get("modalities") or [])]
            except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError) as exc:
                raise DataError(path, f"cannot read ({type(exc).__name__})") from None
    raise DataError(folder, "not a model folder (emonas export) or training folder (emonas train)")


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
