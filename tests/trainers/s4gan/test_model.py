"""The DeepLabv2 generator: shapes, the reference's fidelity switches, SGD groups, offline weight loading."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet50, resnet101

from trainers.config import ModelConfig
from trainers.s4gan.model import Generator, build_generator, load_pretrained

NUM_CLASSES = 5


def tiny(**overrides: object) -> ModelConfig:
    fields: dict[str, object] = {"backbone": "tiny", "tiny_width": 8, "aspp_dilations": (1, 2, 3, 4)}
    return ModelConfig(**{**fields, **overrides})  # type: ignore[arg-type]


def batch_norms(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.fixture
def r50() -> Generator:
    return build_generator(ModelConfig(backbone="resnet50"), NUM_CLASSES)


# --- shapes and layout --------------------------------------------------------------------------------------


def test_tiny_gives_stride_8_logits_and_trains() -> None:
    model = build_generator(tiny(), NUM_CLASSES)
    out = model(torch.randn(2, 3, 64, 128))
    assert out.shape == (2, NUM_CLASSES, 8, 16)
    out.square().mean().backward()
    assert model.classifier.branches[0].weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0


def test_resnet50_gives_stride_8_logits_with_the_ceil_mode_stem(r50: Generator) -> None:
    with torch.no_grad():
        out = r50.eval()(torch.randn(1, 3, 64, 128))
    # 64x128 -> conv1 32x64 -> ceil-mode pool 17x33 -> layer2 9x17 (a floor-mode pool would give 8x16)
    assert out.shape == (1, NUM_CLASSES, 9, 17)
    assert r50.backbone.out_channels == 2048


def test_resnet50_keeps_torchvision_names_without_fc(r50: Generator) -> None:
    expected = {k for k in resnet50(weights=None).state_dict() if not k.startswith("fc.")}
    assert set(r50.backbone.state_dict()) == expected


@pytest.mark.slow
def test_resnet101_maps_256x512_to_33x65() -> None:
    model = build_generator(ModelConfig(), 19).eval()  # the paper's defaults
    torchvision_names = {k for k in resnet101(weights=None).state_dict() if not k.startswith("fc.")}
    assert set(model.backbone.state_dict()) == torchvision_names
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 512))
    assert out.shape == (1, 19, 33, 65)


def test_stride_in_1x1_moves_the_stride_of_the_strided_bottleneck() -> None:
    caffe = build_generator(ModelConfig(backbone="resnet50", stride_in_1x1=True), NUM_CLASSES).backbone
    tv = build_generator(ModelConfig(backbone="resnet50", stride_in_1x1=False), NUM_CLASSES).backbone
    assert (caffe.layer2[0].conv1.stride, caffe.layer2[0].conv2.stride) == ((2, 2), (1, 1))
    assert (tv.layer2[0].conv1.stride, tv.layer2[0].conv2.stride) == ((1, 1), (2, 2))
    for backbone, conv in ((caffe, "conv1"), (tv, "conv2")):  # the only strided bottleneck at stride 8
        strided = [n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d) and m.stride != (1, 1)]
        assert strided == ["conv1", f"layer2.0.{conv}", "layer2.0.downsample.0"]


def test_dilated_layers_use_one_dilation_in_every_block(r50: Generator) -> None:
    for layer, d in ((r50.backbone.layer3, 2), (r50.backbone.layer4, 4)):
        assert {(b.conv2.dilation, b.conv2.padding) for b in layer} == {((d, d), (d, d))}


def test_convs_start_from_the_reference_init(r50: Generator) -> None:
    weights = torch.cat([m.weight.flatten() for m in r50.modules() if isinstance(m, nn.Conv2d)])
    assert weights.std().item() == pytest.approx(0.01, rel=0.02)


# --- ASPP ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("effective", "changes"), [(2, False), (4, True)])
def test_aspp_sums_only_the_effective_branches(effective: int, changes: bool) -> None:
    model = build_generator(tiny(aspp_branches_effective=effective), NUM_CLASSES).eval()
    assert len(model.classifier.branches) == 4  # all branches exist, as in the reference's checkpoints
    x = torch.randn(2, 3, 32, 64)
    with torch.no_grad():
        before = model(x)
        for branch in model.classifier.branches[2:]:
            branch.weight.zero_()
            branch.bias.zero_()
        after = model(x)
    assert (not torch.allclose(before, after)) is changes


# --- BatchNorm modes and SGD groups -------------------------------------------------------------------------


def test_frozen_affine_bn_is_left_out_of_the_sgd_groups() -> None:
    model = build_generator(tiny(), NUM_CLASSES)
    bn_params = {id(p) for bn in batch_norms(model) for p in (bn.weight, bn.bias)}
    assert bn_params and not any(p.requires_grad for p in model.parameters() if id(p) in bn_params)
    grouped = {id(p) for g in model.param_groups(1.0) for p in g["params"]}
    assert not grouped & bn_params


@pytest.mark.parametrize(("bn_mode", "stats_move"),
                         [("train_frozen_affine", True), ("eval_frozen", False), ("trainable", True)])
def test_bn_running_stats_follow_bn_mode(bn_mode: str, stats_move: bool) -> None:
    model = build_generator(tiny(bn_mode=bn_mode), NUM_CLASSES)
    model.eval().train()  # the trainer toggles modes around evaluation
    assert model.training
    before = [bn.running_mean.clone() for bn in batch_norms(model)]
    model(torch.randn(2, 3, 32, 64) * 3 + 1)
    moved = [not torch.equal(b, bn.running_mean) for b, bn in zip(before, batch_norms(model), strict=True)]
    assert all(moved) if stats_move else not any(moved)
    assert all(bn.training for bn in batch_norms(model)) is stats_move


def test_trainable_bn_joins_the_backbone_group() -> None:
    model = build_generator(tiny(bn_mode="trainable"), NUM_CLASSES)
    backbone = {id(p) for p in model.param_groups(1.0)[0]["params"]}
    assert all(id(bn.weight) in backbone and id(bn.bias) in backbone for bn in batch_norms(model))


@pytest.mark.parametrize("bn_mode", ["train_frozen_affine", "trainable"])
def test_param_groups_put_every_trainable_parameter_in_exactly_one_group(bn_mode: str) -> None:
    model = build_generator(tiny(bn_mode=bn_mode, classifier_lr_mult=10.0), NUM_CLASSES)
    backbone, classifier = model.param_groups(2.5e-4)
    assert (backbone["lr"], backbone["lr_mult"]) == (2.5e-4, 1.0)
    assert (classifier["lr"], classifier["lr_mult"]) == (pytest.approx(2.5e-3), 10.0)
    assert {id(p) for p in classifier["params"]} == {id(p) for p in model.classifier.parameters()}
    ids = [id(p) for g in (backbone, classifier) for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    torch.optim.SGD([backbone, classifier], lr=2.5e-4, momentum=0.9)  # the groups are valid SGD input


# --- pretrained weights -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tv_state() -> dict[str, torch.Tensor]:
    """A torchvision ResNet-50 state dict (random weights: nothing is downloaded), fc included."""
    torch.manual_seed(0)
    return resnet50(weights=None).state_dict()


def save(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(state, path)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def counted(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors load_pretrained counts: all but `fc` and BN's `num_batches_tracked`."""
    return {k: v for k, v in state.items() if not k.startswith("fc.") and "num_batches" not in k}


def test_load_pretrained_copies_every_backbone_tensor(tv_state, r50, tmp_path: Path, caplog) -> None:
    raw = save(tv_state, tmp_path / "weights.pth")
    path = raw.rename(tmp_path / f"resnet50-{sha256(raw)[:8]}.pth")  # a correct torchvision-style hash prefix
    with caplog.at_level(logging.INFO, logger="trainers.s4gan.model"):
        report = load_pretrained(r50, path)
    expected = counted(tv_state)
    assert (report.loaded, report.missing, report.skipped) == (len(expected), 0, 2)  # fc.weight, fc.bias
    assert report.backbone_total == len(expected) and report.fraction == 1.0
    assert report.sha256 == sha256(path) and report.path == str(path)
    mine = r50.backbone.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in expected.items())
    assert f"{len(expected)}/{len(expected)} backbone tensors" in caplog.text


def test_load_pretrained_refuses_a_hash_prefix_that_does_not_match(tv_state, r50, tmp_path: Path) -> None:
    path = save(tv_state, tmp_path / "resnet50-0123abcd.pth")
    assert not sha256(path).startswith("0123abcd")
    with pytest.raises(ValueError, match="hash prefix 0123abcd does not match"):
        load_pretrained(r50, path)


def test_load_pretrained_refuses_a_file_missing_most_keys(tv_state, r50, tmp_path: Path) -> None:
    partial = {k: v for k, v in tv_state.items() if k.startswith(("conv1.", "bn1.", "layer1."))}
    path = save(partial, tmp_path / "partial.pth")
    before = {k: v.clone() for k, v in r50.backbone.state_dict().items()}
    pattern = r"partial\.pth: only \d+/\d+ \(\d+\.\d%\) backbone tensors .*first missing: layer2\.0"
    with pytest.raises(ValueError, match=pattern):
        load_pretrained(r50, path)
    assert all(torch.equal(before[k], v) for k, v in r50.backbone.state_dict().items())  # left untouched


def test_load_pretrained_accepts_module_and_backbone_prefixes(tv_state, tmp_path: Path) -> None:
    source = build_generator(ModelConfig(backbone="resnet50"), NUM_CLASSES)
    source.backbone.load_state_dict({k: v for k, v in tv_state.items() if not k.startswith("fc.")})
    # a DataParallel-style file of a whole Generator: `module.backbone.*` loads, `module.classifier.*` is not
    path = save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "dp.pth")
    model = build_generator(ModelConfig(backbone="resnet50"), NUM_CLASSES)
    report = load_pretrained(model, path)
    assert report.fraction == 1.0 and report.skipped == len(source.classifier.state_dict())
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in counted(tv_state).items())


def test_load_pretrained_never_downloads(r50: Generator, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="resnet101-5d3b4d8f.pth: no such file"):
        load_pretrained(r50, tmp_path / "resnet101-5d3b4d8f.pth")
