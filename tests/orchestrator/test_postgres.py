"""The team tracking stack of docker/compose.yaml (an `mlflow server` on PostgreSQL), run for real without Docker: this
test starts its own PostgreSQL cluster with the Debian install's initdb/pg_ctl (as the `postgres` user when run as
root: initdb refuses root), on a free port on 127.0.0.1 with password auth, puts an `mlflow server` on it and runs a
micro sweep against that server.

PostgreSQL missing is a failure, not a skip: .ci/run installs it (`apt-get install -y postgresql`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2  # the test extra's psycopg2-binary; the mlflow server needs it for postgresql:// as well
import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.spec import load_spec
from orchestrator.sweep import launch
from orchestrator.tracking import Tracker

pytestmark = pytest.mark.slow
SERVER_SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "mlflow-server.sh"
START_TRIES = 3  # a free port can be taken between choosing it and the server binding it


@dataclass(frozen=True)
class Postgres:
    uri: str  # postgresql://mlflow:<password>@127.0.0.1:<port>/mlflow (libpq form, as psycopg2 takes it)
    port: int
    password: str


def postgres_bin() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb and pg_ctl."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl") if (p.parent / "initdb").is_file()]
    if not found:
        pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl): "
                    "apt-get install -y postgresql, as .ci/run does")
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


@pytest.fixture(scope="module")
def postgres(port_picker: Callable[[], int]) -> Iterator[Postgres]:
    bindir = postgres_bin()
    # under /tmp itself: pytest's own temporary root is 0700 root, which the postgres user cannot enter
    root = Path(tempfile.mkdtemp(prefix="s4pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    password = secrets.token_hex(16)
    pwfile = root / "password"
    pwfile.write_text(password)
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
    data = root / "data"

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([*as_postgres, *command], capture_output=True, text=True, timeout=120,
                              cwd=root, env={**os.environ, "PGPASSWORD": password})

    done = run(str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", f"--pwfile={pwfile}", "-E", "UTF8",
               "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "--no-sync", "--no-instructions")
    assert done.returncode == 0, done.stdout + done.stderr
    started = False
    try:
        for _ in range(START_TRIES):
            port = port_picker()
            done = run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
                       "-o", f"-p {port} -h 127.0.0.1 -k {root}", "start")
            if done.returncode == 0:
                started = True
                break
        log = (root / "server.log").read_text(errors="replace") if (root / "server.log").exists() else ""
        assert started, f"pg_ctl start failed: {done.stdout}{done.stderr}\n{log[-2000:]}"
        done = run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow")
        assert done.returncode == 0, done.stdout + done.stderr
        uri = f"postgresql://mlflow:{password}@127.0.0.1:{port}/mlflow"
        psycopg2.connect(uri).close()  # password auth over TCP works
        yield Postgres(uri=uri, port=port, password=password)
    finally:
        if started:
            stop_postgres(run, bindir, data)
        shutil.rmtree(root, ignore_errors=True)


def stop_postgres(run, bindir: Path, data: Path) -> None:
    """pg_ctl stop; if the postmaster is still there, SIGKILL it by the PID it wrote (this cluster's only)."""
    run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop")
    pidfile = data / "postmaster.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError, IndexError):
            pass


def test_a_micro_sweep_tracks_to_an_mlflow_server_on_postgresql(postgres, tmp_path, mlflow_server_factory):
    # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the driver this project installs is psycopg2
    backend = postgres.uri.replace("postgresql://", "postgresql+psycopg2://", 1)
    uri, _ = mlflow_server_factory(tmp_path / "mlflow", backend_store_uri=backend)
    spec_file = tmp_path / "pg.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "pg-micro", "base": {"preset": "micro", "dataset": {"name": "synth"}},
        "grid": {"loss": [{"name": "ce"}, {"name": "focal", "gamma": 2}], "seed": [0]},
        "resources": {"cpu": 1, "gpu": 0}}))
    outcome = launch(load_spec(spec_file), storage=str(tmp_path / "runs"), tracking_uri=uri)
    assert outcome.exit_code == 0 and outcome.run.status == "finished"
    kids = Tracker(uri).children(outcome.run.experiment_id, outcome.run.parent_run_id)
    assert sorted(k.name for k in kids) == ["ce", "focal-g2"]
    assert {k.status for k in kids} == {"FINISHED"}
    assert all("val/synth/miou" in k.metrics for k in kids)
    with psycopg2.connect(postgres.uri) as conn, conn.cursor() as cur:  # the runs live in PostgreSQL itself
        cur.execute("SELECT r.name, r.status FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                    "WHERE e.name = %s", ("pg-micro",))
        stored = dict(cur.fetchall())
    assert stored == {outcome.run.run_id: "FINISHED", "ce": "FINISHED", "focal-g2": "FINISHED"}


def test_the_compose_stacks_server_script_runs_on_postgresql(postgres, tmp_path, process_groups, port_picker,
                                                             server_health):
    """docker/mlflow-server.sh, the mlflow image's entrypoint, with the settings compose gives it (basic auth off:
    its Flask-WTF dependency is not in this venv)."""
    port = port_picker()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "POSTGRES_USER": "mlflow", "POSTGRES_PASSWORD": postgres.password, "POSTGRES_DB": "mlflow",
           "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(postgres.port), "MLFLOW_HOME": str(tmp_path),
           "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with (tmp_path / "server.log").open("wb") as out:
        proc = subprocess.Popen(["sh", str(SERVER_SCRIPT)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    process_groups.append(proc)
    uri = f"http://127.0.0.1:{port}"
    assert server_health(uri, proc), (tmp_path / "server.log").read_text(errors="replace")[-3000:]
    assert postgres.password not in " ".join(Path(f"/proc/{proc.pid}/cmdline").read_text().split("\0"))
    client = MlflowClient(uri)
    experiment = client.create_experiment("compose-script")
    run = client.create_run(experiment, run_name="probe")
    client.log_metric(run.info.run_id, "x", 1.0)
    client.log_text(run.info.run_id, "served", "note.txt")  # artifacts go through the server to MLFLOW_HOME
    client.set_terminated(run.info.run_id)
    assert (tmp_path / "artifacts").is_dir() and list((tmp_path / "artifacts").rglob("note.txt"))
    with psycopg2.connect(postgres.uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchall() == [("FINISHED",)]

