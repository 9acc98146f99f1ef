"""The results table read back from a real `mlflow server`: synthetic sweep runs logged with Tracker exactly as the
sweep engine logs them (parent with tags and the sweep file, children with params, batched metrics, per-class JSON,
trial_info.json), no training. `log_sweep_run` is also what test_report.py and test_regress.py log their runs with."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from orchestrator import results, runs
from orchestrator.tracking import Tracker

CLASSES = ("road", "car", "bicycle")


@dataclass
class Trial:
    name: str
    params: dict[str, Any]
    intersection: np.ndarray  # [images, classes]
    union: np.ndarray
    status: str = "FINISHED"
    extra: dict[str, float] = field(default_factory=dict)  # metrics logged besides the ones the counts give
    wall_s: float = 36.0
    precision: str = "float32"
    artifacts: list[Path] = field(default_factory=list)  # files logged as they are (samples, confusion PNGs)
    classes: tuple[str, ...] = CLASSES  # one per column of the counts: the per-class JSON's class names
    drop: tuple[str, ...] = ()  # metric keys not logged (a vanished class row, a renamed metric)


def trial(loss: str, seed: int, intersection: Any, *, union: int = 100, images: int = 10, gamma: float | None = None,
          **kw: Any) -> Trial:
    """A trial whose IoUs come from per-image counts: `intersection` per class, a number or one value per image."""
    inter = np.stack([np.broadcast_to(np.asarray(v, np.int64), (images,)) for v in intersection], axis=1)
    options = {"gamma": gamma} if gamma is not None else {}
    name = "-".join([loss, *([f"g{gamma:g}"] if gamma is not None else []), f"s{seed}"])
    params = {"preset": "micro", "seed": seed, "split_seed": 0, "dataset": {"name": "synth", "root": "/nonexistent"},
              "loss": {"name": loss, "options": options}, "eval": [{"name": "synth", "key": None}]}
    return Trial(name, params, inter, np.full_like(inter, union), **kw)


def spec_file(tmp: Path, sweep: str, losses: list[dict[str, Any]], seeds: list[int]) -> Path:
    path = tmp / f"{sweep}.yaml"
    path.write_text(yaml.safe_dump({"name": sweep, "base": {"preset": "micro", "dataset": {"name": "synth"}},
                                    "grid": {"loss": losses, "seed": seeds}, "resources": {"cpu": 1, "gpu": 0},
                                    "report": {"baseline": {"loss": "ce"}}}))
    return path


def log_sweep_run(uri: str, storage: Path, *, sweep: str, run_id: str, spec: Path, trials: list[Trial],
                  status: runs.Status = "finished", data: str = "fp-synth-1", created: str = "",
                  spec_sha256: str | None = None) -> runs.RunState:
    """One sweep run as the engine leaves it: run.json under `storage`, parent + children in MLflow."""
    tracker = Tracker(uri)
    experiment = tracker.experiment(sweep)
    state = runs.create(storage, runs.RunState(sweep=sweep, run_id=run_id, spec_path=str(spec), spec_sha256="",
                                               tracking_uri=uri, created=created))
    parent = tracker.start_parent(experiment, run_name=run_id, tags={
        "s4sweep.sweep": sweep, "s4sweep.spec_sha256": spec_sha256 or f"sha-of-{spec.name}",
        "s4sweep.git_sha": "abc123",
        f"s4sweep.data.synth:{storage}/data/synth-8": data})
    tracker.log_dict(parent, {"python": "3.11", "torch": "2.14.1", "pip_freeze": "x==1\n"}, "environment.json")
    tracker.log_artifact(parent, spec)
    for t in trials:
        child = tracker.start_child(experiment, parent, run_name=t.name, params=t.params,
                                    tags={"s4sweep.trial": t.name, "s4sweep.run": run_id})
        iou = t.intersection.sum(0) / t.union.sum(0)
        metrics = {f"val/synth/{kind}/{c}": float(v) for kind in ("iou", "recall", "precision")
                   for c, v in zip(t.classes, iou, strict=True)}
        metrics |= {"val/synth/miou": float(iou.mean()), "val/synth/miou_all": float(iou.mean()),
                    "val/synth/fwiou": 0.5, "val/synth/pixel_acc": 0.75, "val/synth/ece": 0.1,
                    "time/trial_s": t.wall_s, **t.extra}
        tracker.log_metrics(child, 6, {k: v for k, v in metrics.items() if k not in t.drop})
        tracker.log_dict(child, {"class_names": list(t.classes), "per_image_intersection": t.intersection.tolist(),
                                 "per_image_union": t.union.tolist()}, "per_class_synth.json")
        tracker.log_dict(child, {"wall_s": t.wall_s, "precision": t.precision, "device": "cpu"}, "trial_info.json")
        for path in t.artifacts:
            tracker.log_artifact(child, path)
        tracker.end(child, t.status)
    tracker.end(parent, "FINISHED" if status == "finished" else "FAILED")
    return runs.update(storage, state, experiment_id=experiment, parent_run_id=parent, status=status)


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def test_the_table_has_one_row_per_trial_eval_class_and_metric_with_the_varied_params(tmp_path, storage,
                                                                                      mlflow_server):
    spec = spec_file(tmp_path, "res-table", [{"name": "ce"}, {"name": "focal", "gamma": 2}], [0, 1])
    trials = [trial("ce", 0, [80, 40, 10]), trial("ce", 1, [80, 40, 10]),
              trial("focal", 0, [80, 60, 10], gamma=2.0), trial("focal", 1, [80, 60, 10], gamma=2.0)]
    log_sweep_run(mlflow_server, storage, sweep="res-table", run_id="res-table-1", spec=spec, trials=trials)

    table = results.load("res-table", storage=str(storage))

    assert table.column_names == [*results.FIXED_COLUMNS, "loss.name", "loss.options.gamma"]
    assert table.num_rows == 4 * (5 + 3 * 3)  # 5 summaries + iou/recall/precision for 3 classes, per trial
    focal = table.filter(table["trial"].to_numpy(zero_copy_only=False) == "focal-g2-s1").to_pylist()
    car = next(r for r in focal if r["class"] == "car" and r["metric"] == "iou")
    assert car["value"] == pytest.approx(0.6) and car["variant"] == "focal-g2" and car["seed"] == 1
    assert car["loss.name"] == "focal" and car["loss.options.gamma"] == 2.0 and car["status"] == "FINISHED"
    assert car["wall_s"] == 36.0 and (car["cpu"], car["gpu"]) == (1.0, 0.0) and car["precision"] == "float32"
    assert [r["class"] for r in focal if r["metric"] == "iou"] == list(CLASSES)  # dataset order
    ce = table.filter(table["variant"].to_numpy(zero_copy_only=False) == "ce")
    assert set(ce["loss.options.gamma"].to_pylist()) == {None}

    path = results.save(table, tmp_path / "results.parquet")
    again = pq.read_table(path)
    assert again.equals(table)
    assert json.loads(again.schema.metadata[b"s4sweep"])["run"] == "res-table-1"


def test_a_replayed_step_reports_its_last_value_and_the_latest_ended_run_is_the_default(tmp_path, storage,
                                                                                       mlflow_server):
    spec = spec_file(tmp_path, "res-latest", [{"name": "ce"}], [0])
    log_sweep_run(mlflow_server, storage, sweep="res-latest", run_id="res-latest-1", spec=spec,
                  trials=[trial("ce", 0, [80, 40, 10])], created="2026-01-01T00:00:00+00:00")
    second = log_sweep_run(mlflow_server, storage, sweep="res-latest", run_id="res-latest-2", spec=spec,
                           trials=[trial("ce", 0, [70, 40, 10])], created="2026-01-02T00:00:00+00:00")
    log_sweep_run(mlflow_server, storage, sweep="res-latest", run_id="res-latest-3", spec=spec,
                  trials=[trial("ce", 0, [60, 40, 10])], status="running", created="2026-01-03T00:00:00+00:00")
    tracker = Tracker(mlflow_server)
    child = tracker.children(second.experiment_id, second.parent_run_id)[0]
    tracker.log_metrics(child.run_id, 6, {"val/synth/iou/road": 0.75})  # a restored trial replays step 6

    run = results.find_run("res-latest", storage=str(storage))
    assert run.run_id == "res-latest-2"  # -3 is still running
    table = results.load("res-latest", storage=str(storage))
    road = [r["value"] for r in table.to_pylist() if r["class"] == "road" and r["metric"] == "iou"]
    assert road == [0.75]
    assert results.previous_run(run, storage=str(storage)).run_id == "res-latest-1"
    assert results.load("res-latest", run="res-latest-3", storage=str(storage))["run"][0].as_py() == "res-latest-3"


def test_without_a_local_run_record_the_run_is_found_in_mlflow(tmp_path, storage, mlflow_server):
    spec = spec_file(tmp_path, "res-remote", [{"name": "ce"}], [0])
    log_sweep_run(mlflow_server, storage, sweep="res-remote", run_id="res-remote-1", spec=spec,
                  trials=[trial("ce", 0, [80, 40, 10])])
    elsewhere = tmp_path / "laptop"  # no run.json here: storage lives on the cluster
    run = results.find_run("res-remote", tracking_uri=mlflow_server, storage=str(elsewhere))
    assert (run.run_id, run.status, run.run_dir) == ("res-remote-1", "finished", None)
    with pytest.raises(runs.RunError, match="no finished or failed run"):
        results.find_run("res-nothing", storage=str(elsewhere))


def test_variant_drops_the_seed_suffixes_only():
    assert results.variant_of("focal-g2-l1-s0") == "focal-g2-l1"
    assert results.variant_of("ce-split1-s12") == "ce"
    assert results.variant_of("combo-a0.5") == "combo-a0.5"
    assert results.variant_of("s0") == "s0"


def test_a_run_manifest_reads_back_as_written_and_a_broken_one_is_named(tmp_path):
    manifest = runs.RunManifest(sweep="m", run_id="m-1", names=("ce-s0",), configs=({"seed": 0, "eval": []},),
                                cpu=2.0, gpu=0.5, expected_trials=1,
                                eval=({"name": "idd", "label_set": "level3", "key": "idd"},), metric="val/idd/miou",
                                mode="max", report={"baseline": {"loss": "ce"}})
    runs.write_manifest(tmp_path, manifest)
    assert runs.read_manifest(tmp_path, "m-1") == manifest
    assert manifest.eval_sets() == {"idd": {"name": "idd", "label_set": "level3", "key": "idd"}}
    assert runs.read_manifest(tmp_path, "m-2") is None  # a run from before manifests
    path = runs.run_dir(tmp_path, "m-1") / runs.MANIFEST_FILE
    path.write_text(json.dumps({"sweep": "m"}))
    with pytest.raises(runs.RunError, match=r"m-1/manifest.json: not a run manifest s4sweep wrote \(missing configs, "):
        runs.read_manifest(tmp_path, "m-1")
