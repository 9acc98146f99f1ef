"""The IDD rasteriser on hand-written polygon JSON, one rule at a time, and prepare_idd's files on disk."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainers.data.idd import VERSION_KEY, label_path, prepare_file, prepare_idd, rasteriser_version
from trainers.data.labels_idd import IDD_TABLES
from trainers.data.rasterise import RASTERISER_VERSION, rasterise, read_polygons
from trainers.data.tables import DataError

H, W = 6, 10
ROAD, CAR, PERSON, AUTO, ANIMAL, POLE, POLEGROUP = 0, 12, 6, 11, 7, 26, 27  # raw IDD ids


def rect(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def obj(label, polygon, **extra):
    return {"label": label, "polygon": polygon, **extra}


def write_json(path: Path, objects, *, h=H, w=W) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"imgHeight": h, "imgWidth": w, "objects": objects}))
    return path


def draw(tmp_path, objects, **size) -> np.ndarray:
    result = rasterise(read_polygons(write_json(tmp_path / "x_gtFine_polygons.json", objects, **size)))
    assert result.unknown == ()
    return result.raw


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_background_is_void_and_a_polygon_fills_its_outline_inclusive(tmp_path):
    raw = draw(tmp_path, [obj("car", rect(2, 1, 5, 3))])
    expected = np.full((H, W), 255, np.uint8)
    expected[1:4, 2:6] = CAR  # Pillow fills the boundary pixels too, as upstream's ImageDraw.polygon does
    np.testing.assert_array_equal(raw, expected)
    assert raw.shape == (H, W) and raw.dtype == np.uint8


def test_objects_are_drawn_in_json_order_later_over_earlier(tmp_path):
    road_then_car = draw(tmp_path, [obj("road", rect(0, 0, 9, 5)), obj("car", rect(2, 1, 5, 3))])
    car_then_road = draw(tmp_path, [obj("car", rect(2, 1, 5, 3)), obj("road", rect(0, 0, 9, 5))])
    assert (road_then_car[1:4, 2:6] == CAR).all() and (road_then_car[0] == ROAD).all()
    assert (car_then_road == ROAD).all()


@pytest.mark.parametrize("flag", [1, True, "yes"])
def test_deleted_objects_are_skipped(tmp_path, flag):
    raw = draw(tmp_path, [obj("road", rect(0, 0, 9, 5)), obj("bus", rect(0, 0, 9, 5), deleted=flag),
                          obj("car", rect(0, 0, 1, 1), deleted=0)])
    assert (raw[2:] == ROAD).all() and raw[0, 0] == CAR  # deleted: 0 (and no key at all) means drawn


@pytest.mark.parametrize("points", [[], [[1, 1]], [[0, 0], [9, 5]]])
def test_polygons_under_three_points_are_skipped(tmp_path, points):
    raw = draw(tmp_path, [obj("road", rect(0, 0, 9, 5)), obj("car", points)])
    assert (raw == ROAD).all()  # Pillow would draw a 2-point polygon as a line


def test_group_suffix_is_stripped_but_polegroup_is_its_own_label(tmp_path):
    raw = draw(tmp_path, [obj("cargroup", rect(0, 0, 2, 2)), obj("persongroup", rect(3, 0, 5, 2)),
                          obj("polegroup", rect(6, 0, 7, 2)), obj("pole", rect(8, 0, 9, 2))])
    assert raw[0, 0] == CAR and raw[0, 3] == PERSON and raw[0, 6] == POLEGROUP and raw[0, 8] == POLE
    cs19 = IDD_TABLES["cs19"].encode(raw)
    assert cs19[0, 6] == 255 and cs19[0, 8] == 5  # polegroup has no Cityscapes class, pole does


def test_void_labels_overwrite_with_void(tmp_path):
    raw = draw(tmp_path, [obj("road", rect(0, 0, 9, 5)), obj("ego vehicle", rect(0, 4, 9, 5))])
    assert (raw[:4] == ROAD).all() and (raw[4:] == 36).all()  # the raw id of ego vehicle...
    for table in IDD_TABLES.values():
        assert (table.encode(raw)[4:] == 255).all()  # ...is void in every label set


def test_float_coordinates_are_accepted(tmp_path):
    raw = draw(tmp_path, [obj("car", [[1.4, 1.2], [4.6, 1.2], [4.6, 3.4], [1.4, 3.4]])])
    assert (raw == CAR).sum() > 0 and (raw != CAR).sum() > 0


def test_unknown_labels_are_collected_not_drawn(tmp_path):
    path = write_json(tmp_path / "a_gtFine_polygons.json", [obj("road", rect(0, 0, 9, 5)),
                                                            obj("spaceship", rect(0, 0, 3, 3)),
                                                            obj("ufogroup", rect(0, 0, 3, 3))])
    result = rasterise(read_polygons(path))
    assert result.unknown == ("spaceship", "ufogroup") and (result.raw == ROAD).all()


def test_one_drawing_serves_every_label_set_and_cs19_never_comes_from_level3(tmp_path):
    json_path = write_json(tmp_path / "gtFine/train/0/000001_gtFine_polygons.json", [
        obj("road", rect(0, 0, 9, 5)), obj("autorickshaw", rect(0, 0, 1, 1)), obj("animal", rect(3, 0, 4, 1)),
        obj("non-drivable fallback", rect(6, 0, 7, 1)), obj("drivable fallback", rect(0, 4, 1, 5))])
    result = prepare_file(json_path, ["level1", "level2", "level3", "level4", "cs19"])
    assert result.written == ["level1", "level2", "level3", "level4", "cs19"] and result.problem is None
    l3, l4, cs = (read(label_path(json_path, s)) for s in ("level3", "level4", "cs19"))
    assert (l3[0, 0], l4[0, 0], cs[0, 0]) == (8, 10, 255)  # autorickshaw: no Cityscapes class
    assert (l3[0, 3], l4[0, 3], cs[0, 3]) == (4, 6, 255)  # animal: level3 "person", but not a Cityscapes person
    assert cs[0, 6] == 9 and cs[4, 0] == 255 and cs[2, 5] == 0  # terrain, drivable fallback void, road
    assert read(label_path(json_path, "level1"))[0, 0] == 3  # vehicle


def test_label_png_names_are_upstreams(tmp_path):
    j = tmp_path / "123456_gtFine_polygons.json"
    assert label_path(j, "level3").name == "123456_gtFine_labellevel3Ids.png"
    assert label_path(j, "level4").name == "123456_gtFine_labellevel4Ids.png"
    assert label_path(j, "cs19").name == "123456_gtFine_labelcsTrainIds.png"


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "malformed JSON"),
    (json.dumps([1, 2]), "expected an object at the top"),
    (json.dumps({"imgWidth": 4, "objects": []}), "imgHeight and imgWidth must be positive integers"),
    (json.dumps({"imgHeight": 4, "imgWidth": 4, "objects": {}}), "`objects` must be a list"),
    (json.dumps({"imgHeight": 4, "imgWidth": 4, "objects": [{"polygon": []}]}), r"objects\[0\] must be an object"),
    (json.dumps({"imgHeight": 4, "imgWidth": 4, "objects": [obj("car", [[0, 0], [1, "x"], [2, 2]])]}),
     r"objects\[0\] \('car'\): polygon\[1\] must be an \[x, y\] pair"),
    (json.dumps({"imgHeight": 4, "imgWidth": 4, "objects": [obj("car", "0,0 1,1 2,2")]}),
     r"`polygon` must be a list"),
])
def test_malformed_json_is_an_error_naming_the_file_and_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "bad_gtFine_polygons.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_polygons(path)
    assert str(info.value).startswith(f"{path}: ")


def make_root(tmp_path: Path, n: int = 4) -> Path:
    for i in range(n):
        write_json(tmp_path / "gtFine" / "train" / str(i % 2) / f"{i:06d}_gtFine_polygons.json",
                   [obj("road", rect(0, 0, 9, 5)), obj("car", rect(i, 1, i + 2, 3))])
    return tmp_path


def test_prepare_is_idempotent_resumable_and_atomic(tmp_path):
    root = make_root(tmp_path)
    first = prepare_idd(root, ["level3"])
    assert (first.files, first.written, first.current, first.problems) == (4, 4, 0, [])
    pngs = sorted(root.rglob("*_labellevel3Ids.png"))
    assert len(pngs) == 4 and all(rasteriser_version(p) == RASTERISER_VERSION for p in pngs)
    again = prepare_idd(root, ["level3"])
    assert (again.written, again.current) == (0, 4)
    pngs[0].unlink()  # an interrupted run: the others stay
    os.utime(sorted(root.rglob("*.json"))[1], ns=(2**62, 2**62))  # a JSON edited after its PNG
    Image.fromarray(np.zeros((H, W), np.uint8)).save(pngs[2])  # a PNG drawn by something else (no version tag)
    killed = pngs[3].with_name(f".{pngs[3].name}.tmp-999999999")  # what a killed run leaves (no such pid)
    killed.write_bytes(b"half a PNG")
    resumed = prepare_idd(root, ["level3", "cs19"])
    assert (resumed.written, resumed.current) == (3 + 4, 1)
    assert not [p for p in root.rglob("*") if ".tmp-" in p.name]


def test_prepare_with_workers_writes_the_same_bytes(tmp_path):
    one, two = make_root(tmp_path / "one", n=6), make_root(tmp_path / "two", n=6)
    prepare_idd(one, ["level4"], workers=1)
    prepare_idd(two, ["level4"], workers=2)
    a, b = sorted(one.rglob("*.png")), sorted(two.rglob("*.png"))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b] and len(a) == 6
    with Image.open(a[0]) as im:
        assert im.info[VERSION_KEY] == str(RASTERISER_VERSION)


def test_prepare_reports_unknown_labels_and_broken_files_per_file(tmp_path):
    root = make_root(tmp_path)
    odd = write_json(root / "gtFine/train/0/000010_gtFine_polygons.json", [obj("road", rect(0, 0, 9, 5)),
                                                                          obj("hovercraft", rect(0, 0, 2, 2))])
    broken = root / "gtFine/train/1/000011_gtFine_polygons.json"
    broken.write_text("{")
    report = prepare_idd(root, ["level3"])
    assert report.written == 4 and report.failed == 2 and len(report.problems) == 2
    assert f"{odd}: unknown label(s) 'hovercraft' (not in the IDD table); no PNG written" in report.problems
    assert any(p.startswith(f"{broken}: malformed JSON") for p in report.problems)
    assert not label_path(odd, "level3").exists()
    skipped = prepare_idd(root, ["level3"], skip_unknown=True)  # upstream's behaviour, still reported
    assert label_path(odd, "level3").exists() and skipped.written == 1 and len(skipped.problems) == 2
    assert (read(label_path(odd, "level3")) == ROAD).all()


def test_prepare_refuses_a_missing_root_or_label_set(tmp_path):
    with pytest.raises(DataError, match="dataset root does not exist"):
        prepare_idd(tmp_path / "nowhere", ["level3"])
    with pytest.raises(DataError, match="valid label sets are level1, level2, level3, level4, cs19"):
        prepare_idd(tmp_path, ["level5"])
    with pytest.raises(DataError, match="gtFine: missing"):
        prepare_idd(tmp_path, ["level3"])
