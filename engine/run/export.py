"""Exporting a candidate of a search: where it sat on the run's Pareto front, its training folder
(trained again as the search trained it when its weights were pruned, by
``engine.run.retrain.retrain_as_searched``), packaged as a model folder by ``engine.export``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from engine.errors import ExportError, RunError
from engine.export.package import TRAINING_JSON, TRAINING_WEIGHTS


def candidate_summary(run_dir: str | os.PathLike, candidate_id: int | str) -> tuple[dict[str, Any], Path, bool]:
    """Where candidate ``candidate_id`` of a run sits on the Pareto front, its training folder, and
    whether its weights are still there (a pruned candidate must be retrained before export)."""
    from engine.run.store import RunStore

    try:
        cid = int(candidate_id)
    except (TypeError, ValueError):
        raise ExportError(f"--candidate must be a candidate id (an integer), got {candidate_id!r}") from None
    store = RunStore.open_readonly(run_dir)
    try:
        cand = store.candidate(cid)
        front = store.front()
        folder = store.candidate_dir(cid)
    finally:
        store.close()
    if cand["status"] != "done":
        raise ExportError(f"{run_dir}: candidate {cid} is {cand['status']}, only finished candidates can be exported")
    front_ids = [c["id"] for c in front]
    summary = {
        "run": str(Path(run_dir).resolve()),
        "id": cid,
        "generation": cand.get("generation"),
        "phase": cand.get("phase"),
        "f1": cand.get("f1"),
        "f2": cand.get("f2"),
        "parameters": cand.get("parameters"),
        "on_pareto_front": cid in front_ids,
        # position along the front by ascending f1 (0 = most accurate); None when dominated
        "front_position": front_ids.index(cid) if cid in front_ids else None,
        "front_size": len(front_ids),
        "validation": cand.get("metrics"),
    }
    present = (folder / TRAINING_JSON).is_file() and (folder / TRAINING_WEIGHTS).is_file() and not cand.get("pruned")
    return summary, folder, present


def run_dataset_folder(run_dir: str | os.PathLike) -> Path | None:
    """The dataset folder a run searched on, when the run's database names one that still exists."""
    from engine.run.store import recorded_dataset

    name = recorded_dataset(run_dir)
    if name is None:
        return None
    if name == "demo":
        from engine.data.demo import demo_dataset_path

        return demo_dataset_path()
    return Path(name) if Path(name).is_dir() else None


def export_candidate(
    run_dir: str | os.PathLike,
    candidate_id: int | str,
    out_dir: str | os.PathLike,
    formats: str | Iterable[str] | None = None,
    *,
    overwrite: bool = False,
    device: str = "cpu",
    dataset: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export candidate ``candidate_id`` of the search in ``run_dir`` (retrained first if pruned).

    ``model.json``'s ``candidate`` says where it sat on the run's Pareto front. The labels' codes
    and colours come from ``dataset``'s metadata, by default from the run's dataset folder.
    """
    from engine.export.package import export_model
    from engine.outputs import Source, check_output
    from engine.run.retrain import retrain_as_searched

    out = Path(out_dir)
    run_source = [Source(run_dir, "run")]
    check_output(out, run_source, option="--out")
    summary, folder, present = candidate_summary(run_dir, candidate_id)
    if dataset is None:
        dataset = run_dataset_folder(run_dir)
    if dataset is not None:
        run_source.append(Source(dataset, "dataset"))
        check_output(out, run_source, option="--out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportError(f"{out}: already exists and is not empty (choose another --out)")
    if present:
        return export_model(folder, out, formats, candidate=summary, overwrite=overwrite, dataset=dataset,
                            sources=run_source)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.retrain.", dir=out.parent))
    try:
        try:
            result = retrain_as_searched(run_dir, summary["id"], work, device)
        except RunError as exc:
            raise ExportError(str(exc)) from None
        summary = {**summary, "retrained": True, "retrained_validation": result.get("metrics")}
        return export_model(work, out, formats, candidate=summary, overwrite=overwrite, dataset=dataset,
                            sources=run_source)
    finally:
        shutil.rmtree(work, ignore_errors=True)
