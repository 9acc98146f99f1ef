"""A sweep run's results -> one ClassTable per (training set, evaluation set): rows = the classes in dataset
order, then `miou`, `miou_all`, `miou_rare` (the mean IoU of the classes under `rare_share` of the labeled split's
pixels, where that share is known), `fwiou`, `pixel_acc`; columns = an axis of the sweep (the loss variant by
default); cells = mean and std over seeds; a Δ against the baseline column, tested with the paired bootstrap
(bootstrap.py); and the cost of each column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator import results as R
from orchestrator.report.bootstrap import Bootstrap, ImageDraws, iou_scores, seed_bootstrap, totals
from orchestrator.report.data_stats import class_share, small_object_table

SUMMARY_ROWS = ("miou", "miou_all", "fwiou", "pixel_acc")
RARE_ROW = "miou_rare"  # after miou_all, where the labeled split's pixel share is known
BOOTSTRAP_ROWS = ("miou", "miou_all")  # summaries the per-image counts determine (fwIoU, pixel acc need GT totals)
MIN_IMAGES = 5  # a bootstrap over fewer validation images says nothing: such a Δ is left unmarked
RARE_SHARE = 0.01  # a class under 1% of the labeled split's valid pixels is rare (`report: {rare_share: ...}`)


@dataclass(frozen=True, kw_only=True)
class Options:
    axis: str = "variant"  # `variant` (alias `loss`) or any varied parameter column of the results table
    baseline: Mapping[str, Any] = field(default_factory=lambda: {"loss": "ce"})
    replicates: int = 1000
    seed: int = 0
    confidence: float = 0.95
    small_objects: bool = False
    rare_share: float = RARE_SHARE

    def __post_init__(self) -> None:
        if not 0 < self.rare_share < 1:
            raise ValueError(f"rare_share must be a fraction in (0, 1), but got {self.rare_share!r}")


@dataclass(frozen=True, kw_only=True)
class ClassTable:
    train: str  # the training set (training sets, in a table of several runs)
    eval: str
    axis: str
    columns: tuple[str, ...]  # the baseline first
    trials: tuple[int, ...]  # finished trials per column
    baseline: str | None
    rows: tuple[str, ...]  # classes in dataset order, then SUMMARY_ROWS with RARE_ROW after miou_all (if known)
    mean: np.ndarray  # [rows, columns], fractions
    std: np.ndarray  # sample std over trials; NaN for a single trial
    delta: np.ndarray  # [rows, columns]: column mean - baseline mean; NaN in the baseline column
    low: np.ndarray  # bootstrap interval of the delta; NaN where not tested
    high: np.ndarray
    holds: np.ndarray  # int8 [rows, columns]: 1 holds, 0 does not, -1 not tested
    share: np.ndarray | None  # [classes, columns]: pixel share of each class in its column's labeled split
    counts: np.ndarray  # int [rows, columns]: the column's trials that have a value for the row
    compared: tuple[bool, ...]  # per column: it has a Δ against a baseline column
    trains: tuple[str, ...]  # per column: its training set
    rare: tuple[str, ...] = ()  # the classes RARE_ROW averages
    examples: tuple[str, ...] = ()  # per column, its trial with the lowest seed (pictures are taken from it)
    notes: tuple[str, ...] = ()

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(r for r in self.rows if r not in (*SUMMARY_ROWS, RARE_ROW))

    def best(self) -> np.ndarray:
        """bool [rows, columns]: the row's highest mean (all of them on a tie), none where every column is equal,
        judged at the precision the tables print (0.1 point), so no cell is bold beside an equal-looking one."""
        shown = np.round(100 * self.mean, 1)
        top, bottom = np.nanmax(shown, axis=1, keepdims=True), np.nanmin(shown, axis=1, keepdims=True)
        return (shown == top) & (top > bottom)


@dataclass(frozen=True, kw_only=True)
class Report:
    run: R.SweepRun
    partial: str | None  # why the report covers only part of the run; None when complete
    finished: int
    total: int
    tables: tuple[ClassTable, ...]
    cost: tuple[tuple[str, int, float, float, float], ...]  # column, trials, mean wall s, CPU-h, GPU-h
    small_objects: tuple[tuple[str, str, str, tuple[float, ...], tuple[float, ...], tuple[int, ...]], ...] = ()
    small_object_notes: tuple[str, ...] = ()  # trials whose recall by object size is not known, and why
    runs: tuple[R.SweepRun, ...] = ()  # a report of several runs (combine.py): all of them, `run` the first


def build(res: R.SweepResults, options: Options = Options()) -> Report:
    t = Trials.of(res.table, options.axis)
    finished = t.status == R.FINISHED
    tables = []
    for train, eval_key in _pairs(res.table, finished):
        share, note = class_share(res, train, eval_key)
        ct = class_table(res, t, train, eval_key, options, share)
        tables.append(replace(ct, notes=(*ct.notes, note)) if note else ct)
    not_done = sorted(f"{n} ({s})" for n, s in zip(t.names, t.status, strict=True) if s != R.FINISHED)
    total = max(res.expected_trials or 0, len(t.names))
    partial = None
    if res.run.status != "finished" or not_done or int(finished.sum()) < total:
        partial = (f"PARTIAL: run {res.run.run_id} is {res.run.status}; {int(finished.sum())} of {total} trials "
                   f"finished and are reported" + (f"; not finished: {', '.join(not_done)}" if not_done else ""))
    small, small_notes = small_object_table(res, t) if options.small_objects else ((), ())
    return Report(run=res.run, partial=partial, finished=int(finished.sum()), total=total, tables=tuple(tables),
                  cost=cost_rows(t), small_objects=small, small_object_notes=small_notes)


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
                share: Mapping[str, float] | None = None) -> ClassTable:
    """`share`: each evaluation class's share of the labeled split's pixels; without it there is no RARE_ROW."""
    table = res.table
    keep = pc.and_(pc.and_(pc.equal(table["dataset"], train), pc.equal(table["eval"], eval_key)),
                   pc.equal(table["status"], R.FINISHED))
    rows_t = table.filter(pc.and_(keep, pc.is_in(table["metric"], pa.array(["iou", *SUMMARY_ROWS]))))
    classes = R.classes_in_order(rows_t, eval_key)
    rare = None if share is None else tuple(c for c in classes if share.get(c, math.nan) < options.rare_share)
    row_names = (*classes, *SUMMARY_ROWS[:2], *([RARE_ROW] if rare is not None else []), *SUMMARY_ROWS[2:])
    row_index = {r: i for i, r in enumerate(row_names)}
    metric = rows_t["metric"].to_numpy(zero_copy_only=False)
    cls = rows_t["class"].to_numpy(zero_copy_only=False)
    key = np.where(metric == "iou", cls, metric)
    trial_i = np.fromiter((t.index[n] for n in rows_t["trial"].to_numpy(zero_copy_only=False)), int, len(rows_t))
    values = np.full((len(t.names), len(row_names)), np.nan)
    values[trial_i, [row_index[k] for k in key]] = rows_t["value"].to_numpy()
    if rare:  # the logged IoU of an absent class is 0: this is miou_all's convention, over the rare classes
        values[:, row_index[RARE_ROW]] = values[:, [row_index[c] for c in rare]].mean(axis=1)
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
    counts = np.stack([(~np.isnan(values[m])).sum(axis=0) for m in members], axis=1)
    shape = mean.shape
    delta, low, high = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    holds = np.full(shape, -1, np.int8)
    if baseline is not None:
        delta[:, 1:] = mean[:, 1:] - mean[:, :1]
        tested = [*range(len(classes)), *(row_index[r] for r in (*BOOTSTRAP_ROWS, *([RARE_ROW] if rare else [])))]
        subsets = (np.isin(classes, rare),) if rare else ()
        for k, boot in _test_columns(res, t, members, eval_key, len(classes), options, labels, notes,
                                     subsets).items():
            low[tested, k], high[tested, k], holds[tested, k] = boot.low, boot.high, boot.holds
    notes += _gap_notes(labels, members, row_names, counts) + _rare_notes(rare, options.rare_share)
    examples = tuple(str(t.names[min(m, key=lambda i: (_sortable(t.seed[i]), _sortable(t.split_seed[i])))])
                     for m in members)
    return ClassTable(train=train, eval=eval_key, axis=options.axis, columns=tuple(labels),
                      trials=tuple(len(m) for m in members), baseline=baseline, rows=row_names, mean=mean, std=std,
                      delta=delta, low=low, high=high, holds=holds, counts=counts, rare=rare or (),
                      share=None if share is None else np.tile([[share.get(c, math.nan)] for c in classes],
                                                               (1, len(labels))),
                      compared=tuple(k > 0 and baseline is not None for k in range(len(labels))),
                      trains=(train,) * len(labels), examples=examples, notes=tuple(notes))


def _gap_notes(labels: list[str], members: list[np.ndarray], rows: tuple[str, ...], counts: np.ndarray) -> list[str]:
    """Per column, the rows some of its finished trials have no value for (a class or metric that vanished)."""
    notes = []
    for k, (label, m) in enumerate(zip(labels, members, strict=True)):
        gaps: dict[int, list[str]] = {}
        for r, row in enumerate(rows):
            if counts[r, k] < len(m):
                gaps.setdefault(len(m) - int(counts[r, k]), []).append(row)
        notes += [f"{label}: no value for {', '.join(names)} in {gap} of {len(m)} trials"
                  + (" (its mean is over the others)" if gap < len(m) else "") for gap, names in gaps.items()]
    return notes


def _rare_notes(rare: tuple[str, ...] | None, threshold: float) -> list[str]:
    under = f"under {100 * threshold:g}% of the labeled split's pixels"
    if rare is None:
        return [f"{RARE_ROW}: not shown (no trial of this table logged its labeled split's pixels, "
                "labeled_counts.json)"]
    if not rare:
        return [f"{RARE_ROW}: no class is {under}"]
    return [f"{RARE_ROW}: mean IoU of the {len(rare)} classes {under}: {', '.join(rare)} (a class with an empty "
            "union counts as 0, as in miou_all)"]


def _test_columns(res: R.SweepResults, t: Trials, members: list[np.ndarray], eval_key: str, classes: int,
                  options: Options, labels: list[str], notes: list[str],
                  subsets: tuple[np.ndarray, ...]) -> dict[int, Bootstrap]:
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
            baseline_scores |= dict(zip(fresh, draws.scores_of([per_image[j] for j in fresh], subsets),
                                        strict=True))
        column_scores = draws.scores_of([per_image[i] for i, _ in units[k]], subsets)
        scored = [(column_scores[u], baseline_scores[j],
                   iou_scores(totals(per_image[i]), subsets)[0] - iou_scores(totals(per_image[j]), subsets)[0])
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


def options_for(res: R.SweepResults, *, axis: str | None = None, small_objects: bool = False) -> Options:
    """The sweep file's `report:` section (baseline, columns, rare_share), with `--columns` taking precedence."""
    section = dict(res.report_section())
    baseline = section.get("baseline", Options().baseline)
    return Options(axis=axis or section.get("columns") or "variant", baseline=dict(baseline),
                   small_objects=small_objects, rare_share=float(section.get("rare_share", RARE_SHARE)))
