"""Seconds per s4GAN iteration and where they go, for the `tiny` preset and the paper model, by precision.

Run: `python bench/trainer_step.py [--repeat N] [--sizes H W [H W ...]] [--batch B] [--compile] [--skip-paper]`
(or `make bench`). CPU flags and thread count come first.

Paper model (DeepLabv2-ResNet-101, batch B+B+B, default 2; the GPU figure of the issue is `--batch 8`), at each size:
- `reference-like`: the reference's iteration cost model on our modules: fp32, four D passes, self-training
  selection by per-image host reads and copies into a fresh tensor (reference notes s4gan.md §1.4). The baseline.
- `fp32`: our step (three D passes, selection on the device, no host sync): every non-precision improvement on,
  so the lines below it measure precision alone;
- `fp32 +channels_last`, `bf16`, `bf16 +channels_last` (and with `--compile`, `fp32 +compile`,
  `bf16 +cl +compile`).
Each configuration runs in its own process, so `peak` is that process's peak resident set (ru_maxrss: the model,
optimiser state, activations and torch's runtime), not a rise that the allocator's reuse hides. Ratios are
against `reference-like` and against `fp32`, measured in the same run.

`tiny` preset (in this process), three lines: the preset before 2026-12-01 (width 32, D at 32 channels, contiguous
layout: the baseline), the preset in the contiguous layout, and the preset (channels_last); each line's step time is
also given as a ratio to the first. Each line shows the whole step and its split:
- `step`: one whole `train_step` (G on labeled + unlabeled, feature matching, self-training, D update);
- `G fwd+bwd`: the supervised part alone (one labeled batch through G, loss, backward);
- `D passes`: the discriminator's three passes (the trainer shares D(ground truth) between feature matching and
  D's update; the reference makes four) and its backward, on fixed inputs;
- `ST select`: D-score threshold + argmax pseudo-labels + masked loss, forward only.
The split does not add up to `step` exactly (the unlabeled G pass is in `step` only); it shows the proportions.
Batches are random tensors already in memory, so the numbers are the trainer's compute alone (data loading is
bench/data.py's job).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from trainers.config import TrialConfig
from trainers.data.pipeline import TrainData
from trainers.s4gan import steps
from trainers.s4gan.train import Runtime, build_runtime, train_step

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


def peak_rss_mib() -> float:
    """This process's peak resident set so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_flags() -> str:
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return " ".join(f for f in wanted if f in flags) or "none of " + ", ".join(wanted)


def step_runner(cfg: TrialConfig, *, reference: bool = False) -> Callable[[], object]:
    rt, _ = build_runtime(cfg, NUM_CLASSES, IGNORE)
    h, w = cfg.dataset.crop_size
    b = cfg.schedule.batch_labeled
    data = TrainData(None, None, None, random_batches(b, (h, w), 1), random_batches(b, (h, w), 2),  # type: ignore[arg-type]
                     random_batches(b, (h, w), 3))
    it = iter(range(1, 10**9))
    step = reference_like_step if reference else train_step
    return lambda: step(rt, data, next(it))


def bench_split(label: str, cfg: TrialConfig, repeat: int) -> dict[str, float]:
    """The whole step and its parts: G forward+backward, D passes, self-training selection."""
    rt, _ = build_runtime(cfg, NUM_CLASSES, IGNORE)
    h, w = cfg.dataset.crop_size
    b = cfg.schedule.batch_labeled
    step = timed(step_runner(cfg), repeat)
    layout = torch.channels_last if rt.channels_last else torch.contiguous_format  # as train_step feeds G and D
    x, y = next(random_batches(b, (h, w), 4))
    x = x.contiguous(memory_format=layout)

    def g_only() -> None:
        rt.opt_g.zero_grad()
        loss = rt.criterion(steps.upsample(rt.generator(x), (h, w)), y)
        loss.backward()

    d_in = torch.rand(b, NUM_CLASSES + 3, h, w).contiguous(memory_format=layout)

    def d_only() -> None:
        assert rt.discriminator is not None
        rt.discriminator.zero_grad()
        outs = [rt.discriminator(d_in) for _ in range(3)]
        steps.discriminator_loss(outs[0][0], outs[1][0]).backward()

    logits = torch.randn(b, NUM_CLASSES, h, w)
    d_logits = torch.randn(b, 1)

    def st_only() -> None:
        steps.self_training_loss(rt.st_criterion, logits, steps.select_confident(d_logits, 0.5), IGNORE)

    row = {"step": step, "G fwd+bwd": timed(g_only, repeat), "D passes": timed(d_only, repeat),
           "ST select": timed(st_only, repeat)}
    print(f"{label:<44} " + "  ".join(f"{k} {v:7.3f}s ({v / step:4.2f}x)" for k, v in row.items()), flush=True)
    return row


TINY_LINES: dict[str, dict[str, object]] = {  # label -> overrides of the tiny preset; the first is the baseline
    "tiny before 2026-12-01 (w32, D32, NCHW)": {"model": {"tiny_width": 32, "d_channels": 32},
                                                "precision": {"channels_last": False}},
    "tiny, contiguous layout": {"precision": {"channels_last": False}},
    "tiny (the preset)": {},
}


def bench_tiny(repeat: int) -> None:
    """The tiny preset's step and split, against its previous model and its contiguous layout, in this run."""
    base = None
    for label, overrides in TINY_LINES.items():
        cfg = TrialConfig.from_dict({"preset": "tiny", "device": {"device": "cpu"}, **overrides})
        row = bench_split(f"{label} {cfg.dataset.crop_size[0]}x{cfg.dataset.crop_size[1]}", cfg, repeat)
        base = base or row["step"]
        print(f"{'':<44} step {row['step'] / base:4.2f}x the first line", flush=True)


def reference_like_step(rt: Runtime, data: TrainData, iteration: int) -> None:
    """The reference iteration's cost on our modules: four D passes, per-image host reads and copies for selection.

    Same terms and optimiser steps as `train_step`; only the mechanics the reference notes describe differ.
    """
    s, D = rt.cfg.s4gan, rt.discriminator
    assert D is not None and rt.opt_d is not None
    (x_l, y_l), (x_u, _), (x_gt, y_gt) = next(data.labeled), next(data.unlabeled), next(data.labeled_d)
    rt.opt_g.zero_grad()
    rt.opt_d.zero_grad()
    D.requires_grad_(False)
    loss_sup = rt.criterion(steps.upsample(rt.generator(x_l), y_l.shape[-2:]), y_l)
    logits_u = steps.upsample(rt.generator(x_u), x_u.shape[-2:])
    fake_input = steps.discriminator_input(torch.softmax(logits_u, 1), steps.minmax_normalise(x_u))
    real_input = steps.discriminator_input(steps.one_hot_with_ignore(y_gt, rt.num_classes, rt.ignore_index),
                                           steps.minmax_normalise(x_gt, range_of=x_l))
    d_fake, features_fake = D(fake_input)
    _, features_real = D(real_input)  # pass 2
    loss = loss_sup + s.lambda_fm * steps.feature_matching_loss(features_real, features_fake)
    scores = torch.sigmoid(d_fake).view(-1)
    chosen = [j for j in range(scores.shape[0]) if scores[j].item() > s.threshold_st]  # a host read per image
    if chosen and iteration > 0:
        selected = torch.zeros(len(chosen), *logits_u.shape[1:])
        for k, j in enumerate(chosen):  # copied one by one into a fresh tensor (CopySlices in autograd)
            selected[k] = logits_u[j]
        loss = loss + s.lambda_st * rt.criterion(selected, selected.detach().argmax(1))
    loss.backward()
    D.requires_grad_(True)
    d_fake_detached, _ = D(fake_input.detach())  # pass 3
    d_real, _ = D(real_input)  # pass 4
    steps.discriminator_loss(d_fake_detached, d_real).backward()
    rt.opt_g.step()
    rt.opt_d.step()


PAPER_LINES: dict[str, dict[str, object]] = {  # label -> precision settings; "reference" picks the baseline step
    "reference-like": {"precision": "fp32", "reference": True},
    "fp32": {"precision": "fp32"},
    "fp32 +channels_last": {"precision": "fp32", "channels_last": True},
    "bf16": {"precision": "bf16"},
    "bf16 +channels_last": {"precision": "bf16", "channels_last": True},
}
COMPILE_LINES: dict[str, dict[str, object]] = {
    "fp32 +compile": {"precision": "fp32", "compile": True},
    "bf16 +cl +compile": {"precision": "bf16", "channels_last": True, "compile": True},
}


def paper_config(size: tuple[int, int], batch: int, settings: dict[str, object]) -> TrialConfig:
    precision = {k: v for k, v in settings.items() if k != "reference"}
    return TrialConfig.from_dict({"preset": "paper", "device": {"device": "cpu"}, "precision": precision,
                                  "dataset": {"crop_size": list(size)},
                                  "schedule": {"batch_labeled": batch, "batch_unlabeled": batch, "batch_d": batch}})


def measure_one(spec: dict) -> dict[str, float]:
    """In a fresh process: seconds per iteration (median) and the process's peak RSS for one configuration."""
    torch.manual_seed(0)
    size, settings = tuple(spec["size"]), spec["settings"]
    cfg = paper_config(size, spec["batch"], settings)  # type: ignore[arg-type]
    runner = step_runner(cfg, reference=bool(settings.get("reference")))
    return {"seconds": timed(runner, spec["repeat"]), "peak_mib": peak_rss_mib()}


def bench_paper(size: tuple[int, int], batch: int, repeat: int, lines: dict[str, dict[str, object]]) -> None:
    results: dict[str, dict[str, float]] = {}
    for label, settings in lines.items():
        spec = {"size": size, "batch": batch, "settings": settings, "repeat": repeat}
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{label}: failed ({out.stderr.strip().splitlines()[-1:]})", flush=True)
            continue
        results[label] = row = json.loads(out.stdout.strip().splitlines()[-1])
        ratios = "  ".join(f"{row['seconds'] / results[base]['seconds']:4.2f}x {base}" if base in results
                           else " " * (6 + len(base)) for base in ("reference-like", "fp32"))
        name = f"paper R101 {size[0]}x{size[1]} b{batch}x3 {label}"
        print(f"{name:<52} {row['seconds']:7.2f} s/it  {ratios}  peak {row['peak_mib']:6.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 256, 512], metavar="H W")
    parser.add_argument("--batch", type=int, default=2, help="paper model: B labeled + B unlabeled + B for D")
    parser.add_argument("--compile", action="store_true", help="add torch.compile lines (minutes of compile)")
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one paper configuration, JSON in and out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(json.loads(args.one))))
        return
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, "
          f"{platform.processor() or platform.machine()}, flags: {cpu_flags()}")
    bench_tiny(max(5, args.repeat))
    if args.skip_paper:
        return
    lines = PAPER_LINES | (COMPILE_LINES if args.compile else {})
    for i in range(0, len(args.sizes), 2):
        bench_paper((args.sizes[i], args.sizes[i + 1]), args.batch, args.repeat, lines)
    print("the issue's figures (the reference's own modules, fp32, 2 threads, an AMX machine): 10.3 s at 256x512, "
          "2.9 s at 128x256; target with the fast settings at 256x512: <= 4.6 s (0.45x reference)")


if __name__ == "__main__":
    main()
