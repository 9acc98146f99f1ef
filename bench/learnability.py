"""Can every class of the generated scenes be learned by the tiny model, and are the rare ones still rare?

Run: `python bench/learnability.py [--iterations N] [--lr LR] [--seed S] [--threads T]` (or `make bench`).
Trains the `tiny` model supervised-only (`s4gan.gan: false`: no discriminator, no unlabeled images) on the preset's
generated data for long enough to converge (default 6000 iterations at the preset's lr 3e-3, ten times the
preset's length; 156 s at 2 threads), then scores the validation scenes. It prints, per
class, its share of the labeled split's pixels, the labeled images that contain it, its validation IoU and where
its pixels went. The floors the generated data must meet (issue #17):
- every class reaches IoU > 0, and at least 15 of the 19 reach IoU > 20 (%);
- at least eight classes stay rare (under 1% of the labeled pixels, the report's default `rare_share`), so the
  study's question (which loss helps the rare classes) can be asked of the embedded default.
The colour-only floor (a 1x1 conv on RGB far below the model) is bench/colour_baseline.py's. Exit 1 when a floor
fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trainers import metric_names as M
from trainers.config import TrialConfig
from trainers.data.labels import CITYSCAPES
from trainers.data.pipeline import train_data
from trainers.data.stats import class_pixel_counts
from trainers.reporting import ListReporter
from trainers.s4gan.train import train

RARE_SHARE = 0.01  # the report's default `rare_share`
MIN_RARE = 8
NAMES = CITYSCAPES.classes


def labeled_counts(cfg: TrialConfig) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, images containing the class) per class over the labeled split the trial trains on."""
    data = train_data(cfg.dataset, batches={"labeled": 1, "labeled_d": 1, "unlabeled": 1}, seed=cfg.seed,
                      split_seed=cfg.split_seed, workers=0)
    per_image = np.array([class_pixel_counts([pair], CITYSCAPES).pixels for pair in data.split.labeled], float)
    return per_image.sum(0), (per_image > 0).sum(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.iterations
    cfg = TrialConfig.from_dict({
        "preset": "tiny", "seed": args.seed, "s4gan": {"gan": False}, "optim": {"lr": args.lr},
        "schedule": {"iterations": n, "eval_every": n, "checkpoint_every": n, "num_samples": 0}})
    pixels, images = labeled_counts(cfg)
    share = pixels / pixels.sum()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="s4sweep-learnability-") as tmp:
        result = train(cfg, reporter=ListReporter(), workdir=Path(tmp))
    report = result.evaluations["synth"]
    iou = np.array([result.metrics[M.val_class("synth", "iou", c)] for c in NAMES])
    confusion = np.array(report["confusion"], float)
    print(f"tiny model, supervised only, {n} iterations at lr {args.lr}, seed {args.seed}, {args.threads} threads: "
          f"{time.perf_counter() - start:.0f} s; validation mIoU {100 * result.metrics[M.val('synth', 'miou')]:.1f} "
          f"on {len(report['per_image_union'])} scenes; labeled split: {cfg.dataset.synth_images // 2} scenes")
    print(f"{'class':14s} {'labeled px %':>12s} {'images':>6s} {'IoU %':>6s}  its pixels went to")
    for c, name in enumerate(NAMES):
        row = confusion[c] / max(confusion[c].sum(), 1.0)
        went = ", ".join(f"{NAMES[j]} {100 * row[j]:.0f}%" for j in np.argsort(-row)[:3] if row[j] >= 0.05)
        rare = "rare" if share[c] < RARE_SHARE else "    "
        print(f"{name:14s} {100 * share[c]:12.2f} {images[c]:6d} {100 * iou[c]:6.1f}  {rare}  {went}")
    rare = share < RARE_SHARE
    print(f"rare classes (share < {100 * RARE_SHARE:g}%): {int(rare.sum())}, "
          f"their mean IoU {100 * iou[rare].mean():.1f}")
    floors = {"every class IoU > 0": bool((iou > 0).all()),
              f"at least 15 of 19 classes IoU > 20 ({int((iou > 0.2).sum())})": int((iou > 0.2).sum()) >= 15,
              f"at least {MIN_RARE} rare classes ({int(rare.sum())})": int(rare.sum()) >= MIN_RARE}
    for name, ok in floors.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(floors.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
