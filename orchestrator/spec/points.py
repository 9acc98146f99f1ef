"""Grid points -> TrialConfigs: the base, each axis's value set at its param path, every point validated.

A TrialConfig error (`dataset.labeled_ratio: must be ...`) is moved to the sweep file's key path that caused it
(`grid.dataset.labeled_ratio[1]`, `base.dataset.name`); the file name is put in front by the caller.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from orchestrator.spec.rules import SpecError
from trainers.config import ConfigError, FrozenDict, TrialConfig, set_param

if TYPE_CHECKING:
    from orchestrator.spec.model import GridAxis, Resources


class Point(NamedTuple):
    config: TrialConfig
    picks: tuple[int, ...]  # the value index on each grid axis


def trial_data(base: Mapping[str, Any], eval_sets: Any, resources: Resources) -> dict[str, Any]:
    data = thaw(base)
    if eval_sets:
        data["eval"] = thaw(eval_sets)
    device = data.get("device")
    if 0 < resources.gpu < 1 and (device is None or isinstance(device, dict)):
        # a shared GPU caps the trial's CUDA memory (DESIGN.md "Runs"), unless the file sets the cap itself
        data["device"] = {"memory_fraction": float(resources.gpu), **(device or {})}
    return data


def build_points(base: Mapping[str, Any], grid: tuple[GridAxis, ...], eval_sets: Any,
                 resources: Resources) -> list[Point]:
    start = trial_data(base, eval_sets, resources)
    points = []
    for picks in itertools.product(*(range(len(axis.values)) for axis in grid)):
        data = start
        for axis, i in zip(grid, picks, strict=True):
            data = set_param(data, axis.path, axis.values[i])
        try:
            cfg = build_config(data)
            _check_device(cfg, resources)
        except ConfigError as e:
            raise SpecError(_blame(str(e), grid, picks)) from None
        points.append(Point(cfg, picks))
    return points


def build_config(data: dict[str, Any]) -> TrialConfig:
    loss = data.get("loss")
    if isinstance(loss, Mapping):  # shapes the registry would trip over with a TypeError
        if not isinstance(loss.get("name", "ce"), str):
            raise ConfigError(f"loss.name: must be a loss name, but got {loss['name']!r}")
        if not isinstance(loss.get("options", {}), Mapping):
            raise ConfigError(f"loss.options: must be a mapping, but got {loss['options']!r}")
    return TrialConfig.from_dict(data)


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


def freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
