"""The statistics of tools/seeds.py."""

import math

import pytest

from tools.seeds import interval, summarise


def test_interval_is_the_t_interval_of_the_mean():
    got = interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.302653: half-width 4.302653 / sqrt(3)
    assert got["mean"] == 2.0 and got["sd"] == pytest.approx(1.0)
    assert got["ci95_high"] - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert got["ci95_low"] == pytest.approx(4.0 - got["ci95_high"])


def test_summarise_pairs_by_seed_and_by_image():
    per_image = {"gt_only": {0: [30.0, 31.0, 32.0], 1: [30.2, 31.0, 31.8]},
                 "distilled": {0: [30.1, 31.2, 31.9], 1: [30.4, 31.1, 31.8]}}
    r = summarise(per_image)
    assert r["arms"]["gt_only"]["psnr"] == pytest.approx([31.0, 31.0])
    assert r["seed_paired"]["mean"] == pytest.approx(((0.1 + 0.2 - 0.1) / 3 + (0.2 + 0.1 + 0.0) / 3) / 2)
    assert r["image_paired"]["images"] == 3
    assert r["image_paired"]["ahead"] == 2  # image 3: -0.1 and 0.0 average below zero
    assert r["image_paired"]["mean"] == pytest.approx(r["seed_paired"]["mean"])  # same mean, other spread
