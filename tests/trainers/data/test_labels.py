"""The pinned Cityscapes label table: train classes, the raw-id LUT, colours, encode."""

import dataclasses

import numpy as np
import pytest

from trainers.data.labels import CITYSCAPES, CITYSCAPES_LABELS, IGNORE_INDEX, LABEL_BY_ID

TRAIN_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
RAW_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
                27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
COLOURS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
THINGS = {"person", "rider", "car", "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle"}


def test_nineteen_train_classes_in_train_id_order():
    assert CITYSCAPES.classes == TRAIN_CLASSES
    assert CITYSCAPES.num_classes == 19 and CITYSCAPES.ignore_index == IGNORE_INDEX == 255


def test_lut_maps_every_raw_id_to_its_train_id_and_everything_else_to_ignore():
    lut = CITYSCAPES.raw_to_train
    assert lut.dtype == np.uint8 and lut.shape == (256,)
    for raw in range(256):
        assert lut[raw] == RAW_TO_TRAIN.get(raw, 255), raw
    for untrained in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30):
        assert lut[untrained] == 255


def test_full_table_has_34_ids_plus_license_plate():
    ids = [label.id for label in CITYSCAPES_LABELS]
    assert ids == list(range(34)) + [-1]
    assert LABEL_BY_ID[-1].name == "license plate" and LABEL_BY_ID[-1].train_id == 255
    for label in CITYSCAPES_LABELS:
        assert label.train_id == RAW_TO_TRAIN.get(label.id, 255), label.name
        assert label.has_instances == (label.name in THINGS), label.name
    assert {label.category for label in CITYSCAPES_LABELS} == {
        "void", "flat", "construction", "object", "nature", "sky", "human", "vehicle"}


def test_colours_are_the_official_ones():
    assert CITYSCAPES.colors == COLOURS
    assert LABEL_BY_ID[5].color == (111, 74, 0) and LABEL_BY_ID[6].color == (81, 0, 81)  # dynamic, ground


def test_encode_applies_the_lut_to_any_integer_dtype():
    raw = np.array([[7, 26, 0], [33, 255, 9]], np.uint8)
    expected = np.array([[0, 13, 255], [18, 255, 255]], np.uint8)
    np.testing.assert_array_equal(CITYSCAPES.encode(raw), expected)
    np.testing.assert_array_equal(CITYSCAPES.encode(raw.astype(np.int32)), expected)
    assert CITYSCAPES.encode(raw).dtype == np.uint8


def test_encode_rejects_ids_outside_a_byte():
    with pytest.raises(ValueError, match=r"\[0, 255\].*\[-1, 7\]"):
        CITYSCAPES.encode(np.array([-1, 7], np.int32))


def test_table_is_read_only():
    with pytest.raises(ValueError):
        CITYSCAPES.raw_to_train[7] = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        CITYSCAPES.name = "other"  # type: ignore[misc]
