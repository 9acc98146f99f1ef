"""A class-weight recipe in a real micro trial: resolved from the labeled split only and logged with the trial."""

import json

import numpy as np
import pytest

from trainers.config import TrialConfig
from trainers.data.cityscapes import find_pairs
from trainers.data.labels import CITYSCAPES
from trainers.data.pipeline import train_data
from trainers.data.stats import class_pixel_counts
from trainers.losses.weights import class_weights
from trainers.reporting import ListReporter
from trainers.s4gan.train import train

pytestmark = pytest.mark.slow


def test_an_inverse_frequency_trial_records_weights_from_the_labeled_split(tmp_path):
    cfg = TrialConfig.from_dict({"preset": "micro", "loss": {"name": "ce", "class_weights": "inverse"},
                                 "schedule": {"iterations": 2, "eval_every": 2, "checkpoint_every": 2}})
    result = train(cfg, reporter=ListReporter(), workdir=tmp_path / "trial")
    logged = json.loads((tmp_path / "trial" / "metrics.json").read_text())["info"]["loss"]
    assert logged == result.info["loss"]
    assert logged["name"] == "ce" and logged["class_weights"]["recipe"] == "inverse"

    data = train_data(cfg.dataset, batches={"labeled": 1, "labeled_d": 1, "unlabeled": 1}, seed=cfg.seed,
                      split_seed=cfg.split_seed, workers=0)
    labeled = class_pixel_counts(data.split.labeled, CITYSCAPES)
    assert logged["class_counts"]["pixels"] == dict(zip(CITYSCAPES.classes, labeled.pixels, strict=True))
    expected = class_weights("inverse", labeled.pixels, labeled.image_pixels, class_names=CITYSCAPES.classes)
    assert logged["class_weights"]["values"] == pytest.approx(list(expected.values))
    assert logged["class_weights"]["floored"] == list(expected.floored)

    everything = class_pixel_counts(find_pairs(data.root, "train"), CITYSCAPES)
    assert len(data.split.labeled) < everything.images
    assert not np.allclose(logged["class_weights"]["values"], class_weights("inverse", everything.pixels).values)
