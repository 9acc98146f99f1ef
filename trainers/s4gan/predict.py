"""`s4sweep eval`: score a saved generator on any dataset the data layer knows (another label set through a declared
remap), optionally writing predictions in the benchmark format (one PNG per image, at the image's own resolution:
raw Cityscapes ids for a cs19 model, the label set's own ids otherwise, which is what IDD's evaluator reads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from trainers.config import ConfigError, EvalSetConfig, TrialConfig
from trainers.data.labels import CITYSCAPES_LABELS
from trainers.data.pipeline import eval_data
from trainers.data.remap import eval_remap
from trainers.data.tables import dataset_info
from trainers.s4gan import checkpoint as ckpt
from trainers.s4gan.evaluate import RemapScorer, evaluate, save_json
from trainers.s4gan.model import build_generator
from trainers.s4gan.steps import upsample


def train_to_raw_ids() -> np.ndarray:
    """Inverse of the train-id table for benchmark submissions: train id -> Cityscapes raw id (ignore -> 0)."""
    lut = np.zeros(256, np.uint8)
    for label in CITYSCAPES_LABELS:
        if 0 <= label.train_id < 255 and label.id >= 0:
            lut[label.train_id] = label.id
    return lut


def load_generator(checkpoint: Path, device: torch.device) -> tuple[torch.nn.Module, TrialConfig]:
    """The generator its config.json describes, with the weights of its state.pt (read with weights_only=True)."""
    state = ckpt.load(checkpoint, keys=("generator",))  # first: it also says when `checkpoint` is no directory
    try:
        config = TrialConfig.from_dict(ckpt.read_config(checkpoint))
    except ConfigError as e:
        raise ckpt.CheckpointError(f"{checkpoint / ckpt.CONFIG_FILE}: {e}") from None
    num_classes = dataset_info(config.dataset.name, config.dataset.label_set).num_classes
    generator = build_generator(config.model, num_classes)
    ckpt.load_weights(generator, state["generator"], checkpoint, part="generator")
    return generator.to(device).eval(), config


def evaluate_checkpoint(checkpoint: Path, *, dataset: str, root: str | None = None, split: str = "val",
                        label_set: str | None = None, remap: str | None = None,
                        eval_size: tuple[int, int] | None = None, out: Path | None = None,
                        save_predictions: Path | None = None) -> dict[str, Any]:
    checkpoint = checkpoint.resolve()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    generator, config = load_generator(checkpoint, device)
    trained_on = dataset_info(config.dataset.name, config.dataset.label_set)
    es = EvalSetConfig(name=dataset, root=root, label_set=label_set, remap=remap, split=split, eval_size=eval_size)
    found = eval_remap(trained_on, dataset_info(es.name, es.label_set), es.remap, where="eval")
    info, loader = eval_data(es, synth_images=config.dataset.synth_images)
    scorer = None if found is None else RemapScorer(found, ignore_index=info.labels.ignore_index, device=device)
    metrics, _ = evaluate(generator, loader, info, device=device, remap=scorer)
    result = {"checkpoint": str(checkpoint), "dataset": dataset, "label_set": info.label_set, "split": split,
              "eval_size": list(es.size), "images": len(loader.dataset),
              "metrics": metrics.to_json() | ({"remap": scorer.describe()} if scorer is not None else {})}
    out_dir = (out or checkpoint.parent).resolve()
    result["metrics_file"] = str(save_json(result, out_dir / f"eval_{dataset}_{split}.json"))
    if save_predictions is not None:
        write_predictions(generator, loader, save_predictions.resolve(), device=device,
                          raw_cityscapes_ids=trained_on.label_set == "cs19")
    return result


@torch.inference_mode()
def write_predictions(generator: torch.nn.Module, loader: torch.utils.data.DataLoader, out: Path, *,
                      device: torch.device, raw_cityscapes_ids: bool = True) -> None:
    """`<image stem>_pred_labelIds.png` per image at the original resolution: raw Cityscapes ids, or the model's
    own class ids when `raw_cityscapes_ids` is False (an IDD level model)."""
    lut = train_to_raw_ids() if raw_cityscapes_ids else np.arange(256, dtype=np.uint8)
    pairs = loader.dataset.pairs
    out.mkdir(parents=True, exist_ok=True)
    for pair, (image, _) in zip(pairs, loader, strict=True):
        with Image.open(pair.image) as im:
            size = (im.height, im.width)
        logits = upsample(generator(image.to(device)).float(), size)
        pred = logits.argmax(1)[0].cpu().numpy().astype(np.uint8)
        Image.fromarray(lut[pred]).save(out / f"{pair.stem}_pred_labelIds.png")


