"""trainers/metric_names.py: the keys and the one way to read a `val/...` key back."""

import pytest

from trainers import metric_names as M


@pytest.mark.parametrize(("key", "parsed"), [
    (M.val("idd", "miou"), ("idd", "miou", None)),
    (M.val_class("cityscapes", "iou", "traffic light"), ("cityscapes", "iou", "traffic light")),
    (M.val_class("idd", "recall", "autorickshaw"), ("idd", "recall", "autorickshaw")),
    (M.LOSS_SUP, None), (M.STEP_TIME, None), (M.loss_state("gamma", "car"), None),
    (M.VAL_PREFIX + "idd", None), (M.VAL_PREFIX + "idd/", None), (M.VAL_PREFIX + "/miou", None), ("valid/x/miou", None),
])
def test_parse_val_reads_back_what_val_and_val_class_spell(key, parsed):
    assert M.parse_val(key) == parsed


def test_is_val_miou_takes_each_eval_sets_miou_only():
    keys = [M.val("idd", "miou"), M.val("idd", "miou_all"), M.val_class("idd", "iou", "miou"), M.LOSS_SUP]
    assert [k for k in keys if M.is_val_miou(k)] == [M.val("idd", "miou")]
    assert [k for k in keys if M.is_val(k)] == keys[:3]
