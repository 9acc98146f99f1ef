"""TrialConfig: everything one s4GAN trial needs, as frozen keyword-only dataclasses.

Every part validates itself at construction and names the field, the value and the allowed range when it refuses.
`TrialConfig.from_dict` starts from a preset (`paper`, `tiny`, `micro`, see `presets.py`), applies the given
overrides, rejects unknown keys and converts types; `to_dict` gives the fully resolved dict, so
`TrialConfig.from_dict(cfg.to_dict()) == cfg` always holds.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from trainers.data.remap import remap_from_text
from trainers.data.tables import DATASETS, LABEL_SETS, dataset_info
from trainers.errors import ConfigError
from trainers.presets import deep_merge, preset_dict

Precision = Literal["fp32", "bf16", "fp16", "auto"]
Backbone = Literal["resnet101", "resnet50", "tiny"]
BNMode = Literal["train_frozen_affine", "eval_frozen", "trainable"]


def _require(ok: bool, path: str, rule: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{path}: {rule}, but got {value!r}")


def _positive_pair(path: str, value: tuple[int, int]) -> None:
    _require(len(value) == 2 and all(v > 0 for v in value), path, "must be two positive integers (H, W)", value)


def _check_dataset_name(path: str, name: str) -> None:
    _require(name in DATASETS, path, f"must be one of {', '.join(sorted(DATASETS))}", name)


def _check_label_set(path: str, name: str, label_set: str | None) -> None:
    valid = LABEL_SETS[name]
    _require(label_set is None or label_set in valid, path, f"must be one of {', '.join(valid)} for {name}",
             label_set)


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    """Where the training images come from and how they are cut into crops."""

    name: str = "synth"  # a key of trainers.data.tables.DATASETS
    root: str | None = None  # None for `synth`: generated on first use under the run directory
    label_set: str | None = None  # dataset-specific (IDD: level1..level4, cs19); None = the dataset's default
    labeled_ratio: float = 0.125  # labeled subset = first int(ratio * N) of a split_seed permutation
    scale: float = 0.5  # resize factor applied before cropping (the reference halves Cityscapes)
    crop_size: tuple[int, int] = (256, 512)
    flip: bool = True
    synth_images: int = 48  # `synth` only: train images generated (val gets a quarter)
    cache_mb: int = 512  # decoded, rescaled training images kept in memory (per loader process)

    def __post_init__(self) -> None:
        _check_dataset_name("dataset.name", self.name)
        _check_label_set("dataset.label_set", self.name, self.label_set)
        _require(0.0 < self.labeled_ratio <= 1.0, "dataset.labeled_ratio", "must be in (0, 1]", self.labeled_ratio)
        _require(0.0 < self.scale <= 4.0, "dataset.scale", "must be in (0, 4]", self.scale)
        _positive_pair("dataset.crop_size", self.crop_size)
        _require(self.synth_images >= 4, "dataset.synth_images", "must be >= 4", self.synth_images)
        _require(self.cache_mb >= 0, "dataset.cache_mb", "must be >= 0", self.cache_mb)


@dataclass(frozen=True, kw_only=True)
class EvalSetConfig:
    """One evaluation set; its metrics are logged under `val/<key>/...`."""

    name: str = "synth"
    root: str | None = None
    label_set: str | None = None  # None = the dataset's default (IDD: level3)
    # how the model's classes reach this set's, `SOURCE->TARGET` (e.g. `level4->cs19`; trainers/data/remap.py);
    # None = the model predicts exactly this set's classes
    remap: str | None = None
    split: str = "val"
    # images (and labels, nearest) resized to this before scoring; None = the dataset's evaluation size
    # (Cityscapes 512x1024, IDD 360x640), filled in at construction so the resolved size is logged
    eval_size: tuple[int, int] | None = None
    max_images: int | None = None  # None = the whole split
    key: str | None = None  # metric prefix; defaults to `name`

    def __post_init__(self) -> None:
        _check_dataset_name("eval.name", self.name)
        _check_label_set("eval.label_set", self.name, self.label_set)
        if self.eval_size is None:
            object.__setattr__(self, "eval_size", dataset_info(self.name, self.label_set).eval_size)
        _positive_pair("eval.eval_size", self.size)
        _require(self.max_images is None or self.max_images > 0, "eval.max_images", "must be > 0", self.max_images)
        _require(self.split in ("train", "val"), "eval.split", "must be 'train' or 'val'", self.split)
        if self.remap is not None:  # a malformed remap, or one that is not a function, fails here
            target = remap_from_text(self.remap).target
            scored = dataset_info(self.name, self.label_set).label_set
            _require(target == scored, "eval.remap", f"must end in {self.name}'s label set {scored}", self.remap)

    @property
    def metric_key(self) -> str:
        return self.key or self.name

    @property
    def size(self) -> tuple[int, int]:
        """The evaluation size: `eval_size`, typed as never None (construction fills it in from the dataset)."""
        assert self.eval_size is not None  # narrowing only: __post_init__ always sets it
        return self.eval_size


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """DeepLabv2 generator and s4GAN discriminator; defaults reproduce the reference (s4gan.md §1.2-1.3)."""

    backbone: Backbone = "resnet101"
    pretrained: str = "none"  # "none" or a path to a local .pth; never downloaded
    stride_in_1x1: bool = True  # Caffe layout of the reference; torchvision strides the 3x3
    aspp_dilations: tuple[int, ...] = (6, 12, 18, 24)
    aspp_branches_effective: int = 2  # 2 = the reference's early-return bug, 4 = all branches summed
    bn_mode: BNMode = "train_frozen_affine"
    tiny_width: int = 32  # channels of the first stage of the `tiny` backbone
    classifier_lr_mult: float = 10.0
    d_channels: int = 64  # discriminator width (64-128-256-512 in the reference)
    d_dropout: float = 0.5

    def __post_init__(self) -> None:
        n = len(self.aspp_dilations)
        _require(n >= 1 and all(d > 0 for d in self.aspp_dilations), "model.aspp_dilations",
                 "must be positive integers", self.aspp_dilations)
        _require(1 <= self.aspp_branches_effective <= n, "model.aspp_branches_effective",
                 f"must be in [1, {n}] (the number of dilations)", self.aspp_branches_effective)
        _require(self.tiny_width >= 4, "model.tiny_width", "must be >= 4", self.tiny_width)
        _require(self.classifier_lr_mult > 0, "model.classifier_lr_mult", "must be > 0", self.classifier_lr_mult)
        _require(self.d_channels >= 1, "model.d_channels", "must be >= 1", self.d_channels)
        _require(0.0 <= self.d_dropout < 1.0, "model.d_dropout", "must be in [0, 1)", self.d_dropout)


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """The supervised loss: a name from trainers.losses.LOSSES and its hyper-parameters.

    The registry checks which options each loss takes (`options` lists only those that apply), so a typo such as
    `gama` or a focal option on CE is an error, not a silently ignored key.
    """

    name: str = "ce"
    options: Mapping[str, float | str | tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from trainers.losses.options import validate_loss_options  # late: the losses package imports torch

        object.__setattr__(self, "options", FrozenDict(validate_loss_options(self.name, self.options)))


class FrozenDict(dict):  # type: ignore[type-arg]
    """A dict that refuses changes after construction and pickles (Ray ships configs to workers)."""

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("config options are read-only; build a new config with TrialConfig.with_overrides")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self) -> tuple[type, tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))


@dataclass(frozen=True, kw_only=True)
class S4GANConfig:
    """The semi-supervised terms (s4gan.md §1.4). `gan=False` is the supervised-only control."""

    gan: bool = True
    lambda_fm: float = 0.1
    lambda_st: float = 1.0
    threshold_st: float = 0.7  # Cityscapes value of the reference README
    st_loss: Literal["same", "ce"] = "same"
    d_input_norm: Literal["batch_minmax", "per_image"] = "batch_minmax"
    gt_norm_bug: bool = True  # reference: GT images normalised with the labeled batch's range

    def __post_init__(self) -> None:
        _require(self.lambda_fm >= 0, "s4gan.lambda_fm", "must be >= 0", self.lambda_fm)
        _require(self.lambda_st >= 0, "s4gan.lambda_st", "must be >= 0", self.lambda_st)
        _require(0.0 <= self.threshold_st <= 1.0, "s4gan.threshold_st", "must be in [0, 1]", self.threshold_st)


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """SGD + poly for G, Adam + poly for D (s4gan.md §1.5)."""

    lr: float = 2.5e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_d: float = 1e-5
    betas_d: tuple[float, float] = (0.9, 0.99)
    poly_power: float = 0.9

    def __post_init__(self) -> None:
        _require(self.lr > 0, "optim.lr", "must be > 0", self.lr)
        _require(self.lr_d > 0, "optim.lr_d", "must be > 0", self.lr_d)
        _require(0.0 <= self.momentum < 1.0, "optim.momentum", "must be in [0, 1)", self.momentum)
        _require(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0", self.weight_decay)
        _require(len(self.betas_d) == 2 and all(0.0 <= b < 1.0 for b in self.betas_d), "optim.betas_d",
                 "must be two values in [0, 1)", self.betas_d)
        _require(self.poly_power >= 0, "optim.poly_power", "must be >= 0", self.poly_power)


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """How long a trial trains and how often it logs, evaluates and checkpoints (all in iterations)."""

    iterations: int = 40000
    batch_labeled: int = 8
    batch_unlabeled: int = 8
    batch_d: int = 8
    log_every: int = 50
    eval_every: int = 5000
    checkpoint_every: int = 5000
    num_samples: int = 4  # fixed validation images saved as input / ground truth / prediction

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_labeled", "batch_unlabeled", "batch_d", "log_every", "eval_every",
                     "checkpoint_every"):
            _require(getattr(self, name) >= 1, f"schedule.{name}", "must be >= 1", getattr(self, name))
        _require(self.num_samples >= 0, "schedule.num_samples", "must be >= 0", self.num_samples)


@dataclass(frozen=True, kw_only=True)
class PrecisionConfig:
    """fp32 (default, comparable across machines), bf16/fp16 autocast, or auto (bf16 + channels_last where fast).

    Losses, the discriminator's softmax input, metrics and optimiser state stay fp32 whatever is chosen.
    """

    precision: Precision = "fp32"
    channels_last: bool = False
    tf32: bool = True  # CUDA only: TF32 tensor cores for fp32 matmuls and convolutions
    # torch.compile G and D in place (state-dict keys unchanged). Opt-in: the first steps pay the compile time, and
    # a backend failure falls back to eager with a warning instead of failing the trial.
    compile: bool = False


@dataclass(frozen=True, kw_only=True)
class DeviceConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None  # torch intra-op threads; None = leave torch's default
    workers: int = 0  # data-loader worker processes
    memory_fraction: float | None = None  # set from a fractional-GPU trial

    def __post_init__(self) -> None:
        _require(self.threads is None or self.threads >= 1, "device.threads", "must be >= 1", self.threads)
        _require(self.workers >= 0, "device.workers", "must be >= 0", self.workers)
        _require(self.memory_fraction is None or 0.0 < self.memory_fraction <= 1.0, "device.memory_fraction",
                 "must be in (0, 1]", self.memory_fraction)


@dataclass(frozen=True, kw_only=True)
class TrialConfig:
    preset: str = "paper"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    eval: tuple[EvalSetConfig, ...] = (EvalSetConfig(),)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    s4gan: S4GANConfig = field(default_factory=S4GANConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    seed: int = 0
    split_seed: int = 0

    def __post_init__(self) -> None:
        _require(len(self.eval) >= 1, "eval", "must list at least one evaluation set", self.eval)
        keys = [e.metric_key for e in self.eval]
        _require(len(set(keys)) == len(keys), "eval", "evaluation sets need distinct names (or `key`s)", keys)
        if self.preset == "micro":
            _require(self.schedule.iterations <= 20, "schedule.iterations", "must be <= 20 with preset micro",
                     self.schedule.iterations)
        _require(self.seed >= 0, "seed", "must be >= 0", self.seed)
        _require(self.split_seed >= 0, "split_seed", "must be >= 0", self.split_seed)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialConfig:
        """Preset defaults, overridden by `data` (nested dicts merge key by key; lists replace)."""
        preset = data.get("preset", "paper")
        merged = deep_merge(preset_dict(preset), dict(data))
        if isinstance(merged.get("loss"), Mapping):
            merged["loss"] = fold_loss_options(merged["loss"])
        return _build(cls, merged, "")

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrialConfig:
        return TrialConfig.from_dict(deep_merge(self.to_dict(), dict(overrides)))

    def with_params(self, params: Mapping[str, Any]) -> TrialConfig:
        """This config with dotted params set (`{"loss.gamma": 2.0}`): how an Optuna sample becomes a trial."""
        data = self.to_dict()
        for path, value in params.items():
            data = set_param(data, path, value)
        return TrialConfig.from_dict(data)


# --- dict <-> dataclass ---------------------------------------------------------------------------------------


def fold_loss_options(loss: Mapping[str, Any]) -> dict[str, Any]:
    """Accept the sweep-file form `{name: focal, gamma: 2}` beside `{name: focal, options: {gamma: 2}}`."""
    flat = {k: v for k, v in loss.items() if k not in ("name", "options")}
    given = loss.get("options") or {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"loss.options: expected a mapping, but got {given!r}")
    if not isinstance(loss.get("name", "ce"), str):
        raise ConfigError(f"loss.name: expected a string, but got {loss.get('name')!r}")
    options = {**dict(given), **flat}
    return {"name": loss.get("name", "ce"), "options": options}


def set_param(data: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `data` with the dotted `path` set; a mapping merges into what is there, except a whole `loss`."""
    out = copy.deepcopy(_to_plain(data))
    *parents, leaf = path.split(".")
    node = out
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    old, new = node.get(leaf), copy.deepcopy(_to_plain(value))
    merge = isinstance(old, dict) and isinstance(new, dict) and path != "loss"
    node[leaf] = deep_merge(old, new) if merge else new
    return out


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, path: str) -> Any:
    where = path or "config"
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, but got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(names)}")
    kwargs = {k: _convert(hints[k], v, f"{path}.{k}" if path else k) for k, v in data.items()}
    return cls(**kwargs)


def _convert(tp: Any, value: Any, path: str) -> Any:  # noqa: C901 - one branch per supported type form
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return _convert(arm, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: must be one of {', '.join(map(repr, args))}, but got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, but got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{path}: expected {len(args)} values, but got {value!r}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin in (Mapping, dict) or tp is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, but got {value!r}")
        return {k: (tuple(v) if isinstance(v, list) else v) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, but got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, but got {value!r}")
        if not -(2**63) <= value < 2**63:  # torch and numpy take 64-bit seeds and sizes; a trial would fail later
            raise ConfigError(f"{path}: expected an integer of at most 64 bits, but got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, but got {value!r}")
        number = float(value) if not isinstance(value, int) or abs(value) < 2**1000 else math.inf
        if not math.isfinite(number):  # `lr <= 0`-style checks let nan and inf through
            raise ConfigError(f"{path}: expected a finite number, but got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, but got {value!r}")
        return value
    raise TypeError(f"{path}: unsupported config type {tp}")  # a bug in this module, not user input
