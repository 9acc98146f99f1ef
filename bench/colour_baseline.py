"""How much of the generated scenes can colour alone segment? A 1x1 convolution on RGB versus the majority class.

Run: `python bench/colour_baseline.py [--data DIR] [--seed S] [--steps N]`. Without `--data` it generates the
`tiny` preset's set (768 train + 192 val, seed 0, 96x192) into a temporary directory.

The project requires the tiny s4GAN model to beat this per-pixel linear classifier by at least 15 mIoU points: if
colour alone could segment the scenes, the benchmark would measure nothing about shape and context. The classifier
is a 1x1 conv (a linear softmax on each pixel's normalised RGB) trained with cross entropy on pixels sampled from the
train split at the tiny preset's evaluation size (96x192), ignore pixels excluded; it is evaluated on the val split
at the same size. mIoU is the mean over classes whose union (GT or prediction) is non-empty (DESIGN.md "The seams").
Images and labels are read through the Cityscapes reader, exactly as a trial reads them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from trainers.data.cityscapes import find_pairs, read_image, read_label
from trainers.data.labels import CITYSCAPES
from trainers.data.roots import synth_val_images
from trainers.data.synth import SIZE, generate
from trainers.data.tables import IMAGENET_MEAN, IMAGENET_STD
from trainers.metrics import iou_from_confusion
from trainers.presets import preset_dict

EVAL_SIZE = tuple(preset_dict("tiny")["eval"][0]["eval_size"])  # where the tiny model is scored
NUM_CLASSES, IGNORE = len(CITYSCAPES.classes), CITYSCAPES.ignore_index


def load_split(root: Path, split: str, size: tuple[int, int] = EVAL_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(normalised RGB [N, H, W, 3] float32, train ids [N, H, W] uint8) at `size`."""
    h, w = size
    images, labels = [], []
    for pair in find_pairs(root, split):
        rgb = np.asarray(read_image(pair.image).resize((w, h), Image.Resampling.BILINEAR), np.float32) / 255
        images.append((rgb - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32))
        label = Image.fromarray(read_label(pair, CITYSCAPES)).resize((w, h), Image.Resampling.NEAREST)
        labels.append(np.asarray(label))
    return np.stack(images), np.stack(labels)


def train_colour_classifier(
    images: np.ndarray, labels: np.ndarray, *, seed: int, steps: int = 400, pixels: int = 200_000
) -> nn.Conv2d:
    """Fit a 1x1 conv to `pixels` valid pixels sampled from the train split, full batch, Adam."""
    valid = np.flatnonzero(labels.ravel() != IGNORE)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(valid, size=min(pixels, valid.size), replace=False)
    x = torch.from_numpy(images.reshape(-1, 3)[chosen])
    y = torch.from_numpy(labels.ravel()[chosen].astype(np.int64))
    torch.manual_seed(seed)
    model = nn.Conv2d(3, NUM_CLASSES, kernel_size=1)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        optimiser.zero_grad()
        # a 1x1 conv on a pixel list is the same linear map: weight [C, 3, 1, 1] viewed as [C, 3]
        logits = x @ model.weight.view(NUM_CLASSES, 3).T + model.bias
        nn.functional.cross_entropy(logits, y).backward()
        optimiser.step()
    return model


def confusion_matrix(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[C, C] counts, rows = ground truth, cols = prediction; ignore pixels dropped."""
    keep = target != IGNORE
    index = target[keep].astype(np.int64) * NUM_CLASSES + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def predict(model: nn.Conv2d, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2))
    return logits.argmax(1).numpy()


def miou(confusion: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(mIoU over classes with a non-empty union, IoU per class, which classes count)."""
    iou, present = iou_from_confusion(confusion)
    return float(iou[present].mean()) if present.any() else 0.0, iou, present


def baselines(root: Path, *, seed: int = 0, steps: int = 400) -> dict[str, np.ndarray]:
    """Val confusion matrices of the colour classifier and of always predicting the train split's majority class."""
    train_x, train_y = load_split(root, "train")
    val_x, val_y = load_split(root, "val")
    model = train_colour_classifier(train_x, train_y, seed=seed, steps=steps)
    majority = int(np.bincount(train_y[train_y != IGNORE], minlength=NUM_CLASSES).argmax())
    return {
        "colour (1x1 conv)": confusion_matrix(predict(model, val_x), val_y),
        f"majority ({CITYSCAPES.classes[majority]})": confusion_matrix(np.full_like(val_y, majority), val_y),
    }


def colour_baseline_miou(root: Path, *, seed: int = 0) -> float:
    """Val mIoU (0..1) of the 1x1-conv colour classifier trained on the train split of the dataset at `root`."""
    return miou(baselines(root, seed=seed)["colour (1x1 conv)"])[0]


def print_table(results: dict[str, np.ndarray]) -> None:
    names = list(results)
    scores = {name: miou(conf) for name, conf in results.items()}
    print(f"{'class':15s}" + "".join(f"{name:>26s}" for name in names) + f"{'val GT px %':>13s}")
    gt = next(iter(results.values())).sum(1)
    for c, cls in enumerate(CITYSCAPES.classes):
        cells = "".join(f"{100 * scores[n][1][c]:25.1f}{' ' if scores[n][2][c] else '*'}" for n in names)
        print(f"{cls:15s}{cells}{100 * gt[c] / gt.sum():13.2f}")
    print(f"{'mIoU':15s}" + "".join(f"{100 * scores[n][0]:25.1f} " for n in names))
    print("IoU in %; mIoU over classes with a non-empty union; * marks a class absent from that union.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a dataset root in the Cityscapes layout (default: generate one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data and of the classifier")
    parser.add_argument("--steps", type=int, default=400, help="Adam steps of the colour classifier")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="s4sweep-colour-") as tmp:
        root = args.data.expanduser().resolve() if args.data else Path(tmp)
        if args.data is None:
            start = time.perf_counter()
            n_train = preset_dict("tiny")["dataset"]["synth_images"]
            n_val = synth_val_images(n_train)  # as a trial generates it
            generate(root, n_train=n_train, n_val=n_val, seed=args.seed)
            seconds = time.perf_counter() - start
            print(f"generated {n_train} train + {n_val} val scenes (seed {args.seed}, {SIZE[0]}x{SIZE[1]}) in "
                  f"{seconds:.1f} s")
        start = time.perf_counter()
        results = baselines(root, seed=args.seed, steps=args.steps)
        print(f"data {root}; evaluated at {EVAL_SIZE[0]}x{EVAL_SIZE[1]} in {time.perf_counter() - start:.1f} s\n")
        print_table(results)


if __name__ == "__main__":
    main()
