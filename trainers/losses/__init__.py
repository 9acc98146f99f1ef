"""Supervised losses: one plain dict registry from name to entry.

Each entry names the loss's options (typed, with validation) and builds a `nn.Module` bound to them. The trainer only
ever calls `build_loss(cfg.loss, ignore_index=..., num_classes=..., class_counts=...)`; a sweep file names a loss by
its registry key. `class_weights` (ce, focal, combo) is a list of one weight per class or a recipe of
trainers/losses/weights.py (`inverse`, `sqrt_inverse`, `median_freq`, `enet[:<c>]`, `effective_number[:<beta>]`),
resolved from the labeled split's pixel counts. A recipe's parameter is part of the string (`enet:1.10`) rather than
a separate option because a sweep file checks each option on its own, so no option may depend on another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from trainers.losses import functional as LF
from trainers.losses.weights import ClassWeights, class_weights, parse_recipe

if TYPE_CHECKING:
    from trainers.data.stats import ClassCounts


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
    # the value at a perfect prediction, given the options (0 except for the paper's Combo, which subtracts Dice)
    minimum: Callable[[Mapping[str, Any]], float] = lambda options: 0.0


_GAMMA = Option(float, 2.0, lambda g: 0.0 <= g <= 10.0, "must be in [0, 10]")
_LAMBDA = Option(float, 1.0, lambda v: v >= 1.0, "must be >= 1 (below 1 the base lambda - p_t turns negative)")
_ALPHA = Option(float, 0.5, lambda a: 0.0 <= a <= 1.0, "must be in [0, 1]")
_BETA = Option(float, 0.5, lambda b: 0.0 <= b <= 1.0, "must be in [0, 1]")
_OVR_ALPHA = Option(float, 0.25, lambda a: 0.0 <= a <= 1.0 or a == -1.0,
                    "must be in [0, 1], or -1 to turn the positive/negative balance off")
_SQUARED = Option(bool, False)
_SMOOTH = Option(float, 0.0, lambda s: s >= 0.0, "must be >= 0")
# a list of C non-negative numbers, or a recipe name (checked by parse_recipe in validate_loss_options)
_WEIGHTS = Option(tuple, None, lambda w: w is None or isinstance(w, str) or all(x >= 0 for x in w),
                  "must be non-negative numbers")

LOSSES: dict[str, LossEntry] = {
    "ce": LossEntry(LF.cross_entropy, {"class_weights": _WEIGHTS}, {}, "cross entropy (weighted with class_weights)"),
    "focal": LossEntry(LF.focal, {"gamma": _GAMMA, "lambda": _LAMBDA, "class_weights": _WEIGHTS}, {"lambda": "lam"},
                       "focal -alpha_y (lambda - p_t)^gamma log p_t, softmax"),
    "focal_ovr": LossEntry(LF.focal_ovr, {"gamma": _GAMMA, "alpha": _OVR_ALPHA}, {},
                           "one-vs-rest sigmoid focal, RetinaNet form"),
    "dice": LossEntry(LF.soft_dice, {"squared": _SQUARED, "smooth": _SMOOTH}, {}, "soft Dice over present classes"),
    "combo": LossEntry(LF.combo, {"alpha": _ALPHA, "class_weights": _WEIGHTS}, {}, "alpha*CE + (1-alpha)*(1-Dice)"),
    "combo_paper": LossEntry(LF.combo_paper, {"alpha": _ALPHA, "beta": _BETA}, {},
                             "Combo paper: alpha*beta-weighted one-vs-rest CE - (1-alpha)*Dice",
                             minimum=lambda options: -(1.0 - options.get("alpha", _ALPHA.default))),
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
            value = _convert(name, key, opt, value)
        if not opt.check(value):
            raise ConfigError(f"loss {name!r}: option {key} {opt.rule}, but got {value!r}")
        if value is not None:
            out[key] = value
    return out


def _convert(name: str, key: str, opt: Option, value: Any) -> Any:
    from trainers.config import ConfigError

    if opt.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"loss {name!r}: option {key} expects true or false, but got {value!r}")
        return value
    if opt.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"loss {name!r}: option {key} expects a number, but got {value!r}")
        return float(value)
    if isinstance(value, str):  # a class-weight recipe
        try:
            parse_recipe(value)
        except ValueError as e:
            raise ConfigError(f"loss {name!r}: option {key}: {e}") from None
        return value
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                       for x in value):
        hint = " (to compare recipes, write one loss entry per recipe)" if isinstance(value, (list, tuple)) else ""
        raise ConfigError(f"loss {name!r}: option {key} expects a list of numbers or a recipe name{hint}, "
                          f"but got {value!r}")
    return tuple(float(x) for x in value)


def needs_class_counts(options: Mapping[str, Any]) -> bool:
    """True when the loss's class weights are a recipe, resolved from the labeled split's pixel counts."""
    return isinstance(options.get("class_weights"), str)


def resolve_class_weights(name: str, weights: str | tuple[float, ...] | None, *, num_classes: int,
                          class_counts: ClassCounts | None = None) -> ClassWeights | None:
    """The weights a loss will use: the given list, or the recipe evaluated on `class_counts`."""
    if weights is None:
        return None
    if isinstance(weights, str):
        if class_counts is None:
            raise LossOptionError(f"loss {name!r}: class_weights {weights!r} is a recipe and needs the labeled "
                                  "split's class counts (trainers.data.stats.class_pixel_counts)")
        if len(class_counts.pixels) != num_classes:
            raise LossOptionError(f"loss {name!r}: class counts have {len(class_counts.pixels)} classes, "
                                  f"but the dataset has {num_classes}")
        return class_weights(weights, class_counts.pixels, class_counts.image_pixels,
                             class_names=class_counts.classes)
    if len(weights) != num_classes:
        raise LossOptionError(f"loss {name!r}: class_weights has {len(weights)} values, "
                              f"but the dataset has {num_classes} classes")
    return ClassWeights(recipe="given", values=tuple(weights))


class SegLoss(nn.Module):
    """A registry loss bound to its options; `forward(logits, target)`."""

    def __init__(self, name: str, options: Mapping[str, Any], *, ignore_index: int, num_classes: int,
                 class_counts: ClassCounts | None = None) -> None:
        super().__init__()
        entry = _entry(name)
        self.name, self.options = name, dict(options)
        kwargs = {entry.rename.get(k, k): v for k, v in options.items() if k != "class_weights"}
        self.weights = resolve_class_weights(name, options.get("class_weights"), num_classes=num_classes,
                                             class_counts=class_counts)
        values = None if self.weights is None else torch.tensor(self.weights.values, dtype=torch.float32)
        # a buffer, so .to(device) moves it and checkpoints hold it; passed at call time for that reason
        self.register_buffer("class_weights", values)
        self._fn = partial(entry.fn, ignore_index=ignore_index, **kwargs)

    def describe(self) -> dict[str, Any]:
        """Name, options and the class weights actually used (for the trial's info)."""
        weights = None if self.weights is None else self.weights.to_json()
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}
        return {"name": self.name, "options": options, "class_weights": weights}

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.class_weights is None:
            return self._fn(logits, target)
        return self._fn(logits, target, class_weights=self.class_weights)


def build_loss(cfg: Any, *, ignore_index: int, num_classes: int, class_counts: ClassCounts | None = None) -> SegLoss:
    """`cfg` is a trainers.config.LossConfig; `class_counts` (of the labeled split) resolves a weight recipe."""
    return SegLoss(cfg.name, cfg.options, ignore_index=ignore_index, num_classes=num_classes,
                   class_counts=class_counts)
