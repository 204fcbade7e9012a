"""Sharpen images, folders and videos with a student: the library behind ``sharpkd sharpen``.

The model runs through :func:`sharpkd.inference.run_model` -- the function the evaluate stage
scores -- so any size (odd, 4K) works with memory bounded by the tile.  ``strength`` blends input
``x`` and model output ``m``:
``y = clip(x + strength * (m - x), 0, 1)`` -- 0 returns the input, 1 the model output, values
above 1 extrapolate (stronger sharpening).  Alpha is kept unchanged; 16-bit images are processed
from their 16-bit values and written back as 16-bit (to formats that hold 16 bits: PNG, TIFF).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from .errors import SharpkdError
from .fsutil import atomic_path
from .imageio import IMAGE_EXTENSIONS, iter_visible_files, load_image, save_image
from .models import load_student
from .inference import DEFAULT_TILE, prepare, run_model

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
_FOURCC = {".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
STRENGTH_RANGE = (0.0, 2.0)


def shipped_weights() -> Path:
    """Path of the pretrained student shipped inside the package."""
    path = Path(str(resources.files("sharpkd") / "weights" / "student.safetensors"))
    if not path.is_file():
        raise SharpkdError(f"the shipped student weights are missing from the installation ({path}); "
                           "pass --weights PATH or reinstall sharpkd")
    return path


class Sharpener:
    """A loaded student plus how to apply it (device, tiling, strength)."""

    def __init__(self, weights: str | os.PathLike | None = None, *, device: str = "cpu", tile: int = DEFAULT_TILE,
                 overlap: int = 32, strength: float = 1.0) -> None:
        lo, hi = STRENGTH_RANGE
        if not lo <= strength <= hi:
            raise SharpkdError(f"--strength must be between {lo} and {hi}, got {strength}")
        self.weights = Path(weights) if weights else shipped_weights()
        self.model, self.meta = load_student(self.weights, device=device)
        prepare(self.model, device)
        self.device, self.tile, self.overlap, self.strength = device, tile, overlap, strength

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """Sharpen an HxWx3 uint8 or uint16 image; returns the same dtype and size."""
        if self.strength == 0:
            return rgb.copy()
        return run_model(self.model, rgb, tile=self.tile, overlap=self.overlap, device=self.device,
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


def _kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    return None


def plan(inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike, fmt: str = "png") -> tuple[list[Job], list[tuple[Path, str]]]:
    """Expand files and folders (recursive) into jobs; unusable inputs are returned as failures.

    Files given directly go to ``out_dir/<stem>.<fmt>``; files found in a folder keep their path
    relative to that folder under ``out_dir/<folder name>/``.  Videos keep their container.
    """
    out_dir = Path(out_dir)
    jobs, failed = [], []
    fmt = fmt.lower().lstrip(".")
    if "." + fmt not in IMAGE_EXTENSIONS:
        raise SharpkdError(f"--format {fmt!r} is not an image format sharpkd writes ({sorted(IMAGE_EXTENSIONS)})")

    def add(src: Path, rel: Path) -> None:
        kind = _kind(src)
        if kind is None:
            failed.append((src, "not an image or video file (by extension)"))
            return
        dst = out_dir / (rel.with_suffix("." + fmt) if kind == "image" else rel)
        jobs.append(Job(src, dst, kind))

    for item in map(Path, inputs):
        if item.is_dir():
            files = [f for f in iter_visible_files(item) if _kind(f)]
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
            raise SharpkdError(f"{job.src} and {seen[job.dst]} would both be written to {job.dst}; "
                               "sharpen them into different output folders")
        seen[job.dst] = job.src
    return jobs, failed


def sharpen_image(job: Job, sharpener: Sharpener) -> None:
    img = load_image(job.src)
    save_image(job.dst, sharpener(img.rgb), img.alpha)


def read_video(path: str | os.PathLike) -> tuple[Iterator[np.ndarray], float, int, tuple[int, int]]:
    """Open a video: (RGB uint8 frame iterator, fps, frame count, (width, height))."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise SharpkdError(f"{path}: cannot open as a video (OpenCV could not decode it)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()

    return frames(), fps, count, size


def sharpen_video(job: Job, sharpener: Sharpener, progress: bool = True) -> dict:
    """Sharpen every frame; same frame rate, size and frame count (no audio).  Returns counts and
    the temporal stability (see :func:`temporal_stability`)."""
    import cv2
    from tqdm import tqdm

    frames, fps, count, (w, h) = read_video(job.src)
    if fps <= 0 or w <= 0 or h <= 0:
        raise SharpkdError(f"{job.src}: the video reports no frame rate or size")
    fourcc = cv2.VideoWriter_fourcc(*_FOURCC[job.dst.suffix.lower()])
    written, stab = 0, TemporalStability()
    with atomic_path(job.dst) as tmp:
        writer = cv2.VideoWriter(str(tmp), fourcc, fps, (w, h))
        if not writer.isOpened():
            raise SharpkdError(f"{job.dst}: OpenCV cannot write this container/codec")
        try:
            for frame in tqdm(frames, total=count or None, desc=job.src.name, unit="frame", disable=not progress):
                out = sharpener(frame)
                stab.add(frame, out)
                writer.write(cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
                written += 1
        finally:
            writer.release()
        if written == 0:
            raise SharpkdError(f"{job.src}: no frame could be decoded")
    return {"frames": written, "fps": fps, "size": [w, h]} | stab.result()


class TemporalStability:
    """Flicker measure for video: mean absolute frame-to-frame difference of the output
    divided by that of the input (``1.0`` = the output changes between frames exactly as much
    as the input does; above 1 = added flicker).  Values on the 0..255 scale."""

    def __init__(self) -> None:
        self.prev: tuple[np.ndarray, np.ndarray] | None = None
        self.d_in = self.d_out = 0.0
        self.n = 0

    def add(self, frame_in: np.ndarray, frame_out: np.ndarray) -> None:
        a, b = frame_in.astype(np.float32), frame_out.astype(np.float32)
        if self.prev is not None:
            self.d_in += float(np.abs(a - self.prev[0]).mean())
            self.d_out += float(np.abs(b - self.prev[1]).mean())
            self.n += 1
        self.prev = (a, b)

    def result(self) -> dict:
        if self.n == 0:
            return {"frame_diff_input": None, "frame_diff_output": None, "flicker_ratio": None}
        di, do = self.d_in / self.n, self.d_out / self.n
        return {"frame_diff_input": round(di, 4), "frame_diff_output": round(do, 4),
                "flicker_ratio": round(do / di, 4) if di > 0 else None}


def run_jobs(jobs: list[Job], sharpener: Sharpener, progress: bool = True) -> tuple[Summary, list[dict]]:
    """Run every job; a failing input is recorded and the rest continue."""
    from tqdm import tqdm

    summary, videos = Summary(), []
    images = [j for j in jobs if j.kind == "image"]
    for job in tqdm(images, desc="images", unit="img", disable=not progress or len(images) < 2):
        try:
            sharpen_image(job, sharpener)
            summary.done.append(job.dst)
        except SharpkdError as exc:
            summary.failed.append((job.src, str(exc)))
    for job in (j for j in jobs if j.kind == "video"):
        try:
            videos.append({"file": str(job.src)} | sharpen_video(job, sharpener, progress))
            summary.done.append(job.dst)
        except SharpkdError as exc:
            summary.failed.append((job.src, str(exc)))
    return summary, videos
