"""The GUI thread stays responsive while a search runs: the largest delay of a GUI-thread timer.

A 20 ms QTimer on the GUI thread records how late each tick comes while the Search panel runs a real
(tiny) search on the demo data, until the first candidate has finished and appeared on the plot.
The figure is printed and written to ``$EMONAS_BENCH_OUT`` (default: the test's tmp folder) as JSON
for BENCHMARKS.md; there is no assertion on time (the machine may be busy), only that the timer
kept ticking throughout (the GUI thread was never blocked for the whole search).

Marked ``slow`` (a second real search, ~1-2 minutes here): run it with
``python -m pytest tests/gui/test_responsiveness.py -m slow -s``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QTimer

from emonas_gui.panels.search import SearchPanel
from emonas_gui.state import AppState
from test_search_run import LONG, _configure  # tests/gui is on sys.path (rootdir-less test modules)

TICK_MS = 20


@pytest.mark.slow
def test_gui_timer_delay_during_a_search(qtbot, tmp_path):
    state = AppState()
    state.set_dataset(None, "demo")
    panel = SearchPanel(state)
    qtbot.addWidget(panel)
    panel.resize(1400, 900)
    panel.show()
    _configure(panel, tmp_path)
    panel.run_edit.setText(str(tmp_path / "run"))

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    try:
        qtbot.wait(200)
        t0 = time.perf_counter()
        assert panel.start()
        qtbot.waitUntil(lambda: len(panel.monitor.pareto.candidate_ids()) >= 1, timeout=LONG)
        t1 = time.perf_counter()
        n_before = len(ticks)
        panel.stop()
        qtbot.waitUntil(lambda: panel.summary is not None or not panel.is_running(), timeout=LONG)
    finally:
        timer.stop()
    gaps = np.diff([t for t in ticks if t >= t0]) * 1000.0
    during = gaps[: max(1, n_before - 1)]
    figure = {
        "what": "largest delay of a 20 ms GUI-thread QTimer while the app runs a search (ms)",
        "search_seconds": round(t1 - t0, 1),
        "ticks": int(len(during)),
        "max_gap_ms": round(float(during.max()), 1),
        "p99_gap_ms": round(float(np.percentile(during, 99)), 1),
        "median_gap_ms": round(float(np.median(during)), 1),
        "cpu_count": os.cpu_count(),
    }
    print("GUI responsiveness during a search:", json.dumps(figure))
    out = Path(os.environ.get("EMONAS_BENCH_OUT", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    (out / "gui_responsiveness.json").write_text(json.dumps(figure, indent=2))
    # the timer kept firing all through the search (a blocked GUI thread would give a handful)
    assert len(during) > (t1 - t0) * 1000 / TICK_MS / 10
