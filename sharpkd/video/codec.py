"""Video in and out through FFmpeg (PyAV): the video half of ``sharpkd sharpen``.

* **Decode** any container and codec FFmpeg reads; frames go to the model as RGB (``rgb24``, or
  ``rgb48le``/uint16 when the source has more than 8 bits), converted with the source's own
  matrix (BT.709, BT.601, BT.2020 from its tags) and range.
* **Encode** H.264 (``libx264``) by default, or H.265 (``libx265``) / AV1 (``libsvtav1``,
  ``libaom-av1``), at a constant quality (``crf``, default 18: near-transparent) and ``preset``
  (default ``veryfast``).
  The source's pixel format is kept when the encoder takes it (else ``yuv420p``, or
  ``yuv420p10le`` for a deeper source), and so are its colour tags (primaries, transfer,
  matrix, range), sample aspect ratio, rotation (display matrix), frame rate and every frame's
  timestamp (variable frame rate stays variable).
* **Copy** audio and subtitle streams packet for packet (no re-encode); data streams (timecode,
  GoPro telemetry) cannot be written into most containers and are dropped, and counted.
* **Never half-written, never silently short**: the output is written under a temporary name
  (:func:`sharpkd.files.atomic_path`) and renamed only when complete; frames encoded are
  counted against frames decoded, and frames decoded against the frames (or the duration) the
  container declares.  A decode error or a short file fails the file unless ``keep_partial``.
* **Pipelined** (:class:`sharpkd.video.pipeline.Pipeline`): a decode thread and an encode
  thread, with bounded queues around the model in the calling thread (FFmpeg releases the GIL
  while it decodes, converts and encodes).  On a
  CPU each codec gets one thread (the model has the cores) and the default preset is
  ``veryfast``: the work per frame is what limits the frame rate there, not latency.
* **Raw streams**: :func:`stream` reads raw RGB frames from stdin and writes them to stdout
  (``sharpkd stream``), through the same pipeline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from sharpkd.errors import SharpkdError, UsageError, one_line
from sharpkd.files import atomic_path
from sharpkd.video.pipeline import Pipeline

#: ``--codec`` names: the short ones and the FFmpeg encoder names they stand for.
CODECS = {"h264": "libx264", "libx264": "libx264", "h265": "libx265", "hevc": "libx265", "libx265": "libx265",
          "av1": "libsvtav1", "libsvtav1": "libsvtav1", "libaom-av1": "libaom-av1"}
DEFAULT_CODEC, DEFAULT_CRF, DEFAULT_PRESET = "libx264", 18, "veryfast"
_CRF_RANGE = {"libx264": (0, 51), "libx265": (0, 51), "libsvtav1": (0, 63), "libaom-av1": (0, 63)}
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
# x264 preset names mapped to the AV1 encoders' speed numbers (higher = faster)
_SVT_SPEED = dict(zip(X264_PRESETS, (12, 11, 10, 9, 8, 7, 5, 4, 2, 1)))
_AOM_SPEED = dict(zip(X264_PRESETS, (8, 8, 7, 6, 5, 4, 3, 2, 1, 0)))
# FFmpeg colour matrices (AVColorSpace) -> the swscale matrices PyAV names (SWS_CS_*)
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
def _SWS_FLAGS():  # noqa: N802 - a constant, built lazily (PyAV is imported on first use)
    """swscale flags of every YUV <-> RGB conversion: bicubic chroma, full horizontal chroma
    interpolation, accurate rounding.  A 4:2:0 frame survives YUV -> RGB -> YUV -> RGB at about
    58 dB this way, against 41.5 dB with swscale's default (bilinear) flags."""
    from av.video.reformatter import Interpolation as I  # noqa: E741

    return I.BICUBIC | I.ACCURATE_RND | I.FULL_CHR_H_INT


_SKIP_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder"}


@dataclass(frozen=True)
class VideoOptions:
    """How ``sharpkd sharpen`` writes a video (checked by :func:`check_video_options`)."""

    codec: str = DEFAULT_CODEC
    crf: int = DEFAULT_CRF
    preset: str = DEFAULT_PRESET
    keep_partial: bool = False
    max_frame_pixels: int = 0  # 0: MAX_FRAME_PIXELS


def check_video_options(codec: str = DEFAULT_CODEC, crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET,
                        keep_partial: bool = False, max_frame_pixels: int = 0) -> VideoOptions:
    """Validate ``--codec/--crf/--preset/--max-frame-pixels`` before any file is read;
    :class:`UsageError` names the option."""
    import av

    check_max_frame_pixels(max_frame_pixels)
    name = CODECS.get(codec.lower())
    if name is None:
        raise UsageError(f"--codec {codec!r} is not one sharpkd encodes; use one of {', '.join(CODECS)}")
    if name not in av.codecs_available:
        raise UsageError(f"--codec {codec}: this FFmpeg build (PyAV {av.__version__}) has no {name} encoder")
    lo, hi = _CRF_RANGE[name]
    if not lo <= crf <= hi:
        raise UsageError(f"--crf for {name} must be between {lo} and {hi}, got {crf}")
    preset = preset.lower()
    speeds = {"libsvtav1": 13, "libaom-av1": 8}
    if name in speeds and preset.isdigit() and int(preset) > speeds[name]:
        raise UsageError(f"--preset {preset}: {name}'s speed numbers go from 0 to {speeds[name]}")
    if preset not in X264_PRESETS and not (name in speeds and preset.isdigit()):
        extra = " (or the encoder's speed number)" if name in ("libsvtav1", "libaom-av1") else ""
        raise UsageError(f"--preset {preset!r}: use one of {', '.join(X264_PRESETS)}{extra}")
    return VideoOptions(name, crf, preset, keep_partial, max_frame_pixels or MAX_FRAME_PIXELS)


MAX_FRAME_PIXELS = 8192 * 8192
"""The largest video frame (pixels) sharpkd decodes unless ``--max-frame-pixels`` raises it: 8K
(7680x4320) fits four times over; a header declaring 16000x16000 (several GiB of frames in
flight) is refused before anything is decoded, as Pillow's bound refuses image bombs."""


def check_max_frame_pixels(value: int) -> int:
    """``--max-frame-pixels``: 0 (the default, :data:`MAX_FRAME_PIXELS`) or 1 to 2^32."""
    if not 0 <= value <= 1 << 32:
        raise UsageError(f"--max-frame-pixels must be between 1 and {1 << 32} (0: {MAX_FRAME_PIXELS}), got {value}")
    return value or MAX_FRAME_PIXELS


def frame_size_problem(width: int, height: int, limit: int) -> str | None:
    """Why a ``width x height`` frame is refused (above ``limit`` pixels), else ``None``."""
    if width * height > limit:
        return (f"its {width}x{height} frames ({width * height:,} pixels) exceed the bound of {limit:,} pixels "
                "per frame; --max-frame-pixels raises it")
    return None


def _encoder_options(opts: VideoOptions) -> dict[str, str]:
    if opts.codec == "libx264":
        return {"crf": str(opts.crf), "preset": opts.preset}
    if opts.codec == "libx265":
        return {"crf": str(opts.crf), "preset": opts.preset, "x265-params": "log-level=error"}
    if opts.codec == "libsvtav1":
        speed = opts.preset if opts.preset.isdigit() else str(_SVT_SPEED[opts.preset])
        return {"crf": str(opts.crf), "preset": speed}
    speed = opts.preset if opts.preset.isdigit() else str(_AOM_SPEED[opts.preset])
    return {"crf": str(opts.crf), "cpu-used": speed, "b": "0"}


def _open_input(src: Path):
    import av

    try:
        inp = av.open(str(src), metadata_errors="replace")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise SharpkdError(f"{src}: cannot open as a video ({_av_reason(exc)})") from None
    if not inp.streams.video:
        inp.close()
        raise SharpkdError(f"{src}: the file holds no video stream")
    return inp


def _av_reason(exc: BaseException) -> str:
    """FFmpeg's message without the file name PyAV appends (the summary names the file)."""
    import av

    if isinstance(exc, av.FFmpegError):
        text = exc.strerror or str(exc)
    else:
        text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return one_line(text)


def _deep(pix_fmt: str | None) -> bool:
    import av

    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components) > 8
    except (TypeError, ValueError):
        return False


def choose_pix_fmt(in_fmt: str | None, codec: str, width: int, height: int) -> tuple[str, bool]:
    """The pixel format to encode: the source's when ``codec`` takes it (``yuvj*`` as ``yuv*``
    plus full range), else ``yuv420p`` (``yuv420p10le`` for a source deeper than 8 bits); an
    odd size that the format's chroma subsampling cannot hold moves to ``yuv444p``.  Returns
    (format, full range implied by a ``yuvj`` source)."""
    import av

    supported = [f.name for f in (av.Codec(codec, "w").video_formats or [])]
    name = in_fmt or "yuv420p"
    full = name.startswith("yuvj")
    if full:
        name = "yuv" + name[4:]
    if name not in supported:
        name = "yuv420p10le" if _deep(in_fmt) and "yuv420p10le" in supported else "yuv420p"
    fmt = av.VideoFormat(name, width, height)
    sub_w = len(fmt.components) > 1 and fmt.components[1].width != width
    sub_h = len(fmt.components) > 1 and fmt.components[1].height != height
    if (sub_w and width % 2) or (sub_h and height % 2):
        wide = "yuv444p10le" if _deep(name) else "yuv444p"
        if wide not in supported:
            raise SharpkdError(f"{codec} cannot encode an odd frame size ({width}x{height}) in {name}; "
                               "use --codec libx264 or libx265")
        name = wide
    return name, full


def _full_chroma(pix_fmt: str) -> str | None:
    """The 4:4:4 planar format of a chroma-subsampled planar YUV format (same depth), else ``None``."""
    import av

    name = "yuv" + pix_fmt[4:] if pix_fmt.startswith("yuvj") else pix_fmt
    for sub in ("420p", "422p", "440p", "411p", "410p"):
        if name.startswith("yuv" + sub):
            full = name.replace(sub, "444p", 1)
            try:
                av.VideoFormat(full)
            except ValueError:
                return None
            return full
    return None


def codec_threads(device: str = "cpu") -> int:
    """Threads for each of the decoder and the encoder.  On a CPU the model already runs on every
    core (torch's intra-op threads), so each codec gets one thread: more would only preempt the
    model's threads (measured on 2 cores: frame-threaded decoding cost twice the CPU per frame);
    with the model on a GPU the codecs get every core (0 = FFmpeg's choice)."""
    if str(device).startswith("cuda"):
        return 0
    return 1


@dataclass
class _Frame:
    rgb: np.ndarray
    pts: int | None
    rotation: int


class _Reader:
    """Demuxes and decodes (the pipeline's source, iterated in its own thread): yields
    ``("frame", _Frame)`` and ``("packet", Packet)`` (of the streams that are copied) in file
    order.  A decode error ends the stream early and is kept in ``error``."""

    def __init__(self, inp, vstream, copied: list) -> None:
        self.inp, self.vstream, self.copied = inp, vstream, copied
        self.error: str | None = None
        self.decoded = 0
        self.convert_s = 0.0  # CPU time of the RGB conversion
        self.last_end: float | None = None  # seconds: the end of the last decoded frame
        ctx = vstream.codec_context
        self.rgb_fmt = "rgb48le" if _deep(ctx.pix_fmt) else "rgb24"

    def _convert(self, frame) -> np.ndarray:
        from av.video.reformatter import ColorRange, Interpolation

        fmt = frame.format.name
        rng = frame.color_range or (ColorRange.JPEG if fmt.startswith("yuvj") else ColorRange.MPEG)
        matrix = _SWS_MATRIX.get(int(frame.colorspace or 0))
        full = _full_chroma(fmt)
        if full is None:
            return frame.to_ndarray(format=self.rgb_fmt, src_colorspace=matrix, src_color_range=rng,
                                    interpolation=_SWS_FLAGS())
        # subsampled chroma: upsample the chroma planes alone (bicubic, swscale's vectorised plane
        # scaler), then the 4:4:4 -> RGB matrix; 56 dB from the one-step accurate conversion at a
        # third of its time (1080p: about 18 against 50 ms)
        yuv444 = frame.reformat(format=full, src_color_range=rng, dst_color_range=rng,
                                interpolation=Interpolation.BICUBIC)
        return yuv444.to_ndarray(format=self.rgb_fmt, src_colorspace=matrix, src_color_range=rng,
                                 interpolation=Interpolation.BICUBIC)

    max_pixels = MAX_FRAME_PIXELS  # a frame larger than this (its size changed mid-stream) ends the decode

    def _frames(self, packet):
        for frame in packet.decode():
            if frame.width * frame.height > self.max_pixels:
                raise ValueError(frame_size_problem(frame.width, frame.height, self.max_pixels))
            self.decoded += 1
            if frame.pts is not None and frame.time_base is not None:
                dur = frame.duration if frame.duration else 0
                self.last_end = float((frame.pts + dur) * frame.time_base)
            t = time.thread_time()
            rgb = self._convert(frame)
            self.convert_s += time.thread_time() - t
            yield "frame", _Frame(rgb, frame.pts, int(frame.rotation or 0))

    def __iter__(self):
        import av

        try:
            for packet in self.inp.demux(self.vstream, *self.copied):
                if packet.stream.index == self.vstream.index:
                    yield from self._frames(packet)
                elif packet.dts is not None:
                    yield "packet", packet
        except (av.FFmpegError, OSError, ValueError, MemoryError) as exc:
            self.error = _av_reason(exc)
        except Exception as exc:  # noqa: BLE001 - reported in the calling thread, never lost
            self.error = one_line(f"{type(exc).__name__}: {exc}")


class _Writer:
    """Owns the output container (the pipeline's sink, run in its own thread): sets its streams
    up on the first frame, encodes frames and muxes them with the copied packets."""

    def __init__(self, path: Path, inp, vstream, copied: list, opts: VideoOptions, threads: int = 0) -> None:
        self.path, self.inp, self.vin, self.copied, self.opts = path, inp, vstream, copied, opts
        self.threads = threads
        self.out = None
        self.vout = None
        self.map: dict[int, object] = {}
        self.packets = {s.index: 0 for s in copied}  # packets copied, per input stream
        self.written = 0
        self.convert_s = 0.0  # CPU time of the YUV conversion
        self.pending: list = []
        self.last_pts: int | None = None
        self.pix_fmt = ""
        self.size = (0, 0)

    # -- setup ---------------------------------------------------------------------------
    def _start(self, first: _Frame) -> None:
        import av

        cin = self.vin.codec_context
        h, w = first.rgb.shape[:2]
        self.size = (w, h)
        self.pix_fmt, full = choose_pix_fmt(cin.pix_fmt, self.opts.codec, w, h)
        try:
            self.out = av.open(str(self.path), "w")
        except (av.FFmpegError, ValueError) as exc:
            raise SharpkdError(f"cannot write a {self.path.suffix} video ({_av_reason(exc)})") from None
        out = self.out
        out.metadata.update({k: v for k, v in self.inp.metadata.items() if k not in _SKIP_TAGS})
        rate = frame_rate(self.vin) or Fraction(25)
        v = out.add_stream(self.opts.codec, rate=rate)
        ctx = v.codec_context
        v.width, v.height, v.pix_fmt = w, h, self.pix_fmt
        self.tb = self.in_tb = self.vin.time_base or Fraction(1, 90000)
        # no timestamps in the source: frames at the rate; AVI (it holds constant frame rate only):
        # the time base is one frame and each frame's pts its input pts in frames, so the output
        # lasts as long as the input whatever the input's time base (an AVI may count 1/1000 s ticks)
        self.cfr = first.pts is None
        self.avi = self.path.suffix.lower() == ".avi"
        if self.cfr or self.avi:
            self.tb = 1 / Fraction(rate)
        ctx.time_base = self.tb
        v.time_base = self.tb
        ctx.framerate = rate
        ctx.thread_count = self.threads
        if self.avi:
            # AVI stores one timestamp per chunk, in decoding order: frames reordered for B-frames
            # would come back with their neighbours' timestamps, and a gap (a dropped frame) in the
            # wrong place.  Without B-frames the decoding order is the display order.
            ctx.max_b_frames = 0
        if cin.sample_aspect_ratio:
            ctx.sample_aspect_ratio = cin.sample_aspect_ratio
        self.colorspace = int(cin.colorspace or 2)
        self.range = int(cin.color_range or (2 if full else 1))
        for attr in ("color_primaries", "color_trc", "colorspace"):
            value = int(getattr(cin, attr) or 2)
            if value != 2:  # 2 = unspecified
                setattr(ctx, attr, value)
        ctx.color_range = self.range
        ctx.options = _encoder_options(self.opts)
        if first.rotation:
            v.set_display_rotation(first.rotation)
        v.metadata.update({k: v_ for k, v_ in self.vin.metadata.items() if k not in _SKIP_TAGS | {"handler_name"}})
        self.vout = v
        for s in self.copied:
            try:
                o = out.add_stream_from_template(s)
            except (av.FFmpegError, ValueError) as exc:
                raise SharpkdError(f"cannot copy its {s.type} stream ({s.codec_context.name}) into a "
                                   f"{self.path.suffix} file ({_av_reason(exc)})") from None
            o.metadata.update(s.metadata)
            self.map[s.index] = o
        try:
            out.start_encoding()
        except (av.FFmpegError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None and exc.errno not in (22,):
                raise OSError(exc.errno, _av_reason(exc)) from None
            raise SharpkdError(f"cannot write {self.opts.codec} with these streams into a {self.path.suffix} file "
                               f"({_av_reason(exc)})") from None
        for packet in self.pending:
            self._copy(packet)
        self.pending = []

    # -- writing -------------------------------------------------------------------------
    def mux(self, packet) -> None:
        """Write one packet (the one place bytes go to the output file)."""
        self.out.mux(packet)

    def _copy(self, packet) -> None:
        index = packet.stream.index
        packet.stream = self.map[index]
        self.mux(packet)
        self.packets[index] += 1

    def _encode(self, frame: _Frame) -> None:
        import av

        rgb_fmt = "rgb48le" if frame.rgb.dtype == np.uint16 else "rgb24"
        t = time.thread_time()
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.rgb), format=rgb_fmt)
        vf = vf.reformat(format=self.pix_fmt, dst_colorspace=_SWS_MATRIX.get(self.colorspace),
                         dst_color_range=self.range, interpolation=_SWS_FLAGS())
        self.convert_s += time.thread_time() - t
        if self.cfr or frame.pts is None:
            pts = self.written
        elif self.avi:
            pts = round(frame.pts * self.in_tb / self.tb)
        else:
            pts = frame.pts
        if self.last_pts is not None and pts <= self.last_pts:  # broken timestamps: keep them increasing
            pts = self.last_pts + 1
        self.last_pts = pts
        vf.pts, vf.time_base = pts, self.tb
        for packet in self.vout.encode(vf):
            self.mux(packet)
        self.written += 1

    def finish(self) -> None:
        if self.out is None:
            return
        for packet in self.vout.encode(None):
            self.mux(packet)
        out, self.out = self.out, None
        out.close()

    def abort(self) -> None:
        out, self.out = self.out, None
        if out is not None:
            try:
                out.close()
            except Exception:  # noqa: BLE001 - the file is removed anyway
                pass

    def __call__(self, entry: tuple) -> None:
        kind, item = entry
        if kind == "frame":
            if self.vout is None:
                self._start(item)
            self._encode(item)
        elif self.vout is None:
            self.pending.append(item)
        else:
            self._copy(item)


def _write_error(exc: BaseException, dst: Path) -> BaseException:
    """An encode/mux failure as the exception run_jobs reports: OSError for the file system
    (disk full, permissions: "cannot write <dst>: ..."), SharpkdError otherwise."""
    import av

    if isinstance(exc, (SharpkdError, MemoryError)):
        return exc
    if isinstance(exc, OSError) and exc.errno:
        return OSError(exc.errno, _av_reason(exc) if isinstance(exc, av.FFmpegError) else (exc.strerror or str(exc)))
    if isinstance(exc, av.FFmpegError):
        return SharpkdError(f"encoding failed ({_av_reason(exc)})")
    return SharpkdError(one_line(f"encoding failed ({type(exc).__name__}: {exc})"))


def _tag_seconds(text: str | None) -> float | None:
    """Matroska's per-stream ``DURATION`` tag (``HH:MM:SS.fffffffff``) in seconds."""
    try:
        h, m, sec = str(text).split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except (TypeError, ValueError):
        return None


def _expected(inp, vstream) -> tuple[int | None, float | None, float]:
    """What the container declares for the video stream: its frame count (``None`` where the
    container does not count frames exactly: only MP4/MOV index every sample), the time its
    frames should reach in seconds (``None`` when unknown), and how much shorter the decoded
    frames may end without being called short (seconds)."""
    rate = vstream.average_rate or vstream.guessed_rate
    frame = 1 / float(rate) if rate else 0.04
    fmt = inp.format.name or ""
    # MP4/MOV index every sample; AVI's header counts frames when its rate is a real frame rate
    # (a VFR AVI counts ticks of a fine time base instead)
    exact = "mp4" in fmt or "mov" in fmt or (fmt == "avi" and rate is not None and float(rate) <= 240)
    frames = (int(vstream.frames or 0) or None) if exact else None
    start = float(vstream.start_time * vstream.time_base) if vstream.start_time is not None and vstream.time_base else 0.0
    if vstream.duration and vstream.time_base:
        return frames, start + float(vstream.duration * vstream.time_base), max(2 * frame, 0.25)
    tagged = _tag_seconds(vstream.metadata.get("DURATION"))
    if tagged:
        return frames, start + tagged, max(2 * frame, 0.25)
    if inp.duration:  # the whole file's: audio may run a little longer than the video
        total = inp.duration / 1_000_000
        return frames, (inp.start_time or 0) / 1_000_000 + total, max(2 * frame, 1.0, 0.05 * total)
    return frames, None, 0.0


def frame_rate(vstream) -> Fraction | None:
    """The stream's frame rate: its average rate, unless that is a tick rate rather than a frame
    rate (above 240/s, as an AVI with a 1/1000 time base declares) and FFmpeg's estimate from the
    timestamps (``guessed_rate``) is a real one."""
    avg, guessed = vstream.average_rate, vstream.guessed_rate
    if avg and guessed and float(avg) > 240 and float(guessed) <= 240:
        return Fraction(guessed)
    return Fraction(avg) if avg else Fraction(guessed) if guessed else None


def sharpen_video(src: Path, dst: Path, sharpener, opts: VideoOptions | None = None, progress: bool = True) -> dict:
    """Sharpen every frame of ``src`` into ``dst`` (container from its suffix), pipelined.

    Returns counts, timing and the temporal stability (:class:`sharpkd.evaluation.temporal.TemporalStability`).
    Raises :class:`SharpkdError` (input problems, a short or damaged input unless
    ``opts.keep_partial``) or :class:`OSError` (the output cannot be written); in both cases
    nothing is left under ``dst``."""
    from tqdm import tqdm

    from sharpkd.evaluation.temporal import TemporalStability

    opts = opts or VideoOptions()
    src, dst = Path(src), Path(dst)
    inp = _open_input(src)
    try:
        vstream = inp.streams.video[0]
        limit = opts.max_frame_pixels or MAX_FRAME_PIXELS
        problem = frame_size_problem(int(vstream.codec_context.width or 0), int(vstream.codec_context.height or 0),
                                     limit)
        if problem:
            raise SharpkdError(f"{src}: {problem}")
        threads = codec_threads(getattr(sharpener, "device", "cpu"))
        vstream.codec_context.thread_count = threads
        if threads != 1:
            vstream.thread_type = "AUTO"  # frame + slice threads in the decoder
        copied = [s for s in inp.streams if s.type in ("audio", "subtitle")]
        dropped = [s for s in inp.streams if s is not vstream and s not in copied]
        expected, duration, slack = _expected(inp, vstream)
        rate = frame_rate(vstream)
        total = expected or (round(duration * float(rate)) if duration and rate else None)  # the bar's
        stab = TemporalStability()
        t0 = time.perf_counter()
        with atomic_path(dst) as tmp:
            reader = _Reader(inp, vstream, copied)
            reader.max_pixels = limit
            writer = _Writer(tmp, inp, vstream, copied, opts, threads)
            bar = tqdm(total=total, desc=src.name, unit="frame", disable=not progress, dynamic_ncols=True,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                  "[{elapsed}<{remaining}, {rate_noinv_fmt}]" if total else
                                  "{desc}: {n_fmt} [{elapsed}, {rate_noinv_fmt}]")
            modelled = 0

            def model(entry: tuple) -> tuple:
                nonlocal modelled
                kind, item = entry
                if kind != "frame":
                    return entry
                out = sharpener(item.rgb)
                stab.add(item.rgb, out)
                modelled += 1
                bar.update()
                return kind, _Frame(out, item.pts, item.rotation)

            def decoded_all() -> None:
                if reader.error is not None and not opts.keep_partial:
                    raise SharpkdError(f"{src}: decoding failed after {reader.decoded} frame(s) ({reader.error}; "
                                       "the file is truncated or damaged); --keep-partial keeps the frames "
                                       "before it")

            pipe = Pipeline(reader, model, writer, finish=writer.finish, at_end=decoded_all,
                            names=("sharpkd-decode", "sharpkd-encode"))
            try:
                pipe.run()
            except BaseException:
                writer.abort()
                raise
            finally:
                bar.close()
            if pipe.sink_error is not None:
                writer.abort()
                raise _write_error(pipe.sink_error, dst)
            if pipe.source_error is not None:  # the reader keeps its errors; anything else fails the file
                raise SharpkdError(one_line(f"{src}: decoding failed ({type(pipe.source_error).__name__}: "
                                            f"{pipe.source_error})"))
            elapsed = time.perf_counter() - t0
            if reader.decoded == 0:
                raise SharpkdError(f"{src}: no frame could be decoded"
                                   + (f" ({reader.error})" if reader.error else ""))
            if writer.written != reader.decoded or modelled != reader.decoded:
                raise SharpkdError(f"{src}: wrote {writer.written} of {reader.decoded} decoded frames")
            short = _short(reader, expected, duration, slack, avi_slots=(inp.format.name or "") == "avi")
            if short and not opts.keep_partial:
                raise SharpkdError(f"{src}: {short} (the file is truncated or damaged); "
                                   "--keep-partial keeps the frames that decoded")
            partial = short or reader.error
        # read everything from the streams before the container closes (PyAV objects die with it)
        rate = frame_rate(vstream)
        return {"frames": writer.written, "frames_expected": expected, "fps": float(rate) if rate else 0.0,
                "size": list(writer.size), "codec": opts.codec, "crf": opts.crf, "preset": opts.preset,
                "pix_fmt": writer.pix_fmt,
                # what really reached the output: a stream the container declares but whose packets
                # cannot be read (a damaged index) is listed as empty, not as copied
                "copied_streams": [s.type for s in copied if writer.packets[s.index]],
                "copied_packets": [writer.packets[s.index] for s in copied if writer.packets[s.index]],
                "empty_streams": [s.type for s in copied if not writer.packets[s.index]],
                "dropped_streams": [s.type for s in dropped], "partial": partial, "elapsed_s": round(elapsed, 3),
                "processing_fps": round(writer.written / elapsed, 3) if elapsed > 0 else None,
                "per_frame_ms": _per_frame(reader, writer, pipe, writer.written)} | stab.result()
    finally:
        inp.close()


def _per_frame(reader: _Reader, writer: _Writer, pipe: Pipeline, frames: int) -> dict:
    """Where the time went, in ms per frame: CPU time of the decode thread (decoding and
    demuxing, and the YUV -> RGB conversion), of the encode thread (RGB -> YUV conversion, and
    encoding and muxing), and wall time of the model thread (the model with the flicker measure,
    and its waits for a decoded frame and for room in the encoder's queue)."""
    if not frames:
        return {}
    ms = lambda v: round(1000 * v / frames, 1)  # noqa: E731
    return {"decode": ms(pipe.source_cpu_s - reader.convert_s), "to_rgb": ms(reader.convert_s),
            "model": ms(pipe.model_s), "to_yuv": ms(writer.convert_s), "encode": ms(pipe.sink_cpu_s - writer.convert_s),
            "wait_decode": ms(pipe.wait_source_s), "wait_encode": ms(pipe.wait_sink_s)}


def _short(reader: _Reader, expected: int | None, duration: float | None, slack: float,
           avi_slots: bool = False) -> str | None:
    """Why the decoded frames fall short of what the container declares, or ``None``.

    ``avi_slots``: the declared count is an AVI's, which counts frame slots, the dropped frames
    (empty chunks, no picture) included; fewer frames than slots is then a short file only when
    the frames stop before the last slot (by more than half a frame)."""
    if expected and reader.decoded < expected:
        if avi_slots and duration and reader.last_end is not None and reader.last_end >= duration - 0.5 * duration / expected:
            return None
        return f"only {reader.decoded} of {expected} frames could be decoded"
    if not expected and duration and reader.last_end is not None and reader.last_end + slack < duration:
        return f"its frames stop at {reader.last_end:.2f} s of {duration:.2f} s"
    return None


# -- raw frames on stdin/stdout: ``sharpkd stream`` -----------------------------------------------

#: ``--pix-fmt`` of ``sharpkd stream``: FFmpeg's rawvideo names -> (dtype, channels)
RAW_FORMATS = {"rgb24": (np.dtype(np.uint8), 3), "rgb48le": (np.dtype("<u2"), 3)}


def parse_size(text: str) -> tuple[int, int]:
    """``"1920x1080"`` -> ``(1920, 1080)``; :class:`UsageError` naming ``--size`` otherwise."""
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text!r}: give WIDTHxHEIGHT, e.g. 1920x1080") from None
    if not (0 < w <= 65536 and 0 < h <= 65536):
        raise UsageError(f"--size {text!r}: width and height must be between 1 and 65536")
    return w, h


class StreamResult(dict):
    """``frames``, ``elapsed_s``, ``fps``, and ``broken_pipe`` (the reader of stdout went away)."""


def _read_exact(src, view: memoryview) -> int:
    """Fill ``view`` from ``src``; returns the bytes read (fewer only at end of input)."""
    got = 0
    while got < len(view):
        n = src.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def stream(sharpener, width: int, height: int, pix_fmt: str = "rgb24", src=None, dst=None,
           progress: bool = False) -> StreamResult:
    """Sharpen raw frames read from ``src`` (default stdin) and write them to ``dst`` (default
    stdout), frame for frame, in ``pix_fmt`` (``rgb24``; ``rgb48le``: 16 bits per channel).

    Reading, the model and writing overlap (a reader and a writer thread around the model).
    End of input at a frame boundary ends the stream (zero frames included).  End of input
    inside a frame raises :class:`SharpkdError` after every whole frame before it was written.
    A closed ``dst`` (``BrokenPipeError``: the next program in the pipe stopped) stops reading
    and returns with ``broken_pipe`` set."""
    import sys

    from tqdm import tqdm

    if pix_fmt not in RAW_FORMATS:
        raise UsageError(f"--pix-fmt {pix_fmt!r}: use one of {', '.join(RAW_FORMATS)}")
    dtype, channels = RAW_FORMATS[pix_fmt]
    src = src if src is not None else sys.stdin.buffer
    dst = dst if dst is not None else sys.stdout.buffer
    shape = (height, width, channels)
    nbytes = width * height * channels * dtype.itemsize
    state = {"short": None, "written": 0}

    def read():
        index = 0
        while True:
            frame = np.empty(shape, dtype)
            got = _read_exact(src, memoryview(frame).cast("B"))
            if got == 0:
                return
            if got < nbytes:
                state["short"] = (index, got)
                return
            yield frame
            index += 1

    def write(frame: np.ndarray) -> None:
        dst.write(memoryview(np.ascontiguousarray(frame, dtype=dtype)).cast("B"))
        state["written"] += 1

    def model(frame: np.ndarray) -> np.ndarray:
        out = sharpener(frame)
        bar.update()
        return out

    # after a stop the reader may still wait on stdin (a sender that went quiet): it is left, a daemon
    pipe = Pipeline(read(), model, write, finish=dst.flush, names=("sharpkd-read", "sharpkd-write"),
                    source_blocks=True)
    bar = tqdm(desc=f"stream {width}x{height}", unit="frame", disable=not progress, dynamic_ncols=True,
               bar_format="{desc}: {n_fmt} [{elapsed}, {rate_noinv_fmt}]")
    t0 = time.perf_counter()
    try:
        pipe.run()
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    n = state["written"]
    broken = isinstance(pipe.sink_error, BrokenPipeError)
    result = StreamResult(frames=n, elapsed_s=round(elapsed, 3), fps=round(n / elapsed, 3) if elapsed > 0 else None,
                          broken_pipe=broken)
    if broken:
        return result
    if pipe.sink_error is not None:
        exc = pipe.sink_error
        if not isinstance(exc, OSError):
            raise exc
        raise OSError(exc.errno, f"cannot write to stdout after {n} frame(s): {exc.strerror or exc}")
    if pipe.source_error is not None:
        exc = pipe.source_error
        if not isinstance(exc, OSError):
            raise exc
        raise SharpkdError(f"cannot read stdin after {n} frame(s): {exc.strerror or exc}")
    if state["short"] is not None:
        index, got = state["short"]
        raise SharpkdError(f"stdin ended inside frame {index + 1}: {got} of its {nbytes} bytes "
                           f"({width}x{height} {pix_fmt}); the {index} whole frame(s) before it were written "
                           "(check --size and --pix-fmt against the sender's -s and -pix_fmt)")
    return result


__all__ = ["CODECS", "RAW_FORMATS", "VideoOptions", "check_video_options", "choose_pix_fmt", "codec_threads",
           "parse_size", "sharpen_video", "stream"]
