"""What the sweep machinery costs on top of the trials it runs.

Run: `python bench/sweep_overhead.py [--trials 8] [--slots 2] [--preset tiny] [--iterations N]` (or `make bench`).
A real sweep (private local Ray, embedded MLflow store, generated data) of N trials on S slots of 1 CPU each; then
- sweep efficiency = sum of trial compute / (slots x sweep wall time), where a trial's compute is its `train()` wall
  time (`time/trial_s`): the share of the slots' time that went into training (target >= 0.85);
- MLflow logging overhead per trial = time inside tracking calls (`time/tracking_s`) / trial time (target <= 2%).
Both ratios compare quantities measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from orchestrator.spec import parse_spec
from orchestrator.sweep import launch, prepare_data
from orchestrator.tracking import Tracker
from trainers import metric_names as M


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "micro"])
    parser.add_argument("--iterations", type=int, help="override the preset's iterations")
    args = parser.parse_args()
    base: dict = {"preset": args.preset, "dataset": {"name": "synth"}}
    if args.iterations:
        base["schedule"] = {"iterations": args.iterations}
    spec = parse_spec({"name": "bench-overhead", "base": base, "grid": {"seed": list(range(args.trials))},
                       "resources": {"cpu": 1, "gpu": 0}}, source="bench/sweep_overhead.py")
    with tempfile.TemporaryDirectory() as tmp:
        prepare_data(spec.trials()[:1], Path(tmp))  # the data's one-off generation is not charged to the sweep
        t0 = time.perf_counter()
        outcome = launch(spec, storage=tmp, max_concurrent=args.slots)
        wall = time.perf_counter() - t0
        kids = Tracker(outcome.run.tracking_uri).children(outcome.run.experiment_id, outcome.run.parent_run_id)
    trial_s = [k.metrics[M.TRIAL_TIME] for k in kids]
    tracking_s = [k.metrics[M.TRACKING_TIME] / k.metrics[M.TRIAL_TIME] for k in kids]
    efficiency = sum(trial_s) / (args.slots * wall)
    print(f"{len(kids)} {args.preset} trials on {args.slots} slots: sweep wall {wall:.1f} s, "
          f"trial compute {sum(trial_s):.1f} s (median trial {statistics.median(trial_s):.1f} s)")
    print(f"sweep efficiency      {efficiency:.3f}   (target >= 0.85)")
    print(f"MLflow overhead/trial {100 * statistics.median(tracking_s):.2f}% median, "
          f"{100 * max(tracking_s):.2f}% max   (target <= 2%)")


if __name__ == "__main__":
    main()
