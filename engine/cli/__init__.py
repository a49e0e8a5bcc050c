"""The ``emonas`` command line.

Each module in this package (not starting with ``_``) defines ``register(subparsers)`` which
adds one or more subcommands; a subcommand's handler takes the parsed arguments and returns a
dict (printed as the last JSON line with ``--json``) or None.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from engine.cli._common import CliArgumentParser, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = CliArgumentParser(
        prog="emonas",
        description="EMONAS Studio: multi-objective architecture search for 3D medical image segmentation.",
    )
    from engine import __version__

    parser.add_argument("--version", action="version", version=f"emonas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliArgumentParser)
    sub.required = True
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``emonas`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # stderr stays at this level while a run's log takes INFO
        handler.setLevel(level)
    return run_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
