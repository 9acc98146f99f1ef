"""The `grid:` section -> GridAxis per axis. The `loss` axis expands list-valued options inside each loss only
(`{name: focal, gamma: [0.5, 1], lambda: [1, 2]}` is four focal variants); any other axis is a TrialConfig param
path with its list of values."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, NamedTuple, get_type_hints

from orchestrator.spec.model import GridAxis
from orchestrator.spec.points import freeze
from orchestrator.spec.rules import SpecError, fail
from trainers.config import ConfigError, TrialConfig, fold_loss_options
from trainers.losses.options import OPTIONS, validate_loss_options


def parse_grid(raw: object, *, max_trials: int) -> tuple[GridAxis, ...]:
    """The axes in file order; refuses a grid of more than `max_trials` points before expanding anything."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        fail("grid", "must map each axis (loss, seed, a dotted param path) to a list of values", raw)
    for path, values in raw.items():
        if not isinstance(values, list) or not values:
            fail(f"grid.{path}", "must be a non-empty list of values", values)
    variants = loss_variants(raw["loss"]) if "loss" in raw else []
    sizes = {str(path): sum(math.prod(len(c) for c in v.alternatives) for v in variants) if path == "loss"
             else len(values) for path, values in raw.items()}
    total = math.prod(sizes.values())
    if total > max_trials:
        shown = " x ".join(f"{path} {n}" for path, n in sizes.items())
        raise SpecError(f"grid: {total} trials ({shown}), more than the limit of {max_trials}; pass --max-trials "
                        f"{total} to run them all")
    axes = []
    for path, values in raw.items():
        where = f"grid.{path}"
        if path == "loss":
            axes.append(expand_losses(variants))
            continue
        check_param_path(str(path), where)
        if path.startswith("loss.") and "loss" in raw:
            fail(where, "cannot sit beside a `loss` axis; list the values inside the loss entries", values)
        for i, v in enumerate(values):
            if v in values[:i]:
                fail(f"{where}[{i}]", f"repeats {where}[{values.index(v)}]", v)
        axes.append(GridAxis(path=path, values=freeze(values), origins=tuple(f"{where}[{i}]" for i in
                                                                              range(len(values)))))
    return tuple(axes)


class LossVariants(NamedTuple):
    """One `grid.loss` entry before expansion: each option's candidate values, each checked alone."""

    where: str  # grid.loss[i]
    name: str
    keys: list[str]
    alternatives: list[list[tuple[Any, str]]]  # per option: (value, key path of that value)


def loss_variants(entries: list[Any]) -> list[LossVariants]:
    """Check every entry and every candidate value of `grid.loss` (linear in the values listed)."""
    out = []
    for i, entry in enumerate(entries):
        where = f"grid.loss[{i}]"
        if not isinstance(entry, Mapping):
            fail(where, "must be a loss such as {name: focal, gamma: 2}", entry)
        if not isinstance(entry.get("options", {}), Mapping):
            fail(f"{where}.options", "must be a mapping (or options beside `name`)", entry["options"])
        try:
            folded = fold_loss_options(entry)
        except ConfigError as e:  # `loss.name: expected a string, ...`
            raise SpecError(f"{where}{str(e).removeprefix('loss')}") from None
        name = folded["name"]
        if not isinstance(name, str) or name not in OPTIONS:
            fail(f"{where}.name", f"unknown loss; valid losses are {', '.join(sorted(OPTIONS))}", name)
        options = OPTIONS[name]
        alternatives: list[list[tuple[Any, str]]] = []
        for key, value in folded["options"].items():
            if key not in options:
                fail(f"{where}.{key}", f"unknown option of loss {name!r}; its options are "
                     f"{', '.join(options) or 'none'}", value)
            # a list-valued option (class_weights) expands only when given a list of lists
            listed = isinstance(value, list) and (options[key].kind is not tuple or
                                                  all(isinstance(v, list) for v in value))
            if listed and not value:
                fail(f"{where}.{key}", "must list at least one value", value)
            cands = ([(v, f"{where}.{key}[{j}]") for j, v in enumerate(value)] if listed
                     else [(value, f"{where}.{key}")])
            for v, path in cands:
                try:
                    validate_loss_options(name, {key: v})
                except ConfigError as e:
                    raise SpecError(f"{path}: {e}") from None
            alternatives.append(cands)
        out.append(LossVariants(where, name, list(folded["options"]), alternatives))
    return out


def expand_losses(variants: list[LossVariants]) -> GridAxis:
    """`{name: focal, gamma: [0.5, 1], lambda: [1, 2]}` -> 4 focal variants; options expand in their loss."""
    values: list[dict[str, Any]] = []
    origins: list[str] = []
    seen: dict[str, str] = {}  # the variant with defaults filled in -> where it was first listed
    for v in variants:
        for combo in itertools.product(*v.alternatives):
            options_given = dict(zip(v.keys, (value for value, _ in combo), strict=True))
            full = repr((v.name, sorted(validate_loss_options(v.name, options_given).items())))
            if full in seen:
                fail(v.where, f"repeats {seen[full]} once defaults are filled in", {"name": v.name, **options_given})
            seen[full] = v.where
            values.append({"name": v.name, **options_given})
            origins.append(v.where)
    return GridAxis(path="loss", values=freeze(values), origins=tuple(origins))


def check_param_path(path: str, where: str) -> None:
    """`path` must name a TrialConfig field (`dataset.labeled_ratio`); the registry checks loss options."""
    keys = path.split(".")
    if keys[0] == "loss":
        if len(keys) > 3 or (len(keys) == 3 and keys[1] != "options"):
            fail(where, "a loss param is `loss.name`, `loss.<option>` or `loss.options.<option>`", path)
        return
    if keys[0] == "eval":
        fail(where, "evaluation sets are the same for every trial: list them in the top-level `eval`", path)
    cls: Any = TrialConfig
    for i, key in enumerate(keys):
        parent = ".".join(keys[:i])
        if cls is None:
            fail(where, f"{parent} has no sub-keys", path)
        names = [f.name for f in fields(cls) if f.name != "eval"]
        if key not in names:
            of = f" of {parent}" if parent else ""
            fail(where, f"unknown param; valid keys{of} are {', '.join(names)}", path)
        hint = get_type_hints(cls)[key]
        cls = hint if is_dataclass(hint) else None
