"""Losses: oracles against PyTorch, torchvision, kornia and smp, and one contract test applied to every registry entry.

Oracle conventions (losses.md §6.5): ours is a mean over valid pixels N_v, so a library's `sum` over the valid
pixels is divided by N_v; kornia's `mean` divides by N*C*H*W including ignored pixels; smp's multiclass Dice zeroes
absent classes but still divides by C, where ours averages over the present classes only.
"""

import math

import kornia
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from trainers.data.stats import ClassCounts
from trainers.losses import LOSSES, SegLoss
from trainers.losses import functional as LF
from trainers.losses.options import OPTIONS

IGNORE = 255
C = 4


def counts(classes=C, order=None):
    """A labeled split's class counts, for the losses that need them (weight recipes, `auto`); `order` permutes them."""
    pixels = tuple(10 ** (5 - c % 5) for c in (range(classes) if order is None else order))
    return ClassCounts(classes=tuple(f"c{c}" for c in range(classes)), pixels=pixels, image_pixels=pixels, images=4)


def batch(dtype=torch.float64, seed=0, shape=(2, 6, 7), classes=C, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    n, h, w = shape
    logits = torch.randn(n, classes, h, w, generator=g, dtype=dtype) * scale
    target = torch.randint(0, classes, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < 0.1] = IGNORE  # ~10% ignore pixels
    return logits, target


def n_valid(target):
    return (target != IGNORE).sum()


def one_hot_valid(target, classes=C):
    """[N_v, C] one-hot rows of the valid pixels, and the same pixels' positions as a mask."""
    valid = target != IGNORE
    return F.one_hot(target[valid], classes).double(), valid


def test_ce_equals_torch_cross_entropy_with_ignore_index():
    logits, target = batch()
    assert torch.allclose(LF.cross_entropy(logits, target, ignore_index=IGNORE).double(),
                          F.cross_entropy(logits, target, ignore_index=IGNORE))


def test_weighted_ce_is_a_mean_over_valid_pixels_not_over_the_weight_sum():
    logits, target = batch()
    w = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    per_pixel = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE, reduction="none")
    expected = per_pixel.sum() / n_valid(target)
    assert torch.allclose(LF.cross_entropy(logits, target, ignore_index=IGNORE, class_weights=w).double(), expected)
    torch_mean = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE)  # divides by sum of w_y instead
    assert not torch.allclose(expected, torch_mean)


def test_focal_with_gamma_zero_and_lambda_one_is_cross_entropy():
    logits, target = batch()
    got = LF.focal(logits, target, ignore_index=IGNORE, gamma=0.0, lam=1.0)
    assert torch.allclose(got.double(), F.cross_entropy(logits, target, ignore_index=IGNORE))


def test_focal_with_gamma_zero_and_alpha_is_weighted_ce_averaged_over_valid_pixels():
    logits, target = batch()
    alpha = torch.tensor([0.25, 1.0, 3.0, 0.5], dtype=torch.float64)
    per_pixel = F.cross_entropy(logits, target, weight=alpha, ignore_index=IGNORE, reduction="none")
    got = LF.focal(logits, target, ignore_index=IGNORE, gamma=0.0, class_weights=alpha)
    assert torch.allclose(got, per_pixel.sum() / n_valid(target))


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 5.0])
def test_softmax_focal_equals_kornia_under_matched_reduction(gamma):
    logits, target = batch(shape=(2, 9, 11), classes=5, scale=2.0)
    ours = LF.focal(logits, target, ignore_index=IGNORE, gamma=gamma)
    kornia_sum = kornia.losses.focal_loss(logits, target, alpha=None, gamma=gamma, reduction="sum",
                                          ignore_index=IGNORE)
    kornia_mean = kornia.losses.focal_loss(logits, target, alpha=None, gamma=gamma, reduction="mean",
                                           ignore_index=IGNORE)
    assert torch.allclose(ours, kornia_sum / n_valid(target))
    assert torch.allclose(ours, kornia_mean * logits.numel() / n_valid(target))  # kornia: / N*C*H*W incl. ignored


def test_softmax_focal_class_weights_equal_kornias_per_class_weight():
    logits, target = batch(shape=(2, 9, 11), classes=5, scale=2.0)
    w = torch.tensor([0.2, 1.0, 2.5, 0.7, 4.0], dtype=torch.float64)
    ours = LF.focal(logits, target, ignore_index=IGNORE, gamma=2.0, class_weights=w)
    theirs = kornia.losses.focal_loss(logits, target, alpha=None, gamma=2.0, reduction="sum", weight=w,
                                      ignore_index=IGNORE)
    assert torch.allclose(ours, theirs / n_valid(target))


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.5, 0.75), (0.0, -1.0), (5.0, -1.0)])
def test_ovr_focal_equals_torchvision_sigmoid_focal_on_valid_pixels(gamma, alpha):
    logits, target = batch(shape=(2, 9, 11), classes=5, scale=2.0)
    onehot, valid = one_hot_valid(target, 5)
    theirs = sigmoid_focal_loss(logits.permute(0, 2, 3, 1)[valid], onehot, alpha=alpha, gamma=gamma, reduction="sum")
    ours = LF.focal_ovr(logits, target, ignore_index=IGNORE, gamma=gamma, alpha=alpha)
    assert torch.allclose(ours, theirs / n_valid(target))


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.5, 1.0), (0.0, 0.0), (3.0, -1.0)])
def test_ovr_focal_gradient_passes_gradcheck_and_equals_torchvision(gamma, alpha):
    """focal_ovr's gradient is written by hand (computed in the forward pass)."""
    logits, target = batch(shape=(2, 5, 6), classes=5, scale=2.0)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: LF.focal_ovr(z, target, ignore_index=IGNORE, gamma=gamma, alpha=alpha), (logits,))
    onehot, valid = one_hot_valid(target, 5)
    theirs = sigmoid_focal_loss(logits.permute(0, 2, 3, 1)[valid], onehot, alpha=alpha, gamma=gamma, reduction="sum")
    (expected,) = torch.autograd.grad(theirs / n_valid(target), logits)
    (ours,) = torch.autograd.grad(2 * LF.focal_ovr(logits, target, ignore_index=IGNORE, gamma=gamma, alpha=alpha),
                                  logits)
    assert torch.allclose(ours, 2 * expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_dice_equals_smp_times_classes_over_present_classes(seed):
    logits, target = batch(seed=seed, shape=(2, 9, 11), classes=5, scale=2.0)
    target[target == 3] = 1  # class 3 absent: smp counts it in its mean, we do not
    present = torch.bincount(target[target != IGNORE], minlength=5).gt(0).sum()
    assert present == 4
    theirs = smp.losses.DiceLoss("multiclass", ignore_index=IGNORE, smooth=0.0)(logits, target)
    assert torch.allclose(LF.soft_dice(logits, target, ignore_index=IGNORE), theirs * 5 / present)


def test_squared_dice_and_smooth_follow_the_formula():
    logits, target = batch(shape=(1, 5, 5))
    valid = target != IGNORE
    probs = logits.softmax(1) * valid
    g = F.one_hot(target.clamp_max(C - 1), C).permute(0, 3, 1, 2).double() * valid
    inter, p2, gs = (probs * g).sum((0, 2, 3)), probs.square().sum((0, 2, 3)), g.sum((0, 2, 3))
    present = gs > 0
    dice = (2 * inter + 1.5) / (p2 + gs + 1.5)
    expected = (1 - dice[present]).mean()
    assert torch.allclose(LF.soft_dice(logits, target, squared=True, smooth=1.5), expected)


def test_dice_is_zero_for_a_perfect_prediction_and_ignores_absent_classes():
    target = torch.tensor([[[0, 0], [1, IGNORE]]])
    logits = F.one_hot(target.clamp_max(C - 1), C).permute(0, 3, 1, 2).double() * 50
    assert LF.soft_dice(logits, target, ignore_index=IGNORE) == pytest.approx(0.0, abs=1e-6)


def test_combo_is_alpha_ce_plus_one_minus_alpha_dice_loss():
    logits, target = batch()
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    expected = 0.3 * ce + 0.7 * LF.soft_dice(logits, target)
    assert torch.allclose(LF.combo(logits, target, alpha=0.3), expected)


def combo_paper_by_hand(logits, target, alpha, beta, negative_weight):
    onehot, valid = one_hot_valid(target)
    p = logits.softmax(1).permute(0, 2, 3, 1)[valid].clamp(1e-7, 1 - 1e-7)
    bce = -(beta * onehot * p.log() + negative_weight * (1 - onehot) * (1 - p).log()).mean()
    return alpha * bce - (1 - alpha) * (1 - LF.soft_dice(logits, target))


def test_combo_paper_is_the_papers_equation_not_the_keras_bracket_bug():
    logits, target = batch(scale=2.0)
    ours = LF.combo_paper(logits, target, alpha=0.4, beta=0.7)
    assert torch.allclose(ours, combo_paper_by_hand(logits, target, 0.4, 0.7, negative_weight=1 - 0.7))
    keras_bug = combo_paper_by_hand(logits, target, 0.4, 0.7, negative_weight=0.7 * (1 - 0.7))
    assert not torch.allclose(ours, keras_bug, atol=1e-3)


@pytest.mark.parametrize("beta", [0.7, 0.2])
def test_combo_paper_gradient_passes_gradcheck_and_equals_the_formula_by_hand(beta):
    """The cross-entropy term's gradient is written by hand (computed in the forward pass)."""
    logits, target = batch(shape=(2, 5, 6), scale=2.0)
    logits[0, 1, 0, 0] = 30.0  # p clipped at 1 - eps here and at eps in the other classes: no gradient through them
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: LF.combo_paper(z, target, alpha=0.4, beta=beta), (logits,))
    by_hand = combo_paper_by_hand(logits, target, 0.4, beta, negative_weight=1 - beta)
    (expected,) = torch.autograd.grad(by_hand, logits)
    (ours,) = torch.autograd.grad(LF.combo_paper(logits, target, alpha=0.4, beta=beta), logits)
    assert torch.allclose(ours, expected)


def test_combo_paper_beta_punishes_false_negatives():
    # a pixel of class 0 predicted as class 1 is a false negative of class 0 (and a false positive of class 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    logits = torch.tensor([-2.0, 2.0, -2.0, -2.0], dtype=torch.float64).view(1, C, 1, 1)
    high, low = (LF.combo_paper(logits, target, alpha=1.0, beta=b) for b in (0.9, 0.1))
    assert high > low


def test_focal_lambda_two_never_zeroes_easy_pixels_and_down_weights_less():
    logits, target = batch()
    lam1 = LF.focal(logits, target, ignore_index=IGNORE, gamma=2.0, lam=1.0)
    lam2 = LF.focal(logits, target, ignore_index=IGNORE, gamma=2.0, lam=2.0)
    ce = LF.cross_entropy(logits, target, ignore_index=IGNORE)
    assert lam1 < ce < lam2  # (1 - p)^2 <= 1 <= (2 - p)^2


@pytest.mark.parametrize("fn", [LF.focal, LF.focal_ovr])
def test_fractional_gamma_gives_finite_gradients_at_confident_pixels(fn):
    logits = torch.full((1, C, 2, 2), -200.0, dtype=torch.float64)
    logits[:, 0] = 200.0  # p_t -> 1: the gradient of (1 - p_t)^0.5 would be infinite without the clamp/log form
    logits.requires_grad_(True)
    fn(logits, torch.zeros(1, 2, 2, dtype=torch.long), gamma=0.5).backward()
    assert torch.isfinite(logits.grad).all()


def test_losses_stay_fp32_under_bf16_autocast():
    logits, target = batch(dtype=torch.float32, shape=(2, 16, 16), classes=19, scale=3.0)
    target[target >= 19] = IGNORE
    for name in sorted(LOSSES):
        loss = SegLoss(name, {}, ignore_index=IGNORE, num_classes=19, class_counts=counts(19))
        plain = loss(logits, target)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = loss(logits, target)
        assert autocast.dtype == torch.float32 and torch.equal(plain, autocast), name
        assert loss(logits.bfloat16(), target).dtype == torch.float32, name


# --- the contract: every registry entry, at its defaults and at a few option settings -------------------------


def test_every_loss_has_an_options_table_and_every_table_a_loss():
    assert sorted(OPTIONS) == sorted(LOSSES)


VARIANTS = [(name, {}) for name in sorted(LOSSES)] + [
    ("focal", {"gamma": 0.5, "lambda": 1.0}), ("focal", {"gamma": 1.0, "lambda": 2.0}),
    ("focal", {"gamma": 2.0, "lambda": 2.0}), ("focal", {"gamma": 0.5, "lambda": 2.0}),
    ("focal_ovr", {"gamma": 0.5, "alpha": -1.0}),
    ("dice", {"squared": True, "smooth": 1.0}), ("combo", {"alpha": 0.2}), ("combo_paper", {"alpha": 0.3, "beta": 0.8}),
    ("tversky", {"alpha": 0.5, "beta": 0.5, "smooth": 1.0}), ("focal_tversky", {"gamma": 0.75}),
    ("generalised_dice", {"weighting": "simple"}), ("generalised_dice", {"weighting": "uniform", "smooth": 1.0}),
    ("ohem_ce", {"thresh": 0.7, "min_kept": 5}), ("adaptive_weight_ce", {"gamma": 2.0, "score": "recall"}),
    ("adaptive_focal", {"gamma": 2.0}), ("auto", {"class_weights": "enet"}),
]
# losses that take a list of weights (auto takes a recipe only)
WEIGHTED = sorted(name for name, entry in LOSSES.items() if "class_weights" in OPTIONS[name] and entry.module is None)
WEIGHTS = (0.5, 1.0, 2.0, 4.0)


def build(name, options, weights=None, order=None):
    options = options if weights is None else {**options, "class_weights": weights}
    return SegLoss(name, options, ignore_index=IGNORE, num_classes=C, class_counts=counts(order=order))


def variant_id(variant):
    name, options = variant
    return name + "".join(f"-{k}{v}" for k, v in options.items())


@pytest.mark.parametrize("variant", VARIANTS + [(name, {"weights": WEIGHTS}) for name in WEIGHTED], ids=variant_id)
def test_contract_every_registry_loss(variant):
    name, options = variant
    options = dict(options)
    weights = options.pop("weights", None)
    loss = build(name, options, weights)
    minimum = LOSSES[name].minimum(options)
    logits, target = batch()
    logits.requires_grad_(True)
    value = loss(logits, target)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    ignored = (target == IGNORE).unsqueeze(1).expand_as(logits)
    assert (logits.grad[ignored] == 0).all(), "gradient must be exactly zero at ignored pixels"
    assert logits.grad[~ignored].abs().sum() > 0

    # all pixels ignored: a graph-connected zero, never NaN
    logits2 = logits.detach().clone().requires_grad_(True)
    empty = loss(logits2, torch.full_like(target, IGNORE))
    assert empty.item() == 0.0
    empty.backward()
    assert (logits2.grad == 0).all()

    # confident correct logits (+50 for the class, -50 for the rest: confident for softmax and one-vs-rest alike)
    safe = target.clamp_max(C - 1)
    perfect = (F.one_hot(safe, C).permute(0, 3, 1, 2).double() * 100 - 50).requires_grad_(True)
    at_best = loss(perfect, safe)
    assert at_best.item() == pytest.approx(minimum, abs=1e-4)
    at_best.backward()
    assert perfect.grad.abs().max() < 1e-4

    # class-permutation equivariance (class weights permuted with the classes)
    perm = torch.tensor([2, 0, 3, 1])
    inverse = torch.argsort(perm)
    permuted_target = torch.where(target == IGNORE, target, inverse[target.clamp_max(C - 1)])
    # class weights and class counts permuted with the classes; a stateful loss is rebuilt in its initial state
    permuted = build(name, options, None if weights is None else tuple(WEIGHTS[int(c)] for c in perm),
                     order=perm.tolist())
    assert torch.allclose(loss(logits.detach(), target), permuted(logits.detach()[:, perm], permuted_target))

    small = logits.detach()[:, :, :3, :3].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: loss(z, target[:, :3, :3]), (small,))


def test_the_contract_covers_every_registry_entry():
    assert {name for name, _ in VARIANTS} == set(LOSSES)
    assert math.isclose(LOSSES["combo_paper"].minimum({"alpha": 0.3}), -0.7)
