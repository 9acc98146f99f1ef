"""Before/after in the same run: another revision's tree beside this one, measured in alternation.

The venv is an editable install of one checkout, so a measurement of another tree runs in a subprocess with
PYTHONPATH pointing at that tree (PYTHONPATH comes before the editable install on sys.path) and with the editable
install's import finder removed (bench/tree_only/sitecustomize.py), so a module the tree lacks is not taken from the
installed checkout. The two trees are
measured in turns (ABBA), so both share whatever else the machine is doing at the time.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # the tree this bench file belongs to: the "after"
TREE_ONLY = Path(__file__).resolve().parent / "tree_only"  # its sitecustomize.py drops the editable install's finder


@contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A temporary detached `git worktree` of `rev`, removed afterwards, even when the measurement fails."""
    parent = Path(tempfile.mkdtemp(prefix="s4sweep-rev-"))
    tree = parent / rev.replace("/", "_")
    try:
        subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", "--quiet", str(tree), rev], check=True)
        yield tree
    finally:
        subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(parent, ignore_errors=True)
        subprocess.run(["git", "-C", str(HERE), "worktree", "prune"], check=False)


def run_python(tree: Path, args: Sequence[str], *, env: dict[str, str] | None = None,
               timeout: float = 1800) -> subprocess.CompletedProcess:
    """`python ARGS` with `tree` first on the import path, and the only place s4sweep's modules come from (a module
    the tree lacks is an ImportError, not the installed checkout's); raises with the output's tail if it fails."""
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(TREE_ONLY), str(tree)])}
    # in `tree`: `python -c` and `-m` put the working directory first on sys.path
    proc = subprocess.run([sys.executable, *args], cwd=tree, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} (PYTHONPATH={tree}) exited with {proc.returncode}:\n"
                           f"{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def last_json(text: str) -> dict | None:
    """The last line of `text` that is a JSON object (how a bench hands its numbers to this module), or None."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def alternate(trees: dict[str, Path], repeats: int, measure: Callable[[Path], dict[str, float | None]]
              ) -> dict[str, dict[str, list[float | None]]]:
    """`measure(tree)` `repeats` times per tree, in ABBA order; label -> row -> the values of the repeats."""
    found: dict[str, dict[str, list[float | None]]] = {label: {} for label in trees}
    labels = list(trees)
    for i in range(repeats):
        for label in labels if i % 2 == 0 else reversed(labels):
            print(f"  [{i + 1}/{repeats}] {label}", file=sys.stderr, flush=True)
            for row, value in measure(trees[label]).items():
                found[label].setdefault(row, []).append(value)
    return found


SUMMARIES = {"median": statistics.median, "min": min}  # min: the least disturbed run, on a machine shared with others


def summary(values: Sequence[float | None], how: Callable[[list[float]], float]) -> float | None:
    known = [v for v in values if v is not None]
    return how(known) if known and len(known) == len(values) else None


def print_table(found: dict[str, dict[str, list[float | None]]], *, unit: str = "s") -> None:
    """One row per measurement: the median and the minimum of each tree's repeats ("n/a" where a tree could not
    measure it) and, with two trees, the ratios of the second (after) to the first (before)."""
    labels = list(found)
    rows = list(dict.fromkeys(row for label in labels for row in found[label]))
    width = max(len(row) for row in rows)
    pairs = [(label, name) for label in labels for name in SUMMARIES]
    ratio = len(labels) == 2
    print(" " * width + "".join(f"{label:>20}" for label in labels) + (f"{'after/before':>20}" if ratio else ""))
    print(f"{'(' + unit + ')':<{width}}" + "".join(f"{name:>10}" for _, name in pairs)
          + ("".join(f"{name:>10}" for name in SUMMARIES) if ratio else ""))
    for row in rows:
        got = {(label, name): summary(found[label].get(row, [None]), how) for label in labels
               for name, how in SUMMARIES.items()}
        cells = "".join(f"{'n/a':>10}" if got[p] is None else f"{got[p]:10.3f}" for p in pairs)
        if ratio:
            for name in SUMMARIES:
                before, after = got[(labels[0], name)], got[(labels[1], name)]
                cells += f"{'n/a':>10}" if before is None or after is None or before == 0 else f"{after / before:9.2f}x"
        print(f"{row:<{width}}{cells}")
