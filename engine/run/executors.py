"""Executors run candidate tasks: in this process, in a local process pool, or on Ray.

All share one call: ``executor.run(tasks, on_start, on_result, cancel)`` runs the tasks, reports each
as it starts and as it finishes (in completion order), and returns early once ``cancel`` is set,
leaving unfinished tasks unreported (the session keeps them queued for the next resume). Executors
carry the wire form of the records (``engine.run.records``): a task is ``CandidateTask.to_dict()``,
which the executor completes with its ``device`` and ``threads``, and a result ``CandidateResult.to_dict()``,
so that they cross process boundaries (a pool worker, a Ray node) as plain data. An evaluator is
``evaluator(task dict, cancel) -> result dict`` (``engine.run.evaluate.evaluate_candidate`` by default);
a worker that dies or raises gives a ``failed`` result and the others go on.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Callable, Iterable

from engine.device import usable_cpus
from engine.errors import ConfigError
from engine.run.evaluate import evaluate_candidate, failed_result
from engine.faults import fault

log = logging.getLogger(__name__)

Evaluator = Callable[..., dict]
POLL_SECONDS = 0.2


def _call(evaluator: Evaluator, task: dict, cancel=None) -> dict:
    try:
        fault(f"candidate.{task.get('candidate_id')}")  # in the process that trains it (a test kills it here)
        return evaluator(task, cancel)
    except Exception as exc:  # noqa: BLE001 - the evaluator's own failure is the candidate's failure
        return failed_result(task, f"{type(exc).__name__}: {exc}".splitlines()[0])


class InProcessExecutor:
    """One candidate at a time in this process; cancel reaches the training loop itself."""

    name = "inprocess"

    def __init__(self, evaluator: Evaluator = evaluate_candidate, device: str = "auto"):
        self.evaluator = evaluator
        self.device = device
        self.slots = 1

    def run(self, tasks: Iterable[dict], on_start, on_result, cancel) -> None:
        for task in tasks:
            if cancel.is_set():
                return
            task.setdefault("device", self.device)
            on_start(task)
            result = _call(self.evaluator, task, cancel)
            if result.get("status") == "cancelled" or cancel.is_set() and result.get("status") != "done":
                return
            on_result(task, result)

    def close(self) -> None:
        pass


def _slot_main(conn, threads: int) -> None:
    """A pool worker: trains the tasks it receives one at a time until told to stop (None) or orphaned."""
    import signal

    import torch

    # Ctrl-C in a terminal reaches the whole process group: the search pauses and stops its workers,
    # which must not die first and have their candidates recorded as failed
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    torch.set_num_threads(max(1, threads))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the search process is gone
            return
        if msg is None:
            return
        evaluator, task = msg
        conn.send(_call(evaluator, task, None))


class _Slot:
    """One worker process of the local pool and the task it is training."""

    def __init__(self, device: str, threads: int):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # safe with torch and CUDA
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_slot_main, args=(child, threads), name=f"emonas-worker-{device}")
        self.proc.start()
        child.close()  # so that the worker's death reads as EOF here
        self.device = device
        self.task: dict | None = None

    def collect(self) -> dict | None:
        """The finished task's result; a failed one if the worker died; None while it is still training."""
        try:
            if self.conn.poll():
                return self.conn.recv()
        except (EOFError, OSError):
            pass
        if self.proc.is_alive():
            return None
        self.proc.join(timeout=10)
        return failed_result(self.task, f"worker process died (killed or out of memory; exit code {self.proc.exitcode})")

    def stop(self, wait: float = 10.0) -> None:
        if self.proc.is_alive() and self.task is None:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(timeout=wait)
        if self.proc.is_alive():  # in-flight trainings cannot be cancelled inside a worker: stop it
            self.proc.terminate()
            self.proc.join(timeout=wait)
        self.conn.close()


class LocalPoolExecutor:
    """``workers`` candidates at once, each in a worker process of its own.

    CPU threads are shared out between the workers; with GPUs, worker slots go round the devices
    (several small candidates may share one GPU when workers > GPUs). A worker that dies (killed, out of
    memory) fails only the candidate it was training and is replaced; its neighbours train on.
    """

    name = "local"

    def __init__(self, evaluator: Evaluator = evaluate_candidate, workers: int = 2, device: str = "auto"):
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.evaluator = evaluator
        self.slots = int(workers)
        self.devices = _device_slots(device, self.slots)
        self.threads = max(1, usable_cpus() // self.slots)  # the CPUs of this process's share, not the node's
        given = os.environ.get("OMP_NUM_THREADS", "").strip()
        if given.isdigit() and int(given) > 0:  # the user's own cap, which set_num_threads would override
            self.threads = min(self.threads, int(given))
        self._workers: list[_Slot | None] = [None] * self.slots

    def _worker(self, i: int) -> _Slot:
        w = self._workers[i]
        if w is None or not w.proc.is_alive():
            w = self._workers[i] = _Slot(self.devices[i], self.threads)
        return w

    def _busy(self) -> list[_Slot]:
        return [w for w in self._workers if w is not None and w.task is not None]

    def run(self, tasks: Iterable[dict], on_start, on_result, cancel) -> None:
        from multiprocessing.connection import wait

        queue = list(tasks)
        while queue or self._busy():
            for i, w in enumerate(self._workers):
                if not queue or cancel.is_set():
                    break
                if w is not None and w.task is not None:
                    continue
                w = self._worker(i)
                task = w.task = queue.pop(0)
                task.setdefault("device", w.device)
                task.setdefault("threads", self.threads)
                on_start(task)
                try:
                    w.conn.send((self.evaluator, task))
                except OSError:  # died while idle: collect() reports it below
                    pass
            if cancel.is_set():
                self._stop_all(wait=10)
                return
            busy = self._busy()
            wait([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=POLL_SECONDS)
            for w in busy:
                result = w.collect()
                if result is not None:
                    task, w.task = w.task, None
                    on_result(task, result)

    def _stop_all(self, wait: float) -> None:
        for w in self._workers:
            if w is not None:
                w.stop(wait=wait)
        self._workers = [None] * self.slots

    def close(self) -> None:
        self._stop_all(wait=30)


def _device_slots(device: str, slots: int) -> list[str]:
    if device in ("auto", "cuda"):
        from engine.device import cuda_count

        n = cuda_count()
        if n:
            return [f"cuda:{i % n}" for i in range(slots)]
        return ["cpu"] * slots if device == "auto" else ["cuda"] * slots
    return [device] * slots


def _ray_task(evaluator: Evaluator, task: dict) -> dict:
    return _call(evaluator, task, None)


class RayExecutor:
    """Candidates as Ray tasks: on a local Ray (127.0.0.1, no dashboard) or a cluster at ``address``.

    ``cpus``/``gpus`` per candidate are Ray resources (fractional GPUs let small candidates share one).
    A lost worker or node gives a failed candidate; tasks are never retried by Ray (the search decides).
    """

    name = "ray"

    def __init__(self, evaluator: Evaluator = evaluate_candidate, address: str = "", num_cpus: int = 0,
                 cpus_per_candidate: float = 1.0, gpus_per_candidate: float = 0.0, device: str = "auto",
                 workers: int = 0):
        try:
            import ray
        except ImportError:
            raise ConfigError("the Ray executor needs Ray: pip install 'emonas-studio[ray]'") from None
        self.ray = ray
        self.evaluator = evaluator
        self.started_here = False
        if not ray.is_initialized():
            kw = dict(include_dashboard=False, dashboard_host="127.0.0.1", log_to_driver=False, configure_logging=False)
            if address:
                ray.init(address=address, **kw)
            else:
                # local workers import what this process imports (the project, a test's helpers)
                path = os.pathsep.join(p for p in sys.path if p)
                ray.init(num_cpus=num_cpus or None, runtime_env={"env_vars": {"PYTHONPATH": path}},
                         _node_ip_address="127.0.0.1", **kw)  # a local Ray listens on loopback only
            self.started_here = True
        total = ray.cluster_resources().get("CPU", 1)
        self.slots = int(workers) if workers and workers > 1 else max(1, int(total // cpus_per_candidate))
        self.device = "cuda" if gpus_per_candidate > 0 else ("cpu" if device == "auto" else device)
        self.threads = max(1, int(cpus_per_candidate))
        self.remote = ray.remote(num_cpus=cpus_per_candidate, num_gpus=gpus_per_candidate, max_retries=0)(_ray_task)
        self._evaluator_ref = ray.put(evaluator)

    def run(self, tasks: Iterable[dict], on_start, on_result, cancel) -> None:
        ray = self.ray
        queue = list(tasks)
        running: dict = {}
        while queue or running:
            while queue and len(running) < self.slots and not cancel.is_set():
                task = queue.pop(0)
                task.setdefault("device", self.device)
                task.setdefault("threads", self.threads)
                on_start(task)
                running[self.remote.remote(self._evaluator_ref, task)] = task
            if cancel.is_set():
                for ref in running:
                    ray.cancel(ref, force=True)
                return
            done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                task = running.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - lost worker, node, or an error inside Ray
                    result = failed_result(task, f"Ray: {_ray_reason(exc)}")
                on_result(task, result)

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()


def _ray_reason(exc: BaseException) -> str:
    """The innermost cause of a Ray error, on one line without colour codes."""
    while getattr(exc, "cause", None) is not None and exc.cause is not exc:
        exc = exc.cause
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:2000]


def make_executor(resources, evaluator: Evaluator = evaluate_candidate, device: str = "auto"):
    """The executor a ``ResourcesConfig`` asks for."""
    kind = resources.executor
    if kind == "inprocess" or (kind == "local" and resources.workers == 1):
        return InProcessExecutor(evaluator, device)
    if kind == "local":
        return LocalPoolExecutor(evaluator, resources.workers, device)
    if kind == "ray":
        return RayExecutor(evaluator, resources.ray_address, resources.ray_num_cpus, resources.cpus_per_candidate,
                           resources.gpus_per_candidate, device, resources.workers)
    raise ConfigError(f"resources.executor must be inprocess, local or ray, got {kind!r}")
