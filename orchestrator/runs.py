"""Sweep-run identity and the run directory (DESIGN.md "Runs, storage and tracking").

A sweep *run* is one launch of a sweep file: `<name>-<UTC timestamp>` unless `--run-name` chooses. Its state lives in
`<storage>/sweeps/<run id>/`: `run.json` (this module), `tune/` (Ray Tune's experiment state and the trials'
checkpoints), `budget.json` and `trial_status.json` (the driver's Tune callbacks) and, on a filesystem,
`trials/<trial>/` (each trial's working directory; on an object store the working directories are node-local
scratch). The storage is a local or shared path or an object-store URI (orchestrator/storage.py). The embedded MLflow
store sits at `<storage>/mlflow.db` + `<storage>/mlartifacts/`, shared by every run, so the MLflow UI shows all sweeps
together; an object store needs a tracking server instead. Generated data sits in `<storage>/data/`, named by
trainers.data.synth_root (trainers compute it on the worker, and never import the orchestrator).

The names below are the layout; everything else joins them through these functions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from orchestrator.storage import Location, open_location

Status = Literal["running", "finished", "interrupted", "failed"]
DEFAULT_ROOT = "runs"  # the storage root when neither --storage nor $S4SWEEP_HOME names one (under the working dir)
SWEEPS = "sweeps"
RUN_FILE = "run.json"
MANIFEST_FILE = "manifest.json"  # in the run directory and on the parent run: RunManifest
TUNE = "tune"  # Ray Tune's experiment name, hence its folder in the run directory
TRIALS = "trials"
BUDGET_FILE = "budget.json"
TRIAL_STATUS_FILE = "trial_status.json"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
TRAIN_DIR = "train"  # `s4sweep train` without --out: ./runs/train/<sweep>-<trial>
# in a trial's directory: the broken file that failed it. Retrying cannot mend a file, so neither Tune's retries nor
# `--resume` run that trial again: mend the file and start a new run
DATA_FAILURE = "data-failure.txt"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RunError(ValueError):
    """A run cannot be found or created as asked; the message names the run and the storage."""


@dataclass(frozen=True, kw_only=True)
class RunState:
    sweep: str
    run_id: str
    spec_path: str
    spec_sha256: str
    tracking_uri: str
    experiment_id: str = ""
    parent_run_id: str = ""
    status: Status = "running"
    created: str = ""
    trigger: str = "manual"


@dataclass(frozen=True, kw_only=True)
class RunManifest:
    """What a sweep run was launched with, resolved once by the driver and written before any trial starts: results,
    report and regress read this instead of parsing MLflow's string params or re-reading the sweep file."""

    sweep: str
    run_id: str
    names: tuple[str, ...]  # the trials, in grid order (an Optuna search names its samples after these)
    configs: tuple[dict[str, Any], ...]  # each trial's resolved TrialConfig (roots, threads, memory fraction)
    cpu: float  # per trial
    gpu: float
    expected_trials: int  # grid points, times num_samples for an Optuna search
    eval: tuple[dict[str, Any], ...]  # the evaluation sets, resolved, each with its metric `key`
    metric: str
    mode: str
    report: dict[str, Any]  # the sweep file's `report:` section

    def eval_sets(self) -> dict[str, dict[str, Any]]:
        """Evaluation key -> that set's config (name, label_set, remap, eval_size, ...)."""
        return {e["key"]: e for e in self.eval}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, where: str) -> RunManifest:
        try:
            data = json.loads(text)
            missing = sorted({f.name for f in fields(cls)} - set(data))
            if missing:
                raise TypeError(f"missing {', '.join(missing)}")
            return cls(**{**data, "names": tuple(data["names"]), "configs": tuple(data["configs"]),
                          "eval": tuple(data["eval"])})
        except (json.JSONDecodeError, TypeError, AttributeError) as e:
            raise RunError(f"{where}: not a run manifest s4sweep wrote ({e})") from None


Root = Location | Path | str
P = TypeVar("P", Location, Path)


def storage_root(storage: str | None) -> Location:
    """--storage, else $S4SWEEP_HOME, else ./runs; a path is made absolute (Tune changes each trial's working
    directory). On several nodes it must be shared storage (NFS, EFS at the same path everywhere) or an object-store
    URI such as s3://bucket/prefix; the driver checks both before anything is scheduled."""
    return open_location(storage or os.environ.get("S4SWEEP_HOME") or DEFAULT_ROOT)


def as_location(root: Root) -> Location:
    return root if isinstance(root, Location) else open_location(root)


def new_run_id(sweep: str, *, run_name: str | None = None, now: datetime | None = None) -> str:
    if run_name is not None:
        if not _NAME.match(run_name):
            raise RunError(f"--run-name {run_name!r}: use letters, digits, '.', '_' and '-' only")
        return run_name
    return f"{sweep}-{(now or datetime.now(UTC)).strftime('%Y%m%dT%H%M%SZ')}"


def sweeps_dir(root: Root) -> Location:
    return as_location(root) / SWEEPS


def run_dir(root: Root, run_id: str) -> Location:
    return sweeps_dir(root) / run_id


def tune_dir(run: Location) -> Location:
    """A run directory's Ray Tune state (Tune makes it: RunConfig(name=TUNE, storage_path=<run directory>))."""
    return run / TUNE


def trial_dir(run: P, trial: str) -> P:
    """A trial's folder under a run directory (a Location, or its local Path)."""
    return run / TRIALS / trial


def mlflow_db(root: Path) -> Path:
    """The embedded MLflow store's SQLite file in a local storage root."""
    return Path(root).resolve() / MLFLOW_DB


def mlflow_artifacts(root: Location) -> Path | str:
    """Where the embedded (or a database) tracking store keeps artifacts: beside the runs, as a local path or a URI."""
    return root.local / MLFLOW_ARTIFACTS if root.local is not None else str(root / MLFLOW_ARTIFACTS)


def train_dir(name: str) -> Path:
    """Where `s4sweep train` writes a trial without --out: `./runs/train/<name>` (the working directory's)."""
    return Path(DEFAULT_ROOT) / TRAIN_DIR / name


def save(root: Root, state: RunState) -> RunState:
    (run_dir(root, state.run_id) / RUN_FILE).write_text(json.dumps(asdict(state), indent=1, sort_keys=True))
    return state


def write_manifest(root: Root, manifest: RunManifest) -> None:
    (run_dir(root, manifest.run_id) / MANIFEST_FILE).write_text(manifest.to_json())


def read_manifest(root: Root, run_id: str) -> RunManifest | None:
    """The run's manifest, or None for a run launched before manifests were written."""
    path = run_dir(root, run_id) / MANIFEST_FILE
    return RunManifest.from_json(path.read_text(), where=str(path)) if path.is_file() else None


def create(root: Root, state: RunState) -> RunState:
    if (run_dir(root, state.run_id) / RUN_FILE).is_file():
        raise RunError(f"run {state.run_id} already exists under {sweeps_dir(root)}; choose another "
                       f"--run-name or continue it with --resume {state.run_id}")
    created = state.created or datetime.now(UTC).isoformat(timespec="seconds")
    return save(root, replace(state, created=created))


def remove(root: Root, run_id: str) -> None:
    """Delete a run's directory: only for a run whose launch failed before anything ran."""
    folder = run_dir(root, run_id)
    if folder.local is not None:
        shutil.rmtree(folder.local, ignore_errors=True)
        return
    try:
        folder.fs.delete_dir(folder.path)
    except OSError:  # already gone, or never written
        pass


def load(root: Root, run_id: str) -> RunState:
    path = run_dir(root, run_id) / RUN_FILE
    if not path.is_file():
        raise RunError(f"no run {run_id!r} under {sweeps_dir(root)}")
    return _read(path)


def _read(path: Location) -> RunState:
    try:
        data = json.loads(path.read_text())
        return RunState(**data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise RunError(f"{path}: not a run record s4sweep wrote ({e}); move it away or restore it") from None


def check_restorable(directory: Location) -> None:
    """Refuse to restore Ray Tune state that someone else could have written.

    Tune's experiment state is cloudpickle (tuner.pkl, the trials' and the searcher's state) and Ray has no
    weights_only-style loader for it: restoring runs whatever the pickles say. So `--resume` unpickles only a tune/
    directory whose every file and folder this user owns and neither group nor others may write (as ssh treats
    ~/.ssh), with one line naming the first one that breaks the rule. On an object store there are no owners or
    modes to read: who may write the state is the bucket policy's and the credentials' business."""
    if directory.local is None or not directory.local.is_dir():
        return
    uid = os.geteuid()
    for path in [directory.local, *sorted(directory.local.rglob("*"))]:
        try:
            info = path.stat()  # through a symlink: what Tune would read
        except OSError:
            continue  # a dangling link is nothing Tune can unpickle
        if info.st_uid != uid or info.st_mode & 0o022:
            who = f"owned by uid {info.st_uid}" if info.st_uid != uid else f"mode {info.st_mode & 0o777:o}"
            raise RunError(f"{path}: {who}: Ray Tune's state is a pickle that runs code when restored, so --resume "
                           f"restores only files this user owns and only this user may write; if you trust them, "
                           f"`chmod -R go-w {directory}` (and chown them to yourself)")


def update(root: Root, state: RunState, **changes: object) -> RunState:
    return save(root, replace(state, **changes))  # type: ignore[arg-type]


def runs_of(root: Root, sweep: str) -> list[RunState]:
    """Every run of a sweep, oldest first."""
    found = []
    for folder in sweeps_dir(root).children():
        path = folder / RUN_FILE
        if not path.is_file():
            continue
        state = _read(path)
        if state.sweep == sweep:
            found.append(state)
    return sorted(found, key=lambda s: (s.created, s.run_id))


def latest(root: Root, sweep: str, *, statuses: tuple[Status, ...]) -> RunState:
    matching = [s for s in runs_of(root, sweep) if s.status in statuses]
    if not matching:
        raise RunError(f"no {' or '.join(statuses)} run of sweep {sweep!r} under {sweeps_dir(root)}")
    return matching[-1]
