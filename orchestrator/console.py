"""What `s4sweep train` and `s4sweep eval` show in a terminal: a progress bar and per-class tables."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from tqdm import tqdm

from trainers import metric_names as M
from trainers.metrics import EvalMetrics
from trainers.reporting import TrialResult

log = logging.getLogger(__name__)


class ConsoleReporter:
    """A Reporter for one trial in a terminal: progress bar with the latest losses, evaluation lines in the log."""

    def __init__(self, *, total: int, desc: str) -> None:
        self._bar = tqdm(total=total, desc=desc, unit="it", dynamic_ncols=True)
        self._step = 0

    def __enter__(self) -> ConsoleReporter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._bar.close()

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        self._bar.update(max(0, step - self._step))
        self._step = max(self._step, step)
        shown = {k.split("/")[-1]: f"{v:.3g}" for k, v in values.items()
                 if k in (M.LOSS_SUP, M.LOSS_FM, M.LOSS_ST, M.LOSS_D, M.ST_ACCEPT_RATE)}
        if shown:
            self._bar.set_postfix(shown, refresh=False)
        for key, value in values.items():
            if M.is_val_miou(key):
                self._bar.write(f"iteration {step}: {key} = {100 * value:.1f}")

    def artifact(self, path: Path) -> None:
        log.debug("artifact %s", path)

    def checkpoint(self, step: int, directory: Path, values: Mapping[str, float]) -> None:
        log.debug("checkpoint %s", directory)

    def result(self, result: TrialResult) -> None:
        self._bar.update(max(0, result.iterations - self._step))

    @staticmethod
    def print_tables(result: TrialResult) -> None:
        for key, report in result.evaluations.items():
            print(f"\n== {key} (iteration {result.iterations}, {result.wall_s:.0f} s) ==")
            print(EvalMetrics.from_json(report).table())


def print_eval(result: Mapping[str, Any]) -> None:
    print(f"== {result['dataset']} ({result['split']}, {result['images']} images, eval size {result['eval_size']}) ==")
    print(EvalMetrics.from_json(result["metrics"]).table())
    print(f"metrics: {result['metrics_file']}")
