"""Supervised losses: one plain dict registry from name to entry.

Each entry names the loss's options (typed, with validation) and builds a `nn.Module` bound to them. The trainer only
ever calls `build_loss(cfg.loss, ignore_index=...)`; a sweep file names a loss by its registry key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from trainers.losses import functional as LF


class LossOptionError(ValueError):
    pass


@dataclass(frozen=True)
class Option:
    kind: type
    default: Any
    check: Callable[[Any], bool] = lambda v: True
    rule: str = ""


@dataclass(frozen=True)
class LossEntry:
    fn: Callable[..., Tensor]
    options: dict[str, Option]
    # option name in the sweep file -> keyword of the functional form (e.g. `lambda`, a Python keyword, -> `lam`)
    rename: dict[str, str]
    summary: str


_GAMMA = Option(float, 2.0, lambda g: 0.0 <= g <= 10.0, "must be in [0, 10]")
_LAMBDA = Option(float, 1.0, lambda v: v >= 1.0, "must be >= 1 (below 1 the base lambda - p_t turns negative)")
_ALPHA = Option(float, 0.5, lambda a: 0.0 <= a <= 1.0, "must be in [0, 1]")
_WEIGHTS = Option(tuple, None, lambda w: w is None or all(x >= 0 for x in w), "must be non-negative numbers")

LOSSES: dict[str, LossEntry] = {
    "ce": LossEntry(LF.cross_entropy, {"class_weights": _WEIGHTS}, {}, "cross entropy"),
    "focal": LossEntry(LF.focal, {"gamma": _GAMMA, "lambda": _LAMBDA, "class_weights": _WEIGHTS}, {"lambda": "lam"},
                       "focal -(lambda - p_t)^gamma log p_t"),
    "dice": LossEntry(LF.soft_dice, {}, {}, "soft Dice over present classes"),
    "combo": LossEntry(LF.combo, {"alpha": _ALPHA, "class_weights": _WEIGHTS}, {}, "alpha*CE + (1-alpha)*(1-Dice)"),
}


def _entry(name: str) -> LossEntry:
    if name not in LOSSES:
        raise LossOptionError(f"loss.name: unknown loss {name!r}; valid losses are {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def validate_loss_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults, convert and check `options` for loss `name`; the error names the loss, option and value."""
    from trainers.config import ConfigError

    try:
        entry = _entry(name)
    except LossOptionError as e:
        raise ConfigError(str(e)) from None
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        valid = ", ".join(sorted(entry.options)) or "none"
        raise ConfigError(f"loss {name!r}: unknown option(s) {', '.join(unknown)}; its options are {valid}")
    out: dict[str, Any] = {}
    for key, opt in entry.options.items():
        value = options.get(key, opt.default)
        if value is not None:
            if opt.kind is float:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(f"loss {name!r}: option {key} expects a number, but got {value!r}")
                value = float(value)
            elif opt.kind is tuple:
                if not isinstance(value, (list, tuple)) or not all(isinstance(x, (int, float)) for x in value):
                    raise ConfigError(f"loss {name!r}: option {key} expects a list of numbers, but got {value!r}")
                value = tuple(float(x) for x in value)
        if not opt.check(value):
            raise ConfigError(f"loss {name!r}: option {key} {opt.rule}, but got {value!r}")
        if value is not None:
            out[key] = value
    return out


class SegLoss(nn.Module):
    """A registry loss bound to its options; `forward(logits, target)`."""

    def __init__(self, name: str, options: Mapping[str, Any], *, ignore_index: int, num_classes: int) -> None:
        super().__init__()
        entry = _entry(name)
        self.name = name
        kwargs = {entry.rename.get(k, k): v for k, v in options.items() if k != "class_weights"}
        weights = options.get("class_weights")
        if weights is not None:
            if len(weights) != num_classes:
                raise LossOptionError(f"loss {name!r}: class_weights has {len(weights)} values, "
                                      f"but the dataset has {num_classes} classes")
        # a buffer, so .to(device) moves it and checkpoints hold it; passed at call time for that reason
        self.register_buffer("class_weights", None if weights is None else torch.tensor(weights, dtype=torch.float32))
        self._fn = partial(entry.fn, ignore_index=ignore_index, **kwargs)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.class_weights is None:
            return self._fn(logits, target)
        return self._fn(logits, target, class_weights=self.class_weights)


def build_loss(cfg: Any, *, ignore_index: int, num_classes: int) -> SegLoss:
    """`cfg` is a trainers.config.LossConfig."""
    return SegLoss(cfg.name, cfg.options, ignore_index=ignore_index, num_classes=num_classes)
