"""Class-weight recipes against hand-computed values, the counts they read from label PNGs, and their validation."""

import logging
import math

import numpy as np
import pytest
import torch
from PIL import Image

from trainers.config import ConfigError, LossConfig
from trainers.data.cityscapes import Pair
from trainers.data.labels import CITYSCAPES, IGNORE_INDEX
from trainers.data.stats import class_pixel_counts
from trainers.losses import build_loss
from trainers.losses import weights as W
from trainers.losses.options import LossOptionError, validate_loss_options

PIXEL_COUNTS = [1e5, 1e6, 1e7, 1e8, 1e9]  # the range of Cityscapes class pixel counts


def resolve(recipe, pixels, image_pixels=None, names=None):
    return np.array(W.class_weights(recipe, pixels, image_pixels, class_names=names).values)


def test_inverse_and_sqrt_inverse_are_renormalised_to_mean_one():
    n = [100.0, 400.0, 1600.0]
    assert np.allclose(resolve("inverse", n), np.array([16.0, 4.0, 1.0]) / 7)
    assert np.allclose(resolve("sqrt_inverse", n), np.array([4.0, 2.0, 1.0]) / 7 * 3)


def test_enet_weights_are_bounded_by_one_over_ln_c():
    n = [1.0, 1e3, 1e9]
    w = resolve("enet", n)
    assert w[0] == pytest.approx(1 / math.log(1.02), rel=1e-6)  # 50.50: the rarest class sits at the bound
    assert w.max() <= 1 / math.log(1.02)
    assert resolve("enet:1.10", n)[0] == pytest.approx(10.49, abs=0.01)  # ERFNet's ~10.4 for its rarest class
    assert w[2] == pytest.approx(1 / math.log(1.02 + 1e9 / sum(n)))


def test_effective_number_tends_to_inverse_frequency_as_beta_tends_to_one():
    n = np.array([10.0, 100.0, 1000.0])
    w = resolve("effective_number:0.999999999999", n)
    expected = (1 / n) / (1 / n).sum() * 3
    assert np.allclose(w, expected, rtol=1e-6)
    assert w.sum() == pytest.approx(3.0)


def test_effective_number_with_the_papers_beta_is_uniform_at_pixel_scale():
    assert np.allclose(resolve("effective_number:0.9999", PIXEL_COUNTS), 1.0, atol=1e-4)  # losses.md §1.3


def test_effective_number_default_beta_comes_from_the_median_count():
    cw = W.class_weights("effective_number", PIXEL_COUNTS)
    assert cw.parameter == {"beta": pytest.approx(1 - 1 / 1e7)}
    w = np.array(cw.values)
    assert w.sum() == pytest.approx(5.0)
    assert (np.diff(w) < 0).all() and w[0] / w[-1] > 50  # not uniform: rarer classes weigh more


def test_median_frequency_balancing_on_a_hand_made_three_class_example():
    # image A: 60 px of class 0, 40 of class 1; image B: 50 of class 0; image C: 20 of class 1, 60 of class 2
    pixels, image_pixels = [110, 60, 60], [150, 180, 80]
    # freq = [110/150, 60/180, 60/80], median 110/150
    assert np.allclose(resolve("median_freq", pixels, image_pixels), [1.0, 2.2, (110 / 150) / 0.75])


def write_label(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return Pair(path.with_name(path.name.replace("gtFine_labelTrainIds", "leftImg8bit")), path, True)


def test_class_pixel_counts_read_label_pngs_and_mask_ignore(tmp_path):
    x = IGNORE_INDEX
    a = np.array([[0] * 6 + [1] * 4] * 10)  # 60 px class 0, 40 px class 1
    a = np.vstack([a, np.full((1, 10), x)])  # 10 ignore pixels: counted nowhere
    b = np.zeros((5, 10))  # 50 px class 0
    c = np.vstack([np.full((2, 10), 1), np.full((6, 10), 2), np.full((3, 10), x)])  # 20 class 1, 60 class 2
    pairs = [write_label(tmp_path / f"{k}_gtFine_labelTrainIds.png", arr)
             for k, arr in zip("abc", (a, b, c), strict=True)]
    counts = class_pixel_counts(pairs, CITYSCAPES)
    assert counts.images == 3 and len(counts.pixels) == 19
    assert counts.pixels[:3] == (110, 60, 60) and sum(counts.pixels) == 230
    assert counts.image_pixels[:3] == (150, 180, 80) and set(counts.image_pixels[3:]) == {0}
    loss = build_loss(LossConfig(name="ce", options={"class_weights": "median_freq"}), ignore_index=x,
                      num_classes=19, class_counts=counts)
    w = loss.class_weights.double()
    # the 16 absent classes move the median; the ratios between the present ones are freq_0 / freq_c
    assert (w[1] / w[0]).item() == pytest.approx(2.2) and (w[2] / w[0]).item() == pytest.approx(110 / 150 / 0.75)
    assert loss.weights.floored == CITYSCAPES.classes[3:]


def test_zero_count_classes_are_floored_reported_and_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="trainers.losses.weights"):
        cw = W.class_weights("inverse", [0, 100, 1000, 0], class_names=["road", "car", "sky", "bus"])
    assert cw.floored == ("road", "bus")
    assert "road, bus" in caplog.text
    w = np.array(cw.values)
    assert np.isfinite(w).all() and w[0] == w[3] == w.max()
    assert cw.to_json()["floored"] == ["road", "bus"]
    mfb = W.class_weights("median_freq", [0, 100, 1000], [0, 500, 2000])
    assert np.isfinite(mfb.values).all() and mfb.values[0] == max(mfb.values)


@pytest.mark.parametrize("loss", ["ce", "focal", "combo"])
@pytest.mark.parametrize("recipe", ["inverse", "sqrt_inverse", "median_freq", "enet", "enet:1.1",
                                    "effective_number", "effective_number:0.99"])
def test_every_weighted_loss_accepts_every_recipe(loss, recipe):
    assert validate_loss_options(loss, {"class_weights": recipe})["class_weights"] == recipe


@pytest.mark.parametrize(("value", "message"), [
    ("inverted", r"unknown class-weight recipe 'inverted'; valid recipes are inverse, sqrt_inverse, median_freq, "
                 r"enet\[:<c>\], effective_number\[:<beta>\]"),
    ("inverse:2", r"recipe 'inverse' takes no parameter, but got 'inverse:2'"),
    ("enet:1", r"recipe 'enet': c must be a number > 1 .*, but got 1.0"),
    ("enet:x", r"recipe 'enet': c expects a number, but got 'x'"),
    ("effective_number:1", r"recipe 'effective_number': beta must be in \[0, 1\), but got 1.0"),
    ([1, "a"], r"option class_weights expects a list of numbers or a recipe name .*, but got \[1, 'a'\]"),
    (0.5, r"option class_weights expects a list of numbers or a recipe name, but got 0.5"),
])
def test_bad_class_weights_are_refused_with_the_rule_and_the_value(value, message):
    with pytest.raises(ConfigError, match=message):
        LossConfig(name="focal", options={"class_weights": value})


def test_a_recipe_needs_counts_and_counts_must_match_the_classes():
    cfg = LossConfig(name="ce", options={"class_weights": "inverse"})
    with pytest.raises(LossOptionError, match="is a recipe and needs the labeled split's class counts"):
        build_loss(cfg, ignore_index=255, num_classes=19)


def test_given_weights_are_recorded_as_given():
    loss = build_loss(LossConfig(name="ce", options={"class_weights": [1.0, 2.0]}), ignore_index=255, num_classes=2)
    assert loss.describe()["class_weights"] == {"recipe": "given", "values": [1.0, 2.0], "parameter": None,
                                                 "floored": []}
    assert torch.equal(loss.class_weights, torch.tensor([1.0, 2.0]))


def test_new_loss_options_are_validated():
    assert validate_loss_options("dice", {}) == {"squared": False, "smooth": 0.0}
    assert validate_loss_options("combo_paper", {"beta": 0.7}) == {"alpha": 0.5, "beta": 0.7}
    with pytest.raises(ConfigError, match=r"option squared expects true or false, but got 1"):
        validate_loss_options("dice", {"squared": 1})
    with pytest.raises(ConfigError, match=r"option alpha must be in \[0, 1\], or -1 .*, but got 2.0"):
        validate_loss_options("focal_ovr", {"alpha": 2})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) class_weights; its options are"):
        validate_loss_options("dice", {"class_weights": "inverse"})
