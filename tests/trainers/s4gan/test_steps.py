"""Each s4GAN step function on tiny tensors (2x3x8x8 and friends)."""

import pytest
import torch
import torch.nn.functional as F

from trainers.losses import SegLoss
from trainers.s4gan import steps

IGNORE = 255


def ce() -> SegLoss:
    return SegLoss("ce", {}, ignore_index=IGNORE, num_classes=3)


def test_poly_lr_at_start_middle_and_end():
    assert steps.poly_lr(0.01, 0, 100, 0.9) == pytest.approx(0.01)
    assert steps.poly_lr(0.01, 50, 100, 0.9) == pytest.approx(0.01 * 0.5**0.9)
    assert steps.poly_lr(0.01, 100, 100, 0.9) == 0.0


def test_upsample_is_bilinear_with_aligned_corners():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    up = steps.upsample(x, (3, 3))
    assert up[0, 0, 0, 0] == 0 and up[0, 0, -1, -1] == 3  # corners kept exactly: align_corners=True
    assert up[0, 0, 1, 1] == pytest.approx(1.5)


def test_minmax_normalise_batch_global_per_image_and_reference_quirk():
    x = torch.zeros(2, 3, 2, 2)
    x[0, :, 0, 0], x[1] = 2.0, 2.0
    x[1, :, 0, 0] = 4.0  # image 0 spans [0, 2], image 1 spans [2, 4]
    batch = steps.minmax_normalise(x)
    assert batch.min() == 0 and batch.max() == 1 and batch[0].max() == pytest.approx(0.5)
    per_image = steps.minmax_normalise(x + torch.rand_like(x), per_image=True)
    assert torch.allclose(per_image.flatten(1).min(1).values, torch.zeros(2))
    assert torch.allclose(per_image.flatten(1).max(1).values, torch.ones(2))
    # the reference divides the GT batch's offset by the *labeled* batch's range
    other = torch.zeros(1, 3, 2, 2)
    other[..., 0, 0] = 8.0
    quirk = steps.minmax_normalise(x, range_of=other)
    assert quirk.max() == pytest.approx(4 / 8)  # (4 - 0) / (8 - 0)


def test_one_hot_with_ignore_zeroes_ignored_pixels():
    y = torch.tensor([[[0, 2], [IGNORE, 1]]])
    oh = steps.one_hot_with_ignore(y, 3, IGNORE)
    assert oh.shape == (1, 3, 2, 2)
    assert oh[0, :, 1, 0].sum() == 0
    assert oh[0, 2, 0, 1] == 1 and oh.sum() == 3
    last = steps.one_hot_with_ignore(y, 3, IGNORE, memory_format=torch.channels_last)
    assert torch.equal(last, oh) and last.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_class_softmax_is_softmax_over_classes_in_the_logits_layout(memory_format):
    logits = torch.randn(2, 5, 4, 6, dtype=torch.float64).contiguous(memory_format=memory_format)
    probs = steps.class_softmax(logits.requires_grad_(True))
    assert torch.allclose(probs, torch.softmax(logits.detach(), dim=1), rtol=0, atol=1e-15)
    assert probs.is_contiguous(memory_format=memory_format)  # no conversion for D's input to undo
    assert torch.autograd.gradcheck(steps.class_softmax, (logits[:1, :, :2, :3].detach().requires_grad_(True),))


def test_feature_matching_is_zero_for_identical_batch_means_and_l1_otherwise():
    a = torch.randn(4, 16)
    assert steps.feature_matching_loss(a, a.flip(0)) == pytest.approx(0.0, abs=1e-6)  # same batch mean
    b = a + 0.5
    assert steps.feature_matching_loss(a, b) == pytest.approx(0.5)


def test_select_confident_threshold_zero_selects_all_and_one_selects_none():
    logits = torch.randn(5, 1)
    assert steps.select_confident(logits, 0.0).all()
    assert not steps.select_confident(logits, 1.0).any()
    chosen = steps.select_confident(torch.tensor([[3.0], [-3.0]]), 0.5)
    assert chosen.tolist() == [True, False]


def test_self_training_loss_equals_loss_on_selected_images_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    selected = torch.tensor([True, False])
    loss = steps.self_training_loss(ce(), logits, selected, IGNORE)
    expected = F.cross_entropy(logits[:1], logits[:1].argmax(1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


def test_self_training_loss_with_nothing_selected_is_a_connected_zero():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    loss = steps.self_training_loss(ce(), logits, torch.zeros(2, dtype=torch.bool), IGNORE)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() == 0


def test_self_training_rejects_a_mask_of_the_wrong_shape():
    with pytest.raises(ValueError, match="selected must be a \\[2\\] mask"):
        steps.self_training_loss(ce(), torch.randn(2, 3, 4, 4), torch.ones(3, dtype=torch.bool), IGNORE)


def test_discriminator_loss_is_mean_of_real_and_fake_bce():
    fake, real = torch.tensor([[0.3], [-1.0]]), torch.tensor([[2.0], [0.1]])
    expected = (F.binary_cross_entropy(torch.sigmoid(fake), torch.zeros_like(fake))
                + F.binary_cross_entropy(torch.sigmoid(real), torch.ones_like(real))) / 2
    assert steps.discriminator_loss(fake, real).item() == pytest.approx(expected.item(), rel=1e-6)


def test_discriminator_input_stacks_class_maps_and_image():
    assert steps.discriminator_input(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)).shape == (2, 6, 8, 8)
