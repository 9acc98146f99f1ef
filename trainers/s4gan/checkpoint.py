"""Trial checkpoints: a directory per save, written whole under a temporary name and renamed into place.

Holds G, D, both optimisers, the loss's state (buffers of stateful losses), the iteration, and the torch RNG state
(D's dropout draws from it). Data order needs no saved state: the samplers are a pure function of the draw number
(trainers/data/pipeline.py), which the iteration gives.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"
CONFIG_FILE = "config.json"


def checkpoint_name(iteration: int) -> str:
    return f"checkpoint_{iteration:06d}"


def save(directory: Path, state: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write `directory` atomically: either the complete checkpoint exists under that name, or nothing does."""
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / STATE_FILE)
    (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True))
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def load(directory: Path) -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a checkpoint (no {STATE_FILE})")
    # weights_only=False: the state holds RNG byte tensors and plain dicts written by this module only
    return torch.load(path, map_location="cpu", weights_only=False)


def prune(parent: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoint directories under `parent`."""
    found = sorted(p for p in parent.glob("checkpoint_*") if p.is_dir())
    for old in found[:-keep] if keep > 0 else found:
        shutil.rmtree(old, ignore_errors=True)
