"""Readable, unique trial names from the grid: `ce-s0`, `focal-g2-l1-s0`, `combo-a0.5-split1-s1`."""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.spec.model import GridAxis
    from orchestrator.spec.points import Point

# Short forms in trial names (`focal-g2-l1-s0`); other params use their last dotted segment.
ABBREV = {"gamma": "g", "lambda": "l", "alpha": "a", "class_weights": "w", "seed": "s", "split_seed": "split",
          "dataset.labeled_ratio": "r", "dataset.name": "", "preset": "", "precision.precision": ""}


def trial_names(grid: tuple[GridAxis, ...], points: list[Point]) -> list[str]:
    """The loss with the options the file spells out, then every other axis that varies (seeds last)."""
    loss_at = next((k for k, axis in enumerate(grid) if axis.path == "loss"), None)
    order = {"split_seed": 1, "seed": 2}  # seeds last: `focal-g2-l1-split0-s1`
    tail = sorted((k for k, axis in enumerate(grid) if axis.path != "loss" and len(axis.values) > 1),
                  key=lambda k: order.get(grid[k].path, 0))
    shapes = _distinct_option_values(grid[loss_at].values) if loss_at is not None else {}
    names = []
    for point in points:
        if loss_at is None:
            parts = [point.config.loss.name]
        else:
            variant = grid[loss_at].values[point.picks[loss_at]]
            parts = [variant["name"]]
            parts += [_label(k, v, shapes[k].index(v)) for k, v in variant.items() if k != "name"]
        parts += [_label(grid[k].path, grid[k].values[point.picks[k]], point.picks[k]) for k in tail]
        names.append("-".join(p for p in parts if p))
    counts = Counter(names)  # only when two params share a short form and a value; make them unique anyway
    return [f"{n}-{k}" if counts[n] > 1 else n for k, n in enumerate(names)]


def _distinct_option_values(variants: tuple[Any, ...]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for variant in variants:
        for key, value in variant.items():
            if value not in out.setdefault(key, []):
                out[key].append(value)
    return out


def _label(path: str, value: Any, index: int) -> str:
    """`seed`, 0 -> `s0`; `s4gan.gan`, False -> `nogan`; a mapping or a long list -> its index (`w1`)."""
    short = ABBREV.get(path, ABBREV.get(path.rsplit(".", 1)[-1], path.rsplit(".", 1)[-1]))
    if isinstance(value, bool):
        return short if value else f"no{short}"
    if isinstance(value, (list, tuple)) and len(value) <= 3 and all(_scalar(v) for v in value):
        text = "x".join(_text(v) for v in value)
    elif _scalar(value):
        text = _text(value)
    else:
        text = str(index)
    return f"{short}{text}"


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _text(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9_.+]", "_", text)
