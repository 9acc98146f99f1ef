"""Checkpoint files: written whole, read with weights_only=True, RNG states stored as tensors and plain values."""

from __future__ import annotations

import random

import numpy as np
import torch

from trainers.s4gan import checkpoint as ckpt


def draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.random()), float(torch.rand(1))


def test_every_global_rng_state_survives_a_weights_only_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    saved = ckpt.save(tmp_path / "checkpoint_000001", {"iteration": 1, **ckpt.rng_states()}, {"preset": "micro"})
    expected = draws()
    draws()  # move every generator on
    state = ckpt.load(saved, keys=("torch_rng", "python_rng", "numpy_rng"))  # weights_only=True inside
    ckpt.set_rng_states(state)
    assert draws() == expected
    assert not list(tmp_path.glob(".*tmp-*"))  # written whole
