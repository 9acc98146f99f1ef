"""The `sweep --dry-run` text: trial count, loud warnings (a paper-preset sweep from random weights, weights not on
this machine), what varies, resources, the evaluation sets with their classes, search, scheduler and a compute
estimate per device kind (trials x iterations x measured seconds per iteration for the preset on that kind of
device), with the wall time on this machine."""

from __future__ import annotations

import heapq
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

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
# 2-core machine: micro 0.023 s (2026-11-25, the train_step loop of bench/trainer_step.py); tiny 0.1 s (2026-12-07, a
# whole trial's wall time over its iterations, evaluation and start-up included: 40-45 s per 400-iteration trial and
# 55-60 s per 600-iteration one in `s4sweep sweep`, two at a time). The paper model on CPU is the reference's 10.3 s
# at batch 2+2+2 and 256x512 (issue notes), so about 40 s at the preset's batch 8. No GPU figure has been measured
# (no GPU was at hand): a GPU sweep's estimate says so and shows the CPU figure for scale, in CPU-hours, never as
# GPU-hours.
SECONDS_PER_ITER: dict[str, dict[str, float]] = {
    "cpu": {"tiny": 0.1, "micro": 0.023, "paper": 41.2},
    "gpu": {},
}


def describe(spec: SweepSpec, *, seconds_per_iter: Mapping[str, float] | None = None) -> str:
    """Trial count, warnings, what varies, resources, evaluation sets and a compute estimate; the first line is
    `<N> trials`. `seconds_per_iter` replaces the measured figures of the sweep's device kind (preset -> s)."""
    optuna = spec.search if isinstance(spec.search, OptunaSearch) else None
    trials = spec.trials()
    lines = [f"{optuna.num_samples} trials (Optuna TPE budget)" if optuna else f"{len(trials)} trials",
             *weight_warnings(trials),
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
    lines += ["", f"resources per trial: {res.cpu:g} CPU, {res.gpu:g} GPU", *_eval_lines(trials[0]),
              f"search: {_show_search(spec.search)}", f"scheduler: {_show_scheduler(spec.scheduler)}"]
    lines += _estimate_lines(spec, trials, optuna.num_samples if optuna else len(trials), seconds_per_iter)
    return "\n".join(lines)


def weight_warnings(trials: list[TrialConfig]) -> list[str]:
    """Loud lines for trials that claim the paper's recipe from random weights, and for weights not on this machine."""
    lines = []
    from_scratch = [t for t in trials if t.preset == "paper" and t.model.pretrained == "none"]
    if from_scratch:
        lines.append(f"WARNING: {len(from_scratch)} of {len(trials)} trials use the paper preset with "
                     "model.pretrained: none (a randomly initialised backbone); s4GAN and the study start from "
                     "ImageNet weights, so these trials land far below the published numbers. Set model.pretrained "
                     "to the torchvision ResNet-101 ImageNet file (README \"Reproducing the paper\").")
    for path in sorted({t.model.pretrained for t in trials} - {"none"}):
        if not Path(path).is_file():
            lines.append(f"WARNING: model.pretrained {path}: no such file on this machine (every node that runs "
                         "a trial needs it there)")
    return lines


def _eval_lines(cfg: TrialConfig) -> list[str]:
    """Each evaluation set with its label set, class count and remap: what the per-class tables will hold."""
    from trainers.data.tables import dataset_info

    lines = ["evaluation sets:"]
    for es in cfg.eval:
        info = dataset_info(es.name, es.label_set)
        via = f", scored through the remap {es.remap}" if es.remap else ""
        first = f", first {es.max_images} images" if es.max_images else ""
        lines.append(f"  val/{es.metric_key}/...: {es.name}, label set {info.label_set} ({info.num_classes} "
                     f"classes){via}, {es.split} split at {es.size[0]}x{es.size[1]}{first}")
    return lines


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


class _Figures(NamedTuple):
    seconds: list[float]  # per trial: iterations x seconds per iteration of its preset
    text: str  # `6 trials x 400 iterations x 0.1 s (tiny) per iteration`
    missing: list[str]  # presets without a figure (then `seconds` is empty)


def _figures(runs: list[TrialConfig], figures: Mapping[str, float]) -> _Figures:
    missing = sorted({c.preset for c in runs if c.preset not in figures})
    if missing:
        return _Figures([], "", missing)
    iterations = "-".join(map(str, sorted({c.schedule.iterations for c in runs})))
    per_iter = ", ".join(f"{figures[p]:g} s ({p})" for p in sorted({c.preset for c in runs}))
    return _Figures([c.schedule.iterations * figures[c.preset] for c in runs],
                    f"{len(runs)} trials x {iterations} iterations x {per_iter} per iteration", [])


def _estimate_lines(spec: SweepSpec, trials: list[TrialConfig], count: int,
                    seconds_per_iter: Mapping[str, float] | None) -> list[str]:
    """The estimate in the unit of the device the trials reserve: GPU-hours only from GPU figures (none is measured
    yet: then it says so, and shows the CPU figure for scale, in CPU-hours); CPU-hours from the CPU table."""
    res = spec.resources
    runs = [trials[k % len(trials)] for k in range(count)]  # an Optuna budget cycles through the per-seed templates
    kind = "gpu" if res.gpu > 0 else "cpu"
    own = _figures(runs, {**SECONDS_PER_ITER[kind], **(seconds_per_iter or {})})
    hours = sum(own.seconds) * (res.gpu if kind == "gpu" else res.cpu) / 3600
    if kind == "cpu":
        if own.missing:
            return [f"compute: no estimate (no measured seconds per iteration for preset {', '.join(own.missing)})"]
        lines = [f"compute on CPU: {own.text} = {_hours(hours)} CPU-hours"]
    else:
        lines = [f"compute on GPU: {own.text} = {_hours(hours)} GPU-hours" if not own.missing else
                 f"compute on GPU: no GPU figure measured for preset {', '.join(own.missing)}, so no GPU-hour "
                 "estimate"]
        cpu = _figures(runs, SECONDS_PER_ITER["cpu"])
        if own.missing and not cpu.missing:
            lines.append(f"for scale, on CPU: {cpu.text} = {_hours(sum(cpu.seconds) / 3600)} CPU-hours at one "
                         "thread per trial (CPU seconds, not GPU time)")
    if spec.max_gpu_hours is not None:
        verdict = "within it" if hours <= spec.max_gpu_hours else "the estimate EXCEEDS it"
        if kind == "cpu":  # tune_backend.Budget counts CPU-hours for CPU-only trials
            verdict = f"CPU-only trials: the cap counts CPU-hours at run time; {verdict}"
        elif own.missing:
            verdict = "no GPU estimate to compare it with"
        lines.append(f"budget: max_gpu_hours {spec.max_gpu_hours:g} ({verdict})")
    slots, why = _local_slots(res)
    if slots == 0:
        lines.append(f"wall time here: the trials do not fit this machine ({why}); run on a cluster")
    elif own.missing:
        lines.append(f"wall time here: no estimate (no GPU figure measured; {why})")
    else:
        lines.append(f"wall time here: about {_duration(_wall_seconds(own.seconds, slots))} at up to {slots} trials "
                     f"at once ({why})")
    return lines


def _hours(hours: float) -> str:
    return "< 0.01" if hours < 0.01 else f"{hours:.3g}"


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
