"""Recall by object size, counted during a trial's final evaluation and logged as `small_objects_<eval>.json`.

Objects are the thing instances of `*_gtFine_instanceIds.png` (id * 1000 + k), resized to the evaluation size the
way labels are (nearest); one is found when at least FOUND of its pixels are predicted as its class. The prediction
is on the evaluation set's classes (through the set's remap exactly as the metrics are); objects of a class the
remap cannot predict are not counted. Only the Cityscapes layout has instance files (IDD has polygons): a set
without them counts no objects, and its recall is unknown (null), never 0.

numpy only at import: the report reads SIZE_BINS and FOUND without importing torch or trainers.data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from trainers.data.labels import LabelTable
    from trainers.data.remap import Remap

SIZE_BINS = (0, 64, 256, 1024)  # object area in pixels at the evaluation size: [0, 64), [64, 256), ...
FOUND = 0.5  # an object counts as found when at least half of its pixels are predicted as its class


class ObjectRecall:
    """Counts, per SIZE_BINS bin, the thing objects of an evaluation set and those found; `update` once per image,
    in the order of `instance_files` (the evaluation loader's, batch 1)."""

    def __init__(self, instance_files: Sequence[Path | None], labels: LabelTable, remap: Remap | None) -> None:
        self.instance_files, self.labels = list(instance_files), labels
        self.unscored = set() if remap is None else {remap.target_classes.index(c) for c in remap.unscored_classes}
        self.counts = np.zeros((2, len(SIZE_BINS)), np.int64)  # objects, found
        self.images = 0

    @classmethod
    def of(cls, pairs: Sequence[Any], labels: LabelTable, remap: Remap | None) -> ObjectRecall:
        """From the evaluation set's pairs: their instance file where the layout has one and it exists."""
        files = [getattr(p, "instance", None) for p in pairs]
        return cls([f if f is not None and f.is_file() else None for f in files], labels, remap)

    def wants(self, index: int) -> bool:
        return index < len(self.instance_files) and self.instance_files[index] is not None

    def update(self, index: int, pred: np.ndarray) -> None:
        """Image `index`'s prediction [H, W] on the evaluation set's classes."""
        path = self.instance_files[index]
        if path is not None:
            self.counts += objects_found(pred, path, self.labels, self.unscored)
            self.images += 1

    def to_json(self) -> dict[str, Any]:
        objects, found = self.counts.tolist()
        return {"size_bins": list(SIZE_BINS), "found_fraction": FOUND, "images": self.images, "objects": objects,
                "found": found, "recall": [f / o if o else None for o, f in zip(objects, found, strict=True)]}


def objects_found(pred: np.ndarray, instance_file: Path, labels: LabelTable, unscored: set[int]) -> np.ndarray:
    """[2, bins]: the image's thing objects per size bin, and those with at least FOUND of their pixels predicted as
    their class (`pred` in the evaluation set's classes)."""
    from PIL import Image

    with Image.open(instance_file) as im:
        instance = nearest(np.asarray(im).astype(np.int64), pred.shape)
    ids, inverse = np.unique(instance, return_inverse=True)
    inverse = inverse.reshape(instance.shape)
    cls = labels.raw_to_train[np.minimum(ids // 1000, 255)]
    hit = pred == cls[inverse]
    area = np.bincount(inverse.ravel(), minlength=len(ids))
    correct = np.bincount(inverse.ravel(), weights=hit.ravel(), minlength=len(ids))
    thing = (ids >= 1000) & (cls != labels.ignore_index) & ~np.isin(cls, list(unscored))
    bins = np.searchsorted(SIZE_BINS, area[thing], side="right") - 1
    out = np.zeros((2, len(SIZE_BINS)), np.int64)
    np.add.at(out[0], bins, 1)
    np.add.at(out[1], bins, (correct[thing] >= FOUND * area[thing]).astype(np.int64))
    return out


def nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize as torch's `nearest` (source index = floor(dst * in / out))."""
    h, w = array.shape
    rows = np.floor(np.arange(size[0]) * (h / size[0])).astype(np.int64)
    cols = np.floor(np.arange(size[1]) * (w / size[1])).astype(np.int64)
    return array[rows][:, cols]
