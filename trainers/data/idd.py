"""The IDD reader and `s4sweep data prepare-idd`: label PNGs made from the polygons, beside them, upstream names.

Layout (s4gan.md §4): `leftImg8bit/{split}/{drive_no}/{img_id}_leftImg8bit.png` and
`gtFine/{split}/{drive_no}/{img_id}_gtFine_polygons.json`. `prepare_idd` writes `{img_id}_gtFine_label<type>s.png`
next to each JSON (`labellevel3Ids`, `labelcsTrainIds`, ...): uint8 class ids of the label set, 255 void, tagged
with the rasteriser version. It skips PNGs that are up to date (same rasteriser version, newer than their JSON),
writes through a temporary file and `os.replace`, so an interrupted run leaves only whole files and simply resumes.

The reader pairs each image with its label PNG and refuses a missing or stale one, naming the command that makes it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from PIL import Image, PngImagePlugin

from trainers.data.cityscapes import Pair
from trainers.data.labels_idd import ID_TYPE, IDD_TABLES, LABEL_SETS
from trainers.data.rasterise import RASTERISER_VERSION, rasterise, read_polygons
from trainers.data.tables import DataError
from trainers.fileio import TMP_MARK, atomic_write, writer_pid

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = ("_leftImg8bit.png", "_leftImg8bit.jpg")  # IDD part I ships PNG; JPEG copies are read too
POLYGON_SUFFIX = "_gtFine_polygons.json"
VERSION_KEY = "s4sweep-rasteriser"  # PNG text chunk: the rasteriser version that drew the file


def label_path(polygons: Path, label_set: str) -> Path:
    """`..._gtFine_polygons.json` -> `..._gtFine_label<type>s.png` (upstream's names: labellevel3Ids, ...)."""
    return polygons.with_name(polygons.name[: -len(POLYGON_SUFFIX)] + f"_gtFine_label{ID_TYPE[label_set]}s.png")


def prepare_command(root: Path, label_set: str) -> str:
    return f"s4sweep data prepare-idd {root} --label-set {label_set}"


def image_stem(image: Path) -> str:
    for suffix in IMAGE_SUFFIXES:
        if image.name.endswith(suffix):
            return image.name[: -len(suffix)]
    raise ValueError(image)


def find_images(root: Path, split: str) -> list[Path]:
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: missing image directory for split {split!r}")
    images = sorted(p for suffix in IMAGE_SUFFIXES for p in image_dir.glob(f"*/*{suffix}"))
    if not images:
        raise DataError(f"{image_dir}: split {split!r} has no *{IMAGE_SUFFIXES[0]} images")
    return images


def polygon_dir(root: Path, split: str) -> Path:
    gt = root / "gtFine" / split
    if not gt.is_dir():
        raise DataError(f"{gt}: missing polygon directory for split {split!r}: is this an IDD root?")
    return gt


def find_pairs(root: Path, split: str, label_set: str) -> list[Pair]:
    """Every (image, label PNG) pair of a split, sorted by image path; each missing piece is an error naming it."""
    images = find_images(root, split)
    gt = polygon_dir(root, split)
    pairs = []
    for image in images:
        polygons = gt / image.parent.name / f"{image_stem(image)}{POLYGON_SUFFIX}"
        if not polygons.is_file():
            raise DataError(f"{image}: no label file (expected {polygons})")
        label = label_path(polygons, label_set)
        try:
            label_mtime = label.stat().st_mtime_ns
        except FileNotFoundError:
            raise DataError(f"{label}: missing {label_set} label PNG; run {prepare_command(root, label_set)}") from None
        if label_mtime < polygons.stat().st_mtime_ns:
            raise DataError(f"{label}: older than {polygons.name} (stale); run {prepare_command(root, label_set)}")
        pairs.append(Pair(image, label, True))
    return pairs


def find_polygons(root: Path, splits: Sequence[str] | None = None) -> list[Path]:
    """Every polygon file under gtFine/ (all splits found there, or the given ones), sorted."""
    gt = root / "gtFine"
    if not gt.is_dir():
        raise DataError(f"{gt}: missing: an IDD root has gtFine/{{split}}/{{drive}}/*{POLYGON_SUFFIX}")
    names = splits or sorted(p.name for p in gt.iterdir() if p.is_dir())
    found = sorted(p for split in names for p in (gt / split).glob(f"*/*{POLYGON_SUFFIX}"))
    if not found:
        raise DataError(f"{gt}: no *{POLYGON_SUFFIX} files in split(s) {', '.join(names) or '(none)'}")
    return found


def rasteriser_version(label: Path) -> int | None:
    """The rasteriser version a label PNG was drawn with (None: not ours, or unreadable)."""
    try:
        with Image.open(label) as im:  # our text chunk precedes the pixel data: read with the header, not decoded
            return int(im.info[VERSION_KEY])
    except (OSError, SyntaxError, ValueError, KeyError):
        return None


def up_to_date(polygons: Path, label: Path) -> bool:
    try:
        if label.stat().st_mtime_ns < polygons.stat().st_mtime_ns:
            return False
    except FileNotFoundError:
        return False
    return rasteriser_version(label) == RASTERISER_VERSION


@dataclass
class FileResult:
    polygons: Path
    written: list[str] = field(default_factory=list)  # label sets written
    current: list[str] = field(default_factory=list)  # label sets already up to date
    problem: str | None = None  # one line naming the file and what is wrong


def prepare_file(polygons: Path, label_sets: Sequence[str], skip_unknown: bool = False) -> FileResult:
    """Rasterise one polygon file into the stale label PNGs of `label_sets` (one drawing serves them all)."""
    result = FileResult(polygons)
    stale = []
    for label_set in label_sets:
        (result.current if up_to_date(polygons, label_path(polygons, label_set)) else stale).append(label_set)
    if not stale:
        return result
    try:
        drawing = rasterise(read_polygons(polygons))
    except DataError as e:
        result.problem = str(e)
        return result
    if drawing.unknown:
        labels = ", ".join(repr(n) for n in drawing.unknown)
        if not skip_unknown:
            result.problem = f"{polygons}: unknown label(s) {labels} (not in the IDD table); no PNG written"
            return result
        result.problem = f"{polygons}: unknown label(s) {labels} skipped (--skip-unknown)"
    info = PngImagePlugin.PngInfo()
    info.add_text(VERSION_KEY, str(RASTERISER_VERSION))
    for label_set in stale:
        label = label_path(polygons, label_set)
        image = Image.fromarray(IDD_TABLES[label_set].encode(drawing.raw))
        atomic_write(label, partial(image.save, format="PNG", pnginfo=info))
        result.written.append(label_set)
    return result


def _prepare_star(job: tuple[Path, tuple[str, ...], bool]) -> FileResult:
    return prepare_file(*job)


def remove_orphaned_temporaries(root: Path) -> None:
    """Temporary PNGs left by a killed run (`.<name>.tmp-<pid>` of a process that no longer exists)."""
    for tmp in (root / "gtFine").glob(f"*/*/.*_gtFine_label*Ids.png{TMP_MARK}*"):
        pid = writer_pid(tmp)
        if pid is not None and not _alive(pid):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@dataclass
class PrepareReport:
    files: int = 0
    written: int = 0  # PNGs written
    current: int = 0  # PNGs already up to date
    problems: list[str] = field(default_factory=list)
    failed: int = 0  # files with unknown labels or broken JSON (counted once each)


def prepare_idd(root: Path, label_sets: Iterable[str], *, splits: Sequence[str] | None = None, workers: int = 1,
                skip_unknown: bool = False, progress: Callable[[int, int], None] | None = None) -> PrepareReport:
    """Make the label PNGs of `label_sets` for every polygon file under `root` (all splits unless given)."""
    sets = tuple(dict.fromkeys(label_sets))
    for label_set in sets:
        if label_set not in LABEL_SETS:
            raise DataError(f"label set {label_set!r}: valid label sets are {', '.join(LABEL_SETS)}")
    if workers < 1:
        raise DataError(f"`workers >= 1` must hold, but got workers={workers}")
    root = Path(root).resolve()
    if not root.is_dir():
        raise DataError(f"{root}: dataset root does not exist")
    files = find_polygons(root, splits)
    remove_orphaned_temporaries(root)
    log.info("rasterising %d polygon files of %s into %s label PNGs (%d worker(s))", len(files), root,
             ", ".join(sets), workers)
    jobs = [(f, sets, skip_unknown) for f in files]
    report = PrepareReport(files=len(files))
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        results = pool.map(_prepare_star, jobs, chunksize=8) if pool else map(_prepare_star, jobs)
        for done, result in enumerate(results, 1):
            report.written += len(result.written)
            report.current += len(result.current)
            if result.problem:
                report.problems.append(result.problem)
                report.failed += not result.written
            if progress is not None:
                progress(done, len(files))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return report
