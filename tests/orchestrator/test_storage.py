"""Object-store storage against a real S3-compatible server on 127.0.0.1 (moto_server, IAM authentication on): the run
records round-trip, and storage that cannot work is refused, before anything is created or scheduled, with one line
that names the URI and what to do and never a credential."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator import runs
from orchestrator.storage import StorageError, check_writable, open_location

S4SWEEP = Path(sys.executable).with_name("s4sweep")


def state(run_id: str, status: runs.Status = "finished") -> runs.RunState:
    return runs.RunState(sweep="micro", run_id=run_id, spec_path="/x.yaml", spec_sha256="0", tracking_uri="http://m",
                         status=status)


def test_the_run_directory_layout(tmp_path):
    """Runs already on disk and the docs rely on these names: orchestrator/runs.py spells each once."""
    home = tmp_path.resolve()
    root = runs.storage_root(str(home))
    run = runs.run_dir(root, "micro-1")
    assert run.local == home / "sweeps" / "micro-1"
    assert runs.tune_dir(run).local == home / "sweeps" / "micro-1" / "tune"
    assert runs.trial_dir(run, "ce-s0").local == runs.trial_dir(run.local, "ce-s0") == run.local / "trials" / "ce-s0"
    assert runs.mlflow_db(home) == home / "mlflow.db"
    assert runs.mlflow_artifacts(root) == home / "mlartifacts"
    assert runs.train_dir("micro-ce-s0") == Path("runs") / "train" / "micro-ce-s0"
    runs.create(root, state("micro-1"))
    assert sorted(p.name for p in run.local.iterdir()) == ["run.json"]


def test_run_records_round_trip_on_the_object_store(s3_env):
    root = runs.storage_root(f"s3://{s3_env.bucket}/records")
    assert str(root) == f"s3://{s3_env.bucket}/records" and root.local is None
    runs.create(root, state("micro-1"))
    runs.create(root, state("micro-2", "interrupted"))
    with pytest.raises(runs.RunError, match="already exists"):
        runs.create(root, state("micro-1"))
    assert runs.load(f"s3://{s3_env.bucket}/records", "micro-2").status == "interrupted"
    assert [s.run_id for s in runs.runs_of(root, "micro")] == ["micro-1", "micro-2"]
    assert runs.latest(root, "micro", statuses=("finished",)).run_id == "micro-1"
    runs.update(root, runs.load(root, "micro-2"), status="finished")
    assert runs.latest(root, "micro", statuses=("finished",)).run_id == "micro-2"
    with pytest.raises(runs.RunError, match=f"no run 'nope' under s3://{s3_env.bucket}/records/sweeps"):
        runs.load(root, "nope")


def test_a_working_store_passes_the_probe_and_keeps_no_probe_file(s3_env, tmp_path):
    for root in (open_location(f"s3://{s3_env.bucket}/probe"), open_location(tmp_path / "local")):
        check_writable(root)
        assert root.children() == []


@pytest.mark.parametrize(("uri", "env", "says"), [
    ("s3://no-such-bucket/x", {}, "bucket 'no-such-bucket' does not exist"),
    ("s3://{bucket}/x", {"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0"}, "the store refused the credentials"),
    ("s3://{bucket}/x", {"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, "the store refused the credentials"),
    ("s3://{bucket}/x", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "cannot reach the store (endpoint http://127.0.0.1:9"),
    ("s3://{bucket}/x", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_REGION": ""}, "cannot reach the store"),
], ids=["missing-bucket", "unknown-key", "wrong-secret", "unreachable", "unreachable-no-region"])
def test_storage_that_does_not_work_is_refused_with_one_line(s3_env, monkeypatch, uri, env, says):
    uri = uri.format(bucket=s3_env.bucket)
    for name, value in env.items():
        monkeypatch.setenv(name, value) if value else monkeypatch.delenv(name)
    with pytest.raises(StorageError) as refused:  # without a region, opening the store already asks it
        check_writable(open_location(uri))
    message = str(refused.value)
    assert message.startswith(f"storage {uri}: {says}") and "\n" not in message, message
    assert s3_env.secret_key not in message and "wrong-secret" not in message


def test_credentials_in_the_uri_or_an_unknown_scheme_are_refused():
    with pytest.raises(StorageError, match=r"storage s3://\*\*\*@bucket/x: credentials in the URI") as refused:
        open_location("s3://AKIA:topsecret@bucket/x")
    assert "topsecret" not in str(refused.value)
    with pytest.raises(StorageError, match=r"storage s3://bucket/x\?region=us-east-1&secret_key=\*\*\*: credentials"):
        open_location("s3://bucket/x?region=us-east-1&secret_key=topsecret")
    with pytest.raises(StorageError, match="storage 'nosuch://bucket/x': not a filesystem this machine can open"):
        open_location("nosuch://bucket/x")


def micro_spec(path: Path) -> Path:
    path.write_text(yaml.safe_dump({"name": "s3-refused", "base": {"preset": "micro", "dataset": {"name": "synth"}},
                                    "grid": {"seed": [0]}, "resources": {"cpu": 1, "gpu": 0}}))
    return path


@pytest.mark.parametrize(("storage", "tracking", "says"), [
    ("s3://no-such-bucket/runs", "http://127.0.0.1:9", "bucket 'no-such-bucket' does not exist"),
    ("s3://{bucket}/runs", None, "an object store keeps no embedded MLflow store"),
], ids=["missing-bucket", "no-tracking-server"])
def test_the_sweep_command_refuses_before_creating_anything(s3_env, tmp_path, storage, tracking, says):
    s3_server = s3_env
    storage = storage.format(bucket=s3_server.bucket)
    command = [str(S4SWEEP), "sweep", str(micro_spec(tmp_path / "s.yaml")), "--storage", storage]
    command += ["--tracking-uri", tracking] if tracking else []
    env = s3_server.env()
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if "error:" in x]
    assert line.startswith(f"s4sweep sweep: error: storage {storage}: {says}"), proc.stderr
    assert "Traceback" not in proc.stderr and s3_server.secret_key not in proc.stderr + proc.stdout
    assert open_location(f"s3://{s3_server.bucket}/runs").children() == []  # no run record, no probe left
