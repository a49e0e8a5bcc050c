"""Compare two runs of ``benchmarks/run.py --json``: per figure, the old value, the new one and new / old.

    python benchmarks/compare.py OLD.json NEW.json [--all]

Each file is the JSON object ``run.py`` prints as its last line with ``--json`` (or writes to
``OUT/benchmarks.json`` with ``--out OUT``); a file holding several lines is read from its last line.
The figures are every number in the sections both runs measured, named ``section.key`` (nested keys
joined with dots; lists are left out), the headline figures of each section first. ``--all`` also
lists timings and counts that are equal in both runs. Exit status 2 with a one-line message when a
file cannot be read.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path


def load(path: str) -> dict:
    """The run's JSON object; ``ValueError`` (naming the file) when it is not one."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    for candidate in (text, lines[-1] if lines else ""):
        try:
            doc = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("sections"), dict):
            return doc
    raise ValueError(f"{path}: not the JSON of benchmarks/run.py --json (no 'sections' object)")


def figures(doc: dict) -> dict[str, float]:
    """Every number under ``sections`` as ``section.key[.subkey...]`` -> value (booleans and lists left out)."""
    out: dict[str, float] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
            out[prefix] = float(value)

    walk("", doc["sections"])
    return out


def compare(old: dict, new: dict, everything: bool = False) -> list[tuple[str, float | None, float | None, float | None]]:
    """Rows (figure, old, new, new / old): headline figures first, then the rest in name order."""
    fo, fn = figures(old), figures(new)
    heads = [k for doc in (new, old) for k in (doc.get("figures") or {})]
    names = list(dict.fromkeys(h for h in heads if h in fo or h in fn))
    rest = sorted((set(fo) | set(fn)) - set(names))
    rows = []
    for name in names + rest:
        a, b = fo.get(name), fn.get(name)
        if not everything and name not in names and a is not None and a == b:
            continue  # the same protocol setting or count in both runs
        ratio = b / a if a is not None and b is not None and a != 0 else None
        rows.append((name, a, b, ratio))
    return rows


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.4g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Compare two benchmark runs (benchmarks/run.py --json)")
    ap.add_argument("old", help="the earlier run's JSON")
    ap.add_argument("new", help="the later run's JSON")
    ap.add_argument("--all", action="store_true", help="also list the numbers equal in both runs")
    args = ap.parse_args(argv)
    try:
        old, new = load(args.old), load(args.new)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = compare(old, new, args.all)
    print(f"old: {args.old} ({old.get('date', '?')}, {old.get('protocol') or ('quick' if old.get('quick') else 'full')})")
    print(f"new: {args.new} ({new.get('date', '?')}, {new.get('protocol') or ('quick' if new.get('quick') else 'full')})")
    width = max([len("figure")] + [len(r[0]) for r in rows])
    print(f"{'figure':<{width}}  {'old':>10}  {'new':>10}  {'new/old':>8}")
    for name, a, b, ratio in rows:
        print(f"{name:<{width}}  {_fmt(a):>10}  {_fmt(b):>10}  {_fmt(ratio):>8}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader stopped early (``| head``): not an error of the comparison
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
