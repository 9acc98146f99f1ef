"""Per-class pixel statistics of a split, the input of the class-weight recipes (trainers/losses/weights.py).

The trainer counts the *labeled* split only (`data.split.labeled`): with 1/8 of the images labeled, weights from
the whole training set would use labels the semi-supervised setting does not have (losses.md §6.9). Labels are read
at their stored resolution with the dataset's reader; ignore pixels are left out of every count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainers.data.cityscapes import Pair, read_label
from trainers.data.labels import LabelTable


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
