"""Image files in and out: robust decoding to RGB arrays, atomic saving, folder listing.

Two loaders share one decoder:

* :func:`load_rgb` gives the training pipeline what it needs: an ``HxWx3`` ``uint8`` RGB array.
* :func:`load_image` gives the product command more: 16-bit samples and the alpha channel are
  kept, so that :func:`save_image` can write the result back without losing them.

Decoding rules (applied in this order):

1. The file is fully decoded with Pillow (``img.load()``), so a truncated or corrupt file fails
   here and not later in a training worker.  Pillow's decompression-bomb limit
   (``Image.MAX_IMAGE_PIXELS``; an error above twice that) is kept.
2. The EXIF orientation tag is applied (``ImageOps.exif_transpose``): the array is upright.
3. The Pillow mode is mapped to RGB (+ optional alpha), 8 or 16 bits per sample:

   ========================  ====================================================================
   mode                      rule
   ========================  ====================================================================
   ``1``                     black/white -> 0/255, replicated to R=G=B
   ``L``                     grey replicated to R=G=B
   ``LA``, ``La``            grey replicated, alpha kept (``La``, premultiplied, is un-premultiplied)
   ``P``, ``PA``             palette expanded to RGB; the palette's transparency becomes alpha
   ``L``/``RGB`` + tRNS      the transparent colour key becomes alpha
   ``RGB``, ``RGBX``         as is (padding byte dropped)
   ``RGBA``, ``RGBa``        RGB + alpha (``RGBa`` is un-premultiplied)
   ``CMYK``                  Pillow's CMYK->RGB conversion (ICC profiles are not applied)
   ``YCbCr``, ``LAB``, HSV   Pillow's conversion to RGB
   ``I;16*``                 16-bit grey replicated to R=G=B (16 bits)
   ``I`` (32-bit int)        clipped to [0, 65535], treated as 16-bit grey
   ``F`` (32-bit float)      on a [0, 1] scale if all finite values lie in [0, 1], else on a
                             [0, 255] scale; NaN -> 0; clipped; stored as 16-bit grey
   16-bit RGB/RGBA/LA PNG,   Pillow keeps only the high byte of these, so the samples are
   16-bit RGB/RGBA TIFF      decoded again with OpenCV at full 16-bit precision
   ========================  ====================================================================

:func:`load_rgb` then composites any alpha over white,
``out = (rgb * a + M * (M - a)) / M`` with ``M`` the maximum sample value (255 or 65535), and
reduces 16-bit samples to 8 bits with ``round(v / 257)`` (exact inverse of ``v8 * 257``).

Everything that cannot be decoded (missing, empty, garbage, truncated, bomb, unsupported mode)
raises :class:`~sharpkd.errors.ImageDecodeError` naming the file and the reason.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import warnings
from pathlib import Path

import numpy as np

from sharpkd.errors import ImageDecodeError, SharpkdError
from sharpkd.files import atomic_path

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
)
"""Still-image extensions (lowercase) that folder listings pick up.

GIF is left out on purpose: 256-colour palettes and animations are poor sharpness data.
:func:`load_rgb` still decodes a GIF (first frame) when given one explicitly."""

# Formats save_image can write, by extension, and whether they hold 16 bits / alpha.
_SAVE_FORMATS: dict[str, tuple[str, bool, bool]] = {
    ".png": ("PNG", True, True),
    ".jpg": ("JPEG", False, False),
    ".jpeg": ("JPEG", False, False),
    ".webp": ("WEBP", False, True),
    ".tif": ("TIFF", True, True),
    ".tiff": ("TIFF", True, True),
    ".bmp": ("BMP", False, False),
}

JPEG_QUALITY = 95
GREY_MODES: frozenset[str] = frozenset({"1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N", "I", "F", "LA;16"})
"""Source modes :attr:`LoadedImage.grey` reports as grey."""
WEBP_QUALITY = 95


@dataclasses.dataclass
class LoadedImage:
    """A decoded image with as much of the source kept as the product needs.

    Attributes:
        rgb: ``HxWx3`` array, ``uint8`` (``bit_depth == 8``) or ``uint16`` (``bit_depth == 16``).
        alpha: ``HxW`` array of the same dtype, or ``None`` when the source has no transparency.
        bit_depth: 8 or 16.
        mode: the source's Pillow mode (``"RGB"``, ``"I;16"``, ``"CMYK"``, ...); 16-bit colour
            PNG/TIFF files decoded with OpenCV are reported as ``"RGB;16"``, ``"RGBA;16"`` or
            ``"LA;16"``.
        frames: how many frames (animated GIF/WebP/PNG) or pages (TIFF) the file holds; the
            arrays are the first one's.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    mode: str
    frames: int = 1  # frames (animated GIF, WebP, PNG) or pages (TIFF) in the file; rgb is the first

    @property
    def grey(self) -> bool:
        """True when the source is a grey image (``1``, ``L``, ``LA``, ``I;16*``, ``I``, ``F``,
        16-bit grey+alpha): :func:`save_image` should get it back as grey (``HxW``)."""
        return self.mode in GREY_MODES

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


# --------------------------------------------------------------------------------------------
# Folder listing


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def iter_visible_files(root: str | os.PathLike) -> list[Path]:
    """All regular files under ``root`` (recursive), sorted by relative POSIX path.

    Hidden files and hidden folders (name starting with ``.``) below ``root`` are skipped; symlinked
    folders are not followed; a folder that cannot be read is skipped with one warning naming it.
    Raises :class:`SharpkdError` if ``root`` is not a folder.
    """
    import warnings

    root = Path(root)
    if not root.is_dir():
        raise SharpkdError(f"{root}: not a folder (expected a folder of images)")
    found: list[tuple[str, Path]] = []
    def unreadable(exc: OSError) -> None:
        warnings.warn(f"{exc.filename}: cannot read this folder ({exc.strerror or exc}); its files are skipped",
                      stacklevel=2)

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = [d for d in dirnames if not _is_hidden(d)]
        for name in filenames:
            if _is_hidden(name):
                continue
            path = Path(dirpath) / name
            if path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    found.sort(key=lambda item: item[0])
    return [path for _, path in found]


def has_image_extension(path: str | os.PathLike) -> bool:
    """True if the file name ends in one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def iter_image_files(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root``: recursive, by extension (case-insensitive), hidden entries
    skipped, sorted by relative POSIX path (deterministic on every OS)."""
    return [p for p in iter_visible_files(root) if has_image_extension(p)]


# --------------------------------------------------------------------------------------------
# Decoding


def _fail(path: Path, reason: str) -> ImageDecodeError:
    err = ImageDecodeError(f"{path}: cannot read image: {reason}")
    err.path = path  # type: ignore[attr-defined]
    err.reason = reason  # type: ignore[attr-defined]
    return err


def _png_colour_type(path: Path) -> int | None:
    """The IHDR colour type of a PNG (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA), else None."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[25]


def _png_high_depth_colour(path: Path) -> bool:
    """True for a PNG whose IHDR says 16 bits per sample with colour or grey+alpha."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return False
    depth, colour_type = struct.unpack(">BB", head[24:26])
    return depth == 16 and colour_type in (2, 4, 6)


def _needs_cv2(img, path: Path) -> bool:
    if img.format == "PNG":
        return img.mode in ("RGB", "RGBA", "LA") and _png_high_depth_colour(path)
    if img.format == "TIFF" and img.mode in ("RGB", "RGBA"):
        bits = getattr(img, "tag_v2", {}).get(258)
        if isinstance(bits, tuple):
            return any(b == 16 for b in bits)
        return bits == 16
    return False


def _verify_png(path: Path) -> None:
    """Check every PNG chunk's CRC and the final IEND chunk (Pillow's ``load`` accepts a PNG that
    stops after its last image row)."""
    from PIL import Image

    with Image.open(path) as img:
        img.verify()
    with open(path, "rb") as f:
        f.seek(-12, os.SEEK_END)
        tail = f.read(12)
    if tail[4:8] != b"IEND":
        raise _fail(path, "file is truncated or incomplete (PNG ends without an IEND chunk)")


def _apply_orientation(arr: np.ndarray, orientation: int | None) -> np.ndarray:
    """Numpy equivalent of ``ImageOps.exif_transpose`` for EXIF orientations 1..8."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = np.rot90(arr, k=-1)
    elif orientation == 7:
        arr = arr[::-1, ::-1].swapaxes(0, 1)  # transverse
    elif orientation == 8:
        arr = np.rot90(arr, k=1)
    return np.ascontiguousarray(arr)


def _decode_cv2_16(path: Path, orientation: int | None, mode: str) -> LoadedImage:
    import cv2

    raw = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16 or raw.ndim != 3 or raw.shape[2] not in (3, 4):
        got = "nothing" if raw is None else f"{raw.dtype} array of shape {raw.shape}"
        raise _fail(path, f"OpenCV could not decode the 16-bit {mode} data (got {got})")
    raw = _apply_orientation(raw, orientation)
    rgb = np.ascontiguousarray(raw[..., 2::-1])
    alpha = np.ascontiguousarray(raw[..., 3]) if raw.shape[2] == 4 else None
    if raw.shape[2] == 4 and _png_colour_type(path) == 4:
        mode = "LA"  # Pillow opens a 16-bit grey+alpha PNG as "RGBA"
    src_mode = {"RGB": "RGB;16", "RGBA": "RGBA;16", "LA": "LA;16"}.get(mode, mode + ";16")
    return LoadedImage(rgb=rgb, alpha=alpha, bit_depth=16, mode=src_mode)


def _grey16(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2))


def _float_to_16(arr: np.ndarray) -> np.ndarray:
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=np.inf, neginf=-np.inf)
    finite = arr[np.isfinite(arr)]
    scale = 1.0 if finite.size == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0) else 255.0
    return np.round(np.clip(arr / scale, 0.0, 1.0) * 65535.0).astype(np.uint16)


def _to_loaded(img, mode: str) -> LoadedImage:
    """Map a loaded, upright Pillow image to a :class:`LoadedImage` (see module table)."""
    has_key = "transparency" in img.info
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return LoadedImage(_grey16(np.asarray(img).astype(np.uint16)), None, 16, mode)
    if mode == "I":
        arr = np.clip(np.asarray(img).astype(np.int64), 0, 65535).astype(np.uint16)
        return LoadedImage(_grey16(arr), None, 16, mode)
    if mode == "F":
        return LoadedImage(_grey16(_float_to_16(np.asarray(img))), None, 16, mode)
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode in ("P", "L", "RGB") and has_key):
        if mode == "La":
            img = img.convert("LA")
        rgba = np.asarray(img.convert("RGBA"))
        return LoadedImage(np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3]), 8, mode)
    if mode == "RGB":
        return LoadedImage(np.ascontiguousarray(np.asarray(img)), None, 8, mode)
    if mode in ("1", "L", "P", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        if mode == "1":
            img = img.convert("L")
        return LoadedImage(np.ascontiguousarray(np.asarray(img.convert("RGB"))), None, 8, mode)
    raise ValueError(f"unsupported image mode {mode!r}")


def load_image(path: str | os.PathLike) -> LoadedImage:
    """Decode ``path`` keeping 16-bit samples and alpha (see the module docstring for the rules).

    Raises :class:`ImageDecodeError` (naming the file and the reason) for anything undecodable.
    """
    from PIL import Image, ImageOps

    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except OSError as e:
        raise _fail(path, f"cannot access file ({e.strerror or e})") from None
    if not path.is_file():
        raise _fail(path, "not a regular file")
    if size == 0:
        raise _fail(path, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns about corrupt EXIF and the like; the image itself is what matters.
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(path) as img:
                img.load()
                if img.format == "PNG":
                    _verify_png(path)
                mode = img.mode
                orientation = img.getexif().get(0x0112)
                frames = max(1, int(getattr(img, "n_frames", 1) or 1))
                if _needs_cv2(img, path):
                    loaded = _decode_cv2_16(path, orientation, mode)
                else:
                    # exif_transpose copies the whole image even when there is nothing to turn
                    upright = ImageOps.exif_transpose(img) if orientation in range(2, 9) else img
                    loaded = _to_loaded(upright, upright.mode)
                loaded.frames = frames
                return loaded
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise _fail(path, f"image too large, possible decompression bomb ({e})") from None
    except Image.UnidentifiedImageError:
        raise _fail(path, "not a recognised image format (corrupt or not an image)") from None
    except MemoryError:
        raise _fail(path, "not enough memory to decode") from None
    except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, struct.error, ...
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            msg = f"file is truncated or incomplete ({msg})"
        raise _fail(path, msg) from None


def to_8bit(arr: np.ndarray) -> np.ndarray:
    """``uint16 -> uint8`` with ``round(v / 257)``; ``uint8`` passes through."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype != np.uint16:
        raise SharpkdError(f"expected a uint8 or uint16 image array, got {arr.dtype}")
    # (v + 128) // 257 == round(v / 257) for all uint16 v (no exact .5 ties exist).
    return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)


def flatten_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Composite ``rgb`` over white with ``alpha``: ``(rgb * a + M * (M - a)) / M``, rounded.

    ``M`` is 255 for ``uint8`` and 65535 for ``uint16``; the dtype is kept.
    """
    if alpha is None:
        return rgb
    m = 255.0 if rgb.dtype == np.uint8 else 65535.0
    a = alpha.astype(np.float64)
    if rgb.ndim == 3:
        a = a[..., None]
    out = (rgb.astype(np.float64) * a + m * (m - a)) / m
    return np.round(out).astype(rgb.dtype)


def grey_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """``HxWx3`` -> ``HxW``: the rounded mean of the three channels (same dtype).  For a grey
    source run through a colour model, whose channels then differ by a level or two."""
    total = rgb.astype(np.uint32).sum(axis=2)
    return ((total + 1) // 3).astype(rgb.dtype)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` to an upright ``HxWx3`` ``uint8`` RGB array for training.

    Alpha is composited over white, then 16-bit samples become ``round(v / 257)``.
    Raises :class:`ImageDecodeError` naming the file and the reason.
    """
    img = load_image(path)
    if img.alpha is None:
        return to_8bit(img.rgb)
    m = 255.0 if img.bit_depth == 8 else 65535.0
    a = img.alpha.astype(np.float64)[..., None]
    comp = (img.rgb.astype(np.float64) * a + m * (m - a)) / m
    if img.bit_depth == 16:
        comp /= 257.0  # composite at full precision, round to 8 bits once
    return np.clip(np.round(comp), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Saving


def _check_arrays(rgb: np.ndarray, alpha: np.ndarray | None) -> None:
    if not isinstance(rgb, np.ndarray) or not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 3)):
        shape = getattr(rgb, "shape", None)
        raise SharpkdError(f"save_image expects an HxWx3 RGB or HxW grey array, got shape {shape}")
    if rgb.dtype not in (np.uint8, np.uint16):
        raise SharpkdError(f"save_image expects uint8 or uint16 samples, got {rgb.dtype}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise SharpkdError(f"save_image got an empty image of shape {rgb.shape}")
    if alpha is not None:
        if not isinstance(alpha, np.ndarray) or alpha.shape != rgb.shape[:2] or alpha.dtype != rgb.dtype:
            raise SharpkdError(
                f"alpha must be an HxW {rgb.dtype} array matching rgb {rgb.shape[:2]}, "
                f"got {getattr(alpha, 'dtype', None)} {getattr(alpha, 'shape', None)}"
            )


def _png16_bytes(samples: np.ndarray) -> bytes:
    """Encode ``HxWx2`` grey+alpha ``uint16`` as a PNG (colour type 4; OpenCV writes 1, 3 or 4
    channels only).  Filter type 0 on every row, zlib level 6."""
    import zlib

    h, w, c = samples.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = np.ascontiguousarray(samples.astype(">u2")).view(np.uint8).reshape(h, w * c * 2)
    raw = np.hstack([np.zeros((h, 1), np.uint8), rows]).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def _tiff16_bytes(samples: np.ndarray) -> bytes:
    """Encode ``uint16`` ``HxWx3`` RGB, ``HxWx4`` RGBA, ``HxW`` grey or ``HxWx2`` grey+alpha as a
    baseline little-endian TIFF.

    One deflate-compressed strip with horizontal differencing (Predictor 2).  Written here rather
    than with OpenCV because OpenCV does not mark a fourth channel as alpha (ExtraSamples), so
    readers warn and may not treat it as transparency; Pillow cannot write 16-bit colour at all.
    """
    import zlib

    if samples.ndim == 2:
        samples = samples[..., None]
    h, w, c = samples.shape
    diff = samples.astype(np.uint16, copy=True)
    diff[:, 1:] = samples[:, 1:] - samples[:, :-1]  # uint16 wrap-around, as Predictor 2 expects
    strip = zlib.compress(diff.astype("<u2").tobytes(), 6)
    bits_offset = 8 + len(strip)
    bits = struct.pack(f"<{c}H", *([16] * c))
    ifd_offset = bits_offset + len(bits)
    ifd_offset += ifd_offset % 2  # IFDs start on a word boundary
    short, long_ = 3, 4
    entries = [
        (256, long_, 1, w),
        (257, long_, 1, h),
        (258, short, c, bits_offset if c > 2 else None),  # 1 or 2 shorts fit in the entry itself
        (259, short, 1, 8),  # Adobe deflate
        (262, short, 1, 2 if c >= 3 else 1),  # RGB | BlackIsZero (grey)
        (273, long_, 1, 8),  # strip offset
        (277, short, 1, c),
        (278, long_, 1, h),  # rows per strip
        (279, long_, 1, len(strip)),
        (284, short, 1, 1),  # chunky
        (317, short, 1, 2),  # horizontal predictor
    ]
    if c in (2, 4):
        entries.append((338, short, 1, 2))  # ExtraSamples: unassociated alpha
    ifd = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if value is None:  # BitsPerSample inline: 16 for each of the 1 or 2 samples
            ifd += struct.pack("<HHIHH", tag, typ, count, 16, 16 if count == 2 else 0)
        elif typ == short and count == 1:
            ifd += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            ifd += struct.pack("<HHII", tag, typ, count, value)
    ifd += struct.pack("<I", 0)
    out = b"II*\x00" + struct.pack("<I", ifd_offset) + strip + bits
    return out + b"\x00" * (ifd_offset - len(out)) + ifd


#: The largest width or height each format can store (WebP: 14-bit sizes; JPEG: 16-bit ones).
_MAX_SIDE = {"WEBP": 16383, "JPEG": 65535}


def save_image(path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None) -> Path:
    """Write ``rgb`` (``HxWx3`` ``uint8``/``uint16``, or ``HxW`` for grey) and optional ``alpha``
    atomically.  A grey array is written as a grey file (8 or 16 bits as given) where the format
    has grey (PNG, TIFF, JPEG, BMP); WebP has no grey mode, so there R = G = B.

    The format comes from the extension: ``.png``, ``.jpg``/``.jpeg`` (quality 95, no chroma
    subsampling), ``.webp`` (quality 95), ``.tif``/``.tiff`` (deflate), ``.bmp``.
    16-bit data is kept in PNG (written with OpenCV, channel order BGR(A)) and TIFF (own small
    deflate encoder, alpha marked as ExtraSamples); other formats
    get ``round(v / 257)``.  Formats without alpha (JPEG, BMP) get the image composited over white.
    Returns the path written.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _SAVE_FORMATS:
        raise SharpkdError(
            f"{path}: cannot save images with extension {ext or '(none)'!r}; "
            f"use one of {', '.join(sorted(_SAVE_FORMATS))}"
        )
    fmt, holds_16, holds_alpha = _SAVE_FORMATS[ext]
    _check_arrays(rgb, alpha)
    limit = _MAX_SIDE.get(fmt)
    if limit is not None and max(rgb.shape[:2]) > limit:
        raise SharpkdError(f"{path}: {rgb.shape[1]}x{rgb.shape[0]} is too large for {fmt}, which holds at most "
                           f"{limit} pixels a side; choose another --format (png, tif)")
    if alpha is not None and not holds_alpha:
        rgb, alpha = flatten_alpha(rgb, alpha), None
    if rgb.dtype == np.uint16 and not holds_16:
        rgb = to_8bit(rgb)
        alpha = None if alpha is None else to_8bit(alpha)

    with atomic_path(path) as tmp:
        if rgb.dtype == np.uint16:
            import cv2

            if fmt == "TIFF":
                if rgb.ndim == 2 and alpha is not None:  # Pillow cannot read 16-bit grey+alpha TIFF
                    rgb = np.repeat(rgb[..., None], 3, axis=2)
                samples = rgb if alpha is None else np.dstack([rgb, alpha])
                tmp.write_bytes(_tiff16_bytes(samples))
            elif rgb.ndim == 2 and alpha is not None:
                tmp.write_bytes(_png16_bytes(np.dstack([rgb, alpha])))
            elif rgb.ndim == 2:
                ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb))
                if not ok:
                    raise SharpkdError(f"{path}: OpenCV could not encode a 16-bit grey {fmt} image")
                tmp.write_bytes(buf.tobytes())
            else:
                bgr = rgb[..., ::-1] if alpha is None else np.dstack([rgb[..., ::-1], alpha])
                ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr))
                if not ok:
                    raise SharpkdError(f"{path}: OpenCV could not encode a 16-bit {fmt} image")
                tmp.write_bytes(buf.tobytes())
        else:
            from PIL import Image

            arr = rgb if alpha is None else np.dstack([rgb, alpha])
            img = Image.fromarray(np.ascontiguousarray(arr))  # HxW(x2) -> L(A), HxWx3(x4) -> RGB(A)
            kwargs: dict = {}
            if fmt == "JPEG":
                kwargs = {"quality": JPEG_QUALITY, "subsampling": 0}
            elif fmt == "WEBP":
                kwargs = {"quality": WEBP_QUALITY}
            elif fmt == "TIFF":
                kwargs = {"compression": "tiff_adobe_deflate"}
            img.save(tmp, format=fmt, **kwargs)
    return path


def save_png(path: str | os.PathLike, arr: np.ndarray) -> Path:
    """Write a ``uint8`` array (``HxW`` grey, ``HxWx3`` RGB or ``HxWx4`` RGBA) as PNG, atomically."""
    from PIL import Image

    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
        raise SharpkdError(f"save_png expects a uint8 array, got {getattr(arr, 'dtype', type(arr))}")
    modes = {2: "L", 3: "RGB", 4: "RGBA"}
    mode = modes.get(arr.ndim) if arr.ndim == 2 else modes.get(arr.shape[2]) if arr.ndim == 3 else None
    if mode is None:
        raise SharpkdError(f"save_png expects HxW, HxWx3 or HxWx4, got shape {arr.shape}")
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")  # mode from shape
    return path


__all__ = [
    "IMAGE_EXTENSIONS",
    "LoadedImage",
    "flatten_alpha",
    "grey_from_rgb",
    "has_image_extension",
    "iter_image_files",
    "iter_visible_files",
    "load_image",
    "load_rgb",
    "save_image",
    "save_png",
    "to_8bit",
]
