"""Tracking URIs: an `http(s)://` MLflow server, or a database opened directly (the embedded SQLite file by default);
creating a database's schema once, from the driver; checking that a store answers; the MLflow UI on a database."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import sqlalchemy.engine
import sqlalchemy.exc
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from orchestrator.runs import mlflow_db

log = logging.getLogger(__name__)
SERVER_SCHEMES = ("http", "https")
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


class TrackingError(RuntimeError):
    """A tracking call failed: the message names the store URI, the run and what failed."""


def embedded_uri(run_root: Path) -> str:
    return f"sqlite:///{mlflow_db(run_root)}"


def init_store(uri: str, *, artifact_root: Path | str | None = None) -> None:
    """Create the database schema once, from the driver, before any trial opens the store; no-op for a server."""
    scheme = uri_scheme(uri)
    if scheme in SERVER_SCHEMES:
        return
    root = artifact_folder(uri, artifact_root)
    try:
        if scheme == "sqlite":
            sqlite_path(uri).parent.mkdir(parents=True, exist_ok=True)
        # MLflow's own store class: unlike MlflowClient it lets the driver set the "Default" experiment's artifact
        # root (else ./mlruns in whatever directory the driver happens to run in).
        SqlAlchemyStore(uri, str(root)).engine.dispose()
    except (MlflowException, OSError, sqlalchemy.exc.SQLAlchemyError) as e:
        raise TrackingError(f"tracking store {redact_uri(uri)}: creating the schema failed: {e}") from e


def check_reachable(uri: str, *, timeout_s: float = 10) -> None:
    """Fail early, in the driver, with a message that names the URI: a server must answer GET /health with 200
    within `timeout_s` (polled, so a server that is still starting passes); a SQLite file's folder must be creatable."""
    scheme = uri_scheme(uri)
    if scheme == "sqlite":
        folder = sqlite_path(uri).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"tracking store {uri}: cannot create its folder {folder}: {e}") from e
        return
    if scheme not in SERVER_SCHEMES:
        return  # other databases are checked when init_store connects
    url = uri.rstrip("/") + "/health"
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=max(left, 0.1)) as response:
                if response.status == 200:
                    return
                problem = f"GET {url} answered {response.status}"
        except urllib.error.HTTPError as e:
            problem = f"GET {url} answered {e.code}"
            if e.code == 403:
                problem += " (the server rejects this Host header unless started with --allowed-hosts)"
        except (urllib.error.URLError, OSError) as e:
            problem = f"GET {url} failed: {getattr(e, 'reason', e)}"
        if time.monotonic() + 0.5 >= deadline:
            raise TrackingError(f"tracking server {redact_uri(uri)} is unreachable: {problem} (waited {timeout_s:g} s)")
        time.sleep(0.5)


def check_uri(uri: str) -> None:
    """A tracking URI s4sweep can use at all (its scheme), before anything is prepared for it."""
    if uri_scheme(uri) == "sqlite":
        sqlite_path(uri)


def check_server(uri: str, *, timeout_s: float = 2) -> None:
    """For commands that only read: a tracking server must answer /health within `timeout_s` (MLflow's own client
    would retry a dead one for minutes); a database store is checked when opened."""
    if uri_scheme(uri) in SERVER_SCHEMES:
        check_reachable(uri, timeout_s=timeout_s)


def serve_ui(uri: str, *, host: str = "127.0.0.1", port: int = 5000) -> int:
    """Run the MLflow UI (`mlflow server`, one worker, no job runner) on a database store in the foreground."""
    if uri_scheme(uri) in SERVER_SCHEMES:
        raise TrackingError(f"{uri} is already a tracking server: open it in a browser")
    init_store(uri)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
               "--port", str(port), "--workers", "1", "--artifacts-destination", str(artifact_folder(uri, None))]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log.info("MLflow UI on http://%s:%d for %s", host, port, redact_uri(uri))
    process = subprocess.Popen(command, env=env)
    try:
        return process.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the server too (same process group): let it finish shutting down
        process.terminate()
        return process.wait()


def uri_scheme(uri: str) -> str:
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    if scheme not in SERVER_SCHEMES + DATABASE_SCHEMES:
        raise TrackingError(f"tracking URI {redact_uri(uri)!r} is not supported: use http(s)://host:port (an mlflow "
                            f"server) or a database URI ({', '.join(DATABASE_SCHEMES)}); the file store is retired")
    return scheme


def sqlite_path(uri: str) -> Path:
    database = sqlalchemy.engine.make_url(uri).database
    if not database or database == ":memory:":
        raise TrackingError(f"tracking URI {uri!r} names no SQLite file; use sqlite:////absolute/path/mlflow.db")
    return Path(database).resolve()


def artifact_folder(uri: str, given: Path | str | None) -> Path | str:
    """A local folder (absolute), or an object-store URI kept as given (s3://bucket/prefix/mlartifacts)."""
    if isinstance(given, str) and "://" in given:
        return given.rstrip("/")
    if given is not None:
        return Path(given).resolve()
    if uri_scheme(uri) == "sqlite":
        return sqlite_path(uri).parent / "artifacts"
    raise TrackingError(f"tracking store {redact_uri(uri)}: a database other than SQLite needs an artifact_root")


def redact_uri(uri: str) -> str:
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", uri)
