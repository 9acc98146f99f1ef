"""Streaming evaluation metrics for semantic segmentation: one confusion matrix -> every number we report.

`ConfusionMatrix` accumulates counts on the model's device over a whole evaluation set (never per-batch
means, which weight small batches wrongly); `compute()` turns them into an `EvalMetrics`: per-class IoU,
precision and recall, the two mIoU conventions of DESIGN.md ("The seams"), fwIoU, pixel accuracy and a
top-label ECE. Per-image intersection/union rows are kept too, so the report can bootstrap over images,
paired across trials. Conventions (reference/losses.md §4): pixels whose target is `ignore_index` or
outside [0, C) are dropped before counting; a ratio with an empty denominator is 0.0; ECE uses equal-width
bins, (lo, hi] as in Guo et al. 2017.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trainers import metric_names


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float64, 0.0 where den == 0 (so an undefined ratio never turns a mean into NaN)."""
    out = np.zeros(np.shape(num), dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def iou_from_confusion(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(IoU per class, 0.0 where the union is empty; mask of classes with a non-empty union) of [C, C]."""
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square [C, C] matrix, but got shape {confusion.shape}")
    tp = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp  # GT or prediction, over valid pixels only
    return _ratio(tp, union), union > 0


@dataclass(frozen=True, eq=False)
class EvalMetrics:
    """Everything one evaluation set yields; made by `ConfusionMatrix.compute` or `from_json`, not by hand."""

    class_names: tuple[str, ...]
    confusion: np.ndarray  # int64 [C, C], rows = ground truth, cols = prediction
    iou: np.ndarray  # float64 [C], 0.0 where the union is empty
    precision: np.ndarray  # TP / (TP + FP), 0.0 where nothing was predicted as the class
    recall: np.ndarray  # TP / (TP + FN), 0.0 where the class has no GT pixels
    present: np.ndarray  # bool [C]: union (GT or prediction) non-empty
    miou: float  # mean IoU over present classes
    miou_all: float  # mean over all C classes, absent ones as 0 (the reference's and the study's convention)
    fwiou: float  # sum_c (GT pixels of c / valid pixels) * IoU_c
    pixel_acc: float
    ece: float  # NaN when no confidence was given
    per_image_intersection: np.ndarray  # int64 [n_images, C]
    per_image_union: np.ndarray  # int64 [n_images, C]

    @classmethod
    def _from_counts(
        cls,
        class_names: Sequence[str],
        confusion: np.ndarray,
        per_image_intersection: np.ndarray,
        per_image_union: np.ndarray,
        ece: float,
    ) -> EvalMetrics:
        # compute() and from_json() both come through here: a stored result re-derives what was logged.
        confusion = np.asarray(confusion, dtype=np.int64)
        num_classes = confusion.shape[0] if confusion.ndim == 2 else -1
        if len(class_names) != num_classes:
            raise ValueError(
                f"need one class name per row of the {confusion.shape} confusion matrix, "
                f"but got {len(class_names)} names"
            )
        iou, present = iou_from_confusion(confusion)
        tp, gt_pixels = np.diag(confusion), confusion.sum(axis=1)
        valid = confusion.sum()
        inter = np.asarray(per_image_intersection, dtype=np.int64).reshape(-1, num_classes)
        union = np.asarray(per_image_union, dtype=np.int64).reshape(-1, num_classes)
        return cls(
            class_names=tuple(class_names),
            confusion=confusion,
            iou=iou,
            precision=_ratio(tp, confusion.sum(axis=0)),
            recall=_ratio(tp, gt_pixels),
            present=present,
            miou=float(iou[present].mean()) if present.any() else 0.0,
            miou_all=float(iou.mean()),
            fwiou=float((_ratio(gt_pixels, valid) * iou).sum()),
            pixel_acc=float(_ratio(tp.sum(), valid)),
            ece=float(ece),
            per_image_intersection=inter,
            per_image_union=union,
        )

    def __eq__(self, other: object) -> bool:
        # Field-wise, arrays by value, NaN == NaN: `from_json(m.to_json()) == m` states the exact round trip.
        if not isinstance(other, EvalMetrics):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, f.name), getattr(other, f.name), equal_nan=f.name == "ece")
            for f in fields(self)
        )

    def as_metrics(self, eval_key: str) -> dict[str, float]:
        """Flat metrics for evaluation set `eval_key`: every summary, then IoU/recall/precision per class."""
        out = {metric_names.val(eval_key, s): float(getattr(self, s)) for s in metric_names.SUMMARIES}
        for kind in metric_names.PER_CLASS:  # absent classes too (as 0.0): every run logs the same keys
            for name, value in zip(self.class_names, getattr(self, kind), strict=True):
                out[metric_names.val_class(eval_key, kind, name)] = float(value)
        return out

    def to_json(self) -> dict[str, Any]:
        """Strict-JSON dict (NaN ECE -> null): per-class table, summaries, confusion, per-image counts."""
        summary: dict[str, Any] = {s: float(getattr(self, s)) for s in metric_names.SUMMARIES}
        summary["ece"] = None if math.isnan(self.ece) else self.ece
        summary["num_present"] = int(self.present.sum())
        return {
            "class_names": list(self.class_names),
            "per_class": {
                **{kind: getattr(self, kind).tolist() for kind in metric_names.PER_CLASS},
                "present": self.present.tolist(),
                "gt_pixels": self.confusion.sum(axis=1).tolist(),
            },
            "summary": summary,
            "confusion": self.confusion.tolist(),
            "per_image_intersection": self.per_image_intersection.tolist(),
            "per_image_union": self.per_image_union.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EvalMetrics:
        """Inverse of `to_json`: rebuilt from the counts (and ECE), so every derived number is identical."""
        ece = d["summary"]["ece"]
        return cls._from_counts(
            d["class_names"],
            np.array(d["confusion"], dtype=np.int64),
            np.array(d["per_image_intersection"], dtype=np.int64),
            np.array(d["per_image_union"], dtype=np.int64),
            math.nan if ece is None else ece,
        )

    def table(self) -> str:
        """Per-class IoU/precision/recall in % for every class in dataset order, then the summaries."""
        width = max(len("class"), *(len(n) for n in self.class_names))
        lines = [f"{'class':<{width}}  {'IoU':>6}  {'prec':>6}  {'recall':>6}  {'gt px':>12}"]
        for i, name in enumerate(self.class_names):
            note = "" if self.present[i] else "  (absent: no GT, no prediction)"
            lines.append(
                f"{name:<{width}}  {100 * self.iou[i]:6.2f}  {100 * self.precision[i]:6.2f}  "
                f"{100 * self.recall[i]:6.2f}  {self.confusion[i].sum():12d}{note}"
            )
        n, k = len(self.class_names), int(self.present.sum())
        ece = "n/a (no confidence given)" if math.isnan(self.ece) else f"{100 * self.ece:6.2f}"
        lines += [
            f"{'miou':<{width}}  {100 * self.miou:6.2f}  over the {k} of {n} classes present",
            f"{'miou_all':<{width}}  {100 * self.miou_all:6.2f}  over all {n} classes, absent ones as 0",
            f"{'fwiou':<{width}}  {100 * self.fwiou:6.2f}",
            f"{'pixel_acc':<{width}}  {100 * self.pixel_acc:6.2f}",
            f"{'ece':<{width}}  {ece}",
        ]
        return "\n".join(lines)


class ConfusionMatrix:
    """Streaming [C, C] confusion matrix (rows GT, cols prediction), per-image counts, ECE histogram."""

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int = 255,
        ece_bins: int = 15,
        device: torch.device | str = "cpu",
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, but got {num_classes}")
        if ece_bins < 1:
            raise ValueError(f"ece_bins must be >= 1, but got {ece_bins}")
        self.num_classes, self.ignore_index, self.ece_bins = num_classes, ignore_index, ece_bins
        self.device = torch.device(device)
        # Inner bin edges only: bucketize then yields 0..B-1 with bins (lo, hi] and 0.0 in the first bin.
        edges = torch.linspace(0.0, 1.0, ece_bins + 1, dtype=torch.float64, device=self.device)
        self._ece_edges = edges[1:-1]
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated (call before each evaluation pass)."""
        c, b = self.num_classes, self.ece_bins
        self._confusion = torch.zeros(c, c, dtype=torch.int64, device=self.device)
        self._intersection: list[Tensor] = []  # one [n, C] int64 tensor per batch, kept on the device
        self._union: list[Tensor] = []
        # ECE histogram plus one "dump" bin (index B) for ignored pixels, dropped in compute().
        self._ece_count = torch.zeros(b + 1, dtype=torch.int64, device=self.device)
        self._ece_correct = torch.zeros(b + 1, dtype=torch.int64, device=self.device)
        # float64: a float32 sum of ~1e9 probabilities would drift in the 4th digit
        self._ece_conf = torch.zeros(b + 1, dtype=torch.float64, device=self.device)
        # Set by the first update and then required: an ECE over part of a set would mislead.
        self._with_confidence: bool | None = None

    def update(self, pred: Tensor, target: Tensor, confidence: Tensor | None = None) -> None:
        """Add a batch: integer [N, H, W] `pred` (argmax) and `target`; `confidence` = max softmax prob."""
        c, b = self.num_classes, self.ece_bins
        if pred.ndim != 3 or pred.shape != target.shape:
            raise ValueError(
                f"pred and target must both be [N, H, W] of the same shape, but got pred "
                f"{tuple(pred.shape)} and target {tuple(target.shape)}"
            )
        if any(t.is_floating_point() or t.is_complex() or t.dtype == torch.bool for t in (pred, target)):
            raise ValueError(
                f"pred and target must be integer class indices, but got {pred.dtype} and {target.dtype}"
            )
        if confidence is not None and confidence.shape != pred.shape:
            raise ValueError(
                f"confidence must have pred's shape {tuple(pred.shape)}, but got {tuple(confidence.shape)}"
            )
        if self._with_confidence is not None and self._with_confidence != (confidence is not None):
            raise ValueError(
                "confidence must be given in every update() or in none (ECE over part of a set misleads)"
            )
        pred, target = pred.to(self.device).long(), target.to(self.device).long()
        conf = None if confidence is None else confidence.to(self.device, torch.float64)
        if pred.numel():
            # The one host read we cannot avoid: update() must refuse bad input before counting anything. All
            # range checks share it; the syncs inside bincount below then find the GPU already idle.
            checks = [*torch.aminmax(pred)] + ([] if conf is None else [*torch.aminmax(conf)])
            lo, hi, *conf_range = torch.stack([t.double() for t in checks]).tolist()
            if lo < 0 or hi >= c:
                raise ValueError(f"pred values must lie in [0, {c}), but got values in [{lo:.0f}, {hi:.0f}]")
            # 1e-6 slack: exp(log_softmax) can round a sure prediction to 1.0000001 (it lands in the last bin)
            if conf_range and not (0.0 <= conf_range[0] and conf_range[1] <= 1.0 + 1e-6):
                raise ValueError(
                    f"confidence must be a probability in [0, 1], but got values in "
                    f"[{conf_range[0]:.4g}, {conf_range[1]:.4g}] (logits instead of softmax?)"
                )
        self._with_confidence = conf is not None

        n = pred.shape[0]
        valid = (target != self.ignore_index) & (target >= 0) & (target < c)
        # One bincount over (image, gt, pred) gives each image's own C x C matrix: the global matrix is their
        # sum, and per-image TP/union need no Python loop. Invalid pixels go to one extra bin, dropped after:
        # boolean indexing would cost a host sync of its own.
        image = torch.arange(n, device=self.device).view(n, 1, 1)
        key = torch.where(valid, (image * c + target) * c + pred, n * c * c).flatten()
        per_image = torch.bincount(key, minlength=n * c * c + 1)[:-1].view(n, c, c)
        self._confusion += per_image.sum(dim=0)
        tp = per_image.diagonal(dim1=1, dim2=2)
        self._intersection.append(tp)
        self._union.append(per_image.sum(dim=1) + per_image.sum(dim=2) - tp)

        if conf is not None:
            bins = torch.bucketize(conf, self._ece_edges).masked_fill_(~valid, b).flatten()
            hits = torch.where((pred == target).flatten(), bins, b)  # ignored ones are in bin b already
            self._ece_count += torch.bincount(bins, minlength=b + 1)
            self._ece_correct += torch.bincount(hits, minlength=b + 1)
            # scatter_add_, not bincount(weights=): that has no deterministic CUDA kernel and would raise
            # under torch.use_deterministic_algorithms(True).
            self._ece_conf.scatter_add_(0, bins, conf.flatten())

    def compute(self, class_names: Sequence[str]) -> EvalMetrics:
        """Summarise everything since the last reset; `class_names` in dataset order, one per class."""
        confusion = self._confusion.cpu().numpy()
        if confusion.sum() == 0:
            raise ValueError(
                f"no valid pixels were accumulated: every target was ignore_index={self.ignore_index} "
                f"or outside [0, {self.num_classes}), or update() was never called"
            )
        inter = torch.cat(self._intersection).cpu().numpy()  # non-empty: some update() counted pixels
        union = torch.cat(self._union).cpu().numpy()
        ece = math.nan
        if self._with_confidence:
            count = self._ece_count[:-1].cpu().numpy()
            correct = self._ece_correct[:-1].cpu().numpy()
            conf_sum = self._ece_conf[:-1].cpu().numpy()
            # sum_b |B_b|/N * |acc_b - conf_b| with acc_b = correct_b/|B_b|, conf_b = conf_sum_b/|B_b|.
            ece = float(np.abs(correct - conf_sum).sum() / count.sum())
        return EvalMetrics._from_counts(class_names, confusion, inter, union, ece)
