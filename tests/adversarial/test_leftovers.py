"""What a failed command leaves behind: no run record without its parent run, no parent run RUNNING, no Ray process,
no half-written output; and a file that breaks during training fails its own trial only, naming file and iteration.

One case runs the installed `s4sweep` in a process of its own: the top-level error path and the processes it leaves
are what it tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from orchestrator import runs
from orchestrator.tracking import Tracker
from trainers.data.synth import generate

S4SWEEP = Path(sys.executable).with_name("s4sweep")


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds `text` (a temp dir of our own): the ones a command of ours started."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [pid for pid in found if pid != os.getpid()]


def own_session(sid: int) -> list[int]:
    """Live, non-zombie processes of session `sid` (a command started with start_new_session=True)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def write_spec(path: Path, **sections: object) -> Path:
    path.write_text(yaml.safe_dump({"name": "leftovers", "base": {"preset": "micro"},
                                    "resources": {"cpu": 1, "gpu": 0}, **sections}))
    return path


@pytest.mark.slow
def test_a_file_that_breaks_during_training_fails_its_trial_only(tmp_path, monkeypatch):
    """The scan passes, then a training image is truncated: that trial fails naming the file and the iteration, its
    MLflow run is FAILED with that reason, the other trial finishes, and no Ray process is left."""
    from orchestrator import sweep
    from orchestrator.spec import load_spec

    good, bad = tmp_path / "good", tmp_path / "bad"
    for root in (good, bad):
        generate(root, n_train=8, n_val=2, size=(64, 128))
    victims = sorted((bad / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))
    scan = sweep.prepare_data

    def scan_then_break(trials, home):
        prepared = scan(trials, home)
        for victim in victims:  # every training image of `bad`: whichever is drawn first is broken
            victim.write_bytes(victim.read_bytes()[:100])
        return prepared

    monkeypatch.setattr(sweep, "prepare_data", scan_then_break)
    schedule = {"iterations": 3, "eval_every": 3, "checkpoint_every": 3, "log_every": 1}
    spec = write_spec(tmp_path / "s.yaml", base={"preset": "micro", "schedule": schedule,
                                                 "dataset": {"name": "cityscapes", "scale": 1.0}},
                      grid={"dataset.root": [str(good), str(bad)]},
                      eval=[{"name": "cityscapes", "root": str(good), "eval_size": [32, 64], "max_images": 2}])
    ray_temp = Path(tempfile.mkdtemp(prefix="s4adv-"))  # short: Ray's socket paths must stay under ~107 characters
    try:
        outcome = sweep.launch(load_spec(spec), storage=str(tmp_path / "runs"), ray_temp_dir=str(ray_temp))
        assert not processes_mentioning(str(ray_temp)), "Ray processes outlived the sweep"
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    assert outcome.exit_code == 1 and outcome.run.status == "failed"
    tracker = Tracker(outcome.run.tracking_uri)
    kids = {k.params["dataset.root"]: k for k in tracker.children(outcome.run.experiment_id,
                                                                  outcome.run.parent_run_id)}
    assert kids[str(good)].status == "FINISHED"
    failed = kids[str(bad)]
    reason = failed.tags["s4sweep.error"]
    assert failed.status == "FAILED" and "DataError" in reason and "unreadable image" in reason
    assert any(f"{v}: unreadable image" in reason for v in victims) and "(at iteration 1)" in reason
    assert tracker.run(outcome.run.parent_run_id).status == "FAILED"
    trial_dir = runs.run_dir(tmp_path / "runs", outcome.run.run_id) / "trials" / failed.name
    assert (trial_dir / runs.DATA_FAILURE).is_file()  # not retried: no file heals by retrying


def test_a_ray_cluster_that_is_not_there_leaves_no_run_behind(tmp_path, refuse):
    storage = tmp_path / "runs"
    refuse(["sweep", write_spec(tmp_path / "s.yaml"), "--storage", storage, "--address", "127.0.0.1:9"],
           "--address 127.0.0.1:9: no Ray cluster answers there")
    assert not (storage / "sweeps").exists()  # no run record
    if (storage / "mlflow.db").exists():  # the embedded store is created once Ray is attached: here, not at all
        tracker = Tracker(f"sqlite:///{storage / 'mlflow.db'}")
        experiment = tracker.find_experiment("leftovers")
        assert experiment is None or tracker.parents(experiment) == []  # no parent run, RUNNING or not


def fake_run(storage: Path, run_id: str = "leftovers-1") -> Path:
    state = runs.RunState(sweep="leftovers", run_id=run_id, spec_path="s.yaml", spec_sha256="0",
                          tracking_uri=f"sqlite:///{storage / 'mlflow.db'}", status="interrupted")
    runs.create(storage, state)
    return runs.run_dir(storage, run_id).local


def test_resume_refuses_tune_state_that_others_could_write(tmp_path, refuse):
    storage = tmp_path / "runs"
    tune = fake_run(storage) / "tune"
    tune.mkdir()
    pickle_file = tune / "tuner.pkl"
    pickle_file.write_bytes(b"not unpickled")
    pickle_file.chmod(0o666)
    refuse(["sweep", write_spec(tmp_path / "s.yaml"), "--storage", storage, "--resume", "leftovers-1"],
           f"{pickle_file}: mode 666", "chmod -R go-w")


def test_a_broken_run_record_is_named(tmp_path, refuse):
    storage = tmp_path / "runs"
    record = fake_run(storage) / runs.RUN_FILE
    record.write_text('{"sweep": "leftovers", "run_id": ')
    refuse(["sweep", write_spec(tmp_path / "s.yaml"), "--storage", storage, "--resume", "leftovers-1"],
           f"{record}: not a run record s4sweep wrote")


def test_an_evaluation_that_meets_a_broken_image_writes_nothing(tmp_path, refuse):
    from trainers.config import TrialConfig
    from trainers.s4gan import checkpoint as ckpt
    from trainers.s4gan.model import build_generator

    cfg = TrialConfig.from_dict({"preset": "micro"})
    saved = ckpt.save(tmp_path / "checkpoint_000001", {"generator": build_generator(cfg.model, 19).state_dict()},
                      cfg.to_dict())
    data = tmp_path / "data"
    generate(data, n_train=4, n_val=3, size=(64, 128))
    broken = sorted((data / "leftImg8bit" / "val").rglob("*.png"))[2]
    broken.write_bytes(broken.read_bytes()[:100])
    out, preds = tmp_path / "out", tmp_path / "preds"
    refuse(["eval", saved, "--dataset", "cityscapes", "--root", data, "--out", out, "--save-predictions", preds],
           f"{broken}: unreadable image")
    assert not out.exists() and not preds.exists()  # no metrics file, no partial set of PNGs


# --- in a process of its own --------------------------------------------------------------------------------------


def run_s4sweep(*argv: object, cwd: Path) -> tuple[subprocess.CompletedProcess, list[int]]:
    env = {**os.environ, "RAY_ADDRESS": "", "MLFLOW_TRACKING_URI": ""}
    proc = subprocess.Popen([str(S4SWEEP), *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=cwd, env=env, start_new_session=True)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), own_session(proc.pid)


def test_a_sweep_on_a_broken_tree_in_a_fresh_process_leaves_no_process_and_no_run(tmp_path):
    data = tmp_path / "data"
    generate(data, n_train=4, n_val=2, size=(64, 128))
    label = sorted((data / "gtFine" / "train").rglob("*_labelIds.png"))[0]
    label.write_bytes(b"")
    spec = write_spec(tmp_path / "s.yaml", base={"preset": "micro", "dataset": {"name": "cityscapes",
                                                                                  "root": str(data)}},
                      eval=[{"name": "cityscapes", "root": str(data)}])
    done, left = run_s4sweep("sweep", spec, "--storage", tmp_path / "runs", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{label}: unreadable label" in done.stderr and "nothing was scheduled" in done.stderr
    assert not left and not (tmp_path / "runs" / "sweeps").exists() and not (tmp_path / "runs" / "mlflow.db").exists()
