"""Peer losses as pure tensor functions (formulas: shared/reference/losses.md §1.7-1.12).

Same contract as trainers/losses/functional.py: `loss(logits[N, C, H, W], target[N, H, W], *, ignore_index, ...)`
-> a scalar, ignored pixels contribute nothing (exactly zero gradient), an all-ignored batch gives a zero that stays
in the graph, computation in at least fp32. Region losses (Tversky, generalised Dice, Lovasz) are batch-level and
average over the classes present in the batch's valid ground truth, as `soft_dice` does. None of them moves a value
to the host: ignore pixels are masked, not removed by boolean indexing, so no step waits on the device.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from trainers.losses.functional import (
    _hits_per_class,
    _log_probs,
    _mean_over_present,
    _mean_valid,
    _predict,
    _softmax_stats,
    _target_log_prob,
    _valid,
    _wide,
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
    grad_J its first differences. Equals `smp.losses.LovaszLoss('multiclass', ignore_index=...)`, value and
    gradient; _LovaszSoftmax says how it gets there without autograd through the sort.
    """
    valid, safe = _valid(target, ignore_index)
    per_class, present = _LovaszSoftmax.apply(_wide(logits), safe, valid)
    # no `logits.sum() * 0.0`: per_class comes from logits, so the all-ignored zero stays in the graph as it is
    return _mean_over_present(per_class, present)


class _LovaszSoftmax(torch.autograd.Function):
    """(loss_c, class c present) of every class from logits, with a hand-written backward.

    The loss is linear in the errors once their order is fixed, so the sort and grad_J run without autograd, which
    would go through sort, gather and cumsum and keep them all: the gradient of loss_c is w_ic = grad_J at pixel
    i's rank, times d|g - p|/dp = -1 at the class's own pixels and +1 elsewhere; with u_ic = that times
    d(loss)/d(loss_c), d(loss)/d(z_ic) = p_ic (u_ic - sum_k p_ik u_ik), the softmax backward. The arithmetic of J
    is the reference's (`lovasz_grad`), so the weights are the same numbers.

    All classes sort at once, one integer key per pixel and class (_error_keys): the error's float bits (a
    non-negative float orders as its bits) times 2, plus the foreground bit, so the sorted keys give both the
    sorted errors and g_sorted. Ignored pixels get the smallest key and sort last, where a present class's J no
    longer changes (every foreground pixel is passed, J = 1): their weight is exactly 0 and the valid pixels' terms
    are the reference's with ignored pixels removed, without removing them (boolean indexing waits on the device
    for the count). Absent classes are left out of the mean, so their weights get a zero gradient.
    One batched pass rather than a loop over classes: on CPU each torch op pays a thread barrier, which costs
    milliseconds when other processes share the cores; and the [C, P] buffers are reused where they can be, as a
    fresh one costs its page faults (bench/losses.py).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, safe: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        with torch.autocast(logits.device.type, enabled=False):
            probs = F.log_softmax(logits, dim=1).exp_()
            dtype, num_classes = probs.dtype, probs.shape[1]
            key_sorted, order = _sort_classes(_error_keys(probs, safe, valid))
            counts = key_sorted & 1  # g_sorted, then its cumsum
            errors_sorted = key_sorted.bitwise_right_shift_(1).view(dtype)
            # lovasz_grad: J = 1 - intersection / union, intersection = G - cumsum(g), union = intersection + k
            intersection = counts.cumsum_(1).to(dtype)
            total = intersection[:, -1:].clone()
            steps = torch.arange(1, order.shape[1] + 1, dtype=dtype, device=probs.device)
            torch.sub(total, intersection, out=intersection)
            union = torch.add(intersection, steps, out=counts.view(dtype))  # counts' memory, no longer needed
            jaccard = torch.addcdiv(probs.new_ones(()), intersection, union, value=-1, out=intersection)
            grad = union  # reused: grad_J = J_k - J_(k-1)
            grad[:, :1] = jaccard[:, :1]
            torch.sub(jaccard[:, 1:], jaccard[:, :-1], out=grad[:, 1:])
            per_class = errors_sorted.mul_(grad).sum(1)
            weights = _scatter_rows(jaccard, order, grad)  # class-major [C, P]
        present = total.view(num_classes) > 0
        ctx.save_for_backward(probs, weights, safe)
        ctx.mark_non_differentiable(present)
        return per_class, present

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_per_class: Tensor, _: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        probs, weights, safe = ctx.saved_tensors
        n, c = probs.shape[:2]
        with torch.autocast(probs.device.type, enabled=False):
            grad = probs * grad_per_class.view(1, c, *[1] * (probs.dim() - 2))
            grad.mul_(weights.view(c, n, *probs.shape[2:]).transpose(0, 1))
            at_target = safe.unsqueeze(1)  # d|g - p|/dp = -1 (an ignored pixel's weights are 0)
            grad.scatter_(1, at_target, grad.gather(1, at_target).neg_())
            grad.addcmul_(probs, grad.sum(1, keepdim=True), value=-1)
        return grad, None, None


def _error_keys(probs: Tensor, safe: Tensor, valid: Tensor) -> Tensor:
    """[N, C, ...] integer keys `2 bits(e) + g` of the errors e = |g - p|, and the smallest key at ignored pixels."""
    bits = torch.int32 if probs.dtype == torch.float32 else torch.int64
    key = probs.view(bits) * 2  # background: e = p
    # foreground, one class per pixel: e = 1 - p_t, foreground bit 1
    p_t = probs.gather(1, safe.unsqueeze(1))
    key.scatter_(1, safe.unsqueeze(1), (1 - p_t).view(bits) * 2 + 1)
    # the smallest key is even (background, no effect on J) and its error bits read as a finite float (-2.0)
    ceiling = torch.where(valid, torch.iinfo(bits).max, torch.iinfo(bits).min).to(bits)
    return torch.minimum(key, ceiling.unsqueeze(1), out=key)


def _sort_classes(key: Tensor) -> tuple[Tensor, Tensor]:
    """Each class's keys (dimension 1 of `key` [N, C, ...]) in decreasing order: (sorted keys, order), [C, P].

    On CPU, numpy's vectorised sort of 64-bit words (~key high, the position low), in place, is ~3x faster than
    torch.sort's radix sort, which moves an int64 index array along; the sorted keys go back into `key`'s memory.
    A 64-bit key (float64 errors) leaves no room for the position and uses torch.sort, as other devices do.
    """
    rows = key.transpose(0, 1)
    num_classes, size = rows.shape[0], rows[0].numel()
    if key.device.type != "cpu" or key.dtype != torch.int32 or size > 2**31 or sys.byteorder != "little":
        return rows.reshape(num_classes, -1).sort(dim=1, descending=True)
    words = torch.empty((*rows.shape, 2), dtype=torch.int32)  # little endian: [..., 0] is the low half
    words[..., 0] = torch.arange(size, dtype=torch.int32).view(rows.shape[1:])
    torch.bitwise_not(rows, out=words[..., 1])  # decreasing key, increasing word
    packed = words.view(torch.int64).view(num_classes, size)
    _sort_rows(packed.numpy())
    key_sorted = torch.bitwise_not(words.view(num_classes, size, 2)[..., 1], out=key.view(num_classes, size))
    return key_sorted, packed.bitwise_and_(0xFFFFFFFF)


def _scatter_rows(out: Tensor, order: Tensor, values: Tensor) -> Tensor:
    """`out.scatter_(1, order, values)`: on CPU, numpy's assignment row by row is ~1.5x faster (random writes)."""
    if out.device.type != "cpu":
        return out.scatter_(1, order, values)
    for row, index, value in zip(out.numpy(), order.numpy(), values.numpy(), strict=True):
        row[index] = value
    return out


def _sort_rows(rows: np.ndarray) -> None:
    """Sort each row in place. numpy sorts on one thread and releases the GIL: the rows split over torch's threads."""
    workers = min(torch.get_num_threads(), len(rows))
    if workers <= 1:
        rows.sort(axis=1)
        return
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda part: part.sort(axis=1), np.array_split(rows, workers)))


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
        support, tp = _hits_per_class(_predict(logits) == safe, safe, valid, num_classes)
        w = 1 - tp.to(log_probs) / support.clamp_min(1)
    return _mean_valid(-_target_log_prob(log_probs, safe) * w[safe], valid, logits)
