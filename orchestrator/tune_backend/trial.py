"""Inside a trial (a Ray worker): the function trainable, the Reporter that forwards the trainer's numbers to MLflow
and its checkpoints to Tune, and the plan every trial is shipped with.

A retried or restored trial re-attaches to its MLflow child run: the run id travels inside the Tune checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Checkpoint

from orchestrator import faults
from orchestrator.runs import BUDGET_FILE, DATA_FAILURE, trial_dir
from orchestrator.storage import open_location
from orchestrator.tracking import Tracker
from trainers import metric_names as M
from trainers.config import TrialConfig
from trainers.data.tables import BrokenDuringTrainingError
from trainers.reporting import TrialResult

log = logging.getLogger(__name__)
TRACKING_FILE = "tracking.json"
SKIPPED = "skipped-budget"  # marker in a trial directory: never started, the device-hour budget was spent
ITERATION = "iteration"  # the time attribute Tune's schedulers read


@dataclass(frozen=True, kw_only=True)
class TrialPlan:
    """Everything a trial needs, shipped once to the workers through the object store."""

    configs: tuple[dict[str, Any], ...]
    names: tuple[str, ...]
    run_dir: str  # <storage>/sweeps/<run id>: an absolute path or an object-store URI (orchestrator/storage.py)
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep_run: str
    metric: str
    mode: str
    cpu: float
    gpu: float
    optuna_space: dict[str, dict[str, Any]] | None = None  # dotted TrialConfig path -> {low, high, log} | {choices}
    optuna: dict[str, Any] = field(default_factory=dict)  # num_samples, seed
    asha: dict[str, Any] | None = None  # grace_iters, reduction_factor
    max_concurrent: int | None = None
    max_failures: int = 2
    max_device_hours: float | None = None  # sweep file's max_gpu_hours (CPU-hours for CPU-only trials)
    fault: dict[str, Any] | None = None  # S4SWEEP_INJECT_FAULT, for failure tests only


@dataclass(frozen=True)
class TrialOutcome:
    name: str
    status: str  # finished | error | unfinished
    error: str | None
    metrics: dict[str, Any]


def budget_exhausted(plan: TrialPlan) -> bool:
    """True once the sweep's max_gpu_hours is spent: a trial that starts then ends at once, marked skipped."""
    path = open_location(plan.run_dir) / BUDGET_FILE
    if plan.max_device_hours is None or not path.is_file():
        return False
    return float(json.loads(path.read_text())["spent_h"]) >= plan.max_device_hours


def trial_name(plan: TrialPlan, config: Mapping[str, Any]) -> str:
    name = plan.names[int(config.get("trial", 0))]
    params = config.get("params")
    return optuna_trial_name(name, params) if params else name


class TuneReporter:
    """Forwards the trainer's numbers to MLflow, and its checkpoints (with the MLflow run id inside) to Tune.

    A retried or restored trial replays the iterations after its last checkpoint: `logged` holds, per metric, the
    highest step its run has already, and nothing at or below it is logged again, so the run's history has every
    step once, with no gap (the replay is the same computation: the checkpoint restores the RNG and the data order).
    """

    def __init__(self, tracker: Tracker, run_id: str, *, trial: str, plan: TrialPlan, attempt: int = 1,
                 logged: Mapping[str, int] | None = None, where: Mapping[str, Any] | None = None) -> None:
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
        tune.report({**values, ITERATION: step}, checkpoint=Checkpoint.from_directory(str(directory)))  # persists it
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


def _restored_checkpoint(workdir: Path) -> tuple[Path | None, dict[str, Any]]:
    """The checkpoint Tune hands a retried or restored trial, copied locally, and its tracking.json (run id, trial,
    iteration)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, {}
    local = workdir / "restored"
    shutil.rmtree(local, ignore_errors=True)
    checkpoint.to_directory(str(local))
    return local, json.loads((local / TRACKING_FILE).read_text())


def trial_workdir(plan: TrialPlan, name: str) -> Path:
    """The trial's working directory: under the run directory on a filesystem; node-local scratch beside an object
    store (what matters leaves it through Tune's checkpoints and MLflow)."""
    local = open_location(plan.run_dir).local
    if local is not None:
        return trial_dir(local, name)
    return Path(os.environ.get("S4SWEEP_SCRATCH") or tempfile.gettempdir()) / "s4sweep" / plan.sweep_run / name


def placement(plan: TrialPlan, device: str) -> dict[str, str]:
    """Where this attempt runs, as child-run tags: node, GPU ids and fraction Ray gave it, the torch device."""
    context = ray.get_runtime_context()
    return {"s4sweep.node_id": context.get_node_id(), "s4sweep.node_ip": ray.util.get_node_ip_address(),
            "s4sweep.gpu_ids": ",".join(str(i) for i in ray.get_gpu_ids()), "s4sweep.gpu": f"{plan.gpu:g}",
            "s4sweep.device": device, "s4sweep.attempt_started": f"{time.time():.3f}"}


def optuna_trial_name(template: str, params: Mapping[str, Any]) -> str:
    parts = [f"{path.split('.')[-1][:1]}{value:.3g}" if isinstance(value, float) else f"{path.split('.')[-1]}{value}"
             for path, value in sorted(params.items())]
    return "-".join([template.split("-s")[0], *parts])


def run_trial(config: dict[str, Any], *, plan: TrialPlan) -> None:
    """The function trainable: one s4GAN trial, its MLflow child run, and its Tune checkpoints."""
    from trainers.data.roots import ensure_generated  # late: the driver imports this module too
    from trainers.s4gan.train import resolve_device, train

    index = int(config["trial"])
    cfg = TrialConfig.from_dict(plan.configs[index])
    name = plan.names[index]
    params = config.get("params") or {}
    if params:
        cfg = cfg.with_params(params)
        name = optuna_trial_name(name, params)
    workdir = trial_workdir(plan, name)
    # in the run's storage, not the (maybe node-local) working directory: the driver reads it when the sweep ends
    failure = trial_dir(open_location(plan.run_dir), name) / DATA_FAILURE
    if failure.is_file():  # failed on a broken file (a restore after a crash of the driver): nothing to redo
        return
    resume, restored = _restored_checkpoint(workdir)
    run_id = restored.get("run_id")
    if resume is None and budget_exhausted(plan):
        (trial_dir(open_location(plan.run_dir), name) / SKIPPED).write_text(
            f"max_gpu_hours {plan.max_device_hours} spent before this trial started")
        return
    for es in (cfg.dataset, *cfg.eval):  # generated data the driver made on its own disk: made again on this node
        ensure_generated(es.name, es.root, synth_images=cfg.dataset.synth_images)
    device = resolve_device(cfg.device.device).type
    where = placement(plan, device)
    if plan.gpu > 0 and device != "cuda":
        log.warning("trial %s: Ray scheduled %g GPU for it (GPU id %s on node %s) but no CUDA device is visible "
                    "there: it runs on the CPU", name, plan.gpu, where["s4sweep.gpu_ids"] or "-",
                    where["s4sweep.node_ip"])
    tracker = Tracker(plan.tracking_uri)
    if run_id is None:  # a retry that failed before its first checkpoint keeps its run too
        run_id = next((c.run_id for c in tracker.children(plan.experiment_id, plan.parent_run_id)
                       if c.tags.get("s4sweep.trial") == name), None)
    attempt, logged = 1, {}
    if run_id is None:
        run_id = tracker.start_child(plan.experiment_id, plan.parent_run_id, run_name=name, params=cfg.to_dict(),
                                     tags={"s4sweep.trial": name, "s4sweep.run": plan.sweep_run,
                                           "s4sweep.tune_trial_id": tune.get_context().get_trial_id() or "",
                                           "s4sweep.nodes": where["s4sweep.node_id"], "s4sweep.attempt": "1",
                                           "s4sweep.restored_from": "", **where})
    else:
        tracker.resume(run_id)
        before = tracker.run(run_id).tags
        attempt = int(before.get("s4sweep.attempt", "1")) + 1
        logged = tracker.last_steps(run_id)
        tracker.set_tags(run_id, {**where, "s4sweep.attempt": str(attempt),
                                  "s4sweep.nodes": ",".join(filter(None, [before.get("s4sweep.nodes"),
                                                                          where["s4sweep.node_id"]])),
                                  "s4sweep.restored_from": str(restored.get("iteration", ""))})
    where = {"node_ip": where["s4sweep.node_ip"], "node_id": where["s4sweep.node_id"]}
    reporter = TuneReporter(tracker, run_id, trial=name, plan=plan, attempt=attempt, logged=logged, where=where)
    try:
        train(cfg, reporter=reporter, workdir=workdir, resume=resume)
    except BrokenDuringTrainingError as e:
        # A file that broke after the scan: Tune's retries would meet it again, each in a fresh worker. The trial
        # ends here instead, FAILED in MLflow with the file and the iteration; `run` counts it an error through the
        # marker (to Tune it is a trial that returned).
        tracker.end(run_id, "FAILED", error=f"DataError: {e}")
        failure.write_text(f"DataError: {e}")
        log.error("trial %s failed: %s", name, e)
        return
    except BaseException as e:
        tracker.end(run_id, "FAILED", error=f"{type(e).__name__}: {e}")
        raise
    tracker.end(run_id, "FINISHED")
