"""The live monitor follows a run database written by another party (here: the engine's store)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.errors import RunError
from engine.genome import SearchSpace
from engine.network import count_parameters, extreme_genomes
from engine.run.store import RunStore
from engine.search.pareto import hypervolume_2d
from emonas_gui.panels.monitor import HV_REFERENCE, MonitorPanel, hypervolume_history
from emonas_gui.widgets.candidate_view import Candidate


def _f2(p):
    """log(parameters) normalized over this space, as the session stores f2."""
    lo, hi = (count_parameters(g, 1, 4) for g in extreme_genomes(SearchSpace()))
    return (math.log(p) - math.log(lo)) / (math.log(hi) - math.log(lo))


def _write_run(run_dir, n_done=6, seed=1):
    rng = np.random.default_rng(seed)
    space = SearchSpace(nf1=(8, 16), n_cells=(5, 7))
    store = RunStore.create(run_dir, {"config": {"samea": {"population": 4, "generations": 3}}})
    genomes = []
    while len(genomes) < n_done + 1:
        g = space.sample(rng)
        if g not in genomes:
            genomes.append(g)
    ids = store.add_candidates([{"genome": g.to_dict(), "generation": i // 4, "phase": "init" if i < 4 else "learning"}
                                for i, g in enumerate(genomes)])
    now = time.time()
    for k, (cid, g) in enumerate(zip(ids[:n_done], genomes)):
        p = count_parameters(g, 1, 4)
        store.update_candidate(cid, status="done", f1=float(rng.uniform(0.2, 0.9)), f2=_f2(p), parameters=p,
                               started_at=now + k, finished_at=now + k + 1, seconds=1.0,
                               metrics={"dice": {"grey": 0.6, "white": 0.7}, "epochs": 2, "best_epoch": 2},
                               curves=[{"epoch": 1, "train_loss": 0.9, "val_loss": 0.95},
                                       {"epoch": 2, "train_loss": 0.7, "val_loss": 0.8}])
    store.update_candidate(ids[n_done], status="failed", error="training failed: loss became NaN at epoch 1",
                           finished_at=now + n_done + 1)
    return store, ids


def test_monitor_shows_a_run_written_elsewhere_and_follows_it(qtbot, tmp_path):
    store, ids = _write_run(tmp_path / "run", n_done=3)
    mon = MonitorPanel(poll_ms=100)
    qtbot.addWidget(mon)
    mon.resize(1100, 700)
    mon.show()
    mon.watch(tmp_path / "run")
    mon.pareto.flush()
    assert len(mon.pareto.candidate_ids()) == 3
    assert "failed" in mon.log_view.toPlainText() and "NaN" in mon.log_view.toPlainText()
    assert mon.progress.maximum() == 12 and mon.progress.value() == 4

    # the writer goes on; the monitor picks it up by itself
    g = SearchSpace(nf1=(32,), n_cells=(9,)).sample(np.random.default_rng(0))
    (cid,) = store.add_candidates([{"genome": g.to_dict(), "generation": 1, "phase": "learning"}])
    p = count_parameters(g, 1, 4)
    store.update_candidate(cid, status="done", f1=0.05, f2=_f2(p), parameters=p, finished_at=time.time(),
                           latency_ms=1412.3, latency_predicted=0)
    qtbot.waitUntil(lambda: cid in mon.pareto.candidate_ids(), timeout=5000)
    log_lines = mon.log_view.toPlainText().splitlines()
    assert any(f"candidate {cid} done" in ln and "latency 1,412 ms" in ln for ln in log_lines)
    assert not any("latency" in ln for ln in log_lines if f"candidate {cid} " not in ln)  # none measured
    assert cid in mon.front  # best error ever: on the front
    x, hv = mon.hypervolume.points()
    assert len(x) == 4 and hv[-1] >= hv[0] > 0

    # click the new point: its details open
    mon.pareto.plot.getPlotItem().vb.autoRange(padding=0.15)
    qtbot.wait(50)
    with qtbot.waitSignal(mon.candidate_opened, timeout=3000) as sig:
        qtbot.mouseClick(mon.pareto.plot.viewport(), Qt.MouseButton.LeftButton, pos=mon.pareto.point_position(cid))
    assert sig.args == [cid]
    assert mon.details.candidate.id == cid
    assert mon.details.genome_table.item(8, 1).text() == "32"
    store.close()
    mon.close()
    assert not mon.is_watching()


def test_hypervolume_history_matches_engine():
    rng = np.random.default_rng(3)
    cands = [Candidate(id=i, genome=None, f1=float(rng.uniform()), f2=float(rng.uniform()), parameters=1000 + i)
             for i in range(10)]
    xs, hv = hypervolume_history(cands)
    f = np.array([[c.f1, c.f2] for c in cands])
    assert xs == list(range(1, 11))
    assert hv[-1] == pytest.approx(hypervolume_2d(f, HV_REFERENCE))
    assert all(b >= a for a, b in zip(hv, hv[1:]))  # never decreases


def test_watching_a_folder_that_is_not_a_run_is_a_clear_error(qtbot, tmp_path):
    mon = MonitorPanel()
    qtbot.addWidget(mon)
    with pytest.raises(RunError, match="not a run directory"):
        mon.watch(tmp_path)
    assert not mon.is_watching()
