"""The real trainer through the `micro` preset on generated scenes: reporting, resume, self-training, failures."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers import metric_names as M
from trainers.config import TrialConfig
from trainers.data.labels import CITYSCAPES
from trainers.reporting import ListReporter
from trainers.s4gan import checkpoint as ckpt
from trainers.s4gan.train import NonFiniteLossError, train

pytestmark = pytest.mark.slow


def micro(**overrides) -> TrialConfig:
    return TrialConfig.from_dict({"preset": "micro", **overrides})


def test_a_micro_trial_reports_every_metric_artifact_and_checkpoint(tmp_path):
    rep = ListReporter()
    result = train(micro(), reporter=rep, workdir=tmp_path)
    logged = set().union(*(v.keys() for _, v in rep.metric_calls))
    assert {M.LOSS_SUP, M.LOSS_FM, M.LOSS_ST, M.LOSS_D, M.ST_ACCEPT_RATE, M.STEP_TIME} <= logged
    for name in CITYSCAPES.classes:  # every class, in dataset order, also those at 0
        assert M.val_class("synth", "iou", name) in result.metrics
    assert 0.0 <= result.metrics[M.val("synth", "miou")] <= 1.0
    assert [step for step, _ in rep.series(M.LOSS_SUP)] == [2, 4, 6]
    assert any(rate > 0 for _, rate in rep.series(M.ST_ACCEPT_RATE))  # self-training really selects images
    assert [step for step, _, _ in rep.checkpoints] == [3, 6]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint_000003", "checkpoint_000006"]
    names = {p.name for p in rep.artifacts}
    assert {"per_class_synth.json", "confusion_synth.png", "samples_synth.png", "metrics.json"} <= names
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert TrialConfig.from_dict(saved["config"]) == micro()
    assert saved["info"]["precision"] == "float32" and saved["info"]["pretrained"] == "none"
    assert len(saved["evaluations"]["synth"]["confusion"]) == 19
    assert not list(tmp_path.rglob(".*tmp-*"))  # nothing half-written left behind
    assert {M.LABELED_COUNTS_FILE, M.small_objects_file("synth")} <= names


def test_a_micro_trial_logs_its_labeled_pixels_and_recall_by_object_size(tmp_path):
    """The report's inputs, from the final evaluation: every thing object of the validation images counted once
    in its size bin, found <= objects, recall in [0, 1]; the labeled split's pixels per class, as the split's labels
    count them, and (no remap) the same pixels under the evaluation key."""
    from PIL import Image

    from trainers.data.cityscapes import find_pairs, read_label
    from trainers.data.pipeline import labeled_split
    from trainers.small_objects import SIZE_BINS, nearest

    cfg = micro()
    es = cfg.eval[0]
    rep = ListReporter()
    train(cfg, reporter=rep, workdir=tmp_path)
    by_name = {p.name: json.loads(p.read_text()) for p in rep.artifacts if p.suffix == ".json"}

    small = by_name[M.small_objects_file("synth")]
    root = rep.results[0].info["data"]["root"]
    val = find_pairs(Path(root), "val")[: es.max_images]
    expected = 0
    for pair in val:  # thing instances (id * 1000 + k) of a trained class, at the evaluation size
        ids = np.unique(nearest(np.asarray(Image.open(pair.instance), np.int64), es.eval_size))
        expected += int(((ids >= 1000) & (CITYSCAPES.raw_to_train[np.minimum(ids // 1000, 255)] != 255)).sum())
    assert small["size_bins"] == list(SIZE_BINS) and small["images"] == len(val)
    assert sum(small["objects"]) == expected > 0
    assert all(0 <= f <= o for o, f in zip(small["objects"], small["found"], strict=True))
    assert all(r is None or 0 <= r <= 1 for r in small["recall"])

    counts = by_name[M.LABELED_COUNTS_FILE]
    split = labeled_split(find_pairs(Path(root), "train"), ratio=cfg.dataset.labeled_ratio, split_seed=0,
                          root=Path(root))
    labels = np.concatenate([read_label(p, CITYSCAPES).ravel() for p in split.labeled])
    assert counts["classes"] == list(CITYSCAPES.classes)
    assert counts["pixels"] == np.bincount(labels[labels != 255], minlength=19).tolist()
    assert counts["eval"]["synth"] == dict(zip(counts["classes"], counts["pixels"], strict=True))


def test_an_adaptive_loss_adapts_inside_train_and_logs_its_state(tmp_path):
    rep = ListReporter()
    cfg = micro(loss={"name": "adaptive_focal", "options": {"update_every": 1, "rho": 0.5}})
    train(cfg, reporter=rep, workdir=tmp_path)
    gammas = {name: rep.series(M.loss_state("gamma", name)) for name in CITYSCAPES.classes}
    assert all([step for step, _ in g] == [2, 4, 6] for g in gammas.values())
    moved = [name for name, g in gammas.items() if g[0][1] != 1.0 and g[-1][1] != g[0][1]]
    assert moved  # the labeled batches reach the state at every step (update_every 1) ...
    assert len(moved) < len(gammas)  # ... per class: classes absent from the labeled crops keep gamma 1


def test_a_resumed_trial_continues_exactly_as_the_uninterrupted_one(tmp_path):
    cfg = micro()  # checkpoints at 3 and 6; both are kept
    whole = ListReporter()
    train(cfg, reporter=whole, workdir=tmp_path / "whole")
    mid = tmp_path / "whole" / "checkpoints" / "checkpoint_000003"
    assert ckpt.load(mid)["iteration"] == 3
    resumed = ListReporter()
    result = train(cfg, reporter=resumed, workdir=tmp_path / "resumed", resume=mid)
    whole_final = ckpt.load(tmp_path / "whole" / "checkpoints" / "checkpoint_000006")
    resumed_final = ckpt.load(result.checkpoint)
    for part in ("generator", "discriminator", "opt_g"):
        flat_a, flat_b = _tensors(whole_final[part]), _tensors(resumed_final[part])
        assert flat_a.keys() == flat_b.keys()
        for key in flat_a:
            assert torch.equal(flat_a[key], flat_b[key]), f"{part}: {key}"
    assert whole.series(M.LOSS_SUP)[-1] == resumed.series(M.LOSS_SUP)[-1]
    assert whole.results[0].metrics == result.metrics


def _tensors(tree, prefix=""):
    """Flatten a nested state dict into {path: tensor}."""
    out = {}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        if isinstance(value, torch.Tensor):
            out[f"{prefix}{key}"] = value
        else:
            out |= _tensors(value, f"{prefix}{key}.")
    return out


def _final_generator(tmp_path, name, **s4gan):
    cfg = micro(schedule={"iterations": 2, "eval_every": 2, "checkpoint_every": 2, "log_every": 1},
                s4gan={"lambda_fm": 0.0, **s4gan})
    result = train(cfg, reporter=ListReporter(), workdir=tmp_path / name)
    return ckpt.load(result.checkpoint)["generator"]


def test_self_training_sends_gradient_into_the_generator(tmp_path):
    all_selected = _final_generator(tmp_path, "all", threshold_st=0.0)
    none_selected = _final_generator(tmp_path, "none", threshold_st=1.0)
    no_st = _final_generator(tmp_path, "off", threshold_st=0.0, lambda_st=0.0)
    changed = [k for k in all_selected if not torch.equal(all_selected[k], none_selected[k])]
    assert any(k.startswith("backbone") for k in changed) and any(k.startswith("classifier") for k in changed)
    assert all(torch.equal(none_selected[k], no_st[k]) for k in no_st)  # nothing selected == no ST term


def test_the_supervised_only_control_has_no_discriminator(tmp_path):
    rep = ListReporter()
    result = train(micro(s4gan={"gan": False}), reporter=rep, workdir=tmp_path)
    logged = set().union(*(v.keys() for _, v in rep.metric_calls))
    assert M.LOSS_SUP in logged and M.LOSS_D not in logged and M.LOSS_FM not in logged
    assert ckpt.load(result.checkpoint)["discriminator"] is None


def test_a_non_finite_loss_stops_the_trial_naming_term_and_iteration(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"^train/loss_sup is (nan|inf) at iteration [0-9]+$"):
        train(micro(optim={"lr": 1e30}), reporter=ListReporter(), workdir=tmp_path)


def test_one_step_runs_the_discriminator_three_times_and_g_sends_no_gradient_into_it():
    from trainers.data.pipeline import train_data
    from trainers.s4gan.train import build_runtime, train_step

    cfg = micro(device={"device": "cpu"})
    rt, _ = build_runtime(cfg, 19, 255)
    s = cfg.schedule
    data = train_data(cfg.dataset, batches={"labeled": s.batch_labeled, "labeled_d": s.batch_d,
                                            "unlabeled": s.batch_unlabeled}, seed=0, split_seed=0, workers=0)
    calls = []
    rt.discriminator.register_forward_hook(lambda module, args, out: calls.append(args[0].requires_grad))
    backward_calls = []  # one gradient computation per backward that reaches D's weights
    for p in rt.discriminator.parameters():
        p.register_hook(lambda grad: backward_calls.append(1))
    train_step(rt, data, 1)
    # D(ground truth) once (shared by feature matching and D's update), D(prediction) for G, D(detached prediction)
    assert calls == [False, True, False]
    # G's backward (supervised + feature matching + self-training) reaches none of D's weights; D's own loss all
    assert len(backward_calls) == len(list(rt.discriminator.parameters()))
