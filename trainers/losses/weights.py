"""Class-weight recipes: per-class weights from the labeled split's pixel counts (losses.md §1.2, §1.3, §6.9).

A loss option `class_weights` is either one weight per class or a recipe name; a recipe is resolved once, before
training, from `trainers.data.stats.ClassCounts` of the labeled split (ignore pixels masked). With n_c the valid
pixels of class c and f_c = n_c / sum(n):

- `inverse`: w_c = 1 / f_c, renormalised to mean 1 (explodes for rare classes).
- `sqrt_inverse`: w_c = 1 / sqrt(f_c), renormalised to mean 1.
- `median_freq`: w_c = median(freq) / freq_c, freq_c = n_c / (valid pixels of the images containing c)
  (Eigen & Fergus, arXiv:1411.4734; per image, not per batch as some ports count).
- `enet`: w_c = 1 / ln(c + f_c), c = 1.02 or `enet:<c>` (ENet, arXiv:1606.02147); bounded by 1 / ln(c).
- `effective_number`: w_c = (1 - beta) / (1 - beta^n_c), normalised to sum C (Cui et al., arXiv:1901.05555);
  beta = 1 - 1/median(n) or `effective_number:<beta>`. The paper's beta in {0.9 ... 0.9999} gives uniform weights at
  pixel scale (n_c >= 1e5), so the default takes beta from the counts themselves (losses.md §1.3).

A class with no labeled pixel is floored to a count of 1 (for `median_freq` its image pixels to all valid pixels,
the rarest possible frequency); such classes are named in `ClassWeights.floored` and in a warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
ENET_C = 1.02


def inverse_frequency(pixels: np.ndarray) -> np.ndarray:
    w = 1.0 / pixels
    return w / w.mean()


def sqrt_inverse(pixels: np.ndarray) -> np.ndarray:
    w = 1.0 / np.sqrt(pixels)
    return w / w.mean()


def median_frequency(pixels: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    freq = pixels / image_pixels
    return np.median(freq) / freq


def enet(pixels: np.ndarray, c: float = ENET_C) -> np.ndarray:
    return 1.0 / np.log(c + pixels / pixels.sum())


def default_beta(pixels: np.ndarray) -> float:
    """beta = 1 - 1/median(n): the effective number then separates classes around the median count."""
    return 1.0 - 1.0 / float(np.median(pixels))


def effective_number(pixels: np.ndarray, beta: float) -> np.ndarray:
    if beta == 0.0:  # every E_c = 1
        return np.ones_like(pixels)
    # 1 - beta^n as -expm1(n ln(beta)), ln(beta) = log1p(-(1 - beta)): no cancellation for beta near 1
    w = (1.0 - beta) / -np.expm1(pixels * np.log1p(-(1.0 - beta)))
    return w * len(w) / w.sum()


@dataclass(frozen=True)
class Recipe:
    compute: Callable[[np.ndarray, np.ndarray, float | None], np.ndarray]
    parameter: str | None = None  # the one optional parameter, written `name:<value>`
    default: Callable[[np.ndarray], float] | None = None
    check: Callable[[float], bool] = lambda v: True
    rule: str = ""


RECIPES: dict[str, Recipe] = {
    "inverse": Recipe(lambda n, img, _: inverse_frequency(n)),
    "sqrt_inverse": Recipe(lambda n, img, _: sqrt_inverse(n)),
    "median_freq": Recipe(lambda n, img, _: median_frequency(n, img)),
    "enet": Recipe(lambda n, img, c: enet(n, ENET_C if c is None else c), "c", lambda n: ENET_C,
                   lambda c: math.isfinite(c) and c > 1.0, "must be a number > 1 (1/ln(c) is the largest weight)"),
    "effective_number": Recipe(lambda n, img, b: effective_number(n, default_beta(n) if b is None else b), "beta",
                               default_beta, lambda b: 0.0 <= b < 1.0, "must be in [0, 1)"),
}


def recipe_forms() -> str:
    return ", ".join(f"{k}[:<{r.parameter}>]" if r.parameter else k for k, r in RECIPES.items())


def parse_recipe(text: str) -> tuple[str, float | None]:
    """`enet:1.10` -> ("enet", 1.1); ValueError naming the rule and the value for anything else."""
    name, sep, raw = text.partition(":")
    if name not in RECIPES:
        raise ValueError(f"unknown class-weight recipe {text!r}; valid recipes are {recipe_forms()} "
                         "(or a list of one weight per class)")
    recipe = RECIPES[name]
    if not sep:
        return name, None
    if recipe.parameter is None:
        raise ValueError(f"class-weight recipe {name!r} takes no parameter, but got {text!r}")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"class-weight recipe {name!r}: {recipe.parameter} expects a number, "
                         f"but got {raw!r}") from None
    if not recipe.check(value):
        raise ValueError(f"class-weight recipe {name!r}: {recipe.parameter} {recipe.rule}, but got {value}")
    return name, value


@dataclass(frozen=True, kw_only=True)
class ClassWeights:
    """The weights a loss actually uses, with where they came from; `to_json` goes into the trial's info."""

    recipe: str  # as configured (`inverse`, `enet:1.1`), or `given` for an explicit list
    values: tuple[float, ...]
    parameter: dict[str, float] | None = None  # the recipe parameter used, e.g. {"beta": 0.99999}
    floored: tuple[str, ...] = ()  # classes with no labeled pixel, counted as 1 pixel

    def to_json(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "values": list(self.values), "parameter": self.parameter,
                "floored": list(self.floored)}


def class_weights(recipe: str, pixels: Sequence[float], image_pixels: Sequence[float] | None = None, *,
                  class_names: Sequence[str] | None = None) -> ClassWeights:
    """Resolve `recipe` on per-class valid-pixel counts (and, for `median_freq`, the valid pixels of the images that
    contain each class); zero counts are floored to 1 and reported."""
    name, value = parse_recipe(recipe)
    n = np.asarray(pixels, dtype=np.float64)
    img = np.asarray(n if image_pixels is None else image_pixels, dtype=np.float64)
    if n.ndim != 1 or img.shape != n.shape or (n < 0).any() or (img < n).any():
        raise ValueError(f"class counts must be one non-negative count per class, each at most its image pixels, "
                         f"but got pixels={list(pixels)}, image_pixels={None if image_pixels is None else list(img)}")
    names = list(class_names) if class_names is not None else [str(c) for c in range(len(n))]
    zero = n == 0
    floored = tuple(names[c] for c in np.flatnonzero(zero))
    if floored:
        log.warning("class weights %r: no labeled pixel of %s; counted as 1 pixel", recipe, ", ".join(floored))
    all_valid = max(float(n.sum()), 1.0)
    n, img = np.where(zero, 1.0, n), np.where(img == 0, all_valid, img)
    entry = RECIPES[name]
    used = None
    if entry.parameter is not None and entry.default is not None:
        used = {entry.parameter: entry.default(n) if value is None else value}
    weights = entry.compute(n, img, value)
    return ClassWeights(recipe=recipe, values=tuple(float(w) for w in weights), parameter=used, floored=floored)
