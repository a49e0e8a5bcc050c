"""``emonas predict``: label maps for new scans from a training folder."""

from __future__ import annotations

from engine.cli._common import progress_bar, subcommand


def _predict(args) -> dict:
    from engine.infer.folder import case_inputs
    from engine.infer.predictor import Predictor

    options = {"mirror": args.mirror}
    if args.keep_largest is not None:
        options["keep_largest"] = args.keep_largest == "on"
    predictor = Predictor.from_training_folder(args.model, device=args.device, **options)
    cases = case_inputs(args.inputs, len(predictor.modalities))
    with progress_bar(len(cases), "predicting") as bar:
        written = predictor.predict_files(cases, args.output, progress=lambda i, n: bar.update(1))
    if not args.json:
        for case, path in zip(cases, written):
            print(f"{case[0]} -> {path}")
    return {"outputs": [str(p) for p in written], "inputs": [[str(p) for p in c] for c in cases]}


def register(sub) -> None:
    p = subcommand(sub, "predict", _predict, "label maps for new scans, each written in its scan's geometry")
    p.add_argument("model", metavar="DIR", help="training folder (from emonas train)")
    p.add_argument("inputs", metavar="INPUT", nargs="+",
                   help="scans (NIfTI, MetaImage, NRRD, or a DICOM folder); with several modalities, one path per modality, case after case")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the label maps (named like the inputs)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="device (default cpu)")
    p.add_argument("--mirror", action="store_true", help="mirroring test-time augmentation (8x slower)")
    p.add_argument("--keep-largest", choices=["on", "off"], default=None,
                   help="keep the largest component per class (default: on for the paper profile)")
