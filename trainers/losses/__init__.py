"""Supervised losses: one plain dict registry from name to entry.

Each entry builds a `nn.Module` bound to the loss's options, which trainers/losses/options.py types and checks
(`OPTIONS`, beside this registry and torch-free). The trainer only ever calls `build_loss(cfg.loss, ignore_index=...,
num_classes=..., class_counts=...)`; a sweep file names a loss by its registry key. `class_weights` (ce, focal,
combo) is a list of one weight per class or a recipe of
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
from trainers.losses.options import OPTIONS, LossOptionError
from trainers.losses.weights import ClassWeights, class_weights

if TYPE_CHECKING:
    from trainers.data.stats import ClassCounts


@dataclass(frozen=True)
class LossEntry:
    fn: Callable[..., Tensor] | None  # a pure loss function, or None for a stateful `module`
    # option name in the sweep file -> keyword of the functional form (e.g. `lambda`, a Python keyword, -> `lam`)
    rename: dict[str, str]
    summary: str
    # the value at a perfect prediction, given the options (0 except for the paper's Combo, which subtracts Dice)
    minimum: Callable[[Mapping[str, Any]], float] = lambda options: 0.0
    # a stateful loss: built with (num_classes, ignore_index, class_weights, class_counts, **options)
    module: Callable[..., nn.Module] | None = None


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
    "ce": LossEntry(LF.cross_entropy, {}, "cross entropy (weighted with class_weights)"),
    "focal": LossEntry(LF.focal, {"lambda": "lam"},
                       "focal -alpha_y (lambda - p_t)^gamma log p_t, softmax"),
    "focal_ovr": LossEntry(LF.focal_ovr, {},
                           "one-vs-rest sigmoid focal, RetinaNet form"),
    "dice": LossEntry(LF.soft_dice, {}, "soft Dice over present classes"),
    "combo": LossEntry(LF.combo, {}, "alpha*CE + (1-alpha)*(1-Dice)"),
    "combo_paper": LossEntry(LF.combo_paper, {},
                             "Combo paper: alpha*beta-weighted one-vs-rest CE - (1-alpha)*Dice",
                             minimum=lambda o: -(1.0 - o.get("alpha", OPTIONS["combo_paper"]["alpha"].default))),
    # peer losses (losses.md §1.7-1.12)
    "tversky": LossEntry(LP.tversky, {},
                         "Tversky 1 - TI over present classes (alpha: FP weight, beta: FN weight)"),
    "focal_tversky": LossEntry(LP.focal_tversky, {},
                               "focal Tversky mean_c (1 - TI_c)^(1/gamma)"),
    "generalised_dice": LossEntry(LP.generalised_dice, {},
                                  "generalised Dice, w_c = 1/(sum g_c)^2 (Sudre et al.)"),
    "lovasz": LossEntry(LP.lovasz_softmax, {}, "Lovasz-softmax over present classes"),
    "ohem_ce": LossEntry(LP.ohem_cross_entropy, {}, "CE over pixels with p_t < thresh, at least min_kept per image"),
    "recall_ce": LossEntry(LP.recall_cross_entropy, {}, "recall loss: CE weighted by 1 - batch recall"),
    # adaptive losses (losses.md §5): stateful modules, see trainers/losses/adaptive.py
    "adaptive_weight_ce": LossEntry(None, {}, "CE/focal weighted by (1 - IoU_c + eps)^kappa of an EMA confusion matrix",
                                    module=_adaptive_weight_ce),
    "adaptive_focal": LossEntry(None, {}, "focal with per-class gamma moved by the class's confidence - accuracy gap",
                                module=_adaptive_focal),
    "auto": LossEntry(None, {},
                      "alpha CE_w + (1 - alpha)(1 - Dice), weights and alpha from the labeled split", module=_auto),
}


def _entry(name: str) -> LossEntry:
    if name not in LOSSES:
        raise LossOptionError(f"loss.name: unknown loss {name!r}; valid losses are {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


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
            options = {k: o.default for k, o in OPTIONS[name].items() if o.default is not None} | dict(options)
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
