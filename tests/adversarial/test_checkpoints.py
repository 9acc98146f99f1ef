"""Checkpoints and weights files, broken or hostile: `s4sweep eval`, `s4sweep train --resume` and a sweep file's
`model.pretrained` refuse each with one line naming the file. A pickle whose `__reduce__` would create a file is
refused by weights_only loading and the file never appears."""

from __future__ import annotations

import argparse
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from trainers.config import TrialConfig
from trainers.s4gan import checkpoint as ckpt
from trainers.s4gan.model import build_generator

MICRO = {"preset": "micro"}


class Hostile:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def real_checkpoint(directory: Path, *, num_classes: int = 19, config: dict | None = None) -> Path:
    """A checkpoint as the trainer writes it, of a micro generator with `num_classes` outputs."""
    cfg = TrialConfig.from_dict(MICRO)
    generator = build_generator(cfg.model, num_classes)
    state = {"iteration": 3, "generator": generator.state_dict(), "discriminator": None, "opt_d": None}
    return ckpt.save(directory, state, config or cfg.to_dict())


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return real_checkpoint(tmp_path / "checkpoint_000003")


def micro_spec(tmp_path: Path, **base: Any) -> Path:
    path = tmp_path / "micro.yaml"
    path.write_text(yaml.safe_dump({"name": "micro", "base": {**MICRO, **base}}))
    return path


# --- hostile pickles: refused, never run ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["eval", "train --resume"])
def test_a_hostile_pickle_is_refused_and_its_code_never_runs(command, checkpoint, tmp_path, refuse):
    marker = tmp_path / "pwned"
    torch.save({"iteration": 3, "generator": Hostile(marker)}, checkpoint / ckpt.STATE_FILE)
    state = checkpoint / ckpt.STATE_FILE
    if command == "eval":
        argv = ["eval", checkpoint, "--dataset", "synth", "--out", tmp_path / "out",
                "--save-predictions", tmp_path / "preds"]
    else:
        argv = ["train", micro_spec(tmp_path), "--resume", checkpoint, "--out", tmp_path / "trial"]
    refuse(argv, f"{state}: refused", "posix.system")
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "out").exists() and not (tmp_path / "preds").exists()  # nothing half-written


def test_a_plain_pickle_of_foreign_objects_is_refused(checkpoint, tmp_path, refuse):
    state = checkpoint / ckpt.STATE_FILE
    state.write_bytes(pickle.dumps({"generator": argparse.Namespace(weights=[1, 2])}))
    refuse(["eval", checkpoint, "--dataset", "synth"], f"{state}: refused")


def test_hostile_pretrained_weights_are_refused_before_a_trial_runs(tmp_path, refuse):
    marker = tmp_path / "pwned"
    weights = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": Hostile(marker)}, weights)
    spec = micro_spec(tmp_path, model={"backbone": "resnet50", "pretrained": str(weights)})
    refuse(["train", spec, "--out", tmp_path / "trial"], f"{weights}: refused", "posix.system")
    assert not marker.exists()


# --- broken files -----------------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:4096])


CORRUPTIONS = [
    ("truncated", _truncate, "unreadable checkpoint"),
    ("empty", lambda p: p.write_bytes(b""), "unreadable checkpoint"),
    ("garbage", lambda p: p.write_bytes(bytes(range(256)) * 8), "refused: not a checkpoint of tensors"),
    ("a-tensor-not-a-dict", lambda p: torch.save(torch.zeros(3), p), "this file holds a Tensor"),
    ("no-generator", lambda p: torch.save({"iteration": 1}, p), "no 'generator' in it"),
]


@pytest.mark.parametrize(("corrupt", "message"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_a_broken_state_file_is_named(corrupt, message, checkpoint, refuse):
    state = checkpoint / ckpt.STATE_FILE
    corrupt(state)
    refuse(["eval", checkpoint, "--dataset", "synth"], str(state), message)


@pytest.mark.parametrize("case", ["no-state", "no-config", "malformed-config", "invalid-config", "a-file",
                                  "nowhere"])
def test_a_checkpoint_directory_missing_or_broken_is_named(case, checkpoint, refuse):
    config = checkpoint / ckpt.CONFIG_FILE
    target, needle = checkpoint, f"{checkpoint}: not a checkpoint"
    if case == "no-state":
        (checkpoint / ckpt.STATE_FILE).unlink()
        needle = f"{checkpoint}: not a checkpoint (no state.pt)"
    elif case == "no-config":
        config.unlink()
        needle = f"{checkpoint}: not a checkpoint (no config.json)"
    elif case == "malformed-config":
        config.write_text('{"preset": "micro",')
        needle = f"{config}: unreadable trial config"
    elif case == "invalid-config":
        config.write_text(json.dumps({"preset": "micro", "optim": {"lr": -1}}))
        needle = f"{config}: optim.lr"
    elif case == "a-file":
        target = checkpoint / ckpt.STATE_FILE
        needle = f"{target}: is a file"
    else:
        target = checkpoint.with_name("elsewhere")
        needle = f"{target}: does not exist"
    refuse(["eval", target, "--dataset", "synth"], needle)


def test_weights_from_another_config_do_not_load_into_the_model_its_config_describes(tmp_path, refuse):
    idd_weights = real_checkpoint(tmp_path / "a", num_classes=26)  # an IDD level3 model ...
    cs_config = TrialConfig.from_dict(MICRO).to_dict()  # ... whose config.json says 19 Cityscapes classes
    (idd_weights / ckpt.CONFIG_FILE).write_text(json.dumps(cs_config))
    refuse(["eval", idd_weights, "--dataset", "synth"], f"{idd_weights}: state.pt does not fit the model",
           "classifier")


def test_resuming_from_a_checkpoint_of_another_model_is_refused(tmp_path, refuse):
    other = TrialConfig.from_dict({**MICRO, "model": {"tiny_width": 16}})
    generator = build_generator(other.model, 19)
    state = {"iteration": 3, "generator": generator.state_dict(), "opt_g": {}, "discriminator": None,
             "opt_d": None, "loss": {}, "scaler": {}, "torch_rng": torch.get_rng_state()}
    theirs = ckpt.save(tmp_path / "checkpoint_000003", state, other.to_dict())
    refuse(["train", micro_spec(tmp_path), "--resume", theirs, "--out", tmp_path / "trial"],
           f"{theirs}: state.pt does not fit this trial", "generator")


def test_truncated_pretrained_weights_are_named(tmp_path, refuse):
    weights = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, weights)
    _truncate(weights)
    spec = micro_spec(tmp_path, model={"backbone": "resnet50", "pretrained": str(weights)})
    refuse(["train", spec, "--out", tmp_path / "trial"], f"{weights}: unreadable pretrained weights")
