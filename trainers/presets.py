"""Named starting points for a TrialConfig (DESIGN.md "Presets").

- `paper`: the reference's Cityscapes recipe (DeepLabv2-ResNet-101, half resolution, 256x512 crops, batch 8+8+8,
  40k iterations, SGD 2.5e-4 / Adam 1e-5, lambda_fm 0.1, lambda_st 1.0, threshold 0.7), fp32.
- `tiny`: the same trainer with a small dilated backbone on whole 96x192 generated images (768, half labeled); a
  CPU trial in about a minute (600 iterations).
- `micro`: `tiny` at 32x64 crops of 8 images at half scale, at most 20 iterations: for tests, seconds per trial.

A preset is a plain nested dict of overrides on the dataclass defaults (which are the paper's values).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainers.errors import ConfigError


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`: nested mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for key, value in over.items():
        # a loss block replaces the preset's loss whole: options of one loss mean nothing to another
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key not in ("loss", "options"):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out

_PAPER: dict[str, Any] = {
    "model": {"backbone": "resnet101"},
    "dataset": {"scale": 0.5, "crop_size": [256, 512]},
    "schedule": {"iterations": 40000, "batch_labeled": 8, "batch_unlabeled": 8, "batch_d": 8,
                 "log_every": 50, "eval_every": 5000, "checkpoint_every": 5000},
}

# 2026-12-07, generator version 3: scenes drawn at 96x192, the tiny preset's size, with rare things near enough to
# cover a few output cells, and 768 of them (the rare classes were memorised but did not generalise from 96 labeled
# images: supervised-only, 8000 iterations, train mIoU 53 against validation 31; from 384, 6000 iterations give 54.5
# against 46.3, bench/learnability.py). lr 3e-3: at 600 iterations 22.8 against 21.3 at 1e-3 (seed 0; 13 against 8
# classes above 0); Adam, a 10x classifier, lr 1e-2 and 64x128 crops were no better. Below, the history at 128x256.
#
# How `tiny` got here (validation mIoU on the generated scenes at 128x256, seed 0 unless noted; the colour-only 1x1
# conv scores 5.4 on the 12 validation scenes of a 48-image set, 5.9 on the 48 of a 192-image set):
# - 300 iterations at width 32, D at 32 channels, 48 images (24 labeled), classifier at 10x: 17.6 +- 0.6 (3 seeds).
#   Its limit was the data, not the schedule: supervised-only, 1500 iterations fit the training images better (train
#   mIoU 28 -> 40) but validation stayed at 19.1; with 192 images (96 labeled) the same run reaches 24.2.
# - the classifier at the backbone's lr instead of the reference's 10x: 20.9 / 20.5 against 19.3 / 19.7 (seeds 0, 1;
#   supervised-only, 192 images, 300 iterations).
# - width 16 learns less per iteration than 32 (19.7 against 20.9 at 300 supervised iterations, classifier at 1x) but
#   catches up with more of them (24.7 at 900). Width 16 with D at 16 channels takes the step to 0.65x, and
#   channels_last with D's input built channels_last (steps.class_softmax) to 0.54x (0.074 against 0.136 s at 2
#   threads, bench/trainer_step.py). So 600 iterations cost about what 300 did: 23.2 +-
#   0.7 (22.5, 23.6, 23.6) with a max self-training acceptance of 0.15-0.17 (bench/tiny_quality.py, 56-59 s per
#   trial at 2 threads).
# - no better (300 iterations unless noted): Adam (17.2, 16.6 with He init), He init with SGD at lr 0.01 / 0.03 (15.5,
#   16.2), lr 2e-3 / 5e-4 (18.8 / 19.3 at 192 images), no weight decay (19.2), constant lr (16.7), ASPP rates 1/2/4/8
#   (17.3), width 48 (18.9), self-training threshold 0.5 (22.4 against 22.5 at 600 iterations). Earlier sessions'
#   dead ends at 48 images: 64x128 crops (12.2), output stride 4, colour or scale jitter, batch 4, warm-up.
_TINY: dict[str, Any] = {
    "model": {"backbone": "tiny", "tiny_width": 16, "aspp_dilations": [6, 12, 18, 24], "aspp_branches_effective": 4,
              "d_channels": 16, "bn_mode": "trainable", "classifier_lr_mult": 1.0},
    "optim": {"lr": 0.003, "lr_d": 1e-4},
    "dataset": {"scale": 1.0, "crop_size": [96, 192], "synth_images": 768, "labeled_ratio": 0.5},
    "eval": [{"name": "synth", "eval_size": [96, 192]}],
    "s4gan": {"threshold_st": 0.6},
    "precision": {"channels_last": True},
    "schedule": {"iterations": 600, "batch_labeled": 2, "batch_unlabeled": 2, "batch_d": 2,
                 "log_every": 20, "eval_every": 300, "checkpoint_every": 300, "num_samples": 4},
}

# micro keeps the reference's 10x classifier and the contiguous layout: its numbers are the nightly baseline's, and a
# retuning of `tiny` should not move them
_MICRO: dict[str, Any] = deep_merge(_TINY, {
    "model": {"tiny_width": 8, "aspp_dilations": [1, 2], "aspp_branches_effective": 2, "d_channels": 8,
              "bn_mode": "train_frozen_affine", "classifier_lr_mult": 10.0},
    "optim": {"lr": 0.001},
    "precision": {"channels_last": False},
    "dataset": {"scale": 0.5, "crop_size": [32, 64], "synth_images": 8, "labeled_ratio": 0.5},
    "eval": [{"name": "synth", "eval_size": [48, 96], "max_images": 2}],
    "s4gan": {"threshold_st": 0.5},
    "schedule": {"iterations": 6, "batch_labeled": 2, "batch_unlabeled": 2, "batch_d": 2,
                 "log_every": 2, "eval_every": 3, "checkpoint_every": 3, "num_samples": 1},
})

PRESETS: dict[str, dict[str, Any]] = {"paper": _PAPER, "tiny": _TINY, "micro": _MICRO}
MICRO_MAX_ITERATIONS = 20


def preset_dict(name: object) -> dict[str, Any]:
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; valid presets are {', '.join(PRESETS)}")
    return deep_merge({}, {**PRESETS[name], "preset": name})
