"""Generated driving scenes in the real Cityscapes layout: the project's embedded default dataset (`synth`).

`generate(out, n_train=48, n_val=12)` writes

    out/leftImg8bit/{train,val}/<city>/<city>_<seq:06d>_000019_leftImg8bit.png       RGB, size (H, W)
    out/gtFine/{train,val}/<city>/<city>_<seq:06d>_000019_gtFine_labelIds.png       uint8 raw Cityscapes ids
    out/gtFine/{train,val}/<city>/<city>_<seq:06d>_000019_gtFine_instanceIds.png    uint16: id * 1000 + k for things
    out/synth.json                                                                  written last: the data is complete

so the Cityscapes reader serves it unchanged. Image i of a split is drawn from a Generator seeded by
(seed, split, i): the same whatever n_train and n_val are. Scenes are drawn by `synth_scene.render_scene`; the rare
`train` class (a tram) appears in every eighth image, so any 8 consecutive images contain one.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from trainers.data.labels import CITYSCAPES
from trainers.data.synth_scene import Scene, render_scene
from trainers.fileio import atomic_write, write_text

log = logging.getLogger(__name__)

GENERATOR_VERSION = 3  # bump whenever a change to the drawing changes any pixel
MANIFEST = "synth.json"
Split = Literal["train", "val"]
CITIES: dict[Split, tuple[str, ...]] = {  # fictional, sorted; val cities differ from train ones as in Cityscapes
    "train": ("asterhaven", "brindlewood", "corvenna"),
    "val": ("dalmora", "eskerby"),
}
SPLIT_STREAM: dict[Split, int] = {"train": 0, "val": 1}
TRAM_EVERY = 8
# Scenes are drawn at the size the tiny preset trains on: 12x24 cells of a stride-8 model, with every class's
# objects drawn large enough to cover a few of them (synth_objects.LEGIBLE_*, synth_scene.NEAR), and seven times
# cheaper to generate than at Cityscapes' half resolution. The drawing is metric, so any size gives the same scene.
SIZE = (96, 192)
PROCESSES_FROM = 32  # scenes: fewer are drawn on threads (starting the processes would cost more)
FRAME = 19  # Cityscapes annotates frame 19 of each 30-frame snippet


class SynthError(ValueError):
    """Generated data cannot be written or reused; the message names the directory and the conflict."""


@dataclass(frozen=True, kw_only=True)
class SynthSummary:
    root: Path
    n_train: int
    n_val: int
    seed: int
    size: tuple[int, int]
    frequencies: dict[str, float]  # train split: class name -> fraction of valid (non-ignored) pixels


def image_stem(split: Split, index: int) -> tuple[str, str]:
    """(city, `<city>_<seq>_<frame>`) of image `index`: images go round the cities, seq counts per city."""
    cities = CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_{FRAME:06d}"


def render(seed: int, split: Split, index: int, size: tuple[int, int]) -> Scene:
    rng = np.random.default_rng([seed, SPLIT_STREAM[split], index])
    return render_scene(rng, size, tram=index % TRAM_EVERY == TRAM_EVERY // 2 - 1)


def write_png(path: Path, array: np.ndarray, *, compress_level: int = 6) -> None:
    """Write under a temporary name in the same directory, then rename: never a half-written PNG at `path`."""
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", compress_level=compress_level))


def write_scene(root: Path, split: Split, index: int, scene: Scene) -> None:
    city, stem = image_stem(split, index)
    image_dir, label_dir = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    write_png(image_dir / f"{stem}_leftImg8bit.png", scene.image, compress_level=1)  # noisy: compresses badly anyway
    write_png(label_dir / f"{stem}_gtFine_labelIds.png", scene.label)
    write_png(label_dir / f"{stem}_gtFine_instanceIds.png", scene.instance.astype(np.uint16))


def _make(job: tuple[Path, int, Split, int, tuple[int, int]]) -> np.ndarray:
    """Draw and write one scene; returns its train-id pixel counts."""
    root, seed, split, index, size = job
    scene = render(seed, split, index, size)
    write_scene(root, split, index, scene)
    return np.bincount(CITYSCAPES.encode(scene.label).ravel(), minlength=256)


def _drawing_pool(jobs: int) -> Executor:
    """One process per core for a set worth it (drawing a scene is thousands of small numpy calls that hold the
    GIL), else threads. Forked, not spawned: a spawned child re-runs the caller's main script, which a script
    without a `__main__` guard does not survive. Forked only while this process runs one Python thread, since a fork
    copies other threads' locks as they are; the children draw with numpy and PIL only, never torch."""
    cores = os.cpu_count() or 1
    if (cores > 1 and jobs >= PROCESSES_FROM and threading.active_count() == 1
            and "fork" in multiprocessing.get_all_start_methods()):
        return ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("fork"))
    return ThreadPoolExecutor(min(4, cores))


def class_frequencies(counts: np.ndarray) -> dict[str, float]:
    """Train-id pixel counts -> fraction of valid pixels per class."""
    valid = counts[: len(CITYSCAPES.classes)]
    total = max(int(valid.sum()), 1)
    return {name: float(n) / total for name, n in zip(CITYSCAPES.classes, valid, strict=True)}


def _parameters(*, n_train: int, n_val: int, seed: int, size: tuple[int, int]) -> dict[str, Any]:
    return {"version": GENERATOR_VERSION, "seed": seed, "size": list(size), "n_train": n_train, "n_val": n_val}


def _validate(*, n_train: int, n_val: int, seed: int, size: tuple[int, int]) -> None:
    if n_train < 1:
        raise SynthError(f"`n_train >= 1` must hold, but got n_train={n_train}")
    if n_val < 0:
        raise SynthError(f"`n_val >= 0` must hold, but got n_val={n_val}")
    if seed < 0:
        raise SynthError(f"`seed >= 0` must hold, but got seed={seed}")
    if len(size) != 2 or min(size) < 16:
        raise SynthError(f"`size` must be (height, width) with both >= 16, but got {size}")


def _reuse(root: Path, wanted: dict[str, Any]) -> SynthSummary | None:
    """The summary of a complete dataset at `root` made with `wanted`; None if there is none yet."""
    path = root / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        found = {key: manifest[key] for key in wanted}
    except (json.JSONDecodeError, KeyError) as err:
        raise SynthError(f"{root}: {MANIFEST} is unreadable ({err}); delete the directory to regenerate") from err
    if found != wanted:
        diff = ", ".join(f"{k}={found[k]} (asked {wanted[k]})" for k in wanted if found[k] != wanted[k])
        raise SynthError(f"{root}: holds generated data made with other parameters: {diff}; "
                         "use another directory or delete this one")
    return SynthSummary(root=root, n_train=found["n_train"], n_val=found["n_val"], seed=found["seed"],
                        size=tuple(found["size"]), frequencies=manifest["frequencies"])


def generate(
    out: Path, *, n_train: int, n_val: int, seed: int = 0, size: tuple[int, int] = SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> SynthSummary:
    """Write n_train + n_val generated scenes under `out` in the Cityscapes layout; reuse a complete identical set.

    Raises SynthError when `out` already holds a generated set made with other parameters.
    """
    _validate(n_train=n_train, n_val=n_val, seed=seed, size=size)
    root = Path(out).expanduser().resolve()
    wanted = _parameters(n_train=n_train, n_val=n_val, seed=seed, size=tuple(size))
    if (summary := _reuse(root, wanted)) is not None:
        return summary
    log.info("generating %d train + %d val scenes of %dx%d under %s", n_train, n_val, *size, root)
    jobs: list[tuple[Split, int]] = [("train", i) for i in range(n_train)] + [("val", i) for i in range(n_val)]

    work = [(root, seed, split, index, tuple(size)) for split, index in jobs]
    counts = np.zeros(256, np.int64)
    pool = _drawing_pool(len(jobs))
    try:
        results = pool.map(_make, work, chunksize=4 if isinstance(pool, ProcessPoolExecutor) else 1)
        for done, ((split, _), image_counts) in enumerate(zip(jobs, results, strict=True), 1):
            if split == "train":
                counts += image_counts
            if progress is not None:
                progress(done, len(jobs))
    finally:
        pool.shutdown(cancel_futures=True)  # on an error or Ctrl-C, do not draw the remaining images first
    frequencies = class_frequencies(counts)
    manifest = {"generator": "s4sweep synth", "layout": "cityscapes", **wanted, "frequencies": frequencies}
    write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return SynthSummary(root=root, n_train=n_train, n_val=n_val, seed=seed, size=tuple(size), frequencies=frequencies)
