"""Closing the window while a search runs: pause it, leave it running in the background, or stay.

A search left running outlives the window (its process is not the app's any more); opening its run
again, in a new window, shows it live and Pause there ends it as a resumable pause.
Real (tiny) searches on the demo data, set up as tests/gui/test_search_run.py does.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from engine.run.store import RunLock, RunStore, is_run
from emonas_gui import main_window as mw
from emonas_gui.main_window import MainWindow
from emonas_gui.state import AppState
from test_search_run import LONG, _configure


def _status(run: Path) -> str | None:
    with RunStore.open_readonly(run) as store:
        return store.get_meta("status")


def _done(run: Path) -> int:
    with RunStore.open_readonly(run) as store:
        return store.counts()["done"]


def _window(qtbot) -> MainWindow:
    state = AppState()
    state.set_dataset(None, "demo")
    window = MainWindow(state)
    qtbot.addWidget(window)
    window.show()
    return window


def _start_search(qtbot, window: MainWindow, tmp_path: Path) -> Path:
    """Start a search that would run for many minutes; return its run folder once it holds the lock."""
    panel = window.panels["search"]
    _configure(panel, tmp_path)
    panel.form.generations.setValue(panel.form.generations.maximum())  # it must never end on its own here
    run = tmp_path / "run"
    panel.run_edit.setText(str(run))
    assert panel.start()
    qtbot.waitUntil(lambda: is_run(run) and RunLock(run).is_held_elsewhere(), timeout=LONG)
    return run


@pytest.fixture
def answers(monkeypatch):
    """The closing question's answers, in order (the dialog never shows), and those it gave."""
    given: list[str] = []
    asked: list[str] = []

    def ask(self):  # past the given answers (a failed test's teardown closing the window): pause
        asked.append(given[len(asked)] if len(asked) < len(given) else mw.CLOSE_PAUSE)
        return asked[-1]

    monkeypatch.setattr(MainWindow, "ask_close_with_search", ask)
    return given, asked


def test_the_closing_question_maps_its_buttons_to_the_choices(qtbot, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    window = _window(qtbot)
    for text, choice in (("Pause the search", mw.CLOSE_PAUSE), ("Leave it running", mw.CLOSE_LEAVE_RUNNING),
                         ("Cancel", mw.CLOSE_CANCEL)):
        shown = []

        def press(box, text=text):  # instead of the modal loop: the user presses one button
            shown.append(box.text())
            next(b for b in box.buttons() if b.text().replace("&", "") == text).click()
            return 0

        monkeypatch.setattr(QMessageBox, "exec", press)
        assert window.ask_close_with_search() == choice
        assert "A search is running" in shown[0]


def test_close_asks_and_pause_leaves_a_paused_run(qtbot, tmp_path, answers):
    given, asked = answers
    window = _window(qtbot)
    run = _start_search(qtbot, window, tmp_path)
    proc = window.panels["search"].job._proc

    given += [mw.CLOSE_CANCEL, mw.CLOSE_PAUSE]
    window.close()  # "Cancel": the window stays, the search goes on
    assert asked == [mw.CLOSE_CANCEL] and window.isVisible() and window.panels["search"].is_running()
    window.close()  # "Pause"
    assert asked == [mw.CLOSE_CANCEL, mw.CLOSE_PAUSE] and not window.isVisible()
    proc.join(60)
    assert proc.exitcode == 0
    assert _status(run) == "paused" and not RunLock(run).is_held_elsewhere()


def test_leave_running_then_reattach_in_a_new_window_and_pause_it(qtbot, tmp_path, answers):
    given, asked = answers
    window = _window(qtbot)
    run = _start_search(qtbot, window, tmp_path)
    proc = window.panels["search"].job._proc
    try:
        window.panels["search"].pause()  # even a paused search goes on when left running
        given.append(mw.CLOSE_LEAVE_RUNNING)
        window.close()
        assert asked == [mw.CLOSE_LEAVE_RUNNING] and not window.isVisible()
        qtbot.wait(1500)  # the child's watch of its parent ticks every second: it must not stop
        assert proc.is_alive() and RunLock(run).is_held_elsewhere() and _status(run) == "running"
        done = _done(run)
        qtbot.waitUntil(lambda: _done(run) > done, timeout=LONG)  # and it trains on
        assert RunLock(run).owner()["pid"] == proc.pid

        # a new window opens the run: the Search step shows it live and offers Pause
        again = _window(qtbot)
        again.open_run(run)
        assert again.current_step() == "search"
        panel = again.panels["search"]
        assert panel.is_attached() and not panel.is_running() and panel.monitor.is_watching()
        assert "running in another process" in panel.state_label.text()
        assert str(proc.pid) in panel.state_label.text()
        assert panel.pause_button.isEnabled() and not panel.resume_button.isEnabled()
        qtbot.mouseClick(panel.pause_button, Qt.MouseButton.LeftButton)
        assert not panel.pause_button.isEnabled()
        qtbot.waitUntil(lambda: not panel.is_attached(), timeout=LONG)
        assert "has ended (paused)" in panel.state_label.text() and panel.resume_button.isEnabled()
        proc.join(60)
        assert proc.exitcode == 0 and _status(run) == "paused"
        again.close()  # nothing runs here: no question
        assert asked == [mw.CLOSE_LEAVE_RUNNING]
    finally:  # never leave a search running after the test
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)


APP = """
import json, sys, time
from PySide6.QtCore import QCoreApplication
from engine.run.store import RunLock, is_run
from emonas_gui.workers import ProcessJob

if __name__ == "__main__":
    app = QCoreApplication([])
    run_dir, config = sys.argv[1], json.loads(sys.argv[2])
    job = ProcessJob("search", (run_dir, config), "search")
    job.start()
    deadline = time.monotonic() + 300
    while not (is_run(run_dir) and RunLock(run_dir).is_held_elsewhere()) and time.monotonic() < deadline:
        time.sleep(0.2)
    print(job.detach(), flush=True)
    job.shutdown()  # as the panel's at closing: a detached search is left alone
    # the app's exit: multiprocessing's exit handler must neither end nor wait for the search
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) counts as ended
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_search_left_running_outlives_the_app_and_pauses_on_sigint(tmp_path):
    import json
    import subprocess
    import sys
    import time

    from engine.config import SearchConfig

    cheap = ["conv3d_1x1x1", "identity"]
    cfg = SearchConfig().replace(
        dataset="demo", seed=3,
        space={"nf1": [8], "n_cells": [5], "op1": cheap, "op2": cheap, "op3": cheap, "op4": cheap},
        samea={"population": 2, "generations": 500, "neighbourhood": 2},  # far more than the test lasts
        training={"epochs": 1, "patience": 1, "extra": {"iterations_per_epoch": 2}},
        resources={"device": "cpu"},
    )
    run = tmp_path / "run"
    errors = tmp_path / "app.err"
    with errors.open("w") as err:  # the search inherits the app's outputs: never wait for their end
        app = subprocess.Popen([sys.executable, "-c", APP, str(run), json.dumps(cfg.to_dict())],
                               stdout=subprocess.PIPE, stderr=err, text=True)
    pid = int(app.stdout.readline())
    try:
        assert app.wait(60) == 0, errors.read_text()
        time.sleep(1.5)  # the child's watch of its parent ticks every second: it must not stop
        assert _alive(pid) and RunLock(run).is_held_elsewhere() and RunLock(run).owner()["pid"] == pid
        assert os.getsid(pid) == pid  # in a session of its own: a closed terminal does not end it
        os.kill(pid, signal.SIGINT)  # what Pause does from a window that re-attached
        deadline = time.monotonic() + 120
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(pid)
        assert _status(run) == "paused" and not RunLock(run).is_held_elsewhere()
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        app.stdout.close()
        if app.poll() is None:
            app.kill()
