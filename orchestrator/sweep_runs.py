"""Which sweep run: the one named, else the latest ended run of a sweep, from the run directory's run.json or, with
a tracking URI and no local record, from MLflow alone; and the one before it (for "new" vs "persisting" regressions).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import runs

ENDED: tuple[runs.Status, ...] = ("finished", "failed")  # runs that stopped by themselves (some trials may have failed)


@dataclass(frozen=True, kw_only=True)
class SweepRun:
    """Where one sweep run's numbers are: its MLflow parent run, and its local run directory if this machine has it
    (None for a run kept on an object store, or known from MLflow only)."""

    sweep: str
    run_id: str
    status: str  # runs.Status
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    run_dir: Path | None = None
    created: str = ""


def find_run(sweep: str | None, run: str | None = None, *, tracking_uri: str | None = None,
             storage: str | None = None) -> SweepRun:
    """The named run, else the latest ended (finished or failed) run of `sweep`: from the run directory's run.json,
    else, with a tracking URI (--tracking-uri or $MLFLOW_TRACKING_URI) and no local record, from MLflow alone. A
    run named without its sweep (`sweep` None) is found through its local record only."""
    from orchestrator.tracking import check_server

    if sweep is None and run is None:
        raise runs.RunError("name a sweep or a run")
    given = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if given:
        check_server(given)  # a dead or foreign server fails here in seconds, naming its URI
    root = runs.storage_root(storage)
    try:
        state = runs.load(root, run) if run else runs.latest(root, sweep, statuses=ENDED)
    except runs.RunError as e:
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise
        if sweep is None:
            raise runs.RunError(f"{e}; to find run {run!r} in {uri}, name its sweep too (SWEEP --run {run})") from None
        return _run_from_mlflow(sweep, run, uri)
    if sweep is not None and state.sweep != sweep:
        raise runs.RunError(f"run {state.run_id} is a run of sweep {state.sweep!r}, not of {sweep!r}")
    return SweepRun(sweep=state.sweep, run_id=state.run_id, status=state.status, experiment_id=state.experiment_id,
                    tracking_uri=tracking_uri or state.tracking_uri, parent_run_id=state.parent_run_id,
                    run_dir=runs.run_dir(root, state.run_id).local, created=state.created)


def previous_run(current: SweepRun, *, storage: str | None = None) -> SweepRun | None:
    """The latest ended run of the same sweep started before `current` (for "new" vs "persisting" regressions)."""
    if current.run_dir is not None:
        earlier = [s for s in runs.runs_of(runs.storage_root(storage), current.sweep)
                   if s.status in ENDED and (s.created, s.run_id) < (current.created, current.run_id)]
        return find_run(current.sweep, earlier[-1].run_id, storage=storage) if earlier else None
    from orchestrator.tracking import Tracker

    parents = Tracker(current.tracking_uri).parents(current.experiment_id)  # newest first
    ids = [p.run_id for p in parents]
    for p in parents[ids.index(current.parent_run_id) + 1:] if current.parent_run_id in ids else []:
        if p.status in ("FINISHED", "FAILED"):
            return _sweep_run(current.sweep, p, current.tracking_uri, current.experiment_id)
    return None


def output_dir(run: SweepRun, name: str, given: str | None = None) -> Path:
    """--out, else `<run directory>/<name>`, else `./<name>-<run id>` when the run is known from MLflow only."""
    if given:
        return Path(given).expanduser().resolve()
    return run.run_dir / name if run.run_dir is not None else Path(f"{name}-{run.run_id}").resolve()


def _run_from_mlflow(sweep: str, run: str | None, uri: str) -> SweepRun:
    from orchestrator.tracking import Tracker

    tracker = Tracker(uri)
    experiment = tracker.find_experiment(sweep)
    if experiment is None:
        raise runs.RunError(f"no run record of sweep {sweep!r} here, and tracking store {uri} has no experiment "
                            f"{sweep!r}")
    parents = [p for p in tracker.parents(experiment)
               if (p.tags.get("s4sweep.run") == run if run else p.status in ("FINISHED", "FAILED"))]
    if not parents:
        what = f"run {run!r}" if run else "finished or failed run"
        raise runs.RunError(f"tracking store {uri}: experiment {sweep!r} has no {what}")
    return _sweep_run(sweep, parents[0], uri, experiment)


def _sweep_run(sweep: str, parent: Any, uri: str, experiment: str) -> SweepRun:
    status = {"FINISHED": "finished", "FAILED": "failed"}.get(parent.status, "running")
    return SweepRun(sweep=sweep, run_id=parent.tags.get("s4sweep.run", parent.name), status=status, tracking_uri=uri,
                    experiment_id=experiment, parent_run_id=parent.run_id)
