"""The generated road-scene dataset: Cityscapes layout on disk, valid labels, long-tail frequencies, determinism,
reuse, and writes that never leave a half-written file."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainers.data.cityscapes import find_pairs
from trainers.data.labels import CITYSCAPES, CITYSCAPES_LABELS
from trainers.data.synth import CITIES, GENERATOR_VERSION, SIZE, SynthError, generate, write_png

STEM = re.compile(r"^(?P<city>[a-z]+)_(?P<seq>\d{6})_(?P<frame>\d{6})$")
RAW_IDS = {label.id for label in CITYSCAPES_LABELS if label.id >= 0}
THING_IDS = {label.id for label in CITYSCAPES_LABELS if label.has_instances}
RARE = ("traffic light", "motorcycle", "train", "bicycle")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """48 train + 12 val scenes at the default size (the tiny preset's)."""
    root = tmp_path_factory.mktemp("synth")
    return generate(root, n_train=48, n_val=12, seed=0, size=SIZE)


def read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_layout_is_cityscapes(dataset):
    root = dataset.root
    for split, n in (("train", 48), ("val", 12)):
        images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        assert len(images) == n
        assert {p.parent.name for p in images} == set(CITIES[split])
        for image in images:
            stem = image.name.removesuffix("_leftImg8bit.png")
            match = STEM.match(stem)
            assert match and match["city"] == image.parent.name, image.name
            assert match["frame"] == "000019"
            base = root / "gtFine" / split / image.parent.name / stem
            rgb = read(image)
            assert rgb.shape == (*SIZE, 3) and rgb.dtype == np.uint8
            assert read(Path(f"{base}_gtFine_labelIds.png")).shape == SIZE
            assert read(Path(f"{base}_gtFine_instanceIds.png")).shape == SIZE
    assert len(find_pairs(root, "train")) == 48 and len(find_pairs(root, "val")) == 12  # the real reader agrees


def test_labels_are_cityscapes_ids_and_instances_agree(dataset):
    for label_path in sorted(dataset.root.glob("gtFine/*/*/*_gtFine_labelIds.png")):
        label = read(label_path)
        instance = read(Path(str(label_path).replace("_labelIds", "_instanceIds"))).astype(np.int64)
        assert label.dtype == np.uint8
        assert set(np.unique(label).tolist()) <= RAW_IDS, label_path.name
        things = np.isin(label, list(THING_IDS))
        np.testing.assert_array_equal(instance[things] // 1000, label[things])  # id * 1000 + index
        np.testing.assert_array_equal(instance[~things], label[~things])  # stuff: the raw id itself


def test_objects_are_separate_instances(dataset):
    cars = 0
    for path in sorted(dataset.root.glob("gtFine/train/*/*_gtFine_instanceIds.png")):
        instance = read(path).astype(np.int64)
        cars += len(np.unique(instance[instance // 1000 == 26]))
    assert cars > 3 * 48  # several cars per image, each with its own id


def test_frequencies_follow_the_cityscapes_long_tail(dataset):
    f = dataset.frequencies
    assert list(f) == list(CITYSCAPES.classes)
    assert f["road"] + f["building"] + f["vegetation"] > 0.5
    for name in ("road", "building", "vegetation"):
        assert f[name] > max(f[c] for c in CITYSCAPES.classes if c not in ("road", "building", "vegetation", "car"))
    for name in RARE:
        assert 0 < f[name] < 0.01, (name, f[name])
    assert all(v > 0 for v in f.values()), f  # every class can be learned from the train split
    assert sum(f.values()) == pytest.approx(1.0)


def test_summary_frequencies_match_the_label_files(dataset):
    counts = np.zeros(256, np.int64)
    for path in sorted(dataset.root.glob("gtFine/train/*/*_gtFine_labelIds.png")):
        counts += np.bincount(CITYSCAPES.encode(read(path)).ravel(), minlength=256)
    valid = counts[:19].sum()
    for k, name in enumerate(CITYSCAPES.classes):
        assert dataset.frequencies[name] == pytest.approx(counts[k] / valid)


def test_rare_things_are_rare_by_count_not_too_small_to_learn(dataset):
    """Each thing class (person, rider, the vehicles) keeps at least 60% of its pixels in instances at least 12 pixels
    (1.5 output cells of a stride-8 model) tall and wide at the tiny preset's size: a class drawn only far away
    would be a few pixels wide, which no model at that stride can segment (the generator before this rule had 10% of
    person pixels in such instances)."""
    big, total = np.zeros(256), np.zeros(256)
    for path in sorted(dataset.root.glob("gtFine/train/*/*_gtFine_instanceIds.png")):
        instance = read(path).astype(np.int64)
        for k in np.unique(instance[instance >= 1000]):
            rows, cols = np.nonzero(instance == k)
            size = min(rows.max() - rows.min(), cols.max() - cols.min()) + 1
            total[k // 1000] += rows.size
            big[k // 1000] += rows.size * (size >= 12)
    for label in CITYSCAPES_LABELS:
        if label.has_instances and label.train_id != 255:  # caravan and trailer are ignored, never drawn
            assert big[label.id] / total[label.id] >= 0.6, (label.name, big[label.id] / total[label.id])


def test_train_class_appears_in_only_a_few_images(dataset):
    with_train = [p for p in dataset.root.glob("gtFine/train/*/*_labelIds.png") if (read(p) == 31).any()]
    assert 1 <= len(with_train) <= 6


def test_manifest_is_written_last_and_describes_the_set(dataset):
    manifest = json.loads((dataset.root / "synth.json").read_text())
    assert manifest["version"] == GENERATOR_VERSION
    assert (manifest["seed"], manifest["size"], manifest["n_train"], manifest["n_val"]) == (0, list(SIZE), 48, 12)
    assert manifest["frequencies"] == pytest.approx(dataset.frequencies)
    assert not [p for p in dataset.root.rglob("*") if ".tmp" in p.name]


def test_same_seed_same_bytes_other_seed_other_scenes(tmp_path):
    small = dict(n_train=3, n_val=1, size=(64, 128))
    a = generate(tmp_path / "a", seed=5, **small)
    b = generate(tmp_path / "b", seed=5, **small)
    c = generate(tmp_path / "c", seed=6, **small)
    assert files(a.root) == files(b.root) and len(files(a.root)) == 12
    assert a.frequencies == b.frequencies
    same_name = files(c.root)
    for name, data in files(a.root).items():
        assert same_name[name] != data, name  # every image and label file differs under another seed


def test_image_i_does_not_depend_on_the_counts(tmp_path):
    size = (64, 128)
    few = files(generate(tmp_path / "few", n_train=2, n_val=1, seed=3, size=size).root)
    many = files(generate(tmp_path / "many", n_train=4, n_val=2, seed=3, size=size).root)
    assert few and all(many[name] == data for name, data in few.items())


def test_reuse_returns_at_once_and_a_mismatch_names_the_directory(tmp_path):
    calls = []
    first = generate(tmp_path, n_train=2, n_val=1, seed=0, size=(64, 128), progress=lambda *a: calls.append(a))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")}
    again = generate(tmp_path, n_train=2, n_val=1, seed=0, size=(64, 128), progress=lambda *a: calls.append(a))
    assert again == first and len(calls) == 3
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.png")} == stamps
    with pytest.raises(SynthError, match=re.escape(str(tmp_path.resolve())) + r".*seed=0 \(asked 1\)"):
        generate(tmp_path, n_train=2, n_val=1, seed=1, size=(64, 128))
    with pytest.raises(SynthError, match=r"n_train=2 \(asked 3\)"):
        generate(tmp_path, n_train=3, n_val=1, seed=0, size=(64, 128))


def test_invalid_arguments_are_refused():
    with pytest.raises(SynthError, match="n_train >= 1.*n_train=0"):
        generate(Path("unused"), n_train=0, n_val=1)
    with pytest.raises(SynthError, match="size"):
        generate(Path("unused"), n_train=1, n_val=1, size=(8, 512))


def test_an_interrupted_run_leaves_no_partial_files_and_resumes(tmp_path):
    def stop(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path, n_train=4, n_val=1, seed=0, size=(64, 128), progress=stop)
    assert not (tmp_path / "synth.json").exists()  # not marked complete
    assert not list(tmp_path.rglob("*.tmp"))
    for png in tmp_path.rglob("*.png"):
        read(png)  # every file under its final name is a whole PNG
    done = generate(tmp_path, n_train=4, n_val=1, seed=0, size=(64, 128))
    assert len(list(tmp_path.rglob("*_leftImg8bit.png"))) == 5 and (tmp_path / "synth.json").exists()
    assert done.n_train == 4


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "x_gtFine_labelIds.png"
    write_png(path, np.full((4, 4), 7, np.uint8))
    before = path.read_bytes()
    with pytest.raises(OSError):
        write_png(path, np.zeros((4, 4), np.float32))  # PNG cannot hold float pixels: fails inside the save
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
