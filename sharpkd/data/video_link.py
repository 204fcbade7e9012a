"""The video link: a sequence of frames sent the way a video call sends it, with motion prediction.

Each frame is downscaled to ``scale`` (:func:`sharpkd.data.degrade.downscale`, antialiased
bilinear), the small frames are coded as ONE H.264 stream by libx264 (through PyAV) with
P- and B-frames predicted from earlier and later frames, decoded, and each decoded small frame
is scaled back up with bilinear (:func:`sharpkd.data.degrade.upscale`): the *received* frame.
The decoded small frame itself is what a classical re-upsampling (Lanczos) starts from.

A video link is a spec string (:func:`sharpkd.data.degrade.parse_video_link`):

* ``h264v:CRF``: constant quality CRF (0..51);
* ``h264v:NNNk``: a bit-rate cap, ``NNN`` kbit/s for a 1152x648 frame (60% of 1920x1080), scaled
  to the coded frame's area (a 768x432 frame, 60% of 1280x720, gets ``NNN * 768*432 / (1152*648)``);
  average bit rate with a VBV of that max rate and a one-second buffer, at least
  :data:`MIN_BPS`.

Fixed encoder settings (:data:`ENCODER`): preset ``veryfast`` (its 3 B-frames, 1 reference
frame), a closed GOP of :data:`GOP` frames with no scene-cut I-frames, yuv420p, and, so that the
same frames give the same bytes on every rerun in any process, ``threads=1``, no macroblock tree
(``mbtree=0``: libx264's macroblock-tree pass reads lookahead memory that the stream's last
frames leave unwritten, and its bytes then vary from run to run) and the bytes past each
plane row's width set (:func:`_fill_padding`).  RGB <-> YUV uses swscale's accurate conversion
(bicubic chroma, full horizontal chroma interpolation, accurate rounding) in both directions, as
the still-image ``h264`` link of :mod:`sharpkd.data.degrade` does; an odd frame size is
edge-padded to even for 4:2:0 and cropped back.

Training pairs (:func:`sequence_pair`): a still crop becomes a short sequence with a synthetic,
seeded camera motion (pan, zoom, small rotation, :func:`camera_motion`) whose frame
:data:`KEEP` is the crop itself; the sequence goes through the link and the received frame
:data:`KEEP` (a predicted frame, never the first, intra-coded one) is the crop's degraded input.

:func:`read_clip` decodes a video file's first frames to RGB with the file's own colour matrix and
range: the ground truth of the video evaluation (``tools/video_links.py``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from sharpkd.data.degrade import downscale, parse_video_link, upscale, video_link_name
from sharpkd.errors import SharpkdError

#: Frames per GOP: one intra frame, then predicted ones (2 seconds at 30 fps).
GOP = 60
#: The frame area a ``h264v:NNNk`` bit rate is stated for (60% of 1920x1080).
REFERENCE_AREA = (1152, 648)
#: The lowest bit rate a capped link codes at (bits/s; libx264 takes whole kbit/s).
MIN_BPS = 1000
#: libx264 options shared by every video link (the rate control is added per link).
ENCODER = {"preset": "veryfast", "threads": "1",
           "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:open-gop=0:mbtree=0"}
#: Training sequences (:func:`sequence_pair`): frames coded, and the index of the frame kept.
SEQUENCE_FRAMES, KEEP = 8, 5
#: The camera motion per frame of a training sequence, drawn uniformly in +-these bounds:
#: pan (pixels, each axis), zoom (relative scale change), rotation (degrees).
MOTION = {"pan_px": 3.0, "zoom": 0.01, "rotate_deg": 0.3}


def _flags():
    from av.video.reformatter import Interpolation as I  # noqa: E741

    return I.BICUBIC | I.ACCURATE_RND | I.FULL_CHR_H_INT


def _fill_padding(frame) -> None:
    """Set the bytes past each plane row's width (the frame's line alignment) to the row's last
    pixel: libx264 reads some of them, and left as allocated they would make the coded bytes
    depend on what the memory held before."""
    for plane in frame.planes:
        rows = np.frombuffer(plane, np.uint8)[: plane.line_size * plane.height].reshape(plane.height, plane.line_size)
        if plane.line_size > plane.width:
            rows = rows.copy()
            rows[:, plane.width:] = rows[:, plane.width - 1:plane.width]
            plane.update(rows.tobytes() + bytes(plane.buffer_size - rows.size))


def link_kbps(link: dict, width: int, height: int) -> float | None:
    """The bit rate cap (kbit/s) of ``link`` for a ``width`` x ``height`` coded frame (``None`` for CRF)."""
    if "kbps" not in link:
        return None
    return link["kbps"] * (width * height) / (REFERENCE_AREA[0] * REFERENCE_AREA[1])


def encoder_options(link: dict, width: int, height: int) -> dict[str, str]:
    """The libx264 options of ``link`` (:func:`sharpkd.data.degrade.parse_video_link`) for the coded frame size."""
    if "kbps" in link:
        bps = str(max(MIN_BPS, round(link_kbps(link, width, height) * 1000)))
        return ENCODER | {"b": bps, "maxrate": bps, "bufsize": bps}
    return ENCODER | {"crf": str(int(link["crf"]))}


@dataclass
class Sent:
    """What one video link delivered for a sequence of frames."""

    spec: str
    low: list[np.ndarray]          # the decoded small frames, in display order
    size: tuple[int, int]          # (width, height) of the original frames
    bytes: int                     # size of the coded stream
    sha256: str                    # of the coded stream's packets, in order
    frame_types: str               # picture type of each decoded frame: I, P or B
    options: dict = field(default_factory=dict)

    def received(self, i: int) -> np.ndarray:
        """Received frame ``i``: the decoded small frame scaled back up with bilinear."""
        return upscale(self.low[i], self.size, "bilinear")

    def lanczos(self, i: int) -> np.ndarray:
        """Frame ``i`` re-upsampled with Lanczos from the same decoded small frame."""
        return upscale(self.low[i], self.size, "lanczos")


def send(frames: Sequence[np.ndarray], spec: str, scale: float = 0.6, fps: Fraction | int = 30) -> Sent:
    """Send ``frames`` (HxWx3 uint8, one size) through video link ``spec`` at ``fps`` frames per
    second; deterministic: the same frames and settings give the same bytes."""
    import av

    link = parse_video_link(spec)
    if len(frames) == 0:
        raise SharpkdError("a video link needs at least one frame")
    h, w = frames[0].shape[:2]
    for f in frames:
        if f.dtype != np.uint8 or f.shape != (h, w, 3):
            raise SharpkdError(f"video link frames must be HxWx3 uint8 of one size, got {f.dtype} {f.shape}")
    fps = Fraction(fps).limit_denominator(1001)
    flags = _flags()
    small = [downscale(f, scale) for f in frames]
    sh, sw = small[0].shape[:2]
    eh, ew = sh + sh % 2, sw + sw % 2
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = ew, eh, "yuv420p"
    enc.time_base, enc.framerate = 1 / fps, fps
    options = encoder_options(link, ew, eh)
    enc.options = dict(options)
    packets = []
    for i, low in enumerate(small):
        even = np.pad(low, ((0, eh - sh), (0, ew - sw), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(even), format="rgb24").reformat(
            format="yuv420p", interpolation=flags)
        _fill_padding(frame)
        frame.pts = i
        packets += enc.encode(frame)
    packets += enc.encode(None)
    digest, size = hashlib.sha256(), 0
    dec = av.CodecContext.create("h264", "r")
    decoded = []
    for p in packets:
        data = bytes(p)
        digest.update(data)
        size += len(data)
        decoded += dec.decode(p)
    decoded += dec.decode(None)
    if len(decoded) != len(frames):
        raise SharpkdError(f"video link {spec}: {len(frames)} frames sent, {len(decoded)} decoded")
    decoded.sort(key=lambda f: f.pts)
    low = [np.ascontiguousarray(f.to_ndarray(format="rgb24", interpolation=flags)[:sh, :sw]) for f in decoded]
    from av.video.frame import PictureType

    types = "".join(PictureType(int(f.pict_type)).name[:1] for f in decoded)
    return Sent(video_link_name(link), low, (w, h), size, digest.hexdigest(), types, options)


# --------------------------------------------------------------------------------------------
# training pairs: a still crop as one frame of a moving sequence

def camera_motion(seed: int, name: str) -> dict:
    """The per-frame camera motion of crop ``name``'s training sequence: a function of ``seed``
    and the name only (sha256 of ``f"{seed}:{name}:motion"``), uniform within :data:`MOTION`."""
    h = hashlib.sha256(f"{int(seed)}:{name}:motion".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(h[:8], "big"))
    pan = rng.uniform(-MOTION["pan_px"], MOTION["pan_px"], 2)
    return {"dx": float(pan[0]), "dy": float(pan[1]), "zoom": float(rng.uniform(-MOTION["zoom"], MOTION["zoom"])),
            "rotate_deg": float(rng.uniform(-MOTION["rotate_deg"], MOTION["rotate_deg"]))}


def motion_sequence(img: np.ndarray, motion: dict, frames: int = SEQUENCE_FRAMES, keep: int = KEEP) -> list[np.ndarray]:
    """``frames`` views of ``img`` along ``motion``: frame ``t`` is ``img`` shifted by
    ``(t - keep) * (dx, dy)`` pixels, scaled by ``(1 + zoom) ** (t - keep)`` and turned by
    ``(t - keep) * rotate_deg`` degrees about its centre (bicubic, mirrored borders); frame
    ``keep`` is ``img`` itself, byte for byte."""
    import cv2

    if not 0 <= keep < frames:
        raise SharpkdError(f"keep must index one of the {frames} frames, got {keep}")
    h, w = img.shape[:2]
    out = []
    for t in range(frames):
        d = t - keep
        if d == 0:
            out.append(img)
            continue
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), d * motion["rotate_deg"],
                                    (1 + motion["zoom"]) ** d)
        m[:, 2] += (d * motion["dx"], d * motion["dy"])
        out.append(cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101))
    return out


def sequence_pair(img: np.ndarray, spec: str, scale: float, seed: int, name: str, previous: bool = False) -> np.ndarray:
    """The degraded input of training crop ``name`` through video link ``spec``: the received
    frame :data:`KEEP` of its seeded moving sequence (:func:`camera_motion`), whose ground truth
    is ``img`` itself; with ``previous``, the received frame before it stacked on the channels
    (``H x W x 6``, current first: a temporal student's input)."""
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {img.dtype} {img.shape}")
    sent = send(motion_sequence(img, camera_motion(seed, name)), spec, scale)
    if previous:
        return np.concatenate([sent.received(KEEP), sent.received(KEEP - 1)], axis=2)
    return sent.received(KEEP)


def degrade_crop(img: np.ndarray, spec: str, scale: float, seed: int, name: str, previous: bool = False) -> np.ndarray:
    """Training crop ``name`` through link ``spec`` of a ``degrade.train_links`` mixture: a video
    link through :func:`sequence_pair`, any other through :func:`sharpkd.data.degrade.degrade`.
    With ``previous`` the frame before it in the same seeded sequence is stacked on the channels
    (``H x W x 6``, current first); through a link without motion prediction each of the two views is
    degraded on its own."""
    from sharpkd.data.degrade import degrade, is_video_link, parse_link

    if is_video_link(spec):
        return sequence_pair(img, spec, scale, seed, name, previous)
    if not previous:
        return degrade(img, scale, **parse_link(spec))
    before = motion_sequence(img, camera_motion(seed, name))[KEEP - 1]
    return np.concatenate([degrade(img, scale, **parse_link(spec)), degrade(before, scale, **parse_link(spec))], axis=2)


def video_settings(links: Sequence[str]) -> dict:
    """``{"video_link": settings}`` for the degrade stage's record when the mixture ``links`` holds
    a video link (the encoder, GOP, sequence and motion every such crop went through), else ``{}``."""
    from sharpkd.data.degrade import is_video_link

    if not any(is_video_link(s) for s in links):
        return {}
    return {"video_link": {"encoder": "libx264, yuv420p", "options": ENCODER, "gop": GOP,
                           "sequence_frames": SEQUENCE_FRAMES, "kept_frame": KEEP, "motion_per_frame": MOTION,
                           "bitrate_reference": list(REFERENCE_AREA)}}


# --------------------------------------------------------------------------------------------
# ground truth from a video file

_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}  # AVColorSpace -> swscale SWS_CS_*


def read_clip(path: str | Path, frames: int, start: int = 0) -> tuple[list[np.ndarray], Fraction]:
    """Frames ``start`` .. ``start + frames - 1`` of the video ``path`` as RGB uint8 (the file's
    colour matrix and range, accurate conversion), and its average frame rate."""
    import av

    try:
        inp = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SharpkdError(f"{path}: cannot open as a video ({exc})") from None
    with inp:
        if not inp.streams.video:
            raise SharpkdError(f"{path}: the file holds no video stream")
        v = inp.streams.video[0]
        fps = Fraction(v.average_rate) if v.average_rate else Fraction(30)
        out = []
        for i, f in enumerate(inp.decode(v)):
            if i < start:
                continue
            out.append(f.to_ndarray(format="rgb24", src_colorspace=_SWS_MATRIX.get(int(f.colorspace or 0)),
                                    src_color_range=f.color_range or 1, interpolation=_flags()))
            if len(out) == frames:
                break
    if len(out) < frames:
        raise SharpkdError(f"{path}: {len(out)} frames from frame {start}, {frames} asked for")
    if math.prod(out[0].shape[:2]) == 0:
        raise SharpkdError(f"{path}: empty frames")
    return out, fps
