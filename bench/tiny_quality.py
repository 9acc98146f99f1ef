"""Is the tiny s4GAN preset learning the generated scenes, or only their colours?

Run: `python bench/tiny_quality.py [--seeds 0 1 2] [--iterations N]` (or `make bench`).
Trains the `tiny` preset on the generated road scenes for each seed and compares its validation mIoU (mean over
classes present) with two baselines measured in the same run on the same validation images:
- majority class (predict `road` everywhere), and
- a per-pixel RGB classifier (a 1x1 convolution, bench/colour_baseline.py).
The project's floor: tiny s4GAN at least 15 mIoU points above the colour classifier, with a non-zero self-training
acceptance rate. The script prints each number, the seed spread, and PASS/FAIL for each floor (exit 1 on FAIL).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from colour_baseline import baselines, miou  # bench/ is run as scripts: a sibling module

from trainers import metric_names as M
from trainers.config import TrialConfig
from trainers.data import synth_root
from trainers.reporting import ListReporter
from trainers.s4gan.train import train


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, help="override the preset's iterations")
    args = parser.parse_args()
    torch.set_num_threads(2)
    overrides = {"preset": "tiny"}
    if args.iterations:
        overrides["schedule"] = {"iterations": args.iterations}
    results, accept = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            cfg = TrialConfig.from_dict({**overrides, "seed": seed})
            rep = ListReporter()
            result = train(cfg, reporter=rep, workdir=Path(tmp) / f"s{seed}")
            results.append(100 * result.metrics[M.val("synth", "miou")])
            accept.append(max(rate for _, rate in rep.series(M.ST_ACCEPT_RATE)))
            print(f"tiny seed {seed}: mIoU {results[-1]:.1f}, max self-training acceptance {accept[-1]:.2f}, "
                  f"{result.wall_s:.0f} s", flush=True)
    root = synth_root(cfg.dataset.synth_images)
    scores = {name.split(" ")[0]: 100 * miou(conf)[0] for name, conf in baselines(root, seed=0).items()}
    colour, majority = scores["colour"], scores["majority"]
    mean = statistics.mean(results)
    spread = statistics.stdev(results) if len(results) > 1 else 0.0
    print(f"\ntiny s4GAN ({cfg.schedule.iterations} it): {mean:.1f} +- {spread:.1f} mIoU over seeds {args.seeds}")
    print(f"colour 1x1 conv:          {colour:.1f} mIoU")
    print(f"majority class:           {majority:.1f} mIoU")
    floors = {"tiny >= colour + 15": mean >= colour + 15, "tiny > majority": mean > majority,
              "self-training accepts images": min(accept) > 0}
    for name, ok in floors.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(floors.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
