"""Tests for sharpkd.inference.tiled.run_model: whole-image path, exact tiling for local networks,
windows, uint16, strength, and that `sharpkd sharpen` and the evaluate stage share it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sharpkd.tensors import img2tensor, tensor2img
from sharpkd.errors import SharpkdError
from sharpkd.inference.tiled import prepare, resume_key, run_many, run_model, window_cores, windows


class LocalNet(torch.nn.Module):
    """A fixed stack of ``depth`` 3x3 convs (replicate padding, sigmoid): receptive-field radius = depth."""

    def __init__(self, depth: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.ws = [torch.randn(3, 3, 3, 3, generator=g) * 0.3 for _ in range(depth)]
        self.calls: list[tuple[int, ...]] = []

    def forward(self, t):
        self.calls.append(tuple(t.shape))
        for w in self.ws:
            t = torch.sigmoid(F.conv2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), w))
        return t


def rand_img(h, w, seed=0, dtype=np.uint8):
    peak = 65535 if dtype == np.uint16 else 255
    return np.random.default_rng(seed).integers(0, peak + 1, (h, w, 3)).astype(dtype)


@pytest.mark.parametrize("hw", [(1, 1), (7, 5), (37, 53), (64, 64)])
def test_an_image_that_fits_one_window_is_the_direct_call(hw):
    img = rand_img(*hw)
    net = LocalNet(2)
    got = run_model(net, img, tile=64, overlap=8)
    with torch.no_grad():
        want = tensor2img(net(img2tensor(img)))
    assert got.dtype == np.uint8 and np.array_equal(got, want)


@pytest.mark.parametrize("depth,overlap", [(1, 4), (2, 4), (4, 8), (8, 16)])
@pytest.mark.parametrize("hw", [(203, 301), (96, 250)])
def test_local_net_tiled_equals_whole(depth, overlap, hw):
    """Exact when the receptive-field radius is at most overlap // 2 (up to one level of rounding)."""
    img = rand_img(*hw, seed=2)
    net = LocalNet(depth)
    whole = run_model(net, img, tile=1024, overlap=overlap)
    net.calls.clear()
    tiled = run_model(net, img, tile=64, overlap=overlap)
    assert len(net.calls) > 4 and max(max(c[2:]) for c in net.calls) <= 64
    assert np.abs(tiled.astype(int) - whole).max() <= 1


def test_receptive_field_beyond_half_the_overlap_shows_seams():
    img = rand_img(100, 140, seed=3)
    net = LocalNet(4)  # radius 4 > overlap // 2 = 1
    whole = run_model(net, img, tile=1024, overlap=2)
    tiled = run_model(net, img, tile=24, overlap=2)
    assert np.abs(tiled.astype(int) - whole).max() > 1


@pytest.mark.parametrize("batch", [2, 3, 64])
def test_batching_windows_does_not_change_the_result(batch):
    img = rand_img(77, 131, seed=4)
    net = LocalNet(2)
    assert np.array_equal(run_model(net, img, tile=32, overlap=8, batch=batch),
                          run_model(net, img, tile=32, overlap=8, batch=1))
    n_windows = len(windows(77, 32, 8)[0]) * len(windows(131, 32, 8)[0])
    assert max(c[0] for c in net.calls) == min(batch, n_windows)


@pytest.mark.parametrize("size,tile,overlap,multiple", [(100, 32, 8, 1), (64, 64, 8, 1), (65, 64, 0, 8),
                                                         (1080, 1024, 32, 1), (1920, 1024, 32, 8), (33, 8, 3, 1)])
def test_windows_cover_with_overlap_and_cores_partition(size, tile, overlap, multiple):
    starts, length = windows(size, tile, overlap, multiple)
    assert length <= tile and starts[0] == 0 and starts[-1] + length == size
    if len(starts) > 1:
        assert length % multiple == 0
    for a, b in zip(starts, starts[1:]):
        assert a + length - b >= overlap
    cores = window_cores(starts, length, size)
    assert cores[0][0] == 0 and cores[-1][1] == size
    assert all(b == c for (_, b), (c, _) in zip(cores, cores[1:]))
    for s, (a, b) in zip(starts, cores):  # every kept pixel is >= overlap // 2 from an interior edge
        assert s <= a < b <= s + length
        assert a == 0 or a - s >= overlap // 2
        assert b == size or s + length - b >= overlap // 2


def test_a_1080p_frame_in_1024_windows_computes_little_twice():
    (ys, h), (xs, w) = windows(1080, 1024, 32), windows(1920, 1024, 32)
    assert len(ys) * len(xs) * h * w < 1.06 * 1080 * 1920


def test_uint16_in_uint16_out_and_strength():
    img = rand_img(20, 30, seed=5, dtype=np.uint16)
    net = LocalNet(1)
    out = run_model(net, img, tile=64, overlap=8)
    assert out.dtype == np.uint16 and out.shape == img.shape
    assert np.array_equal(run_model(net, img, strength=0.0), img)
    x = img.astype(np.float64) / 65535
    m = out.astype(np.float64) / 65535
    half = run_model(net, img, strength=0.5).astype(np.float64) / 65535
    assert np.abs(half - (x + 0.5 * (m - x))).max() < 2e-5


@pytest.mark.parametrize("kwargs,match", [(dict(tile=64, overlap=33), "overlap"), (dict(tile=64, overlap=-1), "overlap"),
                                          (dict(tile=0), "tile"), (dict(batch=0), "batch")])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(SharpkdError, match=match):
        run_model(LocalNet(1), rand_img(10, 10), **kwargs)


def test_shape_changing_model_is_reported():
    with pytest.raises(SharpkdError, match="changed the image shape"):
        run_model(lambda t: t[..., 1:, :], rand_img(10, 10))


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 4), np.uint8)])
def test_rejects_what_is_not_an_rgb_image(bad):
    with pytest.raises(SharpkdError, match="HxWx3"):
        run_model(LocalNet(1), bad)


def test_prepare_puts_weights_channels_last_in_eval_mode():
    net = torch.nn.Conv2d(3, 8, 3).train()
    assert prepare(net) is net and not net.training
    assert net.weight.is_contiguous(memory_format=torch.channels_last)


def test_self_ensemble_of_an_equivariant_model_is_the_model():
    from sharpkd.inference.tiled import SelfEnsemble

    blur = torch.nn.Conv2d(3, 3, 3, padding=1, bias=False, groups=3)
    with torch.no_grad():
        blur.weight.copy_(torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]).div(16).expand(3, 1, 3, 3))
    x = torch.rand(1, 3, 13, 17)
    with torch.no_grad():
        assert (SelfEnsemble(blur)(x) - blur(x)).abs().max() < 1e-6


def test_self_ensemble_averages_the_eight_transforms():
    from sharpkd.inference.tiled import SelfEnsemble

    shift = lambda x: torch.roll(x, 1, dims=-1)  # noqa: E731 - not equivariant to flips or rotations
    x = torch.rand(1, 3, 6, 6)
    want = (shift(x) + torch.roll(x, -1, -1) + torch.roll(x, 1, -2) + torch.roll(x, -1, -2)) / 4
    got = SelfEnsemble(type("M", (torch.nn.Module,), {"forward": lambda self, t: shift(t)})())(x)
    assert torch.allclose(got, want, atol=1e-6)


class Stop(Exception):
    pass


def test_run_many_resumes_where_an_interrupted_run_stopped(tmp_path):
    """Outputs kept in resume_dir are read back, not recomputed, and are the same bytes."""
    images = [rand_img(9, 11, seed=s) for s in range(4)]
    net = LocalNet(2)
    direct = run_many(net, images, progress=False)
    assert len(net.calls) == 4

    class Dies(LocalNet):
        def forward(self, t):
            if len(self.calls) == 2:
                raise Stop  # killed after two images
            return super().forward(t)

    dying = Dies(2)
    with pytest.raises(Stop):
        run_many(dying, images, progress=False, resume_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not list(tmp_path.glob(".*"))  # no temp file left
    again = LocalNet(2)
    resumed = run_many(again, images, progress=False, resume_dir=tmp_path)
    assert len(again.calls) == 2  # only the two images the killed run had not finished
    for a, b in zip(direct, resumed):
        np.testing.assert_array_equal(a, b)
    assert len(list(tmp_path.glob("*.npy"))) == 4


def test_run_many_recomputes_an_unreadable_or_mismatched_saved_output(tmp_path):
    img = rand_img(8, 8)
    net = LocalNet(1)
    (first,) = run_many(net, [img], progress=False, resume_dir=tmp_path)
    (saved,) = tmp_path.glob("*.npy")
    saved.write_bytes(saved.read_bytes()[:40])  # cut short
    (again,) = run_many(net, [img], progress=False, resume_dir=tmp_path)
    np.testing.assert_array_equal(again, first)
    assert len(net.calls) == 2
    np.save(saved, np.zeros((2, 2, 3), np.uint8))  # readable, but not this image's shape
    (third,) = run_many(net, [img], progress=False, resume_dir=tmp_path)
    np.testing.assert_array_equal(third, first)
    assert len(net.calls) == 3


def test_resume_key_names_the_weights_and_the_settings():
    a = torch.nn.Conv2d(3, 3, 3, padding=1)
    b = torch.nn.Conv2d(3, 3, 3, padding=1)
    b.load_state_dict(a.state_dict())
    assert resume_key(a, tile=64, overlap=8) == resume_key(b, tile=64, overlap=8)
    assert resume_key(a, tile=64, overlap=8) != resume_key(a, tile=32, overlap=8)
    with torch.no_grad():
        b.weight[0, 0, 0, 0] += 1e-6  # one weight a little off: another teacher
    assert resume_key(a, tile=64, overlap=8) != resume_key(b, tile=64, overlap=8)


def test_resume_key_of_a_prepared_model_is_its_key():
    """prepare() puts weights channels_last: the key reads the same values, whatever the layout."""
    a = torch.nn.Conv2d(3, 3, 3, padding=1)
    before = resume_key(a, tile=64)
    assert resume_key(prepare(a), tile=64) == before
