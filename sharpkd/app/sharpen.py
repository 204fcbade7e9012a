"""Sharpen images, folders and videos with a student: the library behind ``sharpkd sharpen``.

The model runs through :func:`sharpkd.inference.tiled.run_model` -- the function the evaluate stage
scores -- so any size (odd, 4K) works with memory bounded by the tile.  ``strength`` blends input
``x`` and model output ``m``:
``y = clip(x + strength * (m - x), 0, 1)`` -- 0 returns the input, 1 the model output, values
above 1 extrapolate (stronger sharpening).  Alpha is kept unchanged; 16-bit images are processed
from their 16-bit values and written back as 16-bit (to formats that hold 16 bits: PNG, TIFF).

A shipped student that is a pair of experts (:data:`sharpkd.app.shipped.EXPERTS`) runs, on each
frame, the expert its link estimate picks (:mod:`sharpkd.nets.link`): the one trained on clean pairs
where the frame reads as uncoded, else the one trained on the link mixture.  Both are the same
network, so a frame costs one of them plus the estimate.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from sharpkd.errors import SharpkdError, UsageError, one_line, os_error_message
from sharpkd.images import IMAGE_EXTENSIONS, grey_from_rgb, iter_visible_files, load_image, save_image
from sharpkd.app.shipped import shipped_weights
from sharpkd.nets.students import load_student
from sharpkd.inference.tiled import DEFAULT_TILE, prepare, run_model

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
STRENGTH_RANGE = (0.0, 2.0)
OVERLAP = 32
SAME_FORMAT = "same"  # --format: each image keeps its own format
"""Tile overlap of ``sharpkd sharpen`` (pixels); ``--tile`` must be at least twice this."""




def single_frame(model: torch.nn.Module, what: str) -> None:
    """Refuse a temporal student (``frames`` > 1, :class:`sharpkd.nets.students.SharpNet`) with a
    :class:`UsageError` naming ``what``: the commands run single-frame students."""
    frames = getattr(model, "frames", 1)
    if frames != 1:
        raise UsageError(f"{what}: a temporal student (frames {frames}: the previous received frame too) is an "
                         "experiment's form; sharpkd runs single-frame students")


class Sharpener:
    """A loaded student plus how to apply it (device, tiling, strength)."""

    def __init__(self, weights: str | os.PathLike | None = None, *, device: str = "cpu", tile: int = DEFAULT_TILE,
                 overlap: int = 32, strength: float = 1.0, runtime: str = "auto", experts: bool = True) -> None:
        """``experts=False`` runs a shipped pair's link-mixture expert alone (to score it beside the pair)."""
        from sharpkd.app.shipped import expert_files
        from sharpkd.inference.runtimes import compile_for, resolve

        lo, hi = STRENGTH_RANGE
        if not lo <= strength <= hi:
            raise SharpkdError(f"--strength must be between {lo} and {hi}, got {strength}")
        self.weights = Path(weights) if weights else shipped_weights()
        self.model, self.meta = load_student(self.weights, device=device)
        single_frame(self.model, f"--weights {self.weights}")
        prepare(self.model, device)
        self.runtime = resolve(runtime, self.model, device)
        # 8-bit images run on `runtime`; 16-bit ones on the PyTorch module (sharpkd/inference/runtimes.py)
        self.compiled = compile_for(self.model, self.runtime, device)
        self.device, self.tile, self.overlap, self.strength = device, tile, overlap, strength
        self.estimator = None
        self.frames_total = self.frames_clean = 0  # frames the link estimate read, and read as uncoded
        pair = expert_files(self.weights) if experts else None
        if pair is not None:
            from sharpkd.nets.link import Picker, load_estimator

            clean, estimate = pair
            self.clean_model, _ = load_student(clean, device=device)
            prepare(self.clean_model, device)
            self.clean_compiled = compile_for(self.clean_model, self.runtime, device)
            self.estimator, meta = load_estimator(estimate)
            try:
                self.picker = Picker(float(meta["threshold"]))
            except (KeyError, ValueError, SharpkdError):
                raise SharpkdError(f"{estimate}: the link estimate has no usable threshold in its metadata; "
                                   "reinstall sharpkd") from None

    def model_for(self, rgb: np.ndarray):
        """The module that sharpens ``rgb``: the runtime's for 8 bits, PyTorch's for 16; of a pair of
        experts, the clean expert's where the link estimate reads the frame as uncoded (counted)."""
        compiled, model = self.compiled, self.model
        if self.estimator is not None:
            from sharpkd.nets.link import coded_probability

            self.frames_total += 1
            if self.picker.choose(lambda: coded_probability(self.estimator, rgb)):
                self.frames_clean += 1
                compiled, model = self.clean_compiled, self.clean_model
        return compiled if rgb.dtype == np.uint8 else model

    def start_sequence(self) -> None:
        """The frames that follow are one video or stream: a pair keeps its expert until the estimate
        clearly changes (:class:`sharpkd.nets.link.Picker`)."""
        if self.estimator is not None:
            self.picker.start()

    def end_sequence(self) -> None:
        if self.estimator is not None:
            self.picker.end()

    def experts_line(self) -> str | None:
        """What the link estimate decided, in words (``None`` for a single student or no frame yet)."""
        if self.estimator is None or not self.frames_total:
            return None
        return (f"link estimate: {self.frames_clean} of {self.frames_total} frame(s) read as uncoded "
                "(clean-pairs expert), the rest as coded (link-mixture expert)")

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Sharpen an HxWx3 uint8 or uint16 image; returns the same dtype and size."""
        if self.strength == 0:
            return rgb.copy()
        return run_model(self.model_for(rgb), rgb, tile=self.tile, overlap=self.overlap, device=self.device,
                         strength=self.strength)


@dataclass
class Job:
    """One input file and where its output goes."""

    src: Path
    dst: Path
    kind: str  # "image" | "video"


@dataclass
class Summary:
    done: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # outputs that already existed (no --overwrite)


def _kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return None


_IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "JPEG", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "PNG", "png"),
    (b"GIF8", "GIF", "gif"),
    (b"II*\x00", "TIFF", "tif"),
    (b"MM\x00*", "TIFF", "tif"),
    (b"BM", "BMP", "bmp"),
)
_QUICKTIME_ATOMS = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


def video_content_problem(path: str | os.PathLike) -> str | None:
    """``None`` when the file starts like a video container sharpkd reads (MP4/MOV: an ``ftyp``
    or QuickTime atom; AVI: ``RIFF....AVI``; MKV/WebM: the EBML magic ``1A45DFA3``), else the
    reason it is not one (naming the image format when it is an image with a video name).

    The extension picks the candidates; the content decides, so a JPEG renamed ``.mp4`` is not
    taken for a one-frame video."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"cannot read the file ({e.strerror or e})"
    if not head:
        return "file is empty (0 bytes)"
    if len(head) >= 8 and head[4:8] in _QUICKTIME_ATOMS:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return None
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "the content is a WebP image, not a video; rename it to .webp to sharpen it as an image"
    for magic, name, ext in _IMAGE_MAGIC:
        if head.startswith(magic):
            return f"the content is a {name} image, not a video; rename it to .{ext} to sharpen it as an image"
    return "not a video: the file has no MP4/MOV, AVI or MKV/WebM container header"


def check_options(*, tile: int, strength: float, fmt: str) -> str:
    """Validate ``sharpkd sharpen`` options once, before any file is read; returns the format
    without its dot.  Raises :class:`UsageError` naming the option."""
    lo, hi = STRENGTH_RANGE
    if not lo <= strength <= hi:
        raise UsageError(f"--strength must be between {lo} and {hi}, got {strength}")
    if tile < 2 * OVERLAP:
        raise UsageError(f"--tile must be at least {2 * OVERLAP} pixels (twice the {OVERLAP}-pixel tile overlap), "
                         f"got {tile}")
    fmt = fmt.lower().lstrip(".")
    if fmt != SAME_FORMAT and "." + fmt not in IMAGE_EXTENSIONS:
        raise UsageError(f"--format {fmt!r} is not an image format sharpkd writes; use {SAME_FORMAT} or one of "
                         f"{', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))}")
    return fmt


def output_suffix(src: Path, fmt: str) -> str:
    """The suffix of an image's output: its own with ``fmt`` ``same`` (PNG for a format sharpkd
    does not write), else ``.<fmt>``."""
    if fmt == SAME_FORMAT:
        own = src.suffix.lower()
        return src.suffix if own in IMAGE_EXTENSIONS else ".png"
    return "." + fmt


def _probe_writable(folder: Path) -> None:
    """Create and drop a nameless file in ``folder`` (raises OSError when it cannot be written)."""
    with tempfile.TemporaryFile(dir=folder):
        pass


def check_output_dir(out_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> Path:
    """Check (and create) the output folder before anything is read; returns it.

    Refused with :class:`UsageError`: an existing file at that path, a path below a file, a
    folder that cannot be written, and a folder that is (or is inside) an input folder -- its
    outputs would become inputs of the next run."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: exists and is not a folder; give a folder (new or existing) for the outputs")
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UsageError(f"-o {out}: {probe} is a file, so the output folder cannot be made there; choose another")
    resolved = out.resolve()
    for item in map(Path, inputs):
        if item.is_dir():
            root = item.resolve()
            if resolved == root:
                raise UsageError(f"-o {out}: is the input folder {item}; the outputs would replace or mix with the "
                                 "inputs, choose an output folder outside it")
            if resolved.is_relative_to(root):
                raise UsageError(f"-o {out}: is inside the input folder {item}; the next run would sharpen the "
                                 "outputs again, choose an output folder outside it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        _probe_writable(out)
    except OSError as e:
        raise UsageError(f"-o {os_error_message(e, 'cannot write into', path=out).removeprefix('cannot write into ')}"
                         f"; the output folder must be writable") from None
    return out


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def plan(inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike, fmt: str = "same") -> tuple[list[Job], list[tuple[Path, str]]]:
    """Expand files and folders (recursive) into jobs; unusable inputs are returned as failures.

    Files given directly go to ``out_dir/<stem><suffix>`` (:func:`output_suffix`); files found in a folder keep their path
    relative to that folder under ``out_dir/<folder name>/``.  Videos keep their container, and
    are taken as videos only when their content is a video container
    (:func:`video_content_problem`).  The output folder is never walked as an input, and a job
    whose output would be one of the input files is a failure (an input is never overwritten).
    """
    out_dir = Path(out_dir)
    jobs, failed = [], []
    fmt = fmt.lower().lstrip(".")
    if fmt != SAME_FORMAT and "." + fmt not in IMAGE_EXTENSIONS:
        raise UsageError(f"--format {fmt!r} is not an image format sharpkd writes ({sorted(IMAGE_EXTENSIONS)})")
    out_root = out_dir.resolve()

    def add(src: Path, rel: Path) -> None:
        kind = _kind(src)
        if kind is None:
            failed.append((src, "not an image or video file (by extension)"))
            return
        if kind == "video" and (why := video_content_problem(src)) is not None:
            failed.append((src, why))
            return
        dst = out_dir / (rel.with_suffix(output_suffix(src, fmt)) if kind == "image" else rel)
        jobs.append(Job(src, dst, kind))

    for item in map(Path, inputs):
        if item.is_dir():
            files = [f for f in iter_visible_files(item) if _kind(f) and not f.resolve().is_relative_to(out_root)]
            if not files:
                failed.append((item, "folder holds no image or video files"))
            for f in files:
                add(f, Path(item.resolve().name) / f.relative_to(item))
        elif item.is_file():
            add(item, Path(item.name))
        else:
            failed.append((item, "no such file or folder"))
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.dst in seen:
            raise UsageError(f"{job.src} and {seen[job.dst]} would both be written to {job.dst}; "
                             "sharpen them into different output folders")
        seen[job.dst] = job.src
    # never write over an input (the same path, a link to it, or the same file by inode)
    src_paths = {job.src.resolve() for job in jobs}
    src_ids = {i for i in (_file_id(job.src) for job in jobs) if i is not None}
    safe = []
    for job in jobs:
        if job.dst.resolve() in src_paths or (job.dst.exists() and _file_id(job.dst) in src_ids):
            failed.append((job.src, f"its output {job.dst} would replace an input file; "
                                    "choose another output folder (-o)"))
        else:
            safe.append(job)
    return safe, failed


def sharpen_image(job: Job, sharpener: Sharpener) -> None:
    """Sharpen one image file; a grey source is written back as grey (same bit depth)."""
    img = load_image(job.src)
    if img.frames > 1:  # animated GIF/WebP/PNG, multi-page TIFF: the output is one still image
        import warnings

        what = "pages" if job.src.suffix.lower() in (".tif", ".tiff") else "frames"
        warnings.warn(f"{job.src}: holds {img.frames} {what}; only the first was sharpened "
                      f"(into the still image {job.dst.name})", stacklevel=2)
    alpha, grey = img.alpha, img.grey
    out = sharpener(img.rgb)
    del img  # the decoded input is not needed while the output is encoded: one image less at the peak
    if grey:
        out = grey_from_rgb(out)
    save_image(job.dst, out, alpha)


def sharpen_video(job: Job, sharpener: Sharpener, progress: bool = True, options=None) -> dict:
    """Sharpen every frame of a video through FFmpeg (:func:`sharpkd.video.codec.sharpen_video`):
    H.264 (or ``options.codec``) at ``options.crf``, audio and subtitles copied, timestamps,
    rotation and colour tags kept.  Returns counts, timing and the temporal stability."""
    from sharpkd.video.codec import sharpen_video as encode_video

    reset = getattr(sharpener, "reset_counts", None)  # sharpkd.video.changed.ChangedWindows (--reuse-unchanged)
    if reset is not None:
        reset()
    start, end = (getattr(sharpener, f, lambda: None) for f in ("start_sequence", "end_sequence"))
    start()  # one video: a pair of experts keeps its expert until the link estimate clearly changes
    try:
        result = encode_video(job.src, job.dst, sharpener, options, progress)
    finally:
        end()
    if reset is not None:
        result["recomputed"] = sharpener.fraction()  # share of windows run through the model
    return result


def _reason(exc: BaseException, src: Path) -> str:
    """The message of a per-file failure without the file name in front (the summary names it)."""
    msg = one_line(exc)
    for prefix in (f"{src}: ", f"{src.resolve()}: "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def _output_problem(job: Job, overwrite: bool) -> str | None:
    """``"keep"`` when the output exists (and ``overwrite`` is off), a reason when it cannot be
    written, else ``None``."""
    dst = job.dst
    if dst.is_dir():
        return f"its output {dst} is a folder; remove it or choose another output folder (-o)"
    for parent in dst.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"its output folder {parent} is a file; remove it or choose another output folder (-o)"
            break
    from sharpkd.files import replace_problem

    if (problem := replace_problem(dst)) is not None:
        return f"its output {dst} {problem}"
    if dst.exists() and not overwrite:
        return "keep"
    return None


def run_jobs(jobs: list[Job], sharpener: Sharpener, progress: bool = True,
             overwrite: bool = False, video=None) -> tuple[Summary, list[dict]]:
    """Run every job; a failing input is recorded and the rest continue.

    Existing outputs are kept (``summary.kept``) unless ``overwrite``.  Failures of one file --
    undecodable input, an output that cannot be written (disk full, permission denied), not
    enough memory -- are recorded in ``summary.failed`` with a one-line reason, and the next
    file is attempted; nothing half-written is left under a final name.  ``video`` is a
    :class:`sharpkd.video.codec.VideoOptions` (codec, quality, ``keep_partial``) for the videos."""
    import cv2
    from tqdm import tqdm

    from sharpkd.process import interrupt_requested

    summary, videos = Summary(), []

    def attempt(job: Job, work) -> None:
        problem = _output_problem(job, overwrite)
        if problem == "keep":
            summary.kept.append(job.dst)
            return
        if problem is not None:
            summary.failed.append((job.src, problem))
            return
        try:
            work()
            summary.done.append(job.dst)
        except SharpkdError as exc:
            summary.failed.append((job.src, _reason(exc, job.src)))
        except MemoryError:
            summary.failed.append((job.src, "not enough memory; try a smaller --tile"))
        except cv2.error as exc:
            summary.failed.append((job.src, one_line(f"OpenCV failed ({str(exc).strip() or 'no detail'})")))
        except OSError as exc:  # disk full, permission denied, ... while writing the output
            summary.failed.append((job.src, os_error_message(exc, "cannot write", path=job.dst)))
        except Exception as exc:  # anything else a library raises on this file fails this file only
            detail = _reason(exc, job.src) or "no detail"
            summary.failed.append((job.src, one_line(f"failed ({type(exc).__name__}: {detail})")))
        if interrupt_requested():  # a library swallowed the KeyboardInterrupt: stop here anyway
            raise KeyboardInterrupt

    images = [j for j in jobs if j.kind == "image"]
    for job in tqdm(images, desc="images", unit="img", disable=not progress or len(images) < 2):
        attempt(job, lambda job=job: sharpen_image(job, sharpener))
    for job in (j for j in jobs if j.kind == "video"):
        attempt(job, lambda job=job: videos.append({"file": str(job.src)}
                                                   | sharpen_video(job, sharpener, progress, video)))
    return summary, videos
