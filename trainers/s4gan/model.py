"""The s4GAN generator: DeepLabv2 (dilated ResNet, output stride 8) with the ASPP classifier (s4gan.md §1.2).

Defaults reproduce the reference: Caffe-style strides on the first 1x1 conv, a ceil-mode stem pool
(256x512 -> 33x65), N(0, 0.01) conv init, BatchNorm with frozen affine parameters but batch statistics,
and only the first two ASPP branches summed. Each quirk is a `ModelConfig` field. `forward` returns
logits at stride 8; the trainer upsamples them.

Pretrained weights come only from a local file (`load_pretrained`); nothing here downloads.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import ResNet, resnet50, resnet101
from torchvision.models.resnet import Bottleneck

from trainers.config import BNMode, ModelConfig
from trainers.s4gan.checkpoint import CheckpointError, read_tensors

logger = logging.getLogger(__name__)

MIN_LOADED_FRACTION = 0.95
_HASH_IN_NAME = re.compile(r".+-([0-9a-f]{8,64})\.pth?")  # torchvision: `resnet101-5d3b4d8f.pth`


# --- backbones ----------------------------------------------------------------------------------------------


class ResNetBackbone(nn.Module):
    """torchvision's ResNet, dilated to output stride 8, without `avgpool`/`fc`; same parameter names."""

    def __init__(self, make_resnet: Callable[..., ResNet], *, stride_in_1x1: bool) -> None:
        super().__init__()
        net = make_resnet(weights=None, replace_stride_with_dilation=[False, True, True])
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)  # reference stem
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = net.fc.in_features
        for layer, dilation in ((self.layer3, 2), (self.layer4, 4)):
            # torchvision dilates block 0 of a dilated layer by the previous rate; the reference does not
            layer[0].conv2.dilation = layer[0].conv2.padding = (dilation, dilation)
        if stride_in_1x1:
            for block in self.modules():
                if isinstance(block, Bottleneck) and block.conv2.stride != (1, 1):
                    block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TinyBlock(nn.Module):
    """Two 3x3 conv-BN pairs with a residual shortcut (1x1 conv + BN when the shape changes)."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TinyBackbone(nn.Module):
    """A small dilated CNN with the ResNet backbone's interface, for CPU tests; output stride 8."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        self.layer1 = TinyBlock(width, width, stride=2)
        self.layer2 = TinyBlock(width, 2 * width, stride=2)
        self.layer3 = TinyBlock(2 * width, 4 * width, dilation=2)
        self.layer4 = TinyBlock(4 * width, 4 * width, dilation=4)
        self.out_channels = 4 * width

    def forward(self, x: Tensor) -> Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


BACKBONES: dict[str, Callable[[ModelConfig], ResNetBackbone | TinyBackbone]] = {
    "resnet101": lambda cfg: ResNetBackbone(resnet101, stride_in_1x1=cfg.stride_in_1x1),
    "resnet50": lambda cfg: ResNetBackbone(resnet50, stride_in_1x1=cfg.stride_in_1x1),
    "tiny": lambda cfg: TinyBackbone(cfg.tiny_width),
}


# --- classifier and generator -------------------------------------------------------------------------------


class ASPP(nn.Module):
    """DeepLabv2's classifier: one dilated 3x3 conv per rate, outputs summed.

    Only the first `effective` branches are summed; the rest exist as parameters (same checkpoint keys as the
    reference, whose early `return` inside the loop sums just the first two of four).
    """

    def __init__(self, in_channels: int, num_classes: int, dilations: tuple[int, ...], *,
                 effective: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True) for d in dilations)
        self.effective = effective

    def forward(self, x: Tensor) -> Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:self.effective]:
            out = out + branch(x)
        return out


class Generator(nn.Module):
    """Backbone + ASPP; `forward` gives logits at the backbone's output stride (8), not upsampled."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module, *, bn_mode: BNMode,
                 classifier_lr_mult: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.bn_mode = bn_mode
        self.classifier_lr_mult = classifier_lr_mult
        if bn_mode != "trainable":
            for bn in self._batch_norms():
                bn.weight.requires_grad_(False)
                bn.bias.requires_grad_(False)
        self.train()

    def _batch_norms(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.backbone(x))

    def train(self, mode: bool = True) -> Generator:
        super().train(mode)
        if self.bn_mode == "eval_frozen":  # running statistics stay those of the (pretrained) init
            for bn in self._batch_norms():
                bn.eval()
        return self

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """SGD groups: backbone at `lr`, classifier at `lr * classifier_lr_mult`; frozen parameters left out.

        `lr_mult` lets the poly schedule set `group["lr"] = base_lr * poly * group["lr_mult"]`.
        """
        groups = []
        for name, module, mult in (("backbone", self.backbone, 1.0),
                                   ("classifier", self.classifier, self.classifier_lr_mult)):
            params = [p for p in module.parameters() if p.requires_grad]
            groups.append({"name": name, "params": params, "lr": lr * mult, "lr_mult": mult})
        return groups


def init_reference(module: nn.Module) -> None:
    """The reference init: conv weights N(0, 0.01), BN weight 1, bias 0; conv biases keep PyTorch's init."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.01)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_generator(cfg: ModelConfig, num_classes: int) -> Generator:
    """DeepLabv2 as `cfg` describes, with the reference init.

    `cfg.pretrained` is not read here: the caller passes it to `load_pretrained` and records the report.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes: must be >= 1, but got {num_classes}")
    backbone = BACKBONES[cfg.backbone](cfg)
    classifier = ASPP(backbone.out_channels, num_classes, cfg.aspp_dilations,
                      effective=cfg.aspp_branches_effective)
    model = Generator(backbone, classifier, bn_mode=cfg.bn_mode, classifier_lr_mult=cfg.classifier_lr_mult)
    init_reference(model)
    return model


# --- pretrained weights -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadReport:
    """What `load_pretrained` did; `path` and `sha256` belong in the run's metadata."""

    path: str
    sha256: str
    loaded: int  # backbone tensors copied
    missing: int  # backbone tensors the file did not provide (with a matching shape)
    skipped: int  # file tensors not used: unknown name, or known name with another shape
    backbone_total: int

    @property
    def fraction(self) -> float:
        return self.loaded / self.backbone_total if self.backbone_total else 0.0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _backbone_name(key: str) -> str:
    key = key.removeprefix("module.")
    return key.removeprefix("backbone.")


def load_pretrained(model: Generator, path: str | Path) -> LoadReport:
    """Copy the backbone tensors of a local state dict into `model` where name and shape match.

    Keys may be torchvision's (`layer1.0.conv1.weight`) or carry `module.` and/or `backbone.` prefixes.
    BN's `num_batches_tracked` counters are bookkeeping (absent from older torchvision files): neither loaded
    nor counted. Raises, leaving `model` untouched, when the file name's hash prefix disagrees with its
    SHA-256 or when fewer than 95% of the backbone tensors would load.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; pretrained weights are never downloaded")
    sha256 = file_sha256(path)
    named = _HASH_IN_NAME.fullmatch(path.name)
    if named and not sha256.startswith(named.group(1)):
        raise CheckpointError(f"{path}: the file name's hash prefix {named.group(1)} does not match its SHA-256 "
                         f"{sha256[:len(named.group(1))]}...: the file may be corrupt or truncated "
                         f"(if that suffix is not a SHA-256 prefix, rename the file)")
    state = read_tensors(path, what="pretrained weights")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), but got {type(state).__name__}")

    target = {k: v for k, v in model.backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    matched: dict[str, Tensor] = {}
    skipped = 0
    for key, tensor in state.items():
        name = _backbone_name(key)
        if name.endswith("num_batches_tracked"):
            continue
        if name in target and isinstance(tensor, Tensor) and tensor.shape == target[name].shape:
            matched[name] = tensor
        else:
            skipped += 1
    missing = [k for k in target if k not in matched]
    report = LoadReport(path=str(path), sha256=sha256, loaded=len(matched), missing=len(missing),
                        skipped=skipped, backbone_total=len(target))
    if report.fraction < MIN_LOADED_FRACTION:
        raise CheckpointError(f"{path}: only {report.loaded}/{report.backbone_total} ({report.fraction:.1%}) "
                         f"backbone tensors match by name and shape, need >= {MIN_LOADED_FRACTION:.0%}; "
                         f"first missing: {', '.join(missing[:5])}")
    with torch.no_grad():
        for name, tensor in matched.items():
            target[name].copy_(tensor)
    logger.info("loaded %s (sha256 %s): %d/%d backbone tensors, %d missing, %d skipped", path, sha256[:12],
                report.loaded, report.backbone_total, report.missing, report.skipped)
    return report
