"""``emonas predict``: label maps for new scans from a training folder."""

from __future__ import annotations

from engine.cli._common import progress_bar, subcommand


def _predict(args) -> dict:
    from engine.errors import ConfigError
    from engine.export.deploy import load_model, write_case_dicom_segs
    from engine.export.labels import resolve_label_info, write_colour_tables
    from engine.export.package import is_model_folder
    from engine.infer.folder import case_inputs
    from engine.infer.predictor import Predictor

    options = {"mirror": args.mirror} if args.mirror else {}
    if args.keep_largest is not None:
        options["keep_largest"] = args.keep_largest == "on"
    exported = is_model_folder(args.model)
    backend = args.backend or ("onnxruntime" if exported else "torch")
    if exported:  # a model folder from `emonas export`: verified, run by ONNX Runtime or PyTorch
        model = load_model(args.model, backend=backend, device=args.device)
        predictor = model.predictor(**options)
        label_info = model.label_info()
    else:
        if backend != "torch":
            raise ConfigError(f"{args.model}: --backend {backend} needs a model folder from `emonas export`")
        predictor = Predictor.from_training_folder(args.model, device=args.device, **options)
        label_info = resolve_label_info(predictor.labels)
    if not args.inputs and not args.case:
        raise ConfigError("give the scans to segment (INPUT... or --case a.nii.gz,b.nii.gz)")
    cases = case_inputs(args.inputs, len(predictor.modalities)) if args.inputs else []
    for group in args.case or []:
        paths = [p for p in group.split(",") if p]
        if len(paths) != max(1, len(predictor.modalities)):
            raise ConfigError(f"--case {group}: the model expects {len(predictor.modalities)} modalities "
                              f"({', '.join(predictor.modalities)}), in that order")
        cases += case_inputs(paths, len(paths))
    with progress_bar(len(cases), "predicting") as bar:
        written = predictor.predict_files(cases, args.output, progress=lambda i, n: bar.update(1))
    tables = [write_colour_tables(path, predictor.labels, label_info["label_colors"]) for path in written]
    segs = write_case_dicom_segs(cases, written, args.output, predictor.labels, label_info)
    if not args.json:
        for case, path, (slicer, itk) in zip(cases, written, tables):
            print(f"{case[0]} -> {path} (colour tables {slicer.name}, {itk.name})")
        for path in segs.values():
            print(f"DICOM-SEG -> {path}")
    return {"outputs": [str(p) for p in written], "inputs": [[str(p) for p in c] for c in cases],
            "color_tables": {str(p): {"slicer": str(t[0]), "itksnap": str(t[1])} for p, t in zip(written, tables)},
            "dicom_seg": {str(k): str(v) for k, v in segs.items()},
            "backend": backend, "model_folder": exported}


def register(sub) -> None:
    p = subcommand(sub, "predict", _predict, "label maps for new scans, each written in its scan's geometry")
    p.add_argument("model", metavar="DIR", help="model folder (from emonas export) or training folder (from emonas train)")
    p.add_argument("inputs", metavar="INPUT", nargs="*",
                   help="scans (NIfTI, MetaImage, NRRD, or a DICOM folder); with several modalities, one path per modality, case after case")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the label maps (named like the inputs)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="device (default cpu)")
    p.add_argument("--backend", choices=["onnxruntime", "torch"], default=None,
                   help="for a model folder: run model.onnx with ONNX Runtime (default) or the network with PyTorch")
    p.add_argument("--case", action="append", metavar="A,B", help="one case's scans, one per modality in the "
                   "model's order, comma-separated (repeatable)")
    p.add_argument("--mirror", action="store_true", help="mirroring test-time augmentation (8x slower)")
    p.add_argument("--keep-largest", choices=["on", "off"], default=None,
                   help="keep the largest component per class (default: on for the paper profile)")
