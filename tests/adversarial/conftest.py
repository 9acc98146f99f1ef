"""The adversarial suite: every kind of input `s4sweep` reads, broken on purpose, through the real command.

Each case runs `orchestrator.cli.main` in-process (a few run the installed `s4sweep` where the process boundary is the
point) and asserts a non-zero exit, no traceback, and a message naming the file, key or value at fault. The `refuse`
fixture is that assertion; the `cityscapes_tree` and `idd_tree` fixtures write small real PNG/JSON trees.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.cli import main

CITIES = ("aachen", "bonn")


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own refusals (exit 2, usage line)
        code = e.code if isinstance(e.code, int) else 1
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)


@pytest.fixture
def refuse(capsys: pytest.CaptureFixture[str]) -> Callable[..., Outcome]:
    """`refuse(argv, *needles, code=2)`: the command fails with `code` (any non-zero code when None), prints no
    traceback, and its output names every needle (a file, a key, a value)."""

    def check(argv: Sequence[str], *needles: object, code: int | None = 2) -> Outcome:
        outcome = run_cli(argv, capsys)
        assert outcome.code != 0, outcome.text
        if code is not None:
            assert outcome.code == code, outcome.text
        assert "Traceback" not in outcome.text, outcome.text
        for needle in needles:
            assert str(needle) in outcome.text, f"{needle!r} not in:\n{outcome.text}"
        return outcome

    return check


@pytest.fixture
def accept(capsys: pytest.CaptureFixture[str]) -> Callable[..., Outcome]:
    """`accept(argv)`: the command exits 0."""

    def check(argv: Sequence[str]) -> Outcome:
        outcome = run_cli(argv, capsys)
        assert outcome.code == 0, outcome.text
        return outcome

    return check


def write_cityscapes(root: Path, *, n: int = 4, split: str = "train", size: tuple[int, int] = (16, 32)) -> Path:
    """`n` image/label pairs of one split in the Cityscapes layout (raw label ids: road below, sky above)."""
    rng = np.random.default_rng(0)
    for i in range(n):
        city = CITIES[i % 2]
        stem = f"{city}_{i:06d}_000019"
        images, labels = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(images / f"{stem}_leftImg8bit.png")
        raw = np.full(size, 7, np.uint8)
        raw[: size[0] // 2] = 23
        Image.fromarray(raw).save(labels / f"{stem}_gtFine_labelIds.png")
    return root


@pytest.fixture
def cityscapes_tree(tmp_path: Path) -> Path:
    """15 train + 3 val pairs: the size of the tree the issue's new user broke."""
    root = write_cityscapes(tmp_path / "cityscapes", n=15)
    return write_cityscapes(root, n=3, split="val")


def write_idd(root: Path, *, n: int = 4, split: str = "train", label_sets: Sequence[str] = ("level3", "cs19")) -> Path:
    """`n` IDD-layout scenes (polygon JSON), with the label PNGs of `label_sets` made by `prepare_idd`."""
    from trainers.data.idd import prepare_idd

    rng = np.random.default_rng(1)
    h, w = 18, 32
    for i in range(n):
        drive, stem = str(i % 2), f"{i:06d}"
        images, gt = root / "leftImg8bit" / split / drive, root / "gtFine" / split / drive
        images.mkdir(parents=True, exist_ok=True)
        gt.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"{stem}_leftImg8bit.png")
        objects = [{"label": "sky", "polygon": [[0, 0], [w, 0], [w, h // 2], [0, h // 2]]},
                   {"label": "road", "polygon": [[0, h // 2], [w, h // 2], [w, h], [0, h]]}]
        (gt / f"{stem}_gtFine_polygons.json").write_text(json.dumps({"imgHeight": h, "imgWidth": w,
                                                                     "objects": objects}))
    if label_sets:
        assert prepare_idd(root, label_sets, splits=[split]).problems == []
    return root


@pytest.fixture
def idd_tree(tmp_path: Path) -> Path:
    root = write_idd(tmp_path / "idd", n=4)
    return write_idd(root, n=2, split="val")
