"""Every metric key s4sweep logs, spelled in this one place (DESIGN.md "The seams").

Training: `train/<term>`, `time/step_s`. Per evaluation set E: `val/E/<summary>` and `val/E/<kind>/<class>`.
Adaptive losses: `loss/weight/<class>`, `loss/gamma/<class>`. Class names keep their spaces (`traffic light`),
which MLflow accepts in metric keys.
"""

from __future__ import annotations

from typing import Literal

LOSS_SUP = "train/loss_sup"
LOSS_FM = "train/loss_fm"
LOSS_ST = "train/loss_st"
LOSS_D = "train/loss_d"
ST_ACCEPT_RATE = "train/st_accept_rate"
LR = "train/lr"
STEP_TIME = "time/step_s"
TRIAL_TIME = "time/trial_s"  # wall time of the whole trial, logged once at its end
TRACKING_TIME = "time/tracking_s"  # of which spent in tracking calls (MLflow), logged by the orchestrator
CHECKPOINT_TIME = "time/checkpoint_s"  # of which spent persisting checkpoints to the run's storage (this attempt)
CHECKPOINT_MIB = "checkpoint/mib"  # MiB of checkpoints persisted to the run's storage (this attempt)
ITERATION = "iteration"

TRAIN_KEYS = (LOSS_SUP, LOSS_FM, LOSS_ST, LOSS_D, ST_ACCEPT_RATE, LR, STEP_TIME)

Summary = Literal["miou", "miou_all", "pixel_acc", "fwiou", "ece"]
PerClass = Literal["iou", "recall", "precision"]
SUMMARIES: tuple[Summary, ...] = ("miou", "miou_all", "pixel_acc", "fwiou", "ece")
PER_CLASS: tuple[PerClass, ...] = ("iou", "recall", "precision")


def val(eval_set: str, summary: Summary) -> str:
    """`val/<eval set>/<summary>`, e.g. `val/cityscapes/miou`."""
    return f"val/{eval_set}/{summary}"


def val_class(eval_set: str, kind: PerClass, class_name: str) -> str:
    """`val/<eval set>/<iou|recall|precision>/<class>`, e.g. `val/idd/iou/autorickshaw`."""
    return f"val/{eval_set}/{kind}/{class_name}"


def loss_state(kind: Literal["weight", "gamma"], class_name: str) -> str:
    """`loss/weight/<class>` or `loss/gamma/<class>`: the state of an adaptive loss."""
    return f"loss/{kind}/{class_name}"


VAL_PREFIX = "val/"


def is_val(key: str) -> bool:
    """Whether `key` is an evaluation metric (`val/...`): what a search or scheduler may optimise."""
    return key.startswith(VAL_PREFIX)


def parse_val(key: str) -> tuple[str, str, str | None] | None:
    """(eval set, summary or per-class kind, class or None) of a `val/...` key; None for any other key.

    `val/idd/miou` -> ("idd", "miou", None); `val/idd/iou/traffic light` -> ("idd", "iou", "traffic light").
    The metric name is not checked against SUMMARIES and PER_CLASS: a sweep file may name a key logged by a newer
    version, and what exists is the tracking store's business.
    """
    parts = key.split("/", 3)
    if len(parts) < 3 or parts[0] + "/" != VAL_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2], parts[3] if len(parts) == 4 else None


def is_val_miou(key: str) -> bool:
    """Whether `key` is some evaluation set's `miou` (`val/<eval set>/miou`)."""
    parsed = parse_val(key)
    return parsed is not None and parsed[1:] == ("miou", None)


# Small JSON artifacts of each trial that the report reads (orchestrator/results.py downloads them).
LABELED_COUNTS_FILE = "labeled_counts.json"  # the labeled split's pixels per class (trainers/data/stats.py)


def small_objects_file(eval_set: str) -> str:
    """`small_objects_<eval set>.json`: recall by object size of the final evaluation (trainers/small_objects.py)."""
    return f"small_objects_{eval_set}.json"
