"""The s4GAN discriminator: shapes at any crop, parity with the reference's fixed pool, gradients, dropout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainers.s4gan.discriminator import Discriminator


@pytest.mark.parametrize(("size", "channels"), [((32, 64), 8), ((256, 512), 64)])
def test_logit_and_feature_shapes(size: tuple[int, int], channels: int) -> None:
    d = Discriminator(19, channels=channels)
    logit, feat = d(torch.rand(2, 22, *size))
    assert logit.shape == (2, 1)
    assert feat.shape == (2, 8 * channels)


def test_adaptive_pool_equals_the_reference_pool_at_256x512() -> None:
    d = Discriminator(19).eval()
    x = torch.rand(1, 22, 256, 512)
    with torch.no_grad():
        _, feat = d(x)
        reference = nn.AvgPool2d((16, 32))(d.features(x)).flatten(1)
    torch.testing.assert_close(feat, reference)


def test_reference_width_has_about_2_8m_parameters() -> None:
    n = sum(p.numel() for p in Discriminator(19).parameters())
    assert 2.7e6 < n < 2.9e6  # s4gan.md §1.3


def test_no_normalisation_and_dropout_after_the_first_three_convs() -> None:
    d = Discriminator(4, channels=8, dropout=0.3)
    kinds = [type(m).__name__ for m in d.features]
    assert kinds == ["Conv2d", "LeakyReLU", "Dropout2d"] * 3 + ["Conv2d", "LeakyReLU"]
    assert all(m.p == 0.3 for m in d.features if isinstance(m, nn.Dropout2d))


def test_gradient_reaches_the_input() -> None:
    d = Discriminator(4, channels=8)
    x = torch.rand(2, 7, 32, 64, requires_grad=True)
    logit, feat = d(x)
    (logit.sum() + feat.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_dropout_acts_only_in_train_mode() -> None:
    torch.manual_seed(0)
    d = Discriminator(4, channels=8)
    x = torch.rand(2, 7, 32, 64)
    assert not torch.equal(d(x)[0], d(x)[0])
    d.eval()
    assert torch.equal(d(x)[0], d(x)[0])


def test_refuses_bad_arguments_naming_them() -> None:
    with pytest.raises(ValueError, match="dropout=1.0"):
        Discriminator(4, dropout=1.0)
