"""Sweep-run identity and the run directory (DESIGN.md "Runs, storage and tracking").

A sweep *run* is one launch of a sweep file: `<name>-<UTC timestamp>` unless `--run-name` chooses. Its state lives in
`<storage>/sweeps/<run id>/`: `run.json` (this module), `tune/` (Ray Tune's experiment state) and `trials/<trial>/`
(each trial's working directory). The embedded MLflow store sits at `<storage>/mlflow.db` + `<storage>/mlartifacts/`,
shared by every run, so the MLflow UI shows all sweeps together.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

Status = Literal["running", "finished", "interrupted", "failed"]
RUN_FILE = "run.json"
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


def storage_root(storage: str | None) -> Path:
    """--storage, else $S4SWEEP_HOME, else ./runs; always absolute (Tune changes each trial's working directory).

    A shared filesystem path (NFS, EFS mounted at the same path on every node) is what multi-node runs need;
    object-store URIs are not supported yet (run state, trial directories and generated data are plain files).
    """
    chosen = storage or os.environ.get("S4SWEEP_HOME") or "runs"
    if "://" in chosen:
        raise RunError(f"storage {chosen!r}: object-store URIs are not supported yet; mount shared storage "
                       "(NFS/EFS) at the same path on every node and pass that path")
    return Path(chosen).expanduser().resolve()


def new_run_id(sweep: str, *, run_name: str | None = None, now: datetime | None = None) -> str:
    if run_name is not None:
        if not _NAME.match(run_name):
            raise RunError(f"--run-name {run_name!r}: use letters, digits, '.', '_' and '-' only")
        return run_name
    return f"{sweep}-{(now or datetime.now(UTC)).strftime('%Y%m%dT%H%M%SZ')}"


def run_dir(root: Path, run_id: str) -> Path:
    return root / "sweeps" / run_id


def save(root: Path, state: RunState) -> RunState:
    path = run_dir(root, state.run_id) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{RUN_FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(asdict(state), indent=1, sort_keys=True))
    os.replace(tmp, path)
    return state


def create(root: Path, state: RunState) -> RunState:
    if (run_dir(root, state.run_id) / RUN_FILE).exists():
        raise RunError(f"run {state.run_id} already exists under {root / 'sweeps'}; choose another --run-name "
                       f"or continue it with --resume {state.run_id}")
    created = state.created or datetime.now(UTC).isoformat(timespec="seconds")
    return save(root, replace(state, created=created))


def remove(root: Path, run_id: str) -> None:
    """Delete a run's directory: only for a run whose launch failed before anything ran."""
    shutil.rmtree(run_dir(root, run_id), ignore_errors=True)


def load(root: Path, run_id: str) -> RunState:
    path = run_dir(root, run_id) / RUN_FILE
    if not path.is_file():
        raise RunError(f"no run {run_id!r} under {root / 'sweeps'}")
    return _read(path)


def _read(path: Path) -> RunState:
    try:
        data = json.loads(path.read_text())
        return RunState(**data)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise RunError(f"{path}: not a run record s4sweep wrote ({e}); move it away or restore it") from None


def check_restorable(directory: Path) -> None:
    """Refuse to restore Ray Tune state that someone else could have written.

    Tune's experiment state is cloudpickle (tuner.pkl, the trials' and the searcher's state) and Ray has no
    weights_only-style loader for it: restoring runs whatever the pickles say. So `--resume` unpickles only a tune/
    directory whose every file and folder this user owns and neither group nor others may write (as ssh treats
    ~/.ssh), with one line naming the first one that breaks the rule."""
    uid = os.geteuid()
    if not directory.is_dir():
        return
    for path in [directory, *sorted(directory.rglob("*"))]:
        try:
            info = path.stat()  # through a symlink: what Tune would read
        except OSError:
            continue  # a dangling link is nothing Tune can unpickle
        if info.st_uid != uid or info.st_mode & 0o022:
            who = f"owned by uid {info.st_uid}" if info.st_uid != uid else f"mode {info.st_mode & 0o777:o}"
            raise RunError(f"{path}: {who}: Ray Tune's state is a pickle that runs code when restored, so --resume "
                           f"restores only files this user owns and only this user may write; if you trust them, "
                           f"`chmod -R go-w {directory}` (and chown them to yourself)")


def update(root: Path, state: RunState, **changes: object) -> RunState:
    return save(root, replace(state, **changes))  # type: ignore[arg-type]


def runs_of(root: Path, sweep: str) -> list[RunState]:
    """Every run of a sweep, oldest first."""
    found = []
    for path in sorted((root / "sweeps").glob(f"*/{RUN_FILE}")):
        state = _read(path)
        if state.sweep == sweep:
            found.append(state)
    return sorted(found, key=lambda s: (s.created, s.run_id))


def latest(root: Path, sweep: str, *, statuses: tuple[Status, ...]) -> RunState:
    matching = [s for s in runs_of(root, sweep) if s.status in statuses]
    if not matching:
        raise RunError(f"no {' or '.join(statuses)} run of sweep {sweep!r} under {root / 'sweeps'}")
    return matching[-1]
