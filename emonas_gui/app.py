"""EMONAS Studio application: arguments, QApplication, themes, screenshot mode.

``python main.py [--dataset DIR] [--run DIR] [--screenshot PATH] [--tab NAME] [--candidate ID[,ID]]`` (also the
``emonas-studio`` entry point, :func:`main`). With no dataset the built-in demo dataset opens.
``--screenshot PATH`` opens the window in that state (at least 1280x800), waits until the first case
is shown with its overlay and 3D surfaces, saves a PNG including the VTK pixels and exits, also with
``QT_QPA_PLATFORM=offscreen`` and no X server.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from emonas_gui.theme import THEMES, apply_theme

log = logging.getLogger(__name__)

SCREENSHOT_SIZE = (1440, 900)
SCREENSHOT_TIMEOUT_S = 50.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line arguments of the app."""
    p = argparse.ArgumentParser(prog="emonas-studio", description="EMONAS Studio: neural architecture "
                                "search for 3D medical image segmentation (research use only).")
    p.add_argument("--dataset", metavar="DIR", help="dataset folder or scan file to open ('demo' for the built-in one)")
    p.add_argument("--run", metavar="DIR", help="run directory to open")
    p.add_argument("--screenshot", metavar="PATH", help="save a PNG of the window in this state and exit")
    p.add_argument("--tab", choices=("data", "search", "results", "export"),
                   help="workflow step to show (default: data, or results with --run)")
    p.add_argument("--candidate", metavar="ID[,ID]",
                   help="with --run: the candidate to show (Search: its details; Results: run on the first "
                        "validation case, a second id to compare; Export: the one to export)")
    p.add_argument("--theme", choices=THEMES, help="colour theme (remembered)")
    p.add_argument("--size", metavar="WxH", help="window size, e.g. 1440x900")
    return p.parse_args(list(argv) if argv is not None else None)


def create_app(argv: Sequence[str] | None = None):
    """The QApplication (created once), with organisation names set for QSettings and garbage
    collection confined to the GUI thread."""
    from PySide6.QtWidgets import QApplication

    from emonas_gui.state import APPLICATION, ORGANIZATION

    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0]] + list(argv or []))
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    # worker threads must never run the cyclic collector on Qt objects (see emonas_gui.gcguard)
    from emonas_gui import gcguard

    gcguard.install(app)
    return app


def build_window(args: argparse.Namespace):
    """Create the main window for ``args`` and start opening what they name."""
    from emonas_gui.main_window import MainWindow
    from emonas_gui.state import AppState

    state = AppState()
    theme = args.theme or str(state.settings.value("ui/theme", "dark"))
    window = MainWindow(state, theme=theme)
    if args.size or args.screenshot:
        w, h = SCREENSHOT_SIZE
        if args.size:
            try:
                w, h = (int(v) for v in args.size.lower().split("x"))
            except ValueError:
                raise SystemExit(f"--size {args.size}: expected WIDTHxHEIGHT, e.g. 1440x900") from None
        window.resize(max(w, 1280), max(h, 800))
    window.open_dataset(args.dataset or "demo")
    if args.run:  # the run's own dataset, unless one was named
        window.open_run(args.run, follow_dataset=not args.dataset)
    tab = args.tab or ("results" if args.run else None)
    if tab:
        window.show_step(tab)
    if args.candidate:
        try:
            ids = [int(v) for v in args.candidate.split(",") if v.strip()]
        except ValueError:
            raise SystemExit(f"--candidate {args.candidate}: expected candidate ids, e.g. 5 or 5,12") from None
        show = getattr(window.panels[window.current_step()], "show_candidate", None)
        if not args.run or not callable(show):
            raise SystemExit("--candidate needs --run and the search, results or export step")
        show(ids)
    return window


def take_screenshot(window, path: str | Path, timeout_s: float = SCREENSHOT_TIMEOUT_S) -> Path:
    """Wait until the first case and its surfaces are shown, then save the window as a PNG."""
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from emonas_gui.widgets.surface_view import grab_with_vtk

    panel = window.data_panel
    loop = QEventLoop()
    done = {"ready": False}

    def on_ready():
        done["ready"] = True
        loop.quit()

    panel.ready.connect(on_ready)
    window.state.error.connect(lambda _msg: loop.quit())
    guard = QTimer()
    guard.setSingleShot(True)
    guard.timeout.connect(loop.quit)
    guard.start(int(timeout_s * 1000))
    if panel.current_case() is None or panel.surface_view._tasks.busy():
        loop.exec()
    guard.stop()
    if not done["ready"]:
        log.warning("screenshot taken before the first case was ready")
    # the step on screen, if not Data, may offer the optional panel hook wait_until_ready(msecs)
    shown = dict.get(window.panels, window.current_step())
    wait = getattr(shown, "wait_until_ready", None)
    if shown is not panel and callable(wait):
        wait(int(timeout_s * 500))
    end = time.monotonic() + (2.0 if window.state.run_dir else 0.3)
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = grab_with_vtk(window)
    if not image.save(str(path), "PNG"):
        raise OSError(f"{path}: could not write PNG")
    return path


def _route_qt_messages() -> None:
    """Send Qt's own messages to ``logging`` (the offscreen platform's 'not supported' notes to debug)."""
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    levels = {QtMsgType.QtDebugMsg: logging.DEBUG, QtMsgType.QtInfoMsg: logging.INFO,
              QtMsgType.QtWarningMsg: logging.WARNING, QtMsgType.QtCriticalMsg: logging.ERROR,
              QtMsgType.QtFatalMsg: logging.CRITICAL}
    qt_log = logging.getLogger("qt")

    def handler(mode, context, message):
        level = levels.get(mode, logging.WARNING)
        if message.startswith("This plugin does not support"):
            level = logging.DEBUG
        qt_log.log(level, "%s", message)

    qInstallMessageHandler(handler)


def has_display() -> bool:
    """Whether Qt can open a window: a platform chosen explicitly, or an X11 or Wayland display on
    Linux (other systems always have one)."""
    if os.environ.get("QT_QPA_PLATFORM") or not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


#: Import names of the packages of the ``gui`` extra (PySide6, pyqtgraph, VTK).
GUI_MODULES = ("PySide6", "pyqtgraph", "vtkmodules")


def missing_gui_packages() -> list[str]:
    """The app's packages that are not installed (a headless install has none of them)."""
    import importlib.util

    return [m for m in GUI_MODULES if importlib.util.find_spec(m) is None]


def main(argv: Sequence[str] | None = None) -> int:
    """Start EMONAS Studio (``emonas-studio`` / ``python main.py``)."""
    args = parse_args(argv)
    missing = missing_gui_packages()
    if missing:
        sys.stderr.write(f"emonas-studio: error: the app needs {', '.join(missing)}, not installed here; "
                         "install them with: pip install 'emonas-studio[gui]' (the emonas command line works without)\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not has_display():
        if not args.screenshot:
            sys.stderr.write("emonas-studio: error: no display to open the window on (DISPLAY and WAYLAND_DISPLAY "
                             "are unset); use the emonas command line, or --screenshot PATH\n")
            return 2
        os.environ["QT_QPA_PLATFORM"] = "offscreen"  # a screenshot needs no screen
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    _route_qt_messages()
    app = create_app()
    window = build_window(args)
    window.show()
    if args.screenshot:
        from engine.errors import EmonasError

        try:
            out = take_screenshot(window, args.screenshot)
        except (OSError, EmonasError) as exc:
            sys.stderr.write(f"error: {exc}\n")
            window.close()
            return 2
        log.info("screenshot saved to %s", out)
        window.close()
        app.processEvents()
        return 0
    code = app.exec()
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())
