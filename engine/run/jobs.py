"""The engine's long jobs, each a function with a typed request and result, for the CLI and the app.

Every job has the same call, ``job(request, callback, control) -> result``:

- ``request``: a frozen dataclass of plain data (paths as text), so it pickles into a child process;
- ``callback(JobProgress)``: progress records (a stage's text, and done/total where they are known);
- ``control.is_set()``: polled between steps (training steps included); a cancelled job raises
  :class:`JobCancelled`, leaving nothing half-written behind (a model folder is published only whole;
  a retraining folder the job created is removed; predicted cases already written are complete);
- the result: a dataclass of plain data (and numpy arrays for a case's images).

``JOBS`` names them for ``engine.run.child`` (a job run in a child process, cancellable and killable
without harm to its caller): ``search``, ``estimate``, ``export``, ``retrain``, ``evaluate_case``,
``predict``.
The CLI calls them in its own process; the app runs them in child processes (``ChildJob``).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.errors import EmonasError

log = logging.getLogger(__name__)

JOB_RECORD_VERSION = 1

Callback = Callable[["JobProgress"], None]


class JobCancelled(EmonasError):
    """A job stopped by its caller; the message says what was kept, ``result`` holds it where there is
    something whole to show (the cases a prediction had written)."""

    def __init__(self, message: str, result: Any = None):
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class JobProgress:
    """One progress record of a job: ``stage`` (stage, epoch, step, case), its text, done of total."""

    job: str
    stage: str
    text: str
    done: int | None = None
    total: int | None = None
    values: dict | None = None  # figures of the step, e.g. an epoch's train_loss

    @property
    def fraction(self) -> float | None:
        return None if not self.total or self.done is None else min(1.0, self.done / self.total)

    def to_dict(self) -> dict:
        # "event" keeps the key every engine event has (the app's log and progress bars read it)
        return {"event": self.stage, "job": self.job, "stage": self.stage, "text": self.text,
                "done": self.done, "total": self.total, "fraction": self.fraction,
                "values": dict(self.values or {}), "version": JOB_RECORD_VERSION}


def _say(callback: Callback | None, job: str, stage: str, text: str, done: int | None = None,
         total: int | None = None, values: dict | None = None) -> None:
    if callback is not None:
        callback(JobProgress(job, stage, text, done, total, values))


def _check(control, what: str) -> None:
    if control is not None and control.is_set():
        raise JobCancelled(f"{what} cancelled")


# ---- requests and results ---------------------------------------------------------------------
@dataclass(frozen=True)
class ExportRequest:
    """Export candidate ``candidate_id`` of ``run_dir`` (or the training folder ``checkpoint``) to ``out_dir``.

    ``retrain``: train the candidate from scratch on the training and validation cases first (into
    ``OUT.training`` beside the model folder, kept), for ``epochs`` (default: the run's budget).
    """

    out_dir: str
    run_dir: str | None = None
    candidate_id: int | None = None
    checkpoint: str | None = None
    formats: tuple[str, ...] = ("onnx", "torchscript")
    retrain: bool = False
    epochs: int | None = None
    dataset: str | None = None
    overwrite: bool = False
    device: str = "cpu"


@dataclass(frozen=True)
class ExportResult:
    model_dir: str
    meta: dict  # model.json's contents
    retrained_in: str | None = None

    @property
    def files(self) -> list[str]:
        return sorted(self.meta.get("files", {}))

    @property
    def parameters(self) -> int | None:
        return (self.meta.get("architecture") or {}).get("parameters")


@dataclass(frozen=True)
class RetrainRequest:
    """Train candidate ``candidate_id`` of ``run_dir`` from scratch into the training folder ``out_dir``."""

    run_dir: str
    candidate_id: int
    out_dir: str
    epochs: int | None = None
    device: str = "auto"
    splits: str | None = None
    fold: int | None = None


@dataclass(frozen=True)
class RetrainResult:
    candidate: int
    out: str
    epochs: int
    f1: float
    dice: dict
    parameters: int
    seconds: float
    genome: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EvaluateCaseRequest:
    """Run candidates ``candidate_ids`` of ``run_dir`` on one of its validation cases, scored in millimetres."""

    run_dir: str
    candidate_ids: tuple[int, ...]
    case_id: str


@dataclass(frozen=True)
class EvaluateCaseResult:
    """The scan as stored (C, X, Y, Z), its reference and each candidate's label map on the scan's grid,
    and each candidate's metrics ``{name: {"dice", "hd", "hd95", "asd"}}``."""

    case_id: str
    modalities: list
    image: Any = None
    spacing: tuple = ()
    reference: Any = None
    labels: dict = field(default_factory=dict)
    predictions: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PredictRequest:
    """Segment scans with a model folder (``emonas export``) or a training folder.

    ``inputs``: scans or folders of them (nnU-Net's CASE_XXXX files, DICOM series); ``cases``: explicit
    groups, one path per modality. Label maps go to ``output`` as CASE.nii.gz with colour tables
    (and DICOM-SEG for DICOM inputs); ``resume`` skips cases whose outputs read back whole.
    """

    model: str
    output: str
    inputs: tuple[str, ...] = ()
    cases: tuple[tuple[str, ...], ...] = ()
    device: str = "auto"
    backend: str | None = None
    mirror: bool = False
    keep_largest: bool | None = None
    resume: bool = False
    save_probabilities: bool = False


@dataclass(frozen=True)
class PredictResult:
    outputs: list
    inputs: list
    cases: list
    skipped: list
    labels: dict
    color_tables: dict
    dicom_seg: dict
    backend: str
    model_folder: bool
    device: str
    probabilities: list | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["probabilities"] is None:
            d.pop("probabilities")
        return d


# ---- the jobs ---------------------------------------------------------------------------------
def search(run_dir: str, config: dict | None, callback: Callable[[Any], None] | None = None, control=None) -> dict:
    """Run a new search (``config``, a SearchConfig as a dict) or resume the run in ``run_dir`` (None)."""
    from engine.config import SearchConfig
    from engine.run.session import SearchSession

    if config is not None:
        session = SearchSession(Path(run_dir), SearchConfig.from_dict(config))
    else:
        session = SearchSession.open(Path(run_dir))
    return session.run(callback=callback, cancel=control)


def estimate(config: dict, callback: Callable[[Any], None] | None = None, control=None):
    """The expected wall time of a search (``config``, a SearchConfig as a dict): ``SearchEstimate``.
    Runs a short calibration (real training steps) unless one is cached for this device and plan."""
    from engine.config import SearchConfig
    from engine.run.session import estimate_search

    return estimate_search(SearchConfig.from_dict(config), count_start=True)  # a child, as the search will be


def retrain(request: RetrainRequest, callback: Callback | None = None, control=None) -> RetrainResult:
    """Train a run's candidate from scratch on its training and validation cases (the final model)."""
    from engine.run.retrain import retrain_epochs, train_final_model

    total = retrain_epochs(request.run_dir, request.epochs)
    cid = int(request.candidate_id)

    def progress(ev: dict) -> None:  # the trainer's events, with the total for a progress bar
        if ev.get("event") == "epoch":
            _say(callback, "retrain", "epoch", f"retraining candidate {cid}: epoch {int(ev['epoch'])} of {total} done",
                 int(ev["epoch"]), total, {k: ev[k] for k in ("train_loss", "val_loss", "val_dice") if k in ev})
        elif ev.get("event") == "step":
            _say(callback, "retrain", "step", f"retraining candidate {cid}: epoch {ev['epoch']} of {total}, "
                 f"step {ev['step']} of {ev['steps']}", int(ev["epoch"]) - 1, total)

    _say(callback, "retrain", "stage", f"retraining candidate {cid} on the training and validation cases", 0, total)
    try:
        out = train_final_model(request.run_dir, cid, request.out_dir, epochs=request.epochs, device=request.device,
                                callback=progress, cancel=control, splits=request.splits, fold=request.fold)
    except EmonasError:
        _check(control, f"retraining of candidate {cid}")
        raise
    _check(control, f"retraining of candidate {cid}")
    return RetrainResult(candidate=out["candidate"], out=out["out"], epochs=out["epochs"], f1=out["f1"],
                         dice=dict(out["dice"] or {}), parameters=out["parameters"], seconds=out["seconds"],
                         genome=out["genome"])


def export(request: ExportRequest, callback: Callback | None = None, control=None) -> ExportResult:
    """Export a candidate (optionally retrained first) or a training folder as a model folder."""
    from engine.errors import ConfigError
    from engine.export.package import export_model, parse_formats
    from engine.run.export import export_candidate
    from engine.outputs import check_output, run_sources

    formats = parse_formats(request.formats)
    out = Path(request.out_dir)
    if request.checkpoint and (request.run_dir or request.candidate_id is not None):
        raise ConfigError("give either RUN --candidate ID or --checkpoint DIR, not both")
    if request.checkpoint:
        _say(callback, "export", "stage", f"exporting {request.checkpoint}")
        meta = export_model(request.checkpoint, out, formats, overwrite=request.overwrite, dataset=request.dataset)
        return ExportResult(str(out), meta)
    if not request.run_dir or request.candidate_id is None:
        raise ConfigError("give RUN --candidate ID (a candidate of a search) or --checkpoint DIR (a training folder)")
    run_dir, cid = request.run_dir, int(request.candidate_id)
    check_output(out, run_sources(run_dir), option="output folder")  # never into the run, before any work
    if not request.retrain:
        _say(callback, "export", "stage", f"exporting candidate {cid}")
        meta = export_candidate(run_dir, cid, out, formats, overwrite=request.overwrite, device=request.device,
                                dataset=request.dataset)
        return ExportResult(str(out), meta)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not request.overwrite:
        from engine.errors import ExportError  # said before minutes of retraining, not after

        raise ExportError(f"{out}: already exists and is not empty (choose another --out)")
    training = out.parent / f"{out.name}.training"
    check_output(training, run_sources(run_dir), option="retraining folder")
    created = not training.exists()
    try:
        retrain(RetrainRequest(run_dir, cid, str(training), epochs=request.epochs, device=request.device),
                callback, control)
    except JobCancelled:
        if created:  # an incomplete training folder this job made is of no use to anyone
            shutil.rmtree(training, ignore_errors=True)
        raise JobCancelled(f"export of candidate {cid} cancelled during its retraining; nothing was written") from None
    _say(callback, "export", "stage", "exporting the retrained network")
    meta = export_model(training, out, formats, overwrite=request.overwrite, dataset=request.dataset,
                        sources=run_sources(run_dir))
    return ExportResult(str(out), meta, retrained_in=str(training))


def run_dataset_ref(meta: dict) -> str:
    """The dataset a run searched on (a folder or "demo"), from its database's meta."""
    data = (meta.get("problem") or {}).get("data") or {}
    return str(data.get("dataset") or (meta.get("config") or {}).get("dataset") or "demo")


def validation_cases(run_dir: str | Path) -> tuple[str, list[str]]:
    """(dataset reference, validation case ids) of a run; its test cases are never offered. File reads only."""
    from engine.run.store import RunStore

    store = RunStore.open_readonly(run_dir)
    try:
        meta = store.meta()
    finally:
        store.close()
    ref = run_dataset_ref(meta)
    split = ((meta.get("problem") or {}).get("data") or {}).get("split")
    if isinstance(split, dict) and split.get("val"):
        return ref, [str(c) for c in split["val"]]
    from engine.data import open_dataset

    seed = int(((meta.get("problem") or {}).get("data") or {}).get("seed", (meta.get("config") or {}).get("seed", 0)))
    return ref, list(open_dataset(ref).split(seed).val)


def evaluate_case(request: EvaluateCaseRequest, callback: Callback | None = None, control=None) -> EvaluateCaseResult:
    """Run candidates on one validation case as ``emonas predict`` does, scored as the report scores:
    labels mapped back onto the scan's own grid, compared with the original reference file in world
    space (``engine.run.scoring``)."""
    from engine.data import open_dataset
    from engine.data.io import affine_spacing
    from engine.data.layouts import split_ignore
    from engine.data.validate import read_case_images
    from engine.infer.metrics import in_one_frame
    from engine.infer.predictor import Predictor
    from engine.run.scoring import load_scan_case, predict_in_scan, score_in_scan
    from engine.run.store import RunStore

    case_id = request.case_id
    store = RunStore.open_readonly(request.run_dir)
    try:
        ref = run_dataset_ref(store.meta())
        folders = {int(c): store.candidate_dir(int(c)) for c in request.candidate_ids}
    finally:
        store.close()
    _say(callback, "evaluate_case", "stage", f"reading case {case_id}", 0, len(folders))
    dataset = open_dataset(ref)
    _, ignore = split_ignore(dict(dataset.labels))
    out: dict[str, Any] = {"case_id": case_id, "predictions": {}, "metrics": {}, "modalities": list(dataset.modalities)}
    case = None
    for i, (cid, folder) in enumerate(folders.items()):
        _check(control, f"segmenting case {case_id}")
        _say(callback, "evaluate_case", "case", f"candidate {cid}: loading", i, len(folders))
        predictor = Predictor.from_training_folder(folder)
        if case is None:
            case = load_scan_case(dataset.case(case_id), predictor.plan)
            scan = read_case_images(dataset.case(case_id))
            # the reference as stored, brought onto the scan's grid for display (flips and axis order)
            shown, _, _ = in_one_frame(case.reference_image, scan, case.reference, scan.array[0])
            out.update(image=scan.array, spacing=tuple(affine_spacing(scan.affine)), reference=shown,
                       labels=dict(predictor.labels))
        _check(control, f"segmenting case {case_id}")
        _say(callback, "evaluate_case", "case", f"candidate {cid}: predicting", i, len(folders))
        pred = predict_in_scan(predictor, case)
        out["predictions"][cid] = pred
        fg = {n: k for n, k in out["labels"].items() if k > 0}
        out["metrics"][cid] = score_in_scan(pred, case, fg, ignore)
    _say(callback, "evaluate_case", "stage", "done", len(folders), len(folders))
    return EvaluateCaseResult(**out)


def predict(request: PredictRequest, callback: Callback | None = None, control=None) -> PredictResult:
    """Label maps for new scans, each written in its scan's geometry, with colour tables."""
    from engine.errors import ConfigError
    from engine.export.package import is_model_folder

    options: dict[str, Any] = {"mirror": True} if request.mirror else {}
    if request.keep_largest is not None:
        options["keep_largest"] = bool(request.keep_largest)
    exported = is_model_folder(request.model)
    backend = request.backend or ("onnxruntime" if exported else "torch")
    if not exported and backend != "torch":
        raise ConfigError(f"{request.model}: --backend {backend} needs a model folder from `emonas export`")
    if not request.inputs and not request.cases:
        raise ConfigError("give the scans to segment (INPUT... or --case a.nii.gz,b.nii.gz)")
    modalities = declared_modalities(request.model)
    n = max(1, len(modalities))
    for group in request.cases:
        if len(group) != n:
            raise ConfigError(f"--case {','.join(group)}: the model expects {len(modalities)} modalities "
                              f"({', '.join(modalities)}), in that order")
    # PyTorch and the readers load only once the request is known to be sound: a wrong path is said at once
    from engine.data.labels import resolve_label_info, write_colour_tables
    from engine.export.deploy import load_model, write_case_dicom_segs
    from engine.infer.folder import check_prediction_outputs, gather_cases, output_complete, probability_path
    from engine.infer.predictor import Predictor

    # the model is verified first (a tampered folder is named before any scan is read), then every
    # output is checked against every input before anything is written
    if exported:  # a model folder from `emonas export`: verified, run by ONNX Runtime or PyTorch
        model = load_model(request.model, backend=backend, device=request.device)
        predictor = model.predictor(**options)
        label_info = model.label_info()
    else:
        predictor = Predictor.from_training_folder(request.model, device=request.device, **options)
        label_info = resolve_label_info(predictor.labels)
    named = gather_cases(list(request.inputs), n, [list(g) for g in request.cases])
    check_prediction_outputs([paths for _, paths in named], request.output, request.model,
                             names=[cid for cid, _ in named],
                             probabilities=request.save_probabilities)
    out = Path(request.output)
    skipped, todo = [], named
    if request.resume:  # cases whose outputs read back whole are left as they are
        todo = []
        for cid, paths in named:
            done = output_complete(out / f"{cid}.nii.gz", paths[0], predictor.num_classes, request.save_probabilities)
            (skipped if done else todo).append((cid, paths))
    written: list[Path] = []
    cancelled = False
    for i, (cid, paths) in enumerate(todo):
        if control is not None and control.is_set():
            cancelled = True
            break
        _say(callback, "predict", "case", f"segmenting {cid}", i, len(todo))
        written.extend(predictor.predict_files([paths], out, names=[cid], save_probabilities=request.save_probabilities))
    total, todo = len(todo), todo[:len(written)]
    cases = [paths for _, paths in todo]
    tables = [write_colour_tables(path, predictor.labels, label_info["label_colors"]) for path in written]
    segs = write_case_dicom_segs(cases, written, out, predictor.labels, label_info)
    _say(callback, "predict", "stage", "cancelled" if cancelled else "done", len(todo), total)
    result = PredictResult(
        outputs=[str(p) for p in written], inputs=[[str(p) for p in c] for c in cases],
        cases=[cid for cid, _ in todo], skipped=[cid for cid, _ in skipped], labels=dict(predictor.labels),
        color_tables={str(p): {"slicer": str(t[0]), "itksnap": str(t[1])} for p, t in zip(written, tables)},
        dicom_seg={str(k): str(v) for k, v in segs.items()}, backend=backend, model_folder=exported,
        device=str(predictor.device),
        probabilities=[str(probability_path(p)) for p in written] if request.save_probabilities else None)
    if cancelled:
        raise JobCancelled(f"prediction cancelled after {len(written)} of {total} cases (those written are complete; "
                           "--continue resumes)", result)
    return result


def declared_modalities(folder: str | Path) -> list[str]:
    """The modalities a model or training folder declares (model.json or training.json), read
    without loading the network; loading it verifies everything else."""
    import json

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


#: the jobs a child process may run, by name (the caller names one; nothing else is unpickled there)
JOBS: dict[str, Callable[..., Any]] = {
    "search": search, "estimate": estimate, "export": export, "retrain": retrain, "evaluate_case": evaluate_case,
    "predict": predict,
}
