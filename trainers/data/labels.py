"""The Cityscapes label table, pinned: raw label ids, train ids, categories and official colours.

Facts from cityscapesScripts `helpers/labels.py`. Raw ids are what `*_gtFine_labelIds.png` stores; the 19 train
classes get train ids 0..18 and every other id maps to the ignore index 255. Upstream gives `license plate` train id
-1; here it is 255 like every other untrained label, so a train id is always a valid uint8. A plain data module:
numpy only, so the orchestrator and the report can read class names without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = 255

RGB = tuple[int, int, int]


@dataclass(frozen=True, kw_only=True)
class Label:
    """One row of the Cityscapes table."""

    name: str
    id: int  # raw label id, as stored in *_gtFine_labelIds.png
    train_id: int  # 0..18 for the train classes, IGNORE_INDEX otherwise
    category: str
    has_instances: bool  # "thing" class: *_instanceIds.png stores id * 1000 + instance index
    color: RGB


def _label(name: str, id: int, train_id: int, category: str, has_instances: bool, color: RGB) -> Label:
    return Label(name=name, id=id, train_id=train_id, category=category, has_instances=has_instances, color=color)


_X = IGNORE_INDEX
CITYSCAPES_LABELS: tuple[Label, ...] = (
    _label("unlabeled", 0, _X, "void", False, (0, 0, 0)),
    _label("ego vehicle", 1, _X, "void", False, (0, 0, 0)),
    _label("rectification border", 2, _X, "void", False, (0, 0, 0)),
    _label("out of roi", 3, _X, "void", False, (0, 0, 0)),
    _label("static", 4, _X, "void", False, (0, 0, 0)),
    _label("dynamic", 5, _X, "void", False, (111, 74, 0)),
    _label("ground", 6, _X, "void", False, (81, 0, 81)),
    _label("road", 7, 0, "flat", False, (128, 64, 128)),
    _label("sidewalk", 8, 1, "flat", False, (244, 35, 232)),
    _label("parking", 9, _X, "flat", False, (250, 170, 160)),
    _label("rail track", 10, _X, "flat", False, (230, 150, 140)),
    _label("building", 11, 2, "construction", False, (70, 70, 70)),
    _label("wall", 12, 3, "construction", False, (102, 102, 156)),
    _label("fence", 13, 4, "construction", False, (190, 153, 153)),
    _label("guard rail", 14, _X, "construction", False, (180, 165, 180)),
    _label("bridge", 15, _X, "construction", False, (150, 100, 100)),
    _label("tunnel", 16, _X, "construction", False, (150, 120, 90)),
    _label("pole", 17, 5, "object", False, (153, 153, 153)),
    _label("polegroup", 18, _X, "object", False, (153, 153, 153)),
    _label("traffic light", 19, 6, "object", False, (250, 170, 30)),
    _label("traffic sign", 20, 7, "object", False, (220, 220, 0)),
    _label("vegetation", 21, 8, "nature", False, (107, 142, 35)),
    _label("terrain", 22, 9, "nature", False, (152, 251, 152)),
    _label("sky", 23, 10, "sky", False, (70, 130, 180)),
    _label("person", 24, 11, "human", True, (220, 20, 60)),
    _label("rider", 25, 12, "human", True, (255, 0, 0)),
    _label("car", 26, 13, "vehicle", True, (0, 0, 142)),
    _label("truck", 27, 14, "vehicle", True, (0, 0, 70)),
    _label("bus", 28, 15, "vehicle", True, (0, 60, 100)),
    _label("caravan", 29, _X, "vehicle", True, (0, 0, 90)),
    _label("trailer", 30, _X, "vehicle", True, (0, 0, 110)),
    _label("train", 31, 16, "vehicle", True, (0, 80, 100)),
    _label("motorcycle", 32, 17, "vehicle", True, (0, 0, 230)),
    _label("bicycle", 33, 18, "vehicle", True, (119, 11, 32)),
    _label("license plate", -1, _X, "vehicle", False, (0, 0, 142)),
)

LABEL_BY_NAME: dict[str, Label] = {label.name: label for label in CITYSCAPES_LABELS}
LABEL_BY_ID: dict[int, Label] = {label.id: label for label in CITYSCAPES_LABELS}


@dataclass(frozen=True, kw_only=True, eq=False)
class LabelTable:
    """The train classes of one dataset and the map from its raw label ids to train ids."""

    name: str
    classes: tuple[str, ...]  # train classes, index = train id
    ignore_index: int = IGNORE_INDEX
    raw_to_train: np.ndarray = field(repr=False)  # uint8 LUT of length 256: raw id -> train id or ignore_index
    colors: tuple[RGB, ...]  # one per class, for colourised predictions

    def __post_init__(self) -> None:
        lut = self.raw_to_train
        if lut.dtype != np.uint8 or lut.shape != (256,):
            raise ValueError(f"raw_to_train must be a uint8 array of shape (256,), but got {lut.dtype} {lut.shape}")
        if len(self.colors) != len(self.classes):
            raise ValueError(
                f"colors must have one entry per class ({len(self.classes)}), but got {len(self.colors)}"
            )
        valid = (lut < len(self.classes)) | (lut == self.ignore_index)
        if not valid.all():
            raise ValueError(f"raw_to_train maps to train ids outside the classes: {sorted(set(lut[~valid]))}")
        lut.setflags(write=False)  # frozen all the way down: a shared table nobody may edit

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Raw label ids (any integer dtype, values 0..255) -> uint8 train ids, ignore_index where untrained."""
        if raw.dtype != np.uint8:
            if raw.size and (raw.min() < 0 or raw.max() > 255):
                raise ValueError(f"raw label ids must be in [0, 255], but got [{raw.min()}, {raw.max()}]")
            raw = raw.astype(np.uint8)
        return self.raw_to_train[raw]


def _cityscapes_table() -> LabelTable:
    trained = sorted((label for label in CITYSCAPES_LABELS if label.train_id != IGNORE_INDEX), key=lambda x: x.train_id)
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label in trained:
        lut[label.id] = label.train_id
    return LabelTable(
        name="cityscapes",
        classes=tuple(label.name for label in trained),
        raw_to_train=lut,
        colors=tuple(label.color for label in trained),
    )


CITYSCAPES: LabelTable = _cityscapes_table()
