"""Evaluation of a generator on one evaluation set, and the pictures a person looks at afterwards."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from trainers.data.remap import Remap
from trainers.data.tables import DatasetInfo
from trainers.fileio import atomic_write
from trainers.metrics import ConfusionMatrix, EvalMetrics
from trainers.s4gan.steps import upsample
from trainers.small_objects import ObjectRecall


class RemapScorer:
    """Scores a model's softmax on another label set through a Remap (rules in trainers/data/remap.py).

    Target probabilities are the sums of their source classes' probabilities, renormalised over the mapped mass;
    the prediction is their argmax and the confidence their max, so no prediction maps to ignore. Ground-truth
    pixels of target classes no source reaches become ignore. Counts the scored pixels whose first choice among
    the source classes was an ignored one.
    """

    def __init__(self, remap: Remap, *, ignore_index: int, device: torch.device) -> None:
        self.remap, self.ignore_index = remap, ignore_index
        lut = torch.as_tensor(remap.lut.astype(np.int64), device=device)
        self.mapped = lut != ignore_index  # [S] source classes that reach a target class
        self.source_to_target = lut[self.mapped]  # target class of each mapped source class
        self.num_targets = len(remap.target_classes)
        unscored = torch.ones(self.num_targets, dtype=torch.bool, device=device)
        unscored[self.source_to_target] = False
        self.unscored = torch.nonzero(unscored).flatten()
        # summed on the device, read once by describe(): no host sync per image
        self.scored_pixels = torch.zeros((), dtype=torch.int64, device=device)
        self.argmax_ignored_pixels = torch.zeros((), dtype=torch.int64, device=device)

    def __call__(self, probs: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(prediction, confidence, label) on the target set from source probabilities [N, S, H, W]."""
        n, _, h, w = probs.shape
        target = probs.new_zeros(n, self.num_targets, h, w)
        target.index_add_(1, self.source_to_target, probs[:, self.mapped])
        target = target / target.sum(1, keepdim=True).clamp_min(torch.finfo(target.dtype).tiny)
        confidence, pred = target.max(1)
        if len(self.unscored):
            label = torch.where(torch.isin(label, self.unscored), self.ignore_index, label)
        scored = (label != self.ignore_index) & (label >= 0) & (label < self.num_targets)
        self.scored_pixels += scored.sum()
        self.argmax_ignored_pixels += (scored & ~self.mapped[probs.argmax(1)]).sum()
        return pred, confidence, label

    def describe(self) -> dict[str, Any]:
        return {**self.remap.describe(), "scored_pixels": int(self.scored_pixels),
                "argmax_ignored_pixels": int(self.argmax_ignored_pixels)}


def scored_prediction(logits: torch.Tensor, label: torch.Tensor,
                      remap: RemapScorer | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prediction, confidence, label) on the evaluation set's classes: the softmax of the logits upsampled to the
    label's size, through `remap` when the model predicts another label set. Everything that scores a model (the
    metrics, the recall by object size) goes through here, so all of them see the same classes."""
    probs = torch.softmax(upsample(logits.float(), label.shape[-2:]), dim=1)
    if remap is not None:
        return remap(probs, label)
    confidence, pred = probs.max(1)
    return pred, confidence, label


@torch.inference_mode()
def evaluate(generator: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], info: DatasetInfo, *,
             device: torch.device, autocast: contextlib.AbstractContextManager | None = None,
             channels_last: bool = False, keep: int = 0,
             remap: RemapScorer | None = None,
             objects: ObjectRecall | None = None) -> tuple[EvalMetrics, list[dict[str, np.ndarray]]]:
    """Single-scale evaluation (batch 1, no flip) as the reference; returns the metrics and the first `keep` samples.

    `remap` scores a model trained on another label set on `info`'s (it also counts what it did, see RemapScorer);
    `objects` counts the objects found per size bin (the final evaluation: one host copy per image with objects).
    """
    was_training = generator.training
    generator.eval()  # BN uses its running statistics, as the reference's evaluate.py
    matrix = ConfusionMatrix(info.num_classes, ignore_index=info.labels.ignore_index, device=device)
    samples: list[dict[str, np.ndarray]] = []
    try:
        for index, (image, label) in enumerate(batches):
            image, label = image.to(device), label.to(device)
            if channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            with autocast or contextlib.nullcontext():
                logits = generator(image)
            pred, confidence, label = scored_prediction(logits, label, remap)
            matrix.update(pred, label, confidence)
            if objects is not None and objects.wants(index):
                objects.update(index, pred[0].cpu().numpy())
            if len(samples) < keep:
                samples.append({"image": image[0].float().cpu().numpy(), "label": label[0].cpu().numpy(),
                                "pred": pred[0].cpu().numpy()})
    finally:
        generator.train(was_training)
    return matrix.compute(info.labels.classes), samples


def _colorise(labels: np.ndarray, info: DatasetInfo) -> np.ndarray:
    palette = np.zeros((256, 3), np.uint8)  # ignore and anything unknown stays black
    palette[: info.num_classes] = np.asarray(info.labels.colors, np.uint8)
    return palette[labels.astype(np.int64).clip(0, 255)]


def _denormalise(image: np.ndarray, info: DatasetInfo) -> np.ndarray:
    mean, std = np.asarray(info.mean).reshape(3, 1, 1), np.asarray(info.std).reshape(3, 1, 1)
    return ((image * std + mean).clip(0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def save_samples(samples: list[dict[str, np.ndarray]], info: DatasetInfo, path: Path) -> Path | None:
    """A grid: one row per fixed validation image, columns input | ground truth | prediction."""
    if not samples:
        return None
    rows = [np.concatenate([_denormalise(s["image"], info), _colorise(s["label"], info), _colorise(s["pred"], info)],
                           axis=1) for s in samples]
    return _atomic(path, lambda tmp: Image.fromarray(np.concatenate(rows, axis=0)).save(tmp, format="PNG"))


def save_confusion(metrics: EvalMetrics, path: Path) -> Path:
    """Row-normalised confusion matrix heatmap (rows: ground truth), classes in dataset order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = metrics.confusion.astype(np.float64)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(metrics.class_names)
    fig, ax = plt.subplots(figsize=(0.4 * n + 2, 0.4 * n + 1.5))
    ax.imshow(cm, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(n), metrics.class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), metrics.class_names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    fig.tight_layout()
    out = _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return out


def save_json(data: Any, path: Path) -> Path:
    return _atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, sort_keys=True)))


def _atomic(path: Path, write: Any) -> Path:
    """`atomic_write` into a folder made if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, write)
