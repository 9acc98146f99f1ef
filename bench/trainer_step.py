"""Seconds per s4GAN iteration and where they go, for the `tiny` preset and the paper model.

Run: `python bench/trainer_step.py [--repeat N] [--paper-size H W] [--skip-paper]` (or `make bench`).
Batches are random tensors already in memory, so the numbers are the trainer's compute alone (data loading is
bench/data.py's job). Reported per configuration:
- `step`: one whole `train_step` (G on labeled + unlabeled, feature matching, self-training, D update);
- `G fwd+bwd`: the supervised part alone (one labeled batch through G, loss, backward);
- `D passes`: the discriminator's four passes and its backward, on fixed inputs;
- `ST select`: D-score threshold + argmax pseudo-labels + masked loss, forward only.
The split does not add up to `step` exactly (the unlabeled G pass is in `step` only); it shows the proportions.
Ratios are against the `step` time of the same configuration, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from trainers.config import TrialConfig
from trainers.data.pipeline import TrainData
from trainers.s4gan import steps
from trainers.s4gan.train import build_runtime, train_step

NUM_CLASSES, IGNORE = 19, 255


def random_batches(batch: int, size: tuple[int, int], seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (batch, *size), generator=g)
    while True:
        yield x, y


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up (allocator, first-call kernels)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_config(label: str, cfg: TrialConfig, repeat: int) -> dict[str, float]:
    rt, info = build_runtime(cfg, NUM_CLASSES, IGNORE)
    h, w = cfg.dataset.crop_size
    b = cfg.schedule.batch_labeled
    data = TrainData(None, None, None, random_batches(b, (h, w), 1), random_batches(b, (h, w), 2),  # type: ignore[arg-type]
                     random_batches(b, (h, w), 3))
    it = iter(range(1, 10**9))
    step = timed(lambda: train_step(rt, data, next(it)), repeat)

    x, y = next(random_batches(b, (h, w), 4))

    def g_only() -> None:
        rt.opt_g.zero_grad()
        loss = rt.criterion(steps.upsample(rt.generator(x), (h, w)), y)
        loss.backward()

    d_in = torch.rand(b, NUM_CLASSES + 3, h, w)

    def d_only() -> None:
        assert rt.discriminator is not None
        rt.discriminator.zero_grad()
        outs = [rt.discriminator(d_in) for _ in range(4)]
        steps.discriminator_loss(outs[0][0], outs[1][0]).backward()

    logits = torch.randn(b, NUM_CLASSES, h, w)
    d_logits = torch.randn(b, 1)

    def st_only() -> None:
        steps.self_training_loss(rt.st_criterion, logits, steps.select_confident(d_logits, 0.5), IGNORE)

    row = {"step": step, "G fwd+bwd": timed(g_only, repeat), "D passes": timed(d_only, repeat),
           "ST select": timed(st_only, repeat)}
    print(f"{label:<34} " + "  ".join(f"{k} {v:7.3f}s ({v / step:4.2f}x)" for k, v in row.items()))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--paper-size", type=int, nargs=2, default=[128, 256], metavar=("H", "W"))
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
          f"{platform.processor() or platform.machine()}")
    tiny = TrialConfig.from_dict({"preset": "tiny", "device": {"device": "cpu"}})
    bench_config(f"tiny {tiny.dataset.crop_size} b{tiny.schedule.batch_labeled}x3", tiny, args.repeat)
    if not args.skip_paper:
        paper = TrialConfig.from_dict({"preset": "paper", "device": {"device": "cpu"},
                                       "dataset": {"crop_size": args.paper_size},
                                       "schedule": {"batch_labeled": 2, "batch_unlabeled": 2, "batch_d": 2}})
        bench_config(f"paper R101 {tuple(args.paper_size)} b2x3", paper, max(2, args.repeat // 2))


if __name__ == "__main__":
    main()
