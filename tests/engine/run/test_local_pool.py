"""The local pool executor: candidates in parallel worker processes, a dead worker fails only its own."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

from engine.run.executors import LocalPoolExecutor


def pid_or_die(task: dict, cancel=None) -> dict:
    """Reports the worker's pid; task ``die`` SIGKILLs its worker, ``slow`` takes a while."""
    if task.get("die"):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(task.get("sleep", 0.0))
    return {"candidate_id": task["candidate_id"], "status": "done", "pid": os.getpid(),
            "device": task["device"], "threads": task["threads"]}


def run(executor, tasks, cancel=None):
    started, results = [], {}
    executor.run(tasks, lambda t: started.append(t["candidate_id"]),
                 lambda t, r: results.__setitem__(t["candidate_id"], r), cancel or threading.Event())
    return started, results


def test_two_workers_train_at_once_and_a_dead_worker_fails_only_its_candidate():
    ex = LocalPoolExecutor(pid_or_die, workers=2, device="cpu")
    try:
        tasks = [{"candidate_id": 1, "sleep": 0.3}, {"candidate_id": 2, "die": True, "sleep": 0.3},
                 {"candidate_id": 3}, {"candidate_id": 4}, {"candidate_id": 5}]
        started, results = run(ex, tasks)
        assert started == [1, 2, 3, 4, 5] and sorted(results) == [1, 2, 3, 4, 5]
        assert results[2]["status"] == "failed" and results[2]["error"].startswith("worker process died")
        assert "exit code -9" in results[2]["error"]
        done = [results[i] for i in (1, 3, 4, 5)]
        assert all(r["status"] == "done" and r["device"] == "cpu" and r["threads"] >= 1 for r in done)
        assert results[1]["pid"] != os.getpid()  # trained in a worker, which was not disturbed by its neighbour
        # the workers live on across calls (no start-up cost per generation): over both calls, the worker
        # that trained candidate 1 and one replacement for the dead worker are all the processes there were
        # (the replacement starts when its slot next gets a task, in this call or the next)
        _, again = run(ex, [{"candidate_id": 6}, {"candidate_id": 7}])
        assert results[1]["pid"] in {r["pid"] for r in again.values()}
        assert len({r["pid"] for r in done} | {r["pid"] for r in again.values()}) == 2
    finally:
        ex.close()
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("emonas-worker")]


def test_ctrl_c_does_not_kill_a_worker_in_the_middle_of_a_candidate():
    """SIGINT (Ctrl-C reaches the whole process group) is for the search to handle, not its workers."""
    ex = LocalPoolExecutor(pid_or_die, workers=1, device="cpu")
    try:
        run(ex, [{"candidate_id": 0}])  # the worker is up
        (worker,) = [p for p in multiprocessing.active_children() if p.name.startswith("emonas-worker")]
        threading.Timer(1.0, os.kill, (worker.pid, signal.SIGINT)).start()
        _, results = run(ex, [{"candidate_id": 1, "sleep": 2.0}])
        assert results[1]["status"] == "done" and results[1]["pid"] == worker.pid
    finally:
        ex.close()


def test_cancel_stops_the_workers_and_leaves_unfinished_tasks_unreported():
    ex = LocalPoolExecutor(pid_or_die, workers=2, device="cpu")
    cancel = threading.Event()
    threading.Timer(1.5, cancel.set).start()
    t0 = time.monotonic()
    started, results = run(ex, [{"candidate_id": i, "sleep": 60} for i in range(4)], cancel)
    assert time.monotonic() - t0 < 30
    assert started == [0, 1] and results == {}
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("emonas-worker")]
    ex.close()


def test_threads_are_shared_out_from_the_cpus_this_process_may_use(monkeypatch):
    """On a share of a large node (SLURM, taskset, docker --cpuset-cpus) the workers split the CPUs of the
    share, not the node's: 4 of 64 CPUs and 2 workers give 2 threads each, not 32; OMP_NUM_THREADS caps them."""
    from engine import device
    from engine.data.preprocess import preprocess_workers

    monkeypatch.setattr(device, "cgroup_cpu_limit", lambda: None)  # whatever quota this machine has
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 4, 5, 6}, raising=False)
    monkeypatch.delenv("EMONAS_PREPROCESS_WORKERS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert LocalPoolExecutor(pid_or_die, workers=2, device="cpu").threads == 2
    assert LocalPoolExecutor(pid_or_die, workers=8, device="cpu").threads == 1
    assert preprocess_workers() == 4
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert LocalPoolExecutor(pid_or_die, workers=2, device="cpu").threads == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's cap holds in every worker
    assert LocalPoolExecutor(pid_or_die, workers=2, device="cpu").threads == 3
    assert LocalPoolExecutor(pid_or_die, workers=8, device="cpu").threads == 2
