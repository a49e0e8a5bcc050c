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


def _run(args) -> dict:
    from engine.genome import load_genome
    from engine.network.cost import count_parameters, estimate_cost  # torch: only when needed

    genome = load_genome(args.genome)
    if args.in_channels < 1:
        raise ConfigError(f"--in-channels must be at least 1, got {args.in_channels}")
    if args.classes < 2:
        raise ConfigError(f"--classes counts the background and must be at least 2, got {args.classes}")
    params = count_parameters(genome, args.in_channels, args.classes)
    out = {"parameters": params, "log_parameters": math.log(params), "genome": genome.to_dict()}
    lines = [f"genome      {genome.to_json()}", f"parameters  {params:,} ({params / 1e6:.2f} M)"]
    if args.patch:
        patch = parse_triple(args.patch)
        cost = estimate_cost(genome, args.in_channels, args.classes, patch, batch=args.batch)
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
