"""A validated sweep file (SweepSpec) and its parts: resources, grid axes, the search and the scheduler.

Each part checks its own values at construction; SweepSpec expands its grid into TrialConfigs on first use
(points.py) and names the trials (names.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, Literal

from orchestrator.spec.names import trial_names
from orchestrator.spec.points import Point, build_points, flatten
from orchestrator.spec.rules import SpecError, check_keys, check_mode, fail, number
from trainers import metric_names as M
from trainers.config import FrozenDict, TrialConfig

Mode = Literal["max", "min"]


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What Ray reserves for one trial; a GPU may be shared (0 < gpu < 1) or whole (1, 2, ...)."""

    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        if number("resources.cpu", self.cpu) <= 0:
            fail("resources.cpu", "must be > 0", self.cpu)
        gpu = number("resources.gpu", self.gpu)
        if gpu < 0 or (gpu > 1 and gpu != int(gpu)):
            fail("resources.gpu", "must be 0, a fraction in (0, 1] or a whole number of GPUs", gpu)


@dataclass(frozen=True, kw_only=True)
class GridAxis:
    """One axis of the grid: a TrialConfig param path and its values, each with the key path it came from."""

    path: str  # "loss", "seed", "split_seed" or a dotted TrialConfig path such as "dataset.labeled_ratio"
    values: tuple[Any, ...]  # for `loss`: one {name, option: value} mapping per expanded variant
    origins: tuple[str, ...]  # e.g. "grid.loss[1]" or "grid.seed[0]": where errors about a value point

    def __post_init__(self) -> None:
        if not self.values or len(self.origins) != len(self.values):
            fail(f"grid.{self.path}", "must list at least one value (and one origin each)", self.values)


@dataclass(frozen=True, kw_only=True)
class GridSearch:
    """Every grid point is one trial."""


@dataclass(frozen=True, kw_only=True)
class OptunaSearch:
    """Optuna TPE proposes `num_samples` points of `space`; the grid may only hold `seed`."""

    num_samples: int
    metric: str
    mode: Mode
    space: Mapping[str, Mapping[str, Any]]  # param path -> {low, high, log} or {choices: (...)}
    seed: int = 0

    def __post_init__(self) -> None:
        where = "search.optuna"
        if number(f"{where}.num_samples", self.num_samples, integer=True) < 1:
            fail(f"{where}.num_samples", "must be >= 1", self.num_samples)
        _check_objective(where, self.metric, self.mode)
        if number(f"{where}.seed", self.seed, integer=True) < 0:
            fail(f"{where}.seed", "must be >= 0", self.seed)
        if not isinstance(self.space, Mapping) or not self.space:
            fail(f"{where}.space", "must map param paths to {low, high} or {choices: [...]}", self.space)
        space = {str(p): _space_entry(f"{where}.space.{p}", d) for p, d in self.space.items()}
        object.__setattr__(self, "space", FrozenDict(space))


def _check_objective(where: str, metric: object, mode: object) -> None:
    """The metric a search or scheduler optimises, and its direction."""
    if not isinstance(metric, str) or not M.is_val(metric):
        fail(f"{where}.metric", "must be a metric key `val/<eval set key>/<metric>`", metric)
    check_mode(f"{where}.mode", mode)


def _space_entry(path: str, raw: object) -> FrozenDict:
    if isinstance(raw, Mapping) and "choices" in raw:
        check_keys(path, raw, ("choices",))
        choices = raw["choices"]
        if not isinstance(choices, (list, tuple)) or not choices:
            fail(f"{path}.choices", "must be a non-empty list", choices)
        return FrozenDict(choices=tuple(choices))
    check_keys(path, raw, ("low", "high", "log"), required=("low", "high"))
    low, high = number(f"{path}.low", raw["low"]), number(f"{path}.high", raw["high"])
    log = raw.get("log", False)
    if not isinstance(log, bool):
        fail(f"{path}.log", "expected true or false", log)
    if not low < high:
        fail(path, "`low < high` must hold", {"low": low, "high": high})
    if log and low <= 0:
        fail(f"{path}.low", "must be > 0 with log: true", low)
    return FrozenDict(low=low, high=high, log=log)


@dataclass(frozen=True, kw_only=True)
class NoScheduler:
    """Every trial runs to the end."""


@dataclass(frozen=True, kw_only=True)
class ASHAScheduler:
    """Asynchronous successive halving: stops the worse trials at rungs grace_iters * reduction_factor^k."""

    grace_iters: int
    metric: str
    mode: Mode
    reduction_factor: float = 2.0

    def __post_init__(self) -> None:
        where = "scheduler.asha"
        if number(f"{where}.grace_iters", self.grace_iters, integer=True) < 1:
            fail(f"{where}.grace_iters", "must be >= 1", self.grace_iters)
        if number(f"{where}.reduction_factor", self.reduction_factor) <= 1:
            fail(f"{where}.reduction_factor", "must be > 1", self.reduction_factor)
        _check_objective(where, self.metric, self.mode)


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A validated sweep file. Build it with load_spec/parse_spec, which check every grid point."""

    name: str
    description: str = ""
    source: str  # absolute path of the sweep file, or "<dict>"
    sha256: str  # of the file bytes (of canonical JSON for a dict)
    base: Mapping[str, Any]
    grid: tuple[GridAxis, ...]
    eval: tuple[Mapping[str, Any], ...]  # empty: every trial evaluates on its preset's evaluation sets
    resources: Resources = field(default_factory=Resources)
    search: GridSearch | OptunaSearch = field(default_factory=GridSearch)
    scheduler: NoScheduler | ASHAScheduler = field(default_factory=NoScheduler)
    max_gpu_hours: float | None = None
    report: Mapping[str, Any] = field(default_factory=FrozenDict)

    def trials(self) -> list[TrialConfig]:
        """The grid's cross product, axes in file order (the last axis varies fastest). With Optuna: one
        config per `seed` value, onto which each sampled point is applied (`TrialConfig.with_params`)."""
        return [p.config for p in self._points]

    def trial_names(self) -> list[str]:
        """Readable, unique names in trial order: the loss with the options the file spells out, then every
        other axis that varies (seeds last), e.g. `ce-s0`, `focal-g2-l1-s0`, `combo-a0.5-s1`."""
        return trial_names(self.grid, self._points)

    def varying(self) -> dict[str, list[Any]]:
        """Dotted TrialConfig param path (`loss.name`, `loss.options.gamma`, `seed`) -> its distinct values in
        trial order; only params with more than one value. A loss option counts in the trials that have it."""
        flat = [flatten(c.to_dict()) for c in self.trials()]
        order = [f.name for f in fields(TrialConfig)]  # options of different losses together, under `loss`
        keys = sorted(dict.fromkeys(k for f in flat for k in f), key=lambda k: order.index(k.split(".")[0]))
        out: dict[str, list[Any]] = {}
        for key in keys:
            seen: list[Any] = []
            for f in flat:
                if key in f and f[key] not in seen:
                    seen.append(f[key])
            if len(seen) > 1:
                out[key] = seen
        return out

    def eval_keys(self) -> list[str]:
        """Metric prefixes of the evaluation sets (`val/<key>/...`), as the first trial has them."""
        return [e.metric_key for e in self._points[0].config.eval]

    @cached_property
    def _points(self) -> list[Point]:  # cached_property writes __dict__ directly: fine on a frozen dataclass
        try:
            return build_points(self.base, self.grid, self.eval, self.resources)
        except SpecError as e:
            raise SpecError(f"{self.source}: {e}") from None
