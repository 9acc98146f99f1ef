"""Generated road scenes in the IDD layout (`synth_idd`): polygon JSON that exercises every rasteriser rule.

`generate(out, n_train=48, n_val=12)` writes

    out/leftImg8bit/{train,val}/<drive>/<img_id>_leftImg8bit.png     RGB, sizes vary (SIZES: 16:9 and 4:3)
    out/gtFine/{train,val}/<drive>/<img_id>_gtFine_polygons.json     the annotation, IDD's format
    out/gtFine/{train,val}/<drive>/<img_id>_gtFine_label<type>s.png  every label set, made by prepare_idd
    out/synth_idd.json                                                written last: the data is complete

A scene is a list of polygons in draw order, far to near, as an annotator's JSON: sky (with a patch of fallback
background), buildings, vegetation, a billboard or a bridge, terrain (non-drivable fallback), the road with a
drivable-fallback shoulder and sometimes parking, a sidewalk behind a curb, walls or fences, poles with signs and
lights, then vehicles (autorickshaws, cars, buses, trucks, motorcycles with riders), people and animals, overlapping
each other. Every scene also holds the cases a rasteriser must get right: a `cargroup` or `persongroup`, a large
`deleted` object, polygons with 2, 1 and 0 points, and an `ego vehicle` hood (void). The image is painted from the
same polygons (those a correct rasteriser draws), so the label PNGs agree with it only if the rules are followed.
Image i of a split comes from a Generator seeded by (seed, split, i).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from trainers.data.idd import label_path, prepare_idd
from trainers.data.labels_idd import IDD_LABEL_BY_NAME, IDD_TABLES, LABEL_SETS
from trainers.data.rasterise import table_name
from trainers.data.tables import DataError
from trainers.fileio import atomic_write

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump whenever a change to the scenes changes any pixel
MANIFEST = "synth_idd.json"
Split = Literal["train", "val"]
SIZES: tuple[tuple[int, int], ...] = ((180, 320), (216, 384), (144, 256), (240, 320), (162, 288))  # (H, W)
DRIVES: dict[Split, tuple[str, ...]] = {"train": ("0", "1", "2"), "val": ("3", "4")}
SPLIT_STREAM: dict[Split, int] = {"train": 0, "val": 1}
FIRST_ID: dict[Split, int] = {"train": 0, "val": 500000}
Points = list[list[float]]


@dataclass(frozen=True, kw_only=True)
class SynthIDDSummary:
    root: Path
    n_train: int
    n_val: int
    seed: int
    void_share: dict[str, float]  # train split: label set -> fraction of pixels that are void (255) in it


def rect(x0: float, y0: float, x1: float, y1: float) -> Points:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def blob(rng: np.random.Generator, cx: float, cy: float, rx: float, ry: float, n: int = 9) -> Points:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = rng.uniform(0.7, 1.0, n)
    return [[round(cx + rx * a * np.cos(t), 1), round(cy + ry * a * np.sin(t), 1)] for a, t in zip(r, angles,
                                                                                                  strict=True)]


def _obj(label: str, polygon: Points, deleted: int = 0) -> dict[str, Any]:
    return {"label": label, "polygon": polygon, "deleted": deleted}


def background(rng: np.random.Generator, h: int, w: int, horizon: float) -> list[dict[str, Any]]:
    objects = [_obj("sky", rect(0, 0, w, horizon + 2))]
    objects.append(_obj("fallback background", blob(rng, rng.uniform(0.2, 0.8) * w, horizon * 0.4, w * 0.06, h * 0.04)))
    x = 0.0
    while x < w:  # a skyline of buildings and trees
        width = rng.uniform(0.08, 0.2) * w
        top = horizon - rng.uniform(0.15, 0.45) * h
        label = "building" if rng.random() < 0.6 else "vegetation"
        shape = rect(x, top, x + width, horizon + 2) if label == "building" else \
            blob(rng, x + width / 2, (top + horizon) / 2, width / 1.6, (horizon - top) / 1.7)
        objects.append(_obj(label, shape))
        x += width * rng.uniform(0.7, 1.0)  # overlapping neighbours
    if rng.random() < 0.5:
        x0 = rng.uniform(0.1, 0.6) * w
        objects.append(_obj("billboard", rect(x0, horizon - 0.3 * h, x0 + 0.12 * w, horizon - 0.18 * h)))
    if rng.random() < 0.25:
        objects.append(_obj("bridge", rect(0, horizon - 0.12 * h, w, horizon - 0.05 * h)))
    return objects


def ground(rng: np.random.Generator, h: int, w: int, horizon: float) -> list[dict[str, Any]]:
    vx = rng.uniform(0.4, 0.6) * w  # vanishing point
    left, right = rng.uniform(-0.3, 0.1) * w, rng.uniform(0.9, 1.3) * w
    objects = [_obj("non-drivable fallback", rect(0, horizon, w, h)),
               _obj("road", [[vx - 4, horizon], [vx + 4, horizon], [right, h], [left, h]])]
    shoulder = rng.uniform(0.08, 0.18) * w  # IDD roads fray into drivable fallback at the edges
    objects.append(_obj("drivable fallback", [[vx - 4, horizon], [vx - 2, horizon], [left + shoulder, h], [left, h]]))
    if rng.random() < 0.3:
        objects.append(_obj("parking", [[vx + 3, horizon + 4], [vx + 6, horizon + 4], [right, h * 0.8],
                                        [right - shoulder, h * 0.8]]))
    objects.append(_obj("sidewalk", [[vx + 5, horizon], [vx + 12, horizon], [w, h * 0.7], [w, h], [right, h]]))
    objects.append(_obj("curb", [[vx + 4, horizon], [vx + 5, horizon], [right + 0.02 * w, h], [right, h]]))
    side = rng.choice(["wall", "fence", "guard rail"])
    objects.append(_obj(str(side), [[0, horizon - 0.06 * h], [vx - 8, horizon], [0, horizon + 0.15 * h]]))
    return objects


def street_furniture(rng: np.random.Generator, h: int, w: int, horizon: float) -> list[dict[str, Any]]:
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        x, base = rng.uniform(0.05, 0.95) * w, rng.uniform(horizon + 0.1 * h, h * 0.9)
        top = base - rng.uniform(0.3, 0.5) * h
        objects.append(_obj(str(rng.choice(["pole", "pole", "polegroup"])), rect(x, top, x + 0.012 * w + 1, base)))
        item = "traffic sign" if rng.random() < 0.6 else "traffic light"
        objects.append(_obj(item, rect(x - 0.02 * w, top, x + 0.03 * w, top + 0.06 * h)))
    if rng.random() < 0.4:
        objects.append(_obj("obs-str-bar-fallback", rect(0.02 * w, h * 0.75, 0.1 * w, h * 0.85)))
    return objects


def road_users(rng: np.random.Generator, h: int, w: int, horizon: float) -> list[dict[str, Any]]:
    kinds = ["autorickshaw", "autorickshaw", "car", "car", "motorcycle", "bus", "truck", "person", "animal",
             "bicycle", "vehicle fallback"]
    users = []
    for _ in range(int(rng.integers(4, 9))):
        y = rng.uniform(horizon + 0.05 * h, h * 0.95)  # the bottom edge; nearer is bigger
        scale = (y - horizon) / (h - horizon)
        users.append((y, str(rng.choice(kinds)), rng.uniform(0.05, 0.95) * w, scale))
    objects = []
    for y, kind, x, scale in sorted(users):  # far first: near ones occlude them
        width = {"bus": 0.35, "truck": 0.3, "car": 0.22, "autorickshaw": 0.14, "vehicle fallback": 0.2,
                 "person": 0.04, "animal": 0.12}.get(kind, 0.07) * w * scale
        height = {"bus": 0.5, "truck": 0.45, "person": 0.35, "animal": 0.15}.get(kind, 0.25) * h * scale
        if kind == "autorickshaw":  # a rounded cab
            shape = [[x, y], [x + width, y], [x + width, y - 0.6 * height], [x + 0.7 * width, y - height],
                     [x + 0.2 * width, y - height], [x, y - 0.6 * height]]
        else:
            shape = rect(x, y - height, x + width, y)
        objects.append(_obj(kind, shape))
        if kind in ("motorcycle", "bicycle"):
            objects.append(_obj("rider", rect(x + 0.2 * width, y - 1.9 * height, x + 0.8 * width, y - 0.5 * height)))
    return objects


def annotator_cases(rng: np.random.Generator, h: int, w: int, horizon: float) -> list[dict[str, Any]]:
    """What real annotation files contain besides clean polygons."""
    group = str(rng.choice(["cargroup", "persongroup"]))
    gx = rng.uniform(0.1, 0.7) * w
    return [
        _obj(group, rect(gx, horizon, gx + 0.15 * w, horizon + 0.06 * h)),
        _obj("bus", rect(0.2 * w, 0.2 * h, 0.8 * w, 0.8 * h), deleted=1),  # drawn, it would cover half the image
        _obj("car", [[0, 0], [w, h]]),  # a line: degenerate
        _obj("person", [[w / 2, h / 2]]),
        _obj("truck", []),
        _obj("ego vehicle", [[0, h], [0.2 * w, h * rng.uniform(0.88, 0.95)], [0.8 * w, h * 0.93], [w, h]]),
    ]


def scene_objects(rng: np.random.Generator, size: tuple[int, int]) -> list[dict[str, Any]]:
    h, w = size
    horizon = rng.uniform(0.35, 0.5) * h
    cases = annotator_cases(rng, h, w, horizon)
    objects = (background(rng, h, w, horizon) + ground(rng, h, w, horizon) + street_furniture(rng, h, w, horizon)
               + road_users(rng, h, w, horizon) + cases[:-1])
    return objects + cases[-1:]  # the hood last: it covers everything


def paint(rng: np.random.Generator, objects: list[dict[str, Any]], size: tuple[int, int]) -> np.ndarray:
    """The image of what a correct rasteriser draws: class colour, jitter per object, light, sensor noise."""
    h, w = size
    canvas = Image.new("RGB", (w, h), (90, 90, 90))
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        name = table_name(obj["label"])
        if obj["deleted"] or len(obj["polygon"]) < 3 or name is None:
            continue
        color = np.asarray(IDD_LABEL_BY_NAME[name].color, float)
        if name in ("ego vehicle", "unlabeled"):
            color = np.array([30.0, 30.0, 35.0])
        color = np.clip(color * rng.uniform(0.85, 1.15) + rng.normal(0, 8, 3), 0, 255)
        draw.polygon([tuple(p) for p in obj["polygon"]], fill=tuple(int(c) for c in color))
    image = np.asarray(canvas, dtype=np.float32) * rng.uniform(0.75, 1.2)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def image_name(split: Split, index: int) -> tuple[str, str]:
    """(drive, img_id) of image `index` of a split; ids are 6 digits and unique across splits, as in IDD."""
    drives = DRIVES[split]
    return drives[index % len(drives)], f"{FIRST_ID[split] + index:06d}"


def write_scene(root: Path, seed: int, split: Split, index: int) -> None:
    rng = np.random.default_rng([seed, SPLIT_STREAM[split], index])
    size = SIZES[int(rng.integers(len(SIZES)))]
    objects = scene_objects(rng, size)
    image = paint(rng, objects, size)
    drive, img_id = image_name(split, index)
    image_dir, gt_dir = root / "leftImg8bit" / split / drive, root / "gtFine" / split / drive
    image_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    annotation = {"imgHeight": size[0], "imgWidth": size[1], "objects": objects}
    atomic_write(gt_dir / f"{img_id}_gtFine_polygons.json", lambda tmp: tmp.write_text(json.dumps(annotation)))
    atomic_write(image_dir / f"{img_id}_leftImg8bit.png",
            lambda tmp: Image.fromarray(image).save(tmp, format="PNG", compress_level=1))


def void_shares(root: Path, n_train: int) -> dict[str, float]:
    """Per label set, the fraction of train pixels that are void: cs19 ignores far more than level4."""
    void = dict.fromkeys(LABEL_SETS, 0)
    total = 0
    for index in range(n_train):
        drive, img_id = image_name("train", index)
        polygons = root / "gtFine" / "train" / drive / f"{img_id}_gtFine_polygons.json"
        for label_set in LABEL_SETS:
            with Image.open(label_path(polygons, label_set)) as im:
                label = np.asarray(im)
            void[label_set] += int((label == IDD_TABLES[label_set].ignore_index).sum())
        total += label.size
    return {s: v / max(total, 1) for s, v in void.items()}


def generate(out: Path, *, n_train: int, n_val: int, seed: int = 0,
             progress: Callable[[int, int], None] | None = None) -> SynthIDDSummary:
    """Write n_train + n_val scenes in the IDD layout and their label PNGs; reuse a complete identical set."""
    if n_train < 1 or n_val < 0 or seed < 0:
        raise DataError(f"`n_train >= 1`, `n_val >= 0` and `seed >= 0` must hold, but got n_train={n_train}, "
                        f"n_val={n_val}, seed={seed}")
    root = Path(out).expanduser().resolve()
    wanted = {"version": GENERATOR_VERSION, "seed": seed, "n_train": n_train, "n_val": n_val}
    manifest_path = root / MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        found = {k: manifest.get(k) for k in wanted}
        if found != wanted:
            raise DataError(f"{root}: holds generated IDD data made with {found}, not {wanted}; use another "
                            "directory or delete this one")
        return SynthIDDSummary(root=root, n_train=n_train, n_val=n_val, seed=seed, void_share=manifest["void_share"])
    log.info("generating %d train + %d val IDD-layout scenes under %s", n_train, n_val, root)
    jobs: list[tuple[Split, int]] = [("train", i) for i in range(n_train)] + [("val", i) for i in range(n_val)]
    for done, (split, index) in enumerate(jobs, 1):
        write_scene(root, seed, split, index)
        if progress is not None:
            progress(done, len(jobs))
    report = prepare_idd(root, LABEL_SETS)  # the real rasteriser: generated data takes the download's path
    if report.problems:
        raise DataError(f"{root}: generated polygons did not rasterise cleanly: {report.problems[0]}")
    shares = void_shares(root, n_train)
    atomic_write(manifest_path, lambda tmp: tmp.write_text(json.dumps(
        {"generator": "s4sweep synth", "layout": "idd", **wanted, "void_share": shares}, indent=2) + "\n"))
    return SynthIDDSummary(root=root, n_train=n_train, n_val=n_val, seed=seed, void_share=shares)
