"""The baseline file `s4sweep regress` compares a run with (written by `s4sweep report --emit-baseline`): its format,
its default tolerances, and reading one back with every field checked, so that a hand-edited, truncated or foreign
file is one line naming the key and the value instead of a wrong verdict or a traceback.

A number may be null where the run that made the baseline had none (a class no trial scored), never NaN or infinite:
`json.loads` accepts `NaN`, and a NaN mean would compare as neither better nor worse than anything.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FORMAT = "s4sweep-baseline/1"
# Fractions (0.01 = 1 IoU point). A check's tolerance is max(absolute, seed_std_k x the baseline's seed std).
DEFAULT_TOLERANCES: dict[str, float] = {"miou_abs": 0.01, "iou_abs": 0.03, "wall_rel": 0.5, "seed_std_k": 2.0}


class BaselineError(ValueError):
    """The baseline file cannot be read or was not written by --emit-baseline; the message names the file."""


def read_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BaselineError(f"baseline {path}: cannot be read ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else data
        raise BaselineError(f"baseline {path}: `format` must be {FORMAT!r} (write it with `s4sweep report SWEEP "
                            f"--emit-baseline FILE`), but got {got!r:.80}")
    try:
        _check(data)
    except _Broken as e:
        raise BaselineError(f"baseline {path}: {e}") from None
    return data


class _Broken(ValueError):
    pass


def _fail(where: str, rule: str, value: object) -> None:
    raise _Broken(f"{where}: {rule}, but got {value!r:.80}")


def _check(data: Mapping[str, Any]) -> None:
    if not isinstance(data.get("sweep"), str) or not data["sweep"]:
        _fail("sweep", "must name the sweep the baseline pins", data.get("sweep"))
    tolerances = data.get("tolerances", {})
    if not isinstance(tolerances, Mapping):
        _fail("tolerances", "must map tolerance names to numbers", tolerances)
    for key, value in tolerances.items():
        if key not in DEFAULT_TOLERANCES:
            _fail(f"tolerances.{key}", f"unknown tolerance; valid ones are {', '.join(DEFAULT_TOLERANCES)}", key)
        if not _finite(value) or value < 0:
            _fail(f"tolerances.{key}", "must be a finite number >= 0", value)
    cells = data.get("cells")
    if not isinstance(cells, list) or not cells:
        _fail("cells", "must be a non-empty list of cells (column x training set x evaluation set)", cells)
    for i, cell in enumerate(cells):
        where = f"cells[{i}]"
        if not isinstance(cell, Mapping):
            _fail(where, "must be a mapping", cell)
        for key in ("column", "train", "eval"):
            if not isinstance(cell.get(key), str):
                _fail(f"{where}.{key}", "must be a string", cell.get(key))
        if not isinstance(cell.get("seeds", []), list) or not all(isinstance(s, list) for s in cell.get("seeds", [])):
            _fail(f"{where}.seeds", "must be a list of [seed, split_seed] pairs", cell.get("seeds"))
        _stat(f"{where}.miou", cell.get("miou"))
        if not isinstance(cell.get("iou"), Mapping):
            _fail(f"{where}.iou", "must map class names to {mean, std}", cell.get("iou"))
        for name, stat in cell["iou"].items():
            _stat(f"{where}.iou.{name}", stat)
        if "wall_s" in cell:
            _stat(f"{where}.wall_s", cell["wall_s"])


def _stat(where: str, stat: object) -> None:
    if not isinstance(stat, Mapping) or "mean" not in stat:
        _fail(where, "must be {mean, std}", stat)
    for key in ("mean", "std"):
        value = stat.get(key)
        if value is not None and not _finite(value):
            _fail(f"{where}.{key}", "must be a finite number or null", value)
    if stat.get("std") is not None and stat["std"] < 0:
        _fail(f"{where}.std", "must be >= 0", stat["std"])


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
