"""TrialConfig: presets, validation messages, exact round trips."""

import pickle

import pytest

from trainers.config import ConfigError, ScheduleConfig, TrialConfig
from trainers.losses import LOSSES
from trainers.presets import preset_dict


def test_presets_build_and_round_trip_exactly():
    for preset in ("paper", "tiny", "micro"):
        cfg = TrialConfig.from_dict({"preset": preset})
        assert TrialConfig.from_dict(cfg.to_dict()) == cfg
        # safe: unpickles the bytes this line just made (Ray ships configs to workers this way, inside the cluster)
        assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_paper_preset_holds_the_reference_recipe():
    cfg = TrialConfig.from_dict({"preset": "paper"})
    assert cfg.model.backbone == "resnet101" and cfg.dataset.crop_size == (256, 512) and cfg.dataset.scale == 0.5
    assert (cfg.schedule.batch_labeled, cfg.schedule.batch_unlabeled, cfg.schedule.batch_d) == (8, 8, 8)
    assert cfg.schedule.iterations == 40000 and cfg.optim.lr == 2.5e-4 and cfg.optim.lr_d == 1e-5
    assert (cfg.s4gan.lambda_fm, cfg.s4gan.lambda_st, cfg.s4gan.threshold_st) == (0.1, 1.0, 0.7)
    assert cfg.precision.precision == "fp32"


def test_overrides_merge_into_the_preset_and_the_loss_block_replaces_whole():
    cfg = TrialConfig.from_dict({"preset": "tiny", "schedule": {"iterations": 7},
                                 "loss": {"name": "focal", "gamma": 0.5, "lambda": 2}})
    tiny_batch = preset_dict("tiny")["schedule"]["batch_labeled"]
    assert tiny_batch != ScheduleConfig().batch_labeled  # the preset's value, not the paper default
    assert cfg.schedule.iterations == 7 and cfg.schedule.batch_labeled == tiny_batch  # the rest of the preset stays
    assert cfg.loss.name == "focal" and dict(cfg.loss.options) == {"gamma": 0.5, "lambda": 2.0}
    same = TrialConfig.from_dict({"preset": "tiny", "schedule": {"iterations": 7},
                                  "loss": {"name": "focal", "options": {"gamma": 0.5, "lambda": 2.0}}})
    assert same == cfg


def test_configs_are_frozen():
    cfg = TrialConfig.from_dict({"preset": "micro"})
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="read-only"):
        cfg.loss.options["gamma"] = 1.0  # type: ignore[index]


@pytest.mark.parametrize(("override", "message"), [
    ({"dataset": {"labeled_ratio": 0.0}}, "dataset.labeled_ratio: must be in (0, 1], but got 0.0"),
    ({"dataset": {"crop_size": [0, 64]}}, "dataset.crop_size: must be two positive integers"),
    ({"dataset": {"crop_size": [32]}}, "dataset.crop_size: expected 2 values, but got [32]"),
    ({"schedule": {"iterations": 0}}, "schedule.iterations: must be >= 1, but got 0"),
    ({"schedule": {"iterations": "ten"}}, "schedule.iterations: expected an integer, but got 'ten'"),
    ({"schedule": {"iterations": 21}}, "schedule.iterations: must be <= 20 with preset micro"),
    ({"s4gan": {"threshold_st": 1.5}}, "s4gan.threshold_st: must be in [0, 1], but got 1.5"),
    ({"s4gan": {"gan": "yes"}}, "s4gan.gan: expected true or false, but got 'yes'"),
    ({"s4gan": {"st_loss": "dice"}}, "s4gan.st_loss: must be one of 'same', 'ce', but got 'dice'"),
    ({"model": {"aspp_branches_effective": 3}}, "model.aspp_branches_effective: must be in [1, 2]"),
    ({"model": {"backbone": "vgg"}}, "model.backbone: must be one of 'resnet101', 'resnet50', 'tiny'"),
    ({"precision": {"precision": "fp8"}}, "precision.precision: must be one of"),
    ({"device": {"memory_fraction": 0.0}}, "device.memory_fraction: must be in (0, 1], but got 0.0"),
    ({"optim": {"lr": -1}}, "optim.lr: must be > 0, but got -1.0"),
    ({"schedule": {"iteratons": 5}}, "schedule: unknown key(s) iteratons; valid keys are iterations"),
    ({"sead": 1}, "config: unknown key(s) sead"),
    ({"loss": {"name": "focal", "gama": 2}}, "loss 'focal': unknown option(s) gama; its options are"),
    ({"loss": {"name": "focal", "lambda": 0.5}}, "loss 'focal': option lambda must be >= 1"),
    ({"loss": {"name": "ce", "gamma": 2}}, "loss 'ce': unknown option(s) gamma; its options are class_weights"),
    ({"loss": {"name": "hinge"}}, f"loss.name: unknown loss 'hinge'; valid losses are {', '.join(sorted(LOSSES))}"),
    ({"preset": "huge"}, "preset: unknown preset 'huge'; valid presets are paper, tiny, micro"),
    ({"eval": []}, "eval: must list at least one evaluation set"),
    ({"dataset": {"name": "kitti"}}, "dataset.name: must be one of cityscapes, idd, synth, synth_idd, but got 'kitti'"),
    ({"eval": [{"name": "kitti"}]}, "eval.name: must be one of cityscapes, idd, synth, synth_idd, but got 'kitti'"),
    ({"loss": {"name": ["ce"]}}, "loss.name: expected a string, but got ['ce']"),
    ({"loss": {"name": "ce", "options": [1]}}, "loss.options: expected a mapping, but got [1]"),
    ({"eval": [{"name": "synth"}, {"name": "synth"}]}, "eval: evaluation sets need distinct names"),
])
def test_invalid_values_are_rejected_with_field_rule_and_value(override, message):
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict({"preset": "micro", **override})
    assert message in str(err.value)
