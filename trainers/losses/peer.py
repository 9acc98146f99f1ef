"""Peer losses as pure tensor functions (formulas: shared/reference/losses.md §1.7-1.12).

Same contract as trainers/losses/functional.py: `loss(logits[N, C, H, W], target[N, H, W], *, ignore_index, ...)`
-> a scalar, ignored pixels contribute nothing (exactly zero gradient), an all-ignored batch gives a zero that stays
in the graph, computation in at least fp32. Region losses (Tversky, generalised Dice, Lovasz) are batch-level and
average over the classes present in the batch's valid ground truth, as `soft_dice` does. None of them moves a value
to the host: ignore pixels are masked, not removed by boolean indexing, so no step waits on the device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trainers.losses.functional import (
    _log_probs,
    _mean_over_present,
    _mean_valid,
    _softmax_stats,
    _target_log_prob,
    _valid,
)

TVERSKY_FLOOR = 1e-6  # floor of 1 - TI for focal Tversky: its exponent 1/gamma < 1 has an infinite slope at 0


def _region_stats(logits: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per class over the whole batch's valid pixels: (TP = sum p g, sum p, sum g, present) with soft p."""
    valid, safe = _valid(target, ignore_index)
    logpt, p_sum = _softmax_stats(logits, safe, valid)
    num_classes = p_sum.shape[0]
    p_t = torch.where(valid, logpt.exp(), 0.0)
    tp = p_t.new_zeros(num_classes).scatter_add(0, safe.flatten(), p_t.flatten())
    g_sum = p_t.new_zeros(num_classes).scatter_add(0, safe.flatten(), valid.flatten().to(p_t))
    return tp, p_sum, g_sum, g_sum > 0


def _tversky_index(tp: Tensor, p_sum: Tensor, g_sum: Tensor, present: Tensor, alpha: float, beta: float,
                   smooth: float) -> Tensor:
    fp, fn = p_sum - tp, g_sum - tp
    denominator = torch.where(present, tp + alpha * fp + beta * fn + smooth, 1.0)
    return (tp + smooth) / denominator


def tversky(logits: Tensor, target: Tensor, *, ignore_index: int = 255, alpha: float = 0.3, beta: float = 0.7,
            smooth: float = 0.0) -> Tensor:
    """Tversky loss `mean_c (1 - TI_c)`, `TI_c = (TP + s) / (TP + alpha FP + beta FN + s)` (Salehi et al.,
    arXiv:1706.05721), over classes present in the batch.

    `alpha` weighs false positives and `beta` false negatives (smp's and MONAI's naming; Salehi et al. favour
    beta = 0.7 > alpha = 0.3, our defaults). alpha = beta = 0.5 is soft Dice. smp's `TverskyLoss('multiclass')`
    zeroes absent classes but divides by C: ours = smp * C / |present|.
    """
    tp, p_sum, g_sum, present = _region_stats(logits, target, ignore_index)
    ti = _tversky_index(tp, p_sum, g_sum, present, alpha, beta, smooth)
    return _mean_over_present(1 - ti, present) + logits.sum() * 0.0


def focal_tversky(logits: Tensor, target: Tensor, *, ignore_index: int = 255, alpha: float = 0.3, beta: float = 0.7,
                  gamma: float = 4.0 / 3.0, smooth: float = 0.0) -> Tensor:
    """Focal Tversky loss `mean_c (1 - TI_c)^(1/gamma)` per class (Abraham & Khan, arXiv:1810.07842, gamma = 4/3).

    The paper sums over classes; we average over the present ones (the scale of the other region losses). The
    exponent is applied per class as in the paper, not to the class mean as smp's `gamma` is (losses.md §1.7).
    `1 - TI` is floored at TVERSKY_FLOOR: for 1/gamma < 1 the gradient at TI -> 1 is infinite.
    """
    tp, p_sum, g_sum, present = _region_stats(logits, target, ignore_index)
    ti = _tversky_index(tp, p_sum, g_sum, present, alpha, beta, smooth)
    per_class = (1 - ti).clamp_min(TVERSKY_FLOOR) ** (1.0 / gamma)
    return _mean_over_present(per_class, present) + logits.sum() * 0.0


def generalised_dice(logits: Tensor, target: Tensor, *, ignore_index: int = 255, weighting: str = "square",
                     smooth: float = 0.0) -> Tensor:
    """Generalised Dice (Sudre et al., arXiv:1707.03237):

        GDL = 1 - (2 sum_c w_c sum_i p_ic g_ic + s) / (sum_c w_c sum_i (p_ic + g_ic) + s)

    with `w_c = 1 / (sum_i g_ic)^2` (`square`, the paper), `1 / sum_i g_ic` (`simple`) or 1 (`uniform`), over the
    batch's valid pixels. A class absent from the batch has w = inf; as MONAI does, it gets the largest finite
    weight of the batch, so its false positives still count in the denominator (losses.md §1.8).
    """
    tp, p_sum, g_sum, present = _region_stats(logits, target, ignore_index)
    if weighting == "square":
        w = 1.0 / g_sum.square()
    elif weighting == "simple":
        w = 1.0 / g_sum
    else:
        w = torch.ones_like(g_sum)
    w_max = torch.where(present, w, 0.0).amax()
    w = torch.where(present, w, w_max).detach()
    numerator = 2 * (w * tp).sum() + smooth
    denominator = (w * (p_sum + g_sum)).sum() + smooth
    gdl = 1 - numerator / torch.where(present.any(), denominator, 1.0)
    return torch.where(present.any(), gdl, 0.0) + logits.sum() * 0.0


def lovasz_softmax(logits: Tensor, target: Tensor, *, ignore_index: int = 255) -> Tensor:
    """Lovasz-softmax (Berman et al., arXiv:1705.08790), batch-level, classes present in the ground truth.

    Per class c: errors `e_i = |g_ic - p_ic|` over valid pixels sorted in decreasing order, loss_c = <e_sorted,
    grad_J(g_sorted)> with the Lovasz extension's `J_k = 1 - (G - cumsum(g)_k) / (G + cumsum(1 - g)_k)` and
    grad_J its first differences. Ignored pixels are not removed by indexing (a host sync) but given the error -1,
    which sorts them after every valid pixel; J at a position depends only on the pixels before it, so the valid
    pixels' terms equal those of the reference with ignored pixels removed, and the ignored ones are masked to 0.
    All classes sort in one batched call. Equals `smp.losses.LovaszLoss('multiclass', ignore_index=...)`.
    """
    valid, safe = _valid(target, ignore_index)
    probs = _log_probs(logits).exp()
    num_classes = probs.shape[1]
    p = probs.transpose(0, 1).reshape(num_classes, -1)  # [C, P]
    fg = (torch.arange(num_classes, device=p.device).view(-1, 1) == safe.view(1, -1)) & valid.view(1, -1)
    fg = fg.to(p.dtype)
    mask = valid.view(1, -1).expand_as(p)
    errors = torch.where(mask, (fg - p).abs(), -1.0)
    errors_sorted, order = errors.sort(dim=1, descending=True)
    fg_sorted = fg.gather(1, order)
    total = fg_sorted.sum(1, keepdim=True)
    intersection = total - fg_sorted.cumsum(1)
    union = total + (1 - fg_sorted).cumsum(1)
    jaccard = 1 - intersection / union  # union >= 1 from the first pixel on
    grad = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], dim=1)
    per_class = (torch.where(errors_sorted >= 0, errors_sorted, 0.0) * grad).sum(1)
    return _mean_over_present(per_class, total.squeeze(1) > 0) + logits.sum() * 0.0


def ohem_cross_entropy(logits: Tensor, target: Tensor, *, ignore_index: int = 255, thresh: float = 0.7,
                       min_kept: int = 100_000) -> Tensor:
    """Online hard example mining CE (mmseg's `OHEMPixelSampler` rule, losses.md §1.11), mean over kept pixels.

    A valid pixel is kept when its true-class probability p_t < thresh, and the `min_kept * N` hardest valid pixels
    (lowest p_t) are always kept. mmseg keeps `p_t < max(thresh, p of the k-th hardest)`, which drops the k-th pixel
    itself and, when k reaches the number of valid pixels, the easiest one: here "everything kept" (min_kept * N >=
    valid pixels) is exactly `cross_entropy`. Selection runs without gradient, kept pixels weigh 1; the k-th value
    comes from `kthvalue` on the device (no host sync).
    """
    valid, safe = _valid(target, ignore_index)
    logpt = _target_log_prob(_log_probs(logits), safe)
    k = min_kept * target.shape[0]
    with torch.no_grad():
        keep = valid
        if k < target.numel():
            p_t = torch.where(valid, logpt.exp(), torch.inf)
            kth = p_t.flatten().kthvalue(k).values  # ignored pixels (inf) rank last
            keep = valid & ((p_t < thresh) | (p_t <= kth))
    return _mean_valid(-logpt, keep, logits)


def recall_cross_entropy(logits: Tensor, target: Tensor, *, ignore_index: int = 255) -> Tensor:
    """Recall loss (Tian et al., arXiv:2106.14917): `-(1/N_v) sum_i w_{y_i} log p_t`, w_c = 1 - recall_c =
    FN_c / (TP_c + FN_c) from the current batch's argmax.

    Fixes to the official code (losses.md §1.12): ignored pixels are masked out of the counts (it overwrites a
    class counter instead) and out of the mean (it divides by all pixels); no `.cuda()`. The weights are
    constants of the step (argmax has no gradient). A class recalled perfectly gets weight 0, as in the paper.
    """
    valid, safe = _valid(target, ignore_index)
    log_probs = _log_probs(logits)
    num_classes = log_probs.shape[1]
    with torch.no_grad():
        hit = (log_probs.argmax(1) == safe) & valid
        zeros = log_probs.new_zeros(num_classes)
        support = zeros.scatter_add(0, safe.flatten(), valid.flatten().to(zeros))
        tp = zeros.scatter_add(0, safe.flatten(), hit.flatten().to(zeros))
        w = 1 - tp / support.clamp_min(1)
    return _mean_valid(-_target_log_prob(log_probs, safe) * w[safe], valid, logits)
