"""Data throughput per loader worker: Cityscapes and IDD training samples (decode + transform), IDD preparation.

Run: `python bench/data.py [--n N] [--json FILE]`. Everything is generated on the fly in a temporary directory:

- Cityscapes at full size: 1024x2048 scenes from the `synth` generator written as `*_leftImg8bit.png` +
  `*_gtFine_labelIds.png`, read by the real reader, then the reference transform (half-resolution resize, random
  256x512 crop, flip, normalise) exactly as `TrainSet` does with the decoded-image cache off (the worst case).
- IDD at its common size: 1080x1920 images (varied content) read through the IDD reader, resized to 720x1280, then
  the same half-resolution resize and crop.
- IDD preparation: `prepare_file` on 1080x1920 polygon JSON with ~100 objects (parse, draw, LUT, PNG encode and
  atomic write), for one label set and for all five at once (one drawing serves them all).

One process, one torch thread: a DataLoader worker's conditions. A GPU trial of the paper recipe reads 8 labeled +
8 unlabeled + 8 labeled-for-D images per iteration; at ~0.1 s per iteration on an H100 (s4gan.md §7) that is 240
images/s, and the bench prints how many workers reach it. The machine this runs on may be shared: take the best of
a few runs.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from trainers.config import DatasetConfig
from trainers.data.cityscapes import find_pairs, read_image, read_label
from trainers.data.idd import find_pairs as find_idd_pairs
from trainers.data.idd import prepare_file
from trainers.data.labels_idd import LABEL_SETS
from trainers.data.pipeline import ScaledCache, TrainSet
from trainers.data.synth import generate
from trainers.data.synth_idd import paint, road_users, scene_objects
from trainers.data.tables import dataset_info

GPU_IMAGES_PER_S = 240  # 24 images per iteration at 0.1 s/iteration


def per_second(work: Callable[[int], object], n: int) -> float:
    work(0)  # warm up (first decode, allocator)
    t0 = time.perf_counter()
    for i in range(n):
        work(i)
    return n / (time.perf_counter() - t0)


def cityscapes_rates(tmp: Path, n: int) -> dict[str, float]:
    root = generate(tmp / "cityscapes", n_train=2, n_val=0, size=(1024, 2048)).root
    pairs = tuple(find_pairs(root, "train"))
    info = dataset_info("cityscapes")
    cfg = DatasetConfig(name="cityscapes", root=str(root), scale=0.5, crop_size=(256, 512), cache_mb=0)
    dataset = TrainSet(pairs, info, cfg, seed=0, stream=1, cache=ScaledCache(0))
    pair = pairs[0]
    return {
        "decode image": per_second(lambda i: read_image(pairs[i % 2].image).load(), n),
        "decode + map label": per_second(lambda i: read_label(pairs[i % 2], info.labels), n),
        "decode + half-size resize": per_second(lambda i: ScaledCache(0).get(pairs[i % 2], info, 0.5), n),
        "full sample (decode, resize, crop, flip, normalise)": per_second(lambda i: dataset[(i % 2, i)], n),
        "_pixels": float(np.prod(read_image(pair.image).size)),
    }


def idd_scene(rng: np.random.Generator, size: tuple[int, int]) -> list[dict]:
    objects = scene_objects(rng, size)
    h, w = size
    while len(objects) < 100:  # IDD scenes are crowded: more road users, same rules
        objects[-1:-1] = road_users(rng, h, w, 0.4 * h)
    return objects


def write_idd(tmp: Path, count: int) -> tuple[Path, list[Path]]:
    root, size = tmp / "idd", (1080, 1920)
    jsons = []
    for i in range(count):
        rng = np.random.default_rng(i)
        objects = idd_scene(rng, size)
        gt, images = root / "gtFine" / "train" / "0", root / "leftImg8bit" / "train" / "0"
        gt.mkdir(parents=True, exist_ok=True)
        images.mkdir(parents=True, exist_ok=True)
        path = gt / f"{i:06d}_gtFine_polygons.json"
        path.write_text(json.dumps({"imgHeight": size[0], "imgWidth": size[1], "objects": objects}))
        Image.fromarray(paint(rng, objects, size)).save(images / f"{i:06d}_leftImg8bit.png")
        jsons.append(path)
    return root, jsons


def idd_rates(tmp: Path, n: int) -> dict[str, float]:
    count = max(4, n)
    root, jsons = write_idd(tmp, count)

    def prepare(sets: tuple[str, ...]) -> Callable[[int], object]:
        def run(i: int) -> object:
            polygons = jsons[i % count]
            for png in polygons.parent.glob(f"{polygons.name[:6]}_gtFine_label*.png"):
                png.unlink()  # force a rewrite: the previous round's PNGs would count as up to date
            return prepare_file(polygons, sets)
        return run

    rates = {"prepare 1 label set (parse, draw, PNG write)": per_second(prepare(("level3",)), n),
             "prepare all 5 label sets": per_second(prepare(LABEL_SETS), n)}
    info = dataset_info("idd", "level3")
    pairs = tuple(find_idd_pairs(root, "train", "level3"))
    cfg = DatasetConfig(name="idd", root=str(root), label_set="level3", scale=0.5, crop_size=(256, 512), cache_mb=0)
    dataset = TrainSet(pairs, info, cfg, seed=0, stream=1, cache=ScaledCache(0))
    rates["train sample 1080x1920 (decode, 720x1280, half, crop, flip, normalise)"] = \
        per_second(lambda i: dataset[(i % len(pairs), i)], n)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=12, help="timed repetitions per measurement")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # what a DataLoader worker gets
    with tempfile.TemporaryDirectory() as tmp:
        cs = cityscapes_rates(Path(tmp), args.n)
        idd = idd_rates(Path(tmp), args.n)
    pixels = cs.pop("_pixels")
    print(f"one worker (1 process, 1 torch thread); Cityscapes images {int(pixels / 2048)}x2048\n")
    print(f"{'measurement':<75} {'images/s':>9} {'workers for 240/s':>18}")
    for group, rates in (("Cityscapes", cs), ("IDD", idd)):
        for name, rate in rates.items():
            need = math.ceil(GPU_IMAGES_PER_S / rate)
            print(f"{group + ': ' + name:<75} {rate:9.1f} {need:18d}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cityscapes": cs, "idd": idd, "target_images_per_s": GPU_IMAGES_PER_S},
                                              indent=1))


if __name__ == "__main__":
    main()
