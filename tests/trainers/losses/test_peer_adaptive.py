"""Peer losses against smp / MONAI / hand-written formulas, and the adaptive losses' state: it adapts, stays in
bounds, survives a checkpoint round-trip and is reported as metrics. (test_losses.py's contract covers every entry.)"""

import io

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from trainers import metric_names as M
from trainers.config import ConfigError, LossConfig
from trainers.data.stats import ClassCounts
from trainers.losses import SegLoss, build_loss, needs_class_counts
from trainers.losses import functional as LF
from trainers.losses import peer as LP
from trainers.losses.adaptive import entropy_mix

IGNORE = 255


def batch(seed=0, shape=(2, 9, 11), classes=5, dtype=torch.float64, ignore=0.1):
    g = torch.Generator().manual_seed(seed)
    n, h, w = shape
    logits = torch.randn(n, classes, h, w, generator=g, dtype=dtype) * 2
    target = torch.randint(0, classes, (n, h, w), generator=g)
    target[torch.rand(n, h, w, generator=g) < ignore] = IGNORE
    target[target == 3] = 1  # class 3 absent: the libraries' absent-class conventions differ from ours
    return logits, target


def present(target, classes=5):
    return torch.bincount(target[target != IGNORE], minlength=classes).gt(0).sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_lovasz_equals_smp_with_ignore_pixels_and_present_classes(seed):
    logits, target = batch(seed, dtype=torch.float32)  # smp's lovasz_grad is float32 only
    theirs = smp.losses.LovaszLoss("multiclass", ignore_index=IGNORE)(logits, target)
    assert torch.allclose(LP.lovasz_softmax(logits, target, ignore_index=IGNORE), theirs, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_lovasz_gradient_equals_smp(seed):
    """The backward is written by hand (sorted weights scattered back, then the softmax backward)."""
    logits, target = batch(seed, dtype=torch.float32)
    logits.requires_grad_(True)
    (theirs,) = torch.autograd.grad(smp.losses.LovaszLoss("multiclass", ignore_index=IGNORE)(logits, target), logits)
    (ours,) = torch.autograd.grad(LP.lovasz_softmax(logits, target, ignore_index=IGNORE), logits)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-8)
    assert (ours[(target == IGNORE).unsqueeze(1).expand_as(ours)] == 0).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_lovasz_cpu_rows_equal_the_batched_torch_path(threads, monkeypatch):
    """The CPU path (one class per numpy row on `threads` threads, weights written over the keys) against the torch
    path that CUDA and float64 take, on float32 CPU: same loss and gradient; an absent class gives no gradient."""
    logits, target = batch(2, shape=(3, 17, 23), classes=6, dtype=torch.float32)
    logits.requires_grad_(True)
    torch.set_num_threads(threads)
    try:
        (rows_loss := LP.lovasz_softmax(logits, target, ignore_index=IGNORE)).backward()
    finally:
        torch.set_num_threads(1)  # the module's setting
    rows_grad, logits.grad = logits.grad, None
    monkeypatch.setattr(LP, "_rows_on_host", lambda keys: False)
    (batched_loss := LP.lovasz_softmax(logits, target, ignore_index=IGNORE)).backward()
    assert torch.allclose(rows_loss, batched_loss, rtol=1e-6)
    assert torch.allclose(rows_grad, logits.grad, rtol=1e-5, atol=1e-9)
    assert rows_grad.abs().sum() > 0 and (rows_grad[(target == IGNORE).unsqueeze(1).expand_as(rows_grad)] == 0).all()


def test_lovasz_channels_last_logits_take_the_cpu_rows(monkeypatch):
    logits, target = batch(4, dtype=torch.float32)
    logits.requires_grad_(True)
    (expected,) = torch.autograd.grad(LP.lovasz_softmax(logits, target, ignore_index=IGNORE), logits)

    def batched(*args):
        raise AssertionError("the batched torch path ran on CPU float32")

    monkeypatch.setattr(LP, "_lovasz_batched", batched)
    last = logits.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    (grad,) = torch.autograd.grad(LP.lovasz_softmax(last, target, ignore_index=IGNORE), last)
    assert torch.equal(grad, expected)


def test_lovasz_loss_and_gradient_scale_with_the_upstream_gradient():
    """The gradient is computed in the forward pass; the backward only scales it by the upstream value."""
    logits, target = batch(3, dtype=torch.float32)
    logits.requires_grad_(True)
    (once,) = torch.autograd.grad(LP.lovasz_softmax(logits, target, ignore_index=IGNORE), logits)
    (thrice,) = torch.autograd.grad(3 * LP.lovasz_softmax(logits, target, ignore_index=IGNORE), logits)
    assert torch.allclose(thrice, 3 * once)
    loss = LP.lovasz_softmax(logits, target, ignore_index=IGNORE)
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss, logits)  # a retained graph gives the same gradient twice
    assert torch.equal(first, second)
    all_ignored = torch.full_like(target, IGNORE)
    zero = LP.lovasz_softmax(logits, all_ignored, ignore_index=IGNORE)
    (grad,) = torch.autograd.grad(zero, logits)
    assert zero.item() == 0.0 and not grad.any()


@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.7), (0.5, 0.5), (0.9, 0.1)])
def test_tversky_equals_smp_times_classes_over_present_classes(alpha, beta):
    logits, target = batch()
    theirs = smp.losses.TverskyLoss("multiclass", ignore_index=IGNORE, alpha=alpha, beta=beta, smooth=0.0)(
        logits, target)
    ours = LP.tversky(logits, target, ignore_index=IGNORE, alpha=alpha, beta=beta)
    assert torch.allclose(ours, theirs * 5 / present(target))  # smp zeroes absent classes but divides by C


def test_tversky_at_one_half_is_soft_dice():
    logits, target = batch()
    assert torch.allclose(LP.tversky(logits, target, alpha=0.5, beta=0.5), LF.soft_dice(logits, target))


def test_focal_tversky_applies_the_exponent_per_class_not_to_the_mean():
    logits, target = batch()
    valid = target != IGNORE
    p = logits.softmax(1) * valid.unsqueeze(1)
    g = F.one_hot(target.clamp_max(4), 5).permute(0, 3, 1, 2).double() * valid.unsqueeze(1)
    tp, fp, fn = (p * g).sum((0, 2, 3)), (p * (1 - g)).sum((0, 2, 3)), ((1 - p) * g).sum((0, 2, 3))
    ti = tp / (tp + 0.3 * fp + 0.7 * fn)
    keep = g.sum((0, 2, 3)) > 0
    expected = ((1 - ti[keep]) ** 0.75).mean()
    assert torch.allclose(LP.focal_tversky(logits, target, gamma=4 / 3), expected)
    assert not torch.allclose(expected, (1 - ti[keep]).mean() ** 0.75)


def gdl_by_hand(logits, target, classes=5):
    """Sudre et al.'s equation on ignore-free input, absent classes weighted with the largest finite weight."""
    p = logits.softmax(1)
    g = F.one_hot(target, classes).permute(0, 3, 1, 2).double()
    w = 1 / g.sum((0, 2, 3)) ** 2
    w[torch.isinf(w)] = w[torch.isfinite(w)].max()
    return 1 - 2 * (w * (p * g).sum((0, 2, 3))).sum() / (w * (p + g).sum((0, 2, 3))).sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_generalised_dice_equals_sudre_formula_and_monai_on_ignore_free_inputs(seed):
    logits, target = batch(seed, ignore=0.0)
    ours = LP.generalised_dice(logits, target, ignore_index=IGNORE)
    assert torch.allclose(ours, gdl_by_hand(logits, target))
    import monai  # in the test extra: a missing oracle must fail, not skip
    theirs = monai.losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=0.0,
                                              smooth_dr=0.0)(logits, target.unsqueeze(1))
    assert torch.allclose(ours, theirs.double(), rtol=1e-6)  # MONAI's weights pass through float32


def test_generalised_dice_ignores_ignored_pixels():
    logits, target = batch()
    valid = target != IGNORE
    other = torch.where(valid.unsqueeze(1), logits, torch.randn_like(logits) * 9)
    assert torch.allclose(LP.generalised_dice(logits, target), LP.generalised_dice(other, target))


def test_ohem_keeping_everything_is_cross_entropy_and_keeping_less_focuses_on_hard_pixels():
    logits, target = batch()
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert torch.allclose(LP.ohem_cross_entropy(logits, target, min_kept=10**6), ce)
    assert torch.allclose(LP.ohem_cross_entropy(logits, target, thresh=1.0, min_kept=10**6), ce)
    # thresh 0 is not allowed by the registry; a tiny thresh keeps exactly the min_kept * N hardest pixels
    hard = LP.ohem_cross_entropy(logits, target, thresh=1e-12, min_kept=3)
    nll = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")[target != IGNORE]
    assert torch.allclose(hard, nll.topk(6).values.mean())


def test_recall_loss_weights_each_class_by_its_batch_miss_rate():
    logits, target = batch()
    valid = target != IGNORE
    pred = logits.argmax(1)
    w = torch.zeros(5, dtype=torch.float64)
    for c in range(5):
        of_c = valid & (target == c)
        if of_c.any():
            w[c] = 1 - (pred[of_c] == c).double().mean()
    nll = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="none")
    expected = (nll * w[target.clamp_max(4)])[valid].sum() / valid.sum()
    assert torch.allclose(LP.recall_cross_entropy(logits, target, ignore_index=IGNORE), expected)


SPLIT = ClassCounts(classes=("road", "car", "pole", "sign", "bus"), pixels=(900_000, 300_000, 20_000, 5_000, 1_000),
                    image_pixels=(10**6,) * 5, images=8)


@pytest.mark.parametrize("name", ["ce", "focal"])
def test_effective_number_weights_work_with_ce_and_focal(name):
    cfg = LossConfig(name=name, options={"class_weights": "effective_number"})
    assert needs_class_counts(cfg.options)
    loss = build_loss(cfg, ignore_index=IGNORE, num_classes=5, class_counts=SPLIT)
    w = torch.tensor(loss.weights.values, dtype=torch.float64)
    assert w.argmax() == 4 and w.argmin() == 0  # the rarest class weighs most: not the uniform beta=0.9999 trap
    logits, target = batch()
    expected = LF.focal(logits, target, gamma=0.0 if name == "ce" else 2.0, class_weights=w)
    assert torch.allclose(loss(logits, target).double(), expected)


def test_auto_uses_effective_number_weights_and_the_entropy_mix():
    cfg = LossConfig(name="auto")
    assert needs_class_counts(cfg.options)  # the trainer hands it the labeled split's counts
    loss = build_loss(cfg, ignore_index=IGNORE, num_classes=5, class_counts=SPLIT)
    alpha = entropy_mix(SPLIT.pixels)
    assert 0 < alpha < 1 and loss.describe()["alpha"] == pytest.approx(alpha)
    assert entropy_mix([5, 5, 5]) == pytest.approx(1.0)
    w = torch.tensor(loss.weights.values, dtype=torch.float64)
    logits, target = batch()
    assert torch.allclose(loss(logits, target).double(), LF.combo(logits, target, alpha=alpha, class_weights=w),
                          rtol=1e-6)
    assert set(loss.state_metrics(SPLIT.classes)) == {M.loss_state("weight", c) for c in SPLIT.classes}
    with pytest.raises(ConfigError, match="recipe"):
        LossConfig(name="auto", options={"class_weights": [1, 2, 3, 4, 5]})


def test_new_options_are_typed_and_checked():
    assert LossConfig(name="ohem_ce", options={"min_kept": 1000.0}).options["min_kept"] == 1000
    with pytest.raises(ConfigError, match="whole number"):
        LossConfig(name="ohem_ce", options={"min_kept": 0.5})
    with pytest.raises(ConfigError, match="one of iou, recall"):
        LossConfig(name="adaptive_weight_ce", options={"score": "dice"})


# --- adaptive losses ------------------------------------------------------------------------------------------

MISSED = 2


def missing_stream(steps, classes=5, seed=0):
    """Labeled batches whose logits never predict class MISSED (its logit far below the others)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        target = torch.randint(0, classes, (2, 8, 8), generator=g)
        target[torch.rand(2, 8, 8, generator=g) < 0.1] = IGNORE
        logits = torch.randn(2, classes, 8, 8, generator=g)
        logits += 3 * F.one_hot(target.clamp_max(classes - 1), classes).permute(0, 3, 1, 2)  # mostly right...
        logits[:, MISSED] = -20.0  # ...except class MISSED, never predicted
        yield logits, target


ADAPTIVE = [("adaptive_weight_ce", {"warmup": 20}, "weight"),
            ("adaptive_weight_ce", {"score": "recall", "warmup": 20}, "weight"),
            ("adaptive_focal", {"update_every": 5}, "gamma")]


@pytest.mark.parametrize(("name", "options", "kind"), ADAPTIVE)
def test_a_class_that_is_always_missed_gains_weight_or_gamma_and_the_others_stay_in_bounds(name, options, kind):
    loss = SegLoss(name, options, ignore_index=IGNORE, num_classes=5)
    names = [f"c{c}" for c in range(5)]
    start = loss.state_metrics(names)
    assert set(start.values()) == {1.0}  # initial state: uniform weights / gamma = 1
    history = []
    for logits, target in missing_stream(60):
        loss.observe(logits, target)
        history.append(loss.state_metrics(names)[M.loss_state(kind, f"c{MISSED}")])
    end = loss.state_metrics(names)
    missed = end[M.loss_state(kind, f"c{MISSED}")]
    others = [v for k, v in end.items() if k != M.loss_state(kind, f"c{MISSED}")]
    assert missed > 1.5 and missed > max(others)
    assert history[0] < history[9] < history[19]  # rises (during the warm-up / with each gamma update)
    low, high = (0.25, 4.0) if kind == "weight" else (0.1, 20.0)
    assert all(low <= v <= high for v in end.values())
    if kind == "weight":
        assert all(v < 1.0 for v in others)  # well-predicted classes are down-weighted relative to the missed one


@pytest.mark.parametrize(("name", "options", "kind"), ADAPTIVE)
def test_adaptive_state_survives_a_checkpoint_round_trip(name, options, kind):
    loss = SegLoss(name, options, ignore_index=IGNORE, num_classes=5)
    stream = list(missing_stream(12))
    for logits, target in stream[:10]:
        loss.observe(logits, target)
    buffer = io.BytesIO()
    torch.save(loss.state_dict(), buffer)
    resumed = SegLoss(name, options, ignore_index=IGNORE, num_classes=5)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    for logits, target in stream[10:]:  # the next steps: identical updates and outputs
        for module in (loss, resumed):
            module.observe(logits, target)
        assert torch.equal(loss(logits, target), resumed(logits, target))
    fresh = SegLoss(name, options, ignore_index=IGNORE, num_classes=5)
    assert not torch.equal(fresh(*stream[-1]), loss(*stream[-1]))  # the state matters, so the test can fail


@pytest.mark.parametrize(("name", "options", "kind"), ADAPTIVE)
def test_forward_with_observe_equals_the_loss_then_observe(name, options, kind):
    fused, separate = (SegLoss(name, options, ignore_index=IGNORE, num_classes=5) for _ in range(2))
    for logits, target in missing_stream(12):
        logits.requires_grad_(True)
        loss = fused(logits, target, observe=True)
        assert torch.equal(loss, separate(logits, target))  # the loss reads the state from before the update
        separate.observe(logits, target)
        loss.backward()  # the update kept nothing in the graph
        assert all(torch.equal(a, b) for a, b in zip(fused.state_dict().values(), separate.state_dict().values(),
                                                      strict=True))
    names = [f"c{c}" for c in range(5)]
    fresh = SegLoss(name, options, ignore_index=IGNORE, num_classes=5)
    assert fused.state_metrics(names) != fresh.state_metrics(names)  # the state moved, so the test can fail


def test_adaptive_focal_counts_a_pixel_whose_class_ties_for_the_top_as_predicted():
    loss = SegLoss("adaptive_focal", {}, ignore_index=IGNORE, num_classes=3)
    logits = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]]).T.reshape(1, 3, 1, 2)  # classes 0 and 1 tie
    loss.observe(logits, torch.tensor([[[1, 2]]]))
    accuracy = loss.stateful.accuracy / loss.stateful.presence
    assert accuracy[1].item() == 1.0 and accuracy[2].item() == 0.0


def test_forward_reads_the_state_and_does_not_change_it():
    loss = SegLoss("adaptive_weight_ce", {}, ignore_index=IGNORE, num_classes=5)
    logits, target = next(missing_stream(1))
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    loss(logits, target)
    assert all(torch.equal(before[k], v) for k, v in loss.state_dict().items())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs are observable on CUDA only")
@pytest.mark.parametrize(("name", "options", "kind"), ADAPTIVE + [("ohem_ce", {"min_kept": 10}, None),
                                                                 ("lovasz", {}, None), ("recall_ce", {}, None)])
def test_update_and_loss_do_not_wait_on_the_device(name, options, kind):
    loss = SegLoss(name, options, ignore_index=IGNORE, num_classes=5).cuda()
    logits, target = (t.cuda() for t in next(missing_stream(1)))
    logits.requires_grad_(True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host copy raises
    try:
        loss.observe(logits, target)
        loss(logits, target).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
