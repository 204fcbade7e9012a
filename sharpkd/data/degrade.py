"""The report's degradation: bilinear downscale to ``scale``, bilinear upscale back -- and, as a
real link does, optionally a lossy codec on the small frame in between.

``codec`` (params.yaml ``degrade.codec``): ``none`` (the report's), ``jpeg`` (Pillow, quality
``jpeg_quality``, 4:2:0 chroma) or ``h264`` (libx264 through PyAV, one intra-coded frame at CRF
``h264_crf``, preset medium, yuv420p, one thread so the bytes are the same on every rerun; odd
sizes are edge-padded to even for 4:2:0 and cropped back).  A real call's P-frames are coded
against earlier frames; a single intra frame is the still-image stand-in for them.

A *link* is one codec setting written as a spec string (:func:`parse_link`, :func:`link_name`):
``none``, ``jpeg:Q`` or ``h264:CRF``.  ``degrade.train_links`` mixes links over the training
crops (each crop through one link, :func:`draw_link`: a function of ``degrade.seed`` and the
crop's name only); ``degrade.val_links`` adds validation sets, the validation images through
each link, that every method is scored on besides the primary (``codec``) set.  A training
mixture may also hold *video links* (``h264v:CRF``, ``h264v:NNNk``, :func:`parse_video_link`): the
crop as one frame of a short moving sequence coded with motion prediction
(:mod:`sharpkd.data.video_link`).

Both resamplings use Pillow's ``Image.BILINEAR``.  Pillow's bilinear filter is *antialiased*
when it shrinks (its support widens with the scale factor, like ``cv2.INTER_AREA`` rather
than ``cv2.INTER_LINEAR``), so the 60% image carries little aliasing; upscaling is plain
bilinear interpolation.  The output always has exactly the input's size, odd sizes included.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from sharpkd.errors import SharpkdError

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

    flags = I.BICUBIC | I.ACCURATE_RND | I.FULL_CHR_H_INT  # accurate RGB <-> YUV, as sharpkd.video.codec does
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


# --------------------------------------------------------------------------------------------
# links: one codec setting as a spec string, training mixtures, extra validation sets

LINK_FORMS = "none, jpeg:Q, h264:CRF"


def parse_link(spec, where: str = "degrade link") -> dict:
    """A link spec string -- ``"none"``, ``"jpeg:Q"`` (Pillow quality 1..100) or ``"h264:CRF"``
    (libx264 CRF 0..51) -- as the codec keyword arguments of :func:`degrade` (``codec``,
    ``jpeg_quality``, ``h264_crf``; the unused ones at their defaults).  ``where`` names the
    setting in the one-line :class:`SharpkdError` a bad spec gives."""
    text = spec.strip() if isinstance(spec, str) else None
    codec, _, value = (text or "").partition(":")
    out = {"codec": codec, "jpeg_quality": 75, "h264_crf": 23}
    if text == "none":
        return out | {"codec": "none"}
    if codec in ("jpeg", "h264") and value.isdigit() and value.isascii():
        q = int(value)
        if codec == "jpeg":
            if not 1 <= q <= 100:
                raise SharpkdError(f"{where}: {spec!r}: JPEG quality must be 1..100")
            return out | {"jpeg_quality": q}
        if not 0 <= q <= 51:
            raise SharpkdError(f"{where}: {spec!r}: H.264 CRF must be 0..51")
        return out | {"h264_crf": q}
    raise SharpkdError(f"{where}: {spec!r} is not a link ({LINK_FORMS})")


def link_name(codec: str = "none", jpeg_quality: int = 75, h264_crf: int = 23) -> str:
    """The spec string of a link (inverse of :func:`parse_link`): ``none``, ``jpeg:75``, ``h264:23``."""
    if codec == "none":
        return "none"
    if codec == "jpeg":
        return f"jpeg:{int(jpeg_quality)}"
    if codec == "h264":
        return f"h264:{int(h264_crf)}"
    raise SharpkdError(f"degrade.codec must be one of {list(CODECS)}, got {codec!r}")


def link_slug(spec: str) -> str:
    """A file-name-safe form of a link spec: ``h264:23`` -> ``h264_23``."""
    return link_name(**parse_link(spec)).replace(":", "_")


def link_split(split: str, spec: str) -> str:
    """The shard split name of validation split ``split`` degraded through link ``spec``:
    ``val_full.h264_23`` (degrade stage's ``degraded_links``, teacher stage's ``teacher_links``)."""
    return f"{split}.{link_slug(spec)}"


def link_list(value, key: str, video: bool = False) -> list[str]:
    """``degrade.train_links`` / ``degrade.val_links`` as canonical spec strings, checked
    (``[]`` or absent: none; a single string: a list of one).  ``video``: the list may also hold
    video links (``h264v:CRF``, ``h264v:NNNk``, :func:`parse_video_link`)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        forms = f"{LINK_FORMS}, {VIDEO_LINK_FORMS}" if video else LINK_FORMS
        raise SharpkdError(f"degrade.{key} must be a list of links ({forms}), got {value!r}")
    out = []
    for v in value:
        if is_video_link(v):
            if not video:
                raise SharpkdError(f"degrade.{key}: {v!r} is a video link: it codes a sequence, so it serves "
                                   "degrade.train_links and tools/video_links.py, not still validation images")
            out.append(video_link_name(parse_video_link(v, f"degrade.{key}")))
        else:
            out.append(link_name(**parse_link(v, f"degrade.{key}")))
    return out


# --------------------------------------------------------------------------------------------
# video links: the frame sequence through libx264 with motion prediction (sharpkd/data/video_link.py)

VIDEO_LINK_FORMS = "h264v:CRF, h264v:NNNk"


def is_video_link(spec) -> bool:
    """Whether ``spec`` names a video link (starts with ``h264v:``)."""
    return isinstance(spec, str) and spec.strip().startswith("h264v:")


def parse_video_link(spec, where: str = "video link") -> dict:
    """A video link spec -- ``"h264v:CRF"`` (libx264 CRF 0..51) or ``"h264v:NNNk"`` (a bit rate
    cap of NNN kbit/s for a 1152x648 frame, scaled to the frame's area; 1..100000) -- as
    ``{"crf": CRF}`` or ``{"kbps": NNN}``; a bad spec is one :class:`SharpkdError` line naming ``where``."""
    text = spec.strip() if isinstance(spec, str) else ""
    kind, _, value = text.partition(":")
    if kind == "h264v" and value.isascii():
        if value.isdigit():
            if not 0 <= int(value) <= 51:
                raise SharpkdError(f"{where}: {spec!r}: H.264 CRF must be 0..51")
            return {"crf": int(value)}
        if value.endswith("k") and value[:-1].isdigit():
            if not 1 <= int(value[:-1]) <= 100000:
                raise SharpkdError(f"{where}: {spec!r}: the bit rate must be 1k..100000k")
            return {"kbps": int(value[:-1])}
    raise SharpkdError(f"{where}: {spec!r} is not a video link ({VIDEO_LINK_FORMS})")


def video_link_name(link: dict) -> str:
    """The spec string of a video link (inverse of :func:`parse_video_link`)."""
    return f"h264v:{link['kbps']}k" if "kbps" in link else f"h264v:{int(link['crf'])}"


def val_links(p: dict) -> list[str]:
    """The extra validation links of the params.yaml ``degrade`` section, each once, in order."""
    links = link_list(p.get("val_links"), "val_links")
    dup = sorted({s for s in links if links.count(s) > 1})
    if dup:
        raise SharpkdError(f"degrade.val_links lists {dup[0]!r} more than once")
    return links


def draw_link(name: str, links: list[str], seed: int = 0) -> str:
    """The link of training crop ``name`` in the mixture ``links`` (uniform over the list, so a
    repeated entry weighs more): a function of ``seed`` and the crop's name only (sha256 of
    ``f"{seed}:{name}"``), so adding or removing other crops never changes its draw."""
    if not links:
        raise SharpkdError("draw_link needs at least one link")
    h = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return links[int.from_bytes(h[:8], "big") % len(links)]


def train_assignment(names, p: dict) -> dict[str, str]:
    """``{crop name: link spec}`` for the training crops: drawn from ``degrade.train_links``
    (seeded by ``degrade.seed``), or the ``codec`` link for every crop when the list is empty."""
    mixture = link_list(p.get("train_links"), "train_links", video=True)
    seed = p.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SharpkdError(f"degrade.seed must be an integer, got {seed!r}")
    if not mixture:
        primary = link_name(**link_params(p))
        return {n: primary for n in names}
    return {n: draw_link(n, mixture, seed) for n in names}


def degrade_all(images: dict[str, np.ndarray], scale: float, **link) -> dict[str, np.ndarray]:
    """Apply the degradation (:func:`sharpkd.data.degrade.degrade`, ``link``: its codec keywords) to every image."""
    return {k: degrade(v, scale, **link) for k, v in images.items()}
