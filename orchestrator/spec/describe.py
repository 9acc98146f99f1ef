"""The `sweep --dry-run` text: trial count, what varies, resources, search, scheduler and a compute estimate
(trials x iterations x measured seconds per iteration for the preset), with the wall time on this machine."""

from __future__ import annotations

import heapq
import os
from collections.abc import Mapping
from typing import Any

from orchestrator.spec.model import (
    ASHAScheduler,
    GridSearch,
    NoScheduler,
    OptunaSearch,
    Resources,
    SweepSpec,
)
from trainers.config import TrialConfig

# Seconds per training iteration of one trial on one CPU thread (torch.set_num_threads(1)) on this project's
# 2-core machine: micro 0.023 s (2026-11-25, the train_step loop of bench/trainer_step.py); tiny 0.14 s (2026-12-01,
# a whole trial's wall time over its 600 iterations, evaluation and start-up included: 80-88 s per trial in
# `make demo`, two at a time). The paper model on CPU is the reference's 10.3 s at batch 2+2+2 and
# 256x512 (issue notes), so about 40 s at the preset's batch 8; no GPU figure yet: GPU sweeps fall back to it.
SECONDS_PER_ITER: dict[str, dict[str, float]] = {
    "cpu": {"tiny": 0.14, "micro": 0.023, "paper": 41.2},
    "gpu": {},
}


def describe(spec: SweepSpec, *, seconds_per_iter: Mapping[str, float] | None = None) -> str:
    """Trial count, what varies, resources and a compute estimate; the first line is `<N> trials`."""
    optuna = spec.search if isinstance(spec.search, OptunaSearch) else None
    trials = spec.trials()
    lines = [f"{optuna.num_samples} trials (Optuna TPE budget)" if optuna else f"{len(trials)} trials",
             f"sweep {spec.name}: {spec.description or '(no description)'}", f"file: {spec.source}", ""]
    rows = [(path, ", ".join(_show(v) for v in values)) for path, values in spec.varying().items()]
    if optuna:
        rows += [(path, _show_dist(dist)) for path, dist in optuna.space.items()]
    if rows:
        width = max(len("param"), *(len(p) for p, _ in rows))
        lines += [f"{'param':<{width}} | values", f"{'-' * width}-|-{'-' * 6}"]
        lines += [f"{p:<{width}} | {v}" for p, v in rows]
    else:
        lines.append("nothing varies: one trial")
    res = spec.resources
    lines += ["", f"resources per trial: {res.cpu:g} CPU, {res.gpu:g} GPU",
              f"search: {_show_search(spec.search)}", f"scheduler: {_show_scheduler(spec.scheduler)}"]
    lines += _estimate_lines(spec, trials, optuna.num_samples if optuna else len(trials), seconds_per_iter)
    return "\n".join(lines)


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _show_dist(dist: Mapping[str, Any]) -> str:
    if "choices" in dist:
        return "one of " + ", ".join(_show(c) for c in dist["choices"])
    kind = "integer" if isinstance(dist["low"], int) and isinstance(dist["high"], int) else "number"
    return f"{kind} in [{_show(dist['low'])}, {_show(dist['high'])}]{', log scale' if dist['log'] else ''}"


def _show_search(search: GridSearch | OptunaSearch) -> str:
    if isinstance(search, GridSearch):
        return "grid (every point is a trial)"
    return f"Optuna TPE, {search.mode} {search.metric}, sampler seed {search.seed}"


def _show_scheduler(scheduler: NoScheduler | ASHAScheduler) -> str:
    if isinstance(scheduler, NoScheduler):
        return "none (every trial runs to the end)"
    return (f"ASHA, {scheduler.mode} {scheduler.metric}, grace {scheduler.grace_iters} iterations, reduction "
            f"factor {scheduler.reduction_factor:g} (the estimate below is an upper bound)")


def _estimate_lines(spec: SweepSpec, trials: list[TrialConfig], count: int,
                    seconds_per_iter: Mapping[str, float] | None) -> list[str]:
    res = spec.resources
    kind = "gpu" if res.gpu > 0 else "cpu"
    figures = {**SECONDS_PER_ITER["cpu"], **SECONDS_PER_ITER[kind], **(seconds_per_iter or {})}
    # an Optuna budget cycles through the per-seed templates
    runs = [trials[k % len(trials)] for k in range(count)]
    missing = sorted({c.preset for c in runs if c.preset not in figures})
    if missing:
        return [f"compute: no estimate (no measured seconds per iteration for preset {', '.join(missing)})"]
    seconds = [c.schedule.iterations * figures[c.preset] for c in runs]
    iterations = sorted({c.schedule.iterations for c in runs})
    presets = sorted({c.preset for c in runs})
    per_iter = ", ".join(f"{figures[p]:g} s ({p})" for p in presets)
    if kind == "gpu" and not set(presets) <= set(SECONDS_PER_ITER["gpu"]) | set(seconds_per_iter or {}):
        per_iter += " [CPU figure: no GPU measurement yet]"
    unit, share = ("GPU-hours", res.gpu) if kind == "gpu" else ("CPU-hours", res.cpu)
    hours = sum(seconds) * share / 3600
    lines = [f"compute: {count} trials x {'-'.join(map(str, iterations))} iterations x {per_iter} per "
             f"iteration = {'< 0.01' if hours < 0.01 else f'{hours:.3g}'} {unit}"]
    if spec.max_gpu_hours is not None:
        verdict = ("the trials use no GPU" if kind == "cpu" else
                   "within it" if hours <= spec.max_gpu_hours else "the estimate EXCEEDS it")
        lines.append(f"budget: max_gpu_hours {spec.max_gpu_hours:g} ({verdict})")
    slots, why = _local_slots(res)
    if slots == 0:
        lines.append(f"wall time here: the trials do not fit this machine ({why}); run on a cluster")
    else:
        wall = _duration(_wall_seconds(seconds, slots))
        lines.append(f"wall time here: about {wall} at up to {slots} trials at once ({why})")
    return lines


def _local_slots(res: Resources) -> tuple[int, str]:
    cpus = os.cpu_count() or 1
    slots, why = int(cpus // res.cpu), f"{cpus} CPUs, {res.cpu:g} per trial"
    if res.gpu > 0:
        import torch  # only to count the local GPUs

        gpus = torch.cuda.device_count()
        slots, why = min(slots, int(gpus // res.gpu)), f"{why}; {gpus} GPUs, {res.gpu:g} per trial"
    return slots, why


def _wall_seconds(seconds: list[float], slots: int) -> float:
    """Trials start in order as slots free up, as Tune starts them."""
    ends = [0.0] * min(slots, len(seconds))
    for s in seconds:
        heapq.heappush(ends, heapq.heappop(ends) + s)
    return max(ends)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 1 else "< 1 s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
