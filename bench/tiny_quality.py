"""Is the tiny s4GAN preset learning the generated scenes, or only their colours?

Run: `python bench/tiny_quality.py [--seeds 0 1 2] [--iterations N] [--bf16]` (or `make bench`).
Trains the `tiny` preset on the generated road scenes for each seed and compares its validation mIoU (mean over
classes present) with two baselines measured in the same run on the same validation images:
- majority class (predict `road` everywhere), and
- a per-pixel RGB classifier (a 1x1 convolution, bench/colour_baseline.py).
The project's floor: tiny s4GAN at least 15 mIoU points above the colour classifier, with a non-zero self-training
acceptance rate. The script prints each number, the seed spread, and PASS/FAIL for each floor (exit 1 on FAIL).
With `--bf16` it trains every seed again under bf16 autocast and checks the mixed-precision parity of the
fast-trials issue: the bf16 mean mIoU lies within the fp32 seeds' range (min..max), and prints the difference.
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
from trainers.data.roots import synth_root
from trainers.reporting import ListReporter
from trainers.s4gan.train import train


def run_seeds(overrides: dict, seeds: list[int], workdir: Path) -> tuple[list[float], list[float], TrialConfig]:
    """Train one tiny trial per seed; validation mIoU (%) and max self-training acceptance rate of each."""
    results, accept = [], []
    for seed in seeds:
        cfg = TrialConfig.from_dict({**overrides, "seed": seed})
        rep = ListReporter()
        result = train(cfg, reporter=rep, workdir=workdir / f"s{seed}")
        results.append(100 * result.metrics[M.val("synth", "miou")])
        accept.append(max(rate for _, rate in rep.series(M.ST_ACCEPT_RATE)))
        print(f"tiny {cfg.precision.precision} seed {seed}: mIoU {results[-1]:.1f}, max self-training acceptance "
              f"{accept[-1]:.2f}, {result.wall_s:.0f} s", flush=True)
    return results, accept, cfg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, help="override the preset's iterations")
    parser.add_argument("--bf16", action="store_true", help="also train every seed under bf16 autocast")
    args = parser.parse_args()
    torch.set_num_threads(2)
    overrides = {"preset": "tiny"}
    if args.iterations:
        overrides["schedule"] = {"iterations": args.iterations}
    with tempfile.TemporaryDirectory() as tmp:
        results, accept, cfg = run_seeds(overrides, args.seeds, Path(tmp) / "fp32")
        if args.bf16:
            bf16, _, _ = run_seeds({**overrides, "precision": {"precision": "bf16"}}, args.seeds, Path(tmp) / "bf16")
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
    if args.bf16:
        bf16_mean = statistics.mean(bf16)
        print(f"tiny s4GAN bf16:          {bf16_mean:.1f} +- {statistics.stdev(bf16) if len(bf16) > 1 else 0.0:.1f} "
              f"mIoU (fp32 range {min(results):.1f}..{max(results):.1f}, difference {bf16_mean - mean:+.1f})")
        floors["bf16 mean within the fp32 seed range"] = min(results) <= bf16_mean <= max(results)
    for name, ok in floors.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(floors.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
