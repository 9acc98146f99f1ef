"""Losses: oracles against PyTorch and one contract test applied to every registry entry."""

import pytest
import torch
import torch.nn.functional as F

from trainers.losses import LOSSES, SegLoss
from trainers.losses import functional as LF

IGNORE = 255
C = 4


def batch(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, C, 6, 7, generator=g, dtype=dtype)
    target = torch.randint(0, C, (2, 6, 7), generator=g)
    target[torch.rand(2, 6, 7, generator=g) < 0.1] = IGNORE  # ~10% ignore pixels
    return logits, target


def test_ce_equals_torch_cross_entropy_with_ignore_index():
    logits, target = batch()
    assert torch.allclose(LF.cross_entropy(logits, target, ignore_index=IGNORE).double(),
                          F.cross_entropy(logits, target, ignore_index=IGNORE))


def test_weighted_ce_is_a_mean_over_valid_pixels_not_over_the_weight_sum():
    logits, target = batch()
    w = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    per_pixel = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE, reduction="none")
    expected = per_pixel.sum() / (target != IGNORE).sum()
    assert torch.allclose(LF.cross_entropy(logits, target, ignore_index=IGNORE, class_weights=w).double(), expected)


def test_focal_with_gamma_zero_and_lambda_one_is_cross_entropy():
    logits, target = batch()
    got = LF.focal(logits, target, ignore_index=IGNORE, gamma=0.0, lam=1.0)
    assert torch.allclose(got.double(), F.cross_entropy(logits, target, ignore_index=IGNORE))


def test_focal_lambda_two_never_zeroes_easy_pixels_and_down_weights_less():
    logits, target = batch()
    lam1 = LF.focal(logits, target, ignore_index=IGNORE, gamma=2.0, lam=1.0)
    lam2 = LF.focal(logits, target, ignore_index=IGNORE, gamma=2.0, lam=2.0)
    ce = LF.cross_entropy(logits, target, ignore_index=IGNORE)
    assert lam1 < ce < lam2  # (1 - p)^2 <= 1 <= (2 - p)^2


def test_fractional_gamma_gives_finite_gradients_at_confident_pixels():
    logits = torch.zeros(1, C, 2, 2, dtype=torch.float64)
    logits[:, 0] = 60.0  # p_t -> 1: the gradient of (1 - p_t)^0.5 would be infinite without the clamp
    logits.requires_grad_(True)
    LF.focal(logits, torch.zeros(1, 2, 2, dtype=torch.long), gamma=0.5).backward()
    assert torch.isfinite(logits.grad).all()


def test_dice_is_zero_for_a_perfect_prediction_and_ignores_absent_classes():
    target = torch.tensor([[[0, 0], [1, IGNORE]]])
    logits = F.one_hot(target.clamp_max(C - 1), C).permute(0, 3, 1, 2).double() * 50
    assert LF.soft_dice(logits, target, ignore_index=IGNORE) == pytest.approx(0.0, abs=1e-6)


def build(name: str) -> SegLoss:
    return SegLoss(name, {}, ignore_index=IGNORE, num_classes=C)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_contract_every_registry_loss(name):
    loss = build(name)
    logits, target = batch()
    logits.requires_grad_(True)
    value = loss(logits, target)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    assert (logits.grad[ignored] == 0).all(), "gradient must be exactly zero at ignored pixels"

    # all pixels ignored: a graph-connected zero, never NaN
    logits2 = logits.detach().clone().requires_grad_(True)
    empty = loss(logits2, torch.full_like(target, IGNORE))
    assert empty.item() == 0.0
    empty.backward()
    assert (logits2.grad == 0).all()

    # confident correct logits: near zero
    safe = target.clamp_max(C - 1)
    perfect = F.one_hot(safe, C).permute(0, 3, 1, 2).double() * 50
    assert loss(perfect, safe).item() < 1e-4

    # class-permutation equivariance
    perm = torch.tensor([2, 0, 3, 1])
    inverse = torch.argsort(perm)
    permuted_target = torch.where(target == IGNORE, target, inverse[target.clamp_max(C - 1)])
    assert torch.allclose(loss(logits.detach(), target), loss(logits.detach()[:, perm], permuted_target))

    small = logits.detach()[:, :, :3, :3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: loss(z, target[:, :3, :3]), (small,))
