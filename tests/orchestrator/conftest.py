"""A real `mlflow server` for the orchestrator tests: SQLite backend, artifacts served through it, bound to 127.0.0.1.

One server per test session (start-up takes 5-10 s). Likewise one S3-compatible server (`moto_server`, IAM
authentication on, so wrong credentials are refused as a real store refuses them) with one bucket, for the object-store
storage tests. `start_mlflow_server`, `stop`, `wait_healthy` and `free_port`
are plain functions so a test can start its own (a PostgreSQL-backed one, say); the `mlflow_server_factory`,
`process_groups`, `server_health` and `port_picker` fixtures hand them to test modules, which cannot import a
conftest. Servers run in their own process group and are stopped by that group's id, never by a name: other
people's servers on the same machine are left alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

MLFLOW = Path(sys.executable).with_name("mlflow")
MOTO = Path(sys.executable).with_name("moto_server")
START_TIMEOUT_S = 90.0
START_TRIES = 3  # a free port can be taken between choosing it and the server binding it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(tmp: Path, *, backend_store_uri: str | None = None, artifacts_destination: str | None = None,
                        env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
    """Start `mlflow server` with its files under `tmp` (artifacts there too unless `artifacts_destination`, an
    s3:// URI say, with `env` giving its endpoint and credentials); return its URI once /health answers 200."""
    tmp.mkdir(parents=True, exist_ok=True)
    backend = backend_store_uri or f"sqlite:///{tmp.resolve() / 'mlflow.db'}"
    env = {**(os.environ if env is None else env), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    for attempt in range(1, START_TRIES + 1):
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        log_file = tmp / f"server-{port}.log"
        command = [str(MLFLOW), "server", "--backend-store-uri", backend,
                   "--artifacts-destination", artifacts_destination or str(tmp.resolve() / "artifacts"),
                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        with log_file.open("wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                                    start_new_session=True)
        if wait_healthy(uri, proc):
            return uri, proc
        stop(proc)
        tail = log_file.read_text(errors="replace")[-3000:]
        if attempt < START_TRIES and "address already in use" in tail.lower():
            continue
        pytest.fail(f"mlflow server on {uri} did not become healthy within {START_TIMEOUT_S:g} s "
                    f"(exit code {proc.returncode}); log tail:\n{tail}")
    raise AssertionError("unreachable")


def stop(proc: subprocess.Popen, *, grace_s: float = 10.0) -> None:
    """SIGTERM the server's process group (the CLI, uvicorn and its worker), then SIGKILL whatever is left in it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)  # start_new_session=True: the group id is the server's pid
        except ProcessLookupError:
            break  # the group is empty
        if sig == signal.SIGTERM:
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
    proc.wait(timeout=10)


def wait_healthy(uri: str, proc: subprocess.Popen, timeout_s: float = START_TIMEOUT_S) -> bool:
    """Poll `<uri>/health` until it answers 200 (True), or `proc` exits or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False


@pytest.fixture(scope="session")
def logged_runs() -> ModuleType:
    """test_results.py, whose helpers log synthetic sweep runs as the engine does (`trial`, `spec_file`,
    `log_sweep_run`): test modules cannot import each other under --import-mode=importlib."""
    path = Path(__file__).with_name("test_results.py")
    spec = importlib.util.spec_from_file_location("_s4sweep_logged_runs", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def submit_helpers() -> ModuleType:
    """test_submit.py, whose helpers start and stop a token-auth Ray head by PID (`free_port`, `kill_tree`,
    `own_processes`, `wait_for_job_api`, `FOREIGN`): the multi-node tests build their cluster with them."""
    path = Path(__file__).with_name("test_submit.py")
    spec = importlib.util.spec_from_file_location("_s4sweep_submit_helpers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def server_health() -> Callable[..., bool]:
    """`wait_healthy(uri, proc, timeout_s=90) -> bool` for a server a test starts itself."""
    return wait_healthy


@pytest.fixture(scope="session")
def port_picker() -> Callable[[], int]:
    """`free_port() -> int`: a port on 127.0.0.1 that was free a moment ago."""
    return free_port


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uri, proc = start_mlflow_server(tmp_path_factory.mktemp("mlflow_server"))
    try:
        yield uri
    finally:
        stop(proc)


@pytest.fixture
def process_groups() -> Iterator[list[subprocess.Popen]]:
    """Append processes started with start_new_session=True; each one's group is stopped after the test."""
    started: list[subprocess.Popen] = []
    try:
        yield started
    finally:
        for proc in started:
            stop(proc)


@pytest.fixture
def mlflow_server_factory(
    process_groups: list[subprocess.Popen],
) -> Callable[..., tuple[str, subprocess.Popen]]:
    """`start(tmp, backend_store_uri=None) -> (uri, proc)` for a test's own server, stopped after the test."""

    def start(tmp: Path, *, backend_store_uri: str | None = None) -> tuple[str, subprocess.Popen]:
        uri, proc = start_mlflow_server(tmp, backend_store_uri=backend_store_uri)
        process_groups.append(proc)
        return uri, proc

    return start


# --- an S3-compatible server ---------------------------------------------------------------------------------------

S3_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE", "MLFLOW_S3_ENDPOINT_URL")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    proc: subprocess.Popen

    def env(self, **changes: str) -> dict[str, str]:
        """The standard AWS variables a client of this server needs (the developer's own AWS settings removed)."""
        env = {k: v for k, v in os.environ.items() if k not in S3_VARIABLES}
        return {**env, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1",
                "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull, **changes}


def start_s3_server(tmp: Path, *, bucket: str = "s4sweep-test") -> S3Server:
    """`moto_server` on 127.0.0.1 with IAM authentication after the first three requests, which create the user whose
    key every later request must carry (requests with another key fail as on AWS); then the bucket, with that key."""
    import boto3

    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    with (tmp / "moto.log").open("wb") as out:
        proc = subprocess.Popen([str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # a bare TCP connect: an HTTP request would use up one of the unauthenticated three
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server on port {port} did not start: {(tmp / 'moto.log').read_text()[-2000:]}")
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        boot = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "bootstrap",
                "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="s4sweep")
        key = iam.create_access_key(UserName="s4sweep")["AccessKey"]
        iam.put_user_policy(UserName="s4sweep", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        s3 = boto3.client("s3", **{**boot, "aws_access_key_id": key["AccessKeyId"],
                                   "aws_secret_access_key": key["SecretAccessKey"]})
        s3.create_bucket(Bucket=bucket)
    except BaseException:
        stop(proc)
        raise
    return S3Server(endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"], proc)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3_server(tmp_path_factory.mktemp("s3_server"))
    try:
        yield server
    finally:
        stop(server.proc)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """This test process talks to the S3 server through the standard AWS variables (restored afterwards)."""
    for name in S3_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env().items():
        if name in S3_VARIABLES:
            monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture(scope="session")
def s3_mlflow_server(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An `mlflow server` whose artifacts go to the S3 server's bucket (boto3, through the standard AWS variables)."""
    uri, proc = start_mlflow_server(tmp_path_factory.mktemp("s3_mlflow_server"),
                                    artifacts_destination=f"s3://{s3_server.bucket}/mlartifacts", env=s3_server.env())
    try:
        yield uri
    finally:
        stop(proc)
