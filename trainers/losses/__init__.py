"""Supervised losses: one plain dict registry from name to entry.

Each entry names the loss's options (typed, with validation) and builds a `nn.Module` bound to them. The trainer only
ever calls `build_loss(cfg.loss, ignore_index=..., num_classes=..., class_counts=...)`; a sweep file names a loss by
its registry key. `class_weights` (ce, focal, combo) is a list of one weight per class or a recipe of
trainers/losses/weights.py (`inverse`, `sqrt_inverse`, `median_freq`, `enet[:<c>]`, `effective_number[:<beta>]`),
resolved from the labeled split's pixel counts. A recipe's parameter is part of the string (`enet:1.10`) rather than
a separate option because a sweep file checks each option on its own, so no option may depend on another.

Peer losses (trainers/losses/peer.py) are pure functions like the study's. Adaptive losses (trainers/losses/adaptive.py)
are stateful modules: their entry names a `module` instead of a function; `SegLoss.observe(logits, target)` feeds
them each labeled batch and `SegLoss.state_metrics(class_names)` reports their state (both no-ops for the others).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from trainers.losses import adaptive as LA
from trainers.losses import functional as LF
from trainers.losses import peer as LP
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
    fn: Callable[..., Tensor] | None  # a pure loss function, or None for a stateful `module`
    options: dict[str, Option]
    # option name in the sweep file -> keyword of the functional form (e.g. `lambda`, a Python keyword, -> `lam`)
    rename: dict[str, str]
    summary: str
    # the value at a perfect prediction, given the options (0 except for the paper's Combo, which subtracts Dice)
    minimum: Callable[[Mapping[str, Any]], float] = lambda options: 0.0
    # a stateful loss: built with (num_classes, ignore_index, class_weights, class_counts, **options)
    module: Callable[..., nn.Module] | None = None


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
_RECIPE = Option(tuple, "effective_number", lambda w: isinstance(w, str),
                 "must be a class-weight recipe (auto derives everything from the labeled split's counts)")
_TV_ALPHA = Option(float, 0.3, lambda a: 0.0 <= a <= 1.0, "must be in [0, 1] (the false-positive weight)")
_TV_BETA = Option(float, 0.7, lambda b: 0.0 <= b <= 1.0, "must be in [0, 1] (the false-negative weight)")
_RHO = Option(float, 0.99, lambda r: 0.0 <= r < 1.0, "must be in [0, 1) (EMA momentum per labeled step)")


def _choice(default: str, *choices: str) -> Option:
    return Option(str, default, lambda v: v in choices, f"must be one of {', '.join(choices)}")


def _adaptive_weight_ce(*, num_classes: int, ignore_index: int, class_weights: Tensor | None,
                        class_counts: ClassCounts | None, **options: Any) -> nn.Module:
    return LA.AdaptiveWeightCE(num_classes=num_classes, ignore_index=ignore_index, **options)


def _adaptive_focal(*, num_classes: int, ignore_index: int, class_weights: Tensor | None,
                    class_counts: ClassCounts | None, **options: Any) -> nn.Module:
    return LA.AdaptiveFocal(num_classes=num_classes, ignore_index=ignore_index, **options)


def _auto(*, num_classes: int, ignore_index: int, class_weights: Tensor | None, class_counts: ClassCounts | None,
          **options: Any) -> nn.Module:
    if class_weights is None or class_counts is None:
        raise LossOptionError("loss 'auto': needs a class-weight recipe and the labeled split's class counts "
                              "(trainers.data.stats.class_pixel_counts)")
    return LA.AutoLoss(num_classes=num_classes, ignore_index=ignore_index, class_weights=class_weights,
                       pixels=class_counts.pixels)


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
    # peer losses (losses.md §1.7-1.12)
    "tversky": LossEntry(LP.tversky, {"alpha": _TV_ALPHA, "beta": _TV_BETA, "smooth": _SMOOTH}, {},
                         "Tversky 1 - TI over present classes (alpha: FP weight, beta: FN weight)"),
    "focal_tversky": LossEntry(LP.focal_tversky, {"alpha": _TV_ALPHA, "beta": _TV_BETA, "smooth": _SMOOTH,
                                                  "gamma": Option(float, 4.0 / 3.0, lambda g: 0.0 < g <= 10.0,
                                                                  "must be in (0, 10]")}, {},
                               "focal Tversky mean_c (1 - TI_c)^(1/gamma)"),
    "generalised_dice": LossEntry(LP.generalised_dice, {"weighting": _choice("square", "square", "simple", "uniform"),
                                                        "smooth": _SMOOTH}, {},
                                  "generalised Dice, w_c = 1/(sum g_c)^2 (Sudre et al.)"),
    "lovasz": LossEntry(LP.lovasz_softmax, {}, {}, "Lovasz-softmax over present classes"),
    "ohem_ce": LossEntry(LP.ohem_cross_entropy, {"thresh": Option(float, 0.7, lambda t: 0.0 < t <= 1.0,
                                                                  "must be in (0, 1]"),
                                                 "min_kept": Option(int, 100_000, lambda k: k >= 1, "must be >= 1")},
                         {}, "CE over pixels with p_t < thresh, at least min_kept per image"),
    "recall_ce": LossEntry(LP.recall_cross_entropy, {}, {}, "recall loss: CE weighted by 1 - batch recall"),
    # adaptive losses (losses.md §5): stateful modules, see trainers/losses/adaptive.py
    "adaptive_weight_ce": LossEntry(None, {
        "score": _choice("iou", "iou", "recall"), "rho": _RHO,
        "kappa": Option(float, 1.0, lambda k: 0.0 < k <= 4.0, "must be in (0, 4]"),
        "eps": Option(float, 0.05, lambda e: 0.0 < e <= 1.0, "must be in (0, 1]"),
        "w_min": Option(float, 0.25, lambda w: 0.0 < w <= 1.0, "must be in (0, 1]"),
        "w_max": Option(float, 4.0, lambda w: 1.0 <= w <= 100.0, "must be in [1, 100]"),
        "warmup": Option(int, 500, lambda t: t >= 0, "must be >= 0 (labeled steps)"),
        "gamma": Option(float, 0.0, lambda g: 0.0 <= g <= 10.0, "must be in [0, 10] (0: CE, > 0: focal)"),
    }, {}, "CE/focal weighted by (1 - IoU_c + eps)^kappa of an EMA confusion matrix", module=_adaptive_weight_ce),
    "adaptive_focal": LossEntry(None, {
        "gamma": Option(float, 1.0, lambda g: 0.0 < g <= 20.0, "must be in (0, 20] (the initial gamma)"),
        "step_size": Option(float, 1.0, lambda s: 0.0 < s <= 10.0, "must be in (0, 10]"),
        "gamma_min": Option(float, 0.1, lambda g: 0.0 < g <= 1.0, "must be in (0, 1]"),
        "gamma_max": Option(float, 20.0, lambda g: 1.0 <= g <= 50.0, "must be in [1, 50]"),
        "rho": _RHO, "update_every": Option(int, 100, lambda k: k >= 1, "must be >= 1 (labeled steps)"),
    }, {}, "focal with per-class gamma moved by the class's confidence - accuracy gap", module=_adaptive_focal),
    "auto": LossEntry(None, {"class_weights": _RECIPE}, {},
                      "alpha CE_w + (1 - alpha)(1 - Dice), weights and alpha from the labeled split", module=_auto),
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
    if opt.kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"loss {name!r}: option {key} expects a string, but got {value!r}")
        return value
    if opt.kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ConfigError(f"loss {name!r}: option {key} expects a whole number, but got {value!r}")
        return int(value)
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
        if entry.module is not None:  # a stateful loss: its defaults fill in, its state is its own
            options = {k: o.default for k, o in entry.options.items() if o.default is not None} | dict(options)
        self.name, self.options = name, dict(options)
        kwargs = {entry.rename.get(k, k): v for k, v in options.items() if k != "class_weights"}
        self.weights = resolve_class_weights(name, options.get("class_weights"), num_classes=num_classes,
                                             class_counts=class_counts)
        values = None if self.weights is None else torch.tensor(self.weights.values, dtype=torch.float32)
        self.stateful: nn.Module | None = None
        if entry.module is not None:
            self.stateful = entry.module(num_classes=num_classes, ignore_index=ignore_index, class_weights=values,
                                         class_counts=class_counts, **kwargs)
            values = None  # the module holds what it uses
        # a buffer, so .to(device) moves it and checkpoints hold it; passed at call time for that reason
        self.register_buffer("class_weights", values)
        if entry.fn is not None:
            self._fn = partial(entry.fn, ignore_index=ignore_index, **kwargs)

    def describe(self) -> dict[str, Any]:
        """Name, options and the class weights actually used (for the trial's info)."""
        weights = None if self.weights is None else self.weights.to_json()
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}
        out = {"name": self.name, "options": options, "class_weights": weights}
        if self.stateful is not None and hasattr(self.stateful, "describe"):
            out |= self.stateful.describe()
        return out

    def observe(self, logits: Tensor, target: Tensor) -> None:
        """Let an adaptive loss update its state from one labeled batch (detached logits); no-op for the others."""
        if self.stateful is not None and hasattr(self.stateful, "observe"):
            self.stateful.observe(logits.detach(), target)

    def state_metrics(self, class_names: Sequence[str]) -> dict[str, float]:
        """An adaptive loss's state as `loss/weight/<class>` / `loss/gamma/<class>` metrics; {} for the others."""
        if self.stateful is None:
            return {}
        return self.stateful.state_metrics(class_names)

    def forward(self, logits: Tensor, target: Tensor, *, observe: bool = False) -> Tensor:
        """The loss; with `observe`, then `self.observe(logits, target)` (the loss reads the state from before).

        A module whose `forward` takes `observe` itself shares the work (AdaptiveFocal's statistics come from the
        log-probabilities its loss computes anyway), with the same result as the two calls."""
        if self.stateful is not None:
            if observe and getattr(self.stateful, "fuses_observe", False):
                return self.stateful(logits, target, observe=True)
            loss = self.stateful(logits, target)
            if observe:
                self.observe(logits, target)
            return loss
        if self.class_weights is None:
            return self._fn(logits, target)
        return self._fn(logits, target, class_weights=self.class_weights)


def build_loss(cfg: Any, *, ignore_index: int, num_classes: int, class_counts: ClassCounts | None = None) -> SegLoss:
    """`cfg` is a trainers.config.LossConfig; `class_counts` (of the labeled split) resolves a weight recipe."""
    return SegLoss(cfg.name, cfg.options, ignore_index=ignore_index, num_classes=num_classes,
                   class_counts=class_counts)
