"""Adaptive losses: losses whose class weights or focusing parameters follow the training (losses.md §5).

Each is an `nn.Module` with three methods besides `forward(logits, target)`:
- `observe(logits, target)`: update the state from one labeled batch (the trainer asks for it once per step, through
  `SegLoss.forward(..., observe=True)`, which calls it after the loss or, for a module with `fuses_observe`, lets
  `forward(..., observe=True)` do both and share their work). Runs under `no_grad`, on the device, without reading
  a value back to the host: the counts are `scatter_add`s into fixed-size buffers, conditions are `torch.where`s, so
  a CUDA step never waits on it.
- `state_metrics(class_names)`: the state as `loss/weight/<class>` / `loss/gamma/<class>` metrics (one read-back, in
  the trainer's log window).
- the state lives in registered buffers, so `state_dict()` (saved in checkpoints as "loss") resumes it exactly.

`forward` only reads the state (and updates it after the loss with `observe=True`), so a loss value depends on
(logits, target, state) alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from trainers import metric_names as M
from trainers.losses import functional as LF


def batch_confusion(logits: Tensor, target: Tensor, ignore_index: int) -> Tensor:
    """[C, C] fractions of the batch's valid pixels with ground truth row / argmax column (sums to 1, or 0)."""
    num_classes = logits.shape[1]
    valid, safe = LF._valid(target, ignore_index)
    # ignored pixels go to an extra bin, dropped: boolean indexing would wait on the device for the count
    index = torch.where(valid, safe * num_classes + LF._predict(logits), num_classes * num_classes)
    cm = LF._count(index, num_classes * num_classes + 1)[:-1].view(num_classes, num_classes).float()
    return cm / cm.sum().clamp_min(1)


def _per_class_metrics(kind: Literal["weight", "gamma"], values: Tensor,
                       class_names: Sequence[str]) -> dict[str, float]:
    return {M.loss_state(kind, name): float(v) for name, v in zip(class_names, values.tolist(), strict=True)}


class AdaptiveWeightCE(nn.Module):
    """CE (or focal, `gamma > 0`) with class weights driven by an exponential moving confusion matrix (losses.md §5.A).

    Sources: recall loss's w = 1 - recall (Tian et al., arXiv:2106.14917), AEL's EMA class bank (Hu et al., NeurIPS
    2021), Seesaw's online counts (Wang et al., arXiv:2008.10032). Each labeled step, with CM_t the batch's
    confusion matrix as fractions of its valid pixels:

        M <- rho M + (1 - rho) CM_t
        s_c = IoU_c(M) = M_cc / (sum_j M_cj + sum_j M_jc - M_cc)   or   recall_c(M) = M_cc / sum_j M_cj
        w~_c = (1 - s_c + eps)^kappa,   w_c = clip(w~_c / mean_{c seen} w~_c, w_min, w_max)   (unseen classes: 1)
        w <- (1 - eta_t) 1 + eta_t w,   eta_t = min(1, t / T_w)

    IoU (the default) also penalises a class's false positives, the recall loss's known weakness. The weights are
    constants of each step (no gradient). Initial state: M = 0, all weights 1 (plain CE / focal).
    """

    def __init__(self, *, num_classes: int, ignore_index: int, score: str = "iou", rho: float = 0.99,
                 kappa: float = 1.0, eps: float = 0.05, w_min: float = 0.25, w_max: float = 4.0,
                 warmup: int = 500, gamma: float = 0.0) -> None:
        super().__init__()
        self.ignore_index, self.score, self.rho, self.kappa, self.eps = ignore_index, score, rho, kappa, eps
        self.w_min, self.w_max, self.warmup, self.gamma = w_min, w_max, warmup, gamma
        self.register_buffer("confusion", torch.zeros(num_classes, num_classes))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("class_weights", torch.ones(num_classes))

    @torch.no_grad()
    def observe(self, logits: Tensor, target: Tensor) -> None:
        cm = self.confusion.mul_(self.rho).add_(batch_confusion(logits, target, self.ignore_index), alpha=1 - self.rho)
        self.steps.add_(1)
        tp, gt, pred = cm.diagonal(), cm.sum(1), cm.sum(0)
        support = gt if self.score == "recall" else gt + pred - tp
        seen = gt > 0
        s = torch.where(seen, tp / support.clamp_min(1e-12), 0.0)
        raw = (1 - s + self.eps) ** self.kappa
        mean_seen = torch.where(seen, raw, 0.0).sum() / seen.sum().clamp_min(1)
        w = torch.where(seen, raw / mean_seen.clamp_min(1e-12), 1.0).clamp(self.w_min, self.w_max)
        eta = (self.steps.float() / self.warmup).clamp(max=1.0) if self.warmup > 0 else 1.0
        self.class_weights.copy_((1 - eta) + eta * w)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.gamma == 0.0:
            return LF.cross_entropy(logits, target, ignore_index=self.ignore_index, class_weights=self.class_weights)
        return LF.focal(logits, target, ignore_index=self.ignore_index, gamma=self.gamma,
                        class_weights=self.class_weights)

    def state_metrics(self, class_names: Sequence[str]) -> dict[str, float]:
        return _per_class_metrics("weight", self.class_weights, class_names)


class AdaptiveFocal(nn.Module):
    """Softmax focal loss with one gamma per class, AdaFocal's update applied per class (losses.md §5.B).

    AdaFocal (Ghosh, Schaaf, Gormley, NeurIPS 2022) moves gamma per confidence bin by the bin's calibration gap,
    `gamma <- gamma exp(lambda (C - A))`. Here the groups are the ground-truth classes: from the labeled batches,
    with presence-corrected EMAs (classes absent from a batch keep their statistics),

        conf_c = EMA of the mean top-label confidence max_k p_ik over pixels i of class c
        acc_c  = EMA of the fraction of those pixels predicted c (the class's recall; a tie for the top counts)
        every `update_every` steps:  gamma_c <- clip(gamma_c exp(step_size (conf_c - acc_c)), gamma_min, gamma_max)

    and the loss is `-(1 - p_t)^gamma_{y_i} log p_t`, mean over valid pixels. A class the model misses while
    confident (conf > acc) gets a larger gamma, one it under-rates a smaller one. Not implemented from AdaFocal:
    the switch to inverse focal loss for |gamma| < S_th (gamma stays >= gamma_min > 0, so the multiplicative update
    never sticks at 0) and validation-set statistics (the labeled training batches are used instead).
    """

    fuses_observe = True  # forward(..., observe=True) updates the state from its own log-probabilities

    def __init__(self, *, num_classes: int, ignore_index: int, gamma: float = 1.0, step_size: float = 1.0,
                 gamma_min: float = 0.1, gamma_max: float = 20.0, rho: float = 0.99, update_every: int = 100) -> None:
        super().__init__()
        self.ignore_index, self.step_size, self.rho, self.update_every = ignore_index, step_size, rho, update_every
        self.gamma_min, self.gamma_max = gamma_min, gamma_max
        self.register_buffer("gammas", torch.full((num_classes,), min(max(gamma, gamma_min), gamma_max)))
        self.register_buffer("confidence", torch.zeros(num_classes))
        self.register_buffer("accuracy", torch.zeros(num_classes))
        self.register_buffer("presence", torch.zeros(num_classes))  # EMA of 1: divides out the EMAs' zero start
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def observe(self, logits: Tensor, target: Tensor) -> None:
        valid, safe = LF._valid(target, self.ignore_index)
        log_probs = LF._log_probs(logits)
        self._update(log_probs, LF._target_log_prob(log_probs, safe), safe, valid)

    def forward(self, logits: Tensor, target: Tensor, *, observe: bool = False) -> Tensor:
        """The loss at the current gammas; with `observe`, then the state update from this batch (`observe`'s
        result exactly, from the log-probabilities computed here: a softmax pass less per step)."""
        valid, safe = LF._valid(target, self.ignore_index)
        log_probs = LF._log_probs(logits)
        logpt = LF._target_log_prob(log_probs, safe)
        base = (1 - logpt.exp()).clamp_min(LF.FOCAL_BASE_MIN)
        loss = LF._mean_valid(-logpt * base ** self.gammas.to(logpt)[safe], valid, logits)
        if observe:
            with torch.no_grad():
                self._update(log_probs.detach(), logpt.detach(), safe, valid)
        return loss

    def _update(self, log_probs: Tensor, logpt: Tensor, safe: Tensor, valid: Tensor) -> None:
        num_classes = log_probs.shape[1]
        # the top-label log-probability is an amax over classes (vectorised on CPU, unlike max's indices); a
        # pixel counts as predicted right when its class attains it (a tie counts as a hit)
        top_log = log_probs.amax(1)
        count, hits = LF._hits_per_class(logpt >= top_log, safe, valid, num_classes)
        top = torch.where(valid, top_log.exp_(), 0.0)
        top_sum = top.new_zeros(num_classes).scatter_add_(0, safe.flatten(), top.flatten())
        conf, acc = top_sum / count.clamp_min(1), hits.to(top) / count.clamp_min(1)
        present = count > 0
        for ema, x in ((self.confidence, conf), (self.accuracy, acc), (self.presence, torch.ones_like(conf))):
            ema.copy_(torch.where(present, self.rho * ema + (1 - self.rho) * x, ema))
        self.steps.add_(1)
        seen = self.presence > 0
        gap = (self.confidence - self.accuracy) / self.presence.clamp_min(1e-12)
        moved = (self.gammas * torch.exp(self.step_size * gap)).clamp(self.gamma_min, self.gamma_max)
        due = (self.steps % self.update_every == 0) & seen
        self.gammas.copy_(torch.where(due, moved, self.gammas))

    def state_metrics(self, class_names: Sequence[str]) -> dict[str, float]:
        return _per_class_metrics("gamma", self.gammas, class_names)


def entropy_mix(pixels: Sequence[float]) -> float:
    """CE share alpha = H(f) / log C of the class distribution f (1 for balanced classes, -> 0 for one class)."""
    n = np.maximum(np.asarray(pixels, dtype=np.float64), 1.0)  # zero counts floored to 1, as the weight recipes do
    f = n / n.sum()
    return float(-(f * np.log(f)).sum() / math.log(len(f))) if len(f) > 1 else 1.0


class AutoLoss(nn.Module):
    """Combo `alpha CE_w + (1 - alpha)(1 - Dice)` with every choice read off the labeled split (losses.md §5.C).

    The rule, with n_c the labeled split's valid pixels of class c and f_c = n_c / sum(n):
    - class weights w_c: the effective number of Cui et al. (arXiv:1901.05555), `(1 - beta) / (1 - beta^n_c)`
      normalised to sum C, with beta = 1 - 1/median(n_c) (the `effective_number` recipe's default; the paper's
      beta <= 0.9999 is uniform at pixel scale, losses.md §1.3);
    - mix alpha = H(f) / log C, the normalised entropy: balanced classes give plain (weighted) CE, the more the
      pixels concentrate in few classes the more weight goes to the Dice term, which averages classes equally.
    Nothing is adapted during training; the weights are logged as `loss/weight/<class>` all the same.
    """

    def __init__(self, *, num_classes: int, ignore_index: int, class_weights: Tensor,
                 pixels: Sequence[float]) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", class_weights.float())
        self.register_buffer("alpha", torch.tensor(entropy_mix(pixels)))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return LF.combo(logits, target, ignore_index=self.ignore_index, alpha=self.alpha.to(_dtype(logits)),
                        class_weights=self.class_weights)

    def describe(self) -> dict[str, Any]:
        return {"alpha": float(self.alpha)}

    def state_metrics(self, class_names: Sequence[str]) -> dict[str, float]:
        return _per_class_metrics("weight", self.class_weights, class_names)


def _dtype(logits: Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32
