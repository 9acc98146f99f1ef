"""Every loss's options, typed, with defaults and rules: the table a sweep file and a LossConfig are checked against.

The loss registry (`LOSSES` in trainers/losses/__init__.py) holds the functions and modules; this table holds what
each one accepts, so checking a config needs neither the registry nor torch. A test holds the two key sets equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from trainers.errors import ConfigError
from trainers.losses.weights import parse_recipe


class LossOptionError(ValueError):
    """A loss cannot be built from its options and the data (a weight recipe without class counts, ...)."""


@dataclass(frozen=True)
class Option:
    kind: type
    default: Any
    check: Callable[[Any], bool] = lambda v: True
    rule: str = ""



_GAMMA = Option(float, 2.0, lambda g: 0.0 <= g <= 10.0, "must be in [0, 10]")
_LAMBDA = Option(float, 1.0, lambda v: v >= 1.0, "must be >= 1 (below 1 the base lambda - p_t turns negative)")
_ALPHA = Option(float, 0.5, lambda a: 0.0 <= a <= 1.0, "must be in [0, 1]")
_BETA = Option(float, 0.5, lambda b: 0.0 <= b <= 1.0, "must be in [0, 1]")
_OVR_ALPHA = Option(float, 0.25, lambda a: 0.0 <= a <= 1.0 or a == -1.0,
                    "must be in [0, 1], or -1 to turn the positive/negative balance off")
_SQUARED = Option(bool, False)
_SMOOTH = Option(float, 0.0, lambda s: s >= 0.0, "must be >= 0")
# a list of C non-negative numbers, or a recipe name (checked by parse_recipe in validate_loss_options)
_WEIGHTS = Option(tuple, None, lambda w: w is None or isinstance(w, str) or all(x >= 0 for x in w),
                  "must be non-negative numbers")
_RECIPE = Option(tuple, "effective_number", lambda w: isinstance(w, str),
                 "must be a class-weight recipe (auto derives everything from the labeled split's counts)")
_TV_ALPHA = Option(float, 0.3, lambda a: 0.0 <= a <= 1.0, "must be in [0, 1] (the false-positive weight)")
_TV_BETA = Option(float, 0.7, lambda b: 0.0 <= b <= 1.0, "must be in [0, 1] (the false-negative weight)")
_RHO = Option(float, 0.99, lambda r: 0.0 <= r < 1.0, "must be in [0, 1) (EMA momentum per labeled step)")


def _choice(default: str, *choices: str) -> Option:
    return Option(str, default, lambda v: v in choices, f"must be one of {', '.join(choices)}")


OPTIONS: dict[str, dict[str, Option]] = {
    "ce": {"class_weights": _WEIGHTS},
    "focal": {"gamma": _GAMMA, "lambda": _LAMBDA, "class_weights": _WEIGHTS},
    "focal_ovr": {"gamma": _GAMMA, "alpha": _OVR_ALPHA},
    "dice": {"squared": _SQUARED, "smooth": _SMOOTH},
    "combo": {"alpha": _ALPHA, "class_weights": _WEIGHTS},
    "combo_paper": {"alpha": _ALPHA, "beta": _BETA},
    # peer losses (losses.md §1.7-1.12)
    "tversky": {"alpha": _TV_ALPHA, "beta": _TV_BETA, "smooth": _SMOOTH},
    "focal_tversky": {"alpha": _TV_ALPHA, "beta": _TV_BETA, "smooth": _SMOOTH,
                      "gamma": Option(float, 4.0 / 3.0, lambda g: 0.0 < g <= 10.0, "must be in (0, 10]")},
    "generalised_dice": {"weighting": _choice("square", "square", "simple", "uniform"), "smooth": _SMOOTH},
    "lovasz": {},
    "ohem_ce": {"thresh": Option(float, 0.7, lambda t: 0.0 < t <= 1.0, "must be in (0, 1]"),
                "min_kept": Option(int, 100_000, lambda k: k >= 1, "must be >= 1")},
    "recall_ce": {},
    # adaptive losses (losses.md §5)
    "adaptive_weight_ce": {
        "score": _choice("iou", "iou", "recall"), "rho": _RHO,
        "kappa": Option(float, 1.0, lambda k: 0.0 < k <= 4.0, "must be in (0, 4]"),
        "eps": Option(float, 0.05, lambda e: 0.0 < e <= 1.0, "must be in (0, 1]"),
        "w_min": Option(float, 0.25, lambda w: 0.0 < w <= 1.0, "must be in (0, 1]"),
        "w_max": Option(float, 4.0, lambda w: 1.0 <= w <= 100.0, "must be in [1, 100]"),
        "warmup": Option(int, 500, lambda t: t >= 0, "must be >= 0 (labeled steps)"),
        "gamma": Option(float, 0.0, lambda g: 0.0 <= g <= 10.0, "must be in [0, 10] (0: CE, > 0: focal)"),
    },
    "adaptive_focal": {
        "gamma": Option(float, 1.0, lambda g: 0.0 < g <= 20.0, "must be in (0, 20] (the initial gamma)"),
        "step_size": Option(float, 1.0, lambda s: 0.0 < s <= 10.0, "must be in (0, 10]"),
        "gamma_min": Option(float, 0.1, lambda g: 0.0 < g <= 1.0, "must be in (0, 1]"),
        "gamma_max": Option(float, 20.0, lambda g: 1.0 <= g <= 50.0, "must be in [1, 50]"),
        "rho": _RHO, "update_every": Option(int, 100, lambda k: k >= 1, "must be >= 1 (labeled steps)"),
    },
    "auto": {"class_weights": _RECIPE},
}


def validate_loss_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults, convert and check `options` for loss `name`; the error names the loss, option and value."""
    if name not in OPTIONS:
        raise ConfigError(f"loss.name: unknown loss {name!r}; valid losses are {', '.join(sorted(OPTIONS))}")
    table = OPTIONS[name]
    unknown = sorted(set(options) - set(table))
    if unknown:
        valid = ", ".join(sorted(table)) or "none"
        raise ConfigError(f"loss {name!r}: unknown option(s) {', '.join(unknown)}; its options are {valid}")
    out: dict[str, Any] = {}
    for key, opt in table.items():
        value = options.get(key, opt.default)
        if value is not None:
            value = _convert(name, key, opt, value)
        if not opt.check(value):
            raise ConfigError(f"loss {name!r}: option {key} {opt.rule}, but got {value!r}")
        if value is not None:
            out[key] = value
    return out


def _convert(name: str, key: str, opt: Option, value: Any) -> Any:
    if opt.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"loss {name!r}: option {key} expects true or false, but got {value!r}")
        return value
    if opt.kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"loss {name!r}: option {key} expects a string, but got {value!r}")
        return value
    if opt.kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise ConfigError(f"loss {name!r}: option {key} expects a whole number, but got {value!r}")
        return int(value)
    if opt.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"loss {name!r}: option {key} expects a number, but got {value!r}")
        return float(value)
    if isinstance(value, str):  # a class-weight recipe
        try:
            parse_recipe(value)
        except ValueError as e:
            raise ConfigError(f"loss {name!r}: option {key}: {e}") from None
        return value
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                       for x in value):
        hint = " (to compare recipes, write one loss entry per recipe)" if isinstance(value, (list, tuple)) else ""
        raise ConfigError(f"loss {name!r}: option {key} expects a list of numbers or a recipe name{hint}, "
                          f"but got {value!r}")
    return tuple(float(x) for x in value)
