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
from trainers import metric_names as M
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
    from trainers.data import dataset_info
    from trainers.data.remap import remap_from_text

    params = next(p for p in res.params.values() if R.training_set(p) == train)
    label_set = params.get("dataset.label_set")
    classes = dataset_info(params["dataset.name"], None if label_set in (None, "None") else label_set).labels.classes
    remap = (R.eval_sets(params).get(eval_key) or {}).get("remap")
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
    from trainers.data import DataError, dataset_info, split_pairs  # the pipeline imports torch: only when needed
    from trainers.data.pipeline import labeled_split
    from trainers.data.stats import class_pixel_counts

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


def class_share(res: R.SweepResults, train: str, eval_key: str) -> tuple[dict[str, float] | None, str | None]:
    """Each evaluation class's share of the labeled split's valid pixels, from the trials' labeled_counts.json (the
    trial carries its training classes' pixels into each evaluation set's classes itself): per split (root, ratio,
    split seed) the carried pixels over all valid pixels, averaged over the splits the trials used. Also a note
    naming the trials whose split is left out for want of the file (runs before it was logged); None without any."""
    shares: dict[tuple[Any, ...], np.ndarray] = {}
    classes: list[str] = []
    lacking = []
    for trial, p in res.params.items():
        if R.training_set(p) != train:
            continue
        key = _split_of(p)
        counts = res.trial_json.get(trial, {}).get(M.LABELED_COUNTS_FILE)
        carried = (counts or {}).get("eval", {}).get(eval_key)
        if carried is None:
            lacking.append(trial)
        elif key not in shares:
            classes = classes or list(carried)
            shares[key] = np.array([carried.get(c, 0) for c in classes], float) / max(sum(counts["pixels"]), 1)
    missing = [t for t in lacking if _split_of(res.params[t]) not in shares]
    note = (f"labeled pixel share of {train} → {eval_key} leaves out the split of trial(s) {', '.join(missing)}: no "
            f"{M.LABELED_COUNTS_FILE} (logged by trials of s4sweep since 2026-12)") if missing else None
    if not shares:
        return None, note
    return dict(zip(classes, np.mean(list(shares.values()), axis=0).tolist(), strict=True)), note


def _split_of(p: Mapping[str, str]) -> tuple[Any, ...]:
    return (p.get("dataset.root"), p.get("dataset.labeled_ratio"), p.get("split_seed"))


def small_object_table(res: R.SweepResults, t: Trials) -> tuple[tuple[Any, ...], tuple[str, ...]]:
    """Per (training set, eval set, column): recall per size bin, mean and std over its finished trials, and the
    objects counted, from the trials' small_objects_<eval>.json; and one note per finished trial and evaluation set
    without that file (a run from before it was logged), whose recall is left out, not taken as 0."""
    per: dict[tuple[str, str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    train_of = {n: R.training_set(p) for n, p in res.params.items()}
    evals: dict[str, list[str]] = {}
    for trial, key in zip(res.table["trial"].to_pylist(), res.table["eval"].to_pylist(), strict=True):
        if key is not None and key not in evals.setdefault(trial, []):
            evals[trial].append(key)
    notes = []
    for i, name in enumerate(t.names):
        if t.status[i] != R.FINISHED:
            continue
        for eval_key in evals.get(name, []):
            logged = res.trial_json.get(name, {}).get(M.small_objects_file(eval_key))
            if logged is None or tuple(logged.get("size_bins", ())) != SIZE_BINS:
                why = "no" if logged is None else "other size bins in its"
                notes.append(f"trial {name}, {eval_key}: {why} {M.small_objects_file(eval_key)} (a run from before "
                             f"recall by object size was logged, or another version): recall not known")
                continue
            counts = (np.asarray(logged["objects"], np.int64), np.asarray(logged["found"], np.int64))
            per.setdefault((train_of.get(name, ""), eval_key, t.label[i]), []).append(counts)
    rows = []
    for (train, eval_key, lab), counts in per.items():
        recall = np.array([np.where(o > 0, f / np.maximum(o, 1), np.nan) for o, f in counts])  # no objects: unknown
        rows.append((train, eval_key, lab, tuple(recall.mean(0)), tuple(recall.std(0, ddof=1) if len(counts) > 1
                     else np.full(len(SIZE_BINS), np.nan)), tuple(int(x) for x in np.sum([o for o, _ in counts], 0))))
    return tuple(rows), tuple(notes)
