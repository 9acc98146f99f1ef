"""Supervised segmentation losses as pure tensor functions.

Shape contract: `loss(logits[N, C, H, W], target[N, H, W], *, ignore_index=255, ...) -> scalar`.

Normalisation: every pixel-wise loss is a *mean over valid pixels* (target != ignore_index). With class weights
this differs from PyTorch's `F.cross_entropy(weight=w)`, which divides by the sum of the weights of the valid pixels:
here weights change the relative pull of classes but not the overall scale, so a weighted and an unweighted run use
the same effective learning rate. When every pixel is ignored the result is a zero that stays in the graph (never NaN,
unlike `F.cross_entropy`'s 0/0; pytorch/pytorch#70348).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _log_probs(logits: Tensor) -> Tensor:
    """log-softmax in at least fp32: under bf16/fp16 autocast the loss is still computed in fp32 (float64 stays)."""
    wide = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    return F.log_softmax(wide, dim=1)


def _valid(target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(mask of valid pixels, target with ignored pixels replaced by class 0 so gather/one_hot stay in range)."""
    valid = target != ignore_index
    return valid, torch.where(valid, target, torch.zeros_like(target))


def _mean_valid(per_pixel: Tensor, valid: Tensor, logits: Tensor) -> Tensor:
    count = valid.sum()
    total = (per_pixel * valid).sum()
    # clamp_min keeps the all-ignored case at exactly 0 while the graph still reaches logits
    return total / count.clamp_min(1) + logits.sum() * 0.0


def cross_entropy(logits: Tensor, target: Tensor, *, ignore_index: int = 255,
                  class_weights: Tensor | None = None) -> Tensor:
    """Cross entropy, mean over valid pixels; with `class_weights` each pixel is scaled by its class's weight."""
    valid, safe = _valid(target, ignore_index)
    nll = -_log_probs(logits).gather(1, safe.unsqueeze(1)).squeeze(1)
    if class_weights is not None:
        nll = nll * class_weights.to(nll)[safe]
    return _mean_valid(nll, valid, logits)


def focal(logits: Tensor, target: Tensor, *, ignore_index: int = 255, gamma: float = 2.0, lam: float = 1.0,
          class_weights: Tensor | None = None) -> Tensor:
    """The study's focal loss `-alpha_y (lambda - p_t)^gamma log p_t` (softmax), mean over valid pixels.

    lambda = 1 is Lin et al.'s focal loss (arXiv:1708.02002); lambda = 2 up-weights hard pixels without ever zeroing
    easy ones. The base `lambda - p_t` is clamped at a tiny positive value: with lambda < 1 it would go negative
    (undefined for fractional gamma), and at p_t -> 1 the gradient of base**gamma is infinite for gamma < 1.
    """
    valid, safe = _valid(target, ignore_index)
    logpt = _log_probs(logits).gather(1, safe.unsqueeze(1)).squeeze(1)
    base = (lam - logpt.exp()).clamp_min(1e-6)
    per_pixel = -(base**gamma) * logpt
    if class_weights is not None:
        per_pixel = per_pixel * class_weights.to(per_pixel)[safe]
    return _mean_valid(per_pixel, valid, logits)


def soft_dice(logits: Tensor, target: Tensor, *, ignore_index: int = 255, smooth: float = 1e-6) -> Tensor:
    """1 - mean soft Dice over the classes present in the batch's ground truth (batch-level sums).

    Ignored pixels are masked from both prediction and ground truth before any sum (the bug of older mmseg Dice was
    to mask only the numerator). Classes absent from the batch are left out of the mean, as Lovasz's 'present' mode.
    """
    valid, safe = _valid(target, ignore_index)
    num_classes = logits.shape[1]
    probs = _log_probs(logits).exp() * valid.unsqueeze(1)
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).to(probs) * valid.unsqueeze(1)
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    cardinality = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + smooth) / (cardinality + smooth)
    present = onehot.sum(dims) > 0
    n_present = present.sum()
    loss = ((1 - dice) * present).sum() / n_present.clamp_min(1)
    return loss + logits.sum() * 0.0


def combo(logits: Tensor, target: Tensor, *, ignore_index: int = 255, alpha: float = 0.5,
          class_weights: Tensor | None = None) -> Tensor:
    """Combo loss in its multi-class practical form `alpha * CE + (1 - alpha) * (1 - Dice)` (Taghanaki et al. 2019).

    It differs from the paper's `alpha * CE - (1 - alpha) * Dice` only by the constant (1 - alpha), so it is >= 0.
    """
    ce = cross_entropy(logits, target, ignore_index=ignore_index, class_weights=class_weights)
    return alpha * ce + (1 - alpha) * soft_dice(logits, target, ignore_index=ignore_index)
