"""A sweep file (or an already-parsed mapping) -> SweepSpec: `${VAR}` substitution, then every section checked.

Every grid point is built as a TrialConfig here, once, and an error names the file, the key path in it, the broken
rule and the value (`x.yaml: grid.loss[1].lambda[0]: ... must be >= 1 ..., but got 0.5`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from orchestrator.spec.axes import check_param_path, parse_grid
from orchestrator.spec.files import read_sweep_file
from orchestrator.spec.model import (
    ASHAScheduler,
    GridAxis,
    GridSearch,
    NoScheduler,
    OptunaSearch,
    Resources,
    SweepSpec,
)
from orchestrator.spec.points import build_config, build_points, freeze, trial_data
from orchestrator.spec.rules import SpecError, check_keys, fail, number
from trainers import metric_names as M
from trainers.config import ConfigError, FrozenDict, TrialConfig, set_param

DEFAULT_MAX_TRIALS = 1000  # a sweep of more trials is refused unless --max-trials raises the limit
TOP_KEYS = ("name", "description", "base", "grid", "eval", "resources", "search", "scheduler",
            "max_gpu_hours", "report")
BASE_KEYS = tuple(f.name for f in fields(TrialConfig) if f.name != "eval")  # `eval` is a top-level list


def load_spec(path: str | Path, *, env: Mapping[str, str] | None = None,
              max_trials: int = DEFAULT_MAX_TRIALS) -> SweepSpec:
    """Read, substitute `${VAR}` from `env` (default os.environ) and validate a sweep file; a sweep of more than
    `max_trials` trials (`--max-trials`) is refused before its grid is expanded."""
    path = Path(path).expanduser().resolve()
    data, sha256 = read_sweep_file(path)
    return _parse(data, source=str(path), env=env, sha256=sha256, max_trials=max_trials)


def parse_spec(data: Mapping, *, source: str, env: Mapping[str, str] | None = None,
               max_trials: int = DEFAULT_MAX_TRIALS) -> SweepSpec:
    """The same as load_spec from an already-parsed mapping; `source` names it in errors."""
    try:
        canonical = json.dumps(data, sort_keys=True, default=repr)
    except TypeError:  # keys of mixed types cannot be sorted
        canonical = repr(data)
    return _parse(data, source=source, env=env, sha256=hashlib.sha256(canonical.encode()).hexdigest(),
                  max_trials=max_trials)


def _parse(data: object, *, source: str, env: Mapping[str, str] | None, sha256: str, max_trials: int) -> SweepSpec:
    try:
        return _parse_checked(data, source=source, env=os.environ if env is None else env, sha256=sha256,
                              max_trials=max_trials)
    except (SpecError, ConfigError) as e:  # a ConfigError here is a check that forgot its key path: still name the file
        raise SpecError(f"{source}: {e}") from None


def _parse_checked(data: object, *, source: str, env: Mapping[str, str], sha256: str,
                   max_trials: int) -> SweepSpec:
    if not isinstance(data, Mapping):
        fail("(top level)", "a sweep file must be a mapping with at least `name`", data)
    data = check_keys("", _substitute(data, "", env), TOP_KEYS, required=("name",))
    name, description = data["name"], data.get("description") or ""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        fail("name", "must be letters, digits, '_', '.' or '-'", name)
    if not isinstance(description, str):
        fail("description", "must be a string", description)
    base = data.get("base") or {}
    if not isinstance(base, Mapping):
        fail("base", "must be a mapping (a partial TrialConfig)", base)
    if "eval" in base:
        fail("base.eval", "evaluation sets go in the top-level `eval` list", base["eval"])
    check_keys("base", base, BASE_KEYS)
    resources = Resources(**check_keys("resources", data.get("resources") or {}, ("cpu", "gpu")))
    eval_sets = _parse_eval(data.get("eval"))
    grid = parse_grid(data.get("grid"), max_trials=max_trials)
    search = _parse_search(data.get("search"), grid)
    if isinstance(search, OptunaSearch) and search.num_samples > max_trials:
        raise SpecError(f"search.optuna.num_samples: {search.num_samples} trials, more than the limit of "
                        f"{max_trials}; pass --max-trials {search.num_samples} to run them all")
    points = build_points(base, grid, eval_sets, resources)
    for point in points:  # Ray Tune requires the sweep's metric in every result, checkpoints included
        sched = point.config.schedule
        if sched.checkpoint_every < min(sched.eval_every, sched.iterations):
            fail("schedule.checkpoint_every", f"must be >= schedule.eval_every ({sched.eval_every}): a checkpoint "
                 "reports the sweep's metric, and this one would come before the first evaluation",
                 sched.checkpoint_every)
    eval_keys = [e.metric_key for e in points[0].config.eval]
    if isinstance(search, OptunaSearch):
        _check_metric("search.optuna.metric", search.metric, eval_keys)
        _check_space(search, trial_data(base, eval_sets, resources))
    scheduler = _parse_scheduler(data.get("scheduler"), search, eval_keys)
    if isinstance(scheduler, ASHAScheduler):
        _check_metric("scheduler.asha.metric", scheduler.metric, eval_keys)
        shortest = min(p.config.schedule.iterations for p in points)
        if scheduler.grace_iters >= shortest:
            fail("scheduler.asha.grace_iters", f"must be < schedule.iterations ({shortest}), or ASHA stops "
                 "nothing", scheduler.grace_iters)
    budget = data.get("max_gpu_hours")
    if budget is not None and number("max_gpu_hours", budget) <= 0:
        fail("max_gpu_hours", "must be > 0 (or left out)", budget)
    return SweepSpec(name=name, description=description.strip(), source=source, sha256=sha256,
                     base=freeze(base), grid=grid, eval=freeze(eval_sets), resources=resources,
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
                fail(path, f"`${{{var}}}` is not an environment variable name", value)
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
        fail("eval", "must be a non-empty list of evaluation sets such as {name: synth}", raw)
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            fail(f"eval[{i}]", "must be a mapping such as {name: cityscapes, root: ...}", entry)
        try:
            TrialConfig.from_dict({"eval": [entry]})
        except ConfigError as e:
            head, _, rest = str(e).partition(": ")
            head = re.sub(r"^eval(\[0\])?", f"eval[{i}]", head)
            raise SpecError(f"{head}: {rest}") from None
    return raw


def _parse_search(raw: object, grid: tuple[GridAxis, ...]) -> GridSearch | OptunaSearch:
    if raw is None or raw == "grid":
        return GridSearch()
    if not isinstance(raw, Mapping) or list(raw) != ["optuna"]:
        fail("search", "must be `grid` or {optuna: {num_samples, metric, mode, space}}", raw)
    where = "search.optuna"
    options = check_keys(where, raw["optuna"], ("num_samples", "metric", "mode", "space", "seed"),
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
        check_param_path(path, f"{where}.space.{path}")
        if path in ("seed", "split_seed"):
            fail(f"{where}.space.{path}", "seeds are not tuned; list them under grid.seed", path)
    return search


def _check_metric(where: str, metric: str, eval_keys: list[str]) -> None:
    parsed = M.parse_val(metric)
    if parsed is None or parsed[0] not in eval_keys:
        fail(where, f"must be `val/<eval set>/<metric>` with an eval set of {', '.join(eval_keys)}", metric)


def _check_space(search: OptunaSearch, data: dict[str, Any]) -> None:
    """Build a TrialConfig at both ends of each range (each choice): a bad range fails now, not mid-sweep."""
    for path, dist in search.space.items():
        ends = {"low": dist["low"], "high": dist["high"]} if "low" in dist else {
            f"choices[{i}]": c for i, c in enumerate(dist["choices"])}
        for end, value in ends.items():
            try:
                build_config(set_param(data, path, value))
            except ConfigError as e:
                raise SpecError(f"search.optuna.space.{path}.{end}: {e}") from None


def _parse_scheduler(raw: object, search: GridSearch | OptunaSearch, eval_keys: list[str]) -> Any:
    if raw is None or raw == "none":
        return NoScheduler()
    if not isinstance(raw, Mapping) or list(raw) != ["asha"]:
        fail("scheduler", "must be `none` or {asha: {grace_iters, reduction_factor, metric, mode}}", raw)
    valid = ("grace_iters", "reduction_factor", "metric", "mode")
    options = dict(check_keys("scheduler.asha", raw["asha"], valid, required=("grace_iters",)))
    optuna = isinstance(search, OptunaSearch)
    options.setdefault("metric", search.metric if optuna else M.val(eval_keys[0], "miou"))
    options.setdefault("mode", search.mode if optuna else "max")
    return ASHAScheduler(**options)


def _parse_report(raw: object) -> FrozenDict:
    report = check_keys("report", raw or {}, ("baseline", "rows", "columns", "rare_share"))
    if not isinstance(report.get("baseline", {}), Mapping):
        fail("report.baseline", "must map params to values, e.g. {loss: ce}", report["baseline"])
    for key in ("rows", "columns"):
        if not isinstance(report.get(key, ""), str):
            fail(f"report.{key}", "must be a string", report[key])
    if "rare_share" in report and not 0 < number("report.rare_share", report["rare_share"]) < 1:
        fail("report.rare_share", "must be a fraction of the labeled pixels in (0, 1), e.g. 0.01",
             report["rare_share"])
    return freeze(report)
