"""Trial checkpoints: a directory per save, written whole under a temporary name and renamed into place.

Holds G, D, both optimisers, the loss's state (buffers of stateful losses), the iteration, and the RNG states (torch
as a byte tensor, numpy and Python's `random` as tensors, numbers and tuples; D's dropout draws from torch's). Data
order needs no saved state: the samplers are a pure function of the draw number (trainers/data/pipeline.py), which
the iteration gives.

Every torch file is read with `weights_only=True` (`read_tensors`): checkpoints travel between people and clusters
(shared storage, object stores, MLflow artifacts), and a pickle can run any code when it is loaded. A file holding
anything but tensors, numbers, strings and plain containers is refused with one line naming it, unexecuted.
torch is imported inside the functions so that the CLI can name CheckpointError without importing torch.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from trainers.fileio import atomic_write

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint or weights file is missing, broken, foreign or refused; the message names the file."""


def checkpoint_name(iteration: int) -> str:
    return f"checkpoint_{iteration:06d}"


def save(directory: Path, state: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write `directory` atomically: either the complete checkpoint exists under that name, or nothing does."""
    import torch

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        torch.save(state, tmp / STATE_FILE)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True))

    return atomic_write(directory, write)


def load(directory: Path, *, keys: Collection[str] = ()) -> dict[str, Any]:
    """The state dict of a checkpoint directory; `keys` must all be in it."""
    directory = Path(directory)
    if not directory.is_dir():
        what = "is a file" if directory.exists() else "does not exist"
        raise CheckpointError(f"{directory}: {what}; a checkpoint is a directory holding {STATE_FILE} and "
                              f"{CONFIG_FILE}")
    path = directory / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint (no {STATE_FILE})")
    state = read_tensors(path, what="checkpoint")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: a checkpoint holds a dict of states, but this file holds a "
                              f"{type(state).__name__}")
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a trial checkpoint: no {', '.join(map(repr, missing))} in it (it has "
                              f"{', '.join(map(repr, list(state)[:8])) or 'nothing'})")
    return dict(state)


def read_config(directory: Path) -> dict[str, Any]:
    """The TrialConfig dict saved beside the state."""
    path = Path(directory) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{Path(directory)}: not a checkpoint (no {CONFIG_FILE})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable trial config ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: a trial config is a JSON object, but got {type(data).__name__}")
    return data


def read_tensors(path: Path, *, what: str) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; any failure is one CheckpointError line naming `path`."""
    import torch

    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol draws a UserWarning before the refusal
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused: not a {what} of tensors and plain containers ({_refusal(e)}); "
                              "weights_only loading ran none of it") from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such {what} file") from None
    except (OSError, EOFError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: unreadable {what}: truncated, or not a file torch.save wrote ({reason})") \
            from None


def _refusal(error: Exception) -> str:
    """The line of torch's long weights_only message that says what was refused (`unsupported GLOBAL posix.system`)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line or "unsupported" in line:
            return line.removeprefix("Trying to load ").rstrip(".")
    return "a pickle that is not a torch weights file"


def load_weights(module: Any, state: Any, directory: Path, *, part: str,
                 against: str = f"the model its {CONFIG_FILE} describes") -> None:
    """`module.load_state_dict(state)`; a state of another shape is one CheckpointError line naming the first
    mismatch (a checkpoint of another model, label set or optimiser)."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        problem = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else (lines or [""])[0]
        raise CheckpointError(f"{directory}: {STATE_FILE} does not fit {against} ({part}: {problem})") from None


def rng_states() -> dict[str, Any]:
    """torch's, numpy's and Python's global RNG states as tensors, numbers, strings and tuples: what a
    weights_only load accepts (checkpoint.py)."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    return {"torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
            "numpy_rng": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_states(state: Mapping[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch_rng"])
    if state.get("python_rng") is not None:  # absent from checkpoints written before they were saved
        version, internal, gauss_next = state["python_rng"]
        random.setstate((version, tuple(internal), gauss_next))
    if state.get("numpy_rng") is not None:
        n = state["numpy_rng"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


def prune(parent: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoint directories under `parent`."""
    found = sorted(p for p in parent.glob("checkpoint_*") if p.is_dir())
    for old in found[:-keep] if keep > 0 else found:
        shutil.rmtree(old, ignore_errors=True)
