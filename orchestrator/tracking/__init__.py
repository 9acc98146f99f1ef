"""MLflow behind one module: a thin `MlflowClient` wrapper (one parent run per sweep run, one child run per trial).

Why not Ray's MLflow logger callback or `setup_mlflow` (reference/orchestrators.md §1.4, §9.4): the callback sends
one request per metric, opens duplicate runs after `Tuner.restore` and cannot nest runs; `setup_mlflow` keeps fluent
global state. Here every call names its run id, metrics go in batches, and a retried trial continues its own run.
This is the only package that imports mlflow, so an MLflow upgrade touches it alone:
    stores.py       tracking URIs: the embedded SQLite store, servers, schema creation, reachability, the UI
    tracker.py      Tracker: parent and child runs, batched metrics, artifacts, search, retries
    environment.py  versions, hardware and `pip freeze` for the parent run

Stores: an `http(s)://` tracking server (trials upload artifacts through it), or a database URI opened directly, the
embedded `sqlite:///<run root>/mlflow.db` by default. A fresh SQLite file opened by several processes at once races
on its schema (environment.md), so the driver calls `init_store` before any trial opens it, and `Tracker` refuses a
SQLite file that does not exist yet.
"""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # read when mlflow is imported
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # report downloads: no bars
# Artifacts come through the tracking server, which every client reaches. With S3 behind the server, MLflow would
# otherwise fetch them by presigned URLs straight from the bucket: a laptop that cannot reach the bucket then retries
# for minutes. Set it to true where clients reach the bucket and artifacts are large.
os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")

from orchestrator.tracking.environment import environment_info  # noqa: E402
from orchestrator.tracking.stores import (  # noqa: E402
    TrackingError,
    check_reachable,
    check_server,
    check_uri,
    embedded_uri,
    init_store,
    serve_ui,
)
from orchestrator.tracking.tracker import ERROR_MAX_CHARS, ERROR_TAG, ChildRun, Tracker, flatten_params  # noqa: E402

__all__ = ["ERROR_MAX_CHARS", "ERROR_TAG", "ChildRun", "Tracker", "TrackingError", "check_reachable", "check_server",
           "check_uri", "embedded_uri", "environment_info", "flatten_params", "init_store", "serve_ui"]
