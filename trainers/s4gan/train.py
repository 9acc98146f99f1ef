"""`train(cfg, reporter=..., workdir=...)`: one s4GAN trial, anywhere (a laptop, a test, a Ray worker).

Read `train` top to bottom: set up (device, seeds, data, models, optimisers, resume), then the loop of `train_step`,
with logging, evaluation and checkpoints at their cadences. The iteration itself lives in `train_step`, built from the
named functions of steps.py.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from trainers import metric_names as M
from trainers.config import TrialConfig
from trainers.data.pipeline import TrainData, eval_data, train_data
from trainers.data.remap import eval_remaps
from trainers.data.stats import ClassCounts, class_pixel_counts, labeled_counts_json
from trainers.data.tables import BrokenDuringTrainingError, DataError, dataset_info
from trainers.losses import build_loss, needs_class_counts
from trainers.reporting import Reporter, TrialResult
from trainers.s4gan import checkpoint as ckpt
from trainers.s4gan import steps
from trainers.s4gan.discriminator import Discriminator
from trainers.s4gan.evaluate import RemapScorer, evaluate, save_confusion, save_json, save_samples
from trainers.s4gan.model import build_generator, load_pretrained
from trainers.small_objects import ObjectRecall

log = logging.getLogger(__name__)
KEEP_CHECKPOINTS = 2
RESUME_KEYS = ("iteration", "generator", "opt_g", "discriminator", "opt_d", "loss", "torch_rng")


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the term and the iteration."""


@dataclass
class Runtime:
    """What a step needs besides the batches: models, optimisers, losses, and the resolved device settings."""

    cfg: TrialConfig
    device: torch.device
    generator: nn.Module
    discriminator: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    criterion: nn.Module
    st_criterion: nn.Module
    num_classes: int
    ignore_index: int
    amp_dtype: torch.dtype | None
    channels_last: bool
    # fp16 only: loss scaling against gradient underflow (fp16 has 5 exponent bits; bf16 and fp32 have 8). Disabled,
    # `scale` returns its argument and `step` is `optimizer.step()`, so one code path serves every precision.
    scaler: torch.amp.GradScaler

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device.device is 'cuda' but no CUDA device is visible")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def resolve_precision(precision: str, channels_last: bool, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """fp32 -> no autocast; bf16/fp16 -> autocast; auto -> bf16 + channels_last where bf16 is fast, else fp32."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision.precision 'fp16' needs CUDA (it relies on a gradient scaler); use bf16 on CPU")
    if precision == "auto":
        fast = torch.cuda.is_bf16_supported() if device.type == "cuda" else _cpu_has_fast_bf16()
        return (torch.bfloat16, True) if fast else (None, channels_last)
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision], channels_last


def _cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    # AMX only: on an AVX512-BF16 CPU without AMX (this project's machines, 2026-11-25) bf16 autocast measured 1.3-1.4x
    # *slower* than fp32 for the paper model (bench/trainer_step.py)
    return "amx_bf16" in flags


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_runtime(cfg: TrialConfig, num_classes: int, ignore_index: int, *,
                  class_counts: ClassCounts | None = None) -> tuple[Runtime, dict[str, Any]]:
    """Models, optimisers and losses; `class_counts` (of the labeled split) resolves a class-weight recipe."""
    device = resolve_device(cfg.device.device)
    if cfg.device.threads:
        torch.set_num_threads(cfg.device.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: let cuDNN pick the fastest kernels once
        # TF32 for fp32 matmuls/convs (Ampere+): ~10 bits of mantissa in products, accumulation in fp32
        torch.backends.cuda.matmul.allow_tf32 = cfg.precision.tf32
        torch.backends.cudnn.allow_tf32 = cfg.precision.tf32
        if cfg.device.memory_fraction:
            torch.cuda.set_per_process_memory_fraction(cfg.device.memory_fraction, device)
    amp_dtype, channels_last = resolve_precision(cfg.precision.precision, cfg.precision.channels_last, device)
    info: dict[str, Any] = {"device": str(device), "precision": str(amp_dtype or torch.float32).replace("torch.", ""),
                            "channels_last": channels_last, "threads": torch.get_num_threads()}
    generator = build_generator(cfg.model, num_classes)
    if cfg.model.pretrained != "none":
        report = load_pretrained(generator, cfg.model.pretrained)
        info["pretrained"] = {"path": str(report.path), "sha256": report.sha256, "loaded": report.loaded}
    else:
        info["pretrained"] = "none"  # random init: not comparable with published numbers
    generator.to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    generator.to(memory_format=memory_format)
    info["compile"] = cfg.precision.compile
    opt_g = torch.optim.SGD(generator.param_groups(cfg.optim.lr), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                            weight_decay=cfg.optim.weight_decay)
    discriminator, opt_d = None, None
    if cfg.s4gan.gan:
        discriminator = Discriminator(num_classes, channels=cfg.model.d_channels, dropout=cfg.model.d_dropout)
        discriminator.to(device).to(memory_format=memory_format)
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.optim.lr_d, betas=cfg.optim.betas_d)
    criterion = build_loss(cfg.loss, ignore_index=ignore_index, num_classes=num_classes,
                           class_counts=class_counts).to(device)
    info["loss"] = criterion.describe()  # with the class weights actually used
    st_criterion = criterion
    if cfg.s4gan.st_loss == "ce":
        from trainers.config import LossConfig

        st_criterion = build_loss(LossConfig(name="ce"), ignore_index=ignore_index, num_classes=num_classes)
    if cfg.precision.compile:
        compile_in_place(generator, discriminator)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    runtime = Runtime(cfg, device, generator, discriminator, opt_g, opt_d, criterion, st_criterion.to(device),
                      num_classes, ignore_index, amp_dtype, channels_last, scaler)
    return runtime, info


COMPILE_BACKEND = "inductor"  # a module constant so a test can swap in a failing backend


def compile_in_place(*modules: nn.Module | None) -> None:
    """`nn.Module.compile` on each module: keeps parameter names (checkpoints stay loadable without compile).

    Compilation happens lazily at the first call. With `suppress_errors`, a backend that fails (no C++ compiler,
    an unsupported op) makes dynamo log the error and run that frame eagerly: the trial goes on, only slower.
    """
    torch._dynamo.config.suppress_errors = True
    for module in modules:
        if module is not None:
            module.compile(backend=COMPILE_BACKEND)


def set_learning_rates(rt: Runtime, iteration: int) -> float:
    o, n = rt.cfg.optim, rt.cfg.schedule.iterations
    lr = steps.poly_lr(o.lr, iteration, n, o.poly_power)
    for group in rt.opt_g.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
    if rt.opt_d is not None:
        for group in rt.opt_d.param_groups:
            group["lr"] = steps.poly_lr(o.lr_d, iteration, n, o.poly_power)
    return lr


def _to_device(rt: Runtime, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    image, label = batch
    nb = rt.device.type == "cuda"
    image = image.to(rt.device, non_blocking=nb)
    if rt.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return image, label.to(rt.device, non_blocking=nb)


def _check_finite(terms: Mapping[str, Tensor], iteration: int) -> None:
    for key, value in terms.items():
        if not torch.isfinite(value):
            raise NonFiniteLossError(f"{key} is {value.item()} at iteration {iteration}")


def train_step(rt: Runtime, data: TrainData, iteration: int) -> dict[str, Tensor]:
    """One s4GAN iteration (reference notes s4gan.md §1.4); returns detached loss terms keyed by metric name."""
    s = rt.cfg.s4gan
    x_l, y_l = _to_device(rt, next(data.labeled))
    rt.opt_g.zero_grad(set_to_none=True)
    with rt.autocast():
        logits_l = rt.generator(x_l)
    logits_sup = steps.upsample(logits_l.float(), y_l.shape[-2:])
    loss_sup = steps.supervised_loss(rt.criterion, logits_sup, y_l)
    terms = {M.LOSS_SUP: loss_sup}
    if rt.discriminator is None:  # the supervised-only control
        _check_finite(terms, iteration)
        rt.scaler.scale(loss_sup).backward()
        rt.scaler.step(rt.opt_g)
        rt.scaler.update()
        return {k: v.detach() for k, v in terms.items()}

    D, opt_d = rt.discriminator, rt.opt_d
    assert opt_d is not None  # built together with D
    x_u, _ = _to_device(rt, next(data.unlabeled))
    x_gt, y_gt = _to_device(rt, next(data.labeled_d))
    opt_d.zero_grad(set_to_none=True)
    with rt.autocast():
        logits_u = rt.generator(x_u)
    logits_u = steps.upsample(logits_u.float(), x_u.shape[-2:])
    probs_u = steps.class_softmax(logits_u)  # fp32: D's class channels are probabilities, kept exact
    per_image = s.d_input_norm == "per_image"
    fake_input = steps.discriminator_input(probs_u, steps.minmax_normalise(x_u, per_image=per_image))
    real_norm = steps.minmax_normalise(x_gt, per_image=per_image,
                                       range_of=x_l if s.gt_norm_bug and not per_image else None)
    layout = torch.channels_last if rt.channels_last else torch.contiguous_format  # D's input as D's weights
    real_input = steps.discriminator_input(
        steps.one_hot_with_ignore(y_gt, rt.num_classes, rt.ignore_index, memory_format=layout), real_norm)
    # Three D passes, not the reference's four: D(ground truth) does not depend on G and D does not change before
    # its own update, so one pass serves both feature matching (detached: G's loss sends nothing into D, as the
    # reference's requires_grad=False) and D's real term. The one difference: both uses see one dropout mask.
    with rt.autocast():
        d_real, features_real = D(real_input)
        D.requires_grad_(False)
        d_fake, features_fake = D(fake_input)
    loss_fm = steps.feature_matching_loss(features_real.detach().float(), features_fake.float())
    # self-training starts after iteration 0, as the reference (its D has not been trained yet at 0)
    selected = steps.select_confident(d_fake, s.threshold_st) & (iteration > 0)
    loss_st = steps.self_training_loss(rt.st_criterion, logits_u, selected, rt.ignore_index)
    terms |= {M.LOSS_FM: loss_fm, M.LOSS_ST: loss_st}
    _check_finite(terms, iteration)
    rt.scaler.scale(loss_sup + s.lambda_fm * loss_fm + s.lambda_st * loss_st).backward()

    D.requires_grad_(True)
    with rt.autocast():
        d_fake_detached, _ = D(fake_input.detach())
    loss_d = steps.discriminator_loss(d_fake_detached, d_real)
    _check_finite({M.LOSS_D: loss_d}, iteration)
    rt.scaler.scale(loss_d).backward()
    # one scale for both networks: a step with an inf/NaN gradient in either is skipped and the scale lowered
    rt.scaler.step(rt.opt_g)
    rt.scaler.step(opt_d)
    rt.scaler.update()
    terms |= {M.LOSS_D: loss_d, M.ST_ACCEPT_RATE: selected.float().mean()}
    return {k: v.detach() for k, v in terms.items()}


def _state(rt: Runtime, iteration: int) -> dict[str, Any]:
    return {"iteration": iteration, "generator": rt.generator.state_dict(), "opt_g": rt.opt_g.state_dict(),
            "discriminator": rt.discriminator.state_dict() if rt.discriminator else None,
            "opt_d": rt.opt_d.state_dict() if rt.opt_d else None, "loss": rt.criterion.state_dict(),
            "scaler": rt.scaler.state_dict(), **ckpt.rng_states(),
            "cuda_rng": torch.cuda.get_rng_state_all() if rt.device.type == "cuda" else None}


def _restore(rt: Runtime, state: Mapping[str, Any], directory: Path) -> int:
    """Every part of `state` into `rt`; a part of another shape (a checkpoint of another config) is a
    CheckpointError naming `directory` and the part."""
    parts: list[tuple[str, Any]] = [("generator", rt.generator), ("opt_g", rt.opt_g), ("loss", rt.criterion)]
    if rt.discriminator is not None:
        parts += [("discriminator", rt.discriminator), ("opt_d", rt.opt_d)]
    if state.get("scaler"):  # empty for a disabled scaler (and absent from checkpoints before fp16 scaling)
        parts.append(("scaler", rt.scaler))
    for key, target in parts:
        if state[key] is None:  # D and its optimiser, saved by a supervised-only trial
            raise ckpt.CheckpointError(f"{directory}: {ckpt.STATE_FILE} does not fit this trial ({key}: the "
                                       "checkpoint has none)")
        ckpt.load_weights(target, state[key], directory, part=key, against="this trial")
    try:
        ckpt.set_rng_states(state)
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise ckpt.CheckpointError(f"{directory}: {ckpt.STATE_FILE} holds no usable RNG state ({e})") from None
    if state.get("cuda_rng") is not None and rt.device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["iteration"])


def run_evaluations(rt: Runtime, iteration: int, workdir: Path, *, final: bool,
                    reporter: Reporter) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Every evaluation set under its own metric prefix; on the final one also the pictures, per-class JSON and
    recall by object size.

    A set on another label set is scored through its declared remap; the remap (and the classes it drops) is then
    recorded as the `remap` entry of that set's metrics JSON."""
    values: dict[str, float] = {}
    reports: dict[str, dict[str, Any]] = {}
    remaps = eval_remaps(rt.cfg)
    for es in rt.cfg.eval:
        info, loader = eval_data(es, synth_images=rt.cfg.dataset.synth_images)
        keep = rt.cfg.schedule.num_samples if final else 0
        remap = remaps[es.metric_key]
        scorer = None if remap is None else RemapScorer(remap, ignore_index=info.labels.ignore_index, device=rt.device)
        objects = ObjectRecall.of(loader.dataset.pairs if final else (), info.labels, remap)  # final: counted
        metrics, samples = evaluate(rt.generator, loader, info, device=rt.device, autocast=rt.autocast(),
                                    channels_last=rt.channels_last, keep=keep, remap=scorer, objects=objects)
        values |= metrics.as_metrics(es.metric_key)
        report = metrics.to_json() | ({"remap": scorer.describe()} if scorer is not None else {})
        reports[es.metric_key] = report
        if final:
            out = workdir / "artifacts"
            for path in (save_json(report, out / f"per_class_{es.metric_key}.json"),
                         save_confusion(metrics, out / f"confusion_{es.metric_key}.png"),
                         save_samples(samples, info, out / f"samples_{es.metric_key}.png"),
                         save_json(objects.to_json(), out / M.small_objects_file(es.metric_key))):
                if path is not None:
                    reporter.artifact(path)
    return values, reports


@contextlib.contextmanager
def _naming_iteration(iteration: int, what: str = "") -> Iterator[None]:
    """A DataError (a file unreadable now that read fine before) names the iteration too. From a loader worker it
    arrives with the worker's traceback in front of the file's own line: that line alone is kept."""
    try:
        yield
    except DataError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        line = (lines[-1] if lines else repr(e)).removeprefix(f"{DataError.__module__}.DataError: ")
        raise BrokenDuringTrainingError(f"{line} (at {what}iteration {iteration})") from e


def train(cfg: TrialConfig, *, reporter: Reporter, workdir: Path, resume: Path | None = None) -> TrialResult:
    """Train one trial; evaluation metrics, artifacts and checkpoints go to `reporter`, files under `workdir`."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    sched = cfg.schedule
    info_dataset = dataset_info(cfg.dataset.name, cfg.dataset.label_set)
    eval_remaps(cfg)  # a missing or mismatched remap fails now, not at the first evaluation
    state = ckpt.load(resume, keys=RESUME_KEYS) if resume is not None else None
    start = int(state["iteration"]) if state else 0
    batches = {"labeled": sched.batch_labeled, "labeled_d": sched.batch_d, "unlabeled": sched.batch_unlabeled}
    # the data first (it draws nothing from the global RNG): a class-weight recipe needs the labeled split's counts
    data = train_data(cfg.dataset, batches=batches, seed=cfg.seed, split_seed=cfg.split_seed,
                      workers=cfg.device.workers, start_iteration=start,
                      pin_memory=resolve_device(cfg.device.device).type == "cuda")
    counts = None
    if start == 0 or needs_class_counts(cfg.loss.options):  # a resumed trial logged its counts when it started
        counts = class_pixel_counts(data.split.labeled, info_dataset.labels)  # the labeled split only
    if start == 0:  # for the report's class shares
        reporter.artifact(save_json(labeled_counts_json(counts, eval_remaps(cfg)),
                                    workdir / "artifacts" / M.LABELED_COUNTS_FILE))
    counts = counts if needs_class_counts(cfg.loss.options) else None  # what a weight recipe reads
    rt, info = build_runtime(cfg, info_dataset.num_classes, info_dataset.labels.ignore_index, class_counts=counts)
    if counts is not None:
        info["loss"]["class_counts"] = counts.to_json()
    info["data"] = {"root": str(data.root), **data.split.fingerprint, "labeled": len(data.split.labeled),
                    "unlabeled": len(data.split.unlabeled)}
    if state and resume is not None:
        _restore(rt, state, resume)  # after the loaders exist: restores the RNG exactly as it was at the save
        log.info("resumed from %s at iteration %d", resume, start)
    rt.generator.train()
    if rt.discriminator is not None:
        rt.discriminator.train()

    t0 = time.perf_counter()
    window: dict[str, Tensor] = {}
    window_start, window_t = start, time.perf_counter()
    last_eval: dict[str, float] = {}
    reports: dict[str, dict[str, Any]] = {}
    last_checkpoint: Path | None = None
    for iteration in range(start, sched.iterations):
        lr = set_learning_rates(rt, iteration)
        with _naming_iteration(iteration + 1):  # a file that broke after the sweep's scan
            terms = train_step(rt, data, iteration)
        for key, value in terms.items():  # summed on the device; read back once per log window
            window[key] = window.get(key, 0) + value
        done = iteration + 1
        if done % sched.log_every == 0 or done == sched.iterations:
            n = done - window_start
            values = {k: float(v) / n for k, v in window.items()}
            values |= {M.LR: lr, M.STEP_TIME: (time.perf_counter() - window_t) / n}
            state_metrics = getattr(rt.criterion, "state_metrics", None)  # loss/weight/<class>, loss/gamma/<class>
            if state_metrics is not None:
                values |= state_metrics(info_dataset.labels.classes)
            reporter.metrics(done, values)
            window, window_start, window_t = {}, done, time.perf_counter()
        final = done == sched.iterations
        paused = time.perf_counter()
        if done % sched.eval_every == 0 or final:
            with _naming_iteration(done, "the evaluation at "):
                last_eval, reports = run_evaluations(rt, done, workdir, final=final, reporter=reporter)
            reporter.metrics(done, last_eval)
        if done % sched.checkpoint_every == 0 or final:
            last_checkpoint = ckpt.save(workdir / "checkpoints" / ckpt.checkpoint_name(done), _state(rt, done),
                                        cfg.to_dict())
            reporter.checkpoint(done, last_checkpoint, last_eval)
            ckpt.prune(workdir / "checkpoints", KEEP_CHECKPOINTS)
        window_t += time.perf_counter() - paused  # time/step_s measures training steps only

    if state and start >= sched.iterations:  # resumed a finished trial: evaluate so the result is complete
        last_eval, reports = run_evaluations(rt, start, workdir, final=True, reporter=reporter)
    result = TrialResult(iterations=sched.iterations, wall_s=time.perf_counter() - t0, metrics=last_eval,
                         evaluations=reports, checkpoint=last_checkpoint, info=info)
    metrics_file = save_json({"config": cfg.to_dict(), "info": info, "metrics": last_eval, "evaluations": reports,
                              "iterations": sched.iterations}, workdir / "metrics.json")
    reporter.artifact(metrics_file)
    reporter.result(result)
    return result
