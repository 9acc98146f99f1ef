"""What every trial of a sweep run is shipped with (TrialPlan), what the driver learns of each (TrialOutcome), and
the ray-free pieces both sides use: trial names, the trial's working directory, the device-hour budget's state."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.runs import BUDGET_FILE, trial_dir
from orchestrator.storage import open_location

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


def trial_workdir(plan: TrialPlan, name: str) -> Path:
    """The trial's working directory: under the run directory on a filesystem; node-local scratch beside an object
    store (what matters leaves it through Tune's checkpoints and MLflow)."""
    local = open_location(plan.run_dir).local
    if local is not None:
        return trial_dir(local, name)
    return Path(os.environ.get("S4SWEEP_SCRATCH") or tempfile.gettempdir()) / "s4sweep" / plan.sweep_run / name


def optuna_trial_name(template: str, params: Mapping[str, Any]) -> str:
    parts = [f"{path.split('.')[-1][:1]}{value:.3g}" if isinstance(value, float) else f"{path.split('.')[-1]}{value}"
             for path, value in sorted(params.items())]
    return "-".join([template.split("-s")[0], *parts])
