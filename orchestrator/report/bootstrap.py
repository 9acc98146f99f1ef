"""The paired bootstrap behind a Δ's ↑/↓: each replicate resamples the seeds (pairs of a column's trial and the
baseline's trial with the same seed) and the validation images, and recomputes IoU from the per-image
intersection/union counts of both trials on the same drawn images (paired); so a difference smaller than the
image-to-image and seed-to-seed noise is never marked as a win. Seeded and vectorised (one matrix product per column).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator import results as R


@dataclass(frozen=True)
class Bootstrap:
    delta: np.ndarray  # [classes + 2 + subsets]: point estimate (mean over units) per class, miou, miou_all, subsets
    low: np.ndarray
    high: np.ndarray
    holds: np.ndarray  # bool


def paired_bootstrap(units: Sequence[tuple[R.PerImage, R.PerImage]], *, replicates: int = 1000,
                     rng: np.random.Generator, confidence: float = 0.95,
                     subsets: Sequence[np.ndarray] = ()) -> Bootstrap:
    """Column A minus baseline B, per class, for miou / miou_all and for the mean IoU over each class subset (bool
    [classes]: the rare classes), from per-image intersection/union counts.

    `units` pairs A's and B's counts [images, classes] of the same seed, on the same images. Each replicate draws
    the seeds with replacement and the images with replacement; A and B are scored on the same image draw (paired),
    IoU = sum(intersection) / sum(union) over the drawn images. Returns the percentile interval."""
    draws = ImageDraws(units[0][0][0].shape[0], replicates, rng)
    return seed_bootstrap([(draws.scores(a, subsets), draws.scores(b, subsets),
                            (iou_scores(totals(a), subsets) - iou_scores(totals(b), subsets))[0]) for a, b in units],
                          rng=rng, confidence=confidence)


class ImageDraws:
    """The image resamples of one evaluation set: replicate r weights image i by `weights[r, i]` (multinomial
    counts). One draw serves every trial and seed on that set, on purpose: all seeds are scored on the same
    validation images, so the error from which images were picked is common to them, not independent."""

    def __init__(self, images: int, replicates: int, rng: np.random.Generator) -> None:
        self.images = images
        self.weights = rng.multinomial(images, np.full(images, 1.0 / images), size=replicates).astype(np.float64)

    def scores(self, counts: R.PerImage, subsets: Sequence[np.ndarray] = ()) -> np.ndarray:
        """[R, C + 2 + S]: per-class IoU, miou, miou_all and each subset's mean IoU, of each replicate."""
        return self.scores_of([counts], subsets)[0]

    def scores_of(self, many: Sequence[R.PerImage], subsets: Sequence[np.ndarray] = ()) -> np.ndarray:
        """[trials, R, C + 2 + S] for several trials at once: one matrix product for all of them."""
        c = many[0][0].shape[1]
        counts = np.concatenate([np.concatenate(x, axis=1) for x in many], axis=1).astype(np.float64)
        sums = (self.weights @ counts).reshape(-1, len(many), 2 * c)  # [R, trials, 2C]
        return iou_scores(sums.transpose(1, 0, 2), subsets)


def seed_bootstrap(units: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *, rng: np.random.Generator,
                   confidence: float) -> Bootstrap:
    """`units`: (A's replicate scores, B's replicate scores, A - B on all images) per seed; replicate r averages the
    A - B of a with-replacement draw of the seeds."""
    d = np.stack([a - b for a, b, _ in units])  # [units, R, C + 2]
    replicates = d.shape[1]
    picks = rng.integers(0, len(units), size=(replicates, len(units)))
    resampled = d[picks, np.arange(replicates)[:, None]].mean(axis=1)  # [R, C + 2]
    alpha = 1.0 - confidence
    low, high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2], axis=0)
    return Bootstrap(np.mean([point for _, _, point in units], axis=0), low, high, (low > 0) | (high < 0))


def totals(counts: R.PerImage) -> np.ndarray:
    return np.concatenate(counts, axis=1).sum(axis=0, keepdims=True).astype(np.float64)


def iou_scores(sums: np.ndarray, subsets: Sequence[np.ndarray] = ()) -> np.ndarray:
    """[..., 2C] summed (intersection, union) -> [..., C + 2 + S]: IoU per class (0 where the union is empty), miou
    over the classes with a non-empty union, miou_all over all classes, then the mean IoU over each subset's classes
    (bool [C]; an empty union counts as 0 there, as in miou_all; NaN for an empty subset)."""
    c = sums.shape[-1] // 2
    inter, union = sums[..., :c], sums[..., c:]
    present = union > 0
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=present)
    miou = iou.sum(-1) / np.maximum(present.sum(-1), 1)  # absent classes have IoU 0: the sum is over present ones
    parts = [iou, miou[..., None], iou.mean(-1, keepdims=True)]
    parts += [iou[..., s].mean(-1, keepdims=True) if s.any() else np.full((*iou.shape[:-1], 1), np.nan)
              for s in subsets]
    return np.concatenate(parts, axis=-1)
