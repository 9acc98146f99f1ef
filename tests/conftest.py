"""Shared test set-up: every test session gets its own S4SWEEP_HOME, so generated data and runs never touch ./runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def s4sweep_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("s4sweep_home")
    os.environ["S4SWEEP_HOME"] = str(home)
    return home
