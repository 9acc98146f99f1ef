"""Forward + backward time and peak memory of every registry loss, relative to cross entropy, on CPU.

Run: `python bench/losses.py [--size H W] [--batch N] [--repeat R] [--only NAME ...]`. Defaults: 19 classes,
batch 8, 256x512 logits (the paper preset's crop), ~10% ignore pixels, fp32. The losses run round-robin, `--repeat`
rounds after a warm-up round; time is the median over rounds, and the ratio the median of each round's time over
that round's CE time, so that drift of a shared machine hits both alike. `--only` runs a subset (and ce).
Peak memory is measured with torch.profiler's CPU memory events (`profile_memory=True`): the running sum of every
allocation and free by torch's CPU allocator during one forward + backward, maximum minus start; it counts the
loss's intermediates, the saved tensors and the gradient of the logits, not the inputs. Ratios are against `ce`
measured in the same run. An adaptive loss's run includes its per-step state update (`observe=True`), as in the
trainer. Target: within 1.5x of CE, Lovasz (one sort of all pixels per class) within 3x.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from trainers.data.stats import ClassCounts
from trainers.losses import LOSSES, SegLoss

NUM_CLASSES, IGNORE = 19, 255
TARGET_RATIO = 1.5
TARGET_RATIOS = {"lovasz": 3.0}  # exceptions to TARGET_RATIO
# a Cityscapes-like long tail for the losses that need the labeled split's counts (weight recipes, auto)
COUNTS = ClassCounts(classes=tuple(f"c{c}" for c in range(NUM_CLASSES)),
                     pixels=tuple(int(4e8 / 1.6**c) for c in range(NUM_CLASSES)),
                     image_pixels=tuple(int(4e8) for _ in range(NUM_CLASSES)), images=372)


def inputs(batch: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(batch, NUM_CLASSES, *size, generator=g) * 3).requires_grad_(True)
    target = torch.randint(0, NUM_CLASSES, (batch, *size), generator=g)
    target[torch.rand(batch, *size, generator=g) < 0.1] = IGNORE
    return logits, target


def forward_backward(loss: SegLoss, logits: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        logits.grad = None
        loss(logits, target, observe=True).backward()  # with an adaptive loss's state update, as in the trainer

    return run


def seconds(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def peak_bytes(fn: Callable[[], None], logits: torch.Tensor) -> int:
    logits.grad = None  # freed outside the profile: its gradient counts as allocated by this run
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    running, peak = 0, 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak


def candidates() -> dict[str, SegLoss]:
    losses = {name: SegLoss(name, {}, ignore_index=IGNORE, num_classes=NUM_CLASSES, class_counts=COUNTS)
              for name in LOSSES}
    weights = {"class_weights": tuple(float(1 + c % 5) for c in range(NUM_CLASSES))}
    losses["ce weighted"] = SegLoss("ce", weights, ignore_index=IGNORE, num_classes=NUM_CLASSES)
    losses["focal l2"] = SegLoss("focal", {"lambda": 2.0}, ignore_index=IGNORE, num_classes=NUM_CLASSES)
    losses["dice squared"] = SegLoss("dice", {"squared": True}, ignore_index=IGNORE, num_classes=NUM_CLASSES)
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=[256, 512], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="run only these losses (names as in the table; ce, the reference, always runs)")
    args = parser.parse_args()
    losses = candidates()
    if args.only:
        unknown = sorted(set(args.only) - set(losses))
        if unknown:
            parser.error(f"--only: unknown loss(es) {', '.join(unknown)}; valid names are {', '.join(losses)}")
        losses = {name: loss for name, loss in losses.items() if name == "ce" or name in args.only}
    logits, target = inputs(args.batch, tuple(args.size))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
          f"{platform.processor() or platform.machine()}; logits {tuple(logits.shape)} fp32, "
          f"median of {args.repeat} rounds; memory: torch.profiler CPU allocations; "
          f"load average {os.getloadavg()[0]:.1f} (other processes skew absolute times, less the ratios)")
    runs = {name: forward_backward(loss, logits, target) for name, loss in losses.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.repeat + 1):
        for name, fn in runs.items():
            t = seconds(fn)
            if round_ > 0:  # round 0 warms up allocator and kernels
                times[name].append(t)
    peaks = {name: peak_bytes(fn, logits) for name, fn in runs.items()}
    print(f"{'loss':<18} {'ms':>8} {'x ce':>6} {'peak MB':>9} {'x ce':>6}")
    slow = []
    for name in runs:
        t = statistics.median(times[name])
        ratio = statistics.median(a / b for a, b in zip(times[name], times["ce"], strict=True))
        memory = peaks[name] / peaks["ce"]
        print(f"{name:<18} {t * 1e3:8.1f} {ratio:6.2f} {peaks[name] / 2**20:9.1f} {memory:6.2f}")
        target_ratio = TARGET_RATIOS.get(name, TARGET_RATIO)
        if ratio > target_ratio or memory > target_ratio:
            slow.append(f"{name} (target {target_ratio}x)")
    print(f"over target of ce (time or memory; {TARGET_RATIO}x, lovasz 3x): {', '.join(slow) or 'none'}")


if __name__ == "__main__":
    main()
