"""The Reporter a trial trains with under the sweep engine: numbers to the trial's MLflow child run (each step once,
across retries and restores), checkpoints with the run id inside to the sweep's storage, through a `persist` function
tune_backend gives it (no Ray here)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator import faults
from orchestrator.tracking import Tracker
from orchestrator.trial_plan import ITERATION, TRACKING_FILE, TrialPlan
from trainers import metric_names as M
from trainers.reporting import TrialResult


class TrialReporter:
    """Forwards the trainer's numbers to MLflow, and its checkpoints (with the MLflow run id inside) to `persist`
    (tune_backend passes Tune's `tune.report(values, checkpoint=...)`, which uploads them to the run's storage).

    A retried or restored trial replays the iterations after its last checkpoint: `logged` holds, per metric, the
    highest step its run has already, and nothing at or below it is logged again, so the run's history has every
    step once, with no gap (the replay is the same computation: the checkpoint restores the RNG and the data order).
    """

    def __init__(self, tracker: Tracker, run_id: str, *, trial: str, plan: TrialPlan, attempt: int = 1,
                 persist: Callable[[dict[str, float], Path], None], logged: Mapping[str, int] | None = None,
                 where: Mapping[str, Any] | None = None) -> None:
        self.persist = persist
        self.tracker, self.run_id, self.trial, self.plan, self.attempt = tracker, run_id, trial, plan, attempt
        self.logged = dict(logged or {})
        self.where = dict(where or {})
        self.tracking_s = 0.0  # time spent in MLflow calls: the logging overhead bench/sweep_overhead.py reports
        self.checkpoint_s = 0.0  # time spent persisting checkpoints to the storage: bench/storage.py reports it
        self.checkpoint_mib = 0.0

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        self._log(step, values)
        faults.at_metrics(self.plan.fault, run=self.plan.sweep_run, trial=self.trial, step=step,
                          attempt=self.attempt, where=self.where)

    def artifact(self, path: Path) -> None:
        t = time.perf_counter()
        self.tracker.log_artifact(self.run_id, path)
        self.tracking_s += time.perf_counter() - t

    def checkpoint(self, step: int, directory: Path, values: Mapping[str, float]) -> None:
        (directory / TRACKING_FILE).write_text(json.dumps({"run_id": self.run_id, "trial": self.trial,
                                                           "iteration": step}))
        size = sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())
        t = time.perf_counter()
        self.persist({**values, ITERATION: step}, directory)
        self.checkpoint_s += time.perf_counter() - t
        self.checkpoint_mib += size / 2**20
        faults.at_checkpoint(self.plan.fault, trial=self.trial, step=step)

    def result(self, result: TrialResult) -> None:
        self.tracker.log_dict(self.run_id, {"iterations": result.iterations, "wall_s": result.wall_s,
                                            "checkpoint_s": self.checkpoint_s, "checkpoint_mib": self.checkpoint_mib,
                                            **result.info}, "trial_info.json")
        self._log(result.iterations, {M.TRIAL_TIME: result.wall_s, M.TRACKING_TIME: self.tracking_s,
                                      M.CHECKPOINT_TIME: self.checkpoint_s, M.CHECKPOINT_MIB: self.checkpoint_mib})

    def _log(self, step: int, values: Mapping[str, float]) -> None:
        fresh = {k: v for k, v in values.items() if step > self.logged.get(k, -1)}
        if fresh:
            t = time.perf_counter()
            self.tracker.log_metrics(self.run_id, step, fresh)
            self.tracking_s += time.perf_counter() - t
