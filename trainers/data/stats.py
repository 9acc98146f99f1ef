"""Per-class pixel statistics of a split, the input of the class-weight recipes (trainers/losses/weights.py).

The trainer counts the *labeled* split only (`data.split.labeled`): with 1/8 of the images labeled, weights from
the whole training set would use labels the semi-supervised setting does not have (losses.md §6.9). Labels are read
at their stored resolution with the dataset's reader; ignore pixels are left out of every count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trainers.data.cityscapes import Pair, read_label
from trainers.data.labels import IGNORE_INDEX, LabelTable

if TYPE_CHECKING:
    from trainers.data.remap import Remap


@dataclass(frozen=True, kw_only=True)
class ClassCounts:
    classes: tuple[str, ...]
    pixels: tuple[int, ...]  # valid pixels of class c
    image_pixels: tuple[int, ...]  # valid pixels of the images in which c occurs (median-frequency balancing)
    images: int

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "pixels": dict(zip(self.classes, self.pixels, strict=True)),
                "image_pixels": dict(zip(self.classes, self.image_pixels, strict=True))}


def class_pixel_counts(pairs: Iterable[Pair], table: LabelTable) -> ClassCounts:
    """Count, per class, its valid pixels and the valid pixels of the images containing it."""
    num_classes = table.num_classes
    pixels = np.zeros(num_classes, dtype=np.int64)
    image_pixels = np.zeros(num_classes, dtype=np.int64)
    images = 0
    for pair in pairs:
        label = read_label(pair, table)
        valid = label[label != table.ignore_index]
        counts = np.bincount(valid, minlength=num_classes)
        pixels += counts
        image_pixels += (counts > 0) * valid.size
        images += 1
    return ClassCounts(classes=table.classes, pixels=tuple(int(n) for n in pixels),
                       image_pixels=tuple(int(n) for n in image_pixels), images=images)


def carry(values: Mapping[str, float], remap: Remap | None) -> dict[str, float]:
    """Per-class amounts (pixels, shares) of the model's label set -> the evaluation set's classes: merged classes
    add up, a class without a counterpart drops out (its pixels are void there). No remap: the same classes."""
    if remap is None:
        return dict(values)
    out: dict[str, float] = dict.fromkeys(remap.target_classes, 0)
    for source, target in zip(remap.source_classes, remap.lut.tolist(), strict=True):
        if target != IGNORE_INDEX:
            out[remap.target_classes[target]] += values.get(source, 0)
    return out


def labeled_counts_json(counts: ClassCounts, remaps: Mapping[str, Remap | None]) -> dict[str, Any]:
    """The trial's `labeled_counts.json`: the labeled split's valid pixels per class, and per evaluation key the same
    pixels carried into that set's classes (`carry`). A class's share in the labeled split is its pixels over the sum
    of `pixels` (the training classes), also for the carried ones: dropped classes' pixels stay in the total."""
    pixels = dict(zip(counts.classes, counts.pixels, strict=True))
    return {"classes": list(counts.classes), "pixels": list(counts.pixels), "images": counts.images,
            "eval": {key: carry(pixels, remap) for key, remap in remaps.items()}}
