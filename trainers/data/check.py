"""`s4sweep data check ROOT`: read every image and label of a dataset tree and name each broken file.

The same scan runs before a sweep schedules anything, so a broken file fails the launch, not trial 37 at hour 5.
The layout is detected (Cityscapes: label PNGs ship; IDD: only polygon JSON ships) unless given. For IDD every
polygon file is parsed and its labels looked up, and the label PNGs of the chosen label sets (default: every set
with prepared PNGs) are read and checked against their image, their JSON and the rasteriser version.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from trainers.data import DataError, idd
from trainers.data.cityscapes import IMAGE_SUFFIX, Pair, find_pairs, gt_dir, read_image, read_label
from trainers.data.labels import CITYSCAPES, LabelTable
from trainers.data.labels_idd import ID_TYPE, IDD_TABLES
from trainers.data.rasterise import read_polygons, table_name


def detect_layout(root: Path) -> str:
    """"cityscapes" when Cityscapes' label PNGs are there, "idd" when only `*_gtFine_polygons.json` ship (IDD's
    prepared PNGs have other names: `labellevel3Ids`, `labelcsTrainIds`, ...)."""
    for gt in (root / "gtFine", root / "gtFine_trainvaltest" / "gtFine"):
        for name in ("_gtFine_labelIds.png", "_gtFine_labelTrainIds.png"):
            if next(gt.glob(f"*/*/*{name}"), None) is not None:
                return "cityscapes"
    if next((root / "gtFine").glob("*/*/*_gtFine_polygons.json"), None) is not None:
        return "idd"
    raise DataError(f"{root}: neither a Cityscapes root (gtFine/<split>/<city>/*_gtFine_labelIds.png) nor an IDD "
                    "root (gtFine/<split>/<drive>/*_gtFine_polygons.json)")


def check_dataset(root: Path, *, splits: Sequence[str] = ("train", "val"), table: LabelTable = CITYSCAPES,
                  layout: str | None = None, label_sets: Sequence[str] | None = None) -> tuple[list[str], int]:
    """Returns (one line per problem, number of pairs read). Nothing is skipped silently.

    `table` is the Cityscapes-layout label table; `label_sets` the IDD label PNGs to check (IDD layout only)."""
    if not root.is_dir():
        return [f"{root}: dataset root does not exist"], 0
    try:
        layout = layout or detect_layout(root)
    except DataError as e:
        return [str(e)], 0
    if layout == "idd":
        return check_idd(root, splits=splits, label_sets=label_sets)
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
            problems += check_pair(pair, table)
    return problems, counted


def check_pair(pair: Pair, table: LabelTable) -> list[str]:
    """Decode the image and the label; the label's values and size must fit."""
    try:
        image = read_image(pair.image)
        label = read_label(pair, table)
    except DataError as e:
        return [str(e)]
    if label.shape != (image.height, image.width):
        return [f"{pair.label}: label is {label.shape[1]}x{label.shape[0]} but image {pair.image.name} is "
                f"{image.width}x{image.height}"]
    return []


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


def check_idd(root: Path, *, splits: Sequence[str], label_sets: Sequence[str] | None) -> tuple[list[str], int]:
    """The IDD scan: images <-> polygon files both ways, every JSON parsed and its labels known, label PNGs read."""
    if label_sets is None:  # every label set with at least one prepared PNG
        label_sets = [s for s, t in ID_TYPE.items() if next((root / "gtFine").glob(f"*/*/*_label{t}s.png"), None)]
    problems: list[str] = []
    counted = 0
    for split in splits:
        try:
            images, gt = idd.find_images(root, split), idd.polygon_dir(root, split)
        except DataError as e:
            problems.append(str(e))
            continue
        stems = {(image.parent.name, idd.image_stem(image)): image for image in images}
        for polygons in sorted(gt.glob(f"*/*{idd.POLYGON_SUFFIX}")):
            stem = polygons.name[: -len(idd.POLYGON_SUFFIX)]
            if (polygons.parent.name, stem) not in stems:
                problems.append(f"{polygons}: label without image (expected "
                                f"{root / 'leftImg8bit' / split / polygons.parent.name}/{stem}{IMAGE_SUFFIX})")
        missing = dict.fromkeys(label_sets, 0)
        for (drive, stem), image in stems.items():
            counted += 1
            problems += _check_idd_image(root, image, gt / drive / f"{stem}{idd.POLYGON_SUFFIX}", label_sets, missing)
        problems += [f"{gt}: {n} of {len(stems)} images have no {label_set} label PNG; run "
                     f"{idd.prepare_command(root, label_set)}" for label_set, n in missing.items() if n]
    if not label_sets:
        problems.append(f"{root}: no label PNGs of any label set yet; run {idd.prepare_command(root, 'SET')}")
    return problems, counted


def _check_idd_image(root: Path, image: Path, polygons: Path, label_sets: Sequence[str],
                     missing: dict[str, int]) -> list[str]:
    """One image's polygon file and label PNGs; counts missing PNGs per label set in `missing`."""
    if not polygons.is_file():
        return [f"{image}: no label file (expected {polygons})"]
    try:
        annotation = read_polygons(polygons)
    except DataError as e:
        return [str(e)]
    problems = []
    unknown = sorted({o.label for o in annotation.objects if table_name(o.label) is None})
    if unknown:
        problems.append(f"{polygons}: unknown label(s) {', '.join(map(repr, unknown))} (not in the IDD table)")
    for label_set in label_sets:
        label = idd.label_path(polygons, label_set)
        if not label.is_file():
            missing[label_set] += 1
        elif not idd.up_to_date(polygons, label):
            problems.append(f"{label}: stale (older than its JSON or drawn by another rasteriser version); run "
                            f"{idd.prepare_command(root, label_set)}")
        elif found := check_pair(Pair(image, label, True), IDD_TABLES[label_set]):
            problems += found
        else:
            with Image.open(label) as im:
                if (im.height, im.width) != (annotation.height, annotation.width):
                    problems.append(f"{label}: is {im.width}x{im.height} but {polygons.name} says "
                                    f"{annotation.width}x{annotation.height}")
    return problems
