"""Workflow panels of EMONAS Studio: Data -> Search -> Results -> Export.

Contract: each panel is a ``QWidget`` subclass constructed as ``Panel(state: AppState, parent=None)``
(:class:`emonas_gui.state.AppState`). A panel reads the shared state's attributes (``dataset``,
``dataset_path``, ``run_dir``, ``settings``) when it is built, since it may be built after they were
set (``main.py --run DIR --tab search`` sets the run first), then subscribes to its signals
(``dataset_changed``, ``run_changed``) and reports through ``state.status_message.emit(str)`` and ``state.error.emit(str)``
(shown as a dialog by the main window). Panels never block the GUI thread: long work runs in a worker
that reports through queued Qt signals. A panel must stop its threads and timers when it is closed or
destroyed (``closeEvent``/``shutdown()``).

The main window imports them by name:

- ``emonas_gui.panels.data.DataPanel``
- ``emonas_gui.panels.search.SearchPanel``
- ``emonas_gui.panels.results.ResultsPanel``
- ``emonas_gui.panels.export.ExportPanel``

If a panel defines ``shutdown()`` the main window calls it before closing. If it defines
``wait_until_ready(msecs: int) -> bool`` (block until what it is loading is on screen),
``main.py --screenshot`` calls it before taking a screenshot of that step; ``show_candidate(ids: list[int])``
(show the run's candidate ``ids[0]``, and ``ids[1]`` to compare) serves ``main.py --candidate``. The steps after Data are
built the first time they are shown or looked up in ``MainWindow.panels``.
"""
