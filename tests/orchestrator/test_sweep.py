"""The sweep engine end to end: real local Ray, a real `mlflow server` (or the embedded SQLite store), the real
trainer through the `micro` preset, real generated PNGs. Each test launches whole sweep runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator import results, runs
from orchestrator.spec import load_spec
from orchestrator.sweep import launch
from orchestrator.tracking import Tracker, TrackingError

pytestmark = pytest.mark.slow
S4SWEEP = Path(sys.executable).with_name("s4sweep")


def write_spec(path: Path, **overrides) -> Path:
    spec = {"name": "micro-grid", "description": "2x2 micro grid",
            "base": {"preset": "micro", "dataset": {"name": "synth"}},
            "grid": {"loss": [{"name": "ce"}, {"name": "focal", "gamma": 2}], "seed": [0, 1]},
            "resources": {"cpu": 1, "gpu": 0}}
    spec.update(overrides)
    path.write_text(yaml.safe_dump(spec))
    return path


def children(uri: str, outcome) -> list:
    return Tracker(uri).children(outcome.run.experiment_id, outcome.run.parent_run_id)


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def test_a_2x2_grid_ends_with_four_finished_children_under_one_parent(tmp_path, storage, mlflow_server):
    spec = load_spec(write_spec(tmp_path / "grid.yaml"))
    outcome = launch(spec, storage=str(storage), tracking_uri=mlflow_server)
    assert outcome.exit_code == 0 and outcome.run.status == "finished"
    kids = children(mlflow_server, outcome)
    assert sorted(k.name for k in kids) == ["ce-s0", "ce-s1", "focal-g2-s0", "focal-g2-s1"]
    assert {k.status for k in kids} == {"FINISHED"}
    focal = next(k for k in kids if k.name == "focal-g2-s1")
    assert focal.params["loss.name"] == "focal" and focal.params["loss.options.gamma"] == "2.0"
    assert focal.params["seed"] == "1" and focal.params["preset"] == "micro"
    assert focal.params["device.threads"] == "1"  # the trial's cpu: 1, resolved by the driver
    for name in ("road", "traffic light", "bicycle"):
        assert f"val/synth/iou/{name}" in focal.metrics
    client = MlflowClient(mlflow_server)
    artifacts = {a.path for a in client.list_artifacts(focal.run_id)}
    assert {"per_class_synth.json", "samples_synth.png", "confusion_synth.png", "metrics.json"} <= artifacts
    # the manifest: written at launch beside run.json and on the parent run; results read it, not the sweep file
    manifest = runs.read_manifest(storage, outcome.run.run_id)
    assert manifest.names == ("ce-s0", "ce-s1", "focal-g2-s0", "focal-g2-s1") and manifest.expected_trials == 4
    assert (manifest.cpu, manifest.gpu, list(manifest.eval_sets())) == (1.0, 0.0, ["synth"])
    assert {c["device"]["threads"] for c in manifest.configs} == {1}
    assert {a.path for a in client.list_artifacts(outcome.run.parent_run_id)} >= {runs.MANIFEST_FILE}
    res = results.collect(results.find_run("micro-grid", storage=str(storage), tracking_uri=mlflow_server),
                          cache=tmp_path / "cache")
    assert res.manifest == manifest and res.spec is None and res.expected_trials == 4
    parent = client.get_run(outcome.run.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["s4sweep.run"] == outcome.run.run_id
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.md", "best_model", "environment.json"} <= parent_files
    exported = {a.path for a in client.list_artifacts(parent.info.run_id, "best_model")}
    assert exported == {"best_model/generator.pt", "best_model/config.json", "best_model/selected.json"}
    assert "ce" in outcome.table and "focal-g2" in outcome.table and "traffic light" in outcome.table


def test_a_trial_failing_once_is_retried_from_its_checkpoint_and_keeps_its_run(tmp_path, storage, monkeypatch):
    marker = tmp_path / "fault-marker"
    monkeypatch.setenv("S4SWEEP_INJECT_FAULT", json.dumps(
        {"trial": "focal-g2-s0", "at_iteration": 3, "kind": "raise", "marker": str(marker)}))
    spec = load_spec(write_spec(tmp_path / "grid.yaml"))
    outcome = launch(spec, storage=str(storage))
    assert marker.exists(), "the fault was never injected"
    assert outcome.exit_code == 0
    kids = children(outcome.run.tracking_uri, outcome)
    assert len(kids) == 4 and {k.status for k in kids} == {"FINISHED"}
    faulted = next(k for k in kids if k.name == "focal-g2-s0")
    history = Tracker(outcome.run.tracking_uri).metric_history(faulted.run_id, "train/loss_sup")
    assert [step for step, _ in history] == [2, 4, 6]  # one run, continued from iteration 3, no gap
    trial_dir = runs.run_dir(storage, outcome.run.run_id) / "trials" / "focal-g2-s0"
    assert (trial_dir / "restored" / "tracking.json").is_file()  # it really resumed from the Tune checkpoint


def test_a_trial_worker_killed_with_sigkill_is_retried_and_the_run_completes(tmp_path, storage, monkeypatch):
    marker = tmp_path / "kill-marker"
    monkeypatch.setenv("S4SWEEP_INJECT_FAULT", json.dumps(
        {"trial": "ce-s1", "at_iteration": 3, "kind": "sigkill", "marker": str(marker)}))
    spec = load_spec(write_spec(tmp_path / "grid.yaml", grid={"loss": [{"name": "ce"}], "seed": [0, 1]}))
    outcome = launch(spec, storage=str(storage))
    assert marker.exists() and outcome.exit_code == 0
    kids = children(outcome.run.tracking_uri, outcome)
    assert sorted(k.name for k in kids) == ["ce-s0", "ce-s1"] and {k.status for k in kids} == {"FINISHED"}


def test_an_unreachable_tracking_server_fails_clearly_before_anything_is_scheduled(tmp_path, storage):
    spec_file = write_spec(tmp_path / "grid.yaml")
    spec = load_spec(spec_file)
    with pytest.raises(TrackingError, match=r"http://127\.0\.0\.1:9/?.*unreachable"):
        launch(spec, storage=str(storage), tracking_uri="http://127.0.0.1:9")
    assert not (storage / "sweeps").exists()
    proc = subprocess.run([str(S4SWEEP), "sweep", str(spec_file), "--storage", str(storage),
                           "--tracking-uri", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unreachable" in proc.stderr and "Traceback" not in proc.stderr


def test_a_non_finite_loss_fails_that_trial_with_its_reason_and_the_others_finish(tmp_path, storage):
    spec = load_spec(write_spec(tmp_path / "grid.yaml", grid={"optim.lr": [0.01, 1e30], "seed": [0]}))
    outcome = launch(spec, storage=str(storage))
    assert outcome.exit_code == 1 and outcome.run.status == "failed"
    kids = {k.name: k for k in children(outcome.run.tracking_uri, outcome)}
    assert len(kids) == 2
    bad = next(k for k in kids.values() if k.params["optim.lr"] == "1e+30")
    good = next(k for k in kids.values() if k.params["optim.lr"] == "0.01")
    assert bad.status == "FAILED" and "NonFiniteLossError: train/loss_sup is nan" in bad.tags["s4sweep.error"]
    assert good.status == "FINISHED"


def test_optuna_runs_its_budget(tmp_path, storage):
    spec = load_spec(write_spec(
        tmp_path / "optuna.yaml", grid={"seed": [0]},
        base={"preset": "micro", "dataset": {"name": "synth"}, "loss": {"name": "focal"}},
        search={"optuna": {"num_samples": 3, "metric": "val/synth/miou", "mode": "max", "seed": 1,
                           "space": {"loss.gamma": {"low": 0.5, "high": 4.0}}}}))
    outcome = launch(spec, storage=str(storage), max_concurrent=2)
    assert outcome.exit_code == 0
    kids = children(outcome.run.tracking_uri, outcome)
    gammas = {float(k.params["loss.options.gamma"]) for k in kids}
    assert len(kids) == 3 and len(gammas) == 3 and all(0.5 <= g <= 4.0 for g in gammas)
    assert {k.status for k in kids} == {"FINISHED"}


def test_asha_stops_trials_in_a_deliberately_bad_region(tmp_path, storage):
    # all weight on one rare class: the model predicts it everywhere and its mIoU stays near 0
    on_train, on_motorcycle = [0.0] * 19, [0.0] * 19
    on_train[16], on_motorcycle[17] = 1.0, 1.0
    spec = load_spec(write_spec(
        tmp_path / "asha.yaml",
        base={"preset": "micro", "dataset": {"name": "synth"}, "schedule": {"iterations": 12}},
        grid={"loss": [{"name": "ce"}, {"name": "ce", "class_weights": on_train},
                       {"name": "ce", "class_weights": on_motorcycle}], "seed": [0]},
        scheduler={"asha": {"grace_iters": 3, "reduction_factor": 2}}))
    outcome = launch(spec, storage=str(storage), max_concurrent=1)  # the good trial first: the rungs have a value
    assert outcome.exit_code == 0, outcome
    client = MlflowClient(outcome.run.tracking_uri)
    last = {}
    for k in children(outcome.run.tracking_uri, outcome):
        last[k.name] = max(m.step for m in client.get_metric_history(k.run_id, "val/synth/miou"))
    assert len(last) == 3 and last.pop("ce") == 12, last
    assert all(step < 12 for step in last.values()), last


def test_a_second_launch_is_a_new_run_and_an_interrupted_run_resumes_without_duplicates(tmp_path, storage):
    spec_file = write_spec(tmp_path / "grid.yaml", grid={"loss": [{"name": "ce"}, {"name": "dice"}], "seed": [0, 1]},
                           base={"preset": "micro", "dataset": {"name": "synth"}, "schedule": {"iterations": 12}})
    env = {**os.environ, "S4SWEEP_HOME": str(storage), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(S4SWEEP), "sweep", str(spec_file), "--max-concurrent", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # interrupt once the first trial has finished
        done = list((storage / "sweeps").glob("*/trials/*/metrics.json"))
        if done:
            break
        time.sleep(0.5)
    assert done, "no trial finished in time"
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, out
    assert "--resume" in out
    (state,) = runs.runs_of(storage, "micro-grid")
    assert state.status == "interrupted"

    resumed = subprocess.run([str(S4SWEEP), "sweep", str(spec_file), "--resume"], env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (after,) = runs.runs_of(storage, "micro-grid")
    assert after.run_id == state.run_id and after.parent_run_id == state.parent_run_id and after.status == "finished"
    kids = Tracker(after.tracking_uri).children(after.experiment_id, after.parent_run_id)
    names = [k.name for k in kids]
    assert sorted(names) == ["ce-s0", "ce-s1", "dice-s0", "dice-s1"]  # no duplicates
    assert "RUNNING" not in {k.status for k in kids}

    again = subprocess.run([str(S4SWEEP), "sweep", str(spec_file), "--run-name", "second"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert [s.run_id for s in runs.runs_of(storage, "micro-grid")] == [state.run_id, "second"]


def test_a_spent_device_hour_budget_stops_new_trials_but_not_running_ones(tmp_path, storage):
    # one micro trial takes seconds: a 1-second budget is spent by the first, so the next ones never start
    spec = load_spec(write_spec(tmp_path / "budget.yaml", max_gpu_hours=1 / 3600,
                                grid={"loss": [{"name": "ce"}], "seed": [0, 1, 2]}))
    outcome = launch(spec, storage=str(storage), max_concurrent=1)
    assert outcome.exit_code == 0
    kids = children(outcome.run.tracking_uri, outcome)
    assert [k.name for k in kids] == ["ce-s0"] and kids[0].status == "FINISHED"
    parent = MlflowClient(outcome.run.tracking_uri).get_run(outcome.run.parent_run_id)
    assert parent.data.tags["s4sweep.budget_skipped"] == "ce-s1,ce-s2"
