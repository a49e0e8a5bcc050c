"""``emonas params``: size and memory of a genome's network without training it."""

from __future__ import annotations

import math

from engine.cli._common import subcommand
from engine.errors import ConfigError


def parse_triple(text: str, what: str = "patch") -> tuple[int, int, int]:
    try:
        vals = tuple(int(v) for v in str(text).replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(f"--{what} must be three integers like 32,48,32, got {text!r}") from None
    if len(vals) != 3 or any(v < 1 for v in vals):
        raise ConfigError(f"--{what} must be three positive integers like 32,48,32, got {text!r}")
    return vals  # type: ignore[return-value]


def pooling(genome, profile: str, patch=None) -> list[tuple[int, int, int]]:
    """Per-level pooling of ``genome``'s network: 2x2x2 at every level in the paper profile (the patch
    must divide by 2^levels), the plan's rule on an isotropic ``patch`` in the default profile."""
    from engine.data.plan import pool_schedule_for

    levels = genome.n_levels
    if profile == "paper" or patch is None:
        pools = [(2, 2, 2)] * levels
        if patch is not None and any(p % 2**levels for p in patch):
            rounded = ",".join(str(max(2**levels, round(p / 2**levels) * 2**levels)) for p in patch)
            raise ConfigError(f"--patch {','.join(map(str, patch))}: the paper profile pools 2x2x2 {levels} times, "
                              f"so every axis must divide by {2**levels}; try --patch {rounded}")
        return pools
    return [tuple(p) for p in pool_schedule_for((1.0, 1.0, 1.0), patch, levels)]


def _run(args) -> dict:
    from engine.genome import load_genome
    from engine.network.cost import count_parameters, estimate_cost  # torch: only when needed

    genome = load_genome(args.genome)
    if args.in_channels < 1:
        raise ConfigError(f"--in-channels must be at least 1, got {args.in_channels}")
    if args.classes < 2:
        raise ConfigError(f"--classes counts the background and must be at least 2, got {args.classes}")
    patch = parse_triple(args.patch) if args.patch else None
    pools = pooling(genome, args.profile, patch)
    params = count_parameters(genome, args.in_channels, args.classes, pools)
    out = {"parameters": params, "log_parameters": math.log(params), "genome": genome.to_dict(),
           "profile": args.profile, "pool_sizes": [list(p) for p in pools]}
    lines = [f"genome      {genome.to_json()}", f"profile     {args.profile}; pooling per level "
             + " ".join("x".join(map(str, p)) for p in pools)
             + ("" if patch or args.profile == "paper" else " (without --patch; the plan pools by the patch)"),
             f"parameters  {params:,} ({params / 1e6:.2f} M)"]
    if patch:
        cost = estimate_cost(genome, args.in_channels, args.classes, patch, batch=args.batch, pool_sizes=pools)
        out.update(cost.to_dict())
        out["patch"] = list(patch)
        out["batch"] = args.batch
        lines += [
            f"patch       {patch[0]}x{patch[1]}x{patch[2]}, batch {args.batch}",
            f"compute     {cost.train_step_flops / 1e9:.1f} GFLOP per training step (forward + backward)",
            f"activations {cost.activation_bytes / 2**20:.0f} MiB; training peak about {cost.training_bytes / 2**20:.0f} MiB (fp32)",
        ]
    if not args.json:
        print("\n".join(lines))
    return out


def register(sub) -> None:
    p = subcommand(sub, "params", _run, "parameter count, compute and memory of a genome's network")
    p.add_argument("--genome", required=True, help="genome as a JSON string or a JSON file")
    p.add_argument("--in-channels", type=int, default=1, help="input channels (MRI modalities), default 1")
    p.add_argument("--classes", type=int, default=2, help="output classes including background (binary: 2)")
    p.add_argument("--patch", help="patch size X,Y,Z for compute and memory estimates")
    p.add_argument("--batch", type=int, default=2, help="batch size for the estimates (default 2)")
    p.add_argument("--profile", choices=["default", "paper"], default="default",
                   help="paper: 2x2x2 pooling at every level (the patch must divide by 2^levels); default: the "
                        "plan's pooling rule on the patch (2x2x2 at every level without --patch)")
