"""`s4sweep submit`: what a submission carries (fast), then a real Ray head started here, on free ports with token
auth on, receiving micro sweeps whose trials log to a real `mlflow server`.

The head runs with the venv's bin first on PATH (a job's `python` and `s4sweep` are the ones on the PATH of the shell
that ran `ray start`) and a HOME of its own holding the token, so the user's ~/.ray is never touched. It runs in its
own session; teardown kills that session and every descendant (a job's driver starts a session of its own), by PID.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator import cli, runs
from orchestrator.spec import load_spec
from orchestrator.submit import (
    PROJECT_ROOT,
    SubmitError,
    local_versions,
    parse_probe,
    plan,
    spec_variables,
    version_mismatches,
)
from orchestrator.tracking import Tracker

DATA = Path(__file__).parent / "data"
MICRO = DATA / "submit-micro.yaml"
FAILING = DATA / "submit-failing.yaml"
BIN = Path(sys.executable).parent
S4SWEEP, RAY = BIN / "s4sweep", BIN / "ray"
HEAD_START_TIMEOUT_S = 90.0
# variables of the developer's shell that would point the test's commands at another cluster or server
FOREIGN = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE",
           "MLFLOW_TRACKING_URI", "S4SWEEP_TEST_SYNTH_ROOT")


def micro_env(root: str = "/data/synth") -> dict[str, str]:
    return {"S4SWEEP_TEST_SYNTH_ROOT": root}


# --- what a submission carries (no cluster) -------------------------------------------------------------------


def test_a_submission_runs_the_sweep_under_its_run_id_with_the_tracking_uri_and_the_dataset_roots():
    spec = load_spec(MICRO, env=micro_env())
    now = datetime(2026, 11, 25, 8, 30, 5, tzinfo=UTC)
    job = plan(spec, MICRO, tracking_uri="http://mlflow.internal:5000", storage="/mnt/shared/s4sweep",
               run_name=None, trigger="nightly", max_concurrent=4, env=micro_env(), now=now)
    assert job.submission_id == "submit-micro-20261125T083005Z"
    assert job.entrypoint == ("s4sweep sweep tests/orchestrator/data/submit-micro.yaml --run-name "
                              "submit-micro-20261125T083005Z --trigger nightly --storage /mnt/shared/s4sweep "
                              "--max-concurrent 4")
    assert job.working_dir == str(PROJECT_ROOT)
    assert job.runtime_env()["env_vars"]["MLFLOW_TRACKING_URI"] == "http://mlflow.internal:5000"
    assert job.runtime_env()["env_vars"]["S4SWEEP_TEST_SYNTH_ROOT"] == "/data/synth"
    assert not any("TOKEN" in k or "PASSWORD" in k for k in job.env_vars)  # the token goes as a header, never here
    assert job.metadata["s4sweep.run"] == job.submission_id and job.metadata["s4sweep.sweep"] == "submit-micro"
    named = plan(spec, MICRO, tracking_uri="https://mlflow.example.org", storage=None, run_name="mine",
                 env=micro_env())
    assert named.submission_id == "mine" and "--storage" not in named.entrypoint


def test_spec_variables_are_the_ones_the_file_reads(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("# not ${COMMENTED}\na: ${ONE}\nb:\n  - x-${TWO}\n  - {c: '${ONE}'}\nd: $${LITERAL}\n")
    assert spec_variables(path) == ["ONE", "TWO"]


@pytest.mark.parametrize("uri", [None, "sqlite:///runs/mlflow.db", "file:///tmp/mlruns", "postgresql://db/mlflow"])
def test_only_an_mlflow_server_will_do_as_tracking_uri(uri):
    spec = load_spec(MICRO, env=micro_env())
    with pytest.raises(SubmitError, match="tracking URI|--tracking-uri"):
        plan(spec, MICRO, tracking_uri=uri, storage="/shared", run_name=None, env=micro_env())


def test_the_sweep_file_must_travel_with_the_project_and_storage_must_be_the_clusters(tmp_path):
    outside = tmp_path / "elsewhere.yaml"
    shutil.copy(MICRO, outside)
    spec = load_spec(outside, env=micro_env())
    with pytest.raises(SubmitError, match="must lie inside the project"):
        plan(spec, outside, tracking_uri="http://m:5000", storage="/shared", run_name=None, env=micro_env())
    spec = load_spec(MICRO, env=micro_env())
    with pytest.raises(SubmitError, match="absolute path on the cluster"):
        plan(spec, MICRO, tracking_uri="http://m:5000", storage="runs", run_name=None, env=micro_env())
    job = plan(spec, MICRO, tracking_uri="http://m:5000", storage="s3://bucket/s4sweep", run_name=None,
               env=micro_env())
    assert job.storage == "s3://bucket/s4sweep"


def test_version_mismatches_name_the_package_and_both_versions():
    here = local_versions()
    assert here["ray"] == "2.60.0" and here["s4sweep"]  # the pins this project installs
    same = {**here, "executable": "/opt/py/bin/python"}
    assert version_mismatches(here, same) == []
    problems = version_mismatches(here, {**same, "ray": "2.59.1", "s4sweep": None})
    assert problems[0] == "ray 2.59.1 on the cluster, 2.60.0 here"
    assert problems[1].startswith("s4sweep is not installed in the cluster's Python (/opt/py/bin/python)")
    with pytest.raises(SubmitError, match="no S4SWEEP-VERSIONS line"):
        parse_probe("Traceback ...\nModuleNotFoundError")


def test_rayignore_leaves_out_the_venv_run_state_data_and_secrets(tmp_path):
    from ray._private.runtime_env.packaging import _dir_travel  # what Ray applies when it packs a working_dir

    project = tmp_path / "p"
    kept = ["orchestrator/submit.py", "search_spaces/smoke.yaml", "tests/orchestrator/data/submit-micro.yaml",
            "trainers/data/synth.py", "docker/secrets.env.example", "cluster/nightly.sh"]
    dropped = [".venv/bin/python", "runs/mlflow.db", "runs/sweeps/x/run.json", "data/cityscapes/a.png", ".git/HEAD",
               "orchestrator/__pycache__/cli.cpython-311.pyc", "s4sweep.egg-info/PKG-INFO", "mlruns/0/meta.yaml",
               "x/checkpoints/checkpoint_000010/state.pt", "weights/resnet101.pth", "docker/secrets.env", ".env",
               "bench/results/step.json"]
    for rel in kept + dropped:
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("x")
    shutil.copy(PROJECT_ROOT / ".rayignore", project / ".rayignore")
    packed: list[Path] = []
    _dir_travel(project, [], packed.append, include_gitignore=False)  # .rayignore alone, without .gitignore
    files = {str(p.relative_to(project)) for p in packed if p.is_file()}
    assert set(kept) <= files
    assert files & set(dropped) == set()


def test_submit_refuses_clearly_without_a_cluster_or_a_server(capsys, monkeypatch):
    for name in FOREIGN:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("S4SWEEP_TEST_SYNTH_ROOT", "/data/synth")
    assert cli.main(["submit", str(MICRO), "--tracking-uri", "http://m:5000"]) == 2
    assert "no cluster: pass --address" in capsys.readouterr().err
    assert cli.main(["submit", str(MICRO), "--address", "http://127.0.0.1:9", "--tracking-uri", "sqlite:///x.db"]) == 2
    assert "is not an MLflow server" in capsys.readouterr().err
    assert cli.main(["submit", str(MICRO), "--address", "http://127.0.0.1:9", "--tracking-uri", "http://m:5000",
                     "--storage", "/shared"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray job API at http://127.0.0.1:9" in err and "Traceback" not in err


# --- a real head ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    address: str  # the job API (dashboard)
    home: Path  # HOME with .ray/auth_token
    log: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a laptop that holds this cluster's token, with the venv activated."""
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
        return {**env, "HOME": str(self.home), "RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1",
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def own_processes(root: int) -> set[int]:
    """`root`'s session and every descendant of it (a Ray job's driver runs in a session of its own)."""
    parent, session = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid], session[pid] = int(fields[1]), int(fields[3])
    found = {pid for pid, sid in session.items() if sid == root}
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found


def kill_tree(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    tree = own_processes(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops its own processes on SIGTERM
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for _ in range(20):
        left = (tree | own_processes(proc.pid)) & {int(p.name) for p in Path("/proc").glob("[0-9]*")}
        left = {pid for pid in left if not _zombie(pid)}
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.25)
    if proc.poll() is None:
        proc.wait(timeout=10)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_for_job_api(address: str, token: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + HEAD_START_TIMEOUT_S
    request = urllib.request.Request(f"{address}/api/version", headers={"Authorization": f"Bearer {token}"})
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200 and "Ray runtime started" in log.read_text(errors="replace"):
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"ray head did not serve {address} within {HEAD_START_TIMEOUT_S:g} s (exit code {proc.poll()}); "
                f"log tail:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    home = tmp_path_factory.mktemp("ray_home")
    token = secrets.token_hex(32)
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(token)
    temp_dir = Path(tempfile.mkdtemp(prefix="s4ray-"))  # short: Ray's socket paths must stay under ~107 characters
    log = home / "head.log"
    dashboard = free_port()
    ports = {"--port": free_port(), "--dashboard-port": dashboard, "--ray-client-server-port": free_port(),
             "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
             "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
             "--node-manager-port": free_port(), "--object-manager-port": free_port()}
    assert ports["--ray-client-server-port"] >= 20000  # Ray refuses lower ones; ephemeral ports are higher
    command = [str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1",
               "--num-cpus", "2", "--num-gpus", "0", "--temp-dir", str(temp_dir), "--block"]
    command += [str(x) for item in ports.items() for x in item]
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", RAY_AUTH_MODE="token",
               RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # the last: node IP 127.0.0.1
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=home,
                                start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dashboard}"
        wait_for_job_api(address, token, proc, log)
        yield Head(address=address, home=home, log=log)
    finally:
        kill_tree(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def synth_root(tmp: Path) -> Path:
    from trainers.data.roots import resolve_root

    return resolve_root("synth", None, synth_images=load_spec(MICRO, env=micro_env()).trials()[0].dataset.synth_images,
                        home=tmp)


@pytest.mark.slow
def test_a_submitted_micro_sweep_succeeds_and_its_trials_log_to_the_mlflow_server(head, tmp_path,
                                                                                   mlflow_server_factory):
    uri, _ = mlflow_server_factory(tmp_path / "mlflow")
    storage = tmp_path / "shared"
    data = synth_root(tmp_path / "datasets")
    proc = subprocess.run([str(S4SWEEP), "submit", str(MICRO.relative_to(PROJECT_ROOT)), "--address", head.address,
                           "--wait", "--tracking-uri", uri, "--storage", str(storage)], cwd=PROJECT_ROOT,
                          env=head.env(S4SWEEP_TEST_SYNTH_ROOT=str(data)), capture_output=True, text=True,
                          timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    probe = re.search(r"^cluster \S+: Ray (\S+), s4sweep (\S+), Python \S+ \((.+)\)$", out, re.M)
    assert probe, out
    assert probe[1] == "2.60.0" and probe[2] == local_versions()["s4sweep"]
    assert Path(probe[3]).parent.resolve() == BIN.resolve()  # the job's python is the venv's
    run_id = re.search(r"^submitted (submit-micro-\d{8}T\d{6}Z): ", out, re.M)[1]
    assert f"job {run_id}: SUCCEEDED" in out

    state = runs.load(storage, run_id)  # the run's state is where --storage said, under the submission id
    assert state.status == "finished" and state.tracking_uri == uri
    tracker = Tracker(uri)
    kids = tracker.children(state.experiment_id, state.parent_run_id)
    assert sorted(k.name for k in kids) == ["ce-s0", "ce-s1"]
    assert {k.status for k in kids} == {"FINISHED"}
    assert all("val/synth/miou" in k.metrics for k in kids)
    assert {k.params["dataset.root"] for k in kids} == {str(data)}  # the root travelled from this environment


@pytest.mark.slow
def test_without_wait_it_prints_commands_that_follow_the_job_to_its_end(head, tmp_path):
    uri = "http://127.0.0.1:9"  # never reached: the job stops at its missing dataset, before tracking anything
    proc = subprocess.run([str(S4SWEEP), "submit", str(FAILING), "--address", head.address, "--tracking-uri", uri,
                           "--storage", str(tmp_path / "shared"), "--run-name", "failing-1"], env=head.env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    commands = dict(re.findall(r"^  (\w+): +(ray job .+)$", proc.stdout, re.M))
    assert set(commands) == {"follow", "status", "stop", "logs"}, proc.stdout
    follow = subprocess.run(commands["follow"], shell=True, env=head.env(), capture_output=True, text=True,
                            timeout=240)
    assert "root /nonexistent/s4sweep-submit-test does not exist" in follow.stdout  # the log, to the job's end
    status = subprocess.run(commands["status"], shell=True, env=head.env(), capture_output=True, text=True,
                            timeout=60)
    assert "Job 'failing-1' failed" in status.stdout, status.stdout + status.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("change", "hint"), [
    ({"RAY_AUTH_TOKEN": "0" * 64}, "holds this cluster's token"),  # a wrong token
    ({}, "holds this cluster's token"),  # token mode, but no token anywhere
    ({"RAY_AUTH_MODE": None}, "set RAY_AUTH_MODE=token"),  # token mode not asked for
], ids=["wrong-token", "no-token", "no-token-mode"])
def test_a_wrong_or_missing_token_fails_with_a_clear_message(head, change, hint, tmp_path):
    env = {**head.env(HOME=str(tmp_path)), **micro_env()}  # a HOME without .ray/auth_token
    env.update({k: v for k, v in change.items() if v is not None})
    env = {k: v for k, v in env.items() if change.get(k, "") is not None}
    proc = subprocess.run([str(S4SWEEP), "submit", str(MICRO), "--address", head.address, "--tracking-uri",
                           "http://127.0.0.1:5000", "--storage", str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"the Ray cluster at {head.address} refused the request" in proc.stderr, proc.stderr
    assert hint in proc.stderr and "Traceback" not in proc.stderr
