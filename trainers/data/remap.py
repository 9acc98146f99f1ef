"""Remaps between label sets: how a model trained on one label set is scored on another (`EvalSetConfig.remap`).

A remap is written `SOURCE->TARGET` with SOURCE the label set the model predicts and TARGET the evaluation set's
(`level4->cs19`; `cs19->cs19` is the identity, for a Cityscapes model scored on IDD's cs19 labels). The five label
sets (IDD level1..level4 and cs19, which is Cityscapes' 19 train classes) are all defined on the raw IDD labels, so a
remap is derived from that one table: source class s maps to the target classes of the raw labels inside s.

- s reaches exactly one target class t (raw labels with no target counterpart aside): s -> t. Those aside never
  matter: their pixels are void in the target ground truth, which is not scored. (level4 `pole` holds pole and
  polegroup; polegroup is void in cs19, so `pole` -> cs19 pole.)
- s reaches no target class: s is *ignored* (`ignored_classes`: level4 autorickshaw, curb, ... for cs19).
- s reaches two or more target classes: the remap is not a function and is refused at config time (level1
  `non-drivable` holds sidewalk and terrain; level4 `sidewalk` holds sidewalk and rail track, two level3 classes).
- a target class no source class reaches cannot be predicted: its ground-truth pixels become ignore and it is
  listed in `unscored_classes` (cs19->level3 leaves `drivable fallback`, `autorickshaw`, ...).

What a pixel is predicted as (trainers/s4gan/evaluate.py, `RemapScorer`): the model's softmax is summed into the
target classes and renormalised over the mapped mass, and the prediction is the argmax. So a pixel's prediction
never maps to ignore: where the model's first choice is an ignored class, the pixel gets its most probable mappable
class and is scored like any other pixel (a miss if that class is wrong). Merged classes add their probabilities.
How often the first choice was an ignored class is recorded as `argmax_ignored_pixels` in the metrics JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trainers.data.labels import IGNORE_INDEX
from trainers.data.labels_idd import IDD_TABLES, LABEL_SETS, SET_ID, members
from trainers.data.tables import dataset_info
from trainers.errors import ConfigError

if TYPE_CHECKING:
    from trainers.config import TrialConfig
    from trainers.data.tables import DatasetInfo


class RemapError(ConfigError):
    """A remap is malformed, not a function, or does not connect the model's label set to the evaluation's."""


@dataclass(frozen=True, eq=False)
class Remap:
    source: str
    target: str
    lut: np.ndarray  # uint8 [number of source classes]: source class -> target class or IGNORE_INDEX
    source_classes: tuple[str, ...]
    target_classes: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"

    @property
    def ignored_classes(self) -> tuple[str, ...]:
        """Source classes with no target counterpart (their probability is dropped before the argmax)."""
        return tuple(n for n, t in zip(self.source_classes, self.lut, strict=True) if t == IGNORE_INDEX)

    @property
    def unscored_classes(self) -> tuple[str, ...]:
        """Target classes no source class reaches: their ground truth is ignored."""
        reached = set(self.lut.tolist())
        return tuple(n for i, n in enumerate(self.target_classes) if i not in reached)

    @property
    def is_identity(self) -> bool:
        return self.source_classes == self.target_classes and (self.lut == np.arange(len(self.lut))).all()

    def describe(self) -> dict[str, Any]:
        """The metrics JSON's `remap` entry: what the report lists in its header."""
        return {
            "remap": self.name, "source": self.source, "target": self.target,
            "ignored_classes": list(self.ignored_classes), "unscored_classes": list(self.unscored_classes),
            "mapping": {s: (self.target_classes[t] if t != IGNORE_INDEX else None)
                        for s, t in zip(self.source_classes, self.lut.tolist(), strict=True)},
        }


def parse_remap(text: str) -> tuple[str, str]:
    source, sep, target = text.partition("->")
    source, target = source.strip(), target.strip()
    if not sep or not source or not target:
        raise RemapError(f"eval.remap: must be written SOURCE->TARGET (e.g. level4->cs19), but got {text!r}")
    for side in (source, target):
        if side not in LABEL_SETS:
            raise RemapError(f"eval.remap: {side!r} is not a label set; valid ones are {', '.join(LABEL_SETS)} "
                             f"(got {text!r})")
    return source, target


def build_remap(source: str, target: str) -> Remap:
    """The remap derived from the IDD table; raises RemapError when a source class reaches two target classes."""
    target_of = SET_ID[target]
    lut = np.full(len(IDD_TABLES[source].classes), IGNORE_INDEX, dtype=np.uint8)
    names = IDD_TABLES[source].classes
    for s, rows in enumerate(members(source)):
        reached = sorted({target_of(r) for r in rows} - {IGNORE_INDEX})
        if len(reached) > 1:
            targets = " and ".join(repr(IDD_TABLES[target].classes[t]) for t in reached)
            raw = ", ".join(r.name for r in rows)
            raise RemapError(f"eval.remap: {source}->{target} is not a function: {source} class {names[s]!r} "
                             f"(raw labels {raw}) maps to the {target} classes {targets}")
        if reached:
            lut[s] = reached[0]
    lut.setflags(write=False)
    return Remap(source, target, lut, names, IDD_TABLES[target].classes)


def remap_from_text(text: str) -> Remap:
    return build_remap(*parse_remap(text))


def eval_remap(model: DatasetInfo, scored: DatasetInfo, remap: str | None, *, where: str) -> Remap | None:
    """The remap that scores a model trained on `model`'s label set on `scored`'s; None when no remap is needed.

    Without a declared remap both must have the same classes; with one, its source must be the model's label set
    and its target the evaluation's.
    """
    if remap is None:
        if model.labels.classes != scored.labels.classes:
            try:
                build_remap(model.label_set, scored.label_set)
                advice = f"declare `remap: {model.label_set}->{scored.label_set}`"
            except RemapError as e:
                advice = f"and no remap connects them ({str(e).removeprefix('eval.remap: ')})"
            raise RemapError(
                f"{where}: the model predicts the {len(model.labels.classes)} {model.label_set} classes of "
                f"{model.name} but {scored.name} is scored on its {len(scored.labels.classes)} {scored.label_set} "
                f"classes; {advice}")
        return None
    found = remap_from_text(remap)
    if found.source != model.label_set:
        raise RemapError(f"{where}.remap: {remap!r} starts from {found.source}, but the model is trained on "
                         f"{model.name} {model.label_set}; write `{model.label_set}->{found.target}`")
    if found.target != scored.label_set:
        raise RemapError(f"{where}.remap: {remap!r} ends in {found.target}, but {scored.name} is scored on "
                         f"{scored.label_set}; write `{found.source}->{scored.label_set}`")
    return found


def eval_remaps(cfg: TrialConfig) -> dict[str, Remap | None]:
    """Every evaluation set's remap (by metric key), checked against the training label set; raises RemapError."""
    model = dataset_info(cfg.dataset.name, cfg.dataset.label_set)
    return {es.metric_key: eval_remap(model, dataset_info(es.name, es.label_set), es.remap, where=f"eval[{i}]")
            for i, es in enumerate(cfg.eval)}
