"""Tests for sharpkd.tiling: whole-image path, exactness for local networks, smooth blending."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sharpkd.errors import SharpkdError
from sharpkd.tiling import blend_window, num_tiles, pad_to_multiple, tile_starts, tiled_apply


def _local_net(depth: int, seed: int = 0):
    """A fixed stack of ``depth`` 3x3 convs (zero padding, tanh): receptive-field radius = depth."""
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(3, 3, 3, 3, generator=g) * 0.3 for _ in range(depth)]

    def fn(t):
        for w in ws:
            t = torch.tanh(F.conv2d(t, w, padding=1))
        return t

    return fn


def _global_net(t):
    """Non-local: every pixel depends on the whole input (per-image mean and max)."""
    return t * 0.7 + t.mean(dim=(2, 3), keepdim=True) - 0.1 * t.amax(dim=(1, 2, 3), keepdim=True)


@pytest.mark.parametrize("hw", [(1, 1), (7, 5), (37, 53), (64, 64), (120, 96)])
def test_whole_image_path_matches_padded_direct_call(hw):
    x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(1))
    got = tiled_apply(_global_net, x, tile=128, overlap=16, multiple_of=8)
    want = _global_net(pad_to_multiple(x, 8))[..., : hw[0], : hw[1]]
    assert got.shape == x.shape
    assert torch.allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("depth,overlap", [(1, 4), (1, 16), (2, 8), (4, 16)])
@pytest.mark.parametrize("hw", [(203, 301), (96, 250)])
def test_local_net_tiled_equals_whole(depth, overlap, hw):
    x = torch.rand(1, 3, *hw, generator=torch.Generator().manual_seed(2))
    fn = _local_net(depth)
    whole = tiled_apply(fn, x, tile=1024, overlap=overlap, multiple_of=8)
    assert num_tiles(*hw, tile=64, overlap=overlap) > 4
    tiled = tiled_apply(fn, x, tile=64, overlap=overlap, multiple_of=8)
    assert (tiled - whole).abs().max().item() < 1e-5


def test_receptive_field_beyond_margin_is_not_exact():
    """The guarantee is tight: radius 3 > overlap // 4 = 2 leaves detectable seams."""
    x = torch.rand(1, 3, 100, 140, generator=torch.Generator().manual_seed(3))
    fn = _local_net(3)
    whole = tiled_apply(fn, x, tile=1024, overlap=8)
    tiled = tiled_apply(fn, x, tile=48, overlap=8)
    assert (tiled - whole).abs().max().item() > 1e-4


@pytest.mark.parametrize("batch", [2, 3, 64])
def test_batching_tiles_does_not_change_result(batch):
    x = torch.rand(2, 3, 77, 131, generator=torch.Generator().manual_seed(4))
    fn = _local_net(2)
    ref = tiled_apply(fn, x, tile=32, overlap=8, batch=1)
    got = tiled_apply(fn, x, tile=32, overlap=8, batch=batch)
    assert torch.allclose(ref, got, atol=1e-6, rtol=0)
    # images of a batch are processed independently
    assert torch.allclose(got[1:], tiled_apply(fn, x[1:], tile=32, overlap=8), atol=1e-6, rtol=0)


def test_nonlocal_net_blends_without_seams():
    """Each tile adds its own mean; the blended offset field changes by at most (jump / ramp) per pixel."""
    torch.manual_seed(5)
    x = torch.rand(1, 1, 64, 200)
    x[..., 100:] += 2.0  # very different tile means left and right

    def fn(t):
        return t + t.mean(dim=(2, 3), keepdim=True)

    overlap = 32
    out = tiled_apply(fn, x, tile=64, overlap=overlap, multiple_of=8)
    offset = (out - x)[0, 0, 0]
    starts = tile_starts(200, 64, overlap)
    means = [x[..., s : s + 64].mean().item() for s in starts]
    max_jump = max(abs(a - b) for a, b in zip(means, means[1:]))
    ramp = overlap - 2 * (overlap // 4)
    steps = (offset[1:] - offset[:-1]).abs()
    assert steps.max().item() <= max_jump / ramp + 1e-5
    # and it really is a blend: offsets stay between the smallest and largest tile mean
    assert min(means) - 1e-5 <= offset.min().item() and offset.max().item() <= max(means) + 1e-5


@pytest.mark.parametrize("size,tile,overlap", [(100, 32, 8), (64, 64, 8), (65, 64, 0), (1000, 512, 32), (33, 8, 3)])
def test_tile_starts_cover_with_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    t = min(tile, size)
    assert starts[0] == 0 and starts[-1] + t == size
    for a, b in zip(starts, starts[1:]):
        assert 0 < b - a <= t - overlap


@pytest.mark.parametrize("overlap", [1, 4, 8, 13, 32])
def test_blend_windows_are_complementary(overlap):
    tile = 4 * overlap + 8
    a = blend_window(tile, overlap, left=False, right=True)
    b = blend_window(tile, overlap, left=True, right=False)
    step = tile - overlap
    total = torch.zeros(step + tile)
    total[:tile] += a
    total[step:] += b
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)
    assert a[0] == 1 and b[-1] == 1 and (a >= 0).all() and (b >= 0).all()


def test_4k_memory_bounded_by_tile():
    x = torch.rand(1, 3, 2160, 3840, generator=torch.Generator().manual_seed(6))
    seen = []

    def fn(t):
        seen.append(tuple(t.shape))
        return t * 0.5 + 0.25

    out = tiled_apply(fn, x, tile=512, overlap=32, batch=2, progress=True)
    assert max(s[2] for s in seen) <= 512 and max(s[3] for s in seen) <= 512 and max(s[0] for s in seen) <= 2
    assert sum(s[0] for s in seen) == num_tiles(2160, 3840, 512, 32)
    assert torch.allclose(out, x * 0.5 + 0.25, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [dict(tile=64, overlap=33), dict(tile=64, overlap=-1), dict(tile=4, multiple_of=8), dict(batch=0), dict(multiple_of=0)],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(SharpkdError):
        tiled_apply(lambda t: t, torch.zeros(1, 3, 100, 100), **kwargs)


def test_shape_changing_fn_is_reported():
    with pytest.raises(SharpkdError, match="changed the tile shape"):
        tiled_apply(lambda t: t[..., 1:, :], torch.zeros(1, 3, 100, 100), tile=32, overlap=8)


def test_rejects_non_4d():
    with pytest.raises(SharpkdError, match="NxCxHxW"):
        tiled_apply(lambda t: t, torch.zeros(3, 10, 10))
