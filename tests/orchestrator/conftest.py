"""A real `mlflow server` for the orchestrator tests: SQLite backend, artifacts served through it, bound to 127.0.0.1.

One server per test session (start-up takes 5-10 s). `start_mlflow_server`, `stop`, `wait_healthy` and `free_port`
are plain functions so a test can start its own (a PostgreSQL-backed one, say); the `mlflow_server_factory`,
`process_groups`, `server_health` and `port_picker` fixtures hand them to test modules, which cannot import a
conftest. Servers run in their own process group and are stopped by that group's id, never by a name: other
people's servers on the same machine are left alone.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

MLFLOW = Path(sys.executable).with_name("mlflow")
START_TIMEOUT_S = 90.0
START_TRIES = 3  # a free port can be taken between choosing it and the server binding it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(tmp: Path, *, backend_store_uri: str | None = None) -> tuple[str, subprocess.Popen]:
    """Start `mlflow server` with its files under `tmp`; return its URI once /health answers 200."""
    tmp.mkdir(parents=True, exist_ok=True)
    backend = backend_store_uri or f"sqlite:///{tmp.resolve() / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    for attempt in range(1, START_TRIES + 1):
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        log_file = tmp / f"server-{port}.log"
        command = [str(MLFLOW), "server", "--backend-store-uri", backend,
                   "--artifacts-destination", str(tmp.resolve() / "artifacts"),
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
