"""The seam between a trial and wherever its numbers go (DESIGN.md "The seams").

The trainer calls a `Reporter`; the orchestrator supplies one that forwards to Ray Tune and MLflow, `s4sweep train`
one that prints progress and writes files, tests one that records everything in lists. The trainer never learns
which.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True, kw_only=True)
class TrialResult:
    iterations: int
    wall_s: float
    metrics: dict[str, float]  # the last evaluation's metrics, keys from trainers.metric_names
    evaluations: dict[str, dict[str, Any]]  # eval key -> EvalMetrics.to_json() of the last evaluation
    checkpoint: Path | None
    info: dict[str, Any] = field(default_factory=dict)  # resolved precision, device, data fingerprints, weights


class Reporter(Protocol):
    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        """Scalars at an iteration (training terms every log_every, evaluation metrics at each evaluation)."""

    def artifact(self, path: Path) -> None:
        """A finished file the trial wrote under its working directory (JSON, PNG)."""

    def checkpoint(self, step: int, directory: Path, values: Mapping[str, float]) -> None:
        """A complete checkpoint directory, with the evaluation metrics of the same iteration."""

    def result(self, result: TrialResult) -> None:
        """The trial finished."""


@dataclass
class ListReporter:
    """Records every call; for tests and for callers that want the numbers in memory."""

    metric_calls: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    artifacts: list[Path] = field(default_factory=list)
    checkpoints: list[tuple[int, Path, dict[str, float]]] = field(default_factory=list)
    results: list[TrialResult] = field(default_factory=list)

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        self.metric_calls.append((step, dict(values)))

    def artifact(self, path: Path) -> None:
        self.artifacts.append(path)

    def checkpoint(self, step: int, directory: Path, values: Mapping[str, float]) -> None:
        self.checkpoints.append((step, directory, dict(values)))

    def result(self, result: TrialResult) -> None:
        self.results.append(result)

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(step, values[key]) for step, values in self.metric_calls if key in values]
