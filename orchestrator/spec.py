"""Sweep file (YAML) -> validated SweepSpec -> list[TrialConfig]. No Ray here: this powers `sweep --dry-run`.

A sweep file (DESIGN.md "Sweep file (YAML), sketch") names a partial TrialConfig (`base`), a `grid` whose
cross product gives the trials (the `loss` axis expands list-valued options inside each loss only), the
evaluation sets, per-trial resources, a search (grid or Optuna) and a scheduler (none or ASHA). Everything is
checked once, here: every grid point is built as a TrialConfig, and every error names the file, the key path
in it, the broken rule and the value (`x.yaml: grid.loss[1].lambda[0]: ... must be >= 1 ..., but got 0.5`).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NamedTuple, NoReturn, get_type_hints

import yaml

from trainers.config import ConfigError, FrozenDict, TrialConfig, deep_merge, fold_loss_options
from trainers.data import DATASETS
from trainers.losses import LOSSES, validate_loss_options

Mode = Literal["max", "min"]
TOP_KEYS = ("name", "description", "base", "grid", "eval", "resources", "search", "scheduler",
            "max_gpu_hours", "report")
BASE_KEYS = tuple(f.name for f in fields(TrialConfig) if f.name != "eval")  # `eval` is a top-level list

# Seconds per training iteration of one trial on one CPU thread (torch.set_num_threads(1)), measured with
# the train_step loop of bench/trainer_step.py on this project's 2-core machine, 2026-11-25: micro 0.023 s,
# tiny 0.16 s (data from the in-memory cache). The paper model on CPU is the reference's 10.3 s at batch 2+2+2 and
# 256x512 (issue notes), so about 40 s at the preset's batch 8; no GPU figure yet: GPU sweeps fall back to it.
SECONDS_PER_ITER: dict[str, dict[str, float]] = {
    "cpu": {"tiny": 0.16, "micro": 0.023, "paper": 41.2},
    "gpu": {},
}

# Short forms in trial names (`focal-g2-l1-s0`); other params use their last dotted segment.
ABBREV = {"gamma": "g", "lambda": "l", "alpha": "a", "class_weights": "w", "seed": "s", "split_seed": "split",
          "dataset.labeled_ratio": "r", "dataset.name": "", "preset": "", "precision.precision": ""}


class SpecError(ValueError):
    """A sweep file breaks a rule: the message gives the file, then the key path, the rule and the value."""


def _fail(path: str, rule: str, value: object) -> NoReturn:
    raise SpecError(f"{path}: {rule}, but got {value!r}")


def _check_keys(path: str, raw: object, valid: tuple[str, ...], required: tuple[str, ...] = ()) -> Mapping:
    if not isinstance(raw, Mapping):
        _fail(path, "must be a mapping", raw)
    unknown = [str(k) for k in raw if k not in valid]
    if unknown:
        where = f"{path}." if path else ""
        also = f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
        of = f" of {path}" if path else ""
        raise SpecError(f"{where}{unknown[0]}: unknown key{also}; valid keys{of} are {', '.join(valid)}")
    missing = [k for k in required if k not in raw]
    if missing:
        where = f"{path}." if path else ""
        raise SpecError(f"{where}{missing[0]}: required, but missing (a {path or 'sweep file'} needs "
                        f"{', '.join(required)})")
    return raw


def _number(path: str, value: object, *, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        _fail(path, "expected an integer" if integer else "expected a number", value)
    return value


def _check_mode(path: str, value: object) -> None:
    if value not in ("max", "min"):
        _fail(path, "must be 'max' or 'min'", value)


# --- the parts of a SweepSpec -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What Ray reserves for one trial; a GPU may be shared (0 < gpu < 1) or whole (1, 2, ...)."""

    cpu: float = 1.0
    gpu: float = 0.0

    def __post_init__(self) -> None:
        if _number("resources.cpu", self.cpu) <= 0:
            _fail("resources.cpu", "must be > 0", self.cpu)
        gpu = _number("resources.gpu", self.gpu)
        if gpu < 0 or (gpu > 1 and gpu != int(gpu)):
            _fail("resources.gpu", "must be 0, a fraction in (0, 1] or a whole number of GPUs", gpu)


@dataclass(frozen=True, kw_only=True)
class GridAxis:
    """One axis of the grid: a TrialConfig param path and its values, each with the key path it came from."""

    path: str  # "loss", "seed", "split_seed" or a dotted TrialConfig path such as "dataset.labeled_ratio"
    values: tuple[Any, ...]  # for `loss`: one {name, option: value} mapping per expanded variant
    origins: tuple[str, ...]  # e.g. "grid.loss[1]" or "grid.seed[0]": where errors about a value point

    def __post_init__(self) -> None:
        if not self.values or len(self.origins) != len(self.values):
            _fail(f"grid.{self.path}", "must list at least one value (and one origin each)", self.values)


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
        if _number(f"{where}.num_samples", self.num_samples, integer=True) < 1:
            _fail(f"{where}.num_samples", "must be >= 1", self.num_samples)
        if not isinstance(self.metric, str) or not self.metric.startswith("val/"):
            _fail(f"{where}.metric", "must be a metric key `val/<eval set key>/<metric>`", self.metric)
        _check_mode(f"{where}.mode", self.mode)
        if _number(f"{where}.seed", self.seed, integer=True) < 0:
            _fail(f"{where}.seed", "must be >= 0", self.seed)
        if not isinstance(self.space, Mapping) or not self.space:
            _fail(f"{where}.space", "must map param paths to {low, high} or {choices: [...]}", self.space)
        space = {str(p): _space_entry(f"{where}.space.{p}", d) for p, d in self.space.items()}
        object.__setattr__(self, "space", FrozenDict(space))


def _space_entry(path: str, raw: object) -> FrozenDict:
    if isinstance(raw, Mapping) and "choices" in raw:
        _check_keys(path, raw, ("choices",))
        choices = raw["choices"]
        if not isinstance(choices, (list, tuple)) or not choices:
            _fail(f"{path}.choices", "must be a non-empty list", choices)
        return FrozenDict(choices=tuple(choices))
    _check_keys(path, raw, ("low", "high", "log"), required=("low", "high"))
    low, high = _number(f"{path}.low", raw["low"]), _number(f"{path}.high", raw["high"])
    log = raw.get("log", False)
    if not isinstance(log, bool):
        _fail(f"{path}.log", "expected true or false", log)
    if not low < high:
        _fail(path, "`low < high` must hold", {"low": low, "high": high})
    if log and low <= 0:
        _fail(f"{path}.low", "must be > 0 with log: true", low)
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
        if _number(f"{where}.grace_iters", self.grace_iters, integer=True) < 1:
            _fail(f"{where}.grace_iters", "must be >= 1", self.grace_iters)
        if _number(f"{where}.reduction_factor", self.reduction_factor) <= 1:
            _fail(f"{where}.reduction_factor", "must be > 1", self.reduction_factor)
        if not isinstance(self.metric, str) or not self.metric.startswith("val/"):
            _fail(f"{where}.metric", "must be a metric key `val/<eval set key>/<metric>`", self.metric)
        _check_mode(f"{where}.mode", self.mode)


class _Point(NamedTuple):
    config: TrialConfig
    picks: tuple[int, ...]  # the value index on each grid axis


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
        config per `seed` value, onto which each sampled point is applied (`apply_params`)."""
        return [p.config for p in self._points]

    def trial_names(self) -> list[str]:
        """Readable, unique names in trial order: the loss with the options the file spells out, then every
        other axis that varies (seeds last), e.g. `ce-s0`, `focal-g2-l1-s0`, `combo-a0.5-s1`."""
        return _trial_names(self.grid, self._points)

    def varying(self) -> dict[str, list[Any]]:
        """Dotted TrialConfig param path (`loss.name`, `loss.options.gamma`, `seed`) -> its distinct values in
        trial order; only params with more than one value. A loss option counts in the trials that have it."""
        flat = [_flatten(c.to_dict()) for c in self.trials()]
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
    def _points(self) -> list[_Point]:  # cached_property writes __dict__ directly: fine on a frozen dataclass
        try:
            return _build_points(self.base, self.grid, self.eval, self.resources)
        except SpecError as e:
            raise SpecError(f"{self.source}: {e}") from None


# --- loading ------------------------------------------------------------------------------------------------


def load_spec(path: str | Path, *, env: Mapping[str, str] | None = None) -> SweepSpec:
    """Read, substitute `${VAR}` from `env` (default os.environ) and validate a sweep file."""
    path = Path(path).expanduser().resolve()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the sweep file ({e.strerror})") from None
    try:
        loader = _Loader(raw.decode("utf-8"))
        loader.name = path.name  # YAML error marks name it with the line
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: not a valid YAML file: {e}") from None
    return _parse(data, source=str(path), env=env, sha256=hashlib.sha256(raw).hexdigest())


def parse_spec(data: Mapping, *, source: str, env: Mapping[str, str] | None = None) -> SweepSpec:
    """The same as load_spec from an already-parsed mapping; `source` names it in errors."""
    try:
        canonical = json.dumps(data, sort_keys=True, default=repr)
    except TypeError:  # keys of mixed types cannot be sorted
        canonical = repr(data)
    return _parse(data, source=source, env=env, sha256=hashlib.sha256(canonical.encode()).hexdigest())


def _parse(data: object, *, source: str, env: Mapping[str, str] | None, sha256: str) -> SweepSpec:
    try:
        return _parse_checked(data, source=source, env=os.environ if env is None else env, sha256=sha256)
    except SpecError as e:
        raise SpecError(f"{source}: {e}") from None


def _parse_checked(data: object, *, source: str, env: Mapping[str, str], sha256: str) -> SweepSpec:
    if not isinstance(data, Mapping):
        _fail("(top level)", "a sweep file must be a mapping with at least `name`", data)
    data = _check_keys("", _substitute(data, "", env), TOP_KEYS, required=("name",))
    name, description = data["name"], data.get("description") or ""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        _fail("name", "must be letters, digits, '_', '.' or '-'", name)
    if not isinstance(description, str):
        _fail("description", "must be a string", description)
    base = data.get("base") or {}
    if not isinstance(base, Mapping):
        _fail("base", "must be a mapping (a partial TrialConfig)", base)
    if "eval" in base:
        _fail("base.eval", "evaluation sets go in the top-level `eval` list", base["eval"])
    _check_keys("base", base, BASE_KEYS)
    resources = Resources(**_check_keys("resources", data.get("resources") or {}, ("cpu", "gpu")))
    eval_sets = _parse_eval(data.get("eval"))
    grid = _parse_grid(data.get("grid"))
    search = _parse_search(data.get("search"), grid)
    points = _build_points(base, grid, eval_sets, resources)
    eval_keys = [e.metric_key for e in points[0].config.eval]
    if isinstance(search, OptunaSearch):
        _check_metric("search.optuna.metric", search.metric, eval_keys)
        _check_space(search, _trial_data(base, eval_sets, resources))
    scheduler = _parse_scheduler(data.get("scheduler"), search, eval_keys)
    if isinstance(scheduler, ASHAScheduler):
        _check_metric("scheduler.asha.metric", scheduler.metric, eval_keys)
        shortest = min(p.config.schedule.iterations for p in points)
        if scheduler.grace_iters >= shortest:
            _fail("scheduler.asha.grace_iters", f"must be < schedule.iterations ({shortest}), or ASHA stops "
                  "nothing", scheduler.grace_iters)
    budget = data.get("max_gpu_hours")
    if budget is not None and _number("max_gpu_hours", budget) <= 0:
        _fail("max_gpu_hours", "must be > 0 (or left out)", budget)
    return SweepSpec(name=name, description=description.strip(), source=source, sha256=sha256,
                     base=_freeze(base), grid=grid, eval=_freeze(eval_sets), resources=resources,
                     search=search, scheduler=scheduler, report=_parse_report(data.get("report")),
                     max_gpu_hours=None if budget is None else float(budget))


_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}")


def _substitute(value: Any, path: str, env: Mapping[str, str]) -> Any:
    """`${VAR}` in every string from `env`; `$${` is a literal `${`."""
    if isinstance(value, str):
        def one(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            var = m.group(1)
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                _fail(path, f"`${{{var}}}` is not an environment variable name", value)
            if var not in env:
                raise SpecError(f"{path}: environment variable {var} is not set (used in {value!r})")
            return env[var]

        return _VAR.sub(one, value)
    if isinstance(value, Mapping):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env) for i, v in enumerate(value)]
    return value


def _parse_eval(raw: object) -> list[Any]:
    """Each entry checked alone, so an error names its index; absent: each trial keeps its preset's eval."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        _fail("eval", "must be a non-empty list of evaluation sets such as {name: synth}", raw)
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            _fail(f"eval[{i}]", "must be a mapping such as {name: cityscapes, root: ...}", entry)
        try:
            _check_datasets(TrialConfig.from_dict({"eval": [entry]}))
        except ConfigError as e:
            head, _, rest = str(e).partition(": ")
            head = re.sub(r"^eval(\[0\])?", f"eval[{i}]", head)
            raise SpecError(f"{head}: {rest}") from None
    return raw


def _parse_grid(raw: object) -> tuple[GridAxis, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        _fail("grid", "must map each axis (loss, seed, a dotted param path) to a list of values", raw)
    axes = []
    for path, values in raw.items():
        where = f"grid.{path}"
        if not isinstance(values, list) or not values:
            _fail(where, "must be a non-empty list of values", values)
        if path == "loss":
            axes.append(_loss_axis(values))
            continue
        _check_param_path(str(path), where)
        if path.startswith("loss.") and "loss" in raw:
            _fail(where, "cannot sit beside a `loss` axis; list the values inside the loss entries", values)
        for i, v in enumerate(values):
            if v in values[:i]:
                _fail(f"{where}[{i}]", f"repeats {where}[{values.index(v)}]", v)
        axes.append(GridAxis(path=path, values=_freeze(values), origins=tuple(f"{where}[{i}]" for i in
                                                                               range(len(values)))))
    return tuple(axes)


def _loss_axis(entries: list[Any]) -> GridAxis:
    """`{name: focal, gamma: [0.5, 1], lambda: [1, 2]}` -> 4 focal variants; options expand in their loss."""
    values: list[dict[str, Any]] = []
    origins: list[str] = []
    resolved: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(entries):
        where = f"grid.loss[{i}]"
        if not isinstance(entry, Mapping):
            _fail(where, "must be a loss such as {name: focal, gamma: 2}", entry)
        if not isinstance(entry.get("options", {}), Mapping):
            _fail(f"{where}.options", "must be a mapping (or options beside `name`)", entry["options"])
        folded = fold_loss_options(entry)
        name = folded["name"]
        if not isinstance(name, str) or name not in LOSSES:
            _fail(f"{where}.name", f"unknown loss; valid losses are {', '.join(sorted(LOSSES))}", name)
        options = LOSSES[name].options
        alternatives: list[list[tuple[Any, str]]] = []
        for key, value in folded["options"].items():
            if key not in options:
                _fail(f"{where}.{key}", f"unknown option of loss {name!r}; its options are "
                      f"{', '.join(options) or 'none'}", value)
            # a list-valued option (class_weights) expands only when given a list of lists
            listed = isinstance(value, list) and (options[key].kind is not tuple or
                                                  all(isinstance(v, list) for v in value))
            if listed and not value:
                _fail(f"{where}.{key}", "must list at least one value", value)
            cands = ([(v, f"{where}.{key}[{j}]") for j, v in enumerate(value)] if listed
                     else [(value, f"{where}.{key}")])
            for v, path in cands:
                try:
                    validate_loss_options(name, {key: v})
                except ConfigError as e:
                    raise SpecError(f"{path}: {e}") from None
            alternatives.append(cands)
        keys = list(folded["options"])
        for combo in itertools.product(*alternatives):
            options_given = dict(zip(keys, (v for v, _ in combo), strict=True))
            full = (name, validate_loss_options(name, options_given))
            if full in resolved:
                _fail(where, f"repeats {origins[resolved.index(full)]} once defaults are filled in",
                      {"name": name, **options_given})
            values.append({"name": name, **options_given})
            origins.append(where)
            resolved.append(full)
    return GridAxis(path="loss", values=_freeze(values), origins=tuple(origins))


def _check_param_path(path: str, where: str) -> None:
    """`path` must name a TrialConfig field (`dataset.labeled_ratio`); the registry checks loss options."""
    keys = path.split(".")
    if keys[0] == "loss":
        if len(keys) > 3 or (len(keys) == 3 and keys[1] != "options"):
            _fail(where, "a loss param is `loss.name`, `loss.<option>` or `loss.options.<option>`", path)
        return
    if keys[0] == "eval":
        _fail(where, "evaluation sets are the same for every trial: list them in the top-level `eval`", path)
    cls: Any = TrialConfig
    for i, key in enumerate(keys):
        parent = ".".join(keys[:i])
        if cls is None:
            _fail(where, f"{parent} has no sub-keys", path)
        names = [f.name for f in fields(cls) if f.name != "eval"]
        if key not in names:
            of = f" of {parent}" if parent else ""
            _fail(where, f"unknown param; valid keys{of} are {', '.join(names)}", path)
        hint = get_type_hints(cls)[key]
        cls = hint if is_dataclass(hint) else None


def _parse_search(raw: object, grid: tuple[GridAxis, ...]) -> GridSearch | OptunaSearch:
    if raw is None or raw == "grid":
        return GridSearch()
    if not isinstance(raw, Mapping) or list(raw) != ["optuna"]:
        _fail("search", "must be `grid` or {optuna: {num_samples, metric, mode, space}}", raw)
    where = "search.optuna"
    options = _check_keys(where, raw["optuna"], ("num_samples", "metric", "mode", "space", "seed"),
                          required=("num_samples", "metric", "mode", "space"))
    for axis in grid:
        if axis.path != "seed":
            # Ray Tune cannot mix grid_search with OptunaSearch (ValueError); only seeds repeat each sample
            shown = repr(list(axis.values))
            raise SpecError(f"grid.{axis.path}: with search: optuna the grid may only hold `seed`; move this "
                            f"axis into `base` or `search.optuna.space`, but got {shown[:100]}"
                            f"{' ...' if len(shown) > 100 else ''}")
    search = OptunaSearch(**options)
    for path in search.space:
        _check_param_path(path, f"{where}.space.{path}")
        if path in ("seed", "split_seed"):
            _fail(f"{where}.space.{path}", "seeds are not tuned; list them under grid.seed", path)
    return search


def _check_metric(where: str, metric: str, eval_keys: list[str]) -> None:
    key, _, rest = metric.removeprefix("val/").partition("/")
    if not metric.startswith("val/") or key not in eval_keys or not rest:
        _fail(where, f"must be `val/<eval set>/<metric>` with an eval set of {', '.join(eval_keys)}", metric)


def _check_space(search: OptunaSearch, data: dict[str, Any]) -> None:
    """Build a TrialConfig at both ends of each range (each choice): a bad range fails now, not mid-sweep."""
    for path, dist in search.space.items():
        ends = {"low": dist["low"], "high": dist["high"]} if "low" in dist else {
            f"choices[{i}]": c for i, c in enumerate(dist["choices"])}
        for end, value in ends.items():
            try:
                _build_config(_set_param(data, path, value))
            except ConfigError as e:
                raise SpecError(f"search.optuna.space.{path}.{end}: {e}") from None


def _parse_scheduler(raw: object, search: GridSearch | OptunaSearch, eval_keys: list[str]) -> Any:
    if raw is None or raw == "none":
        return NoScheduler()
    if not isinstance(raw, Mapping) or list(raw) != ["asha"]:
        _fail("scheduler", "must be `none` or {asha: {grace_iters, reduction_factor, metric, mode}}", raw)
    valid = ("grace_iters", "reduction_factor", "metric", "mode")
    options = dict(_check_keys("scheduler.asha", raw["asha"], valid, required=("grace_iters",)))
    optuna = isinstance(search, OptunaSearch)
    options.setdefault("metric", search.metric if optuna else f"val/{eval_keys[0]}/miou")
    options.setdefault("mode", search.mode if optuna else "max")
    return ASHAScheduler(**options)


def _parse_report(raw: object) -> FrozenDict:
    report = _check_keys("report", raw or {}, ("baseline", "rows", "columns"))
    if not isinstance(report.get("baseline", {}), Mapping):
        _fail("report.baseline", "must map params to values, e.g. {loss: ce}", report["baseline"])
    for key in ("rows", "columns"):
        if not isinstance(report.get(key, ""), str):
            _fail(f"report.{key}", "must be a string", report[key])
    return _freeze(report)


# --- grid points -> TrialConfigs ----------------------------------------------------------------------------


def apply_params(cfg: TrialConfig, params: Mapping[str, Any]) -> TrialConfig:
    """`cfg` with dotted params set (`{"loss.gamma": 2.0}`): how an Optuna sample becomes a trial."""
    data = cfg.to_dict()
    for path, value in params.items():
        data = _set_param(data, path, value)
    return TrialConfig.from_dict(data)


def _set_param(data: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with `path` set; a mapping merges into what is there, except a whole `loss`."""
    out = _thaw(data)  # a deep copy
    *parents, leaf = path.split(".")
    node = out
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    old, new = node.get(leaf), _thaw(value)
    merge = isinstance(old, dict) and isinstance(new, dict) and path != "loss"
    node[leaf] = deep_merge(old, new) if merge else new
    return out


def _trial_data(base: Mapping[str, Any], eval_sets: Any, resources: Resources) -> dict[str, Any]:
    data = _thaw(base)
    if eval_sets:
        data["eval"] = _thaw(eval_sets)
    device = data.get("device")
    if 0 < resources.gpu < 1 and (device is None or isinstance(device, dict)):
        # a shared GPU caps the trial's CUDA memory (DESIGN.md "Runs"), unless the file sets the cap itself
        data["device"] = {"memory_fraction": float(resources.gpu), **(device or {})}
    return data


def _build_points(base: Mapping[str, Any], grid: tuple[GridAxis, ...], eval_sets: Any,
                  resources: Resources) -> list[_Point]:
    start = _trial_data(base, eval_sets, resources)
    points = []
    for picks in itertools.product(*(range(len(axis.values)) for axis in grid)):
        data = start
        for axis, i in zip(grid, picks, strict=True):
            data = _set_param(data, axis.path, axis.values[i])
        try:
            cfg = _build_config(data)
            _check_device(cfg, resources)
        except ConfigError as e:
            raise SpecError(_blame(str(e), grid, picks)) from None
        points.append(_Point(cfg, picks))
    return points


def _build_config(data: dict[str, Any]) -> TrialConfig:
    loss = data.get("loss")
    if isinstance(loss, Mapping):  # shapes the registry would trip over with a TypeError
        if not isinstance(loss.get("name", "ce"), str):
            raise ConfigError(f"loss.name: must be a loss name, but got {loss['name']!r}")
        if not isinstance(loss.get("options", {}), Mapping):
            raise ConfigError(f"loss.options: must be a mapping, but got {loss['options']!r}")
    cfg = TrialConfig.from_dict(data)
    _check_datasets(cfg)
    return cfg


def _check_datasets(cfg: TrialConfig) -> None:
    """Dataset names against the registry (TrialConfig does not check them yet)."""
    valid = ", ".join(sorted(DATASETS))
    if cfg.dataset.name not in DATASETS:
        raise ConfigError(f"dataset.name: unknown dataset; valid datasets are {valid}, "
                          f"but got {cfg.dataset.name!r}")
    for i, e in enumerate(cfg.eval):
        if e.name not in DATASETS:
            raise ConfigError(f"eval[{i}].name: unknown dataset; valid datasets are {valid}, "
                              f"but got {e.name!r}")


def _check_device(cfg: TrialConfig, resources: Resources) -> None:
    device = cfg.device.device
    if device == "cuda" and resources.gpu == 0:
        raise ConfigError("device.device: 'cuda' needs resources.gpu > 0 (Ray shows a trial only the GPUs it "
                          "reserves), but got 'cuda'")
    if device == "cpu" and resources.gpu > 0:
        raise ConfigError(f"device.device: 'cpu' leaves the reserved resources.gpu ({resources.gpu:g}) idle, "
                          "but got 'cpu'")


def _blame(message: str, grid: tuple[GridAxis, ...], picks: tuple[int, ...]) -> str:
    """A TrialConfig error (`dataset.labeled_ratio: must be ...`), moved to the sweep file's key path."""
    head, _, rest = message.partition(": ")
    if head.startswith("loss "):  # the registry's "loss 'focal': option lambda ..."
        head, rest = "loss", message
    head = "" if head == "config" else head
    param = re.sub(r"\[\d+\]", "", head)
    if param.startswith("eval"):
        return f"{head}: {rest}"
    for axis, i in zip(grid, picks, strict=True):
        if param == axis.path or param.startswith(axis.path + "."):
            return f"{axis.origins[i]}{head[len(axis.path):]}: {rest}"
        if axis.path.startswith(param + "."):  # e.g. a `loss.gamma` axis that the whole loss refuses
            return f"{axis.origins[i]}: {rest}"
    # not a grid value itself, but it may clash with one (aspp_branches_effective vs a dilations axis)
    point = f" (at {', '.join(axis.origins[i] for axis, i in zip(grid, picks, strict=True))})" if grid else ""
    return f"base.{head}: {rest}{point}" if head else f"base: {rest}{point}"


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# --- names --------------------------------------------------------------------------------------------------


def _trial_names(grid: tuple[GridAxis, ...], points: list[_Point]) -> list[str]:
    loss_at = next((k for k, axis in enumerate(grid) if axis.path == "loss"), None)
    order = {"split_seed": 1, "seed": 2}  # seeds last: `focal-g2-l1-split0-s1`
    tail = sorted((k for k, axis in enumerate(grid) if axis.path != "loss" and len(axis.values) > 1),
                  key=lambda k: order.get(grid[k].path, 0))
    shapes = _distinct_option_values(grid[loss_at].values) if loss_at is not None else {}
    names = []
    for point in points:
        if loss_at is None:
            parts = [point.config.loss.name]
        else:
            variant = grid[loss_at].values[point.picks[loss_at]]
            parts = [variant["name"]]
            parts += [_label(k, v, shapes[k].index(v)) for k, v in variant.items() if k != "name"]
        parts += [_label(grid[k].path, grid[k].values[point.picks[k]], point.picks[k]) for k in tail]
        names.append("-".join(p for p in parts if p))
    counts = Counter(names)  # only when two params share a short form and a value; make them unique anyway
    return [f"{n}-{k}" if counts[n] > 1 else n for k, n in enumerate(names)]


def _distinct_option_values(variants: tuple[Any, ...]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for variant in variants:
        for key, value in variant.items():
            if value not in out.setdefault(key, []):
                out[key].append(value)
    return out


def _label(path: str, value: Any, index: int) -> str:
    """`seed`, 0 -> `s0`; `s4gan.gan`, False -> `nogan`; a mapping or a long list -> its index (`w1`)."""
    short = ABBREV.get(path, ABBREV.get(path.rsplit(".", 1)[-1], path.rsplit(".", 1)[-1]))
    if isinstance(value, bool):
        return short if value else f"no{short}"
    if isinstance(value, (list, tuple)) and len(value) <= 3 and all(_scalar(v) for v in value):
        text = "x".join(_text(v) for v in value)
    elif _scalar(value):
        text = _text(value)
    else:
        text = str(index)
    return f"{short}{text}"


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _text(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return re.sub(r"[^A-Za-z0-9_.+]", "_", text)


# --- the --dry-run text -------------------------------------------------------------------------------------


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


# --- shipped sweep files ------------------------------------------------------------------------------------


def shipped_spaces() -> list[Path]:
    """The sweep files installed with the package (search_spaces/*.yaml), sorted by name."""
    from search_spaces import shipped_files

    return shipped_files()


def resolve_spec_path(arg: str | None) -> Path:
    """None -> the shipped smoke.yaml; a bare name (`smoke`) -> that shipped file; else an existing file."""
    shipped = {p.stem: p for p in shipped_spaces()}
    known = ", ".join(shipped) or "none"
    name = "smoke" if arg is None else arg
    if "/" not in name and os.sep not in name and not name.endswith((".yaml", ".yml")) and name in shipped:
        return shipped[name]
    path = Path(name).expanduser().resolve()
    if not path.is_file():
        raise SpecError(f"{path}: no such sweep file (shipped sweeps: {known})")
    return path


# --- YAML ---------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads `1e-5` as a number (YAML 1.1 would need `1.0e-5`)."""


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
                              list("-+0123456789."))
