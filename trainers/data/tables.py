"""Every dataset's facts in one typed table (classes, layout, sizes, normalisation) and the data layer's errors.

A leaf: numpy label tables only, no image reading and no torch, so the config, the orchestrator and the report read it
cheaply. `LABEL_SETS[name][label_set]` is one dataset under one label set; `DATASETS[name]` is its default label set
(IDD: level3, Cityscapes: cs19).
"""

from __future__ import annotations

from dataclasses import dataclass

from trainers.data.labels import CITYSCAPES, LabelTable
from trainers.data.labels_idd import DEFAULT_LABEL_SET as IDD_DEFAULT_LABEL_SET
from trainers.data.labels_idd import IDD_TABLES

# ImageNet statistics (RGB, 0..1): what torchvision's ImageNet weights expect. The reference instead subtracts a BGR
# mean in 0..255 and never divides by a std (s4gan.md §1.6); with BatchNorm in train mode the difference is absorbed,
# and a pretrained torchvision backbone is only correct with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(ValueError):
    """A dataset on disk is missing or broken; the message names the file or directory and what is wrong."""


class BrokenDuringTrainingError(DataError):
    """A data file failed to read during training or evaluation, though the sweep's scan had read it: it changed
    since. The message names the file and the iteration; retrying the trial would meet it again."""


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    name: str
    labels: LabelTable
    layout: str  # directory layout the reader expects: "cityscapes" or "idd"
    label_set: str = "cs19"  # which of the dataset's label sets `labels` is
    # (H, W) every training image (label: nearest) is resized to before the pipeline's `scale`; None = as stored.
    # IDD images come in several sizes; its protocol brings them all to 720x1280 first.
    base_size: tuple[int, int] | None = None
    eval_size: tuple[int, int] = (512, 1024)  # default evaluation size (the reference's half resolution)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    generated: bool = False  # root may be omitted: the data is generated on first use

    @property
    def num_classes(self) -> int:
        return len(self.labels.classes)


def _idd(name: str, *, base_size: tuple[int, int], eval_size: tuple[int, int],
         generated: bool = False) -> dict[str, DatasetInfo]:
    return {label_set: DatasetInfo(name=name, labels=table, layout="idd", label_set=label_set, base_size=base_size,
                                   eval_size=eval_size, generated=generated)
            for label_set, table in IDD_TABLES.items()}


# dataset -> label set -> facts. IDD: resized to 720x1280, evaluated at 360x640 (720x1280 selectable through
# eval_size); synth_idd keeps those proportions at its generated scale (a quarter: 180x320, evaluated at 90x160).
LABEL_SETS: dict[str, dict[str, DatasetInfo]] = {
    "cityscapes": {"cs19": DatasetInfo(name="cityscapes", labels=CITYSCAPES, layout="cityscapes")},
    "synth": {"cs19": DatasetInfo(name="synth", labels=CITYSCAPES, layout="cityscapes", generated=True)},
    "idd": _idd("idd", base_size=(720, 1280), eval_size=(360, 640)),
    "synth_idd": _idd("synth_idd", base_size=(180, 320), eval_size=(90, 160), generated=True),
}
DEFAULT_LABEL_SET: dict[str, str] = {"cityscapes": "cs19", "synth": "cs19", "idd": IDD_DEFAULT_LABEL_SET,
                                     "synth_idd": IDD_DEFAULT_LABEL_SET}
DATASETS: dict[str, DatasetInfo] = {name: sets[DEFAULT_LABEL_SET[name]] for name, sets in LABEL_SETS.items()}


def dataset_info(name: str, label_set: str | None = None) -> DatasetInfo:
    """The facts of dataset `name` under `label_set` (None: the dataset's default label set)."""
    if name not in DATASETS:
        raise DataError(f"dataset: unknown dataset {name!r}; valid datasets are {', '.join(sorted(DATASETS))}")
    if label_set is None:
        return DATASETS[name]
    sets = LABEL_SETS[name]
    if label_set not in sets:
        raise DataError(f"dataset {name!r}: unknown label set {label_set!r}; valid ones are {', '.join(sets)}")
    return sets[label_set]
