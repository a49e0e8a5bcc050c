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

``ProcessJob`` has the same signals and control but runs its job in a child process (the search: a
worker thread importing and running PyTorch holds Python's global interpreter lock for long stretches,
which the GUI thread would feel; a child process has its own). Its control travels as
``multiprocessing`` events and everything else comes back through a queue read by a small thread.

The engine calls behind the app's other long jobs (``evaluate_on_case``, ``export_candidate_job``,
``predict_job``) are plain functions below, run by ``EngineJob``.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QObject, QThread, Signal

from emonas_gui.jobcore import JobControl, one_line, plain_event, record_line
from engine.errors import EmonasError

__all__ = ["EngineJob", "ProcessJob", "JobControl", "one_line"]

log = logging.getLogger(__name__)

JobFunction = Callable[[Callable[[dict], None], "JobControl"], Any]


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


class _Job(QObject):
    """What the app sees of a long job: its signals, its control, and whether it is running."""

    event = Signal(object)
    log = Signal(str)
    warning = Signal(str)
    finished = Signal(object)
    failed = Signal(str)
    paused = Signal()
    done = Signal()

    def __init__(self, name: str, control: JobControl, parent: QObject | None = None):
        super().__init__(parent)
        self.name = name
        self.control = control
        self.started_at: float | None = None
        # the GUI thread's view of the job: True from start() until done() was delivered, so that
        # every slot of done() (connected later) already sees the job as ended
        self._active = False
        self.done.connect(self._mark_done)

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


class EngineJob(_Job):
    """Runs ``fn(callback, control)`` in a QThread and reports through queued signals."""

    def __init__(self, fn: JobFunction, name: str = "job", parent: QObject | None = None):
        super().__init__(name, JobControl(), parent)
        self.fn = fn
        self.control.on_pause = lambda: self.paused.emit()
        self.result: Any = None
        self.error: str | None = None
        self._thread: _Thread | None = None

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
        self.event.emit(plain_event(ev))

    def _on_record(self, record: logging.LogRecord) -> None:
        kind, line = record_line(record)
        (self.warning if kind == "warning" else self.log).emit(line)

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


class ProcessJob(_Job):
    """Runs ``jobcore.CHILD_TARGETS[target](*args, callback, control)`` in a child process.

    Same signals, control (``pause``/``resume``/``stop``, ``control.paused``) and life cycle as
    :class:`EngineJob`. A child that dies without a result (killed, out of memory, a crash in native
    code) gives ``failed`` with its exit code; the app keeps running and the run stays resumable.
    ``detach()`` lets the child run on without the app (the window closed with the search left
    running): the job then ends for the app (``done``), and neither ``shutdown`` nor the app's exit
    stops the child.
    """

    def __init__(self, target: str, args: tuple, name: str = "job", parent: QObject | None = None):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # no fork of a process with Qt and threads
        super().__init__(name, JobControl(ctx.Event(), ctx.Event()), parent)
        self._ctx = ctx
        self._target, self._args = target, tuple(args)
        self._proc = None
        self._reader: threading.Thread | None = None
        self._detached = ctx.Event()

    def start(self) -> None:
        from emonas_gui.jobcore import child_main

        if self._proc is not None:
            raise RuntimeError("a job runs once")
        queue = self._ctx.Queue()
        self._proc = self._ctx.Process(target=child_main, name=f"emonas-{self.name}", daemon=True,
                                       args=(self._target, self._args, queue, self.control._stop, self.control._running,
                                             self._detached))
        self.started_at = time.monotonic()
        self._active = True
        self._proc.start()
        self._reader = threading.Thread(target=self._read, args=(queue, self._proc), name=f"emonas-{self.name}-reader",
                                        daemon=True)
        self._reader.start()

    def _next_message(self, queue, proc) -> tuple[str, Any]:
        """The child's next message; a ("failed", why) of its own when the child is gone without one."""
        import queue as queues

        while True:
            if self._detached.is_set():
                return "detached", None
            try:
                return queue.get(timeout=0.2)
            except queues.Empty:
                if proc.is_alive():
                    continue
                try:  # the child may have ended right after its last message
                    return queue.get(timeout=1.0)
                except queues.Empty:
                    return "failed", (f"the {self.name} process ended unexpectedly (exit code {proc.exitcode}); "
                                      "the run can be resumed")
            except (EOFError, OSError) as exc:  # the queue's pipe broke with the child
                return "failed", f"lost contact with the {self.name} process ({exc})"

    def _read(self, queue, proc) -> None:
        """Reader thread: the child's messages become signals (queued to the GUI thread)."""
        signals = {"event": self.event, "log": self.log, "warning": self.warning,
                   "finished": self.finished, "failed": self.failed}
        while True:
            kind, payload = self._next_message(queue, proc)
            if kind == "detached":  # the child runs on without the app: nothing more to read or wait for
                break
            if kind == "paused":
                self.paused.emit()
            else:
                signals[kind].emit(payload)
            if kind in ("finished", "failed"):
                break
        # the job has ended for the app (the run's database is closed and unlocked); the child
        # process may take a moment longer to exit, which this thread waits for
        self.done.emit()
        if not self._detached.is_set():
            proc.join()
        queue.close()

    @property
    def pid(self) -> int | None:
        """The child's process id (None before ``start``)."""
        return None if self._proc is None else self._proc.pid

    @property
    def detached(self) -> bool:
        return self._detached.is_set()

    def detach(self) -> int | None:
        """Let the child run on without the app; returns its pid (None when it is not running).

        The child stops sending messages and no longer stops when the app ends; the job ends for the
        app at once. The run stays locked by the child; another app session opening the run watches
        it and can pause it (SIGINT, see ``jobcore``)."""
        import multiprocessing.process

        proc = self._proc
        if proc is None or not proc.is_alive() or self.control.stopped:
            return None
        self._detached.set()
        # at exit multiprocessing terminates the app's daemonic children and waits for the others:
        # this one is no longer the app's (it is still the parent, so a test can reap it)
        multiprocessing.process._children.discard(proc)
        return proc.pid

    def wait(self, timeout_ms: int = 30000) -> bool:
        """Block until the child and the reader have ended; True when they did."""
        if self._reader is None:
            return True
        self._reader.join(timeout_ms / 1000)
        return not self._reader.is_alive()

    def shutdown(self, timeout_ms: int = 60000) -> None:
        """Stop and wait for the child (used when a panel closes); end it if it does not stop in time.
        A detached child is left running (only the reader is waited for)."""
        if self._detached.is_set():
            self.wait(timeout_ms)
            return
        self.control.stop()
        if not self.wait(timeout_ms) and self._proc is not None and self._proc.is_alive():
            log.warning("%s process did not stop within %d s: terminating it", self.name, timeout_ms // 1000)
            self._proc.terminate()  # the run database is crash-safe; the run stays resumable
            self.wait(10000)


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
    """Run candidates of a run on one validation case as ``emonas predict`` does, scored as the report
    scores: labels mapped back onto the scan's own grid, compared with the original reference file in
    world space (``engine.run.scoring``).

    Returns ``{"case_id", "image" (C, X, Y, Z) the scan as stored, "spacing", "modalities", "reference"
    (X, Y, Z) label values on the scan's grid, "labels" {name: value}, "predictions" {id: (X, Y, Z)},
    "metrics" {id: {name: {"dice", "hd", "hd95", "asd"}}}}``.
    """
    from engine.data import open_dataset
    from engine.data.io import affine_spacing
    from engine.data.layouts import split_ignore
    from engine.data.validate import read_case_images
    from engine.infer.metrics import in_one_frame
    from engine.infer.predictor import Predictor
    from engine.run.scoring import load_scan_case, predict_in_scan, score_in_scan
    from engine.run.store import RunStore

    store = RunStore.open_readonly(run_dir)
    try:
        ref = run_dataset_ref(store.meta())
        folders = {int(c): store.candidate_dir(int(c)) for c in candidate_ids}
    finally:
        store.close()
    callback({"event": "stage", "text": f"reading case {case_id}"})
    dataset = open_dataset(ref)
    _, ignore = split_ignore(dict(dataset.labels))
    out: dict[str, Any] = {"case_id": case_id, "predictions": {}, "metrics": {}, "modalities": list(dataset.modalities)}
    case = None
    for i, (cid, folder) in enumerate(folders.items()):
        if control.is_set():
            break
        callback({"event": "stage", "text": f"candidate {cid}: loading", "done": i, "total": len(folders)})
        predictor = Predictor.from_training_folder(folder)
        if case is None:
            case = load_scan_case(dataset.case(case_id), predictor.plan)
            scan = read_case_images(dataset.case(case_id))
            # the reference as stored, brought onto the scan's grid for display (flips and axis order)
            shown, _, _ = in_one_frame(case.reference_image, scan, case.reference, scan.array[0])
            out.update(image=scan.array, spacing=affine_spacing(scan.affine), reference=shown,
                       labels=dict(predictor.labels))
        if control.is_set():  # cancelled while loading: the prediction is the long part
            break
        callback({"event": "stage", "text": f"candidate {cid}: predicting", "done": i, "total": len(folders)})
        pred = predict_in_scan(predictor, case)
        out["predictions"][cid] = pred
        fg = {n: k for n, k in out["labels"].items() if k > 0}
        out["metrics"][cid] = score_in_scan(pred, case, fg, ignore)
    callback({"event": "stage", "text": "done", "done": len(folders), "total": len(folders)})
    return out


def export_candidate_job(run_dir: str | Path, candidate_id: int, out_dir: str | Path, formats: list[str],
                         retrain: bool, epochs: int | None, callback: Callable[[dict], None],
                         control: JobControl) -> dict:
    """Export a run's candidate to a model folder, optionally retraining it on all data first.

    Retraining uses ``engine.run.retrain.train_final_model`` into ``out_dir/../NAME.training`` and
    exports that training folder; without it the candidate's search weights are exported
    (``engine.run.export.export_candidate``, which retrains only if they were pruned).
    Returns ``{"model_dir", "files", "parameters", "retrained_in"}``.
    """
    from engine.export.package import export_model
    from engine.outputs import check_output, run_sources
    from engine.run.export import export_candidate

    out = Path(out_dir)
    check_output(out, run_sources(run_dir), option="output folder")  # never into the run, before any work
    retrained_in = None
    if retrain:
        from engine.run.retrain import retrain_epochs, train_final_model

        retrained_in = out.parent / f"{out.name}.training"
        check_output(retrained_in, run_sources(run_dir), option="retraining folder")
        callback({"event": "stage", "text": f"retraining candidate {candidate_id} on the training and validation cases"})
        total = retrain_epochs(run_dir, epochs)

        def progress(ev: dict) -> None:  # the trainer's events, with the total for a progress bar
            if ev.get("event") == "epoch":
                callback({"event": "epoch", "epoch": int(ev["epoch"]), "epochs": total,
                          "text": f"retraining candidate {candidate_id}: epoch {int(ev['epoch'])} of {total} done"})
            elif ev.get("event") == "step":
                callback({"event": "step", "text": f"retraining candidate {candidate_id}: epoch {ev['epoch']} of "
                          f"{total}, step {ev['step']} of {ev['steps']}"})

        try:
            train_final_model(run_dir, int(candidate_id), retrained_in, epochs=epochs, callback=progress, cancel=control)
        except EmonasError:
            if not control.stopped:
                raise
        if control.stopped:  # cancelled during or right after the retraining
            raise EmonasError("export cancelled")
        callback({"event": "stage", "text": "exporting the retrained network"})
        meta = export_model(retrained_in, out, formats, sources=run_sources(run_dir))
    else:
        callback({"event": "stage", "text": f"exporting candidate {candidate_id}"})
        meta = export_candidate(run_dir, int(candidate_id), out, formats)
    return {"model_dir": str(out), "files": sorted(meta.get("files", {})),
            "parameters": (meta.get("architecture") or {}).get("parameters"),
            "retrained_in": None if retrained_in is None else str(retrained_in)}


def predict_job(model_dir: str | Path, scans: list[str | Path], out_dir: str | Path,
                callback: Callable[[dict], None], control: JobControl) -> dict:
    """Segment ``scans`` (files, one per case, or folders of them: nnU-Net's ``CASE_0000`` files or
    DICOM series) with a model folder (or a training folder); label maps are named by case id.

    Returns ``{"written": [label map paths], "scans": [each case's first scan], "labels": {name: value}}``.
    """
    from engine.export.package import is_model_folder
    from engine.infer.folder import gather_cases
    from engine.infer.folder import check_prediction_outputs

    out = Path(out_dir)
    written: list[Path] = []
    if is_model_folder(model_dir):
        from engine.export.deploy import load_model

        model = load_model(model_dir)
        labels, modalities, predict = model.labels, model.modalities, model.predict_files
    else:
        from engine.infer.predictor import Predictor

        predictor = Predictor.from_training_folder(model_dir)
        labels, modalities, predict = dict(predictor.labels), predictor.modalities, predictor.predict_files
    cases = gather_cases(scans, max(1, len(modalities)))
    check_prediction_outputs([paths for _, paths in cases], out, model_dir, option="output folder",
                             names=[cid for cid, _ in cases])  # before anything is written
    for i, (case_id, paths) in enumerate(cases):
        if control.is_set():
            break
        callback({"event": "progress", "done": i, "total": len(cases), "text": f"segmenting {case_id}"})
        written.extend(predict([paths], out, names=[case_id]))
    callback({"event": "progress", "done": len(written), "total": len(cases), "text": "done"})
    return {"written": [str(p) for p in written], "scans": [str(paths[0]) for _, paths in cases[:len(written)]],
            "labels": labels}
