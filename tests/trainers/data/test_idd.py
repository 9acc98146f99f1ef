"""The IDD reader, its protocol sizes in the pipeline, the dataset scan and the `data` commands, on files on disk."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from orchestrator.cli import main
from trainers.config import ConfigError, DatasetConfig, EvalSetConfig, TrialConfig
from trainers.data.check import check_dataset, detect_layout
from trainers.data.idd import VERSION_KEY, find_pairs, label_path, prepare_idd
from trainers.data.pipeline import EvalSet, ScaledCache, TrainSet, eval_data, train_data
from trainers.data.rasterise import RASTERISER_VERSION
from trainers.data.tables import DataError, dataset_info

SIZES = [(18, 32), (27, 48), (24, 32)]  # IDD's sizes vary; 16:9 and 4:3


def write_idd(root: Path, *, n: int = 6, split: str = "train", prepare=("level3", "cs19")) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = SIZES[i % len(SIZES)]
        drive, stem = str(i % 2), f"{i:06d}"
        image_dir, gt_dir = root / "leftImg8bit" / split / drive, root / "gtFine" / split / drive
        image_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(image_dir / f"{stem}_leftImg8bit.png")
        objects = [{"label": "sky", "polygon": [[0, 0], [w, 0], [w, h // 2], [0, h // 2]]},
                   {"label": "road", "polygon": [[0, h // 2], [w, h // 2], [w, h], [0, h]]},
                   {"label": "autorickshaw", "polygon": [[1, h - 6], [6, h - 6], [6, h - 1], [1, h - 1]]}]
        (gt_dir / f"{stem}_gtFine_polygons.json").write_text(
            json.dumps({"imgHeight": h, "imgWidth": w, "objects": objects}))
    if prepare:
        assert prepare_idd(root, prepare).problems == []
    return root


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_pairs_are_sorted_images_with_their_label_set_png(tmp_path):
    root = write_idd(tmp_path)
    pairs = find_pairs(root, "train", "level3")
    assert [p.image for p in pairs] == sorted(p.image for p in pairs) and len(pairs) == 6
    assert all(p.train_ids and p.label.name == f"{p.stem}_gtFine_labellevel3Ids.png" for p in pairs)
    assert find_pairs(root, "train", "cs19")[0].label.name.endswith("_gtFine_labelcsTrainIds.png")


def test_a_missing_or_stale_label_png_names_the_command_that_makes_it(tmp_path):
    root = write_idd(tmp_path, prepare=("level3",))
    with pytest.raises(DataError, match=rf"labellevel4Ids\.png: missing level4 label PNG; run s4sweep data "
                                        rf"prepare-idd {root} --label-set level4"):
        find_pairs(root, "train", "level4")
    polygons = sorted(root.rglob("*_polygons.json"))[0]
    polygons.touch()
    label = label_path(polygons, "level3")
    os.utime(label, ns=(label.stat().st_mtime_ns - 10**9,) * 2)
    with pytest.raises(DataError, match=r"older than .*_polygons\.json \(stale\); run s4sweep data prepare-idd"):
        find_pairs(root, "train", "level3")


def test_an_image_without_polygons_and_a_missing_split_are_errors(tmp_path):
    root = write_idd(tmp_path, n=2)
    next(root.rglob("000001_gtFine_polygons.json")).unlink()
    with pytest.raises(DataError, match=r"000001_leftImg8bit\.png: no label file \(expected .*000001_gtFine_polygons"):
        find_pairs(root, "train", "level3")
    with pytest.raises(DataError, match="missing image directory for split 'val'"):
        find_pairs(root, "val", "level3")
    (root / "leftImg8bit" / "val").mkdir()
    with pytest.raises(DataError, match="split 'val' has no"):
        find_pairs(root, "val", "level3")


def test_training_samples_are_resized_to_the_base_size_first_whatever_the_image_size(tmp_path):
    root = write_idd(tmp_path)
    info = dataset_info("synth_idd", "level3")  # the IDD protocol at a quarter: base 180x320
    cache = ScaledCache(64)
    shapes = {cache.get(p, info, 0.5)[0].shape for p in find_pairs(root, "train", "level3")}
    assert shapes == {(3, 90, 160)}  # 18x32, 27x48 and 24x32 images all become base * scale
    cfg = DatasetConfig(name="synth_idd", root=str(root), label_set="level3", scale=0.5, crop_size=(32, 64))
    x, y = TrainSet(tuple(find_pairs(root, "train", "level3")), info, cfg, seed=0, stream=1)[(1, 0)]
    assert x.shape == (3, 32, 64) and y.shape == (32, 64) and set(y.unique().tolist()) <= {0, 8, 25, 255}
    assert dataset_info("idd").base_size == (720, 1280)


def test_evaluation_defaults_to_the_datasets_size_and_full_size_is_selectable(tmp_path):
    root = write_idd(tmp_path, split="val")
    es = EvalSetConfig(name="idd", root=str(root), label_set="cs19")
    assert es.eval_size == (360, 640) and EvalSetConfig(name="cityscapes", root="/x").eval_size == (512, 1024)
    full = EvalSetConfig(name="idd", root=str(root), label_set="cs19", eval_size=(720, 1280))
    assert full.eval_size == (720, 1280)
    small = EvalSetConfig(name="idd", root=str(root), label_set="cs19", eval_size=(9, 16))
    info, loader = eval_data(small, synth_images=8)
    x, y = next(iter(loader))
    assert info.label_set == "cs19" and x.shape == (1, 3, 9, 16) and y.shape == (1, 9, 16)
    assert set(y.unique().tolist()) <= {0, 10, 255}  # road, sky; autorickshaw is void in cs19
    assert isinstance(loader.dataset, EvalSet)


def test_train_data_fingerprint_names_the_label_set_and_the_rasteriser(tmp_path):
    root = write_idd(tmp_path, n=8, prepare=("level4",))
    cfg = DatasetConfig(name="idd", root=str(root), label_set="level4", scale=0.5, crop_size=(8, 16),
                        labeled_ratio=0.5)
    data = train_data(cfg, batches={"labeled": 2, "labeled_d": 2, "unlabeled": 2}, seed=0, split_seed=0, workers=0)
    assert data.split.fingerprint["label_set"] == "level4"
    assert data.split.fingerprint["rasteriser"] == str(RASTERISER_VERSION)
    assert {"files", "split"} <= set(data.split.fingerprint) and len(data.split.labeled) == 4
    x, y = next(data.labeled)
    assert x.shape == (2, 3, 8, 16) and y.dtype == torch.long


def test_layout_is_detected(tmp_path):
    assert detect_layout(write_idd(tmp_path / "idd", prepare=())) == "idd"
    assert detect_layout(write_idd(tmp_path / "idd2")) == "idd"  # prepared PNGs have IDD's names
    cs = tmp_path / "cs" / "gtFine" / "train" / "aachen"
    cs.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(cs / "aachen_000000_000019_gtFine_labelIds.png")
    (cs / "aachen_000000_000019_gtFine_polygons.json").write_text("{}")  # Cityscapes ships polygons too
    assert detect_layout(tmp_path / "cs") == "cityscapes"
    with pytest.raises(DataError, match="neither a Cityscapes root"):
        detect_layout(tmp_path / "empty")


def test_data_check_names_every_broken_file_of_an_idd_tree(tmp_path):
    root = write_idd(tmp_path, n=6)
    assert check_dataset(root, splits=["train"]) == ([], 6)
    images = sorted(root.rglob("*_leftImg8bit.png"))
    jsons = sorted(root.rglob("*_polygons.json"))
    images[0].write_bytes(images[0].read_bytes()[:60])  # truncated PNG
    bad = label_path(jsons[1], "level3")
    tag = PngImagePlugin.PngInfo()
    tag.add_text(VERSION_KEY, str(RASTERISER_VERSION))  # our own tag: only its values are wrong
    Image.fromarray(np.full(read(bad).shape, 200, np.uint8)).save(bad, pnginfo=tag)  # outside the table
    jsons[2].write_text('{"imgHeight": 24')  # malformed JSON
    data = json.loads(jsons[3].read_text())
    data["objects"].append({"label": "zeppelin", "polygon": [[0, 0], [2, 0], [2, 2]]})
    jsons[3].write_text(json.dumps(data))  # unknown label (and now newer than its PNGs: stale)
    images[4].unlink()  # polygons without an image
    label_path(jsons[5], "cs19").unlink()  # one PNG missing
    problems, counted = check_dataset(root, splits=["train"])
    text = "\n".join(problems)
    assert counted == 5
    assert f"{images[0]}: unreadable image" in text
    assert f"{label_path(jsons[1], 'level3')}: train id 200 outside 0..25" in text
    assert f"{jsons[2]}: malformed JSON" in text
    assert f"{jsons[3]}: unknown label(s) 'zeppelin' (not in the IDD table)" in text
    assert f"{label_path(jsons[3], 'level3')}: stale" in text
    assert f"{jsons[4]}: label without image" in text
    assert "1 of 5 images have no cs19 label PNG; run s4sweep data prepare-idd" in text
    assert check_dataset(tmp_path / "nowhere") == ([f"{tmp_path / 'nowhere'}: dataset root does not exist"], 0)


def test_an_unprepared_idd_tree_fails_the_check_with_the_command_to_run(tmp_path):
    root = write_idd(tmp_path, prepare=())
    problems, counted = check_dataset(root, splits=["train"])
    assert counted == 6 and problems == [f"{root}: no label PNGs of any label set yet; run s4sweep data "
                                         f"prepare-idd {root} --label-set SET"]
    problems, _ = check_dataset(root, splits=["train"], label_sets=["level4"])
    assert problems == [f"{root / 'gtFine' / 'train'}: 6 of 6 images have no level4 label PNG; run s4sweep data "
                        f"prepare-idd {root} --label-set level4"]


def test_data_commands_prepare_check_and_synth(tmp_path, capsys):
    root = write_idd(tmp_path / "idd", prepare=())
    assert main(["data", "prepare-idd", str(root), "--label-set", "level4", "cs19", "--workers", "2"]) == 0
    assert "6 polygon files, label sets level4, cs19: 12 PNGs written, 0 already up to date" in capsys.readouterr().out
    assert main(["data", "prepare-idd", str(root), "--label-set", "level4"]) == 0
    assert "0 PNGs written, 6 already up to date" in capsys.readouterr().out
    assert main(["data", "check", str(root), "--split", "train"]) == 0
    odd = sorted(root.rglob("*_polygons.json"))[0]
    odd.write_text(json.dumps({"imgHeight": 18, "imgWidth": 32, "objects": [
        {"label": "dragon", "polygon": [[0, 0], [5, 0], [5, 5]]}]}))
    assert main(["data", "prepare-idd", str(root), "--label-set", "level4"]) == 1
    assert f"{odd}: unknown label(s) 'dragon'" in capsys.readouterr().out
    out = tmp_path / "generated"
    assert main(["data", "synth", "--layout", "idd", "--out", str(out), "--n", "4"]) == 0
    assert "cs19    void (ignored)" in capsys.readouterr().out
    assert main(["data", "check", str(out)]) == 0


def test_a_sweep_scans_each_idd_label_set_and_checks_remaps_before_scheduling(tmp_path):
    from orchestrator.sweep import prepare_data

    root = write_idd(tmp_path / "idd", prepare=("level3",))
    write_idd(root, n=2, split="val", prepare=("level3",))

    def trial(**eval_set):
        return TrialConfig.from_dict({"preset": "micro", "dataset": {"name": "idd", "root": str(root)},
                                      "eval": [{"name": "idd", "root": str(root), **eval_set}]})

    trials, fingerprints = prepare_data([trial()], tmp_path / "home")
    assert trials[0].dataset.root == str(root) and list(fingerprints) == [f"idd:level3:{root}"]
    assert fingerprints[f"idd:level3:{root}"].endswith(f" rasteriser={RASTERISER_VERSION}")
    with pytest.raises(DataError, match=rf"nothing was scheduled:\n  .*have no cs19 label PNG; run s4sweep data "
                                        rf"prepare-idd {root} --label-set cs19"):
        prepare_data([trial(label_set="cs19", remap="level3->cs19")], tmp_path / "home")
    with pytest.raises(ConfigError, match=r"eval\[0\]: .* declare `remap: level3->cs19`"):
        prepare_data([trial(label_set="cs19")], tmp_path / "home")
