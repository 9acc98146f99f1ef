"""`s4sweep report`: a sweep run's results -> per-class IoU tables with honest statistics, pictures and cost.

One table per (training set, evaluation set): rows = the classes in dataset order, then `miou`, `miou_all`, `fwiou`,
`pixel_acc`; columns = an axis of the sweep (the loss variant by default: the trial name less its seed suffix);
cells = mean ± std over seeds, in %; the highest mean of a row in bold; beside each column a Δ against the baseline
column (the sweep file's `report.baseline`, `{loss: ce}` by default). A Δ carries ↑ or ↓ only when it *holds*: when
the 95% interval of a paired bootstrap excludes 0. Each replicate resamples the seeds (pairs of a column's trial and
the baseline's trial with the same seed) and the validation images, and recomputes IoU from the per-image
intersection/union counts of both trials on the same drawn images (paired); so a difference smaller than the
image-to-image and seed-to-seed noise is never marked as a win. Seeded and vectorised (one matrix product per
column).

Also: each class's pixel share in the labeled split (rare classes stand out), grouped bar charts, a qualitative grid
composed from the trials' `samples_<eval>.png`, their confusion heatmaps, cost per column, and (`--small-objects`)
recall by object size from a re-evaluation of each trial's final checkpoint. Files: report.md, report.csv,
report.html (self-contained), PNGs and results.parquet in one folder, logged on the parent run under `report/`.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator import results as R

log = logging.getLogger(__name__)
SUMMARY_ROWS = ("miou", "miou_all", "fwiou", "pixel_acc")
BOOTSTRAP_ROWS = ("miou", "miou_all")  # summaries the per-image counts determine (fwIoU, pixel acc need GT totals)
FORMATS = ("md", "csv", "html", "png")
MIN_IMAGES = 5  # a bootstrap over fewer validation images says nothing: such a Δ is left unmarked
SIZE_BINS = (0, 64, 256, 1024)  # object area in pixels at the evaluation size: [0, 64), [64, 256), ...
MAX_BARS = 12  # columns a grouped bar chart can show; more get a heatmap
FOUND = 0.5  # an object counts as found when at least half of its pixels are predicted as its class


@dataclass(frozen=True, kw_only=True)
class Options:
    axis: str = "variant"  # `variant` (alias `loss`) or any varied parameter column of the results table
    baseline: Mapping[str, Any] = field(default_factory=lambda: {"loss": "ce"})
    replicates: int = 1000
    seed: int = 0
    confidence: float = 0.95
    small_objects: bool = False


@dataclass(frozen=True, kw_only=True)
class ClassTable:
    train: str
    eval: str
    axis: str
    columns: tuple[str, ...]  # the baseline first
    trials: tuple[int, ...]  # finished trials per column
    baseline: str | None
    rows: tuple[str, ...]  # classes in dataset order, then SUMMARY_ROWS
    mean: np.ndarray  # [rows, columns], fractions
    std: np.ndarray  # sample std over trials; NaN for a single trial
    delta: np.ndarray  # [rows, columns]: column mean - baseline mean; NaN in the baseline column
    low: np.ndarray  # bootstrap interval of the delta; NaN where not tested
    high: np.ndarray
    holds: np.ndarray  # int8 [rows, columns]: 1 holds, 0 does not, -1 not tested
    share: np.ndarray | None  # [classes]: pixel share in the labeled split
    examples: tuple[str, ...] = ()  # per column, its trial with the lowest seed (pictures are taken from it)
    notes: tuple[str, ...] = ()

    def best(self) -> np.ndarray:
        """bool [rows, columns]: the row's highest mean (all of them on a tie), none where every column is equal."""
        top, bottom = np.nanmax(self.mean, axis=1, keepdims=True), np.nanmin(self.mean, axis=1, keepdims=True)
        return (self.mean == top) & (top > bottom)


@dataclass(frozen=True, kw_only=True)
class Report:
    run: R.SweepRun
    partial: str | None  # why the report covers only part of the run; None when complete
    finished: int
    total: int
    tables: tuple[ClassTable, ...]
    cost: tuple[tuple[str, int, float, float, float], ...]  # column, trials, mean wall s, CPU-h, GPU-h
    small_objects: tuple[tuple[str, str, str, tuple[float, ...], tuple[float, ...], tuple[int, ...]], ...] = ()


# --- tables ------------------------------------------------------------------------------------------------------


def build(res: R.SweepResults, options: Options = Options()) -> Report:
    t = Trials.of(res.table, options.axis)
    finished = t.status == R.FINISHED
    tables = []
    for train, eval_key in _pairs(res.table, finished):
        share = labeled_pixel_share(res, train) if res.params else None
        tables.append(class_table(res, t, train, eval_key, options, share))
    not_done = sorted(f"{n} ({s})" for n, s in zip(t.names, t.status, strict=True) if s != R.FINISHED)
    total = max(res.expected_trials or 0, len(t.names))
    partial = None
    if res.run.status != "finished" or not_done or int(finished.sum()) < total:
        partial = (f"PARTIAL: run {res.run.run_id} is {res.run.status}; {int(finished.sum())} of {total} trials "
                   f"finished and are reported" + (f"; not finished: {', '.join(not_done)}" if not_done else ""))
    small = small_object_table(res, t) if options.small_objects else ()
    return Report(run=res.run, partial=partial, finished=int(finished.sum()), total=total, tables=tuple(tables),
                  cost=cost_rows(t), small_objects=small)


@dataclass(frozen=True)
class Trials:
    """One entry per trial (first-seen order) with the column label it falls in under the chosen axis."""

    names: np.ndarray
    label: np.ndarray
    status: np.ndarray
    seed: np.ndarray
    split_seed: np.ndarray
    wall_s: np.ndarray
    cpu: np.ndarray
    gpu: np.ndarray
    index: dict[str, int]
    rows: pa.Array  # each trial's first row in the table

    @classmethod
    def of(cls, table: pa.Table, axis: str) -> Trials:
        column = "variant" if axis in ("variant", "loss") else axis
        valid = ["variant", *table.column_names[len(R.FIXED_COLUMNS):], "seed", "split_seed", "precision"]
        if column not in valid:
            raise ValueError(f"--columns must be one of {', '.join(valid)}, but got {axis!r}")
        _, first = np.unique(table["trial"].to_numpy(zero_copy_only=False), return_index=True)
        rows = pa.array(np.sort(first))
        pick = {c: table[c].take(rows).to_pylist() for c in
                ("trial", column, "status", "seed", "split_seed", "wall_s", "cpu", "gpu")}
        return cls(names=np.array(pick["trial"], object), label=np.array([_label(v) for v in pick[column]], object),
                   status=np.array(pick["status"], object), seed=np.array(pick["seed"], object),
                   split_seed=np.array(pick["split_seed"], object),
                   wall_s=np.array([np.nan if v is None else v for v in pick["wall_s"]], float),
                   cpu=np.array(pick["cpu"], float), gpu=np.array(pick["gpu"], float),
                   index={n: i for i, n in enumerate(pick["trial"])}, rows=rows)

    def column(self, table: pa.Table, key: str) -> list[Any]:
        """Each trial's value of a table column (a varied param), None where the table has no such column."""
        return table[key].take(self.rows).to_pylist() if key in table.column_names else [None] * len(self.names)


def class_table(res: R.SweepResults, t: Trials, train: str, eval_key: str, options: Options,
                share: np.ndarray | None = None) -> ClassTable:
    table = res.table
    keep = pc.and_(pc.and_(pc.equal(table["dataset"], train), pc.equal(table["eval"], eval_key)),
                   pc.equal(table["status"], R.FINISHED))
    rows_t = table.filter(pc.and_(keep, pc.is_in(table["metric"], pa.array(["iou", *SUMMARY_ROWS]))))
    classes = R.classes_in_order(rows_t, eval_key)
    row_names = (*classes, *SUMMARY_ROWS)
    row_index = {r: i for i, r in enumerate(row_names)}
    metric = rows_t["metric"].to_numpy(zero_copy_only=False)
    cls = rows_t["class"].to_numpy(zero_copy_only=False)
    key = np.where(metric == "iou", cls, metric)
    trial_i = np.fromiter((t.index[n] for n in rows_t["trial"].to_numpy(zero_copy_only=False)), int, len(rows_t))
    values = np.full((len(t.names), len(row_names)), np.nan)
    values[trial_i, [row_index[k] for k in key]] = rows_t["value"].to_numpy()
    present = np.unique(trial_i)
    labels = list(dict.fromkeys(t.label[present]))
    baseline, notes = pick_baseline(t, table, labels, options.baseline, present)
    if baseline is not None:
        labels.remove(baseline)
        labels.insert(0, baseline)
    members = [present[t.label[present] == lab] for lab in labels]
    mean = np.stack([np.nanmean(values[m], axis=0) for m in members], axis=1)
    std = np.stack([np.nanstd(values[m], axis=0, ddof=1) if len(m) > 1 else np.full(len(row_names), np.nan)
                    for m in members], axis=1)
    shape = mean.shape
    delta, low, high = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    holds = np.full(shape, -1, np.int8)
    if baseline is not None:
        delta[:, 1:] = mean[:, 1:] - mean[:, :1]
        tested = [*range(len(classes)), *(row_index[r] for r in BOOTSTRAP_ROWS)]
        for k, boot in _test_columns(res, t, members, eval_key, len(classes), options, labels, notes).items():
            low[tested, k], high[tested, k], holds[tested, k] = boot.low, boot.high, boot.holds
    examples = tuple(str(t.names[min(m, key=lambda i: (_sortable(t.seed[i]), _sortable(t.split_seed[i])))])
                     for m in members)
    return ClassTable(train=train, eval=eval_key, axis=options.axis, columns=tuple(labels),
                      trials=tuple(len(m) for m in members), baseline=baseline, rows=row_names, mean=mean, std=std,
                      delta=delta, low=low, high=high, holds=holds, share=share, examples=examples,
                      notes=tuple(notes))


def _test_columns(res: R.SweepResults, t: Trials, members: list[np.ndarray], eval_key: str, classes: int,
                  options: Options, labels: list[str], notes: list[str]) -> dict[int, Bootstrap]:
    """The paired bootstrap of every column k >= 1 against column 0 (the baseline); untestable ones get a note."""
    per_image = {int(i): res.per_image.get((t.names[i], eval_key)) for m in members for i in m}
    units = {k: _units(res, t, members[k], members[0], eval_key, classes) for k in range(1, len(members))}
    images = {per_image[i][0].shape[0] for u in units.values() for i, _ in u}
    draws = ImageDraws(images.pop(), options.replicates, np.random.default_rng(options.seed)) \
        if len(images) == 1 else None
    baseline_scores: dict[int, np.ndarray] = {}
    out = {}
    for k in range(1, len(members)):
        if not units[k] or draws is None:
            why = "no seed shared with the baseline, or no per-image counts" if not units[k] else \
                "the trials' per-image counts cover different numbers of images"
            notes.append(f"{labels[k]}: no Δ tested ({why})")
            continue
        if draws.images < MIN_IMAGES:
            notes.append(f"{labels[k]}: no Δ tested ({draws.images} validation images; the bootstrap needs at "
                         f"least {MIN_IMAGES})")
            continue
        fresh = sorted({j for _, j in units[k]} - set(baseline_scores))  # baseline trials are scored once
        if fresh:
            baseline_scores |= dict(zip(fresh, draws.scores_of([per_image[j] for j in fresh]), strict=True))
        column_scores = draws.scores_of([per_image[i] for i, _ in units[k]])
        scored = [(column_scores[u], baseline_scores[j],
                   _scores(_totals(per_image[i]))[0] - _scores(_totals(per_image[j]))[0])
                  for u, (i, j) in enumerate(units[k])]
        out[k] = seed_bootstrap(scored, rng=np.random.default_rng([options.seed, k]), confidence=options.confidence)
    return out


def pick_baseline(t: Trials, table: pa.Table, labels: list[str], wanted: Mapping[str, Any],
                  present: np.ndarray) -> tuple[str | None, list[str]]:
    """The column whose trials all match `wanted` ({loss: ce} = param loss.name is ce); None with a note if none."""
    if not wanted:
        return None, []
    conditions = {("loss.name" if k == "loss" else k): v for k, v in wanted.items()}
    values = {k: t.column(table, k) for k in conditions}
    missing = [k for k in conditions if k not in table.column_names]
    matches = [lab for lab in labels if all(
        _same(values[k][i], v) for k, v in conditions.items() for i in present[t.label[present] == lab])]
    if missing or not matches:
        why = f" ({', '.join(missing)} does not vary in this run)" if missing else ""
        return None, [f"baseline {dict(wanted)} matches no column{why}: no Δ columns"]
    exact = [lab for lab in matches if len(wanted) == 1 and lab == str(next(iter(wanted.values())))]
    return (exact or matches)[0], []


@dataclass(frozen=True)
class Bootstrap:
    delta: np.ndarray  # [classes + 2]: point estimate (mean over units) per class, then miou, miou_all
    low: np.ndarray
    high: np.ndarray
    holds: np.ndarray  # bool


def paired_bootstrap(units: Sequence[tuple[R.PerImage, R.PerImage]], *, replicates: int = 1000,
                     rng: np.random.Generator, confidence: float = 0.95) -> Bootstrap:
    """Column A minus baseline B, per class and for miou / miou_all, from per-image intersection/union counts.

    `units` pairs A's and B's counts [images, classes] of the same seed, on the same images. Each replicate draws
    the seeds with replacement and the images with replacement; A and B are scored on the same image draw (paired),
    IoU = sum(intersection) / sum(union) over the drawn images. Returns the percentile interval."""
    draws = ImageDraws(units[0][0][0].shape[0], replicates, rng)
    return seed_bootstrap([(draws.scores(a), draws.scores(b), (_scores(_totals(a)) - _scores(_totals(b)))[0])
                           for a, b in units], rng=rng, confidence=confidence)


class ImageDraws:
    """The image resamples of one evaluation set: replicate r weights image i by `weights[r, i]` (multinomial
    counts). One draw serves every trial and seed on that set, on purpose: all seeds are scored on the same
    validation images, so the error from which images were picked is common to them, not independent."""

    def __init__(self, images: int, replicates: int, rng: np.random.Generator) -> None:
        self.images = images
        self.weights = rng.multinomial(images, np.full(images, 1.0 / images), size=replicates).astype(np.float64)

    def scores(self, counts: R.PerImage) -> np.ndarray:
        """[R, C + 2]: per-class IoU, miou, miou_all of each replicate."""
        return self.scores_of([counts])[0]

    def scores_of(self, many: Sequence[R.PerImage]) -> np.ndarray:
        """[trials, R, C + 2] for several trials at once: one matrix product for all of them."""
        c = many[0][0].shape[1]
        counts = np.concatenate([np.concatenate(x, axis=1) for x in many], axis=1).astype(np.float64)
        sums = (self.weights @ counts).reshape(-1, len(many), 2 * c)  # [R, trials, 2C]
        return _scores(sums.transpose(1, 0, 2))


def seed_bootstrap(units: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *, rng: np.random.Generator,
                   confidence: float) -> Bootstrap:
    """`units`: (A's replicate scores, B's replicate scores, A - B on all images) per seed; replicate r averages the
    A - B of a with-replacement draw of the seeds."""
    d = np.stack([a - b for a, b, _ in units])  # [units, R, C + 2]
    replicates = d.shape[1]
    picks = rng.integers(0, len(units), size=(replicates, len(units)))
    resampled = d[picks, np.arange(replicates)[:, None]].mean(axis=1)  # [R, C + 2]
    alpha = 1.0 - confidence
    low, high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2], axis=0)
    return Bootstrap(np.mean([point for _, _, point in units], axis=0), low, high, (low > 0) | (high < 0))


def _totals(counts: R.PerImage) -> np.ndarray:
    return np.concatenate(counts, axis=1).sum(axis=0, keepdims=True).astype(np.float64)


def _scores(sums: np.ndarray) -> np.ndarray:
    """[..., 2C] summed (intersection, union) -> [..., C + 2]: IoU per class (0 where the union is empty), miou
    over the classes with a non-empty union, miou_all over all classes."""
    c = sums.shape[-1] // 2
    inter, union = sums[..., :c], sums[..., c:]
    present = union > 0
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=present)
    miou = iou.sum(-1) / np.maximum(present.sum(-1), 1)  # absent classes have IoU 0: the sum is over present ones
    return np.concatenate([iou, miou[..., None], iou.mean(-1, keepdims=True)], axis=-1)


def _units(res: R.SweepResults, t: Trials, a: np.ndarray, b: np.ndarray, eval_key: str,
           classes: int) -> list[tuple[int, int]]:
    """Every (A trial, B trial) with the same seed and split seed, both with per-image counts of the same shape."""
    units = []
    for i in a:
        for j in b:
            if (t.seed[i], t.split_seed[i]) != (t.seed[j], t.split_seed[j]):
                continue
            pa_, pb = res.per_image.get((t.names[i], eval_key)), res.per_image.get((t.names[j], eval_key))
            if pa_ is not None and pb is not None and pa_[0].shape == pb[0].shape and pa_[0].shape[1] == classes:
                units.append((int(i), int(j)))
    return units


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


def cost_rows(t: Trials) -> tuple[tuple[str, int, float, float, float], ...]:
    """Per column: trials with a wall time, mean wall s per trial, CPU-hours, GPU-hours (wall x resources)."""
    out = []
    timed = ~np.isnan(t.wall_s)
    for lab in dict.fromkeys(t.label):
        m = (t.label == lab) & timed
        out.append((lab, int(m.sum()), float(t.wall_s[m].mean()) if m.any() else math.nan,
                    float((t.wall_s[m] * t.cpu[m]).sum() / 3600), float((t.wall_s[m] * t.gpu[m]).sum() / 3600)))
    return tuple(out)


def _pairs(table: pa.Table, finished: np.ndarray) -> list[tuple[str, str]]:
    done = table.filter(pc.equal(table["status"], R.FINISHED))
    both = zip(done["dataset"].to_pylist(), done["eval"].to_pylist(), strict=True)
    return list(dict.fromkeys(both)) if finished.any() else []


def _sortable(value: Any) -> float:
    return math.inf if value is None else float(value)


def _label(value: Any) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _same(value: Any, wanted: Any) -> bool:
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return str(value) == str(wanted)


# --- small objects -----------------------------------------------------------------------------------------------


def small_object_recall(checkpoint: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Re-evaluate a trial's checkpoint on its evaluation sets: per eval key, (objects, found) per SIZE_BINS bin.

    Objects are the thing instances of `*_gtFine_instanceIds.png` (id * 1000 + k), resized to the evaluation size
    the way labels are (nearest); one is found when at least FOUND of its pixels are predicted as its class."""
    import torch
    from PIL import Image

    from trainers.data.pipeline import eval_data
    from trainers.s4gan.predict import load_generator
    from trainers.s4gan.steps import upsample

    generator, config = load_generator(checkpoint, torch.device("cpu"))
    out = {}
    for es in config.eval:
        info, loader = eval_data(es, synth_images=config.dataset.synth_images)
        objects, found = np.zeros(len(SIZE_BINS), np.int64), np.zeros(len(SIZE_BINS), np.int64)
        with torch.inference_mode():
            for pair, (image, label) in zip(loader.dataset.pairs, loader, strict=True):
                instance_file = getattr(pair, "instance", None)  # Cityscapes layout only (IDD has polygons)
                if instance_file is None or not instance_file.is_file():
                    continue
                pred = upsample(generator(image).float(), label.shape[-2:]).argmax(1)[0].numpy()
                with Image.open(instance_file) as im:
                    instance = _nearest(np.asarray(im).astype(np.int64), pred.shape)
                ids, inverse = np.unique(instance, return_inverse=True)
                inverse = inverse.reshape(instance.shape)
                cls = info.labels.raw_to_train[np.minimum(ids // 1000, 255)]
                hit = pred == cls[inverse]
                area = np.bincount(inverse.ravel(), minlength=len(ids))
                correct = np.bincount(inverse.ravel(), weights=hit.ravel(), minlength=len(ids))
                thing = (ids >= 1000) & (cls != info.labels.ignore_index)
                bins = np.searchsorted(SIZE_BINS, area[thing], side="right") - 1
                np.add.at(objects, bins, 1)
                np.add.at(found, bins, (correct[thing] >= FOUND * area[thing]).astype(np.int64))
        out[es.metric_key] = (objects, found)
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


# --- writing -----------------------------------------------------------------------------------------------------


def write(report: Report, res: R.SweepResults, out: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Every requested format into `out` (created), plus results.parquet; returns the files written."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"--format must name some of {', '.join(FORMATS)}, but got {', '.join(unknown)}")
    out.mkdir(parents=True, exist_ok=True)
    written = [R.save(res.table, out / "results.parquet")]
    figures: dict[tuple[str, str], list[tuple[str, Path]]] = {}
    if "png" in formats or "html" in formats:
        for ct in report.tables:
            figures[(ct.train, ct.eval)] = pictures(ct, res, out)
            written += [path for _, path in figures[(ct.train, ct.eval)]]
    if "md" in formats:
        written.append(_write_text(out / "report.md", to_markdown(report)))
    if "csv" in formats:
        written.append(_write_text(out / "report.csv", to_csv(report)))
    if "html" in formats:
        written.append(_write_text(out / "report.html", to_html(report, figures)))
    return written


def publish(run: R.SweepRun, out: Path, artifact_path: str = "report") -> None:
    """Log a folder (the report, the verdict) on the sweep run's parent run, under `artifact_path`."""
    from orchestrator.tracking import Tracker

    Tracker(run.tracking_uri).log_artifact(run.parent_run_id, out, artifact_path)


def options_for(res: R.SweepResults, *, axis: str | None = None, small_objects: bool = False) -> Options:
    """The sweep file's `report:` section (baseline, columns), with `--columns` taking precedence."""
    section = dict(getattr(res.spec, "report", None) or {})
    baseline = section.get("baseline", Options().baseline)
    return Options(axis=axis or section.get("columns") or "variant", baseline=dict(baseline),
                   small_objects=small_objects)


def to_markdown(report: Report) -> str:
    run = report.run
    lines = [f"# s4sweep report: {run.sweep}, run {run.run_id}", "",
             f"parent run `{run.parent_run_id}` · run status {run.status} · {report.finished} of {report.total} "
             f"trials finished", ""]
    if report.partial:
        lines += [f"> **{report.partial}**", ""]
    for ct in report.tables:
        lines += [f"## {ct.train} → {ct.eval}: IoU (%), mean ± std over seeds", "",
                  f"columns: {ct.axis}; baseline: {ct.baseline or 'none'}; n = finished trials", ""]
        lines += md_table(*_table_cells(ct)) + [""] + [_LEGEND, ""]
        lines += [f"- {note}" for note in ct.notes] + ([""] if ct.notes else [])
    if report.cost:
        lines += ["## Cost", ""]
        lines += md_table(["column", "trials", "wall s / trial", "CPU-h", "GPU-h"],
                           [[c, str(n), _num(w, 1), _num(cpu, 3), _num(gpu, 3)] for c, n, w, cpu, gpu in report.cost])
        lines.append("")
    if report.small_objects:
        lines += ["## Small objects: recall (%) by object area at the evaluation size", "",
                  f"An object is found when at least {FOUND:.0%} of its pixels get its class; mean ± std over seeds.",
                  ""]
        head = ["train", "eval", "column", *_bin_names()]
        lines += md_table(head, [[tr, ev, lab, *(f"{_pct(m, s)} ({n})" for m, s, n in zip(mean, std, n_obj,
                                                                                           strict=True))]
                                  for tr, ev, lab, mean, std, n_obj in report.small_objects])
        lines.append("")
    return "\n".join(lines)


_LEGEND = ("**bold**: highest mean of the row. Δ: column minus baseline, in points; ↑/↓ only where the difference "
           "holds (95% paired bootstrap over seeds and validation images excludes 0); an unmarked Δ is within noise "
           "or was not tested (fwiou and pixel_acc never are).")


def _table_cells(ct: ClassTable) -> tuple[list[str], list[list[str]]]:
    best = ct.best()
    head = ["class"] + (["labeled px %"] if ct.share is not None else [])
    for k, (col, n) in enumerate(zip(ct.columns, ct.trials, strict=True)):
        head += [f"{col} (n={n})"] + ([f"Δ {col}"] if k and ct.baseline else [])
    rows = []
    for r, name in enumerate(ct.rows):
        row = [name]
        if ct.share is not None:
            row.append(f"{100 * ct.share[r]:.2f}" if r < len(ct.share) else "")
        for k in range(len(ct.columns)):
            cell = _pct(ct.mean[r, k], ct.std[r, k])
            row.append(f"**{cell}**" if best[r, k] else cell)
            if k and ct.baseline:
                row.append(_delta(ct.delta[r, k], ct.low[r, k], ct.holds[r, k]))
        rows.append(row)
    return head, rows


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(head) - 1)
    return ["| " + " | ".join(r) + " |" for r in (head, align, *rows)]


def to_csv(report: Report) -> str:
    """Long form, fractions not %: one line per (table, row, column)."""
    import csv
    import io

    buffer = io.StringIO()
    w = csv.writer(buffer, lineterminator="\n")
    w.writerow(["train", "eval", "row", "column", "trials", "mean", "std", "best", "delta", "ci_low", "ci_high",
                "holds", "labeled_px_share"])
    for ct in report.tables:
        best = ct.best()
        for r, name in enumerate(ct.rows):
            share = ct.share[r] if ct.share is not None and r < len(ct.share) else None
            for k, col in enumerate(ct.columns):
                holds = {1: "true", 0: "false"}.get(int(ct.holds[r, k]), "")
                w.writerow([ct.train, ct.eval, name, col, ct.trials[k], _raw(ct.mean[r, k]), _raw(ct.std[r, k]),
                            str(bool(best[r, k])).lower(), _raw(ct.delta[r, k]), _raw(ct.low[r, k]),
                            _raw(ct.high[r, k]), holds, _raw(share)])
    return buffer.getvalue()


def to_html(report: Report, figures: Mapping[tuple[str, str], list[tuple[str, Path]]]) -> str:
    """One self-contained page: the markdown's content as HTML tables, every picture inlined as base64 PNG."""
    run = report.run
    parts = [f"<h1>s4sweep report: {escape(run.sweep)}, run {escape(run.run_id)}</h1>",
             f"<p>parent run <code>{escape(run.parent_run_id)}</code> · run status {escape(run.status)} · "
             f"{report.finished} of {report.total} trials finished</p>"]
    if report.partial:
        parts.append(f'<p class="partial">{escape(report.partial)}</p>')
    for ct in report.tables:
        parts += [f"<h2>{escape(ct.train)} → {escape(ct.eval)}: IoU (%), mean ± std over seeds</h2>",
                  f"<p>columns: {escape(ct.axis)}; baseline: {escape(ct.baseline or 'none')}; n = finished trials</p>",
                  html_table(*_table_cells(ct)), f"<p class='legend'>{escape(_LEGEND)}</p>"]
        parts += [f"<p class='note'>{escape(n)}</p>" for n in ct.notes]
        for title, path in figures.get((ct.train, ct.eval), []):
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{escape(title)}'>"
                         f"<figcaption>{escape(title)}</figcaption></figure>")
    if report.cost:
        parts += ["<h2>Cost</h2>", html_table(["column", "trials", "wall s / trial", "CPU-h", "GPU-h"],
                                              [[c, str(n), _num(w, 1), _num(cpu, 3), _num(g, 3)]
                                               for c, n, w, cpu, g in report.cost])]
    if report.small_objects:
        parts += ["<h2>Small objects: recall (%) by object area</h2>",
                  html_table(["train", "eval", "column", *_bin_names()],
                             [[tr, ev, lab, *(f"{_pct(m, s)} ({n})" for m, s, n in zip(mean, std, n_obj, strict=True))]
                              for tr, ev, lab, mean, std, n_obj in report.small_objects])]
    return page(f"s4sweep report {run.run_id}", "\n".join(parts))


def html_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Markdown-marked cells (**bold**) become <b>; everything else is escaped."""
    def cell(text: str, tag: str) -> str:
        body = escape(text)
        body = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", body)
        return f"<{tag}>{body}</{tag}>"

    lines = ["<table>", "<tr>" + "".join(cell(h, "th") for h in head) + "</tr>"]
    lines += ["<tr>" + "".join(cell(c, "td") for c in r) + "</tr>" for r in rows]
    return "\n".join(lines + ["</table>"])


def page(title: str, body: str) -> str:
    style = ("body{font-family:sans-serif;margin:2em;max-width:110em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}td:first-child,th:first-child"
             "{text-align:left}.partial,.fail{background:#fdd;padding:.5em;font-weight:bold}.pass{background:#dfd;"
             "padding:.5em;font-weight:bold}.legend,.note{color:#555;font-size:90%}img{max-width:100%}")
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{style}</style>"
            f"</head><body>\n{body}\n</body></html>\n")


# --- pictures ----------------------------------------------------------------------------------------------------


def pictures(ct: ClassTable, res: R.SweepResults, out: Path) -> list[tuple[str, Path]]:
    """Bar chart of per-class IoU by column, the qualitative grid, and each column's confusion heatmap."""
    stem = _safe(f"{ct.train}_{ct.eval}")
    made = [(f"per-class IoU by {ct.axis} ({ct.train} → {ct.eval})", bar_chart(ct, out / f"iou_{stem}.png"))]
    if res.fetch is None:
        return made
    samples = [res.fetch(trial, f"samples_{ct.eval}.png") for trial in ct.examples]
    if all(s is not None for s in samples) and samples:
        grid = qualitative_grid([Path(s) for s in samples if s], ct.columns, out / f"samples_{stem}.png")
        if grid is not None:
            made.append((f"fixed validation images: input, ground truth, each column's prediction "
                         f"(trials {', '.join(ct.examples)})", grid))
    for col, trial in zip(ct.columns, ct.examples, strict=True):
        found = res.fetch(trial, f"confusion_{ct.eval}.png")
        if found is not None:
            path = out / f"confusion_{stem}_{_safe(col)}.png"
            path.write_bytes(Path(found).read_bytes())
            made.append((f"confusion matrix, {col} (trial {trial}; rows: ground truth, row-normalised)", path))
    return made


def bar_chart(ct: ClassTable, path: Path) -> Path:
    """Grouped bars (mean, std as error bar) per class and column; beyond MAX_BARS columns bars are unreadable and a
    heatmap of the means (classes x columns) is drawn instead."""
    plt = _pyplot()
    rows = [i for i, r in enumerate(ct.rows) if r not in ("fwiou", "pixel_acc")]
    k = len(ct.columns)
    title = f"{ct.train} → {ct.eval}: per-class IoU (%), mean over seeds"
    if k > MAX_BARS:
        fig, ax = plt.subplots(figsize=(min(40.0, 2 + 0.18 * k), 2 + 0.25 * len(rows)))
        image = ax.imshow(100 * ct.mean[rows], aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(rows)), [ct.rows[i] for i in rows], fontsize=7)
        ax.set_xticks(range(k), ct.columns, rotation=90, fontsize=5)
        fig.colorbar(image, ax=ax, label="IoU (%)")
    else:
        fig, ax = plt.subplots(figsize=(max(8.0, 0.35 * len(rows) * max(k, 2) ** 0.5 + 2), 4.5))
        width, x = 0.8 / k, np.arange(len(rows))
        for j, col in enumerate(ct.columns):
            ax.bar(x + (j - (k - 1) / 2) * width, 100 * np.nan_to_num(ct.mean[rows, j]), width,
                   yerr=100 * np.nan_to_num(ct.std[rows, j]), label=col, capsize=1.5)
        ax.set_xticks(x, [ct.rows[i] for i in rows], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("IoU (%)")
        ax.legend(fontsize=8, ncols=min(k, 4))
        title += " ± std"
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def qualitative_grid(samples: Sequence[Path], columns: Sequence[str], path: Path) -> Path | None:
    """Each samples PNG is rows of [input | ground truth | prediction] for the same fixed images; keep the first's
    input and ground truth and put every column's prediction beside them."""
    from PIL import Image

    strips = [np.asarray(Image.open(p).convert("RGB")) for p in samples]
    if len({s.shape for s in strips}) != 1 or strips[0].shape[1] % 3:
        log.warning("samples PNGs differ in size; no qualitative grid")
        return None
    w = strips[0].shape[1] // 3
    grid = np.concatenate([strips[0][:, : 2 * w], *(s[:, 2 * w:] for s in strips)], axis=1)
    plt = _pyplot()
    h = grid.shape[0]
    fig, ax = plt.subplots(figsize=(max(4.0, grid.shape[1] / 60), max(2.0, h / 60) + 0.6))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([w * (i + 0.5) for i in range(2 + len(columns))], ["input", "ground truth", *columns],
                  rotation=30, ha="right", fontsize=8)
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --- small helpers -----------------------------------------------------------------------------------------------


def _pct(mean: float, std: float) -> str:
    if mean is None or np.isnan(mean):
        return "–"
    return f"{100 * mean:.1f}" if std is None or np.isnan(std) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _delta(delta: float, low: float, holds: int) -> str:
    if np.isnan(delta):
        return "–"
    text = f"{100 * delta:+.1f}"
    text = "0.0" if text in ("+0.0", "-0.0") else text
    return text + ((" ↑" if low > 0 else " ↓") if holds == 1 else "")


def _num(value: float, digits: int) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _raw(value: float | None) -> str:
    return "" if value is None or np.isnan(value) else repr(float(value))


def _bin_names() -> list[str]:
    edges = [*SIZE_BINS, None]
    return [f"{lo}–{hi} px" if hi else f"≥{lo} px" for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def escape(text: str) -> str:
    return html.escape(str(text), quote=True)


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
