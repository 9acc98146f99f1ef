"""The numbers that need the data or the trials' checkpoints on this machine: each class's pixel share in the
labeled split (carried into an evaluation set's classes through its remap), and (`--small-objects`) recall by
object size from a re-evaluation of each trial's final checkpoint, on the evaluation set's classes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator import results as R
from trainers.data.labels import IGNORE_INDEX

if TYPE_CHECKING:
    from orchestrator.report.tables import Trials
    from trainers.data.labels import LabelTable
    from trainers.data.remap import Remap

log = logging.getLogger(__name__)
SIZE_BINS = (0, 64, 256, 1024)  # object area in pixels at the evaluation size: [0, 64), [64, 256), ...
FOUND = 0.5  # an object counts as found when at least half of its pixels are predicted as its class


def eval_class_share(res: R.SweepResults, train: str, eval_key: str,
                     share: np.ndarray | None) -> dict[str, float] | None:
    """Each evaluation class's share of the labeled split's valid pixels: the training classes' shares (`share`, from
    labeled_pixel_share) carried through the evaluation set's remap; None when `share` is."""
    if share is None:
        return None
    from trainers.data.remap import remap_from_text
    from trainers.data.tables import dataset_info

    params = next(p for p in res.params.values() if R.training_set(p) == train)
    label_set = params.get("dataset.label_set")
    classes = dataset_info(params["dataset.name"], None if label_set in (None, "None") else label_set).labels.classes
    remap = (res.eval_sets_of(params).get(eval_key) or {}).get("remap")
    return carry_share(dict(zip(classes, share.tolist(), strict=True)), remap_from_text(remap) if remap else None)


def carry_share(share: Mapping[str, float], remap: Remap | None) -> dict[str, float]:
    """Per-class pixel shares of the model's label set -> the evaluation set's classes: merged classes add up, a
    class without a counterpart drops out (its pixels are void there). No remap: the same classes."""
    if remap is None:
        return dict(share)
    out = dict.fromkeys(remap.target_classes, 0.0)
    for source, target in zip(remap.source_classes, remap.lut.tolist(), strict=True):
        if target != IGNORE_INDEX:
            out[remap.target_classes[target]] += share.get(source, 0.0)
    return out


def labeled_pixel_share(res: R.SweepResults, train: str) -> np.ndarray | None:
    """Each class's share of the labeled split's valid pixels, averaged over the split seeds the trials used; None
    when the data is not on this machine."""
    trials = [p for p in res.params.values() if R.training_set(p) == train]
    splits = {(p.get("dataset.root"), p.get("dataset.labeled_ratio"), p.get("split_seed")) for p in trials}
    if not splits or any(root in (None, "None") or not Path(root).is_dir() for root, _, _ in splits):
        return None
    from trainers.data.pipeline import labeled_split
    from trainers.data.roots import split_pairs
    from trainers.data.stats import class_pixel_counts
    from trainers.data.tables import DataError, dataset_info  # the pipeline imports torch: only when needed

    label_set = trials[0].get("dataset.label_set")
    shares = []
    for root, ratio, split_seed in sorted(splits, key=str):
        try:
            info = dataset_info(trials[0]["dataset.name"], None if label_set in (None, "None") else label_set)
            split = labeled_split(split_pairs(info, Path(root), "train"), ratio=float(ratio or 1),
                                  split_seed=int(split_seed or 0), root=Path(root))
            pixels = np.asarray(class_pixel_counts(split.labeled, info.labels).pixels, float)
        except (DataError, ValueError) as e:
            log.warning("labeled pixel share of %s unavailable: %s", train, e)
            return None
        shares.append(pixels / max(pixels.sum(), 1))
    return np.mean(shares, axis=0) if shares else None


def small_object_recall(checkpoint: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Re-evaluate a trial's checkpoint on its evaluation sets: per eval key, (objects, found) per SIZE_BINS bin.

    Objects are the thing instances of `*_gtFine_instanceIds.png` (id * 1000 + k), resized to the evaluation size
    the way labels are (nearest); one is found when at least FOUND of its pixels are predicted as its class. The
    prediction is on the evaluation set's classes, through the set's remap exactly as the metrics are
    (evaluate.scored_prediction); objects of a class the remap cannot predict are not counted."""
    import torch

    from trainers.data.pipeline import eval_data
    from trainers.data.remap import eval_remaps
    from trainers.s4gan.evaluate import RemapScorer, scored_prediction
    from trainers.s4gan.predict import load_generator

    device = torch.device("cpu")
    generator, config = load_generator(checkpoint, device)
    remaps = eval_remaps(config)
    out = {}
    for es in config.eval:
        info, loader = eval_data(es, synth_images=config.dataset.synth_images)
        remap = remaps[es.metric_key]
        scorer = None if remap is None else RemapScorer(remap, ignore_index=info.labels.ignore_index, device=device)
        unscored = set() if remap is None else {remap.target_classes.index(c) for c in remap.unscored_classes}
        counts = np.zeros((2, len(SIZE_BINS)), np.int64)  # objects, found
        with torch.inference_mode():
            for pair, (image, label) in zip(loader.dataset.pairs, loader, strict=True):
                instance_file = getattr(pair, "instance", None)  # Cityscapes layout only (IDD has polygons)
                if instance_file is not None and instance_file.is_file():
                    pred = scored_prediction(generator(image), label, scorer)[0][0].numpy()
                    counts += _objects_found(pred, instance_file, info.labels, unscored)
        out[es.metric_key] = (counts[0], counts[1])
    return out


def _objects_found(pred: np.ndarray, instance_file: Path, labels: LabelTable, unscored: set[int]) -> np.ndarray:
    """[2, bins]: the image's thing objects per size bin, and those with at least FOUND of their pixels predicted as
    their class (`pred` in the evaluation set's classes)."""
    from PIL import Image

    with Image.open(instance_file) as im:
        instance = _nearest(np.asarray(im).astype(np.int64), pred.shape)
    ids, inverse = np.unique(instance, return_inverse=True)
    inverse = inverse.reshape(instance.shape)
    cls = labels.raw_to_train[np.minimum(ids // 1000, 255)]
    hit = pred == cls[inverse]
    area = np.bincount(inverse.ravel(), minlength=len(ids))
    correct = np.bincount(inverse.ravel(), weights=hit.ravel(), minlength=len(ids))
    thing = (ids >= 1000) & (cls != labels.ignore_index) & ~np.isin(cls, list(unscored))
    bins = np.searchsorted(SIZE_BINS, area[thing], side="right") - 1
    out = np.zeros((2, len(SIZE_BINS)), np.int64)
    np.add.at(out[0], bins, 1)
    np.add.at(out[1], bins, (correct[thing] >= FOUND * area[thing]).astype(np.int64))
    return out


def _nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize as torch's `nearest` (source index = floor(dst * in / out))."""
    h, w = array.shape
    rows = np.floor(np.arange(size[0]) * (h / size[0])).astype(np.int64)
    cols = np.floor(np.arange(size[1]) * (w / size[1])).astype(np.int64)
    return array[rows][:, cols]


def small_object_table(res: R.SweepResults, t: Trials) -> tuple[Any, ...]:
    """Per (training set, eval set, column): recall per size bin, mean and std over its finished trials."""
    if res.run.run_dir is None:
        log.warning("--small-objects needs the run directory (trial checkpoints) on this machine; skipped")
        return ()
    per: dict[tuple[str, str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    train_of = {n: R.training_set(p) for n, p in res.params.items()}
    for i, name in enumerate(t.names):
        found = sorted((res.run.run_dir / "trials" / name / "checkpoints").glob("checkpoint_*"))
        if t.status[i] != R.FINISHED or not found:
            continue
        for eval_key, counts in small_object_recall(found[-1]).items():
            per.setdefault((train_of.get(name, ""), eval_key, t.label[i]), []).append(counts)
    rows = []
    for (train, eval_key, lab), counts in per.items():
        recall = np.array([f / np.maximum(o, 1) for o, f in counts])
        rows.append((train, eval_key, lab, tuple(recall.mean(0)), tuple(recall.std(0, ddof=1) if len(counts) > 1
                     else np.full(len(SIZE_BINS), np.nan)), tuple(int(x) for x in np.sum([o for o, _ in counts], 0))))
    return tuple(rows)
