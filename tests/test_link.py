"""The link's codec in the degradation: none is the report's, JPEG and H.264 are seeded-free and
deterministic, and the baselines see the same received frame as the networks."""

import numpy as np
import pytest

from sharpkd.classical import baseline_outputs
from sharpkd.degrade import CODECS, compress, degrade, downscale, link_params, transmitted
from sharpkd.errors import SharpkdError
from sharpkd.metrics import psnr


def photo(h=61, w=83, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 6 + 1, w // 6 + 1, 3)).astype(np.uint8)
    return np.ascontiguousarray(np.kron(base, np.ones((6, 6, 1), np.uint8))[:h, :w])


def test_none_is_the_reports_degradation():
    g = photo()
    assert np.array_equal(degrade(g, 0.6, codec="none"), degrade(g, 0.6))
    assert link_params({"scale": 0.6}) == {"codec": "none", "jpeg_quality": 75, "h264_crf": 23}


@pytest.mark.parametrize("codec", ["jpeg", "h264"])
def test_codecs_lose_detail_keep_the_size_and_are_deterministic(codec):
    g = photo()  # odd sizes: H.264's 4:2:0 needs even ones, padded and cropped back
    low = downscale(g, 0.6)
    a, b = compress(low, codec), compress(low, codec)
    assert a.shape == low.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert 20 < psnr(a, low) < 60
    assert psnr(degrade(g, codec=codec), g) < psnr(degrade(g), g)


@pytest.mark.parametrize("codec,key,good,poor", [("jpeg", "jpeg_quality", 95, 20), ("h264", "h264_crf", 12, 40)])
def test_the_quality_setting_orders_the_loss(codec, key, good, poor):
    low = downscale(photo(seed=1), 0.6)
    assert psnr(compress(low, codec, **{key: good}), low) > psnr(compress(low, codec, **{key: poor}), low) + 2


def test_baselines_start_from_the_received_frame():
    g = photo(seed=2)
    link = {"codec": "jpeg", "jpeg_quality": 50, "h264_crf": 23}
    outs = baseline_outputs(g, 0.6, link=link)
    assert np.array_equal(outs["identity"], degrade(g, 0.6, **link))
    assert not np.array_equal(outs["lanczos"], baseline_outputs(g, 0.6)["lanczos"])
    assert np.array_equal(transmitted(g, 0.6, **link), compress(downscale(g, 0.6), **link))


@pytest.mark.parametrize("kwargs", [{"codec": "vp9"}, {"codec": "jpeg", "jpeg_quality": 0},
                                    {"codec": "h264", "h264_crf": 60}])
def test_bad_settings_are_named(kwargs):
    with pytest.raises(SharpkdError, match="degrade\\."):
        compress(downscale(photo(), 0.6), **kwargs)
    assert set(CODECS) == {"none", "jpeg", "h264"}
