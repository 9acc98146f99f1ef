"""The IDD (India Driving Dataset) label table, pinned, and its five label sets.

Facts from the reference notes (s4gan.md §4, the AutoNUE `anue_labels.py` table): every annotated polygon carries one
of 40 label names; each name has a raw id and an id at each hierarchy level (level4: 30 classes, the study's "30
classes"; level3: 26, the benchmark set; level2: 16; level1: 7) and a Cityscapes train id (`cs19`, 255 where there is
no Cityscapes counterpart). Void is 255 at every level. Colours are our own (Cityscapes' where the name exists there).

Class names per set, in id order:
- level4 and level3: a class is named after its member label whose name ends in "fallback" (the group's catch-all:
  "drivable fallback", "vehicle fallback"), else after its first member (lowest raw id: "pole" for pole+polegroup,
  "sky" for sky+fallback background). For level3 this reproduces the evaluator's 26 names exactly (tested).
- level2: the table's level-2 category when that category names this id alone ("2-wheeler", "large-vehicle"),
  otherwise the id's level-3 class names joined by " and " ("curb and wall"); every name is a valid MLflow key part.
- level1: pinned: the shared category for the first three groups, the IDD paper's group names for the rest.
- cs19: Cityscapes' 19 train classes, same names and colours as trainers/data/labels.py.

Numpy only: the orchestrator and config validation import this without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from trainers.data.labels import CITYSCAPES, IGNORE_INDEX, RGB, LabelTable

_X = IGNORE_INDEX


@dataclass(frozen=True, kw_only=True)
class IDDLabel:
    """One row of the IDD table."""

    name: str  # as written in `*_gtFine_polygons.json`
    id: int  # raw id (0..39)
    level4: int
    level3: int
    level2: int
    category: str  # the level-2 category name of this row
    level1: int
    cs_train_id: int  # Cityscapes train id, 255 = no counterpart
    color: RGB


def _row(name: str, id: int, level4: int, level3: int, level2: int, category: str, level1: int, cs: int,
         color: RGB) -> IDDLabel:
    return IDDLabel(name=name, id=id, level4=level4, level3=level3, level2=level2, category=category, level1=level1,
                    cs_train_id=cs, color=color)


IDD_LABELS: tuple[IDDLabel, ...] = (
    _row("road", 0, 0, 0, 0, "drivable", 0, 0, (128, 64, 128)),
    _row("parking", 1, 1, 1, 1, "drivable", 0, _X, (250, 170, 160)),
    _row("drivable fallback", 2, 2, 1, 1, "drivable", 0, _X, (96, 40, 96)),
    _row("sidewalk", 3, 3, 2, 2, "non-drivable", 1, 1, (244, 35, 232)),
    _row("rail track", 4, 3, 3, 3, "non-drivable", 1, _X, (230, 150, 140)),
    _row("non-drivable fallback", 5, 4, 3, 3, "non-drivable", 1, 9, (152, 251, 152)),
    _row("person", 6, 5, 4, 4, "living-thing", 2, 11, (220, 20, 60)),
    _row("animal", 7, 6, 4, 4, "living-thing", 2, _X, (200, 160, 120)),
    _row("rider", 8, 7, 5, 5, "living-thing", 2, 12, (255, 0, 0)),
    _row("motorcycle", 9, 8, 6, 6, "2-wheeler", 3, 17, (0, 0, 230)),
    _row("bicycle", 10, 9, 7, 6, "2-wheeler", 3, 18, (119, 11, 32)),
    _row("autorickshaw", 11, 10, 8, 7, "autorickshaw", 3, _X, (255, 200, 40)),
    _row("car", 12, 11, 9, 7, "car", 3, 13, (0, 0, 142)),
    _row("truck", 13, 12, 10, 8, "large-vehicle", 3, 14, (0, 0, 70)),
    _row("bus", 14, 13, 11, 8, "large-vehicle", 3, 15, (0, 60, 100)),
    _row("caravan", 15, 14, 12, 8, "large-vehicle", 3, _X, (0, 0, 90)),
    _row("trailer", 16, 15, 12, 8, "large-vehicle", 3, _X, (0, 0, 110)),
    _row("train", 17, 15, 12, 8, "large-vehicle", 3, 16, (0, 80, 100)),
    _row("vehicle fallback", 18, 15, 12, 8, "large-vehicle", 3, _X, (130, 140, 150)),
    _row("curb", 19, 16, 13, 9, "barrier", 4, _X, (210, 190, 50)),
    _row("wall", 20, 17, 14, 9, "barrier", 4, 3, (102, 102, 156)),
    _row("fence", 21, 18, 15, 10, "barrier", 4, 4, (190, 153, 153)),
    _row("guard rail", 22, 19, 16, 10, "barrier", 4, _X, (180, 165, 180)),
    _row("billboard", 23, 20, 17, 11, "structures", 4, _X, (170, 60, 70)),
    _row("traffic sign", 24, 21, 18, 11, "structures", 4, 7, (220, 220, 0)),
    _row("traffic light", 25, 22, 19, 11, "structures", 4, 6, (250, 170, 30)),
    _row("pole", 26, 23, 20, 12, "structures", 4, 5, (153, 153, 153)),
    _row("polegroup", 27, 23, 20, 12, "structures", 4, _X, (153, 153, 153)),
    _row("obs-str-bar-fallback", 28, 24, 21, 12, "structures", 4, _X, (160, 170, 100)),
    _row("building", 29, 25, 22, 13, "construction", 5, 2, (70, 70, 70)),
    _row("bridge", 30, 26, 23, 13, "construction", 5, _X, (150, 100, 100)),
    _row("tunnel", 31, 26, 23, 13, "construction", 5, _X, (150, 120, 90)),
    _row("vegetation", 32, 27, 24, 14, "vegetation", 5, 8, (107, 142, 35)),
    _row("sky", 33, 28, 25, 15, "sky", 6, 10, (70, 130, 180)),
    _row("fallback background", 34, 29, 25, 15, "object fallback", 6, _X, (40, 100, 130)),
    _row("unlabeled", 35, _X, _X, _X, "void", _X, _X, (0, 0, 0)),
    _row("ego vehicle", 36, _X, _X, _X, "void", _X, _X, (0, 0, 0)),
    _row("rectification border", 37, _X, _X, _X, "void", _X, _X, (0, 0, 0)),
    _row("out of roi", 38, _X, _X, _X, "void", _X, _X, (0, 0, 0)),
    _row("license plate", 39, _X, _X, _X, "void", _X, _X, (0, 0, 0)),
)

IDD_LABEL_BY_NAME: dict[str, IDDLabel] = {label.name: label for label in IDD_LABELS}

# label set -> the id of a row in that set; the order is the CLI's and the error messages'
SET_ID: dict[str, Callable[[IDDLabel], int]] = {
    "level1": lambda r: r.level1,
    "level2": lambda r: r.level2,
    "level3": lambda r: r.level3,
    "level4": lambda r: r.level4,
    "cs19": lambda r: r.cs_train_id,
}
LABEL_SETS: tuple[str, ...] = tuple(SET_ID)
DEFAULT_LABEL_SET = "level3"  # the IDD benchmark's 26 classes
# the upstream id-type names, which name the PNG files: `*_gtFine_label<type>s.png`
ID_TYPE: dict[str, str] = {"level1": "level1Id", "level2": "level2Id", "level3": "level3Id", "level4": "level4Id",
                           "cs19": "csTrainId"}

LEVEL3_EVALUATOR_NAMES: tuple[str, ...] = (  # the official evaluator's order, s4gan.md §4
    "road", "drivable fallback", "sidewalk", "non-drivable fallback", "person", "rider", "motorcycle", "bicycle",
    "autorickshaw", "car", "truck", "bus", "vehicle fallback", "curb", "wall", "fence", "guard rail", "billboard",
    "traffic sign", "traffic light", "pole", "obs-str-bar-fallback", "building", "bridge", "vegetation", "sky",
)
LEVEL1_NAMES: tuple[str, ...] = ("drivable", "non-drivable", "living-thing", "vehicle", "roadside object",
                                 "far object", "sky")


def members(label_set: str) -> list[list[IDDLabel]]:
    """Rows of each class of `label_set`, in class id order (void rows excluded)."""
    key = SET_ID[label_set]
    n = 1 + max(key(r) for r in IDD_LABELS if key(r) != IGNORE_INDEX)
    out: list[list[IDDLabel]] = [[] for _ in range(n)]
    for row in IDD_LABELS:
        if key(row) != IGNORE_INDEX:
            out[key(row)].append(row)
    return out


def _named_member(rows: list[IDDLabel]) -> IDDLabel:
    fallbacks = [r for r in rows if r.name.endswith("fallback")]
    return fallbacks[0] if fallbacks else rows[0]


def _level2_names() -> tuple[str, ...]:
    groups = members("level2")
    owners: dict[str, set[int]] = {}
    for i, rows in enumerate(groups):
        for r in rows:
            owners.setdefault(r.category, set()).add(i)
    names = []
    for i, rows in enumerate(groups):
        categories = {r.category for r in rows}
        if len(categories) == 1 and owners[next(iter(categories))] == {i}:
            names.append(next(iter(categories)))
        else:
            level3 = sorted({r.level3 for r in rows})
            names.append(" and ".join(_named_member(members("level3")[k]).name for k in level3))
    return tuple(names)


def _table(label_set: str) -> LabelTable:
    key = SET_ID[label_set]
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for row in IDD_LABELS:
        lut[row.id] = key(row)
    if label_set == "cs19":
        names, colors = CITYSCAPES.classes, CITYSCAPES.colors
    else:
        named = [_named_member(rows) for rows in members(label_set)]
        names = {"level2": _level2_names(), "level1": LEVEL1_NAMES}.get(label_set, tuple(r.name for r in named))
        colors = tuple(r.color for r in named)
    return LabelTable(name=f"idd-{label_set}", classes=tuple(names), raw_to_train=lut, colors=tuple(colors))


# label set -> its table; raw_to_train maps a raw IDD id (what the rasteriser draws) to the set's class id
IDD_TABLES: dict[str, LabelTable] = {name: _table(name) for name in LABEL_SETS}
