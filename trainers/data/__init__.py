"""Datasets a trial can train or evaluate on: one typed table of facts per dataset, one plain dict registry.

`synth` is the embedded default: generated driving scenes written in the real Cityscapes layout (trainers/data/synth.py)
and read by the same Cityscapes reader as the real download, so every test exercises the real file path. `synth_idd`
does the same for IDD (trainers/data/synth_idd.py): polygon JSON in the IDD layout, rasterised by our own rasteriser.

A dataset has one DatasetInfo per label set (`LABEL_SETS[name][label_set]`; the `label_set` field of DatasetConfig
and EvalSetConfig chooses); `DATASETS[name]` is its default label set (IDD: level3, Cityscapes: cs19).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trainers.data.labels import CITYSCAPES, LabelTable
from trainers.data.labels_idd import DEFAULT_LABEL_SET as IDD_DEFAULT_LABEL_SET
from trainers.data.labels_idd import IDD_TABLES

if TYPE_CHECKING:
    from trainers.data.cityscapes import Pair

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


def split_pairs(info: DatasetInfo, root: Path, split: str) -> list[Pair]:
    """The sorted (image, label) pairs of one split, read the way `info.layout` lays them out."""
    if info.layout == "idd":
        from trainers.data.idd import find_pairs as find_idd_pairs

        return find_idd_pairs(root, split, info.label_set)
    from trainers.data.cityscapes import find_pairs

    return find_pairs(root, split)


def data_identity(info: DatasetInfo) -> dict[str, str]:
    """What besides the file lists identifies a trial's data: the label set, and how IDD labels were made."""
    out = {"label_set": info.label_set}
    if info.layout == "idd":
        from trainers.data.rasterise import RASTERISER_VERSION

        out["rasteriser"] = str(RASTERISER_VERSION)
    return out


def s4sweep_home() -> Path:
    """Where runs and generated data live: $S4SWEEP_HOME, else ./runs (resolved to an absolute path). When
    $S4SWEEP_HOME is an object-store URI, generated data goes to node-local scratch, <tmp>/s4sweep (a trial on a node
    that lacks it generates it again: ensure_generated)."""
    home = os.environ.get("S4SWEEP_HOME") or "runs"
    if "://" in home and not home.startswith("file://"):
        return Path(tempfile.gettempdir()) / "s4sweep"
    return Path(home.removeprefix("file://")).expanduser().resolve()


def synth_val_images(n_train: int) -> int:
    """Validation scenes generated beside `n_train` training ones: a quarter, at least 2."""
    return max(2, n_train // 4)


def synth_root(n_train: int, home: Path | None = None, *, name: str = "synth") -> Path:
    """Generated data is shared by every trial that asks for the same size (it is fixed: seed 0). The generator's
    version is part of the name: after an upgrade that redraws the scenes, a new set is generated beside the old
    one instead of the old one being refused."""
    if name == "synth_idd":
        from trainers.data.synth_idd import GENERATOR_VERSION
    else:
        from trainers.data.synth import GENERATOR_VERSION
    return (home or s4sweep_home()) / "data" / f"{name}-{n_train}-v{GENERATOR_VERSION}"


def ensure_generated(name: str, root: str | None, *, synth_images: int) -> None:
    """Generated data at `root` made again if this node lacks it (the driver generated it on its own disk beside an
    object-store run): the same scenes (seed 0) at the same path; a complete set is reused, not rewritten."""
    if root is None or not dataset_info(name).generated:
        return
    path = Path(root)
    if path.parent.name == "data" and path == synth_root(synth_images, path.parents[1], name=name):
        resolve_root(name, None, synth_images=synth_images, home=path.parents[1])


def resolve_root(name: str, root: str | None, *, synth_images: int, home: Path | None = None) -> Path:
    """The absolute dataset root; for `synth` and `synth_idd` without a root, generate the data once (under `home`,
    default $S4SWEEP_HOME; synth_idd with its label PNGs of every label set) and return its directory."""
    info = dataset_info(name)
    if root is None:
        if not info.generated:
            raise DataError(f"dataset {name!r}: `root` is required (point it at the unpacked download)")
        out = synth_root(synth_images, home, name=name)
        if info.layout == "idd":
            from trainers.data.synth_idd import generate as generate_idd

            generate_idd(out, n_train=synth_images, n_val=synth_val_images(synth_images), seed=0)
            return out
        from trainers.data.synth import generate

        generate(out, n_train=synth_images, n_val=synth_val_images(synth_images), seed=0)
        return out
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"dataset {name!r}: root {path} does not exist or is not a directory")
    return path
