"""Break the search code on purpose and show that the search tests catch every break.

Each named mutation edits one place of a copy of ``engine/`` (the checkout is never touched); the
search tests (``tests/engine/search``) then run against the copy and must fail. The unmutated copy
runs first and must pass, so a failure is the mutation's doing.

    .venv/bin/python scripts/mutation_check.py            # all mutations, a table at the end
    .venv/bin/python scripts/mutation_check.py --list     # their names and what they change

Exit status 0 when every mutation is caught, 1 when one survives, 2 when the baseline fails or a
mutation no longer applies (the code it targets changed: update the mutation).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMEA = "engine/search/samea.py"
OPERATORS = "engine/search/operators.py"

# name -> (what it does, file, original text, replacement); the original must occur exactly once
MUTATIONS: dict[str, tuple[str, str, str, str]] = {
    "delete-neighbour-replacement": (
        "a child never replaces a neighbour's solution",
        SAMEA,
        "                    self.slots[m] = start + offset\n",
        "                    pass\n",
    ),
    "flip-replacement-comparison": (
        "a child replaces the neighbours it does NOT beat in PBI",
        SAMEA,
        "            for m in self.neighbours[child[\"subproblem\"]]:\n"
        "                w = self.weights[m]\n"
        "                if moead.pbi(f, w, self.theta) <= moead.pbi(",
        "            for m in self.neighbours[child[\"subproblem\"]]:\n"
        "                w = self.weights[m]\n"
        "                if moead.pbi(f, w, self.theta) >= moead.pbi(",
    ),
    "freeze-probabilities": (
        "P_k and P_v are never learned (stay uniform)",
        SAMEA,
        "        if g >= self.learning_generations:\n",
        "        if False:\n",
    ),
    "drop-success-counts": (
        "the success counts of the subproblems are never recorded",
        SAMEA,
        "                self.success[g, e[\"subproblem\"]] += 1\n",
        "                pass\n",
    ),
    "drop-surrogate-picks": (
        "the end-of-generation picks from the pool are never trained",
        SAMEA,
        "        for i in self.pool_picks(pool):\n",
        "        for i in []:\n",
    ),
    "prescreen-admits-all": (
        "pre-screening trains every child at once (the surrogate decides nothing)",
        SAMEA,
        "            if self._beats_a_neighbour(f, sp):\n",
        "            if True:\n",
    ),
    "uniform-mutation-values": (
        "mutation ignores the value probabilities and draws uniformly",
        OPERATORS,
        "        p = np.array(probs, dtype=float)\n",
        "        p = np.ones(len(probs))\n",
    ),
}

TESTS = "tests/engine/search"


def make_copy(dest: Path) -> None:
    shutil.copytree(ROOT / "engine", dest / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / TESTS, dest / TESTS, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / "resources").mkdir()
    shutil.copy2(ROOT / "resources" / "__init__.py", dest / "resources" / "__init__.py")
    shutil.copy2(ROOT / "resources" / "default_search.toml", dest / "resources" / "default_search.toml")


def run_tests(copy: Path) -> tuple[int, str, list[str], float]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run([sys.executable, "-c", "import engine.search.samea as m; print(m.__file__)"],
                           cwd=copy, env=env, capture_output=True, text=True)
    if not probe.stdout.strip().startswith(str(copy)):
        raise SystemExit(f"the copy's engine is not the one imported ({probe.stdout.strip() or probe.stderr.strip()})")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", TESTS, "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
                       cwd=copy, env=env, capture_output=True, text=True)
    failed = [ln.split(" - ")[0].replace("FAILED ", "") for ln in r.stdout.splitlines() if ln.startswith("FAILED ")]
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr.strip()[-200:]
    return r.returncode, summary, failed, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("names", nargs="*", help="mutations to run (default: all)")
    args = ap.parse_args(argv)
    if args.list:
        for name, (what, path, *_ ) in MUTATIONS.items():
            print(f"{name:30s} {path}: {what}")
        return 0
    names = args.names or list(MUTATIONS)
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown:
        print(f"unknown mutation(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="emonas-mutation-") as tmp:
        base = Path(tmp) / "baseline"
        make_copy(base)
        rc, summary, _, secs = run_tests(base)
        print(f"baseline (no mutation): {summary} ({secs:.0f} s)")
        if rc != 0:
            print("the search tests fail without any mutation; fix them first", file=sys.stderr)
            return 2
        for name in names:
            what, rel, old, new = MUTATIONS[name]
            copy = Path(tmp) / name
            make_copy(copy)
            text = (copy / rel).read_text(encoding="utf-8")
            if text.count(old) != 1:
                print(f"{name}: the targeted code occurs {text.count(old)} times in {rel}; update the mutation", file=sys.stderr)
                return 2
            (copy / rel).write_text(text.replace(old, new), encoding="utf-8")
            rc, summary, failed, secs = run_tests(copy)
            caught = rc != 0
            rows.append((name, caught, len(failed)))
            print(f"{name}: {'CAUGHT' if caught else 'SURVIVED'} - {what}\n    {summary} ({secs:.0f} s)")
            for test in failed:
                print(f"      {test}")
    print()
    print("| mutation | what it breaks | caught | failing tests |")
    print("|---|---|---|---|")
    for name, caught, n_failed in rows:
        print(f"| {name} | {MUTATIONS[name][0]} | {'yes' if caught else 'NO'} | {n_failed} |")
    survived = [n for n, c, _ in rows if not c]
    print(f"\n{len(rows) - len(survived)} of {len(rows)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
