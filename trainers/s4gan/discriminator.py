"""The s4GAN discriminator (s4gan.md §1.3): judges a class-probability map concatenated with its image.

Input: `cat(softmax(pred) or one_hot(gt), image)`, C+3 channels. Four k4 s2 p1 convs (64-128-256-512 by
default), LeakyReLU(0.2) after each, Dropout2d after the first three, no normalisation, a global average
pool and a linear layer.
Two departures from the reference, both neutral at its 256x512 crop:
- `AdaptiveAvgPool2d(1)` instead of the fixed `AvgPool2d((16, 32))`, so any crop size works;
- the logit is returned before the sigmoid; the trainer uses `BCEWithLogits` (AMP-safe, numerically stable).
"""

from __future__ import annotations

from torch import Tensor, nn


class Discriminator(nn.Module):
    def __init__(self, num_classes: int, *, channels: int = 64, dropout: float = 0.5) -> None:
        super().__init__()
        if num_classes < 1 or channels < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"Discriminator: needs num_classes >= 1, channels >= 1 and dropout in [0, 1), "
                             f"but got num_classes={num_classes}, channels={channels}, dropout={dropout}")
        widths = [num_classes + 3, channels, 2 * channels, 4 * channels, 8 * channels]
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            # conv init: PyTorch's default (Kaiming-uniform); the notes record no custom init for D
            layers += [nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1),
                       nn.LeakyReLU(0.2, inplace=True)]
            if i < 3:
                layers.append(nn.Dropout2d(dropout))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * channels, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[B, C+3, H, W] -> (logit [B, 1] before the sigmoid, pooled conv4 features [B, 8*channels])."""
        feat = self.pool(self.features(x)).flatten(1)
        return self.fc(feat), feat
