"""Supervised segmentation losses as pure tensor functions (formulas: shared/reference/losses.md §1.1-1.6).

Shape contract: `loss(logits[N, C, H, W], target[N, H, W], *, ignore_index=255, ...) -> scalar`.

Normalisation: every pixel-wise loss is a *mean over valid pixels* (target != ignore_index), N_v = their count.
With class weights this differs from PyTorch's `F.cross_entropy(weight=w, reduction='mean')`, which divides by
the sum of the weights of the valid pixels (sum_i w_{y_i}) instead of N_v: here weights change the relative pull of
classes but not the overall scale, so a weighted and an unweighted run use the same effective learning rate
(mmseg's `avg_non_ignore=True` is the same choice). The Dice terms are batch-level (sums over the whole batch) and
average over the classes present in the batch's ground truth. When every pixel is ignored the result is a zero that
stays in the graph (never NaN, unlike `F.cross_entropy`'s 0/0; pytorch/pytorch#70348).

Precision: logits narrower than fp32 (bf16/fp16 under autocast) are widened first, so a loss is always computed in
at least fp32 (float64 stays float64, for gradcheck).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

FOCAL_BASE_MIN = 1e-6  # floor of the focal base (lambda - p_t): finite gradients for gamma < 1 (losses.md §1.4)
COMBO_CLIP = 1e-7  # the official Combo code clips p to [eps, 1 - eps] with Keras' epsilon 1e-7 (losses.md §1.6)


def _wide(logits: Tensor) -> Tensor:
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def _log_probs(logits: Tensor) -> Tensor:
    """log-softmax in at least fp32: under bf16/fp16 autocast the loss is still computed in fp32 (float64 stays)."""
    return F.log_softmax(_wide(logits), dim=1)


def _valid(target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(mask of valid pixels, target with ignored pixels replaced by class 0 so gather/one_hot stay in range)."""
    valid = target != ignore_index
    return valid, torch.where(valid, target, torch.zeros_like(target))


def _mean_valid(per_pixel: Tensor, valid: Tensor, logits: Tensor) -> Tensor:
    count = valid.sum()
    # where, not a product: a non-finite value at an ignored pixel cannot leak into the sum
    total = torch.where(valid, per_pixel, 0.0).sum()
    # clamp_min keeps the all-ignored case at exactly 0 while the graph still reaches logits
    return total / count.clamp_min(1) + logits.sum() * 0.0


def _pixel_weights(class_weights: Tensor | None, safe: Tensor, like: Tensor) -> Tensor | float:
    return 1.0 if class_weights is None else class_weights.to(like)[safe]


def _target_log_prob(log_probs: Tensor, safe: Tensor) -> Tensor:
    return log_probs.gather(1, safe.unsqueeze(1)).squeeze(1)


def _predict(logits: Tensor) -> Tensor:
    """`logits.argmax(1)`. torch.max's indices follow the same rule (the first maximum) and are ~4x faster on CPU,
    where argmax over a dimension other than the last is not vectorised (bench/losses.py: the batch argmax took
    longer than CE's forward and backward)."""
    return logits.max(1).indices


def _count(index: Tensor, bins: int) -> Tensor:
    """`torch.bincount(index.flatten(), minlength=bins)` for indices in [0, bins), as int64, without bincount's
    host sync on CUDA (its output size depends on the largest index): one scatter_add into a fixed-size buffer."""
    ones = torch.ones((), dtype=torch.long, device=index.device).expand(index.numel())
    return torch.zeros(bins, dtype=torch.long, device=index.device).scatter_add_(0, index.flatten(), ones)


def _hits_per_class(hit: Tensor, safe: Tensor, valid: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """(valid pixels, of them `hit`) per ground-truth class, as int64: one count of (class, hit) pairs over 2C bins,
    ignored pixels in an extra bin that is dropped (boolean indexing would wait on the device for the count)."""
    counts = _count(torch.where(valid, 2 * safe + hit, 2 * num_classes), 2 * num_classes + 1)[:-1]
    counts = counts.view(num_classes, 2)
    return counts.sum(1), counts[:, 1]


def cross_entropy(logits: Tensor, target: Tensor, *, ignore_index: int = 255,
                  class_weights: Tensor | None = None) -> Tensor:
    """Cross entropy `-w_y log p_t`, mean over valid pixels (weighted CE with `class_weights`; see the module doc)."""
    valid, safe = _valid(target, ignore_index)
    nll = -_target_log_prob(_log_probs(logits), safe)
    return _mean_valid(nll * _pixel_weights(class_weights, safe, nll), valid, logits)


def focal(logits: Tensor, target: Tensor, *, ignore_index: int = 255, gamma: float = 2.0, lam: float = 1.0,
          class_weights: Tensor | None = None) -> Tensor:
    """The study's focal loss `-alpha_y (lambda - p_t)^gamma log p_t` (softmax), mean over valid pixels.

    lambda = 1 is Lin et al.'s focal loss (arXiv:1708.02002); lambda = 2 up-weights hard pixels without ever zeroing
    easy ones. `alpha_y` is the class weight of the pixel's class (`class_weights`; 1 without). The base
    `lambda - p_t` is clamped at FOCAL_BASE_MIN: with lambda < 1 it would go negative (undefined for fractional
    gamma), and at p_t -> 1 the gradient of base**gamma is infinite for gamma < 1 (the Class-Balanced code's NaN
    warning, losses.md §1.3). The clamp only changes pixels with p_t > lambda - 1e-6, whose loss is ~1e-6**gamma * 1e-6.
    At gamma = 0, lambda = 1 this is `cross_entropy` exactly.
    """
    valid, safe = _valid(target, ignore_index)
    logpt = _target_log_prob(_log_probs(logits), safe)
    per_pixel = -logpt * _pixel_weights(class_weights, safe, logpt)
    if gamma != 0.0:
        per_pixel = per_pixel * (lam - logpt.exp()).clamp_min(FOCAL_BASE_MIN) ** gamma
    return _mean_valid(per_pixel, valid, logits)


class _GradientInForward(torch.autograd.Function):
    """A scalar loss whose forward pass also computes its gradient (a fused pass needs fewer full-size buffers than
    autograd through the same ops) and saves it as `(grad, count)`, the gradient of `count` times the loss: the
    backward only scales it. The logits come first; the other inputs (at most 4) get no gradient (autograd drops
    the surplus Nones)."""

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss: Tensor) -> tuple[Tensor, None, None, None, None]:  # type: ignore[override]
        grad, count = ctx.saved_tensors
        return grad * (grad_loss / count.clamp_min(1)).to(grad.dtype), None, None, None, None


def focal_ovr(logits: Tensor, target: Tensor, *, ignore_index: int = 255, gamma: float = 2.0,
              alpha: float = 0.25) -> Tensor:
    """One-vs-rest *sigmoid* focal loss (RetinaNet form, arXiv:1708.02002 eq. 5), summed over classes, mean over
    valid pixels: `sum_c -alpha_t (1 - p_t)^gamma log p_t` with `p = sigmoid(z_c)` and the pixel's class as the only
    positive. `alpha` weighs positives, `1 - alpha` negatives; a negative alpha turns the balance off
    (torchvision.ops.sigmoid_focal_loss's convention). Equals that function's `reduction='sum'` on the valid pixels
    divided by N_v.

    Stable form: with the margin `m = z` for the positive and `-z` for negatives, `-log p_t = -logsigmoid(m)` and the
    modulator `(1 - p_t)^gamma = exp(gamma * logsigmoid(-m))`, computed in log space as MONAI does (losses.md §1.4):
    no clamp needed, finite gradients for every gamma >= 0.
    """
    valid, safe = _valid(target, ignore_index)
    return _FocalOvr.apply(_wide(logits).contiguous(), safe, valid, gamma, alpha)


class _FocalOvr(_GradientInForward):
    """focal_ovr's value and its gradient, both in the forward pass (the backward only scales the gradient).

    Autograd through margin, two logsigmoids, exp and the alpha weights keeps ~7 full-size tensors and runs their
    backward passes one by one (bench/losses.py: 5.7x CE's time); this uses four buffers. With ls = log p_t =
    logsigmoid(m), lsn = log(1 - p_t) = ls - m and mod = exp(gamma lsn), an entry's loss is -a ls mod and
    d(-ls mod)/dm = mod (gamma p_t ls - (1 - p_t)), with dm/dz = +1 at the pixel's class and -1 elsewhere. Ignored
    pixels get mod = 0, which zeroes their loss and gradient alike. gradcheck in the tests checks the formula.
    """

    @staticmethod
    def forward(ctx, z: Tensor, safe: Tensor, valid: Tensor, gamma: float, alpha: float) -> Tensor:  # type: ignore[override]
        with torch.autocast(z.device.type, enabled=False):
            at = safe.unsqueeze(1)
            margin = z.neg()
            margin.scatter_(1, at, z.gather(1, at))
            ls = F.logsigmoid(margin)
            lsn = torch.sub(ls, margin, out=margin)  # logsigmoid(-m), in the margin's memory
            mod = torch.where(valid.unsqueeze(1), lsn * gamma, -torch.inf).exp_()  # 0 at ignored pixels
            positive = (ls.gather(1, at) * mod.gather(1, at)).sum()
            total = torch.dot(ls.view(-1), mod.view(-1))  # every entry: sum of ls mod, one pass
            # a = alpha at the positive, 1 - alpha at negatives (1 everywhere with alpha < 0)
            weighted = total if alpha < 0 else (1 - alpha) * total + (2 * alpha - 1) * positive
            count = valid.sum()
            loss = (0.0 - weighted) / count.clamp_min(1)  # 0.0, not -0.0, when every pixel is ignored
            if ctx.needs_input_grad[0]:
                grad = ls.exp().mul_(ls).mul_(gamma).sub_(lsn.exp_()).mul_(mod)  # d(-ls mod)/dm
                at_target = grad.gather(1, at)  # dm/dz = +1 here, -1 elsewhere, then the alpha weights
                if alpha >= 0:
                    at_target.mul_(alpha)
                grad.mul_(-(1 - alpha) if alpha >= 0 else -1.0).scatter_(1, at, at_target)
                ctx.save_for_backward(grad, count)
        return loss


class _SoftmaxStats(torch.autograd.Function):
    """(log p_t per pixel, sum over valid pixels of p_ic^q per class) from logits, with a hand-written backward.

    Autograd through log_softmax, exp, a masked product and a sum keeps three full-size tensors and runs four
    full-size backward passes; this keeps p alone and writes the gradient into one buffer (bench/losses.py:
    Dice and Combo drop from ~1.7x / 2.1x of CE's time to ~1.1x / 1.3x). With u the gradient of log p_t,
    G_ic = d(loss)/d(p_ic) = v_i a_c p_ic^(q-1) q from the class sums, and s_i = sum_c p_ic G_ic:
    d(loss)/d(z_ic) = [c = y_i] u_i + p_ic (G_ic - s_i - u_i). The class sums run as batched matmuls in the logits'
    precision with autocast off (autocast would run them in bf16); gradcheck in the tests checks the formula.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, safe: Tensor, mask: Tensor, power: int) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        with torch.autocast(logits.device.type, enabled=False):
            log_probs = F.log_softmax(logits.contiguous(), dim=1)
            logpt = _target_log_prob(log_probs, safe)
            probs = log_probs.exp_()  # the log-probabilities are not needed past this point
            n, c = probs.shape[:2]
            stat = probs if power == 1 else probs.square()
            sums = torch.bmm(stat.view(n, c, -1), mask.reshape(n, -1, 1)).sum(0).squeeze(1)
        ctx.save_for_backward(probs, safe, mask)
        ctx.power = power
        return logpt, sums

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logpt: Tensor, grad_sums: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        probs, safe, mask = ctx.saved_tensors
        n, c = probs.shape[:2]
        with torch.autocast(probs.device.type, enabled=False):
            if ctx.power == 1:  # G_ic = v_i a_c
                s = torch.bmm(grad_sums.view(1, 1, c).expand(n, 1, c), probs.view(n, c, -1)).view_as(mask) * mask
                shift = (s + grad_logpt).unsqueeze(1)
                grad = torch.addcmul(-shift, mask.unsqueeze(1), grad_sums.view(1, c, 1, 1))
            else:  # G_ic = 2 v_i a_c p_ic
                grad = probs * (2 * grad_sums).view(1, c, 1, 1)
                s = (grad * probs).sum(1) * mask
                grad.mul_(mask.unsqueeze(1)).sub_((s + grad_logpt).unsqueeze(1))
            grad.mul_(probs).scatter_add_(1, safe.unsqueeze(1), grad_logpt.unsqueeze(1))
        return grad, None, None, None


def _softmax_stats(logits: Tensor, safe: Tensor, valid: Tensor, *, squared: bool = False) -> tuple[Tensor, Tensor]:
    wide = _wide(logits)
    return _SoftmaxStats.apply(wide, safe, valid.to(wide.dtype), 2 if squared else 1)


def _dice_per_class(logpt: Tensor, p_sum: Tensor, safe: Tensor, valid: Tensor, *,
                    smooth: float = 0.0) -> tuple[Tensor, Tensor]:
    """Batch-level soft Dice of every class, and which classes are present in the batch's valid ground truth.

    `D_c = (2 sum_i p_ic g_ic + s) / (sum_i p_ic^q v_i + sum_i g_ic^q + s)` with q = 2 for the squared (V-Net) form,
    `p_sum` = sum_i p_ic^q v_i from _softmax_stats. Ignored pixels are masked out of both p and g before any sum
    (older mmseg masked only the numerator, #1088). The intersection is gathered at the target class (no one-hot
    tensor); for hard labels it equals smp's `(sum p + sum g - |p - g|_1) / 2`. A present class has a positive
    denominator, so `smooth` may be 0.
    """
    num_classes = p_sum.shape[0]
    p_t = torch.where(valid, logpt.exp(), 0.0)
    intersection = p_t.new_zeros(num_classes).scatter_add(0, safe.flatten(), p_t.flatten())
    g_sum = torch.bincount(safe[valid], minlength=num_classes).to(p_sum)  # g^q = g for hard labels
    present = g_sum > 0
    denominator = torch.where(present, p_sum + g_sum + smooth, 1.0)  # absent classes: no 0/0 when smooth = 0
    return (2 * intersection + smooth) / denominator, present


def _mean_over_present(per_class: Tensor, present: Tensor) -> Tensor:
    return torch.where(present, per_class, 0.0).sum() / present.sum().clamp_min(1)


def soft_dice(logits: Tensor, target: Tensor, *, ignore_index: int = 255, squared: bool = False,
              smooth: float = 0.0) -> Tensor:
    """`1 - mean_c D_c` over the classes present in the batch's ground truth (batch-level sums, see _dice_per_class).

    Classes absent from the batch are left out of the mean (Lovasz's 'present' mode). smp's
    `DiceLoss('multiclass')` instead zeroes absent classes but still divides by C: ours = smp * C / |present|.
    """
    valid, safe = _valid(target, ignore_index)
    logpt, p_sum = _softmax_stats(logits, safe, valid, squared=squared)
    dice, present = _dice_per_class(logpt, p_sum, safe, valid, smooth=smooth)
    return _mean_over_present(1 - dice, present) + logits.sum() * 0.0


def combo(logits: Tensor, target: Tensor, *, ignore_index: int = 255, alpha: float = 0.5,
          class_weights: Tensor | None = None) -> Tensor:
    """Combo loss in its multi-class practical form `alpha * CE + (1 - alpha) * (1 - Dice)` (Taghanaki et al. 2019).

    It differs from the paper's `alpha * CE - (1 - alpha) * Dice` only by the constant (1 - alpha), so it is >= 0;
    CE may be class-weighted; Dice is `soft_dice` with its defaults. One softmax serves both terms.
    """
    valid, safe = _valid(target, ignore_index)
    logpt, p_sum = _softmax_stats(logits, safe, valid)
    ce = _mean_valid(-logpt * _pixel_weights(class_weights, safe, logpt), valid, logits)
    dice, present = _dice_per_class(logpt, p_sum, safe, valid)
    return alpha * ce + (1 - alpha) * _mean_over_present(1 - dice, present)


def combo_paper(logits: Tensor, target: Tensor, *, ignore_index: int = 255, alpha: float = 0.5,
                beta: float = 0.5) -> Tensor:
    """The Combo paper's equation (Taghanaki et al., arXiv:1805.02798), one-vs-rest on softmax probabilities:

        L = alpha * -(1 / (N_v C)) sum_i sum_c [beta g_ic ln p_ic + (1 - beta)(1 - g_ic) ln(1 - p_ic)]
            - (1 - alpha) * mean_c D_c

    `beta` weighs the positive terms, so beta > 0.5 punishes false negatives more than false positives. p is
    clipped to [1e-7, 1 - 1e-7] as in the official code. The negatives get (1 - beta), as in the paper, not the
    official Keras code's beta * (1 - beta) (a bracket bug, losses.md §1.6). The CE term is a mean over valid
    pixels and classes (the official code means over the last axis, then the batch); D_c is `soft_dice`'s
    batch-level Dice over present classes. The loss is >= -(1 - alpha), reached by a perfect prediction.
    """
    valid, safe = _valid(target, ignore_index)
    bce = _ComboBce.apply(_wide(logits).contiguous(), safe, valid, beta)
    dice, present = _dice_per_class(*_softmax_stats(logits, safe, valid), safe, valid)
    return alpha * bce - (1 - alpha) * _mean_over_present(dice, present)


class _ComboBce(_GradientInForward):
    """combo_paper's one-vs-rest cross-entropy term, `-(1 / (N_v C)) sum [beta g ln p~ + (1 - beta)(1 - g) ln(1 - p~)]`
    with p~ = clip(p, eps, 1 - eps) applied in log space, and its gradient, both in the forward pass.

    Autograd through log-softmax, clamp, exp, log1p and a masked product keeps ~6 full-size tensors and runs their
    backward passes one by one (bench/losses.py: combo_paper at 5x CE's time); this uses three buffers. With
    G_ic = d(term)/d(ln p_ic): -beta at the pixel's class, (1 - beta) p~ / (1 - p~) elsewhere, 0 where the clip
    holds (torch.clamp's rule: the gradient passes for lo <= ln p <= hi) or the pixel is ignored; then the
    log-softmax backward d/dz_ic = G_ic - p_ic sum_k G_ik. gradcheck in the tests checks the formula.
    """

    @staticmethod
    def forward(ctx, z: Tensor, safe: Tensor, valid: Tensor, beta: float) -> Tensor:  # type: ignore[override]
        with torch.autocast(z.device.type, enabled=False):
            at, num_classes = safe.unsqueeze(1), z.shape[1]
            lo, hi = math.log(COMBO_CLIP), math.log1p(-COMBO_CLIP)
            log_p = F.log_softmax(z, dim=1)
            clipped = log_p.clamp(lo, hi)
            log_not_p = clipped.exp().neg_().log1p_()  # ln(1 - p~)
            positive = clipped.gather(1, at).squeeze(1) * beta
            negative = (log_not_p.sum(1) - log_not_p.gather(1, at).squeeze(1)) * (1 - beta)
            count = valid.sum() * num_classes
            loss = (0.0 - torch.where(valid, positive + negative, 0.0).sum()) / count.clamp_min(1)
            if ctx.needs_input_grad[0]:
                # (1 - beta) p~ / (1 - p~) = (1 - beta) exp(ln p~ - ln(1 - p~)), in ln(1 - p~)'s memory
                grad = torch.sub(clipped, log_not_p, out=log_not_p).exp_().mul_(1 - beta)
                grad.scatter_(1, at, torch.full_like(positive, -beta).unsqueeze(1))
                grad.masked_fill_((log_p < lo) | (log_p > hi) | ~valid.unsqueeze(1), 0.0)
                probs = log_p.exp_()
                grad.addcmul_(probs, grad.sum(1, keepdim=True), value=-1)
                ctx.save_for_backward(grad, count)
        return loss
