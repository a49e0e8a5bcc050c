"""Training a run's candidates again: the final model (``emonas retrain``) and, as the search trained
them, candidates whose weights were pruned."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engine.errors import RunError

log = logging.getLogger(__name__)


def run_context(run_dir: str | Path) -> dict[str, Any]:
    """Config, training settings and data spec stored in a run (read-only, safe while it runs)."""
    from engine.run.store import RunStore

    with RunStore.open_readonly(run_dir) as store:
        problem = store.get_meta("problem")
        train = store.train_config()
        config = store.get_meta("config")
    if not problem or not train:
        raise RunError(f"{run_dir}: the run has not started training yet (no dataset plan stored)")
    return {"problem": problem, "train": dict(train), "config": config}


def with_split_file(data_spec: dict, splits: str | Path | None, fold: int | None = None) -> dict:
    """``data_spec`` with its split replaced by the one of the split file ``splits`` (unchanged when None)."""
    if not splits:
        return dict(data_spec)
    from engine.data import open_dataset
    from engine.data.splits import split_for_dataset

    return {**data_spec, "split": split_for_dataset(open_dataset(data_spec["dataset"]), splits, fold)}


def candidate_row(run_dir: str | Path, candidate_id: int) -> dict:
    from engine.run.store import RunStore

    with RunStore.open_readonly(run_dir) as store:
        return store.candidate(candidate_id)


def train_genome(genome, data_spec: dict, train: dict, out_dir: str | Path, device: str = "auto", final: bool = False,
                 callback=None, cancel=None):
    """Train ``genome`` with the run's settings; ``final`` trains on training + validation cases.

    ``callback`` and ``cancel`` are those of :func:`engine.train.trainer.train_candidate`.
    """
    from engine.train.config import TrainerConfig
    from engine.train.data import prepare_training_data
    from engine.train.trainer import train_candidate

    spec = dict(data_spec)
    split = spec.get("split")
    if final and split:
        split = {"train": list(split["train"]) + list(split["val"]), "val": list(split["val"])}
    data = prepare_training_data(spec["dataset"], seed=int(spec.get("seed", 0)), plan_overrides=spec.get("plan_overrides"),
                                 cache_dir=spec.get("cache_dir"), split=split, plan=spec.get("plan"))
    settings = {**train, "device": device if device in ("auto", "cpu", "cuda") else "auto"}
    if final:  # the validation cases are trained on: no early stopping, the whole budget
        settings["patience"] = max(int(settings.get("patience", 1)), int(settings["epochs"]))
        # the final model trains with nnU-Net's augmentation strength (along the allowed axes), unless the
        # run says otherwise: the light schedule only pays over a candidate's short training
        settings.setdefault("augmentation", "strong")
    return train_candidate(genome, data, TrainerConfig.from_dict(settings), out_dir=out_dir, callback=callback,
                           cancel=cancel)


def retrain_as_searched(run_dir: str | Path, candidate_id: int, out_dir: str | Path, device: str = "auto") -> dict:
    """Train candidate ``candidate_id`` again exactly as the search trained it into the training folder
    ``out_dir``: its genome, the run's data spec and training settings, through the search's own
    :func:`engine.run.evaluate.evaluate_candidate`. For a finished candidate whose weights were pruned;
    returns the evaluation's result and raises :class:`RunError` when the training fails.
    """
    from engine.run.evaluate import evaluate_candidate

    row = candidate_row(run_dir, candidate_id)
    ctx = run_context(run_dir)
    log.info("candidate %s of %s has no weights (pruned): training it again", candidate_id, run_dir)
    if not ctx["problem"].get("data"):
        raise RunError(f"{run_dir}: the run database does not say how candidate {candidate_id} was trained")
    task = {"candidate_id": int(candidate_id), "genome": row["genome"], "out_dir": str(out_dir),
            "data": ctx["problem"]["data"], "train": ctx["train"], "device": device}
    result = evaluate_candidate(task)
    if result.get("status") != "done" or not (Path(out_dir) / "weights.pt").is_file():
        raise RunError(f"{run_dir}: training pruned candidate {candidate_id} again failed "
                       f"({result.get('error') or result.get('status')})")
    return result


def candidate_folder(run_dir: str | Path, candidate_id: int, device: str = "auto") -> Path:
    """The training folder of a finished candidate in the run; trained again first (in place, by
    :func:`retrain_as_searched`) if its weights were pruned."""
    row = candidate_row(run_dir, candidate_id)
    if row["status"] != "done":
        raise RunError(f"{run_dir}: candidate {candidate_id} is {row['status']}, not a trained network")
    folder = Path(run_dir) / "candidates" / str(int(candidate_id))
    if not (folder / "weights.pt").is_file() or not (folder / "training.json").is_file():
        retrain_as_searched(run_dir, candidate_id, folder, device)
    return folder


def retrain_epochs(run_dir: str | Path, epochs: int | None = None) -> int:
    """The epochs a retraining runs: ``epochs``, or the run's own budget when None."""
    if epochs is None:
        return int(run_context(run_dir)["train"]["epochs"])
    if epochs < 1:
        raise RunError(f"--epochs must be at least 1, got {epochs}")
    return int(epochs)


def train_final_model(run_dir: str | Path, candidate_id: int, out_dir: str | Path, epochs: int | None = None,
                      device: str = "auto", callback=None, cancel=None, splits: str | Path | None = None,
                      fold: int | None = None) -> dict:
    """Train candidate ``candidate_id`` from scratch on the training and validation cases (final model);
    with ``splits`` (a split file, fold ``fold``) on that file's instead of the run's.

    ``callback(event)`` gets the trainer's "epoch" and "step" events; ``cancel.is_set()`` is polled
    every few steps, and a cancelled retraining raises :class:`RunError` (its folder is incomplete).
    """
    from engine.genome import Genome
    from engine.outputs import check_output, check_training_out, run_sources

    ctx = run_context(run_dir)
    check_output(out_dir, run_sources(run_dir, ctx["problem"].get("data")), option="--out")
    row = candidate_row(run_dir, candidate_id)
    genome = Genome.from_dict(row["genome"])
    check_training_out(out_dir, genome.to_dict(), None, force=True)
    train = dict(ctx["train"])
    if epochs is not None:
        train["epochs"] = retrain_epochs(run_dir, epochs)
    spec = with_split_file(ctx["problem"]["data"], splits, fold)
    result = train_genome(genome, spec, train, out_dir, device, final=True, callback=callback, cancel=cancel)
    if result.status == "cancelled":
        raise RunError(f"{out_dir}: retraining of candidate {candidate_id} cancelled")
    return {"candidate": int(candidate_id), "genome": genome.to_dict(), "out": str(out_dir), "epochs": result.epochs,
            "f1": result.f1, "dice": result.dice, "parameters": result.parameters, "seconds": result.seconds}
