"""Qt adapters over long engine jobs: plain engine callbacks in, queued Qt signals out.

The engine knows nothing of Qt: its long jobs take ``callback(event: dict)`` and a ``cancel`` object
with ``is_set()``. ``EngineJob`` runs such a job in its own ``QThread`` and turns

- each callback event (a dict, or a dataclass such as the session's ``SearchEvent``) into
  ``event(dict)``,
- log records and Python warnings raised in that thread into ``log(str)`` / ``warning(str)``
  (a warning in a worker must never reach the GUI thread's excepthook),
- the return value into ``finished(object)``,
- an ``EmonasError`` into ``failed(str)`` with its one-line message, and any other exception into
  ``failed(str)`` with a one-line summary (the traceback goes to the log, never to the user),
- and always ``done()`` last.

Signals are emitted from the worker thread and delivered queued to receivers living in the GUI
thread, so slots run on the GUI thread and may touch widgets. Only the GUI thread touches widgets.

``JobControl`` is the cancel object handed to the engine: ``stop()`` makes ``is_set()`` true;
``pause()`` makes the next ``is_set()`` call block the worker (not the GUI) until ``resume()`` or
``stop()``, so training pauses between steps without losing anything.

One adapter per job: ``SearchJob`` (run or resume a search), ``RetrainJob``, ``ExportJob``,
``PredictJob`` and ``EvaluateCaseJob`` (one candidate on one validation case) build the engine call
and keep ``EngineJob``'s signals.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal

from engine.errors import EmonasError

log = logging.getLogger(__name__)

JobFunction = Callable[[Callable[[dict], None], "JobControl"], Any]


class JobControl:
    """The cancel object an engine job polls: ``is_set()``; plus pause/resume for the app."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self.on_pause: Callable[[], None] | None = None

    def is_set(self) -> bool:
        """True once stopped. While paused, blocks the calling (worker) thread until resumed."""
        if not self._running.is_set() and not self._stop.is_set():
            if self.on_pause is not None:
                self.on_pause()
            while not self._running.wait(0.1):
                if self._stop.is_set():
                    break
        return self._stop.is_set()

    # threading.Event-like spelling, for engine code that calls set()
    def set(self) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        if not self._stop.is_set():
            self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set() and not self._stop.is_set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


class _ThreadLogHandler(logging.Handler):
    """Forwards log records made in one thread (the worker's) to a callable."""

    def __init__(self, thread_id: int, sink: Callable[[logging.LogRecord], None]):
        super().__init__(logging.INFO)
        self.thread_id = thread_id
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            try:
                self.sink(record)
            except RuntimeError:  # the receiving QObject is gone
                pass


def one_line(exc: BaseException) -> str:
    """The user-facing one-line text of an exception."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, EmonasError):
        return text or type(exc).__name__
    if isinstance(exc, MemoryError):
        return "out of memory"
    return f"unexpected {type(exc).__name__}: {text}" if text else f"unexpected {type(exc).__name__}"


#: Threads whose jobs have not yet been seen to end: keeps each QThread object alive until its
#: thread has really finished, whatever happens to the job that started it (destroying a running
#: QThread aborts the process).
_LIVE_THREADS: set["_Thread"] = set()


class _Reaper(QObject):
    """Lives in the GUI thread; ``finished`` of each worker thread reaches it queued."""

    def release(self) -> None:
        thread = self.sender()
        if not isinstance(thread, _Thread):
            return
        thread.wait()  # returns at once: ``finished`` was the thread's last act
        _LIVE_THREADS.discard(thread)
        job = thread._job
        thread._job = None
        if job is not None:
            # Drop what a finished job holds (its function's closure, its result, which may be
            # whole volumes); its slots already got the result through ``finished``. The small
            # QObject itself stays a child of its owner until the owner goes: deleting a job from
            # Qt's side (deleteLater) while Python-side connections to its signals exist crashes
            # PySide6 intermittently inside QObject::~QObject.
            job.fn = None
            job.result = None
            job.control.on_pause = None


_reaper: _Reaper | None = None


def _get_reaper() -> _Reaper:
    global _reaper
    if _reaper is None:
        _reaper = _Reaper()
    return _reaper


class _Thread(QThread):
    def __init__(self, job: "EngineJob"):
        super().__init__()
        self._job = job
        self.setObjectName(f"emonas-{job.name}")

    def run(self) -> None:  # noqa: D401 - Qt override
        self._job._run_in_thread()


class EngineJob(QObject):
    """Runs ``fn(callback, control)`` in a QThread and reports through queued signals."""

    event = Signal(object)
    log = Signal(str)
    warning = Signal(str)
    finished = Signal(object)
    failed = Signal(str)
    paused = Signal()
    done = Signal()

    def __init__(self, fn: JobFunction, name: str = "job", parent: QObject | None = None):
        super().__init__(parent)
        self.fn = fn
        self.name = name
        self.control = JobControl()
        self.control.on_pause = lambda: self.paused.emit()
        self.result: Any = None
        self.error: str | None = None
        self.started_at: float | None = None
        self._thread: _Thread | None = None
        # the GUI thread's view of the job: True from start() until done() was delivered, so that
        # every slot of done() (connected later) already sees the job as ended
        self._active = False
        self.done.connect(self._mark_done)

    # ---- control (GUI thread) ----------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("a job runs once")
        self._thread = thread = _Thread(self)
        _LIVE_THREADS.add(thread)
        thread.finished.connect(_get_reaper().release)
        self.started_at = time.monotonic()
        self._active = True
        thread.start()

    def stop(self) -> None:
        """Ask the job to stop at its next check; returns at once."""
        self.control.stop()

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def _mark_done(self) -> None:
        self._active = False

    def is_running(self) -> bool:
        """True from ``start()`` until ``done`` has been delivered to the GUI thread."""
        return self._active

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until the thread ended (for shutdown and tests); True when it did."""
        return True if self._thread is None else bool(self._thread.wait(timeout_ms))

    def shutdown(self, timeout_ms: int = 60000) -> None:
        """Stop and wait for the thread (used when a panel closes)."""
        self.control.stop()
        self.wait(timeout_ms)

    # ---- worker thread -----------------------------------------------------------------------
    def _callback(self, ev: Any) -> None:
        # engine events are plain dicts or dataclasses of plain data; the GUI gets dicts
        if dataclasses.is_dataclass(ev) and not isinstance(ev, type):
            ev = dataclasses.asdict(ev)
        self.event.emit(dict(ev))

    def _on_record(self, record: logging.LogRecord) -> None:
        text = record.getMessage().strip().splitlines()
        line = text[0] if text else ""
        if record.levelno >= logging.WARNING:
            self.warning.emit(line)
        else:
            self.log.emit(line)

    def _run_in_thread(self) -> None:
        # Python warnings become records of the 'py.warnings' logger (process-wide and idempotent;
        # warnings.catch_warnings is not thread-safe), and this thread's records become signals.
        # Re-installed on every run: whoever swapped warnings.showwarning since (a test harness, a
        # library) would otherwise keep this thread's warnings from reaching the app.
        logging.captureWarnings(False)
        logging.captureWarnings(True)
        handler = _ThreadLogHandler(threading.get_ident(), self._on_record)
        targets = [logging.getLogger("engine"), logging.getLogger("py.warnings")]
        for lg in targets:
            lg.addHandler(handler)
        old_level = logging.getLogger("engine").level
        if old_level == logging.NOTSET or old_level > logging.INFO:
            logging.getLogger("engine").setLevel(logging.INFO)
        try:
            try:
                self.result = self.fn(self._callback, self.control)
            except EmonasError as exc:
                self.error = one_line(exc)
            except Exception as exc:  # noqa: BLE001 - nothing may escape a worker thread
                log.error("%s failed:\n%s", self.name, traceback.format_exc())
                self.error = one_line(exc)
        finally:
            for lg in targets:
                lg.removeHandler(handler)
            logging.getLogger("engine").setLevel(old_level)
        if self.error is not None:
            self.failed.emit(self.error)
        else:
            self.finished.emit(self.result)
        self.done.emit()


# ---- engine calls behind the app's long jobs (run in the worker thread) -------------------------
def run_dataset_ref(meta: dict) -> str:
    """The dataset a run searched on (a folder or "demo"), from its database's meta."""
    data = (meta.get("problem") or {}).get("data") or {}
    return str(data.get("dataset") or (meta.get("config") or {}).get("dataset") or "demo")


def run_validation_cases(run_dir: str | Path) -> tuple[str, list[str]]:
    """(dataset reference, validation case ids) of a run; its test cases are never offered."""
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


def evaluate_on_case(run_dir: str | Path, candidate_ids: list[int], case_id: str,
                     callback: Callable[[dict], None], control: JobControl) -> dict:
    """Run candidates of a run on one validation case, in the preprocessed space they were trained in.

    Returns ``{"case_id", "image" (C, X, Y, Z), "spacing", "modalities", "reference" (X, Y, Z) class
    indices, "labels" {name: class index}, "predictions" {id: (X, Y, Z)}, "metrics" {id: {name:
    {"dice", "hd", "hd95", "asd"}}}}``.
    """
    from engine.data import open_dataset, preprocess_dataset
    from engine.infer.metrics import case_metrics
    from engine.infer.predictor import Predictor
    from engine.run.store import RunStore

    store = RunStore.open_readonly(run_dir)
    try:
        ref = run_dataset_ref(store.meta())
        folders = {int(c): store.candidate_dir(int(c)) for c in candidate_ids}
    finally:
        store.close()
    callback({"event": "stage", "text": f"reading case {case_id}"})
    dataset = open_dataset(ref)
    out: dict[str, Any] = {"case_id": case_id, "predictions": {}, "metrics": {}, "modalities": list(dataset.modalities)}
    case = None
    for i, (cid, folder) in enumerate(folders.items()):
        if control.is_set():
            break
        callback({"event": "stage", "text": f"candidate {cid}: loading", "done": i, "total": len(folders)})
        predictor = Predictor.from_training_folder(folder)
        if case is None:
            case = preprocess_dataset(dataset, predictor.plan, case_ids=[case_id])[case_id]
            names = list(predictor.labels)
            out.update(image=np.asarray(case.image), spacing=tuple(case.spacing),
                       reference=np.asarray(case.label), labels={n: k for k, n in enumerate(names)})
        callback({"event": "stage", "text": f"candidate {cid}: predicting", "done": i, "total": len(folders)})
        pred = predictor.predict_array(case.image)
        out["predictions"][cid] = pred
        fg = {n: k for n, k in out["labels"].items() if k > 0}
        out["metrics"][cid] = case_metrics(pred, out["reference"], out["spacing"], fg)
    callback({"event": "stage", "text": "done", "done": len(folders), "total": len(folders)})
    return out


def export_candidate_job(run_dir: str | Path, candidate_id: int, out_dir: str | Path, formats: list[str],
                         retrain: bool, epochs: int | None, callback: Callable[[dict], None],
                         control: JobControl) -> dict:
    """Export a run's candidate to a model folder, optionally retraining it on all data first.

    Retraining uses ``engine.run.retrain.retrain_candidate`` into ``out_dir/../NAME.training`` and
    exports that training folder; without it the candidate's search weights are exported
    (``engine.export.package.export_candidate``, which retrains only if they were pruned).
    Returns ``{"model_dir", "files", "parameters", "retrained_in"}``.
    """
    from engine.export.package import export_candidate, export_model

    out = Path(out_dir)
    retrained_in = None
    if retrain:
        from engine.run.retrain import retrain_candidate

        retrained_in = out.parent / f"{out.name}.training"
        callback({"event": "stage", "text": f"retraining candidate {candidate_id} on the training and validation cases"})
        from engine.run.retrain import run_context

        total = int(epochs or run_context(run_dir)["train"]["epochs"])

        def progress(ev: dict) -> None:  # the trainer's events, with the total for a progress bar
            if ev.get("event") == "epoch":
                callback({"event": "epoch", "epoch": int(ev["epoch"]), "epochs": total,
                          "text": f"retraining candidate {candidate_id}: epoch {int(ev['epoch'])} of {total} done"})
            elif ev.get("event") == "step":
                callback({"event": "step", "text": f"retraining candidate {candidate_id}: epoch {ev['epoch']} of "
                          f"{total}, step {ev['step']} of {ev['steps']}"})

        try:
            retrain_candidate(run_dir, int(candidate_id), retrained_in, epochs=epochs, callback=progress, cancel=control)
        except EmonasError:
            if control.stopped:
                raise EmonasError("export cancelled") from None
            raise
        if control.stopped:
            raise EmonasError("export cancelled")
        callback({"event": "stage", "text": "exporting the retrained network"})
        meta = export_model(retrained_in, out, formats)
    else:
        callback({"event": "stage", "text": f"exporting candidate {candidate_id}"})
        meta = export_candidate(run_dir, int(candidate_id), out, formats)
    return {"model_dir": str(out), "files": sorted(meta.get("files", {})),
            "parameters": (meta.get("architecture") or {}).get("parameters"),
            "retrained_in": None if retrained_in is None else str(retrained_in)}


def predict_job(model_dir: str | Path, scans: list[str | Path], out_dir: str | Path,
                callback: Callable[[dict], None], control: JobControl) -> dict:
    """Segment ``scans`` (one file per case) with a model folder (or a training folder).

    Returns ``{"written": [label map paths], "scans": [...], "labels": {name: value}}``.
    """
    from engine.export.package import is_model_folder

    out = Path(out_dir)
    written: list[Path] = []
    if is_model_folder(model_dir):
        from engine.export.deploy import load_model

        model = load_model(model_dir)
        labels = model.labels
        predict = model.predict_files
    else:
        from engine.infer.predictor import Predictor

        predictor = Predictor.from_training_folder(model_dir)
        labels = dict(predictor.labels)
        predict = predictor.predict_files
    for i, scan in enumerate(scans):
        if control.is_set():
            break
        callback({"event": "progress", "done": i, "total": len(scans), "text": f"segmenting {Path(scan).name}"})
        written.extend(predict([[Path(scan)]], out))
    callback({"event": "progress", "done": len(written), "total": len(scans), "text": "done"})
    return {"written": [str(p) for p in written], "scans": [str(s) for s in scans[:len(written)]], "labels": labels}
