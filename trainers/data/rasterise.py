"""IDD polygons -> label maps: our own rasteriser (Pillow ImageDraw), following the official rules (s4gan.md §4).

IDD ships `*_gtFine_polygons.json` only. The upstream script no longer runs on current Pillow, so this module
re-implements its rules from the notes:

1. the canvas starts as void (255, the background value of every label set);
2. objects are drawn in JSON order, each over the ones before it, `ImageDraw.polygon(points, fill=value)`;
3. objects marked `deleted` and polygons with fewer than 3 points are skipped;
4. a label that is not in the table but ends in `group` is read without the suffix (`cargroup` -> car; `polegroup`
   is itself a label and stays);
5. a label still unknown is *not* skipped silently: it is collected and reported (naming the file and the label),
   and the caller decides (prepare-idd writes no PNG for such a file unless told to skip unknown labels).
   (Upstream also skips labels with a negative id; this table has none: license plate is 39, void.)

We draw raw IDD ids once and map them to any label set with a lookup table: drawing in order and then mapping each
pixel equals drawing the mapped values in order, so one rasterisation serves all five label sets.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from trainers.data.labels import IGNORE_INDEX
from trainers.data.labels_idd import IDD_LABEL_BY_NAME
from trainers.data.tables import DataError

RASTERISER_VERSION = 1  # bump whenever a change to the rules changes any pixel: prepared PNGs then count as stale
GROUP_SUFFIX = "group"


MAX_SIDE = 16384  # pixels per side of an annotated image (IDD's largest are 1920x1080)

@dataclass(frozen=True)
class PolygonObject:
    label: str  # as written in the JSON
    points: tuple[tuple[float, float], ...]
    deleted: bool


@dataclass(frozen=True)
class Annotation:
    path: Path
    height: int
    width: int
    objects: tuple[PolygonObject, ...]


@dataclass(frozen=True)
class Rasterised:
    raw: np.ndarray  # uint8 [H, W] raw IDD ids, IGNORE_INDEX where nothing known was drawn
    unknown: tuple[str, ...]  # label names not in the table (after stripping `group`), sorted, unique
    drawn: int
    deleted: int  # objects skipped because marked deleted
    degenerate: int  # polygons skipped for having fewer than 3 points


def table_name(label: str) -> str | None:
    """The table's name for a JSON label (rule 4), or None if the table does not know it."""
    if label in IDD_LABEL_BY_NAME:
        return label
    if label.endswith(GROUP_SUFFIX) and label[: -len(GROUP_SUFFIX)] in IDD_LABEL_BY_NAME:
        return label[: -len(GROUP_SUFFIX)]
    return None


def read_polygons(path: Path) -> Annotation:
    """Parse one `*_gtFine_polygons.json`; a DataError names the file and the first thing that is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise DataError(f"{path}: unreadable polygon file ({e})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: malformed JSON ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: malformed polygon file: expected an object at the top, got {type(data).__name__}")
    size = [data.get("imgHeight"), data.get("imgWidth")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in size):
        # the bound: a file claiming 10^6 x 10^6 pixels would make the rasteriser allocate a terabyte
        raise DataError(f"{path}: malformed polygon file: imgHeight and imgWidth must be positive integers up to "
                        f"{MAX_SIDE}, but got {size[0]!r} and {size[1]!r}")
    objects = data.get("objects")
    if not isinstance(objects, list):
        raise DataError(f"{path}: malformed polygon file: `objects` must be a list, but got {objects!r:.60}")
    return Annotation(Path(path), size[0], size[1], tuple(_object(path, i, o) for i, o in enumerate(objects)))


def _object(path: Path, index: int, obj: Any) -> PolygonObject:
    where = f"{path}: malformed polygon file: objects[{index}]"
    if not isinstance(obj, dict) or not isinstance(obj.get("label"), str):
        raise DataError(f"{where} must be an object with a string `label`, but got {obj!r:.80}")
    polygon = obj.get("polygon")
    if not isinstance(polygon, list):
        raise DataError(f"{where} ({obj['label']!r}): `polygon` must be a list of [x, y] points, "
                        f"but got {polygon!r:.60}")
    points = []
    for k, point in enumerate(polygon):
        ok = (isinstance(point, (list, tuple)) and len(point) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in point))
        if not ok:
            raise DataError(f"{where} ({obj['label']!r}): polygon[{k}] must be an [x, y] pair of finite numbers, "
                            f"but got {point!r:.60}")
        points.append((float(point[0]), float(point[1])))
    return PolygonObject(obj["label"], tuple(points), bool(obj.get("deleted", False)))


def rasterise(annotation: Annotation) -> Rasterised:
    """Draw the annotation's raw IDD ids by the rules in this module's docstring."""
    canvas = Image.new("L", (annotation.width, annotation.height), IGNORE_INDEX)
    draw = ImageDraw.Draw(canvas)
    unknown: set[str] = set()
    drawn = deleted = degenerate = 0
    for obj in annotation.objects:
        if obj.deleted:
            deleted += 1
            continue
        if len(obj.points) < 3:
            degenerate += 1
            continue
        name = table_name(obj.label)
        if name is None:
            unknown.add(obj.label)
            continue
        draw.polygon(obj.points, fill=IDD_LABEL_BY_NAME[name].id)
        drawn += 1
    return Rasterised(np.asarray(canvas), tuple(sorted(unknown)), drawn, deleted, degenerate)
