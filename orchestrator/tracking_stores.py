"""Tracking URIs, without importing mlflow (orchestrator/tracking.py does): their kinds, the embedded store's path, and
checking that a store answers.

Stores: an `http(s)://` tracking server (trials upload artifacts through it), or a database URI opened directly, the
embedded `sqlite:///<run root>/mlflow.db` by default. A fresh SQLite file opened by several processes at once races
on its schema (environment.md), so the driver calls `init_store` before any trial opens it, and `Tracker` refuses a
SQLite file that does not exist yet.
"""

from __future__ import annotations

import logging
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import sqlalchemy.engine

from orchestrator.runs import mlflow_db

log = logging.getLogger(__name__)
SERVER_SCHEMES = ("http", "https")
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


class TrackingError(RuntimeError):
    """A tracking call failed: the message names the store URI, the run and what failed."""


def embedded_uri(run_root: Path) -> str:
    return f"sqlite:///{mlflow_db(run_root)}"


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
