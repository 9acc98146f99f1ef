"""The Cityscapes reader, the labeled split, samplers and transforms, on hand-written PNG trees."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.config import DatasetConfig
from trainers.data.check import check_dataset
from trainers.data.cityscapes import find_pairs, read_label
from trainers.data.pipeline import InfiniteSampler, TrainSet, labeled_split, train_data
from trainers.data.tables import DataError, dataset_info


def write_tree(root: Path, *, n: int = 6, split: str = "train", nested: bool = False, size=(16, 32)) -> Path:
    gt = root / ("gtFine_trainvaltest/gtFine" if nested else "gtFine")
    rng = np.random.default_rng(0)
    for i in range(n):
        city = "aachen" if i % 2 else "bonn"
        stem = f"{city}_{i:06d}_000019"
        img_dir, gt_dir = root / "leftImg8bit" / split / city, gt / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(img_dir / f"{stem}_leftImg8bit.png")
        raw = np.full(size, 7, np.uint8)  # road
        raw[: size[0] // 2] = 23  # sky
        raw[0, 0] = 0  # unlabeled -> ignore
        Image.fromarray(raw).save(gt_dir / f"{stem}_gtFine_labelIds.png")
    return root


def test_pairs_are_sorted_and_labels_map_raw_ids_to_train_ids(tmp_path):
    pairs = find_pairs(write_tree(tmp_path), "train")
    assert [p.image for p in pairs] == sorted(p.image for p in pairs)
    label = read_label(pairs[0], dataset_info("cityscapes").labels)
    assert label[0, 0] == 255 and label[1, 0] == 10 and label[-1, -1] == 0  # ignore, sky, road


def test_the_reference_nested_gtfine_layout_is_read_too(tmp_path):
    assert len(find_pairs(write_tree(tmp_path, nested=True), "train")) == 6


def test_label_train_ids_files_are_preferred_when_present(tmp_path):
    root = write_tree(tmp_path, n=1)
    label = next((root / "gtFine/train").glob("*/*_labelIds.png"))
    Image.fromarray(np.full((16, 32), 5, np.uint8)).save(str(label).replace("_labelIds", "_labelTrainIds"))
    pair = find_pairs(root, "train")[0]
    assert pair.train_ids and (read_label(pair, dataset_info("cityscapes").labels) == 5).all()


def test_labeled_split_is_the_first_int_ratio_n_of_a_split_seed_permutation(tmp_path):
    pairs = find_pairs(write_tree(tmp_path, n=8), "train")
    a = labeled_split(pairs, ratio=0.25, split_seed=0, root=tmp_path)
    b = labeled_split(pairs, ratio=0.25, split_seed=0, root=tmp_path)
    c = labeled_split(pairs, ratio=0.25, split_seed=1, root=tmp_path)
    assert len(a.labeled) == 2 and len(a.unlabeled) == 6
    assert not set(a.labeled) & set(a.unlabeled)
    assert a == b and a.fingerprint["split"] != c.fingerprint["split"]
    assert a.fingerprint["files"] == c.fingerprint["files"]
    full = labeled_split(pairs, ratio=1.0, split_seed=0, root=tmp_path)
    assert len(full.labeled) == 8 and full.unlabeled == tuple(pairs)  # "full": unlabeled draws from everything
    with pytest.raises(DataError, match="leaves no labeled image"):
        labeled_split(pairs, ratio=0.1, split_seed=0, root=tmp_path)


def test_infinite_sampler_reshuffles_each_epoch_and_resumes_at_any_draw():
    it = iter(InfiniteSampler(5, seed=0, stream=1))
    draws = [next(it) for _ in range(15)]
    assert [d for _, d in draws] == list(range(15))
    epochs = [sorted(i for i, _ in draws[k:k + 5]) for k in (0, 5, 10)]
    assert all(e == list(range(5)) for e in epochs)
    assert [i for i, _ in draws[:5]] != [i for i, _ in draws[5:10]] or [i for i, _ in draws[5:10]] != [
        i for i, _ in draws[10:15]]
    resumed = iter(InfiniteSampler(5, seed=0, stream=1, start=7))
    assert [next(resumed) for _ in range(8)] == draws[7:]


def test_train_samples_are_a_pure_function_of_the_draw(tmp_path):
    pairs = tuple(find_pairs(write_tree(tmp_path), "train"))
    cfg = DatasetConfig(name="cityscapes", root=str(tmp_path), scale=0.5, crop_size=(6, 10))
    ds = TrainSet(pairs, dataset_info("cityscapes"), cfg, seed=3, stream=1)
    x1, y1 = ds[(2, 41)]
    x2, y2 = ds[(2, 41)]
    assert x1.shape == (3, 6, 10) and y1.shape == (6, 10) and y1.dtype == torch.long
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    crops = {ds[(2, d)][0].sum().item() for d in range(8)}
    assert len(crops) > 1  # different draws, different crops/flips


def test_crops_larger_than_the_image_are_padded_with_ignore(tmp_path):
    pairs = tuple(find_pairs(write_tree(tmp_path, n=1), "train"))
    cfg = DatasetConfig(name="cityscapes", root=str(tmp_path), scale=0.5, crop_size=(12, 20))
    _, y = TrainSet(pairs, dataset_info("cityscapes"), cfg, seed=0, stream=1)[(0, 0)]
    assert y.shape == (12, 20) and (y == 255).sum() >= 12 * 20 - 8 * 16


def test_loaders_resume_at_an_iteration_with_the_same_batches(tmp_path):
    write_tree(tmp_path, n=8)
    cfg = DatasetConfig(name="cityscapes", root=str(tmp_path), scale=0.5, crop_size=(8, 8), labeled_ratio=0.5)
    sizes = {"labeled": 2, "labeled_d": 2, "unlabeled": 2}
    fresh = train_data(cfg, batches=sizes, seed=0, split_seed=0, workers=0)
    seq = [next(fresh.unlabeled)[0] for _ in range(5)]
    resumed = train_data(cfg, batches=sizes, seed=0, split_seed=0, workers=0, start_iteration=3)
    assert torch.equal(next(resumed.unlabeled)[0], seq[3]) and torch.equal(next(resumed.unlabeled)[0], seq[4])


def test_missing_labels_and_roots_are_errors_that_name_the_file(tmp_path):
    root = write_tree(tmp_path, n=2)
    label = sorted((root / "gtFine/train").glob("*/*_labelIds.png"))[0]
    label.unlink()
    with pytest.raises(DataError, match=r"leftImg8bit\.png: no label file \(expected .*_gtFine_labelIds\.png\)"):
        find_pairs(root, "train")
    with pytest.raises(DataError, match="missing image directory for split 'val'"):
        find_pairs(root, "val")


def test_data_check_names_every_broken_file(tmp_path):
    root = write_tree(tmp_path, n=4)
    labels = sorted((root / "gtFine/train").glob("*/*_labelIds.png"))
    images = sorted((root / "leftImg8bit/train").glob("*/*.png"))
    images[0].write_bytes(images[0].read_bytes()[:60])  # truncated PNG
    Image.fromarray(np.full((16, 32), 200, np.uint8)).save(labels[1])  # id outside the table
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(labels[2])  # wrong size
    orphan = labels[3].parent / "bonn_999999_000019_gtFine_labelIds.png"
    Image.fromarray(np.full((16, 32), 7, np.uint8)).save(orphan)
    problems, counted = check_dataset(root, splits=["train"])
    text = "\n".join(problems)
    assert counted == 4 and len(problems) == 4
    assert f"{images[0]}: unreadable image" in text
    assert f"{labels[1]}: raw label id 200 is not in the Cityscapes table" in text
    assert f"{labels[2]}: label is 8x8 but image" in text
    assert f"{orphan}: label without image" in text
    assert check_dataset(write_tree(tmp_path / "ok"), splits=["train"]) == ([], 6)
