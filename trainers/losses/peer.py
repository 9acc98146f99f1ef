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

from trainers.losses.functional import (
    _GradientInForward,
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
    grad_J its first differences; the loss is the mean of loss_c over the present classes (0 when none is).
    Equals `smp.losses.LovaszLoss('multiclass', ignore_index=...)`, value and gradient; _LovaszSoftmax says how it
    gets there without autograd through the sort.
    """
    valid, safe = _valid(target, ignore_index)
    # no `logits.sum() * 0.0`: the loss comes from logits, so the all-ignored zero stays in the graph as it is;
    # contiguous: channels_last logits would give channels_last keys, which the CPU rows cannot take
    return _LovaszSoftmax.apply(_wide(logits).contiguous(), safe, valid)


class _LovaszSoftmax(_GradientInForward):
    """The Lovasz-softmax loss from logits, with its gradient computed in the forward pass.

    The loss is linear in the errors once their order is fixed, so the sort and grad_J run without autograd, which
    would go through sort, gather and cumsum and keep them all: the gradient of loss_c is w_ic = grad_J at pixel
    i's rank, times d|g - p|/dp = -1 at the class's own pixels and +1 elsewhere; with u_ic = that over the number
    of present classes (0 for an absent class), d(loss)/d(z_ic) = p_ic (u_ic - sum_k p_ik u_ik), the softmax
    backward. Everything in it but the upstream scalar is known in the forward pass, so it is computed there, in
    the memory of the sort keys, and the probabilities are not kept; the backward only scales it. The arithmetic
    of J is the reference's (`lovasz_grad`), so the weights are the same numbers.

    Sort keys (_error_keys): one integer per pixel and class, the error's float bits (a non-negative float orders
    as its bits) times 2 plus the foreground bit, so the sorted keys give both the sorted errors and g_sorted.
    Ignored pixels get the smallest key and sort last, where a present class's J no longer changes (every
    foreground pixel is passed, J = 1): their weight is exactly 0 and the valid pixels' terms are the reference's
    with ignored pixels removed, without removing them (boolean indexing waits on the device for the count).
    On CPU each class is one row of numpy work on a thread (_lovasz_rows); elsewhere, and for float64, all classes
    go through torch ops at once (_lovasz_batched).
    """

    @staticmethod
    def forward(ctx, logits: Tensor, safe: Tensor, valid: Tensor) -> Tensor:  # type: ignore[override]
        with torch.autocast(logits.device.type, enabled=False):
            probs = F.log_softmax(logits, dim=1).exp_()
            keys = _error_keys(probs, safe, valid)
            rows = _lovasz_rows if _rows_on_host(keys) else _lovasz_batched
            per_class, foreground, weights = rows(keys, probs.dtype)
            present = foreground > 0
            count = present.sum()
            loss = _mean_over_present(per_class, present)
            if ctx.needs_input_grad[0]:
                u = weights.mul_(present.view(1, -1, *[1] * (probs.dim() - 2)))  # absent classes: no gradient
                at_target = safe.unsqueeze(1)  # d|g - p|/dp = -1 (an ignored pixel's weights are 0)
                u.scatter_(1, at_target, u.gather(1, at_target).neg_())
                grad = u.mul_(probs)  # p u, then p u - p sum_k p u_k
                grad.addcmul_(probs, grad.sum(1, keepdim=True), value=-1)
                ctx.save_for_backward(grad, count)
        return loss


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


def _rows_on_host(keys: Tensor) -> bool:
    """Whether _lovasz_rows applies: CPU, 32-bit keys, a flat index of `keys` that fits in 32 bits."""
    return (keys.device.type == "cpu" and keys.dtype == torch.int32 and keys.numel() < 2**32
            and keys.is_contiguous() and sys.byteorder == "little")


def _lovasz_rows(keys: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """(loss_c, G_c, grad_J weights) of every class from `keys` [N, C, ...] (int32, CPU); the weights are written
    over the keys, in their [N, C, ...] layout, as `dtype`.

    One class per step of a thread (numpy sorts and scans on one thread and releases the GIL; classes split over
    torch's threads), in buffers reused from class to class. A class's keys and its flat positions in `keys` pack
    into one int64 (~key high, position low) that numpy's vectorised sort orders in place, ~3x faster than
    torch.sort's radix sort with its int64 index array; the scan runs on that one row (torch's cumsum, ~5x numpy's),
    and the weights go back to the class's own positions, which its keys no longer need.
    """
    n, num_classes = keys.shape[:2]
    m = keys[0, 0].numel()
    size = n * m
    flat = keys.view(n, num_classes, m).numpy()
    weights = flat.view(np.float32)
    # position of (image i, class c, pixel j) in `keys`: (i C + c) m + j, below 2**32 (_rows_on_host)
    base = (np.arange(n, dtype=np.int64)[:, None] * (num_classes * m) + np.arange(m)).astype(np.uint32)
    steps = np.arange(1, size + 1, dtype=np.float32)
    result = np.zeros((num_classes, 2))  # loss_c, G_c

    def classes(which: range) -> None:
        packed = np.empty(size, np.int64)
        words = packed.view(np.int32).reshape(n, m, 2)  # little endian: [..., 0] is the low half
        key = np.empty(size, np.int32)
        cumulative = np.empty(size, np.int32)
        counts = torch.from_numpy(cumulative)
        jaccard = np.empty(size, np.float32)
        for c in which:
            np.add(base, c * m, out=words[..., 0], casting="unsafe")  # the position, as uint32 bits
            np.invert(flat[:, c], out=words[..., 1])  # decreasing key, increasing word
            packed.sort()
            np.invert(words.reshape(size, 2)[:, 1], out=key)
            np.bitwise_and(key, 1, out=cumulative)  # g_sorted, then its cumsum (torch's: ~5x numpy's)
            torch.cumsum(counts, 0, out=counts)
            total = int(cumulative[-1])
            if total == 0:  # absent: no loss, no gradient
                weights[:, c] = 0.0
                continue
            errors = np.right_shift(key, 1, out=key).view(np.float32)
            # lovasz_grad: J = 1 - intersection / union, intersection = G - cumsum(g), union = intersection + k
            intersection = np.subtract(total, cumulative, out=jaccard, casting="unsafe")
            union = np.add(intersection, steps, out=cumulative.view(np.float32))
            np.divide(intersection, union, out=jaccard)
            np.subtract(1, jaccard, out=jaccard)
            grad = union  # reused: grad_J = J_k - J_(k-1)
            grad[0] = jaccard[0]
            np.subtract(jaccard[1:], jaccard[:-1], out=grad[1:])
            result[c] = float(np.dot(errors, grad)), total
            np.bitwise_and(packed, 0xFFFFFFFF, out=packed)
            weights.reshape(-1)[packed] = grad

    workers = min(torch.get_num_threads(), num_classes)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(classes, [range(w, num_classes, workers) for w in range(workers)]))
    per_class = torch.from_numpy(result[:, 0]).to(dtype)
    return per_class, torch.from_numpy(result[:, 1]).long(), keys.view(dtype)


def _lovasz_batched(keys: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """_lovasz_rows with torch ops on all classes at once ([C, P] buffers, one sort): for CUDA (no host round-trip)
    and for float64 (whose 64-bit keys leave no room for a position). Weights as a [N, C, ...] view."""
    n, num_classes = keys.shape[:2]
    rows = keys.transpose(0, 1).reshape(num_classes, -1)
    key_sorted, order = rows.sort(dim=1, descending=True)
    counts = key_sorted & 1  # g_sorted, then its cumsum
    errors_sorted = key_sorted.bitwise_right_shift_(1).view(dtype)
    intersection = counts.cumsum_(1).to(dtype)
    total = intersection[:, -1:].clone()
    steps = torch.arange(1, order.shape[1] + 1, dtype=dtype, device=keys.device)
    torch.sub(total, intersection, out=intersection)
    union = intersection + steps
    jaccard = torch.addcdiv(torch.ones((), dtype=dtype, device=keys.device), intersection, union, value=-1,
                            out=intersection)
    grad = union  # reused: grad_J = J_k - J_(k-1)
    grad[:, :1] = jaccard[:, :1]
    torch.sub(jaccard[:, 1:], jaccard[:, :-1], out=grad[:, 1:])
    per_class = (errors_sorted * grad).sum(1)
    weights = jaccard.scatter_(1, order, grad)
    return per_class, total.view(num_classes), weights.view(num_classes, n, *keys.shape[2:]).transpose(0, 1)


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
