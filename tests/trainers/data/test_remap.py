"""Remaps between label sets: derivation, refusal at config time, scoring on hand tensors, and cross-set evaluation
through the real trainer (micro trials on generated data in both layouts)."""

import json

import numpy as np
import pytest
import torch

from trainers import metric_names as M
from trainers.config import ConfigError, EvalSetConfig, TrialConfig
from trainers.data.labels_idd import IDD_TABLES
from trainers.data.remap import RemapError, build_remap, eval_remap, eval_remaps, remap_from_text
from trainers.data.tables import dataset_info
from trainers.metrics import ConfusionMatrix
from trainers.reporting import ListReporter
from trainers.s4gan.evaluate import RemapScorer
from trainers.s4gan.predict import evaluate_checkpoint
from trainers.s4gan.train import train

L4 = IDD_TABLES["level4"].classes
CS = IDD_TABLES["cs19"].classes


def test_level4_to_cs19_maps_each_class_to_its_cityscapes_class_or_ignores_it():
    r = remap_from_text("level4->cs19")
    mapping = r.describe()["mapping"]
    assert mapping["car"] == "car" and mapping["non-drivable fallback"] == "terrain"
    assert mapping["sidewalk"] == "sidewalk"  # sidewalk + rail track: rail track is void in cs19 anyway
    assert mapping["vehicle fallback"] == "train"  # trailer + train + vehicle fallback: only train is in cs19
    assert mapping["pole"] == "pole"  # pole + polegroup
    assert r.ignored_classes == ("parking", "drivable fallback", "animal", "autorickshaw", "caravan", "curb",
                                 "guard rail", "billboard", "obs-str-bar-fallback", "bridge", "fallback background")
    assert r.unscored_classes == ()  # every Cityscapes class is reachable from level4


def test_identity_and_coarsening_remaps():
    same = remap_from_text(" cs19 -> cs19 ")
    assert same.is_identity and same.ignored_classes == same.unscored_classes == ()
    coarse = build_remap("cs19", "level1")  # many to one: fine
    assert coarse.describe()["mapping"]["car"] == "vehicle" and coarse.describe()["mapping"]["bus"] == "vehicle"
    back = build_remap("cs19", "level3")  # a Cityscapes model on IDD level3: some IDD classes are unreachable
    assert {"drivable fallback", "autorickshaw", "curb"} <= set(back.unscored_classes)


@pytest.mark.parametrize(("text", "message"), [
    ("level1->cs19", "not a function: level1 class 'non-drivable' .* maps to the cs19 classes 'sidewalk' and "
                     "'terrain'"),
    ("level2->cs19", "not a function: level2 class '2-wheeler'"),
    ("level4->level3", "not a function: level4 class 'sidewalk' \\(raw labels sidewalk, rail track\\)"),
    ("level4=>cs19", "must be written SOURCE->TARGET"),
    ("level9->cs19", "'level9' is not a label set"),
])
def test_a_remap_that_is_malformed_or_not_a_function_is_refused_at_config_time(text, message):
    with pytest.raises(ConfigError, match=message):
        EvalSetConfig(name="idd", root="/data/idd", label_set="cs19", remap=text)
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_dict({"preset": "micro", "eval": [{"name": "idd", "root": "/d", "label_set": "cs19",
                                                            "remap": text}]})


def test_a_remap_must_end_in_the_evaluation_label_set_and_start_from_the_models():
    with pytest.raises(ConfigError, match="eval.remap: must end in idd's label set level3"):
        EvalSetConfig(name="idd", root="/d", remap="level4->cs19")  # default label set: level3
    with pytest.raises(ConfigError, match="eval.label_set: must be one of level1, level2, level3, level4, cs19"):
        EvalSetConfig(name="idd", root="/d", label_set="level5")
    with pytest.raises(ConfigError, match="must be one of cs19 for cityscapes"):
        EvalSetConfig(name="cityscapes", root="/d", label_set="level3")
    model = dataset_info("idd", "level4")
    with pytest.raises(RemapError, match="starts from level3, but the model is trained on idd level4"):
        eval_remap(model, dataset_info("idd", "cs19"), "level3->cs19", where="eval[0]")
    with pytest.raises(RemapError, match=r"eval\[0\]: the model predicts the 30 level4 classes of idd but "
                                         r"cityscapes is scored on its 19 cs19 classes; declare `remap: "
                                         r"level4->cs19`"):
        eval_remap(model, dataset_info("cityscapes"), None, where="eval[0]")
    with pytest.raises(RemapError, match="and no remap connects them"):
        eval_remap(model, dataset_info("idd", "level3"), None, where="eval[0]")
    # a Cityscapes model on IDD's cs19 labels: the same 19 classes, no remap needed (cs19->cs19 also accepted)
    assert eval_remap(dataset_info("cityscapes"), dataset_info("idd", "cs19"), None, where="e") is None
    assert eval_remap(dataset_info("cityscapes"), dataset_info("idd", "cs19"), "cs19->cs19", where="e").is_identity


def one_hot_probs(rows: list[dict[str, float]], names: tuple[str, ...]) -> torch.Tensor:
    """[1, C, 1, len(rows)] probabilities: each pixel's given mass, the rest spread evenly."""
    probs = torch.zeros(1, len(names), 1, len(rows))
    for j, row in enumerate(rows):
        rest = (1.0 - sum(row.values())) / (len(names) - len(row))
        probs[0, :, 0, j] = rest
        for name, p in row.items():
            probs[0, names.index(name), 0, j] = p
    return probs


def test_a_pixel_whose_first_choice_is_an_ignored_class_gets_its_best_mappable_class():
    scorer = RemapScorer(remap_from_text("level4->cs19"), ignore_index=255, device=torch.device("cpu"))
    probs = one_hot_probs([{"autorickshaw": 0.6, "car": 0.3}, {"autorickshaw": 0.6, "bus": 0.3},
                           {"car": 0.9}, {"curb": 0.9}], L4)
    label = torch.tensor([[[CS.index("car"), CS.index("car"), CS.index("car"), 255]]])
    pred, confidence, target = scorer(probs, label)
    assert pred[0, 0].tolist() == [CS.index("car"), CS.index("bus"), CS.index("car"), pred[0, 0, 3].item()]
    assert torch.equal(target, label)  # every cs19 class is reachable: no ground truth dropped
    # renormalised over the mapped mass: 0.3 / (1 - 0.6 - the other ignored classes' share)
    rest = 0.1 / 28
    assert confidence[0, 0, 0].item() == pytest.approx(0.3 / (0.3 + 18 * rest), rel=1e-5)
    # scored pixels are the three car pixels; two of them had autorickshaw as the first choice
    assert scorer.describe()["scored_pixels"] == 3 and scorer.describe()["argmax_ignored_pixels"] == 2
    matrix = ConfusionMatrix(19)
    matrix.update(pred, target, confidence)
    metrics = matrix.compute(CS)
    car = CS.index("car")
    assert metrics.confusion[car, car] == 2 and metrics.confusion[car, CS.index("bus")] == 1  # a miss for car
    assert metrics.recall[car] == pytest.approx(2 / 3)


def test_merged_classes_add_their_probabilities_and_unreachable_ground_truth_is_ignored():
    to_level1 = RemapScorer(build_remap("cs19", "level1"), ignore_index=255, device=torch.device("cpu"))
    # road alone beats car alone (0.24 > 0.23), but car + bus + truck (vehicle) beats road: the sum decides
    probs = one_hot_probs([{"road": 0.24, "car": 0.23, "bus": 0.22, "truck": 0.2}], CS)
    pred, _, _ = to_level1(probs, torch.zeros(1, 1, 1, dtype=torch.long))
    assert IDD_TABLES["level1"].classes[pred.item()] == "vehicle"
    to_level3 = RemapScorer(build_remap("cs19", "level3"), ignore_index=255, device=torch.device("cpu"))
    l3 = IDD_TABLES["level3"].classes
    label = torch.tensor([[[l3.index("autorickshaw"), l3.index("car")]]])
    _, _, target = to_level3(one_hot_probs([{"car": 0.9}, {"car": 0.9}], CS), label)
    assert target.tolist() == [[[255, l3.index("car")]]]  # autorickshaw cannot be predicted: not scored


def micro(**overrides) -> TrialConfig:
    return TrialConfig.from_dict({"preset": "micro", **overrides})


@pytest.mark.slow
def test_an_idd_level4_model_is_scored_on_cs19_idd_and_cityscapes_through_declared_remaps(tmp_path):
    cfg = micro(dataset={"name": "synth_idd", "label_set": "level4"}, eval=[
        {"name": "synth_idd", "label_set": "level4", "eval_size": [32, 64], "max_images": 2},
        {"name": "synth_idd", "label_set": "cs19", "remap": "level4->cs19", "key": "idd_cs19",
         "eval_size": [32, 64], "max_images": 2},
        {"name": "synth", "remap": "level4->cs19", "eval_size": [32, 64], "max_images": 2}])
    result = train(cfg, reporter=ListReporter(), workdir=tmp_path)
    for key, classes in (("synth_idd", L4), ("idd_cs19", CS), ("synth", CS)):
        assert {M.val_class(key, "iou", name) for name in classes} <= set(result.metrics), key
    assert "remap" not in result.evaluations["synth_idd"]
    remap = result.evaluations["idd_cs19"]["remap"]
    assert remap["remap"] == "level4->cs19" and "autorickshaw" in remap["ignored_classes"]
    assert remap["scored_pixels"] == int(np.sum(result.evaluations["idd_cs19"]["per_class"]["gt_pixels"]))
    saved = json.loads((tmp_path / "artifacts" / "per_class_idd_cs19.json").read_text())
    assert saved["remap"]["ignored_classes"] == remap["ignored_classes"]
    info = json.loads((tmp_path / "metrics.json").read_text())["info"]["data"]
    assert info["label_set"] == "level4" and info["rasteriser"] == "1"
    # `s4sweep eval` of the checkpoint: the same remap, the same numbers
    again = evaluate_checkpoint(result.checkpoint, dataset="synth_idd", label_set="cs19", remap="level4->cs19",
                                eval_size=(32, 64), out=tmp_path / "eval")
    assert again["metrics"]["remap"]["ignored_classes"] == remap["ignored_classes"]
    assert again["label_set"] == "cs19" and again["eval_size"] == [32, 64]
    assert again["metrics"]["confusion"] == result.evaluations["idd_cs19"]["confusion"]
    with pytest.raises(RemapError, match="declare `remap: level4->cs19`"):
        evaluate_checkpoint(result.checkpoint, dataset="synth_idd", label_set="cs19", out=tmp_path / "eval")


@pytest.mark.slow
def test_a_cityscapes_model_is_scored_on_idd_cs19_and_level3(tmp_path):
    cfg = micro(eval=[{"name": "synth_idd", "label_set": "cs19", "eval_size": [32, 64], "max_images": 2},
                      {"name": "synth_idd", "label_set": "level3", "remap": "cs19->level3", "key": "l3",
                       "eval_size": [32, 64], "max_images": 2}])
    result = train(cfg, reporter=ListReporter(), workdir=tmp_path)
    assert M.val("synth_idd", "miou") in result.metrics and M.val_class("l3", "iou", "autorickshaw") in result.metrics
    assert "autorickshaw" in result.evaluations["l3"]["remap"]["unscored_classes"]
    assert result.evaluations["l3"]["per_class"]["gt_pixels"][8] == 0  # autorickshaw ground truth: not scored


def test_a_trial_without_the_remap_it_needs_fails_before_training(tmp_path):
    cfg = micro(dataset={"name": "synth_idd", "label_set": "level4"},
                eval=[{"name": "synth_idd", "label_set": "cs19"}])
    with pytest.raises(RemapError, match="declare `remap: level4->cs19`"):
        eval_remaps(cfg)
    with pytest.raises(RemapError, match="declare `remap: level4->cs19`"):
        train(cfg, reporter=ListReporter(), workdir=tmp_path)
    assert not (tmp_path / "checkpoints").exists()
