"""``emonas train`` (one genome on one dataset) and ``emonas evaluate`` (metrics of two label folders)."""

from __future__ import annotations

from engine.cli._common import progress_bar, subcommand
from engine.cli.params import parse_triple
from engine.errors import ConfigError
from engine.genome import load_genome


def _train(args) -> dict:
    from engine.config import PROFILE_DEFAULTS
    from engine.data import open_dataset
    from engine.outputs import Source, check_output, check_training_out, dataset_sources

    genome = load_genome(args.genome)
    dataset = open_dataset(args.dataset)
    sources = dataset_sources(dataset)
    if not args.genome.lstrip().startswith("{"):
        sources.append(Source(args.genome, "genome file"))
    check_output(args.out, sources, option="--out")
    if args.cache_dir:
        check_output(args.cache_dir, sources, option="--cache-dir")
    check_training_out(args.out, genome.to_dict(), str(dataset.name), args.force)

    from engine.train import TrainerConfig, prepare_training_data, train_candidate

    overrides = dict(PROFILE_DEFAULTS[args.profile].get("training", {}).get("plan", {}))  # paper: 2x2x2 pooling, batch 2
    if args.patch:
        overrides["patch_size"] = list(parse_triple(args.patch))
    if args.batch is not None:
        if args.batch < 1:
            raise ConfigError(f"--batch must be at least 1, got {args.batch}")
        overrides["batch_size"] = args.batch
    config = TrainerConfig(
        epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
        device=args.device,
        profile=args.profile,
        iterations_per_epoch=args.iterations_per_epoch,
        num_threads=args.threads,
        augmentation=args.augmentation,
        val_every=args.val_every,
        lr_schedule=args.lr_schedule or TrainerConfig.lr_schedule,
        mirror_axes=_mirror_axes(args.mirror_axes),
    )
    with progress_bar(None, "preprocessing") as bar:
        data = prepare_training_data(
            dataset, seed=args.seed, plan_overrides=overrides, cache_dir=args.cache_dir,
            progress=lambda done, total, case_id: bar.update(1),
        )
    with progress_bar(config.epochs, "training") as bar:

        def on_event(event: dict) -> None:
            if event.get("event") == "epoch":
                bar.update(1)
                dice = event.get("val_dice_mean")
                bar.set_postfix_str(f"loss {event['train_loss']:.3f}" + (f" dice {dice:.3f}" if dice is not None else ""))

        result = train_candidate(genome, data, config, out_dir=args.out, callback=on_event)
    out = {
        "f1": result.f1,
        "f1_raw": result.f1_raw,
        "log_parameters": result.log_parameters,
        "parameters": result.parameters,
        "dice": result.dice,
        "epochs": result.epochs,
        "best_epoch": result.best_epoch,
        "seconds": result.seconds,
        "train_step_seconds": result.train_step_seconds,
        "device": result.device,
        "status": result.status,
        "validation": result.metrics.get("summary", {}),
        "out": str(args.out),
    }
    if not args.json:
        dice = ", ".join(f"{k} {v:.3f}" for k, v in result.dice.items())
        print(
            f"trained {result.epochs} epochs in {result.seconds:.0f} s on {result.device} "
            f"(best epoch {result.best_epoch}); validation Dice: {dice}\n"
            f"f1 {result.f1:.4f}  parameters {result.parameters:,} (log {result.log_parameters:.3f})\n"
            f"training folder: {args.out}"
        )
    return out


def _evaluate(args) -> dict:
    from engine.infer.metrics import evaluate_folders, labels_from_file

    labels = labels_from_file(args.labels) if args.labels else None
    csv_path = _csv_target(args) if args.csv else None
    ev = evaluate_folders(args.pred, args.ref, labels=labels)
    result = ev.to_dict()
    if csv_path is not None:
        per_case, summary = ev.write_csv(csv_path)
        result.update(csv=str(per_case), summary_csv=str(summary))
    if not args.json:
        print(ev.table())
        if csv_path is not None:
            print(f"per case and label -> {per_case}\nsummary -> {summary}")
    return result


def _csv_target(args):
    """The --csv path, checked before any work: a .csv file (never one of the label maps read) in a folder that exists."""
    from pathlib import Path

    path = Path(args.csv)
    if not path.name.lower().endswith(".csv") or path.name.lower() == ".csv":
        raise ConfigError(f"--csv {path}: give a file name ending in .csv")
    if not path.parent.is_dir():
        raise ConfigError(f"--csv {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise ConfigError(f"--csv {path}: is a folder, not a CSV file")
    from engine.infer.metrics import _csv_stem
    from engine.outputs import Source, check_output

    sources = [Source(p, "label map") for d in (args.pred, args.ref) if Path(d).is_dir() for p in Path(d).iterdir()]
    for target in (path, path.with_name(_csv_stem(path) + "_summary.csv")):
        check_output(target, sources, option="--csv")
    return path


def register(sub) -> None:
    p = subcommand(sub, "train", _train, "train one genome on a dataset and report f1, parameters and validation Dice")
    p.add_argument("--dataset", required=True, help="dataset folder, or 'demo' for the built-in demo data")
    p.add_argument("--genome", required=True, help="genome as a JSON string or a JSON file")
    p.add_argument("--out", required=True, help="training folder to write (weights, curves, metrics): new or empty")
    p.add_argument("--force", action="store_true",
                   help="replace an existing training folder of the same genome and dataset")
    p.add_argument("--epochs", type=int, default=120, help="maximum epochs (default 120)")
    p.add_argument("--patience", type=int, default=20, help="early-stopping patience in epochs (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, sampling and weights (default 0)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto", help="training device (default auto)")
    p.add_argument("--profile", choices=["default", "paper"], default="default",
                   help="default: Dice+CE, nnU-Net-style augmentation, the plan's pooling and batch; paper: the "
                        "authors' protocol (batch 2, 2x2x2 pooling, their early stopping, LR schedule, augmentation, "
                        "soft Dice; docs/paper_profile.md)")
    p.add_argument("--augmentation", choices=["auto", "light", "strong"], default="auto",
                   help="default profile: auto grows mirroring, rotation, scaling and intensity changes with "
                        "the planned steps (light for short trainings, nnU-Net's strength from 20,000 steps); "
                        "light: none; strong: nnU-Net's (mirroring only along axes the labels allow)")
    p.add_argument("--mirror-axes", default=None, metavar="AXES",
                   help="mirror these axes (x, y, z or 0, 1, 2: 'x', 'xz', '0,2'; 'none') with p 0.5 whatever the "
                        "budget (default: the plan's allowed axes, as often as the augmentation's strength says: "
                        "never in a short training)")
    p.add_argument("--val-every", type=int, default=None,
                   help="validate every N epochs (default: every epoch in the paper profile, else so that "
                        "validation costs about 10 %% of training)")
    p.add_argument("--lr-schedule", choices=["tail", "constant", "poly"], default=None,
                   help="default profile: tail (default) keeps the genome's learning rate, then decays it "
                        "linearly to 0 over the last fifth of the planned steps; constant keeps it throughout; "
                        "poly is nnU-Net's decay from the first step")
    p.add_argument("--iterations-per-epoch", type=int, default=None,
                   help="training steps per epoch (default: ceil(training cases / batch size), the paper's)")
    p.add_argument("--patch", help="patch size X,Y,Z instead of the plan's")
    p.add_argument("--batch", type=int, default=None, help="batch size instead of the plan's")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--cache-dir", default=None, help="folder of the preprocessed cache (default: the user cache)")

    e = subcommand(sub, "evaluate", _evaluate, "Dice, HD, HD95 and ASD (mm) of a folder of label maps against references")
    e.add_argument("--pred", required=True, help="folder of predicted label maps")
    e.add_argument("--ref", required=True, help="folder of reference label maps (same file names)")
    e.add_argument("--labels", help="label names from a training or model folder, or a dataset.json "
                                    "(default: every value in the references, named by its value)")
    e.add_argument("--csv", metavar="OUT", help="write one row per case and label to OUT (Dice, HD, HD95, ASD in mm) "
                                               "and the mean and std per label to OUT_summary.csv")


def _mirror_axes(value: str | None) -> list | None:
    """``--mirror-axes``: None (the plan's), [] for "none", else its axes as 0/1/2 or x/y/z characters."""
    if value is None:
        return None
    value = value.strip().lower()
    if value == "none":
        return []
    from engine.data.mirror import parse_axes

    return parse_axes([int(c) if c.isdigit() else c for c in value.replace(",", "").replace(" ", "")], "--mirror-axes")
