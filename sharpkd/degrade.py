"""The report's degradation: bilinear downscale to ``scale``, bilinear upscale back -- and, as a
real link does, optionally a lossy codec on the small frame in between.

``codec`` (params.yaml ``degrade.codec``): ``none`` (the report's), ``jpeg`` (Pillow, quality
``jpeg_quality``, 4:2:0 chroma) or ``h264`` (libx264 through PyAV, one intra-coded frame at CRF
``h264_crf``, preset medium, yuv420p, one thread so the bytes are the same on every rerun; odd
sizes are edge-padded to even for 4:2:0 and cropped back).  A real call's P-frames are coded
against earlier frames; a single intra frame is the still-image stand-in for them.

Both resamplings use Pillow's ``Image.BILINEAR``.  Pillow's bilinear filter is *antialiased*
when it shrinks (its support widens with the scale factor, like ``cv2.INTER_AREA`` rather
than ``cv2.INTER_LINEAR``), so the 60% image carries little aliasing; upscaling is plain
bilinear interpolation.  The output always has exactly the input's size, odd sizes included.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import SharpkdError

_FILTERS = {
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
    "nearest": Image.NEAREST,
}


def low_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Size of the transmitted low-resolution frame: rounded, at least 1x1."""
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    return max(1, round(width * scale)), max(1, round(height * scale))


def downscale(img: np.ndarray, scale: float) -> np.ndarray:
    """Bilinear (antialiased) downscale of an HxWx3 uint8 image to ``scale`` of its size."""
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize(low_size(w, h, scale), Image.BILINEAR))


def upscale(img: np.ndarray, size: tuple[int, int], method: str = "bilinear") -> np.ndarray:
    """Resize an HxWx3 uint8 image to ``size`` = (width, height) with ``method``."""
    try:
        flt = _FILTERS[method]
    except KeyError:
        raise ValueError(f"unknown resampling method {method!r}; choose from {sorted(_FILTERS)}") from None
    return np.asarray(Image.fromarray(img).resize(size, flt))


CODECS = ("none", "jpeg", "h264")


def _jpeg(low: np.ndarray, quality: int) -> np.ndarray:
    import io

    buf = io.BytesIO()
    Image.fromarray(low).save(buf, format="JPEG", quality=int(quality), subsampling=2)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _h264(low: np.ndarray, crf: int) -> np.ndarray:
    from fractions import Fraction

    import av
    from av.video.reformatter import Interpolation as I  # noqa: E741

    flags = I.BICUBIC | I.ACCURATE_RND | I.FULL_CHR_H_INT  # accurate RGB <-> YUV, as sharpkd.video does
    h, w = low.shape[:2]
    even = np.pad(low, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = even.shape[1], even.shape[0], "yuv420p"
    codec.time_base = Fraction(1, 25)
    codec.options = {"crf": str(int(crf)), "preset": "medium", "threads": "1", "tune": "psnr"}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(even), format="rgb24").reformat(format="yuv420p", interpolation=flags)
    packets = list(codec.encode(frame)) + list(codec.encode(None))
    decoder = av.CodecContext.create("h264", "r")
    frames = [f for p in packets for f in decoder.decode(p)] + list(decoder.decode(None))
    if len(frames) != 1:
        raise SharpkdError(f"H.264 round trip gave {len(frames)} frames, expected 1")
    return np.ascontiguousarray(frames[0].to_ndarray(format="rgb24", interpolation=flags)[:h, :w])


def compress(low: np.ndarray, codec: str = "none", jpeg_quality: int = 75, h264_crf: int = 23) -> np.ndarray:
    """The transmitted frame after the link's codec (see the module docstring); ``none`` returns it as is."""
    if codec == "none":
        return low
    if codec == "jpeg":
        if not 1 <= int(jpeg_quality) <= 100:
            raise SharpkdError(f"degrade.jpeg_quality must be 1..100, got {jpeg_quality}")
        return _jpeg(low, jpeg_quality)
    if codec == "h264":
        if not 0 <= int(h264_crf) <= 51:
            raise SharpkdError(f"degrade.h264_crf must be 0..51, got {h264_crf}")
        return _h264(low, h264_crf)
    raise SharpkdError(f"degrade.codec must be one of {list(CODECS)}, got {codec!r}")


def transmitted(img: np.ndarray, scale: float = 0.6, codec: str = "none", **codec_params) -> np.ndarray:
    """What the link delivers: ``img`` downscaled to ``scale``, then through ``codec``."""
    return compress(downscale(img, scale), codec, **codec_params)


def degrade(img: np.ndarray, scale: float = 0.6, up: str = "bilinear", codec: str = "none",
            **codec_params) -> np.ndarray:
    """Downscale ``img`` to ``scale`` with bilinear, pass it through ``codec`` and scale it back to
    its exact size with ``up``.

    ``up="bilinear"`` with ``codec="none"`` is the report's degradation; ``bicubic``/``lanczos``
    give the classical re-upsampling baselines from the same transmitted frame.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    return upscale(transmitted(img, scale, codec, **codec_params), (w, h), up)


def link_params(p: dict) -> dict:
    """The keyword arguments of :func:`degrade` / :func:`transmitted` from the params.yaml
    ``degrade`` section (``codec``, ``jpeg_quality``, ``h264_crf``; absent keys: the report's)."""
    return {"codec": p.get("codec", "none"), "jpeg_quality": int(p.get("jpeg_quality", 75)),
            "h264_crf": int(p.get("h264_crf", 23))}
