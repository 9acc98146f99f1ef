"""trainers.metrics: hand-worked counts, streaming equivalence, ECE, metric keys, JSON and errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from trainers import metric_names
from trainers.metrics import ConfusionMatrix, EvalMetrics, iou_from_confusion

IGN = 255
NAMES4 = ("road", "car", "train", "traffic light")

# 3x4 image, 4 classes. Class 2 ("train") is in neither GT nor prediction; class 3 ("traffic light") is only
# predicted. Pixel (1, 3) is ignored and predicted 0: it must not count anywhere.
# fmt: off
TARGET = torch.tensor([[[0, 0, 0, 1],
                        [1, 1, 0, IGN],
                        [0, 1, 1, 1]]])
PRED = torch.tensor([[[0, 0, 1, 1],
                      [1, 3, 0, 0],
                      [3, 1, 1, 0]]])
# fmt: on


def hand_metrics() -> EvalMetrics:
    cm = ConfusionMatrix(4, ignore_index=IGN)
    cm.update(PRED, TARGET)
    return cm.compute(NAMES4)


def random_batch(n: int, c: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, (n, 6, 7), generator=g)
    target[torch.rand(n, 6, 7, generator=g) < 0.15] = IGN
    # outside [0, C) but not ignore_index: dropped too, like the reference's `gt >= nclass`
    target[0, 0, :2] = 250
    # a biased guess so that IoUs differ between classes and confidence relates to correctness
    pred = torch.where(
        torch.rand(n, 6, 7, generator=g) < 0.6,
        target.clamp(max=c - 1),
        torch.randint(0, c, (n, 6, 7), generator=g),
    )
    confidence = torch.rand(n, 6, 7, generator=g, dtype=torch.float64) * 0.7 + 0.3
    return pred, target, confidence


def test_hand_worked_confusion_and_per_class_numbers() -> None:
    m = hand_metrics()
    # GT road (5 px) -> pred road 3, car 1, light 1; GT car (6 px) -> road 1, car 4, light 1.
    # The ignored pixel counts nowhere, so 11 pixels in all.
    # fmt: off
    np.testing.assert_array_equal(m.confusion, [[3, 1, 0, 1],
                                                [1, 4, 0, 1],
                                                [0, 0, 0, 0],
                                                [0, 0, 0, 0]])
    # fmt: on
    assert m.confusion.dtype == np.int64 and m.confusion.sum() == 11
    # IoU = TP / (GT + pred - TP): road 3/(5+4-3), car 4/(6+5-4), train 0 (empty union), light 0/(0+2-0)
    np.testing.assert_allclose(m.iou, [3 / 6, 4 / 7, 0.0, 0.0])
    np.testing.assert_allclose(m.precision, [3 / 4, 4 / 5, 0.0, 0.0])  # TP / predicted pixels
    np.testing.assert_allclose(m.recall, [3 / 5, 4 / 6, 0.0, 0.0])  # TP / GT pixels
    np.testing.assert_array_equal(m.present, [True, True, False, True])
    # miou: over the 3 classes with a non-empty union; miou_all: over all 4, absent "train" as 0
    assert m.miou == pytest.approx((1 / 2 + 4 / 7 + 0) / 3)  # = 5/14
    assert m.miou_all == pytest.approx((1 / 2 + 4 / 7 + 0 + 0) / 4)  # = 15/56
    assert m.miou != pytest.approx(m.miou_all)
    # fwIoU = 5/11 * 1/2 + 6/11 * 4/7 + 0 + 0 = 83/154; pixel accuracy = (3 + 4) / 11
    assert m.fwiou == pytest.approx(83 / 154)
    assert m.pixel_acc == pytest.approx(7 / 11)
    assert math.isnan(m.ece)  # no confidence given
    np.testing.assert_array_equal(m.per_image_intersection, [[3, 4, 0, 0]])
    np.testing.assert_array_equal(m.per_image_union, [[6, 7, 0, 2]])


def test_iou_from_confusion_is_the_same_helper() -> None:
    iou, present = iou_from_confusion(hand_metrics().confusion)
    np.testing.assert_allclose(iou, [0.5, 4 / 7, 0.0, 0.0])
    np.testing.assert_array_equal(present, [True, True, False, True])
    with pytest.raises(ValueError, match=r"square.*\(2, 3\)"):
        iou_from_confusion(np.zeros((2, 3), dtype=np.int64))


def test_streaming_in_batches_equals_one_update() -> None:
    c = 5
    pred, target, conf = random_batch(7, c, seed=0)
    whole = ConfusionMatrix(c, ignore_index=IGN)
    whole.update(pred, target, conf)
    parts = ConfusionMatrix(c, ignore_index=IGN)
    for sl in (slice(0, 3), slice(3, 4), slice(4, 7)):
        parts.update(pred[sl], target[sl], conf[sl])
    names = [f"c{i}" for i in range(c)]
    a, b = whole.compute(names), parts.compute(names)
    assert a.ece == pytest.approx(b.ece)
    for field in (
        "confusion",
        "iou",
        "precision",
        "recall",
        "present",
        "per_image_intersection",
        "per_image_union",
    ):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.per_image_intersection.shape == (7, c)
    # The per-image rows add up to the global counts ...
    tp = np.diag(a.confusion)
    np.testing.assert_array_equal(a.per_image_intersection.sum(axis=0), tp)
    np.testing.assert_array_equal(a.per_image_union.sum(axis=0), a.confusion.sum(0) + a.confusion.sum(1) - tp)
    # ... and each row is that image's own evaluation.
    for i in (0, 5):
        single = ConfusionMatrix(c, ignore_index=IGN)
        single.update(pred[i : i + 1], target[i : i + 1])
        s = single.compute(names)
        np.testing.assert_array_equal(a.per_image_intersection[i], np.diag(s.confusion))
        np.testing.assert_array_equal(a.per_image_union[i], s.per_image_union[0])


def test_reset_forgets_everything() -> None:
    cm = ConfusionMatrix(4, ignore_index=IGN)
    cm.update(PRED, TARGET, torch.full(PRED.shape, 0.5))
    cm.reset()
    cm.update(PRED, TARGET)  # confidence may now be left out: the earlier pass is forgotten
    assert cm.compute(NAMES4) == hand_metrics()


def test_ece_all_confident_half_right() -> None:
    target = torch.zeros(1, 2, 4, dtype=torch.long)
    pred = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    cm = ConfusionMatrix(2)
    cm.update(pred, target, torch.full((1, 2, 4), 0.9))
    assert cm.compute(["a", "b"]).ece == pytest.approx(0.4)  # one bin: |accuracy 0.5 - confidence 0.9|


def test_ece_two_bins_ignores_ignored_pixels() -> None:
    target = torch.tensor([[[0, 0, 0, 0, IGN]]])
    pred = torch.tensor([[[0, 0, 0, 1, 1]]])
    conf = torch.tensor([[[0.95, 0.95, 0.3, 0.3, 0.01]]])
    cm = ConfusionMatrix(2, ignore_index=IGN)
    cm.update(pred, target, conf)
    # bin (14/15, 1]: 2 px, acc 1, conf 0.95; bin (4/15, 5/15]: 2 px, acc 0.5, conf 0.3; ignored px: nowhere
    assert cm.compute(["a", "b"]).ece == pytest.approx(2 / 4 * 0.05 + 2 / 4 * 0.2)


def test_ece_bins_are_closed_on_the_right() -> None:
    # 2 bins: 0.5 belongs to [0, 0.5] with 0.2, giving |1/2 - 0.35| = 0.15 (with [0.5, 1] it would be 0.35).
    cm = ConfusionMatrix(2, ece_bins=2)
    cm.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 0]]]), torch.tensor([[[0.5, 0.2]]]))
    assert cm.compute(["a", "b"]).ece == pytest.approx(0.15)


def test_as_metrics_has_every_summary_and_every_class() -> None:
    m = hand_metrics()
    got = m.as_metrics("cityscapes")
    summaries = [metric_names.val("cityscapes", s) for s in metric_names.SUMMARIES]
    per_class = [
        metric_names.val_class("cityscapes", kind, name) for kind in metric_names.PER_CLASS for name in NAMES4
    ]
    assert list(got) == summaries + per_class  # absent classes too, in dataset order
    assert got[metric_names.val("cityscapes", "miou_all")] == m.miou_all
    assert got[metric_names.val_class("cityscapes", "iou", "car")] == pytest.approx(4 / 7)
    assert got[metric_names.val_class("cityscapes", "recall", "train")] == 0.0
    assert got[metric_names.val_class("cityscapes", "precision", "traffic light")] == 0.0
    assert all(isinstance(v, float) for v in got.values())


@pytest.mark.parametrize("with_confidence", [False, True])
def test_json_round_trip_is_exact(with_confidence: bool) -> None:
    c = 4
    pred, target, conf = random_batch(3, c, seed=1)
    cm = ConfusionMatrix(c, ignore_index=IGN)
    cm.update(pred, target, conf if with_confidence else None)
    m = cm.compute(NAMES4)
    d = json.loads(json.dumps(m.to_json(), allow_nan=False))  # strict JSON: NaN ECE is written as null
    back = EvalMetrics.from_json(d)
    assert back == m
    assert back.per_image_union.dtype == np.int64 and back.class_names == NAMES4
    assert d["per_class"]["gt_pixels"] == m.confusion.sum(axis=1).tolist()
    assert d["summary"]["miou"] == m.miou and d["summary"]["num_present"] == int(m.present.sum())
    assert back != hand_metrics()  # the equality used above can fail


def test_table_lists_every_class_and_the_summaries() -> None:
    text = hand_metrics().table()
    lines = text.splitlines()
    for name in NAMES4:
        assert any(line.startswith(name) for line in lines), name
    train_line = next(line for line in lines if line.startswith("train"))
    assert "0.00" in train_line and "absent" in train_line
    car_line = next(line for line in lines if line.startswith("car "))
    assert f"{100 * 4 / 7:.2f}" in car_line
    for summary in metric_names.SUMMARIES:
        assert any(line.split()[0] == summary for line in lines), summary
    assert "3 of 4 classes" in text


def test_bad_shapes_are_refused_with_the_shapes() -> None:
    cm = ConfusionMatrix(4)
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(1, 3, 4\)"):
        cm.update(PRED[0], TARGET)
    with pytest.raises(ValueError, match=r"\(1, 3, 4\).*\(1, 4, 3\)"):
        cm.update(PRED, TARGET.transpose(1, 2))
    with pytest.raises(ValueError, match=r"confidence.*\(1, 3, 3\)"):
        cm.update(PRED, TARGET, torch.rand(1, 3, 3))
    with pytest.raises(ValueError, match="integer"):
        cm.update(PRED.float(), TARGET)


@pytest.mark.parametrize("bad", [4, -1])
def test_out_of_range_prediction_is_refused_and_nothing_counted(bad: int) -> None:
    cm = ConfusionMatrix(4, ignore_index=IGN)
    cm.update(PRED, TARGET)
    wrong = PRED.clone()
    wrong[0, 1, 3] = bad  # even on an ignored pixel: a prediction outside [0, C) is a bug upstream
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        cm.update(wrong, TARGET)
    assert cm.compute(NAMES4) == hand_metrics()


def test_other_refusals() -> None:
    cm = ConfusionMatrix(4, ignore_index=IGN)
    with pytest.raises(ValueError, match="no valid pixels"):
        cm.compute(NAMES4)
    with pytest.raises(ValueError, match=r"\[0, 1\].*logits"):
        cm.update(PRED, TARGET, torch.full(PRED.shape, 3.0))
    cm.update(PRED, TARGET)
    with pytest.raises(ValueError, match="every update"):
        cm.update(PRED, TARGET, torch.full(PRED.shape, 0.5))
    with pytest.raises(ValueError, match="3 names"):
        cm.compute(NAMES4[:3])
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_under_deterministic_algorithms() -> None:
    c = 5
    pred, target, conf = random_batch(4, c, seed=2)
    names = [f"c{i}" for i in range(c)]
    cpu = ConfusionMatrix(c, ignore_index=IGN)
    cpu.update(pred, target, conf)
    gpu = ConfusionMatrix(c, ignore_index=IGN, device="cuda")
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        gpu.update(pred.cuda(), target.cuda(), conf.cuda())
    finally:
        torch.use_deterministic_algorithms(was)
    a, b = cpu.compute(names), gpu.compute(names)
    assert a.ece == pytest.approx(b.ece)
    np.testing.assert_array_equal(a.confusion, b.confusion)
    np.testing.assert_array_equal(a.per_image_union, b.per_image_union)
