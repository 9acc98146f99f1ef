"""`s4sweep submit`: the same sweep as a Ray job on a remote cluster. No Ray import here (tune_backend.RayJobs talks to
the cluster); this module decides what the job is.

What travels: the project directory as the job's working directory (less what `.rayignore` leaves out: data, run
state, checkpoints, .venv, secrets), and an environment holding the tracking URI and every `${VAR}` the sweep file
reads, taken from this machine. The job runs `s4sweep sweep SPEC --run-name ID`; the submission id *is* the sweep run
id (`<sweep>-<UTC timestamp>`), so `ray job logs ID`, the run directory and the MLflow parent run share one name.

What does not travel: the Ray token. Ray's client sends it as a header (RAY_AUTH_MODE=token with RAY_AUTH_TOKEN,
RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token); in the job's environment it would be shown to anyone listing jobs.

Before submitting, a probe job (`python -c`, no working directory) reports the versions of Ray and s4sweep installed
in the cluster's own Python, which is what the sweep's trials import besides the uploaded code: a mismatch with this
machine's stops the submission. The probe runs where the job's driver runs (the head); the cluster files give head and
workers one image, and Ray itself refuses a node of another Ray version.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import secrets
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from orchestrator import runs
from orchestrator.spec import SweepSpec
from orchestrator.sweep import git_sha

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROBE_MARK = "S4SWEEP-VERSIONS"
PROBE_TIMEOUT_S = 120.0
CHECKED_VERSIONS = ("ray", "s4sweep")
EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# Runs in the cluster's Python, before anything is uploaded: stdlib only, one marked line of JSON.
PROBE_SCRIPT = f"""
import importlib.metadata as md, json, os, sys
def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None
print({PROBE_MARK!r}, json.dumps({{"ray": version("ray"), "s4sweep": version("s4sweep"),
      "python": sys.version.split()[0], "executable": sys.executable, "s4sweep_home": os.environ.get("S4SWEEP_HOME")}}))
"""


class SubmitError(RuntimeError):
    """The sweep cannot be submitted as asked; the message says what to change."""


@dataclass(frozen=True, kw_only=True)
class Submission:
    """One Ray job: `s4sweep sweep` on the cluster, with the project as its working directory."""

    submission_id: str  # = the sweep run id
    entrypoint: str
    working_dir: str
    env_vars: Mapping[str, str]
    storage: str | None = None  # --storage on the cluster; None: the cluster's S4SWEEP_HOME
    metadata: Mapping[str, str] = field(default_factory=dict)

    def runtime_env(self) -> dict[str, Any]:
        return {"working_dir": self.working_dir, "env_vars": dict(self.env_vars)}


def plan(spec: SweepSpec, spec_path: Path, *, tracking_uri: str | None, storage: str | None, run_name: str | None,
         trigger: str = "manual", max_concurrent: int | None = None, max_trials: int | None = None,
         env: Mapping[str, str] | None = None,
         project: Path = PROJECT_ROOT, now: datetime | None = None) -> Submission:
    """The job for one run of `spec`; refuses what could not work on a cluster (see the checks below)."""
    env = os.environ if env is None else env
    uri = server_uri(tracking_uri, env)
    relative = spec_in_project(spec_path, project)
    run_id = runs.new_run_id(spec.name, run_name=run_name, now=now)
    storage = None if storage is None else cluster_storage(storage)
    command = ["s4sweep", "sweep", relative, "--run-name", run_id, "--trigger", trigger]
    if storage is not None:
        command += ["--storage", storage]
    if max_concurrent is not None:
        command += ["--max-concurrent", str(max_concurrent)]
    if max_trials is not None:  # the job loads the sweep file again, under the same limit
        command += ["--max-trials", str(max_trials)]
    sha = git_sha()  # the job's copy has no .git: the laptop's commit travels as S4SWEEP_GIT_SHA
    env_vars = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0",
                "S4SWEEP_GIT_SHA": sha}
    env_vars.update({name: env[name] for name in spec_variables(spec_path)})  # load_spec checked they are set
    metadata = {"s4sweep.sweep": spec.name, "s4sweep.run": run_id, "s4sweep.spec": relative,
                "s4sweep.spec_sha256": spec.sha256, "s4sweep.git_sha": sha, "s4sweep.trigger": trigger}
    return Submission(submission_id=run_id, entrypoint=shlex.join(command), working_dir=str(project),
                      env_vars=env_vars, storage=storage, metadata=metadata)


def server_uri(given: str | None, env: Mapping[str, str]) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI; it must be an `mlflow server` (http or https)."""
    uri = given or env.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise SubmitError("no tracking URI: pass --tracking-uri http://<mlflow server>:5000 or set "
                          "MLFLOW_TRACKING_URI (trials on the cluster's workers log to that server; docker/README.md "
                          "starts one)")
    if urlparse(uri).scheme not in ("http", "https"):
        raise SubmitError(f"tracking URI {uri!r} is not an MLflow server: a store embedded on the head (or on this "
                          "machine) cannot be reached from the cluster's workers; pass --tracking-uri "
                          "http://<mlflow server>:5000")
    return uri


def spec_in_project(spec_path: Path, project: Path) -> str:
    """The sweep file's path inside the project: only the project travels to the cluster."""
    if not (project / "pyproject.toml").is_file() or not (project / ".rayignore").is_file():
        raise SubmitError(f"{project} is not a checkout of the project (no pyproject.toml or .rayignore there): "
                          "submit from a clone, whose directory becomes the job's working directory")
    try:
        return str(spec_path.resolve().relative_to(project.resolve()))
    except ValueError:
        raise SubmitError(f"{spec_path}: the sweep file must lie inside the project ({project}), which is what the "
                          "job receives; copy it there, e.g. under search_spaces/") from None


def cluster_storage(storage: str) -> str:
    """--storage names the cluster's shared storage: an absolute path there, or a URI; never relative to this
    machine's working directory."""
    if urlparse(storage).scheme or storage.startswith("/"):
        return storage
    raise SubmitError(f"--storage {storage!r}: give an absolute path on the cluster's shared storage (or a URI); "
                      "a relative path would land in the job's temporary working directory")


def spec_variables(spec_path: Path) -> list[str]:
    """Every `${VAR}` in the sweep file's values (not its comments; a literal `$${` is not one), in order."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.extend(_VAR.findall(value.replace("$${", "")))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(yaml.safe_load(spec_path.read_text()))
    return list(dict.fromkeys(found))


# --- versions ----------------------------------------------------------------------------------------------------


def local_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in CHECKED_VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return {**found, "python": platform.python_version()}


def parse_probe(logs: str) -> dict[str, Any]:
    for line in logs.splitlines():
        if line.startswith(PROBE_MARK + " "):
            return json.loads(line[len(PROBE_MARK) + 1:])
    raise SubmitError(f"the version probe printed no {PROBE_MARK} line; its output:\n{logs[-2000:]}")


def version_mismatches(local: Mapping[str, Any], cluster: Mapping[str, Any]) -> list[str]:
    """One line per package whose version differs between this machine and the cluster's Python."""
    problems = []
    for name in CHECKED_VERSIONS:
        here, there = local.get(name), cluster.get(name)
        if there is None:
            problems.append(f"{name} is not installed in the cluster's Python ({cluster.get('executable')}); "
                            "run the project image (docker/Dockerfile) on head and workers")
        elif here != there:
            problems.append(f"{name} {there} on the cluster, {here} here")
    return problems


# --- the command -------------------------------------------------------------------------------------------------


def submit(sub: Submission, *, address: str, wait: bool, echo: Callable[[str], None] = print) -> int:
    """Check the cluster's versions, submit, then follow the job (exit 0 SUCCEEDED, 1 FAILED/STOPPED) or print the
    commands to follow it."""
    from orchestrator.tune_backend import RayJobs

    if "://" in address and urlparse(address).scheme not in ("http", "https"):  # ray://: Ray Client, 30 s to fail
        raise SubmitError(f"--address {address}: not the job API; give the dashboard's URL, http://<head>:8265")
    jobs = RayJobs(address, error=SubmitError)
    cluster = probe(jobs, f"{sub.submission_id}-versions-{secrets.token_hex(3)}")
    echo(f"cluster {address}: Ray {cluster['ray']}, s4sweep {cluster['s4sweep']}, Python {cluster['python']} "
         f"({cluster['executable']})")
    problems = version_mismatches(local_versions(), cluster)
    if problems:
        raise SubmitError(f"the cluster at {address} does not match this machine: {'; '.join(problems)}")
    if sub.storage is None and not cluster.get("s4sweep_home"):
        raise SubmitError(f"the cluster at {address} sets no S4SWEEP_HOME, so the run's state would be lost with the "
                          "job's working directory: pass --storage <shared path or URI>")
    jobs.submit(entrypoint=sub.entrypoint, submission_id=sub.submission_id, runtime_env=sub.runtime_env(),
                metadata=sub.metadata)
    echo(f"submitted {sub.submission_id}: {sub.entrypoint}")
    if not wait:
        echo(follow_commands(address, sub.submission_id))
        return 0
    try:
        status = jobs.follow(sub.submission_id, lambda chunk: echo(chunk.rstrip("\n")))
    except KeyboardInterrupt:
        echo(f"\nstopped following; the job goes on.\n{follow_commands(address, sub.submission_id)}")
        raise
    reason = jobs.message(sub.submission_id).split("\n")[0] if status != "SUCCEEDED" else ""  # the log is above
    echo(f"job {sub.submission_id}: {status}" + (f" ({reason})" if reason else ""))
    return EXIT_CODES.get(status, 1)


def probe(jobs: Any, probe_id: str) -> dict[str, Any]:
    """Run PROBE_SCRIPT as a job in the cluster's default environment and return what it reports."""
    jobs.submit(entrypoint=f"python -c {shlex.quote(PROBE_SCRIPT)}", submission_id=probe_id)
    status = jobs.wait(probe_id, timeout_s=PROBE_TIMEOUT_S)
    logs = jobs.logs(probe_id)
    if status != "SUCCEEDED":
        raise SubmitError(f"the version probe job {probe_id} on the cluster at {jobs.address} is {status}, not "
                          f"SUCCEEDED, after up to {PROBE_TIMEOUT_S:g} s (is `python` on the cluster's PATH?); its "
                          f"output:\n{logs[-2000:]}")
    jobs.delete(probe_id)
    return parse_probe(logs)


def follow_commands(address: str, submission_id: str) -> str:
    a, i = shlex.quote(address), shlex.quote(submission_id)
    return "\n".join([f"  follow: ray job logs --address {a} --follow {i}",
                      f"  status: ray job status --address {a} {i}",
                      f"  stop:   ray job stop --address {a} {i}",
                      f"  logs:   ray job logs --address {a} {i}"])
