"""`s4sweep data check ROOT`: read every image and label of a dataset tree and name each broken file, in one pass.

The same scan runs before a sweep schedules anything, so a broken file fails the launch, not trial 37 at hour 5.
Nothing is skipped: an image without its label is still decoded, a broken image does not hide its broken label, and
a split that cannot be listed is reported while the other splits are scanned. `ScanReport.summary` counts, per
split, what was read and how many problems were found.

The layout is detected (Cityscapes: label PNGs ship; IDD: only polygon JSON ships) unless given. For IDD every
polygon file is parsed, its labels looked up and its size compared with the image's, and the label PNGs of the chosen
label sets (default: every set with prepared PNGs) are read and checked against their image, their JSON and the
rasteriser version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from trainers.data import idd
from trainers.data.cityscapes import (
    IMAGE_SUFFIX,
    UNREADABLE,
    Pair,
    gt_dir,
    no_label,
    read_image,
    read_label,
    scan_pairs,
)
from trainers.data.labels import CITYSCAPES, LabelTable
from trainers.data.labels_idd import ID_TYPE, IDD_TABLES
from trainers.data.rasterise import read_polygons, table_name
from trainers.data.tables import DataError

LABEL_SUFFIXES = ("_gtFine_labelIds.png", "_gtFine_labelTrainIds.png")


@dataclass
class SplitScan:
    """What the scan read in one split and what it found wrong there."""

    split: str
    layout: str
    images: int = 0
    labels: int = 0  # label files decoded (IDD: label PNGs of every checked label set)
    polygons: int = 0  # IDD polygon files parsed
    label_sets: tuple[str, ...] = ()
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        found = f"{len(self.problems)} problem(s)"
        if self.layout == "idd":
            sets = f" ({', '.join(self.label_sets)})" if self.label_sets else ""
            return (f"{self.split}: {self.images} images, {self.polygons} polygon files and {self.labels} label "
                    f"PNGs{sets} read, {found}")
        return f"{self.split}: {self.images} images and {self.labels} labels read, {found}"


@dataclass
class ScanReport:
    root: Path
    splits: list[SplitScan] = field(default_factory=list)
    general: list[str] = field(default_factory=list)  # problems of the tree itself (no root, no layout, ...)

    @property
    def problems(self) -> list[str]:
        return self.general + [p for s in self.splits for p in s.problems]

    @property
    def images(self) -> int:
        return sum(s.images for s in self.splits)

    def summary(self) -> str:
        """The count line: `train: 15 images and 14 labels read, 3 problem(s); val: ...`."""
        parts = [s.summary() for s in self.splits] or [f"{self.root}: nothing read"]
        extra = f"; {len(self.general)} problem(s) of the tree itself" if self.general and self.splits else ""
        return "; ".join(parts) + extra


def detect_layout(root: Path) -> str:
    """"cityscapes" when Cityscapes' label PNGs are there, "idd" when only `*_gtFine_polygons.json` ship (IDD's
    prepared PNGs have other names: `labellevel3Ids`, `labelcsTrainIds`, ...)."""
    for gt in (root / "gtFine", root / "gtFine_trainvaltest" / "gtFine"):
        for name in LABEL_SUFFIXES:
            if next(gt.glob(f"*/*/*{name}"), None) is not None:
                return "cityscapes"
    if next((root / "gtFine").glob("*/*/*_gtFine_polygons.json"), None) is not None:
        return "idd"
    raise DataError(f"{root}: neither a Cityscapes root (gtFine/<split>/<city>/*_gtFine_labelIds.png) nor an IDD "
                    "root (gtFine/<split>/<drive>/*_gtFine_polygons.json)")


def scan_dataset(root: Path, *, splits: Sequence[str] = ("train", "val"), table: LabelTable = CITYSCAPES,
                 layout: str | None = None, label_sets: Sequence[str] | None = None) -> ScanReport:
    """Every split of a tree read once; `table` is the Cityscapes-layout label table, `label_sets` the IDD label
    PNGs to check (IDD layout only)."""
    report = ScanReport(root)
    if not root.exists():
        report.general.append(f"{root}: dataset root does not exist")
        return report
    if not root.is_dir():
        report.general.append(f"{root}: dataset root is not a directory")
        return report
    try:
        layout = layout or detect_layout(root)
    except DataError as e:
        report.general.append(str(e))
        return report
    if layout == "idd":
        if label_sets is None:  # every label set with at least one prepared PNG
            label_sets = [s for s, t in ID_TYPE.items() if next((root / "gtFine").glob(f"*/*/*_label{t}s.png"), None)]
        report.splits = [_scan_idd_split(root, split, tuple(label_sets)) for split in splits]
        if not label_sets:
            report.general.append(f"{root}: no label PNGs of any label set yet; run "
                                  f"{idd.prepare_command(root, 'SET')}")
        return report
    report.splits = [_scan_cityscapes_split(root, split, table) for split in splits]
    return report


def check_dataset(root: Path, *, splits: Sequence[str] = ("train", "val"), table: LabelTable = CITYSCAPES,
                  layout: str | None = None, label_sets: Sequence[str] | None = None) -> tuple[list[str], int]:
    """(one line per problem, number of images read): `scan_dataset` without the per-split counts."""
    report = scan_dataset(root, splits=splits, table=table, layout=layout, label_sets=label_sets)
    return report.problems, report.images


def check_pair(pair: Pair, table: LabelTable) -> list[str]:
    """Decode the image and the label, each whatever the other's state; the label's values and size must fit."""
    size, problems = _image_size(pair.image)
    return problems + _label_problems(pair, table, size)


def _image_size(image: Path) -> tuple[tuple[int, int] | None, list[str]]:
    """(width, height) of a decodable image, or None and the problem."""
    try:
        return read_image(image).size, []
    except DataError as e:
        return None, [str(e)]


def _label_problems(pair: Pair, table: LabelTable, image_size: tuple[int, int] | None) -> list[str]:
    try:
        label = read_label(pair, table)
    except DataError as e:
        return [str(e)]
    if image_size is not None and (label.shape[1], label.shape[0]) != image_size:
        return [f"{pair.label}: label is {label.shape[1]}x{label.shape[0]} but image {pair.image.name} is "
                f"{image_size[0]}x{image_size[1]}"]
    return []


def _scan_cityscapes_split(root: Path, split: str, table: LabelTable) -> SplitScan:
    scan = SplitScan(split, "cityscapes")
    try:
        pairs, lonely = scan_pairs(root, split)
    except DataError as e:
        scan.problems.append(str(e))
        return scan
    entries: list[tuple[Path, Pair | Path]] = sorted([(p.image, p) for p in pairs] + list(lonely))
    for image, pair_or_label in entries:
        scan.images += 1
        if isinstance(pair_or_label, Pair):
            scan.labels += 1
            scan.problems += check_pair(pair_or_label, table)
        else:  # no label: still decode the image, so a broken one is named in this pass too
            scan.problems += [no_label(image, pair_or_label), *_image_size(image)[1]]
    scan.problems += _orphan_labels(root, split, {image.name[: -len(IMAGE_SUFFIX)] for image, _ in entries})
    return scan


def _orphan_labels(root: Path, split: str, stems: set[str]) -> list[str]:
    """Label files whose image is missing (the reverse of scan_pairs' check)."""
    labels = gt_dir(root) / split
    out = []
    for suffix in LABEL_SUFFIXES:
        for path in sorted(labels.glob(f"*/*{suffix}")):
            stem = path.name[: -len(suffix)]
            if stem not in stems:
                out.append(f"{path}: label without image (expected {root / 'leftImg8bit' / split / path.parent.name}"
                           f"/{stem}{IMAGE_SUFFIX})")
    return out


def _scan_idd_split(root: Path, split: str, label_sets: tuple[str, ...]) -> SplitScan:
    """Images <-> polygon files both ways, every JSON parsed and its labels known, label PNGs read."""
    scan = SplitScan(split, "idd", label_sets=label_sets)
    try:
        images, gt = idd.find_images(root, split), idd.polygon_dir(root, split)
    except DataError as e:
        scan.problems.append(str(e))
        return scan
    stems = {(image.parent.name, idd.image_stem(image)): image for image in images}
    for polygons in sorted(gt.glob(f"*/*{idd.POLYGON_SUFFIX}")):
        stem = polygons.name[: -len(idd.POLYGON_SUFFIX)]
        if (polygons.parent.name, stem) not in stems:
            scan.problems.append(f"{polygons}: label without image (expected "
                                 f"{root / 'leftImg8bit' / split / polygons.parent.name}/{stem}{IMAGE_SUFFIX})")
    missing = dict.fromkeys(label_sets, 0)
    for (drive, stem), image in stems.items():
        _scan_idd_image(root, image, gt / drive / f"{stem}{idd.POLYGON_SUFFIX}", scan, missing)
    scan.problems += [f"{gt}: {n} of {len(stems)} images have no {label_set} label PNG; run "
                      f"{idd.prepare_command(root, label_set)}" for label_set, n in missing.items() if n]
    return scan


def _scan_idd_image(root: Path, image: Path, polygons: Path, scan: SplitScan, missing: dict[str, int]) -> None:
    """One image, its polygon file and its label PNGs; counts missing PNGs per label set in `missing`."""
    scan.images += 1
    size, problems = _image_size(image)
    scan.problems += problems
    if not polygons.is_file():
        scan.problems.append(no_label(image, polygons))
        return
    scan.polygons += 1
    try:
        annotation = read_polygons(polygons)
    except DataError as e:
        scan.problems.append(str(e))
        return
    if size is not None and size != (annotation.width, annotation.height):
        scan.problems.append(f"{image}: is {size[0]}x{size[1]} but {polygons.name} says "
                             f"{annotation.width}x{annotation.height}")
    unknown = sorted({o.label for o in annotation.objects if table_name(o.label) is None})
    if unknown:
        scan.problems.append(f"{polygons}: unknown label(s) {', '.join(map(repr, unknown))} (not in the IDD table)")
    for label_set in scan.label_sets:
        label = idd.label_path(polygons, label_set)
        if not label.is_file():
            missing[label_set] += 1
            continue
        if not idd.up_to_date(polygons, label):
            scan.problems.append(f"{label}: stale (older than its JSON or drawn by another rasteriser version); run "
                                 f"{idd.prepare_command(root, label_set)}")
            continue
        scan.labels += 1
        found = _label_problems(Pair(image, label, True), IDD_TABLES[label_set], size)
        if not found:
            try:
                with Image.open(label) as im:
                    if (im.height, im.width) != (annotation.height, annotation.width):
                        found.append(f"{label}: is {im.width}x{im.height} but {polygons.name} says "
                                     f"{annotation.width}x{annotation.height}")
            except UNREADABLE as e:  # read_label decoded it a moment ago: it changed since
                found.append(f"{label}: unreadable label ({e})")
        scan.problems += found
