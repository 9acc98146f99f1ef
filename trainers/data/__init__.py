"""Datasets a trial can train or evaluate on: one typed table of facts per dataset, one plain dict registry.

`synth` is the embedded default: generated driving scenes written in the real Cityscapes layout (trainers/data/synth.py)
and read by the same Cityscapes reader as the real download, so every test exercises the real file path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trainers.data.labels import CITYSCAPES, LabelTable

# ImageNet statistics (RGB, 0..1): what torchvision's ImageNet weights expect. The reference instead subtracts a BGR
# mean in 0..255 and never divides by a std (s4gan.md §1.6); with BatchNorm in train mode the difference is absorbed,
# and a pretrained torchvision backbone is only correct with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(ValueError):
    """A dataset on disk is missing or broken; the message names the file or directory and what is wrong."""


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    name: str
    labels: LabelTable
    layout: str  # directory layout the reader expects
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    generated: bool = False  # root may be omitted: the data is generated on first use

    @property
    def num_classes(self) -> int:
        return len(self.labels.classes)


DATASETS: dict[str, DatasetInfo] = {
    "cityscapes": DatasetInfo(name="cityscapes", labels=CITYSCAPES, layout="cityscapes"),
    "synth": DatasetInfo(name="synth", labels=CITYSCAPES, layout="cityscapes", generated=True),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataError(f"dataset: unknown dataset {name!r}; valid datasets are {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def s4sweep_home() -> Path:
    """Where runs and generated data live: $S4SWEEP_HOME, else ./runs (resolved to an absolute path)."""
    return Path(os.environ.get("S4SWEEP_HOME") or "runs").expanduser().resolve()


def synth_root(n_train: int, home: Path | None = None) -> Path:
    """Generated data is shared by every trial that asks for the same size (it is fixed: seed 0)."""
    return (home or s4sweep_home()) / "data" / f"synth-{n_train}"


def resolve_root(name: str, root: str | None, *, synth_images: int, home: Path | None = None) -> Path:
    """The absolute dataset root; for `synth` without a root, generate the data once (under `home`, default
    $S4SWEEP_HOME) and return its directory."""
    info = dataset_info(name)
    if root is None:
        if not info.generated:
            raise DataError(f"dataset {name!r}: `root` is required (point it at the unpacked download)")
        from trainers.data.synth import generate

        out = synth_root(synth_images, home)
        generate(out, n_train=synth_images, n_val=max(2, synth_images // 4), seed=0)
        return out
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"dataset {name!r}: root {path} does not exist or is not a directory")
    return path
