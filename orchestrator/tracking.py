"""MLflow behind one module: a thin `MlflowClient` wrapper (one parent run per sweep run, one child run per trial).

Why not Ray's MLflow logger callback or `setup_mlflow` (reference/orchestrators.md §1.4, §9.4): the callback sends
one request per metric, opens duplicate runs after `Tuner.restore` and cannot nest runs; `setup_mlflow` keeps fluent
global state. Here every call names its run id, metrics go in batches, and a retried trial continues its own run.
This is the only module that imports mlflow, so an MLflow upgrade touches this file alone. Beside it, mlflow-free:
tracking_stores.py (tracking URIs: the embedded SQLite store, servers, reachability, the UI) and environment.py
(versions, hardware and `pip freeze` for the parent run).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Literal, TypeVar

import sqlalchemy.exc

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # read when mlflow is imported
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # report downloads: no bars
# Artifacts come through the tracking server, which every client reaches. With S3 behind the server, MLflow would
# otherwise fetch them by presigned URLs straight from the bucket: a laptop that cannot reach the bucket then retries
# for minutes. Set it to true where clients reach the bucket and artifacts are large.
os.environ.setdefault("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")

from mlflow.entities import Metric, Param, Run, RunTag, ViewType  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.validation import (  # noqa: E402
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from orchestrator.environment import environment_info  # noqa: E402
from orchestrator.tracking_stores import (  # noqa: E402 - re-exported: tracking.check_reachable, ...
    SERVER_SCHEMES,
    TrackingError,
    artifact_folder,
    check_reachable,
    check_server,
    check_uri,
    embedded_uri,
    redact_uri,
    sqlite_path,
    uri_scheme,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
EndStatus = Literal["FINISHED", "FAILED", "KILLED"]
END_STATUSES: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED")
SWEEP_RUN_TAG = "s4sweep.run"
ROLE_TAG = "s4sweep.role"  # "parent" or "trial": find_parent must not match a trial that copies the sweep tags
ERROR_TAG = "s4sweep.error"
ERROR_MAX_CHARS = 5000
TRIES = 3
RETRY_BACKOFF_S = 1.0  # waits 1 s, then 2 s; MLflow's HTTP layer has its own retries underneath (MLFLOW_HTTP_REQUEST_*)
SEARCH_PAGE_SIZE = 1000


@dataclass(frozen=True)
class ChildRun:
    run_id: str
    name: str
    status: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # latest value per key


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


class Tracker:
    """Explicit-run-id MLflow calls for one store. Writes that can be repeated safely retry transient failures
    (connection errors, 5xx, 429, a locked database) `TRIES` times with backoff, then raise TrackingError."""

    def __init__(self, uri: str, *, artifact_root: Path | str | None = None) -> None:
        scheme = uri_scheme(uri)
        if scheme == "sqlite" and not sqlite_path(uri).exists():
            raise TrackingError(f"tracking store {uri}: no such database file {sqlite_path(uri)} (nothing was "
                                "tracked there yet; a sweep's driver creates it with init_store before any trial "
                                "opens it, as processes opening a fresh SQLite file at once race on its schema)")
        # A server keeps artifacts under its --artifacts-destination; a database store needs a root, never ./mlruns.
        self.artifact_root = None if scheme in SERVER_SCHEMES else artifact_folder(uri, artifact_root)
        self.uri = uri
        self._client = MlflowClient(tracking_uri=uri)
        self._last_timestamp = 0

    def experiment(self, name: str) -> str:
        found = self._call(f"get experiment {name!r}", functools.partial(self._client.get_experiment_by_name, name))
        if found is None:
            location = None if self.artifact_root is None else f"{self.artifact_root}/{_safe_dirname(name)}"
            try:
                return self._client.create_experiment(name, artifact_location=location)
            except MlflowException as e:
                if e.error_code != "RESOURCE_ALREADY_EXISTS":  # else another process created it just now
                    raise TrackingError(f"tracking store {redact_uri(self.uri)}: creating experiment {name!r} failed: "
                                        f"{e}") from e
            found = self._call(f"get experiment {name!r}", functools.partial(self._client.get_experiment_by_name, name))
        if found is None or found.lifecycle_stage == "deleted":
            raise TrackingError(f"tracking store {redact_uri(self.uri)}: experiment {name!r} is deleted; restore it "
                                "(`mlflow experiments restore`) or choose another sweep name")
        return found.experiment_id

    def start_parent(self, experiment_id: str, *, run_name: str, tags: Mapping[str, str]) -> str:
        """The parent run of one sweep run; its `s4sweep.run` tag (default: `run_name`) is what find_parent matches."""
        all_tags = {SWEEP_RUN_TAG: run_name, **tags, ROLE_TAG: "parent"}
        create = functools.partial(self._client.create_run, experiment_id, run_name=run_name, tags=_tag_dict(all_tags))
        return self._call(f"start parent run {run_name!r}", create, retry=False).info.run_id  # a retry could duplicate

    def find_parent(self, experiment_id: str, sweep_run: str) -> str | None:
        query = f"tags.`{SWEEP_RUN_TAG}` = {_quote(sweep_run)} and tags.`{ROLE_TAG}` = 'parent'"
        runs = self._search(experiment_id, query)
        if len(runs) > 1:
            log.warning("%d parent runs carry %s=%s; using the newest, %s", len(runs), SWEEP_RUN_TAG, sweep_run,
                        runs[0].info.run_id)
        return runs[0].info.run_id if runs else None

    def start_child(self, experiment_id: str, parent_id: str, *, run_name: str, params: Mapping[str, object],
                    tags: Mapping[str, str]) -> str:
        """One trial's run under `parent_id`, with its flattened config as params (logged once, here)."""
        all_tags = {**tags, "mlflow.parentRunId": parent_id, ROLE_TAG: "trial"}
        create = functools.partial(self._client.create_run, experiment_id, run_name=run_name, tags=_tag_dict(all_tags))
        run_id = self._call(f"start child run {run_name!r}", create, retry=False).info.run_id
        batch = [Param(key, value) for key, value in flatten_params(params).items()]
        try:
            for i in range(0, len(batch), MAX_PARAMS_TAGS_PER_BATCH):
                chunk = batch[i : i + MAX_PARAMS_TAGS_PER_BATCH]
                log_params = functools.partial(self._client.log_batch, run_id, params=chunk, synchronous=True)
                self._call(f"log params of run {run_id} ({run_name!r})", log_params)
        except TrackingError:
            # A child without its params is useless and would confuse a retried trial: delete it (best effort).
            try:
                self._client.delete_run(run_id)
            except (MlflowException, OSError) as e:
                log.warning("could not delete half-created run %s: %s", run_id, e)
            raise
        return run_id

    def resume(self, run_id: str) -> None:
        """Put a run back to RUNNING (a retried or restored trial continues its own run) and clear its error tag."""
        run = self._call(f"get run {run_id}", functools.partial(self._client.get_run, run_id))
        if ERROR_TAG in run.data.tags:
            self._call(f"clear error of run {run_id}", functools.partial(self._client.delete_tag, run_id, ERROR_TAG))
        self._call(f"resume run {run_id}", functools.partial(self._client.update_run, run_id, status="RUNNING"))

    def log_metrics(self, run_id: str, step: int, values: Mapping[str, float]) -> None:
        """Batched; NaN is kept (MLflow stores it). The store drops an exact repeat of a batch, so retries are safe."""
        timestamp = self._timestamp()
        batch = [Metric(key, _number(key, value), timestamp, step) for key, value in values.items()]
        for i in range(0, len(batch), MAX_METRICS_PER_BATCH):
            chunk = batch[i : i + MAX_METRICS_PER_BATCH]
            send = functools.partial(self._client.log_batch, run_id, metrics=chunk, synchronous=True)
            self._call(f"log {len(chunk)} metrics at step {step} to run {run_id}", send)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """A file, or a folder's contents, under `artifact_path` of the run's artifacts."""
        path = Path(path)
        if not path.exists():
            raise TrackingError(f"cannot log artifact {path} to run {run_id}: no such file or folder")
        upload = self._client.log_artifacts if path.is_dir() else self._client.log_artifact
        self._call(f"log artifact {path} to run {run_id}", functools.partial(upload, run_id, str(path), artifact_path))

    def log_dict(self, run_id: str, data: Mapping, artifact_file: str) -> None:
        """JSON, or YAML when `artifact_file` ends in .yaml/.yml."""
        write = functools.partial(self._client.log_dict, run_id, dict(data), artifact_file)
        self._call(f"log {artifact_file} to run {run_id}", write)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        write = functools.partial(self._client.log_text, run_id, text, artifact_file)
        self._call(f"log {artifact_file} to run {run_id}", write)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        batch = [RunTag(key, value) for key, value in _tag_dict(tags).items()]
        for i in range(0, len(batch), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = batch[i : i + MAX_PARAMS_TAGS_PER_BATCH]
            send = functools.partial(self._client.log_batch, run_id, tags=chunk, synchronous=True)
            self._call(f"set {len(chunk)} tags on run {run_id}", send)

    def end(self, run_id: str, status: EndStatus, *, error: str | None = None) -> None:
        """End a run; `error` (a traceback, say) goes to tag s4sweep.error, keeping its last 5000 characters."""
        if status not in END_STATUSES:
            raise ValueError(f"`status` must be one of {', '.join(END_STATUSES)}, but got {status!r}")
        if error is not None:
            self.set_tags(run_id, {ERROR_TAG: _tail(error, ERROR_MAX_CHARS)})
        terminate = functools.partial(self._client.set_terminated, run_id, status)
        self._call(f"end run {run_id} as {status}", terminate)

    def children(self, experiment_id: str, parent_id: str) -> list[ChildRun]:
        """Every live child of `parent_id`, oldest first, paging through the search (no 1000-run cap)."""
        return self._children(experiment_id, parent_id, "")

    def reconcile(self, experiment_id: str, parent_id: str, *, keep_running: Collection[str] = ()) -> list[str]:
        """Mark RUNNING children that no live trial owns as KILLED; returns their run ids."""
        keep = set(keep_running)
        orphans = [c.run_id for c in self._children(experiment_id, parent_id, " and attributes.status = 'RUNNING'")
                   if c.run_id not in keep]
        for run_id in orphans:
            self.end(run_id, "KILLED", error=f"orphaned: still RUNNING when parent run {parent_id} was reconciled, "
                                             "and no live trial owned it")
        if orphans:
            log.warning("marked %d orphaned child run(s) of %s KILLED: %s", len(orphans), parent_id, orphans)
        return orphans

    def last_steps(self, run_id: str) -> dict[str, int]:
        """The highest step of every metric a run has so far (a retried trial logs only beyond these)."""
        keys = list(self.run(run_id).metrics)

        def last(key: str) -> int:
            history = self._call(f"read metric {key!r} of run {run_id}",
                                 functools.partial(self._client.get_metric_history, run_id, key))
            return max((m.step for m in history), default=-1)

        with ThreadPoolExecutor(4) as pool:
            return dict(zip(keys, pool.map(last, keys), strict=True))

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) sorted by step, keeping the last value logged at each step (a restored trial replays steps)."""
        history = self._call(f"read metric {key!r} of run {run_id}",
                             functools.partial(self._client.get_metric_history, run_id, key))
        last = {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}  # stable: ties keep store order
        return sorted(last.items())

    # --- reading back (results, report, regress) ---------------------------------------------------------------------

    def find_experiment(self, name: str) -> str | None:
        """The id of a live experiment, or None; unlike `experiment`, never creates one."""
        found = self._call(f"get experiment {name!r}", functools.partial(self._client.get_experiment_by_name, name))
        return None if found is None or found.lifecycle_stage == "deleted" else found.experiment_id

    def parents(self, experiment_id: str) -> list[ChildRun]:
        """Every live parent run (one per sweep run) of an experiment, newest first."""
        return [_record(r) for r in self._search(experiment_id, f"tags.`{ROLE_TAG}` = 'parent'")]

    def run(self, run_id: str) -> ChildRun:
        """One run, parent or trial, with its tags, params and latest metrics."""
        return _record(self._call(f"get run {run_id}", functools.partial(self._client.get_run, run_id)))

    def artifact_names(self, run_id: str) -> list[str]:
        """The paths of a run's top-level artifacts (files and folders)."""
        listed = self._call(f"list artifacts of run {run_id}", functools.partial(self._client.list_artifacts, run_id))
        return [f.path for f in listed]

    def download_artifact(self, run_id: str, path: str, dst: Path) -> Path:
        """Copy one artifact of a run into folder `dst`; returns the local file."""
        Path(dst).mkdir(parents=True, exist_ok=True)
        get = functools.partial(self._client.download_artifacts, run_id, path, str(dst))
        return Path(self._call(f"download artifact {path} of run {run_id}", get))

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        """A browser link to a run, for a tracking server; None for a database store (no UI address)."""
        if uri_scheme(self.uri) not in SERVER_SCHEMES:
            return None
        return f"{self.uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    # --- internals -------------------------------------------------------------------------------------------------

    def _children(self, experiment_id: str, parent_id: str, extra_filter: str) -> list[ChildRun]:
        runs = self._search(experiment_id, f"tags.mlflow.parentRunId = {_quote(parent_id)}{extra_filter}",
                            order="ASC")
        return [ChildRun(r.info.run_id, r.info.run_name, r.info.status, dict(r.data.tags), dict(r.data.params),
                         dict(r.data.metrics)) for r in runs]

    def _search(self, experiment_id: str, query: str, order: Literal["ASC", "DESC"] = "DESC") -> list[Run]:
        runs: list[Run] = []
        token: str | None = None
        while True:
            search = functools.partial(self._client.search_runs, [experiment_id], filter_string=query,
                                       run_view_type=ViewType.ACTIVE_ONLY, max_results=SEARCH_PAGE_SIZE,
                                       order_by=[f"attributes.start_time {order}"], page_token=token)
            page = self._call(f"search runs ({query}) in experiment {experiment_id}", search)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _timestamp(self) -> int:
        """Milliseconds, strictly increasing per tracker, so 'the last value at a step' is well defined."""
        self._last_timestamp = max(int(time.time() * 1000), self._last_timestamp + 1)
        return self._last_timestamp

    def _call(self, what: str, fn: Callable[[], T], *, retry: bool = True) -> T:
        for attempt in range(1, TRIES + 1):
            try:
                return fn()
            except (MlflowException, OSError) as e:
                if not (retry and _transient(e)) or attempt == TRIES:
                    tries = f" after {attempt} tries" if attempt > 1 else ""
                    raise TrackingError(f"tracking store {redact_uri(self.uri)}: {what} failed{tries}: {e}") from e
                delay = RETRY_BACKOFF_S * 2 ** (attempt - 1)
                log.warning("%s failed (%s); try %d of %d in %.1f s", what, e, attempt + 1, TRIES, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


def flatten_params(config: Mapping, prefix: str = "") -> dict[str, str]:
    """{"loss": {"options": {"gamma": 2.0}}} -> {"loss.options.gamma": "2.0"}. Lists become JSON, enums their value;
    `_`-prefixed keys are internals and skipped; values longer than MLflow's param limit are truncated."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if str(key).startswith("_"):
            continue
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name))
            continue
        text = _param_text(value)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            log.warning("param %s is %d characters; truncated to %d", name, len(text), MAX_PARAM_VAL_LENGTH)
            text = text[:MAX_PARAM_VAL_LENGTH]
        flat[name] = text
    return flat


def _record(run: Run) -> ChildRun:
    return ChildRun(run.info.run_id, run.info.run_name, run.info.status, dict(run.data.tags), dict(run.data.params),
                    dict(run.data.metrics))


def _safe_dirname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


def _quote(value: str) -> str:
    """A string literal for an MLflow search filter (it has no escape sequences)."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ValueError(f"a searched value must not contain both ' and \", but got {value!r}")


def _transient(error: Exception) -> bool:
    if isinstance(error, MlflowException):  # HTTP errors, lost connections and a locked database all arrive as these
        status = error.get_http_status_code()
        return status >= 500 or status == 429
    return isinstance(error, OSError)


def _number(key: str, value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"metric {key!r} must be a number, but got {value!r}") from None


def _tag_dict(tags: Mapping[str, object]) -> dict[str, str]:
    out = {}
    for key, value in tags.items():
        text = str(value)
        if len(text) > MAX_TAG_VAL_LENGTH:
            log.warning("tag %s is %d characters; keeping the last %d", key, len(text), MAX_TAG_VAL_LENGTH)
            text = _tail(text, MAX_TAG_VAL_LENGTH)
        out[str(key)] = text
    return out


def _tail(text: str, limit: int) -> str:
    marker = "[...]\n"
    return text if len(text) <= limit else marker + text[-(limit - len(marker)) :]


def _param_text(value: object) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
        return json.dumps(items, default=str)
    return str(value)


__all__ = ["ChildRun", "TrackingError", "Tracker", "check_reachable", "check_server", "check_uri", "embedded_uri",
           "environment_info", "flatten_params", "init_store", "serve_ui"]
