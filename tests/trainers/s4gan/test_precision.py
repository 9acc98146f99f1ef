"""bf16 autocast computes the same s4GAN step as fp32, within stated tolerances (losses stay fp32 by design)."""

import pytest
import torch
from torch._dynamo.utils import counters

from trainers import metric_names as M
from trainers.config import TrialConfig
from trainers.data.pipeline import train_data
from trainers.s4gan import train as train_module
from trainers.s4gan.discriminator import Discriminator
from trainers.s4gan.train import build_runtime, resolve_precision, train_step


def run_one_step(precision: str = "fp32", channels_last: bool = False, compile: bool = False, scaler=None):
    """One micro train_step from a seeded init: (runtime after the step, loss terms, G's update, runtime info)."""
    torch.manual_seed(0)
    cfg = TrialConfig.from_dict({"preset": "micro", "device": {"device": "cpu"},
                                 "precision": {"precision": precision, "channels_last": channels_last,
                                               "compile": compile}})
    rt, info = build_runtime(cfg, 19, 255)
    if scaler is not None:
        rt.scaler = scaler
    before = {k: v.detach().clone() for k, v in rt.generator.named_parameters()}
    s = cfg.schedule
    data = train_data(cfg.dataset, batches={"labeled": s.batch_labeled, "labeled_d": s.batch_d,
                                            "unlabeled": s.batch_unlabeled}, seed=0, split_seed=0, workers=0)
    torch.manual_seed(1)  # same dropout masks in D for both precisions
    terms = train_step(rt, data, 1)
    delta = torch.cat([(p.detach() - before[k]).flatten() for k, p in rt.generator.named_parameters()])
    return rt, terms, delta, info


def one_step(precision: str, channels_last: bool = False, compile: bool = False):
    return run_one_step(precision, channels_last, compile)[1:]


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_bf16_step_matches_fp32(channels_last):
    ref_terms, ref_delta, ref_info = one_step("fp32")
    terms, delta, info = one_step("bf16", channels_last)
    assert ref_info["precision"] == "float32" and info["precision"] == "bfloat16"
    # the supervised loss is computed in fp32 from bf16 logits: agreement to about bf16's 3 significant digits
    assert terms[M.LOSS_SUP].dtype == torch.float32
    assert terms[M.LOSS_SUP].item() == pytest.approx(ref_terms[M.LOSS_SUP].item(), rel=2e-2)
    assert terms[M.LOSS_D].item() == pytest.approx(ref_terms[M.LOSS_D].item(), rel=2e-2)
    # the generator's update (SGD's first step is -lr * (grad + wd * w)) points the same way
    cosine = torch.nn.functional.cosine_similarity(delta, ref_delta, dim=0).item()
    assert cosine > 0.98, cosine
    assert delta.norm().item() == pytest.approx(ref_delta.norm().item(), rel=5e-2)


def test_a_channels_last_step_matches_the_contiguous_one_and_feeds_d_channels_last(monkeypatch):
    """channels_last changes memory layout only: same fp32 step up to summation order; D's inputs are built
    channels_last (no layout conversion at each of its three passes)."""
    layouts = []
    original = Discriminator.forward

    def spy(self, x):
        layouts.append(x.is_contiguous(memory_format=torch.channels_last))
        return original(self, x)

    ref_terms, ref_delta, _ = one_step("fp32", channels_last=False)
    monkeypatch.setattr(Discriminator, "forward", spy)
    terms, delta, info = one_step("fp32", channels_last=True)
    assert info["channels_last"] is True and layouts == [True, True, True]
    for key in (M.LOSS_SUP, M.LOSS_FM, M.LOSS_D):
        assert terms[key].item() == pytest.approx(ref_terms[key].item(), rel=1e-5), key
    assert torch.allclose(delta, ref_delta, rtol=1e-3, atol=1e-7)


def test_auto_precision_is_explicit_about_what_it_picked():
    dtype, channels_last = resolve_precision("auto", False, torch.device("cpu"))
    assert dtype in (None, torch.bfloat16) and channels_last == (dtype is not None)
    with pytest.raises(ValueError, match="fp16' needs CUDA"):
        resolve_precision("fp16", False, torch.device("cpu"))


@pytest.mark.slow
def test_a_compiled_step_matches_eager():
    ref_terms, ref_delta, _ = one_step("fp32")
    torch._dynamo.reset()
    counters.clear()
    terms, delta, info = one_step("fp32", compile=True)
    assert info["compile"] is True
    assert counters["stats"]["unique_graphs"] >= 2 and counters["frames"]["ok"] >= 2  # G and D really compiled
    assert terms[M.LOSS_SUP].item() == pytest.approx(ref_terms[M.LOSS_SUP].item(), rel=1e-4)
    assert terms[M.LOSS_D].item() == pytest.approx(ref_terms[M.LOSS_D].item(), rel=1e-4)
    assert torch.allclose(delta, ref_delta, rtol=1e-3, atol=1e-6)


def test_a_failing_compile_backend_falls_back_to_eager(monkeypatch, caplog):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(train_module, "COMPILE_BACKEND", broken_backend)
    torch._dynamo.reset()
    ref_terms, ref_delta, _ = one_step("fp32")
    terms, delta, info = one_step("fp32", compile=True)
    assert info["compile"] is True
    assert terms[M.LOSS_SUP].item() == pytest.approx(ref_terms[M.LOSS_SUP].item(), rel=1e-6)
    assert torch.allclose(delta, ref_delta, rtol=1e-5, atol=1e-7)
    assert "no compiler here" in caplog.text  # dynamo says why it fell back


def test_the_fp16_loss_scaler_is_wired_into_both_updates():
    """fp16 runs on CUDA only; the scaler's plumbing is the same on CPU: a power-of-two scale leaves the step exact,
    and a scale that overflows G's gradients skips G's step and lowers the scale."""
    plain = run_one_step()[0]
    assert not plain.scaler.is_enabled()  # fp32: no scaling
    scaled = run_one_step(scaler=torch.amp.GradScaler("cpu", init_scale=2.0**10))[0]
    for net in ("generator", "discriminator"):
        for (name, a), b in zip(getattr(plain, net).named_parameters(), getattr(scaled, net).parameters(),
                                strict=True):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), (net, name)
    assert scaled.scaler.get_scale() == 2.0**10
    torch.manual_seed(0)
    untouched = build_runtime(TrialConfig.from_dict({"preset": "micro", "device": {"device": "cpu"}}), 19, 255)[0]
    overflow = run_one_step(scaler=torch.amp.GradScaler("cpu", init_scale=3e38))[0]
    for a, b in zip(untouched.generator.parameters(), overflow.generator.parameters(), strict=True):
        assert torch.equal(a, b)  # inf gradients: G's step skipped (each optimiser checks its own gradients)
    assert overflow.scaler.get_scale() < 3e38
