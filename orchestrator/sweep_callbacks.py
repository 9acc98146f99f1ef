"""What the driver watches while trials run: the progress line, the device-hour budget and which trials ended how.

Plain observers with Tune's callback hooks (`on_trial_start`, `on_trial_result`, `on_trial_complete`,
`on_trial_error`); orchestrator/tune_backend.py hands them to Tune through one forwarding callback, so no Ray here."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from orchestrator.runs import BUDGET_FILE, DATA_FAILURE, TRIAL_STATUS_FILE, trial_dir
from orchestrator.storage import Location, open_location
from orchestrator.trial_plan import TrialPlan, trial_name

log = logging.getLogger(__name__)


class Progress:
    """One status line per change: running / pending / done / failed, best so far, elapsed and remaining time."""

    def __init__(self, total: int, metric: str, mode: str, concurrency: int) -> None:
        self.total, self.metric, self.mode, self.concurrency = total, metric, mode, max(1, concurrency)
        self.t0 = time.monotonic()
        self.running: set[str] = set()
        self.done: dict[str, float] = {}
        self.failed: set[str] = set()
        self.started: dict[str, float] = {}
        self.best: tuple[float, str] | None = None
        self.peak_running = 0  # trials seen running at once: the slots the cluster really gives this sweep

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(str(trial))
        self.peak_running = max(self.peak_running, len(self.running))
        self.started.setdefault(str(trial), time.monotonic())
        self._print()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)):
            better = self.best is None or (value > self.best[0] if self.mode == "max" else value < self.best[0])
            if better:
                self.best = (float(value), str(trial))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(str(trial))
        self.done[str(trial)] = time.monotonic() - self.started.get(str(trial), self.t0)
        self._print()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(str(trial))
        self.failed.add(str(trial))
        self._print()

    def _print(self) -> None:
        elapsed = time.monotonic() - self.t0
        finished = len(self.done) + len(self.failed)
        pending = max(0, self.total - finished - len(self.running))
        eta = ""
        if self.done:
            per_trial = sum(self.done.values()) / len(self.done)
            slots = max(1, min(self.concurrency, self.peak_running))  # max_concurrent may exceed the cluster
            eta = f", about {_clock(per_trial * (self.total - finished) / slots)} left"
        best = f" | best {self.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best else ""
        log.info("trials: %d running, %d pending, %d done, %d failed%s | elapsed %s%s", len(self.running), pending,
                 len(self.done), len(self.failed), best, _clock(elapsed), eta)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


class Budget:
    """Device-hours spent so far (finished trials plus the running ones' elapsed time), kept in `budget.json`.

    A trial that starts after the sweep's `max_gpu_hours` is spent ends at once, marked skipped: the cap stops new
    trials, never running ones. GPU trials count GPU-hours (fraction x wall hours); CPU-only trials count CPU-hours.
    """

    def __init__(self, plan: TrialPlan) -> None:
        self.path = open_location(plan.run_dir) / BUDGET_FILE
        self.per_hour = plan.gpu if plan.gpu > 0 else plan.cpu
        self.finished_h = float(json.loads(self.path.read_text())["finished_h"]) if self.path.is_file() else 0.0
        self.started: dict[str, float] = {}

    def _write(self) -> None:
        now = time.monotonic()
        running_h = sum(now - t for t in self.started.values()) / 3600 * self.per_hour
        self.path.write_text(json.dumps({"finished_h": self.finished_h, "spent_h": self.finished_h + running_h}))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started[str(trial)] = time.monotonic()
        self._write()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._write()

    def _ended(self, trial: Any) -> None:
        start = self.started.pop(str(trial), None)
        if start is not None:
            self.finished_h += (time.monotonic() - start) / 3600 * self.per_hour
        self._write()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)


class TrialStatusLog:
    """Which trials ended (finished or stopped early by the scheduler) or errored, kept beside the run's Tune state.

    Tune's restored result grid cannot tell a completed trial from an interrupted one reliably; this file, written
    by the driver as trials end and carried across restores, can.
    """

    FILE = TRIAL_STATUS_FILE

    def __init__(self, run_dir: Location, plan: TrialPlan) -> None:
        self.run_dir, self.path, self.plan = run_dir, run_dir / self.FILE, plan

    @classmethod
    def read(cls, run_dir: Location) -> dict[str, str]:
        path = run_dir / cls.FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def _write(self, trial: Any, status: str) -> None:
        ended = self.read(self.run_dir)
        ended[trial_name(self.plan, trial.config)] = status
        self.path.write_text(json.dumps(ended, indent=1, sort_keys=True))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        failed = (trial_dir(self.run_dir, trial_name(self.plan, trial.config)) / DATA_FAILURE).is_file()
        self._write(trial, "error" if failed else "finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, "error")
