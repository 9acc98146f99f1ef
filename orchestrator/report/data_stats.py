"""What the trials logged for the report beside their metrics, read from their downloaded artifacts (nothing here
needs the data, the checkpoints or torch): each class's pixel share in the labeled split (labeled_counts.json,
carried into an evaluation set's classes by the trial through its remap), and (`--small-objects`) recall by object
size from the final evaluation (small_objects_<eval>.json; definitions in trainers/small_objects.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator import results as R
from trainers import metric_names as M
from trainers.small_objects import FOUND, SIZE_BINS

if TYPE_CHECKING:
    from orchestrator.report.tables import Trials

__all__ = ["FOUND", "SIZE_BINS", "class_share", "small_object_table"]


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
            f"{M.LABELED_COUNTS_FILE} (a run from before trials logged it)") if missing else None
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
