"""The Search step: set up a search, start / pause / resume / stop it, and watch it live.

``SearchPanel(state, parent=None)``:
- left, the setup form (``SearchSetupForm``) with Load / Save TOML and the estimated cost (computed
  off the GUI thread whenever the form or the dataset changes);
- a run folder (a new one by default) and the Start, Pause, Resume, Stop buttons;
- right, the live monitor (``MonitorPanel``) of the current run.

The search runs in a child process (``ProcessJob("search")``: ``engine.run.session.SearchSession.run``);
its events arrive as queued signals and refresh the monitor. Pause blocks the child at its next check
(training pauses between steps); Stop ends the run at its next check, leaving it resumable; Resume
continues a paused job, or reopens a stopped, killed or CLI-started run (``SearchSession.open``).
``open_run(path)`` shows an existing run. Errors (bad config, a run locked by another process, a
failed candidate) appear in the log and, when they stop the job, through ``state.error``.

A run whose search is running in another process (its lock held: left running when a window closed,
or a CLI search) is shown live when opened; Pause then asks that process to pause (SIGINT, which
pauses a CLI search as Ctrl-C does and stops the app's search child cleanly), when it runs on this
machine. ``leave_running()`` lets this panel's search go on without the app (the window closing).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from engine.config import SearchConfig, current_generation
from engine.errors import EmonasError
from engine.run.store import RunLock, RunStore, is_run
from emonas_gui.panels.monitor import MonitorPanel
from emonas_gui.panels.search_setup import SearchSetupForm, search_cost
from emonas_gui.workers import EngineJob, ProcessJob

log = logging.getLogger(__name__)


def search_job(run_dir: Path, config: SearchConfig | None, parent=None) -> ProcessJob:
    """A job that runs a new search (``config`` given) or resumes the run in ``run_dir`` (None), in a
    child process (see ``emonas_gui.workers.ProcessJob``)."""
    return ProcessJob("search", (str(run_dir), None if config is None else config.to_dict()), "search", parent)


def running_elsewhere(run_dir: str | Path) -> dict | None:
    """The owner (``pid``, ``host``) of the run's lock when a live process holds it, else None."""
    lock = RunLock(Path(run_dir))
    try:
        held = lock.is_held_elsewhere()
    except OSError:  # unreadable lock file: treat as not running
        return None
    return (lock.owner() or {}) if held else None


def can_signal(owner: dict) -> bool:
    """Whether this app can ask the lock's owner to pause: a live process on this machine."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0 or owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def cost_job(config: SearchConfig, dataset_ref: str | None, plan_cache: dict, parent=None) -> EngineJob:
    """A job that estimates the cost of ``config`` on a dataset (planning it first if needed)."""

    def fn(callback, control) -> Any:
        if not dataset_ref:
            return search_cost(config)
        if dataset_ref not in plan_cache:
            from engine.data import make_plan, open_dataset

            ds = open_dataset(dataset_ref)
            plan_cache[dataset_ref] = (len(ds.modalities), ds.num_classes, make_plan(ds))
        in_ch, classes, plan = plan_cache[dataset_ref]
        return search_cost(config, in_ch, classes, tuple(plan.patch_size), plan.batch_size, plan.pool_sizes_for)

    return EngineJob(fn, "cost-estimate", parent)


def time_job(config: SearchConfig, parent=None) -> ProcessJob:
    """A job that estimates the wall time of ``config`` (``engine.run.session.estimate_search``) in a
    child process: its calibration runs real training steps."""
    return ProcessJob("estimate", (config.to_dict(),), "time-estimate", parent)


class SearchPanel(QWidget):
    """Search setup, controls and live monitor."""

    def __init__(self, state, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.job: ProcessJob | None = None
        self.run_dir: Path | None = None
        self.summary: dict | None = None
        self._cost_job: EngineJob | None = None
        self._cost_dirty = False
        self._plans: dict = {}
        self.remote: dict | None = None  # the lock's owner while the run's search runs in another process
        self._remote_pause_sent = False

        outer = QHBoxLayout(self)
        split = QSplitter(Qt.Orientation.Horizontal)
        outer.addWidget(split)

        left = QWidget()
        ll = QVBoxLayout(left)
        self.form = SearchSetupForm()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.form)
        # the form scrolls up and down only: the splitter gives it its whole width (operations' names,
        # the learning rate's range) and the plots on the right take what is left
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setMinimumWidth(self.form.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width()
                               + 2 * scroll.frameWidth())
        self.form_scroll = scroll
        ll.addWidget(scroll, 1)
        io = QHBoxLayout()
        self.load_button = QPushButton("Load config\u2026")
        self.load_button.setToolTip("read a search configuration TOML (the file `emonas search --config` reads)")
        self.save_button = QPushButton("Save config\u2026")
        self.save_button.setToolTip("write this configuration as TOML for the CLI or a later session")
        io.addWidget(self.load_button)
        io.addWidget(self.save_button)
        ll.addLayout(io)
        self.cost_label = QLabel("Estimated cost: \u2026")
        self.cost_label.setWordWrap(True)
        ll.addWidget(self.cost_label)
        self.time_button = QPushButton("Estimate wall time")
        self.time_button.setToolTip("how long the search will take on this device: a short calibration (real "
                                    "training steps of a few sampled networks, under 30 s, cached per device and "
                                    "plan) times the steps per candidate times the candidates the strategy trains")
        self.time_label = QLabel("")
        self.time_label.setWordWrap(True)
        ll.addWidget(self.time_button)
        ll.addWidget(self.time_label)
        self.time_button.clicked.connect(self.estimate_time)
        self._time_job: ProcessJob | None = None

        self.dataset_label = QLabel()
        ll.addWidget(self.dataset_label)
        row = QHBoxLayout()
        row.addWidget(QLabel("Run folder"))
        self.run_edit = QLineEdit(str(self._default_run_dir()))
        self.run_edit.setToolTip("where the run is written (run.db, candidates); must not hold a run yet")
        row.addWidget(self.run_edit, 1)
        self.browse_button = QPushButton("\u2026")
        self.browse_button.setToolTip("choose the folder of a new run")
        row.addWidget(self.browse_button)
        self.open_button = QPushButton("Open run\u2026")
        self.open_button.setToolTip("show an existing run (from this app or the CLI, finished, stopped or killed)")
        row.addWidget(self.open_button)
        ll.addLayout(row)
        ctl = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("start a new search in the run folder")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("pause training between steps; nothing is lost")
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("continue a paused search, or a stopped, killed or CLI-started run")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("stop the search; the run stays resumable")
        for b in (self.start_button, self.pause_button, self.resume_button, self.stop_button):
            ctl.addWidget(b)
        ll.addLayout(ctl)
        self.state_label = QLabel("Idle.")
        ll.addWidget(self.state_label)
        split.addWidget(left)

        self.monitor = MonitorPanel()
        split.addWidget(self.monitor)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([460, 900])

        self._cost_timer = QTimer(self)
        self._cost_timer.setSingleShot(True)
        self._cost_timer.setInterval(400)
        self._cost_timer.timeout.connect(self.update_cost)
        # while attached to a search running elsewhere: notice when it ends (its lock is released)
        self._remote_timer = QTimer(self)
        self._remote_timer.setInterval(1000)
        self._remote_timer.timeout.connect(self._poll_remote)

        self.form.changed.connect(self._cost_timer.start)
        self.load_button.clicked.connect(self._ask_load)
        self.save_button.clicked.connect(self._ask_save)
        self.browse_button.clicked.connect(self._ask_run_folder)
        self.open_button.clicked.connect(self._ask_open_run)
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.pause)
        self.resume_button.clicked.connect(self.resume)
        self.stop_button.clicked.connect(self.stop)
        state.dataset_changed.connect(self._on_dataset)
        state.run_changed.connect(self._on_run_changed)
        self._on_dataset(getattr(state, "dataset", None))
        self._sync()
        # created after the app opened a run (the main window builds steps on first view)
        if getattr(state, "run_dir", None) is not None and is_run(state.run_dir):
            self.open_run(state.run_dir)

    # ---- helpers -----------------------------------------------------------------------------
    def _default_run_dir(self) -> Path:
        root = Path(str(self.state.settings.value("search/runs_root", str(Path.home() / "EMONAS" / "runs"))))
        return root / time.strftime("run-%Y%m%d-%H%M%S")

    def dataset_ref(self) -> str:
        """The dataset a new search uses: the open one, else the built-in demo."""
        path = getattr(self.state, "dataset_path", None)
        return str(path) if path else "demo"

    def is_running(self) -> bool:
        return self.job is not None and self.job.is_running()

    def _sync(self) -> None:
        running = self.is_running()
        paused = running and self.job.control.paused
        remote = self.remote is not None
        self.start_button.setEnabled(not running)
        self.pause_button.setEnabled((running and not paused)
                                     or (remote and can_signal(self.remote) and not self._remote_pause_sent))
        self.stop_button.setEnabled(running)
        self.resume_button.setEnabled(paused or (not running and not remote and self.run_dir is not None
                                                 and is_run(self.run_dir)))
        self.form.setEnabled(not running)
        self.load_button.setEnabled(not running)
        self.open_button.setEnabled(not running)

    def _log(self, line: str) -> None:
        self.monitor.append_log(line)

    # ---- dataset and cost --------------------------------------------------------------------
    def _on_dataset(self, dataset) -> None:
        self.dataset_label.setText(f"Dataset: {self.dataset_ref()}")
        self._cost_timer.start()

    def update_cost(self) -> None:
        """Estimate the cost of the form's configuration off the GUI thread."""
        if self._cost_job is not None and self._cost_job.is_running():
            self._cost_dirty = True
            return
        try:
            cfg = self.form.config()
        except EmonasError as exc:
            self.cost_label.setText(f"Estimated cost: {exc}")
            return
        job = cost_job(cfg, self.dataset_ref(), self._plans, self)
        job.finished.connect(lambda est: self.cost_label.setText("Estimated cost: " + est.text()))
        job.failed.connect(lambda msg: self.cost_label.setText(f"Estimated cost: {msg}"))
        job.done.connect(self._cost_done)
        self._cost_job = job
        self.cost_label.setText("Estimated cost: computing\u2026")
        job.start()

    def estimate_time(self) -> None:
        """Calibrate (unless cached) and estimate the search's wall time, off the GUI thread."""
        if self._time_job is not None and self._time_job.is_running():
            return
        try:
            cfg = self.form.config()
        except EmonasError as exc:
            self.time_label.setText(f"Wall time: {exc}")
            return
        ref = self.dataset_ref()
        if not ref:
            self.time_label.setText("Wall time: choose a dataset first")
            return
        cfg = cfg.replace(dataset=ref)
        job = time_job(cfg, self)
        job.finished.connect(lambda est: self.time_label.setText(est.text()))
        job.failed.connect(lambda msg: self.time_label.setText(f"Wall time: {msg}"))
        self._time_job = job
        self.time_label.setText("Wall time: calibrating on this device (under a minute)\u2026")
        job.start()

    def _cost_done(self) -> None:
        if self._cost_dirty:
            self._cost_dirty = False
            self._cost_timer.start()

    # ---- config files ------------------------------------------------------------------------
    def _ask_load(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load search configuration", "", "TOML (*.toml)")
        if path:
            self.load_config(path)

    def load_config(self, path: str | Path) -> bool:
        try:
            self.form.load_toml(path)
        except EmonasError as exc:
            self.state.report_error(str(exc))
            return False
        self.state.status_message.emit(f"Loaded search configuration {path}")
        return True

    def _ask_save(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save search configuration", "search.toml", "TOML (*.toml)")
        if path:
            self.save_config(path)

    def save_config(self, path: str | Path) -> bool:
        try:
            self.form.save_toml(path)
        except (EmonasError, OSError) as exc:
            self.state.report_error(f"{path}: {exc}" if isinstance(exc, OSError) else str(exc))
            return False
        self.state.status_message.emit(f"Saved search configuration {path}")
        return True

    # ---- runs --------------------------------------------------------------------------------
    def _ask_run_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder of the new run")
        if path:
            self.run_edit.setText(str(Path(path) / time.strftime("run-%Y%m%d-%H%M%S")))

    def _ask_open_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a run folder")
        if path:
            self.open_run(path)

    def show_candidate(self, ids: list[int]) -> None:
        """Open candidate ``ids[0]`` of the current run in the details view (``main.py --candidate``)."""
        if ids and not any(c.id == int(ids[0]) for c in self.monitor.candidates):
            self.state.report_error(f"candidate {ids[0]} is not a candidate of {self.run_dir}")
        elif ids:
            self.monitor.open_candidate(int(ids[0]))

    def open_run(self, run_dir: str | Path) -> bool:
        """Show an existing run (and make it the app's current run); False with a message if not a run."""
        if self.is_running():
            self.state.report_error("a search is running: stop it before opening another run")
            return False
        try:
            self.monitor.watch(run_dir)
        except EmonasError as exc:
            self.state.report_error(str(exc))
            return False
        self.run_dir = Path(run_dir)
        self.run_edit.setText(str(self.run_dir))
        self._show_run_config(self.run_dir)
        if self.state.run_dir != self.run_dir:
            self.state.set_run(self.run_dir)
        self._attach(running_elsewhere(self.run_dir))
        status = self.monitor.run_status()
        if self.remote is not None:
            self._show_remote()
        elif status == "finished":
            self.state_label.setText(f"Run {self.run_dir.name} open: finished. Results and Export use its candidates.")
        else:
            self.state_label.setText(f"Run {self.run_dir.name} open ({status or 'status unknown'}); Resume continues it.")
        self._sync()
        return True

    # ---- a search running in another process -----------------------------------------------
    def _attach(self, owner: dict | None) -> None:
        """Follow (owner given) or stop following a search that runs in another process."""
        self.remote = owner
        self._remote_pause_sent = False
        if owner is None:
            self._remote_timer.stop()
        else:
            self._remote_timer.start()

    def is_attached(self) -> bool:
        """Whether the open run's search runs in another process (shown live, not driven by this app)."""
        return self.remote is not None

    def _show_remote(self) -> None:
        owner = self.remote or {}
        who = f"process {owner.get('pid', '?')} on {owner.get('host', 'another machine')}"
        how = ("Pause asks it to pause." if can_signal(owner) else
               "It runs on another machine or as another user: pause it there.")
        self.state_label.setText(f"Run {self.run_dir.name}: running in another process ({who}), shown live. {how}")
        self._log(f"{self.run_dir} is running in {who}; shown live")

    def pause_remote(self) -> bool:
        """Ask the process running the open run's search to pause it (it ends as a resumable pause)."""
        owner = self.remote
        if owner is None or not can_signal(owner):
            return False
        try:
            os.kill(int(owner["pid"]), signal.SIGINT)
        except OSError as exc:
            self.state.report_error(f"cannot pause process {owner['pid']}: {exc.strerror or exc}")
            return False
        self._remote_pause_sent = True
        self.state_label.setText(f"Pausing the search in process {owner['pid']} at its next check\u2026")
        self._log(f"pause requested from process {owner['pid']}")
        self._sync()
        return True

    def _poll_remote(self) -> None:
        if self.remote is None or self.run_dir is None:
            self._remote_timer.stop()
            return
        if running_elsewhere(self.run_dir) is not None:
            return
        pid = self.remote.get("pid")
        self._attach(None)
        self.monitor.refresh()
        status = self.monitor.run_status() or "status unknown"
        text = f"The search in process {pid} has ended ({status}); Resume continues it here."
        if status == "finished":
            text = f"The search in process {pid} has finished. Results and Export use its candidates."
        self.state_label.setText(text)
        self._log(text)
        self._sync()

    def _show_run_config(self, run_dir: Path) -> None:
        """Fill the form with the configuration the run was started with (read-only while it runs)."""
        try:
            with RunStore.open_readonly(run_dir) as ro:
                stored = ro.get_meta("config")
            if stored:
                self.form.set_config(SearchConfig.from_dict(stored, f"{run_dir}/run.db"))
                self._cost_timer.start()
        except EmonasError as exc:
            self._log(f"the run's configuration cannot be shown: {exc}")

    def _on_run_changed(self, run_dir) -> None:
        if run_dir is None or self.is_running() or (self.run_dir is not None and Path(run_dir) == self.run_dir):
            return
        if is_run(run_dir):
            self.open_run(run_dir)

    # ---- controls ----------------------------------------------------------------------------
    def start(self) -> bool:
        """Start a new search with the form's configuration in the run folder."""
        if self.is_running():
            return False
        try:
            cfg = self.form.config().replace(dataset=self.dataset_ref())
        except EmonasError as exc:
            self.state.report_error(str(exc))
            return False
        run_dir = Path(self.run_edit.text().strip()).expanduser()
        if not self.run_edit.text().strip():
            self.state.report_error("choose a folder for the run")
            return False
        if is_run(run_dir):
            self.state.report_error(f"{run_dir}: a run exists here already; open it and press Resume, or choose another folder")
            return False
        self.monitor.stop_watching()
        self.monitor.log_view.clear()
        self._launch(run_dir, cfg)
        self._log(f"starting a {cfg.samea.strategy} search on {cfg.dataset} in {run_dir}")
        return True

    def _launch(self, run_dir: Path, cfg: SearchConfig | None) -> None:
        self._attach(None)
        self.run_dir = run_dir
        self.summary = None
        self.job = search_job(run_dir, cfg, self)
        self.job.event.connect(self._on_event)
        self.job.log.connect(self._log)
        self.job.warning.connect(lambda m: self._log(f"warning: {m}"))
        self.job.paused.connect(self._on_paused)
        self.job.finished.connect(self._on_finished)
        self.job.failed.connect(self._on_failed)
        self.job.done.connect(self._sync)
        self.state_label.setText("Preparing the data and the search\u2026")
        self.job.start()
        self._sync()

    def pause(self) -> None:
        if self.remote is not None and not self.is_running():
            self.pause_remote()
            return
        if self.is_running():
            self.job.pause()
            self.state_label.setText("Pausing at the next training step\u2026")
            self._sync()

    def resume(self) -> bool:
        """Continue a paused search, or reopen and continue the current run."""
        if self.is_running():
            if self.job.control.paused:
                self.job.resume()
                self.state_label.setText("Running.")
                self._log("resumed")
                self._sync()
                return True
            return False
        if self.run_dir is None or not is_run(self.run_dir):
            self.state.report_error("no run to resume: open a run folder first")
            return False
        if not self.monitor.is_watching():
            try:
                self.monitor.watch(self.run_dir)
            except EmonasError as exc:
                self.state.report_error(str(exc))
                return False
        self._log(f"resuming {self.run_dir}")
        self._launch(self.run_dir, None)
        return True

    def stop(self) -> None:
        if self.is_running():
            self.job.stop()
            self.state_label.setText("Stopping at the next check\u2026")
            self._log("stop requested")
            self._sync()

    def leave_running(self) -> int | None:
        """Let the running search go on without this app (the window is closing); returns the pid of
        the process that runs it, None when no search runs. Opening the run later shows it live."""
        if not self.is_running():
            return None
        self.job.resume()  # "leave it running": a paused search goes on too
        pid = self.job.detach()
        if pid is not None:
            self.state_label.setText(f"Search left running in process {pid}; open the run to watch it again.")
            self._log(f"left running in process {pid}")
        return pid

    # ---- job signals -------------------------------------------------------------------------
    def _on_event(self, ev: dict) -> None:
        kind = ev.get("kind")
        if kind == "started":
            if not self.monitor.is_watching() and self.run_dir is not None:
                try:
                    self.monitor.watch(self.run_dir)
                except EmonasError as exc:
                    self._log(str(exc))
            if self.state.run_dir != self.run_dir:
                self.state.set_run(self.run_dir)
        elif kind in ("candidate_started", "candidate_finished", "step", "finished"):
            self.monitor.refresh()
        elif kind == "latency":  # every candidate trained; the front's networks are timed one by one
            d = ev.get("detail") or {}
            if not (self.job and self.job.control.paused):
                self.state_label.setText(
                    f"All candidates trained. Measuring the latency of the front's networks on {d.get('target')} "
                    f"({d.get('hardware')}): {d.get('done', 0) + 1} of {d.get('total', '?')}")
            self.monitor.refresh()
            return
        p = ev.get("progress") or {}  # the engine's progress record (engine.run.progress.Progress)
        eta = p.get("eta_seconds")
        if not (self.job and self.job.control.paused):
            self.state_label.setText(
                f"Running: generation {current_generation(p.get('generation', 0), p.get('generations', 1))} of "
                f"{p.get('generations', '?')}, "
                f"{p.get('done', 0)} done, {p.get('failed', 0)} failed"
                + (f", about {eta / 60:.1f} min left" if isinstance(eta, (int, float)) else "")
            )

    def _on_paused(self) -> None:
        self.state_label.setText("Paused. Resume continues; Stop ends the run (it stays resumable).")
        self._log("paused")
        self._sync()

    def _on_finished(self, summary: Any) -> None:
        self.summary = summary if isinstance(summary, dict) else None
        status = (self.summary or {}).get("status", "finished")
        text = {"finished": "Search finished.", "paused": "Search stopped; Resume continues it.",
                "budget": "Wall-clock budget reached; Resume continues it."}.get(status, f"Search ended: {status}.")
        self.state_label.setText(text)
        self._log(text)
        self.monitor.refresh()
        self.state.status_message.emit(text)

    def _on_failed(self, message: str) -> None:
        self.state_label.setText(f"Search stopped: {message}")
        self._log(f"error: {message}")
        if self.monitor.is_watching():
            self.monitor.refresh()
        self.state.report_error(message)

    # ---- shutdown ----------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the search and the monitor (the main window calls this before closing)."""
        self._cost_timer.stop()
        self._remote_timer.stop()
        for job in (self.job, self._cost_job):
            if job is not None:
                job.shutdown()
        self.monitor.stop_watching()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt override
        self.shutdown()
        super().closeEvent(event)
