"""Tests for sharpkd.images: decoding rules, error handling, saving round trips."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from sharpkd import images as imageio
from sharpkd.errors import ImageDecodeError, SharpkdError
from sharpkd.images import LoadedImage, iter_image_files, load_image, load_rgb, save_image, save_png


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _rgb8(rng, h=6, w=7):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png16_raw(path: Path, arr: np.ndarray, colour_type: int) -> None:
    """Write a 16-bit PNG by hand (any colour type), samples in file order."""
    h, w = arr.shape[:2]
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------------
# listing


def test_iter_image_files_recursive_sorted_case_insensitive(tmp_path):
    for rel in ["b.PNG", "a/z.jpg", "a/y.JPEG", "c.txt", ".hidden.png", ".git/x.png", "a/.d/q.png", "d.tif", "e.gif"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    got = [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)]
    assert got == ["a/y.JPEG", "a/z.jpg", "b.PNG", "d.tif"]


def test_iter_image_files_missing_folder(tmp_path):
    with pytest.raises(SharpkdError, match="nope"):
        iter_image_files(tmp_path / "nope")


# ------------------------------------------------------------------------------------------
# decoding: modes


def test_rgb_png_exact(tmp_path, rng):
    a = _rgb8(rng)
    Image.fromarray(a).save(tmp_path / "x.png")
    out = load_rgb(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.shape == (6, 7, 3)
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grey_modes_replicated(tmp_path, rng, mode):
    g = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    img = Image.fromarray(g)
    if mode == "1":
        g = np.where(g >= 128, 255, 0).astype(np.uint8)
        img = Image.fromarray(g).convert("1")
    img.save(tmp_path / "g.png")
    out = load_rgb(tmp_path / "g.png")
    assert out.shape == (5, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_la_composited_over_white(tmp_path):
    g = np.array([[10, 200]], dtype=np.uint8)
    a = np.array([[255, 0]], dtype=np.uint8)
    Image.fromarray(np.dstack([g, a]), "LA").save(tmp_path / "la.png")
    out = load_rgb(tmp_path / "la.png")
    np.testing.assert_array_equal(out[0, 0], [10, 10, 10])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])
    full = load_image(tmp_path / "la.png")
    np.testing.assert_array_equal(full.alpha, a)
    assert full.bit_depth == 8 and full.mode == "LA"


def test_rgba_composited_over_white(tmp_path):
    rgba = np.array([[[0, 0, 0, 0], [100, 50, 0, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])  # fully transparent -> white
    np.testing.assert_array_equal(out[0, 1], [100, 50, 0])  # opaque unchanged
    np.testing.assert_array_equal(out[0, 2], [127, 127, 127])  # round(255 * 127 / 255)
    full = load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(full.rgb, rgba[..., :3])
    np.testing.assert_array_equal(full.alpha, rgba[..., 3])


def test_grey16_png(tmp_path):
    g = np.array([[0, 128, 129, 257 * 200 + 128, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g)
    full = load_image(tmp_path / "g16.png")
    assert full.bit_depth == 16 and full.rgb.dtype == np.uint16 and full.alpha is None
    np.testing.assert_array_equal(full.rgb[..., 1], g)
    out = load_rgb(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 0], np.round(g / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 1, 200, 255])


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_rgb16_written_by_cv2(tmp_path, rng, ext):
    rgb = rng.integers(0, 65536, (4, 5, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / f"c{ext}"), rgb[..., ::-1])  # cv2 wants BGR
    full = load_image(tmp_path / f"c{ext}")
    assert full.bit_depth == 16 and full.mode == "RGB;16"
    np.testing.assert_array_equal(full.rgb, rgb)  # full precision, channel order fixed
    np.testing.assert_array_equal(load_rgb(tmp_path / f"c{ext}"), np.round(rgb / 257.0).astype(np.uint8))


def test_la16_png_keeps_precision(tmp_path):
    la = np.array([[[1000, 65535], [30000, 0]]], dtype=np.uint16)
    _png16_raw(tmp_path / "la16.png", la, colour_type=4)
    full = load_image(tmp_path / "la16.png")
    assert full.bit_depth == 16
    np.testing.assert_array_equal(full.rgb[0, :, 0], [1000, 30000])
    np.testing.assert_array_equal(full.alpha, [[65535, 0]])
    np.testing.assert_array_equal(load_rgb(tmp_path / "la16.png")[0], [[4, 4, 4], [255, 255, 255]])


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    out = load_rgb(tmp_path / "cmyk.jpg")
    assert out.shape == (16, 16, 3)
    np.testing.assert_allclose(out[8, 8].astype(int), [255, 0, 0], atol=6)  # pure red


def test_palette_png_with_transparency(tmp_path):
    p = Image.new("P", (3, 1))
    p.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0] + [0] * (256 * 3 - 9))
    p.putdata([0, 1, 2])
    p.save(tmp_path / "p.png", transparency=2)
    out = load_rgb(tmp_path / "p.png")
    np.testing.assert_array_equal(out[0], [[255, 0, 0], [0, 0, 255], [255, 255, 255]])
    full = load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(full.alpha, [[255, 255, 0]])
    p.save(tmp_path / "p_opaque.png")
    assert load_image(tmp_path / "p_opaque.png").alpha is None


def test_exif_rotated_jpeg_is_upright(tmp_path):
    # Stored 32 wide x 16 high, red block at the top-left; orientation 6 = rotate 90 deg clockwise.
    a = np.zeros((16, 32, 3), dtype=np.uint8)
    a[:8, :8] = [255, 0, 0]
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_rgb(tmp_path / "rot.jpg")
    assert out.shape == (32, 16, 3)  # width and height swapped
    assert out[2, 13, 0] > 200 and out[2, 13, 1] < 60  # red now at the top-right
    assert out[2, 2].max() < 60 and out[29, 2].max() < 60


def test_exif_rotation_applies_to_16bit_cv2_path(tmp_path):
    rgb = np.zeros((2, 3, 3), dtype=np.uint16)
    rgb[0, 0] = [65535, 0, 0]
    cv2.imwrite(str(tmp_path / "r16.png"), rgb[..., ::-1])
    exif = Image.Exif()
    exif[0x0112] = 6
    # Add an eXIf chunk before IEND.
    data = (tmp_path / "r16.png").read_bytes()
    body = exif.tobytes()
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body + struct.pack(">I", zlib.crc32(b"eXIf" + body))
    (tmp_path / "r16.png").write_bytes(data[:-12] + chunk + data[-12:])
    full = load_image(tmp_path / "r16.png")
    assert full.rgb.shape == (3, 2, 3)
    np.testing.assert_array_equal(full.rgb[0, 1], [65535, 0, 0])


@pytest.mark.parametrize(
    "mode, values, expected",
    [
        ("I", np.array([[-5, 1000, 70000]], dtype=np.int32), [0, 1000, 65535]),
        ("F", np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [0, 32768, 65535]),
        ("F", np.array([[0.0, 127.5, 300.0]], dtype=np.float32), [0, 32768, 65535]),
    ],
)
def test_int_and_float_modes(tmp_path, mode, values, expected):
    Image.fromarray(values, mode).save(tmp_path / "x.tif")
    full = load_image(tmp_path / "x.tif")
    assert full.bit_depth == 16 and full.mode == mode
    np.testing.assert_array_equal(full.rgb[0, :, 2], expected)


# ------------------------------------------------------------------------------------------
# decoding: failures


def _good_bytes(tmp_path, rng, ext):
    Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(tmp_path / f"good{ext}")
    return (tmp_path / f"good{ext}").read_bytes()


@pytest.mark.parametrize("ext", [".png", ".jpg"])
@pytest.mark.parametrize("keep", [0.5, 0.9, -1])
def test_truncated_files_fail_on_load(tmp_path, rng, ext, keep):
    data = _good_bytes(tmp_path, rng, ext)
    n = len(data) - 1 if keep == -1 else int(len(data) * keep)
    bad = tmp_path / f"cut{ext}"
    bad.write_bytes(data[:n])
    with pytest.raises(ImageDecodeError) as ei:
        load_rgb(bad)
    assert str(bad) in str(ei.value)
    err = ei.value  # no chained library traceback is shown
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("garbage.png", bytes(range(256)) * 3, "not a recognised image"),
        ("empty.jpg", b"", "empty"),
        ("text.jpg", b"hello, this is not an image\n", "not a recognised image"),
    ],
)
def test_undecodable_files(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason) as ei:
        load_rgb(tmp_path / name)
    assert str(tmp_path / name) in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="not found"):
        load_rgb(tmp_path / "absent.png")


def test_corrupt_png_data(tmp_path, rng):
    data = bytearray(_good_bytes(tmp_path, rng, ".png"))
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "flip.png").write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError, match="flip.png"):
        load_rgb(tmp_path / "flip.png")


def test_decompression_bomb(tmp_path, rng, monkeypatch):
    _good_bytes(tmp_path, rng, ".png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 32*40 > 2*100 -> Pillow's bomb error
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_rgb(tmp_path / "good.png")


# ------------------------------------------------------------------------------------------
# saving


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_lossless_round_trip(tmp_path, rng, ext, dtype, with_alpha):
    top = np.iinfo(dtype).max + 1
    rgb = rng.integers(0, top, (5, 6, 3)).astype(dtype)
    alpha = rng.integers(0, top, (5, 6)).astype(dtype) if with_alpha else None
    path = save_image(tmp_path / f"o{ext}", rgb, alpha)
    back = load_image(path)
    assert isinstance(back, LoadedImage)
    assert back.bit_depth == (16 if dtype == np.uint16 else 8)
    np.testing.assert_array_equal(back.rgb, rgb)
    if with_alpha:
        np.testing.assert_array_equal(back.alpha, alpha)
    else:
        assert back.alpha is None
    assert [p.name for p in tmp_path.iterdir()] == [f"o{ext}"]


def test_rgba16_tiff_readable_by_cv2(tmp_path, rng):
    rgb = rng.integers(0, 65536, (3, 4, 3)).astype(np.uint16)
    alpha = rng.integers(0, 65536, (3, 4)).astype(np.uint16)
    save_image(tmp_path / "o.tif", rgb, alpha)
    bgra = cv2.imread(str(tmp_path / "o.tif"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(bgra[..., 2::-1], rgb)
    np.testing.assert_array_equal(bgra[..., 3], alpha)


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".bmp", ".webp"])
def test_16bit_to_8bit_formats(tmp_path, ext):
    rgb = np.full((8, 8, 3), 257 * 100, dtype=np.uint16)
    rgb[..., 1] = 257 * 200
    save_image(tmp_path / f"o{ext}", rgb)
    back = load_image(tmp_path / f"o{ext}")
    assert back.bit_depth == 8
    np.testing.assert_allclose(back.rgb[4, 4].astype(int), [100, 200, 100], atol=2)


def test_jpeg_drops_alpha_over_white(tmp_path):
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    alpha = np.zeros((8, 8), dtype=np.uint8)
    save_image(tmp_path / "o.jpg", rgb, alpha)
    back = load_image(tmp_path / "o.jpg")
    assert back.alpha is None and back.rgb.min() >= 250


def test_webp_keeps_alpha(tmp_path, rng):
    rgb = _rgb8(rng)
    alpha = np.full((6, 7), 255, dtype=np.uint8)
    alpha[0, 0] = 0
    save_image(tmp_path / "o.webp", rgb, alpha)
    assert load_image(tmp_path / "o.webp").alpha is not None


@pytest.mark.parametrize(
    "name, rgb, alpha, match",
    [
        ("o.gif", np.zeros((2, 2, 3), np.uint8), None, "extension"),
        ("o.png", np.zeros((2, 2, 2), np.uint8), None, "HxWx3"),
        ("o.png", np.zeros((2, 2, 3), np.float32), None, "uint8 or uint16"),
        ("o.png", np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.uint16), "alpha"),
    ],
)
def test_save_image_rejects_bad_input(tmp_path, name, rgb, alpha, match):
    with pytest.raises(SharpkdError, match=match):
        save_image(tmp_path / name, rgb, alpha)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_nothing_on_failure(tmp_path, rng, monkeypatch):
    target = tmp_path / "o.png"
    target.write_bytes(b"old")

    def boom(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_image(target, _rgb8(rng))
    with pytest.raises(OSError, match="disk full"):
        save_png(tmp_path / "new.png", _rgb8(rng))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]
    assert target.read_bytes() == b"old"


def test_atomic_16bit_failure_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(cv2, "imencode", lambda *a, **k: (False, None))
    with pytest.raises(SharpkdError, match="encode"):
        save_image(tmp_path / "o.png", np.zeros((2, 2, 3), np.uint16))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 3), (4, 5, 4)])
def test_save_png(tmp_path, rng, shape):
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    save_png(tmp_path / "s.png", arr)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "s.png")), arr)


def test_save_png_rejects_uint16(tmp_path):
    with pytest.raises(SharpkdError):
        save_png(tmp_path / "s.png", np.zeros((2, 2, 3), np.uint16))


def test_to_uint8_is_round_v_over_257():
    v = np.arange(65536, dtype=np.uint16)
    np.testing.assert_array_equal(imageio.to_8bit(v), np.round(v / 257.0).astype(np.uint8))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_numpy_orientation_matches_pillow(rng, orientation):
    from PIL import ImageOps

    a = rng.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    img = Image.fromarray(a)
    img.getexif()[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(img))
    np.testing.assert_array_equal(imageio._apply_orientation(a, orientation), expected)
