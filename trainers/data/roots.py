"""Where a dataset's files are: dataset roots resolved (generated data made on first use), a split's file pairs,
and what besides the file lists identifies a trial's data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from trainers.data import synth, synth_idd
from trainers.data.cityscapes import Pair
from trainers.data.cityscapes import find_pairs as find_cityscapes_pairs
from trainers.data.idd import find_pairs as find_idd_pairs
from trainers.data.rasterise import RASTERISER_VERSION
from trainers.data.tables import DataError, DatasetInfo, dataset_info


def split_pairs(info: DatasetInfo, root: Path, split: str) -> list[Pair]:
    """The sorted (image, label) pairs of one split, read the way `info.layout` lays them out."""
    if info.layout == "idd":
        return find_idd_pairs(root, split, info.label_set)
    return find_cityscapes_pairs(root, split)


def data_identity(info: DatasetInfo) -> dict[str, str]:
    """What besides the file lists identifies a trial's data: the label set, and how IDD labels were made."""
    out = {"label_set": info.label_set}
    if info.layout == "idd":
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
    version = synth_idd.GENERATOR_VERSION if name == "synth_idd" else synth.GENERATOR_VERSION
    return (home or s4sweep_home()) / "data" / f"{name}-{n_train}-v{version}"


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
        generate = synth_idd.generate if info.layout == "idd" else synth.generate
        generate(out, n_train=synth_images, n_val=synth_val_images(synth_images), seed=0)
        return out
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"dataset {name!r}: root {path} does not exist or is not a directory")
    return path
