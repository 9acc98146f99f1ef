"""Seconds per s4GAN iteration and where they go, for the `tiny` preset and the paper model, by precision.

Run: `python bench/trainer_step.py [--repeat N] [--sizes H W [H W ...]] [--skip-paper]` (or `make bench`).
The paper model (DeepLabv2-ResNet-101, batch 2+2+2) runs at each size in fp32, bf16 and bf16 + channels_last; the
fp32 line has every non-precision improvement on, so the ratios measure precision alone. Peak memory is the rise of
the process's resident set during the timed steps (sampled every 5 ms), CPU flags and thread count come first.
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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

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


def peak_rss_rise(fn: Callable[[], object]) -> float:
    """MiB the resident set rose above its level before `fn`, sampled every 5 ms while it ran."""
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:  # Linux: resident pages of this process
        return int(Path("/proc/self/statm").read_text().split()[1]) * page

    base = peak = rss()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss())
            time.sleep(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return (peak - base) / 2**20


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)


def step_runner(cfg: TrialConfig) -> Callable[[], object]:
    rt, _ = build_runtime(cfg, NUM_CLASSES, IGNORE)
    h, w = cfg.dataset.crop_size
    b = cfg.schedule.batch_labeled
    data = TrainData(None, None, None, random_batches(b, (h, w), 1), random_batches(b, (h, w), 2),  # type: ignore[arg-type]
                     random_batches(b, (h, w), 3))
    it = iter(range(1, 10**9))
    return lambda: train_step(rt, data, next(it))


def bench_split(label: str, cfg: TrialConfig, repeat: int) -> dict[str, float]:
    """The whole step and its parts: G forward+backward, D passes, self-training selection."""
    rt, _ = build_runtime(cfg, NUM_CLASSES, IGNORE)
    h, w = cfg.dataset.crop_size
    b = cfg.schedule.batch_labeled
    step = timed(step_runner(cfg), repeat)
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
    print(f"{label:<30} " + "  ".join(f"{k} {v:7.3f}s ({v / step:4.2f}x)" for k, v in row.items()), flush=True)
    return row


def bench_precisions(size: tuple[int, int], repeat: int) -> None:
    base = {"preset": "paper", "device": {"device": "cpu"}, "dataset": {"crop_size": list(size)},
            "schedule": {"batch_labeled": 2, "batch_unlabeled": 2, "batch_d": 2}}
    reference = None
    for precision, channels_last in (("fp32", False), ("bf16", False), ("bf16", True)):
        cfg = TrialConfig.from_dict({**base, "precision": {"precision": precision, "channels_last": channels_last}})
        run = step_runner(cfg)
        seconds = timed(run, repeat)
        memory = peak_rss_rise(run)
        reference = reference or seconds
        label = f"paper R101 {size[0]}x{size[1]} b2x3 {precision}{' +channels_last' if channels_last else ''}"
        print(f"{label:<48} {seconds:7.2f} s/it  ({seconds / reference:4.2f}x fp32)  peak +{memory:7.0f} MiB",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 256, 512], metavar="H W")
    parser.add_argument("--skip-paper", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
          f"{platform.processor() or platform.machine()}, flags: {cpu_flags()}")
    tiny = TrialConfig.from_dict({"preset": "tiny", "device": {"device": "cpu"}})
    bench_split(f"tiny {tiny.dataset.crop_size} b{tiny.schedule.batch_labeled}x3", tiny, max(5, args.repeat))
    if args.skip_paper:
        return
    sizes = [tuple(args.sizes[i:i + 2]) for i in range(0, len(args.sizes), 2)]
    for size in sizes:
        bench_precisions(size, args.repeat)  # type: ignore[arg-type]
    print("reference s4GAN iteration (its own modules, fp32, 2 threads, issue notes): 10.3 s at 256x512, "
          "2.9 s at 128x256; target with the fast settings at 256x512: <= 4.6 s")


if __name__ == "__main__":
    main()
