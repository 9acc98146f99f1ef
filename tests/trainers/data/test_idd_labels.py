"""Label tables against their sources: Cityscapes against cityscapesScripts' own labels.py, IDD against the table in
the reference notes (s4gan.md §4, transcribed below independently of trainers/data/labels_idd.py)."""

import re

import numpy as np
import pytest

from trainers.data.labels import CITYSCAPES, CITYSCAPES_LABELS
from trainers.data.labels_idd import ID_TYPE, IDD_LABELS, IDD_TABLES, LEVEL3_EVALUATOR_NAMES, members
from trainers.data.tables import DATASETS, LABEL_SETS, dataset_info

# name: (id, level4, level3, level2, level1, csTrainId), 255 = void / no Cityscapes counterpart
NOTES = {
    "road": (0, 0, 0, 0, 0, 0), "parking": (1, 1, 1, 1, 0, 255), "drivable fallback": (2, 2, 1, 1, 0, 255),
    "sidewalk": (3, 3, 2, 2, 1, 1), "rail track": (4, 3, 3, 3, 1, 255),
    "non-drivable fallback": (5, 4, 3, 3, 1, 9), "person": (6, 5, 4, 4, 2, 11), "animal": (7, 6, 4, 4, 2, 255),
    "rider": (8, 7, 5, 5, 2, 12), "motorcycle": (9, 8, 6, 6, 3, 17), "bicycle": (10, 9, 7, 6, 3, 18),
    "autorickshaw": (11, 10, 8, 7, 3, 255), "car": (12, 11, 9, 7, 3, 13), "truck": (13, 12, 10, 8, 3, 14),
    "bus": (14, 13, 11, 8, 3, 15), "caravan": (15, 14, 12, 8, 3, 255), "trailer": (16, 15, 12, 8, 3, 255),
    "train": (17, 15, 12, 8, 3, 16), "vehicle fallback": (18, 15, 12, 8, 3, 255), "curb": (19, 16, 13, 9, 4, 255),
    "wall": (20, 17, 14, 9, 4, 3), "fence": (21, 18, 15, 10, 4, 4), "guard rail": (22, 19, 16, 10, 4, 255),
    "billboard": (23, 20, 17, 11, 4, 255), "traffic sign": (24, 21, 18, 11, 4, 7),
    "traffic light": (25, 22, 19, 11, 4, 6), "pole": (26, 23, 20, 12, 4, 5), "polegroup": (27, 23, 20, 12, 4, 255),
    "obs-str-bar-fallback": (28, 24, 21, 12, 4, 255), "building": (29, 25, 22, 13, 5, 2),
    "bridge": (30, 26, 23, 13, 5, 255), "tunnel": (31, 26, 23, 13, 5, 255), "vegetation": (32, 27, 24, 14, 5, 8),
    "sky": (33, 28, 25, 15, 6, 10), "fallback background": (34, 29, 25, 15, 6, 255),
    **{name: (i, 255, 255, 255, 255, 255) for i, name in enumerate(
        ("unlabeled", "ego vehicle", "rectification border", "out of roi", "license plate"), start=35)},
}
NO_CITYSCAPES_COUNTERPART = {"parking", "drivable fallback", "rail track", "animal", "autorickshaw", "caravan",
                             "trailer", "vehicle fallback", "curb", "guard rail", "billboard", "polegroup",
                             "obs-str-bar-fallback", "bridge", "tunnel", "fallback background"}
MLFLOW_KEY_PART = re.compile(r"^[\w.\- ]+$")  # what a metric key allows, less "/" (our separator)


def test_cityscapes_table_equals_cityscapesscripts_labels():
    import cityscapesscripts.helpers.labels as cs_labels  # in the test extra: must not skip
    theirs = {label.name: label for label in cs_labels.labels}
    assert [label.name for label in CITYSCAPES_LABELS] == [label.name for label in cs_labels.labels]
    for ours in CITYSCAPES_LABELS:
        t = theirs[ours.name]
        train_id = t.trainId if 0 <= t.trainId < 255 else 255  # upstream: -1 (license plate) and 255 -> ignore
        assert (ours.id, ours.train_id, ours.category, ours.has_instances, ours.color) == (
            t.id, train_id, t.category, t.hasInstances, tuple(t.color)), ours.name
        assert (ours.train_id == 255) == t.ignoreInEval, ours.name
    trained = sorted((t for t in cs_labels.labels if 0 <= t.trainId < 255), key=lambda t: t.trainId)
    assert CITYSCAPES.classes == tuple(t.name for t in trained)
    for t in cs_labels.labels:
        if t.id >= 0:
            assert CITYSCAPES.raw_to_train[t.id] == (t.trainId if 0 <= t.trainId < 255 else 255)


def test_idd_table_equals_the_notes():
    assert {row.name: (row.id, row.level4, row.level3, row.level2, row.level1, row.cs_train_id)
            for row in IDD_LABELS} == NOTES
    assert [row.id for row in IDD_LABELS] == list(range(40))


@pytest.mark.parametrize(("label_set", "n"), [("level1", 7), ("level2", 16), ("level3", 26), ("level4", 30),
                                              ("cs19", 19)])
def test_each_label_set_has_its_class_count_and_a_lut_from_raw_ids(label_set, n):
    table = IDD_TABLES[label_set]
    column = {"level4": 1, "level3": 2, "level2": 3, "level1": 4, "cs19": 5}[label_set]
    assert table.num_classes == n and len(table.colors) == n and len(set(table.classes)) == n
    expected = np.full(256, 255, np.uint8)
    for row in NOTES.values():
        expected[row[0]] = row[column]
    np.testing.assert_array_equal(table.raw_to_train, expected)
    assert set(expected[:40].tolist()) == set(range(n)) | {255}  # every class has at least one raw label
    assert all(MLFLOW_KEY_PART.match(name) for name in table.classes), table.classes


def test_class_names_follow_the_documented_rules():
    assert IDD_TABLES["level3"].classes == LEVEL3_EVALUATOR_NAMES  # the evaluator's 26 names, in its order
    level4 = IDD_TABLES["level4"].classes
    assert level4[3] == "sidewalk" and level4[15] == "vehicle fallback" and level4[23] == "pole"  # merged classes
    assert len(level4) == 30 and "autorickshaw" in level4 and "animal" in level4
    assert IDD_TABLES["level2"].classes[6] == "2-wheeler" and IDD_TABLES["level2"].classes[9] == "curb and wall"
    assert IDD_TABLES["cs19"].classes == CITYSCAPES.classes and IDD_TABLES["cs19"].colors == CITYSCAPES.colors


def test_cs19_covers_every_cityscapes_class_and_the_notes_list_the_others():
    cs = {row.cs_train_id for row in IDD_LABELS} - {255}
    assert cs == set(range(19))
    assert {row.name for row in IDD_LABELS if row.cs_train_id == 255 and row.level3 != 255} == \
        NO_CITYSCAPES_COUNTERPART


def test_level3_merges_cityscapes_classes_with_void_ones_which_is_why_cs19_comes_from_the_polygons():
    merged = {IDD_TABLES["level3"].classes[i]: sorted(r.name for r in rows)
              for i, rows in enumerate(members("level3"))
              if {r.cs_train_id for r in rows} - {255} and 255 in {r.cs_train_id for r in rows}}
    assert merged == {"non-drivable fallback": ["non-drivable fallback", "rail track"],
                      "person": ["animal", "person"],
                      "vehicle fallback": ["caravan", "trailer", "train", "vehicle fallback"],
                      "pole": ["pole", "polegroup"], "sky": ["fallback background", "sky"]}


def test_level4_is_not_a_refinement_of_level3_in_the_table():
    # level4 `sidewalk` holds rail track, which level3 puts with non-drivable fallback (the notes' table, upstream)
    sidewalk = members("level4")[3]
    assert sorted(r.name for r in sidewalk) == ["rail track", "sidewalk"]
    assert {r.level3 for r in sidewalk} == {2, 3}


def test_the_registry_has_one_dataset_info_per_label_set():
    assert set(LABEL_SETS["idd"]) == set(ID_TYPE) and DATASETS["idd"] is LABEL_SETS["idd"]["level3"]
    info = dataset_info("idd", "level4")
    assert info.num_classes == 30 and info.label_set == "level4" and info.layout == "idd"
    assert info.base_size == (720, 1280) and info.eval_size == (360, 640)
    assert dataset_info("cityscapes").base_size is None and dataset_info("cityscapes").eval_size == (512, 1024)
    assert dataset_info("synth_idd", "cs19").labels is IDD_TABLES["cs19"]
