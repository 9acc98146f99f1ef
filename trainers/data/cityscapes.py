"""The Cityscapes reader: file pairs as the download unpacks, raw label ids mapped to train ids.

Accepts `<root>/gtFine` and the reference's nested `<root>/gtFine_trainvaltest/gtFine` (s4gan.md §1.6). Uses
`*_gtFine_labelTrainIds.png` when present (cityscapesScripts' createTrainIdLabelImgs output), otherwise maps
`*_gtFine_labelIds.png` through the pinned table in trainers/data/labels.py. File lists are sorted, so the same
split seed picks the same images on every machine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from trainers.data.labels import CITYSCAPES_LABELS, LabelTable
from trainers.data.tables import DataError

IMAGE_SUFFIX = "_leftImg8bit.png"
MAX_RAW_ID = max(label.id for label in CITYSCAPES_LABELS)  # 33 (bicycle); license plate's -1 is never stored


@dataclass(frozen=True)
class Pair:
    image: Path
    label: Path
    train_ids: bool  # the label file already holds train ids (labelTrainIds), not raw ids

    @property
    def stem(self) -> str:
        return self.image.name[: -len(IMAGE_SUFFIX)]

    @property
    def instance(self) -> Path:
        return self.label.with_name(f"{self.stem}_gtFine_instanceIds.png")


def gt_dir(root: Path) -> Path:
    for candidate in (root / "gtFine", root / "gtFine_trainvaltest" / "gtFine"):
        if candidate.is_dir():
            return candidate
    raise DataError(f"{root}: no gtFine/ (nor gtFine_trainvaltest/gtFine/) directory: is this a Cityscapes root?")


def find_pairs(root: Path, split: str) -> list[Pair]:
    """Every (image, label) pair of a split, sorted by image path; any image without a label is an error."""
    pairs, lonely = scan_pairs(root, split)
    if lonely:
        raise DataError(no_label(*lonely[0]))
    return pairs


def scan_pairs(root: Path, split: str) -> tuple[list[Pair], list[tuple[Path, Path]]]:
    """The pairs of a split, and each image without a label with the label file it lacks, both sorted by image
    path: the scan (trainers/data/check.py) goes on past a missing label, the reader stops at it."""
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: missing image directory for split {split!r}")
    labels = gt_dir(root) / split
    images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise DataError(f"{image_dir}: split {split!r} has no *{IMAGE_SUFFIX} images")
    pairs, lonely = [], []
    for image in images:
        stem = image.name[: -len(IMAGE_SUFFIX)]
        base = labels / image.parent.name / stem
        train_ids = Path(f"{base}_gtFine_labelTrainIds.png")
        raw_ids = Path(f"{base}_gtFine_labelIds.png")
        if train_ids.is_file():
            pairs.append(Pair(image, train_ids, True))
        elif raw_ids.is_file():
            pairs.append(Pair(image, raw_ids, False))
        else:
            lonely.append((image, raw_ids))
    return pairs, lonely


def no_label(image: Path, expected: Path) -> str:
    return f"{image}: no label file (expected {expected})"


# What PIL raises for a file that is not the image it claims to be: truncated (OSError, SyntaxError), broken chunks
# (ValueError, EOFError), or a header claiming more pixels than PIL will decode (DecompressionBombError).
UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


def read_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except UNREADABLE as e:  # truncated or not a PNG
        raise DataError(f"{path}: unreadable image ({e})") from e


def read_label(pair: Pair, table: LabelTable) -> np.ndarray:
    """Train-id label map (uint8, ignore = table.ignore_index)."""
    try:
        with Image.open(pair.label) as im:
            raw = np.asarray(im)
    except UNREADABLE as e:
        raise DataError(f"{pair.label}: unreadable label ({e})") from e
    if raw.ndim != 2:
        raise DataError(f"{pair.label}: a label image must have one channel, but has shape {raw.shape}")
    if pair.train_ids:
        bad = (raw >= len(table.classes)) & (raw != table.ignore_index)
        if bad.any():
            raise DataError(f"{pair.label}: train id {int(raw[bad][0])} outside 0..{len(table.classes) - 1} "
                            f"and not the ignore value {table.ignore_index}")
        return raw.astype(np.uint8)
    top = int(raw.max())
    if top > MAX_RAW_ID:
        raise DataError(f"{pair.label}: raw label id {top} is not in the Cityscapes table (ids 0..{MAX_RAW_ID})")
    return table.encode(raw)


def file_list_hash(pairs: list[Pair], root: Path) -> str:
    """Fingerprint of a split's file list (relative paths), part of a trial's data identity."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(str(p.image.relative_to(root)).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
