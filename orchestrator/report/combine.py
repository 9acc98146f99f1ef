"""Several sweep runs -> one Report: the tables of an evaluation set the runs share, side by side, columns (training
set, column), rows the classes, as the study's Table 1 puts its two training sets next to each other.

Each run's tables are first built as for that run alone (its baseline, its bootstrap, its labeled pixel share).
Tables of the same evaluation key are then merged when the key means the same evaluation set in every run: the same
dataset, label set, split, size and image count (what makes the numbers comparable; the remap may differ, it is how
each model is scored, and the root is a path on each machine). A key that means another set in some run keeps that
run's table apart. Column labels get the training set in front (`cityscapes · ce`), and the run id too where two
runs would give the same label. A Δ stays within its run (against that run's baseline, tested on its trials).
The combined results hold every run's trials as `<run id>/<trial>`, for results.parquet and the pictures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from orchestrator import results as R
from orchestrator.report.tables import RARE_ROW, SUMMARY_ROWS, ClassTable, Options, Report, build


def combine(runs: Sequence[R.SweepResults], options: Sequence[Options]) -> tuple[Report, R.SweepResults]:
    """The report of several runs and their results as one (trial names qualified by the run)."""
    reports = [build(res, opt) for res, opt in zip(runs, options, strict=True)]
    label = _labeller(runs, reports)
    tagged = [(i, _qualified(ct, i, runs[i].run.run_id, label)) for i, rep in enumerate(reports)
              for ct in rep.tables]
    groups: dict[tuple[str, Any], list[ClassTable]] = {}
    for i, ct in tagged:
        groups.setdefault((ct.eval, _eval_identity(runs[i], ct)), []).append(ct)
    tables = tuple(merge(group) if len(group) > 1 else group[0] for group in groups.values())
    partial = "; ".join(r.partial for r in reports if r.partial) or None
    cost = tuple((f"{runs[i].run.run_id} · {c[0]}", *c[1:]) for i, r in enumerate(reports) for c in r.cost)
    small = tuple((tr, ev, label(i, tr, lab), *rest) for i, r in enumerate(reports)
                  for tr, ev, lab, *rest in r.small_objects)
    report = Report(run=runs[0].run, partial=partial, finished=sum(r.finished for r in reports),
                    total=sum(r.total for r in reports), tables=tables, cost=cost, small_objects=small,
                    small_object_notes=tuple(f"{runs[i].run.run_id}: {n}" for i, r in enumerate(reports)
                                             for n in r.small_object_notes),
                    runs=tuple(res.run for res in runs))
    return report, combined_results(runs)


def merge(tables: Sequence[ClassTable]) -> ClassTable:
    """Tables of the same evaluation set (same classes), their columns side by side; a row one of them lacks (the
    rare-classes row where a run's labeled share is unknown) is empty in its columns."""
    classes = tables[0].classes
    rare = any(RARE_ROW in ct.rows for ct in tables)
    rows = (*classes, *SUMMARY_ROWS[:2], *([RARE_ROW] if rare else []), *SUMMARY_ROWS[2:])

    def stacked(field: str, fill: Any, dtype: Any = float) -> np.ndarray:
        parts = []
        for ct in tables:
            part = np.full((len(rows), len(ct.columns)), fill, dtype)
            part[[rows.index(r) for r in ct.rows]] = getattr(ct, field)
            parts.append(part)
        return np.concatenate(parts, axis=1)

    share = [ct.share if ct.share is not None else np.full((len(classes), len(ct.columns)), np.nan) for ct in tables]
    baselines = [ct.baseline for ct in tables if ct.baseline]
    rare_sets = {ct.rare for ct in tables if RARE_ROW in ct.rows}
    return ClassTable(
        train=", ".join(dict.fromkeys(t for ct in tables for t in ct.trains)), eval=tables[0].eval,
        axis=tables[0].axis, columns=sum((ct.columns for ct in tables), ()),
        trials=sum((ct.trials for ct in tables), ()),
        baseline=", ".join(baselines) or None, rows=rows, mean=stacked("mean", np.nan), std=stacked("std", np.nan),
        delta=stacked("delta", np.nan), low=stacked("low", np.nan), high=stacked("high", np.nan),
        holds=stacked("holds", -1, np.int8), counts=stacked("counts", 0, np.int64), share=np.concatenate(share, 1),
        compared=sum((ct.compared for ct in tables), ()), trains=sum((ct.trains for ct in tables), ()),
        rare=rare_sets.pop() if len(rare_sets) == 1 else (), examples=sum((ct.examples for ct in tables), ()),
        notes=sum((ct.notes for ct in tables), ()))


def combined_results(runs: Sequence[R.SweepResults]) -> R.SweepResults:
    """Every run's trials in one table as `<run id>/<trial>` (parquet, pictures); artifacts fetched from their run."""
    owner = {f"{res.run.run_id}/{trial}": (res, trial) for res in runs for trial in res.params}
    tables = [res.table.set_column(res.table.column_names.index("trial"), "trial",
                                   pc.binary_join_element_wise(res.run.run_id, res.table["trial"], "/"))
              for res in runs]

    def fetch(trial: str, name: str) -> Path | None:
        res, own = owner.get(trial, (None, ""))
        return res.fetch(own, name) if res is not None and res.fetch is not None else None

    return R.SweepResults(run=runs[0].run, table=pa.concat_tables(tables, promote_options="permissive"), fetch=fetch,
                          per_image={(f"{res.run.run_id}/{t}", e): v for res in runs for (t, e), v in
                                     res.per_image.items()})


def _labeller(runs: Sequence[R.SweepResults], reports: Sequence[Report]) -> Any:
    """(run index, training set, column) -> `train · column`, with the run id in front where two runs share it."""
    seen = Counter(label for rep in reports for label in
                   {f"{t} · {c}" for ct in rep.tables for t, c in zip(ct.trains, ct.columns, strict=True)})

    def label(i: int, train: str, column: str) -> str:
        text = f"{train} · {column}"
        return f"{runs[i].run.run_id} · {text}" if seen[text] > 1 else text

    return label


def _qualified(ct: ClassTable, i: int, run_id: str, label: Any) -> ClassTable:
    """`ct` of run `i` with its columns, baseline, pictures' trials and notes named for a report of several runs."""
    names = tuple(label(i, t, c) for t, c in zip(ct.trains, ct.columns, strict=True))
    baseline = names[ct.columns.index(ct.baseline)] if ct.baseline else None
    return replace(ct, columns=names, baseline=baseline, examples=tuple(f"{run_id}/{e}" for e in ct.examples),
                   notes=tuple(f"{run_id}: {n}" for n in ct.notes))


def _eval_identity(res: R.SweepResults, ct: ClassTable) -> tuple[Any, ...]:
    """What one evaluation key must mean in every run for its tables to be merged. The label set is in it through
    the classes (the set's own label set, unnamed when the default: the report does not import the label tables)."""
    params = next((p for p in res.params.values() if R.training_set(p) == ct.train), {})
    es = res.eval_sets_of(params).get(ct.eval)
    if es is None:
        return ("unknown", res.run.run_id)  # not comparable with anything: kept apart
    size = es.get("eval_size")
    return (es.get("name"), es.get("split", "val"), tuple(size) if size else None, es.get("max_images"), ct.classes)
