"""Dataset trees, broken file by file: `s4sweep data check` (and the scan before a sweep) names every broken file in
one pass and counts, per split, what it read and what it found. Real PNG and JSON files in the Cityscapes and IDD
layouts."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, PngImagePlugin

from trainers.data.idd import VERSION_KEY, label_path
from trainers.data.rasterise import RASTERISER_VERSION


def images(root: Path, split: str = "train") -> list[Path]:
    return sorted((root / "leftImg8bit" / split).rglob("*_leftImg8bit.png"))


def labels(root: Path, split: str = "train") -> list[Path]:
    return sorted((root / "gtFine" / split).rglob("*_gtFine_labelIds.png"))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:60])


def save(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG header that claims `width` x `height` pixels (a decompression bomb for any reader that trusts it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_every_broken_file_of_the_issues_tree_is_named_in_one_pass(cityscapes_tree, refuse):
    """The new user's tree: one truncated train image, one train image without its label, one label with raw id 200."""
    imgs, lbls = images(cityscapes_tree), labels(cityscapes_tree)
    truncate(imgs[0])
    lbls[5].unlink()
    save(np.full((16, 32), 200, np.uint8), lbls[9])
    out = refuse(["data", "check", cityscapes_tree], f"{imgs[0]}: unreadable image",
                 f"{imgs[5]}: no label file (expected {lbls[5]})",
                 f"{lbls[9]}: raw label id 200 is not in the Cityscapes table", code=1)
    assert "train: 15 images and 14 labels read, 3 problem(s)" in out.out
    assert "val: 3 images and 3 labels read, 0 problem(s)" in out.out


# (case id, how to break the train split of a 15-pair tree, what the report must say: {i}/{l} = i-th image/label)
CITYSCAPES_CASES = [
    ("truncated-label", lambda r: truncate(labels(r)[2]), ["{l2}: unreadable label"]),
    ("label-not-a-png", lambda r: labels(r)[2].write_text("P6 not an image"), ["{l2}: unreadable label"]),
    ("rgb-label", lambda r: save(np.zeros((16, 32, 3), np.uint8), labels(r)[2]), ["{l2}: a label image must have "
                                                                                  "one channel"]),
    ("size-mismatch", lambda r: save(np.full((8, 8), 7, np.uint8), labels(r)[2]),
     ["{l2}: label is 8x8 but image {i2n} is 32x16"]),
    ("orphan-label", lambda r: images(r)[2].unlink(), ["{l2}: label without image"]),
    ("zero-byte-image", lambda r: images(r)[2].write_bytes(b""), ["{i2}: unreadable image"]),
    ("image-and-label-both-broken", lambda r: (truncate(images(r)[2]), truncate(labels(r)[2])),
     ["{i2}: unreadable image", "{l2}: unreadable label"]),
    ("decompression-bomb", lambda r: images(r)[2].write_bytes(png_claiming(60000, 60000)),
     ["{i2}: unreadable image"]),
    ("train-id-outside-table", lambda r: save(np.full((16, 32), 30, np.uint8),
                                              Path(str(labels(r)[2]).replace("_labelIds", "_labelTrainIds"))),
     ["_gtFine_labelTrainIds.png: train id 30 outside 0..18"]),
]


@pytest.mark.parametrize(("corrupt", "needles"), [c[1:] for c in CITYSCAPES_CASES],
                         ids=[c[0] for c in CITYSCAPES_CASES])
def test_a_broken_cityscapes_file_is_named_with_the_splits_count(corrupt, needles, cityscapes_tree, refuse):
    image, label = images(cityscapes_tree)[2], labels(cityscapes_tree)[2]
    names = {"i2": image, "i2n": image.name, "l2": label}
    corrupt(cityscapes_tree)
    out = refuse(["data", "check", cityscapes_tree], *[n.format(**names) for n in needles], code=1)
    assert f"{len(needles)} problem(s)" in out.out.splitlines()[-1] and "val: 3 images and 3 labels read" in out.out


@pytest.mark.parametrize("case", ["empty-split", "missing-split"])
def test_an_empty_or_missing_split_is_a_problem_of_that_split(case, cityscapes_tree, refuse):
    val = cityscapes_tree / "leftImg8bit" / "val"
    for image in images(cityscapes_tree, "val"):
        image.unlink()
    if case == "missing-split":
        for city in val.iterdir():
            city.rmdir()
        val.rmdir()
        needle = f"{val}: missing image directory for split 'val'"
    else:
        needle = f"{val}: split 'val' has no *_leftImg8bit.png images"
    out = refuse(["data", "check", cityscapes_tree], needle, code=1)
    assert "train: 15 images and 15 labels read, 0 problem(s)" in out.out
    assert "val: 0 images" in out.out


@pytest.mark.parametrize("case", ["no-root", "root-is-a-file", "no-layout"])
def test_a_root_that_is_no_dataset_is_named(case, tmp_path, refuse):
    root = tmp_path / "data"
    needle = f"{root}: dataset root does not exist"
    if case == "root-is-a-file":
        root.write_text("x")
        needle = f"{root}: dataset root is not a directory"
    elif case == "no-layout":
        (root / "leftImg8bit" / "train").mkdir(parents=True)
        needle = f"{root}: neither a Cityscapes root"
    refuse(["data", "check", root], needle, code=1)


# --- IDD: polygons, images and the label PNGs of each label set ---------------------------------------------------


def polygons(root: Path, split: str = "train") -> list[Path]:
    return sorted((root / "gtFine" / split).rglob("*_gtFine_polygons.json"))


def edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def stale(path: Path) -> None:
    later = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))  # edited after its label PNGs were drawn


def foreign_ids(label: Path) -> None:
    tag = PngImagePlugin.PngInfo()
    tag.add_text(VERSION_KEY, str(RASTERISER_VERSION))
    Image.fromarray(np.full((18, 32), 200, np.uint8)).save(label, pnginfo=tag)


IDD_CASES = [
    ("malformed-json", lambda r: polygons(r)[1].write_text('{"imgHeight": 18'), ["{j1}: malformed JSON"]),
    ("unknown-label", lambda r: edit_json(polygons(r)[1], objects=[{"label": "zeppelin", "polygon": [[0, 0], [2, 0],
                                                                                                      [2, 2]]}]),
     ["{j1}: unknown label(s) 'zeppelin'", "stale"]),
    ("polygons-without-image", lambda r: images(r)[1].unlink(), ["{j1}: label without image"]),
    ("image-without-polygons-and-truncated", lambda r: (polygons(r)[1].unlink(), truncate(images(r)[1])),
     ["{i1}: no label file (expected {j1})", "{i1}: unreadable image"]),
    ("missing-label-png", lambda r: label_path(polygons(r)[1], "cs19").unlink(),
     ["1 of 4 images have no cs19 label PNG; run s4sweep data prepare-idd"]),
    ("stale-label-png", lambda r: stale(polygons(r)[1]), ["{l1}: stale", "--label-set level3"]),
    ("label-id-outside-table", lambda r: foreign_ids(label_path(polygons(r)[1], "level3")),
     ["{l1}: train id 200 outside 0..25"]),
    ("json-claims-a-terapixel-image", lambda r: edit_json(polygons(r)[1], imgHeight=10**6, imgWidth=10**6),
     ["{j1}: malformed polygon file: imgHeight and imgWidth must be positive integers up to 16384", "1000000"]),
    ("json-size-differs-from-image", lambda r: save(np.zeros((20, 30, 3), np.uint8), images(r)[1]),
     ["{i1}: is 30x20 but {j1n} says 32x18"]),
]


@pytest.mark.parametrize(("corrupt", "needles"), [c[1:] for c in IDD_CASES], ids=[c[0] for c in IDD_CASES])
def test_a_broken_idd_file_is_named_with_the_splits_count(corrupt, needles, idd_tree, refuse):
    json1 = polygons(idd_tree)[1]
    names = {"i1": images(idd_tree)[1], "j1": json1, "j1n": json1.name, "l1": label_path(json1, "level3")}
    corrupt(idd_tree)
    out = refuse(["data", "check", idd_tree], *[n.format(**names) for n in needles], code=1)
    assert "val: 2 images" in out.out and "0 problem(s)" in out.out.splitlines()[-1]


def test_prepare_idd_refuses_a_json_claiming_a_terapixel_image_without_allocating_it(idd_tree, refuse):
    huge = polygons(idd_tree)[0]
    edit_json(huge, imgHeight=10**6, imgWidth=10**6)
    out = refuse(["data", "prepare-idd", idd_tree, "--label-set", "level1", "--workers", "1"], f"{huge}: malformed",
                 code=1)
    assert "1 file(s) failed" in out.out


def test_each_idd_label_set_asked_for_is_checked(idd_tree, refuse):
    out = refuse(["data", "check", idd_tree, "--label-set", "level1", "cs19"],
                 "4 of 4 images have no level1 label PNG; run s4sweep data prepare-idd", "--label-set level1", code=1)
    assert "train: 4 images, 4 polygon files and 4 label PNGs (level1, cs19) read, 1 problem(s)" in out.out


# --- the scan before a sweep --------------------------------------------------------------------------------------


def test_a_sweep_on_a_broken_tree_names_every_file_and_leaves_nothing_behind(cityscapes_tree, tmp_path, refuse):
    imgs, lbls = images(cityscapes_tree), labels(cityscapes_tree)
    truncate(imgs[0])
    lbls[5].unlink()
    save(np.full((16, 32), 200, np.uint8), lbls[9])
    spec = tmp_path / "cs.yaml"
    spec.write_text(yaml.safe_dump({"name": "cs", "base": {"preset": "micro", "dataset": {
        "name": "cityscapes", "root": str(cityscapes_tree)}}, "eval": [{"name": "synth"}]}))
    storage = tmp_path / "runs"
    refuse(["sweep", spec, "--storage", storage], "3 problem(s)", "nothing was scheduled", f"{imgs[0]}",
           f"{imgs[5]}: no label file", f"{lbls[9]}: raw label id 200")
    assert not (storage / "sweeps").exists() and not (storage / "mlflow.db").exists()  # no run, no MLflow store
