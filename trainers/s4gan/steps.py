"""One s4GAN iteration as small functions named after the paper's terms (Mittal et al., TPAMI 2021).

Each works on plain tensors and is testable on a 2x3x8x8 input. Faithful to the reference mechanics
(reference notes s4gan.md §1.4): G gets no adversarial BCE term, only feature matching; self-training selects whole
images whose discriminator score passes a threshold and uses their argmax as pseudo-labels; D sees softmax
predictions (fake) and one-hot ground truth (real), each concatenated with the min-max normalised image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # an annotation only: the step functions take any loss module
    from trainers.losses import SegLoss


def upsample(logits: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
    """Logits at output stride 8 -> crop size; bilinear with align_corners=True as the reference, before every loss."""
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)


def poly_lr(base_lr: float, iteration: int, max_iterations: int, power: float) -> float:
    return base_lr * (1.0 - iteration / max_iterations) ** power


def minmax_normalise(images: Tensor, *, per_image: bool = False, range_of: Tensor | None = None) -> Tensor:
    """Scale images to [0, 1] for D's input.

    The reference uses the global min and max of the whole batch tensor (`per_image=False`). For the ground-truth
    batch it divides by the range of the *labeled* batch (`range_of`), a quirk kept behind `gt_norm_bug`.
    """
    if per_image:
        flat = images.flatten(1)
        lo = flat.min(1).values.view(-1, 1, 1, 1)
        hi = flat.max(1).values.view(-1, 1, 1, 1)
        return (images - lo) / (hi - lo).clamp_min(1e-8)
    ref = images if range_of is None else range_of
    return (images - images.min()) / (ref.max() - ref.min()).clamp_min(1e-8)


def one_hot_with_ignore(target: Tensor, num_classes: int, ignore_index: int, *,
                        memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
    """[N, H, W] labels -> [N, C, H, W] float one-hot; ignored pixels are all-zero vectors."""
    valid = target != ignore_index
    # one scatter into a zero [N, C, H, W] buffer: F.one_hot builds an int64 [N, H, W, C] first
    onehot = torch.empty(target.shape[0], num_classes, *target.shape[1:], device=target.device,
                         memory_format=memory_format).zero_()
    return onehot.scatter_(1, torch.where(valid, target, 0).unsqueeze(1), valid.unsqueeze(1).float())


def class_softmax(logits: Tensor) -> Tensor:
    """softmax over the class dimension, in the layout the logits come in.

    `torch.softmax(dim=1)` of a channels_last tensor returns a contiguous (NCHW) one, so with channels_last the
    discriminator's input would be converted back at each of its passes (2-4 ms each for [2, 22, 128, 256] on a CPU
    core). The softmax over the last dimension of the NHWC view is the same numbers and stays channels_last.
    """
    if logits.dim() == 4 and not logits.is_contiguous() and logits.is_contiguous(memory_format=torch.channels_last):
        return torch.softmax(logits.permute(0, 2, 3, 1), dim=-1).permute(0, 3, 1, 2)
    return torch.softmax(logits, dim=1)


def discriminator_input(class_maps: Tensor, images_01: Tensor) -> Tensor:
    """C class-probability (or one-hot) channels + 3 image channels."""
    return torch.cat([class_maps, images_01.to(class_maps.dtype)], dim=1)


def supervised_loss(criterion: SegLoss, logits: Tensor, target: Tensor) -> Tensor:
    """The registry loss on the labeled batch; an adaptive loss then updates its state from it (on the device, no
    host sync), which the self-training term's pseudo-labels never do."""
    return criterion(logits, target, observe=True)


def feature_matching_loss(features_real: Tensor, features_fake: Tensor) -> Tensor:
    """L1 between the batch means of D's pooled conv4 features for ground truth and prediction."""
    return (features_real.mean(0) - features_fake.mean(0)).abs().mean()


def select_confident(d_logits: Tensor, threshold: float) -> Tensor:
    """Per-image selection for self-training: D's probability that a prediction looks like ground truth > threshold."""
    return torch.sigmoid(d_logits.float()).view(-1) > threshold


def self_training_loss(criterion: nn.Module, logits: Tensor, selected: Tensor, ignore_index: int) -> Tensor:
    """The loss on selected images against their own argmax, a hard pseudo-label taken without gradient.

    Unselected images get an all-ignore target instead of being indexed out: every registry loss masks ignored
    pixels from all its sums, so the value equals the loss on the selected images alone, with no host round-trip
    (boolean indexing would sync) and a graph-connected zero when nothing is selected.
    """
    if selected.ndim != 1 or selected.shape[0] != logits.shape[0]:
        raise ValueError(f"selected must be a [{logits.shape[0]}] mask, but has shape {tuple(selected.shape)}")
    with torch.no_grad():
        pseudo = logits.max(1).indices  # argmax's first maximum too; on CPU ~3x faster than argmax over dim 1
        pseudo = torch.where(selected.view(-1, 1, 1), pseudo, torch.full_like(pseudo, ignore_index))
    return criterion(logits, pseudo)


def discriminator_loss(d_fake_logits: Tensor, d_real_logits: Tensor) -> Tensor:
    """(BCE(D(fake), 0) + BCE(D(real), 1)) / 2, with logits (AMP-safe, unlike Sigmoid + BCELoss)."""
    fake = F.binary_cross_entropy_with_logits(d_fake_logits.float(), torch.zeros_like(d_fake_logits, dtype=torch.float))
    real = F.binary_cross_entropy_with_logits(d_real_logits.float(), torch.ones_like(d_real_logits, dtype=torch.float))
    return (fake + real) / 2
