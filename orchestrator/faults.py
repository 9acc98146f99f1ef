"""Faults injected into trials on purpose, for failure tests only (S4SWEEP_INJECT_FAULT, a JSON object).

- `{"kind": "raise" | "sigkill", "trial": NAME, "at_iteration": N, "marker": FILE}`: that trial fails once at its
  checkpoint of iteration N (the marker file makes it once): an exception, or SIGKILL of its own process.
- `{"kind": "hold", "at_iteration": N, "dir": DIR}`: every trial, on every attempt, after logging the metrics of
  iteration N writes `DIR/held-<run>-<trial>-<attempt>.json` (its node, pid, time) and waits until
  `DIR/release-<run>-<trial>` exists (at most HOLD_MAX_S): a test can then kill a node, interrupt the driver or
  count trials per node at a known point of every trial.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainers import fileio

HOLD_MAX_S = 600.0
HOLD_POLL_S = 0.2


def at_checkpoint(fault: Mapping[str, Any] | None, *, trial: str, step: int) -> None:
    """Fail once at a chosen trial and iteration (the marker file makes it once)."""
    if not fault or fault.get("kind") not in ("raise", "sigkill") or fault.get("trial") != trial:
        return
    if int(fault.get("at_iteration", -1)) != step:
        return
    marker = Path(fault["marker"])
    if marker.exists():
        return
    marker.write_text(f"{trial}@{step}")
    if fault.get("kind") == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected fault in {trial} at iteration {step}")


def at_metrics(fault: Mapping[str, Any] | None, *, run: str, trial: str, step: int, attempt: int,
               where: Mapping[str, Any]) -> None:
    """Hold this trial at iteration `at_iteration` until the test releases it."""
    if not fault or fault.get("kind") != "hold" or int(fault.get("at_iteration", -1)) != step:
        return
    folder = Path(fault["dir"])
    held = folder / f"held-{run}-{trial}-{attempt}.json"
    fileio.write_text(held, json.dumps({"trial": trial, "step": step, "attempt": attempt, "pid": os.getpid(),
                                        "time": time.time(), **where}))
    release = folder / f"release-{run}-{trial}"
    deadline = time.monotonic() + float(fault.get("max_s", HOLD_MAX_S))
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(HOLD_POLL_S)
