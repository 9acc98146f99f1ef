"""`s4sweep data check ROOT`: read every image and label of a dataset tree and name each broken file.

The same scan runs before a sweep schedules anything, so a broken file fails the launch, not trial 37 at hour 5.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainers.data import DataError
from trainers.data.cityscapes import IMAGE_SUFFIX, find_pairs, gt_dir, read_image, read_label
from trainers.data.labels import CITYSCAPES, LabelTable


def check_dataset(root: Path, *, splits: Sequence[str] = ("train", "val"),
                  table: LabelTable = CITYSCAPES) -> tuple[list[str], int]:
    """Returns (one line per problem, number of pairs read). Nothing is skipped silently."""
    if not root.is_dir():
        return [f"{root}: dataset root does not exist"], 0
    problems: list[str] = []
    counted = 0
    for split in splits:
        try:
            pairs = find_pairs(root, split)
        except DataError as e:
            problems.append(str(e))
            continue
        problems += _orphan_labels(root, split, {p.stem for p in pairs})
        for pair in pairs:
            counted += 1
            try:
                image = read_image(pair.image)
                label = read_label(pair, table)
            except DataError as e:
                problems.append(str(e))
                continue
            if label.shape != (image.height, image.width):
                problems.append(f"{pair.label}: label is {label.shape[1]}x{label.shape[0]} but image "
                                f"{pair.image.name} is {image.width}x{image.height}")
    return problems, counted


def _orphan_labels(root: Path, split: str, stems: set[str]) -> list[str]:
    """Label files whose image is missing (the reverse of find_pairs' check)."""
    labels = gt_dir(root) / split
    out = []
    for path in sorted(labels.glob("*/*_gtFine_labelIds.png")):
        stem = path.name[: -len("_gtFine_labelIds.png")]
        if stem not in stems:
            out.append(f"{path}: label without image (expected {root / 'leftImg8bit' / split / path.parent.name}"
                       f"/{stem}{IMAGE_SUFFIX})")
    return out
