"""What the trials log for the report when the model predicts another label set than the evaluation set's: the
labeled pixel share carried into the evaluation classes, and recall by object size scored on the evaluation classes
through the same remap as the metrics. Hand-made PNGs in the real Cityscapes layout, hand-computed answers; and
micro trials whose logged shares equal those counted from the label PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.config import TrialConfig
from trainers.data.labels_idd import IDD_TABLES
from trainers.data.pipeline import eval_data
from trainers.data.remap import eval_remaps, remap_from_text
from trainers.data.stats import carry
from trainers.s4gan.evaluate import RemapScorer, evaluate
from trainers.s4gan.model import build_generator
from trainers.small_objects import ObjectRecall

LEVEL4 = IDD_TABLES["level4"].classes


def test_the_labeled_share_is_carried_into_the_evaluation_classes_through_the_remap():
    share = dict.fromkeys(LEVEL4, 0.0) | {"road": 0.40, "parking": 0.10, "drivable fallback": 0.05, "car": 0.20,
                                          "autorickshaw": 0.15, "sky": 0.10}
    carried = carry(share, remap_from_text("level4->cs19"))
    assert list(carried) == list(IDD_TABLES["cs19"].classes)
    # parking, drivable fallback and autorickshaw have no Cityscapes counterpart: their pixels drop out
    assert carried["road"] == pytest.approx(0.40) and carried["car"] == pytest.approx(0.20)
    assert carried["sky"] == pytest.approx(0.10) and sum(carried.values()) == pytest.approx(0.70)
    assert carry(share, None) == share


def handmade_cityscapes_val(root: Path) -> None:
    """One 32x64 val image: road, a 10x12 car (120 px) and a 5x6 person (30 px), with their instance ids."""
    label = np.full((32, 64), 7, np.uint8)  # raw Cityscapes ids: 7 road, 26 car, 24 person
    instance = np.full((32, 64), 7, np.uint16)  # stuff keeps its raw id; things are id * 1000 + k
    label[4:14, 4:16], instance[4:14, 4:16] = 26, 26000
    label[20:25, 40:46], instance[20:25, 40:46] = 24, 24000
    stem = "hand_000000_000019"
    images, labels = root / "leftImg8bit" / "val" / "hand", root / "gtFine" / "val" / "hand"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    rgb = np.random.default_rng(0).integers(0, 255, (32, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(images / f"{stem}_leftImg8bit.png")
    Image.fromarray(label).save(labels / f"{stem}_gtFine_labelIds.png")
    Image.fromarray(instance).save(labels / f"{stem}_gtFine_instanceIds.png")


def test_recall_by_object_size_scores_a_remapped_model_on_the_evaluation_classes(tmp_path):
    """A model trained on IDD level4 that predicts `car` everywhere, scored on Cityscapes through level4->cs19: the
    car (120 px, the 64-256 px bin) is found, the person (30 px, the < 64 px bin) is not. Compared raw, the model's
    level4 car index (11) is Cityscapes' person: the person would be found and the car missed."""
    root = tmp_path / "cityscapes"
    handmade_cityscapes_val(root)
    cfg = TrialConfig.from_dict({"preset": "micro", "dataset": {"name": "synth_idd", "label_set": "level4"},
                                 "eval": [{"name": "cityscapes", "root": str(root), "remap": "level4->cs19",
                                           "eval_size": [32, 64]}]})
    generator = build_generator(cfg.model, len(LEVEL4))
    with torch.no_grad():  # constant logits: every pixel's first choice is level4 car
        for branch in generator.classifier.branches:
            branch.weight.zero_()
            branch.bias.zero_()
        generator.classifier.branches[0].bias[LEVEL4.index("car")] = 5.0
    es = cfg.eval[0]
    info, loader = eval_data(es, synth_images=8)
    remap = eval_remaps(cfg)[es.metric_key]
    objects = ObjectRecall.of(loader.dataset.pairs, info.labels, remap)
    scorer = RemapScorer(remap, ignore_index=255, device=torch.device("cpu"))
    evaluate(generator, loader, info, device=torch.device("cpu"), remap=scorer, objects=objects)
    logged = objects.to_json()
    assert logged["objects"] == [1, 1, 0, 0] and logged["found"] == [0, 1, 0, 0] and logged["images"] == 1
    assert logged["recall"] == [0.0, 1.0, None, None]


@pytest.mark.slow
def test_the_logged_class_share_is_the_one_the_report_counted_from_the_data(tmp_path, monkeypatch):
    """The share the report reads from the trials' labeled_counts.json is the one counted from the labeled split's
    label PNGs and carried through the evaluation set's remap (as the report computed it before the trials logged
    it; equal to 1e-12 against that code too, commit 5388a11): micro trials on generated IDD level4 data, two split
    seeds, scored on synth_idd level4 and through level4->cs19 on synth."""
    from orchestrator import results
    from orchestrator.report.data_stats import class_share
    from orchestrator.tracking import flatten_params
    from trainers.data.cityscapes import read_label
    from trainers.data.pipeline import labeled_split
    from trainers.data.roots import resolve_root, split_pairs
    from trainers.data.tables import dataset_info
    from trainers.reporting import ListReporter
    from trainers.s4gan.train import train

    monkeypatch.setenv("S4SWEEP_HOME", str(tmp_path))
    root = resolve_root("synth_idd", None, synth_images=8)
    info = dataset_info("synth_idd", "level4")
    params, trial_json, shares = {}, {}, []
    for split_seed in (0, 1):
        split = labeled_split(split_pairs(info, root, "train"), ratio=0.5, split_seed=split_seed, root=root)
        labels = np.concatenate([read_label(p, info.labels).ravel() for p in split.labeled])
        shares.append(np.bincount(labels[labels != 255], minlength=len(LEVEL4)) / (labels != 255).sum())
        cfg = TrialConfig.from_dict({
            "preset": "micro", "split_seed": split_seed,
            "dataset": {"name": "synth_idd", "label_set": "level4", "root": str(root), "labeled_ratio": 0.5},
            "eval": [{"name": "synth_idd", "label_set": "level4", "max_images": 1},
                     {"name": "synth", "remap": "level4->cs19", "max_images": 1}]})
        rep = ListReporter()
        train(cfg, reporter=rep, workdir=tmp_path / f"t{split_seed}")
        name = f"ce-split{split_seed}-s0"
        params[name] = flatten_params(cfg.to_dict())
        trial_json[name] = {p.name: json.loads(p.read_text()) for p in rep.artifacts if p.suffix == ".json"}
    run = results.SweepRun(sweep="x", run_id="x-1", status="finished", tracking_uri="", experiment_id="",
                           parent_run_id="")
    res = results.SweepResults(run=run, table=None, params=params, trial_json=trial_json)
    share = dict(zip(LEVEL4, np.mean(shares, axis=0).tolist(), strict=True))
    for eval_key, remap in (("synth_idd", None), ("synth", remap_from_text("level4->cs19"))):
        old = carry(share, remap)
        new, note = class_share(res, "synth_idd:level4", eval_key)
        assert old is not None and note is None and list(new) != [] and set(new) == set(old)
        assert sum(v > 0 for v in old.values()) > 3
        assert new == pytest.approx(old, rel=1e-12, abs=1e-15)


def test_a_split_whose_trials_did_not_log_their_pixels_is_named_not_counted():
    from orchestrator import results
    from orchestrator.report.data_stats import class_share

    def params(split_seed: int) -> dict[str, str]:
        return {"dataset.name": "synth", "dataset.root": "/r", "dataset.labeled_ratio": "0.5",
                "split_seed": str(split_seed)}

    counts = {"classes": ["road", "car"], "pixels": [60, 40], "eval": {"synth": {"road": 60, "car": 40}}}
    run = results.SweepRun(sweep="x", run_id="x-1", status="finished", tracking_uri="", experiment_id="",
                           parent_run_id="")
    res = results.SweepResults(run=run, table=None, params={"ce-split0-s0": params(0), "ce-split0-s1": params(0),
                                                            "ce-split1-s0": params(1)},
                               trial_json={"ce-split0-s0": {"labeled_counts.json": counts}})
    share, note = class_share(res, "synth", "synth")
    assert share == {"road": 0.6, "car": 0.4}  # split 0 only; ce-split0-s1 shares its split
    assert note is not None and "ce-split1-s0" in note and "ce-split0-s1" not in note
    assert class_share(results.SweepResults(run=run, table=None, params={"a": params(0)}), "synth", "synth")[0] is None
