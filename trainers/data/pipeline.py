"""From files to batches: labeled/unlabeled split, joint transforms, three independent infinite samplers.

Determinism: every random choice of a training sample (crop offset, flip) comes from a generator seeded by
(trial seed, stream, draw number), and every sampler's order from (trial seed, stream, epoch). So a batch depends
only on the iteration it belongs to: the same with 0 or 8 loader workers, and the same after a resume, which restarts
each sampler at the draw it had reached.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import InterpolationMode

from trainers.config import DatasetConfig, EvalSetConfig
from trainers.data.cityscapes import Pair, file_list_hash, read_image, read_label
from trainers.data.roots import data_identity, resolve_root, split_pairs
from trainers.data.tables import DataError, DatasetInfo, dataset_info

STREAMS = {"labeled": 1, "labeled_d": 2, "unlabeled": 3}


def _seed(*parts: int) -> int:
    digest = hashlib.sha256(b"/".join(str(p).encode() for p in parts)).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class Split:
    labeled: tuple[Pair, ...]
    unlabeled: tuple[Pair, ...]
    fingerprint: dict[str, str]


def labeled_split(pairs: list[Pair], *, ratio: float, split_seed: int, root: Path) -> Split:
    """Labeled = first int(ratio * N) of a split_seed permutation of the sorted files; unlabeled = the rest.

    With every image labeled (ratio 1) the unlabeled stream draws from the whole set, as the reference's "full" mode.
    """
    n = len(pairs)
    k = int(ratio * n)
    if k < 1:
        raise DataError(f"{root}: labeled_ratio {ratio} of {n} training images leaves no labeled image")
    order = np.random.default_rng(split_seed).permutation(n)
    labeled = tuple(pairs[i] for i in sorted(order[:k]))
    unlabeled = tuple(pairs[i] for i in sorted(order[k:])) or tuple(pairs)
    split_hash = hashlib.sha256("\n".join(p.stem for p in labeled).encode()).hexdigest()[:16]
    return Split(labeled, unlabeled, {"files": file_list_hash(pairs, root), "split": split_hash})


class InfiniteSampler(Sampler[tuple[int, int]]):
    """Endless reshuffled passes over range(n); yields (index, draw number). `start` resumes mid-stream."""

    def __init__(self, n: int, *, seed: int, stream: int, start: int = 0) -> None:
        self.n, self.seed, self.stream, self.start = n, seed, stream, start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        draw = self.start
        while True:
            epoch, pos = divmod(draw, self.n)
            generator = torch.Generator().manual_seed(_seed(self.seed, self.stream, epoch))
            order = torch.randperm(self.n, generator=generator)
            for i in order[pos:].tolist():
                yield i, draw
                draw += 1


class ScaledCache:
    """Decoded, rescaled uint8 images and labels kept in memory up to a byte budget.

    The rescale is the same at every draw, so a small dataset (the generated one, a 1/8 labeled split at low
    resolution) is decoded once instead of once per sample; past the budget images are simply decoded again.
    Each loader worker process holds its own copy.
    """

    def __init__(self, budget_mb: int) -> None:
        self.budget = budget_mb * 2**20
        self.used = 0
        self.items: dict[Path, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, pair: Pair, info: DatasetInfo, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        hit = self.items.get(pair.image)
        if hit is not None:
            return hit
        image = TF.pil_to_tensor(read_image(pair.image))
        label = torch.from_numpy(read_label(pair, info.labels)).unsqueeze(0)
        if label.shape[-2:] != image.shape[-2:]:
            raise DataError(f"{pair.label}: label is {label.shape[-1]}x{label.shape[-2]} but image {pair.image.name} "
                            f"is {image.shape[-1]}x{image.shape[-2]}")
        h, w = info.base_size or image.shape[-2:]  # IDD: every image to 720x1280 first, then the scale
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        image = TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        label = TF.resize(label, size, interpolation=InterpolationMode.NEAREST)
        cost = image.numel() + label.numel()
        if self.used + cost <= self.budget:
            self.items[pair.image] = (image, label)
            self.used += cost
        return image, label


class TrainSet(Dataset):
    """Training samples: resize by `scale`, random crop (padded with ignore if needed), random horizontal flip."""

    def __init__(self, pairs: tuple[Pair, ...], info: DatasetInfo, cfg: DatasetConfig, *, seed: int, stream: int,
                 cache: ScaledCache | None = None):
        self.pairs, self.info, self.cfg, self.seed, self.stream = pairs, info, cfg, seed, stream
        self.cache = cache or ScaledCache(0)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, draw = key
        rng = np.random.default_rng(_seed(self.seed, self.stream, draw, 0xA06))
        image, label = self.cache.get(self.pairs[index], self.info, self.cfg.scale)
        image, label = _random_crop(image, label, self.cfg.crop_size, rng, self.info.labels.ignore_index)
        if self.cfg.flip and rng.random() < 0.5:
            image, label = TF.horizontal_flip(image), TF.horizontal_flip(label)
        return normalise(image, self.info), label[0].long()


def _random_crop(image: torch.Tensor, label: torch.Tensor, crop: tuple[int, int], rng: np.random.Generator,
                 ignore: int) -> tuple[torch.Tensor, torch.Tensor]:
    ch, cw = crop
    h, w = image.shape[-2:]
    if h < ch or w < cw:  # pad bottom/right: image with 0, label with ignore (never counted as a class)
        pad = [0, 0, max(0, cw - w), max(0, ch - h)]
        image, label = TF.pad(image, pad, fill=0), TF.pad(label, pad, fill=ignore)
        h, w = image.shape[-2:]
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return TF.crop(image, top, left, ch, cw), TF.crop(label, top, left, ch, cw)


def normalise(image_uint8: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    image = TF.to_dtype(image_uint8, torch.float32, scale=True)
    return TF.normalize(image, list(info.mean), list(info.std))


class EvalSet(Dataset):
    """Evaluation samples at a fixed size (image bilinear, label nearest), in sorted file order."""

    def __init__(self, pairs: list[Pair], info: DatasetInfo, size: tuple[int, int]) -> None:
        self.pairs, self.info, self.size = pairs, info, list(size)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[index]
        image = TF.pil_to_tensor(read_image(pair.image))
        label = torch.from_numpy(read_label(pair, self.info.labels)).unsqueeze(0)
        image = TF.resize(image, self.size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        label = TF.resize(label, self.size, interpolation=InterpolationMode.NEAREST)
        return normalise(image, self.info), label[0].long()


@dataclass
class TrainData:
    info: DatasetInfo
    root: Path
    split: Split
    labeled: Iterator[tuple[torch.Tensor, torch.Tensor]]
    labeled_d: Iterator[tuple[torch.Tensor, torch.Tensor]]
    unlabeled: Iterator[tuple[torch.Tensor, torch.Tensor]]


def train_data(cfg: DatasetConfig, *, batches: dict[str, int], seed: int, split_seed: int, workers: int,
               start_iteration: int = 0, pin_memory: bool = False) -> TrainData:
    """Three independent infinite loaders (labeled, labeled-for-D, unlabeled), positioned at `start_iteration`.

    The split's fingerprint (file list hash, split hash, label set, IDD rasteriser version) identifies the data."""
    info = dataset_info(cfg.name, cfg.label_set)
    root = resolve_root(cfg.name, cfg.root, synth_images=cfg.synth_images)
    split = labeled_split(split_pairs(info, root, "train"), ratio=cfg.labeled_ratio, split_seed=split_seed, root=root)
    split = dataclasses.replace(split, fingerprint={**split.fingerprint, **data_identity(info)})
    sources = {"labeled": split.labeled, "labeled_d": split.labeled, "unlabeled": split.unlabeled}
    cache = ScaledCache(cfg.cache_mb)  # shared by the three streams (with workers, each worker has a copy)

    def loader(stream: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        pairs, batch = sources[stream], batches[stream]
        sampler = InfiniteSampler(len(pairs), seed=seed, stream=STREAMS[stream], start=start_iteration * batch)
        dataset = TrainSet(pairs, info, cfg, seed=seed, stream=STREAMS[stream], cache=cache)
        return iter(DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                               pin_memory=pin_memory, persistent_workers=workers > 0, drop_last=True,
                               generator=torch.Generator().manual_seed(seed)))  # not the global RNG: resume-exact

    return TrainData(info, root, split, loader("labeled"), loader("labeled_d"), loader("unlabeled"))


def eval_data(cfg: EvalSetConfig, *, synth_images: int, workers: int = 0) -> tuple[DatasetInfo, DataLoader]:
    info = dataset_info(cfg.name, cfg.label_set)
    root = resolve_root(cfg.name, cfg.root, synth_images=synth_images)
    pairs = split_pairs(info, root, cfg.split)
    if cfg.max_images is not None:
        pairs = pairs[: cfg.max_images]
    return info, DataLoader(EvalSet(pairs, info, cfg.size), batch_size=1, num_workers=workers,
                            generator=torch.Generator())  # creating the iterator must not draw from the global RNG
