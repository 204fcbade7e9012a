"""Every method scored on real video clips sent over video links with motion prediction.

The ground truth of a clip is its first ``frames`` decoded frames from frame ``start``
(:func:`sharpkd.data.video_link.read_clip`).  Through each video link
(:func:`sharpkd.data.video_link.send`: the frame to ``scale`` with antialiased bilinear, one
libx264 stream with P- and B-frames, decoded, bilinear up) every frame is restored by every method
and scored (:class:`sharpkd.evaluation.video.ClipScores`: PSNR, temporal error, motion ratio, and
the frames where a method is below the received frame):

* ``received``: the received frame itself;
* ``lanczos``: the decoded small frame re-upsampled with Lanczos;
* ``unsharp``: an unsharp mask (radius, amount) on the received frame, when one is given;
* each method of ``methods``: a callable from the received frame (HxWx3 uint8) to its output;
* each method of ``temporal``: a callable from the received frame and the one received before it
  (the first frame of a clip is given itself as the one before) to its output.

:func:`score_clips` returns ``{"clips": {clip: {... "links": {spec: {coded size, bytes, sha256,
kbps, frame types, "methods": scores}}}}, "mean": {spec: {method: mean over clips}}}``: the
evaluate stage (``evaluate.video`` in params.yaml), the teacher_video stage and
``experiments/video_links.py`` all use it.  A bad input (no such folder, no video file in it, a
clip that cannot be read or is shorter than ``start + frames``) is one :class:`SharpkdError` line
naming the file and the setting (:data:`PARAM_NAMES`, or the caller's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from sharpkd.data.degrade import parse_video_link, video_link_name
from sharpkd.data.video_link import ENCODER, GOP, REFERENCE_AREA, read_clip, send
from sharpkd.errors import SharpkdError
from sharpkd.evaluation.classical import unsharp_mask
from sharpkd.evaluation.video import MOTION_RATIO, TEMPORAL_ERROR, ClipScores, mean_over_clips

#: File suffixes taken as video clips in a folder.
VIDEO_SUFFIXES = (".avi", ".m4v", ".mkv", ".mov", ".mp4", ".webm")
#: The names errors give each setting: params.yaml's keys (the experiment passes its options).
PARAM_NAMES = {"clips": "evaluate.video.dir", "frames": "evaluate.video.frames", "start": "evaluate.video.start",
               "links": "evaluate.video.links", "scale": "degrade.scale"}
#: The rows every link has, in this order, before the caller's methods.
BASELINES = ("received", "lanczos", "unsharp")

Method = Callable[[np.ndarray], np.ndarray]
TemporalMethod = Callable[[np.ndarray, np.ndarray], np.ndarray]


def clip_files(paths: str | Path | Sequence[str | Path], names: Mapping[str, str] = PARAM_NAMES) -> list[Path]:
    """The video files of ``paths``: each folder's files with a video suffix (:data:`VIDEO_SUFFIXES`),
    sorted by name, and each file itself, in the order given."""
    where = names["clips"]
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES),
                            key=lambda f: f.name)
        elif p.is_file():
            files.append(p)
        else:
            raise SharpkdError(f"{where} {p}: no such file or folder")
    if not files:
        raise SharpkdError(f"{where} {' '.join(map(str, paths))}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    stems = [f.stem for f in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise SharpkdError(f"{where}: two clips are named {dup[0]!r} (the results name clips by file name)")
    return files


def link_specs(links: Iterable[str], names: Mapping[str, str] = PARAM_NAMES, shown=None) -> list[str]:
    """``links`` as video link specs (:func:`sharpkd.data.degrade.parse_video_link`), each once;
    ``shown``: what the error repeats (default: the list)."""
    where = names["links"]
    specs = [video_link_name(parse_video_link(s, where)) for s in links if str(s).strip()]
    if not specs or len(set(specs)) != len(specs):
        raise SharpkdError(f"{where} {shown if shown is not None else list(links)!r}: give one or more different "
                           "video links")
    return specs


def check_settings(frames: int, start: int, scale: float, names: Mapping[str, str] = PARAM_NAMES) -> None:
    """``frames`` of at least 2, ``start`` of 0 or more, ``scale`` in (0, 1), else one error line."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise SharpkdError(f"{names['frames']} must be at least 2 (the temporal scores compare consecutive frames), "
                           f"got {frames}")
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise SharpkdError(f"{names['start']} must be 0 or more, got {start}")
    if not 0 < scale < 1:
        raise SharpkdError(f"{names['scale']} must be in (0, 1), got {scale}")


def _read(path: Path, frames: int, start: int, names: Mapping[str, str]) -> tuple[list[np.ndarray], object]:
    """:func:`read_clip`, its errors naming the settings that chose the file and its frames."""
    try:
        return read_clip(path, frames, start)
    except SharpkdError as exc:
        msg = str(exc)
        if "asked for" in msg:  # too short for start + frames
            raise SharpkdError(f"{msg} ({names['frames']} {frames}, {names['start']} {start}: use a longer clip "
                               "or fewer frames)") from None
        raise SharpkdError(f"{msg} (a clip of {names['clips']})") from None


def score_clips(files: Sequence[str | Path], links: Sequence[str], *, frames: int, start: int = 0, scale: float = 0.6,
                methods: Mapping[str, Method] | None = None, unsharp: tuple[float, float] | None = None,
                names: Mapping[str, str] = PARAM_NAMES, log: Callable[[str], None] | None = None,
                temporal: Mapping[str, TemporalMethod] | None = None) -> dict:
    """Every method on every clip of ``files`` through every video link of ``links`` (see the module
    docstring).  Deterministic: the same clips, settings and methods give the same dict."""
    check_settings(frames, start, scale, names)
    links = link_specs(links, names)
    methods, temporal = dict(methods or {}), dict(temporal or {})
    clash = sorted((set(methods) | set(temporal)) & set(BASELINES)) or sorted(set(methods) & set(temporal))
    if clash:
        raise SharpkdError(f"method {clash[0]!r} is a baseline row's name or given twice")
    clips = {}
    for f in map(Path, files):
        gts, fps = _read(f, frames, start, names)
        h, w = gts[0].shape[:2]
        clip = {"file": f.name, "size": f"{w}x{h}", "fps": str(fps), "frames": len(gts), "start": start, "links": {}}
        for spec in links:
            t = time.time()
            sent = send(gts, spec, scale, fps)
            scores = ClipScores()
            before = None
            for i, gt in enumerate(gts):
                received = sent.received(i)
                before = received if before is None else before
                outs = {"received": received, "lanczos": sent.lanczos(i)}
                if unsharp:
                    outs["unsharp"] = unsharp_mask(received, unsharp[0], unsharp[1])
                outs |= {m: fn(received) for m, fn in methods.items()}
                outs |= {m: fn(received, before) for m, fn in temporal.items()}
                scores.add(gt, outs)
                before = received
            low_h, low_w = sent.low[0].shape[:2]
            clip["links"][spec] = {
                "coded_size": f"{low_w}x{low_h}", "bytes": sent.bytes, "sha256": sent.sha256,
                "kbps": round(sent.bytes * 8 * float(fps) / len(gts) / 1000, 1), "frame_types": sent.frame_types,
                "methods": scores.result(reference="received")}
            if log:
                r = clip["links"][spec]["methods"]
                log(f"{f.stem} {spec} ({clip['links'][spec]['kbps']} kbit/s, {time.time() - t:.0f} s): "
                    + ", ".join(f"{m} {v['psnr']:.2f}" for m, v in r.items()))
        clips[f.stem] = clip
    mean = {spec: mean_over_clips([c["links"][spec]["methods"] for c in clips.values()]) for spec in links}
    return {"clips": clips, "mean": mean}


def link_settings(scale: float, links: Sequence[str], frames: int, start: int) -> dict:
    """How :func:`score_clips` measured (for a settings record, not for diffing)."""
    return {
        "scale": scale, "down": "bilinear (antialiased, Pillow; sharpkd.data.degrade.downscale)",
        "up": "bilinear (received), Lanczos (lanczos), from the decoded small frame",
        "links": list(links), "encoder": "libx264 through PyAV, yuv420p", "encoder_options": ENCODER, "gop": GOP,
        "bitrate_reference": f"h264v:NNNk is NNN kbit/s at {REFERENCE_AREA[0]}x{REFERENCE_AREA[1]}, scaled to the "
                             "coded frame's area",
        "frames": frames, "start": start,
        "psnr": "RGB, all pixels and channels, data_range 255; mean over frames, then over clips",
        "temporal_error": TEMPORAL_ERROR, "motion_ratio": MOTION_RATIO,
        "frames_below_reference": "frames of the clip where the method's PSNR is below the received frame's",
        "ground_truth": "the clip's decoded frames (its own colour matrix and range)",
    }


# --------------------------------------------------------------------------------------------
# the pipeline's video set: the teacher's rows from the teacher_video stage, eval.json's layout

#: The rows of eval.json ``video``, in this order (the methods a run has).
METHOD_ORDER = ("received", "lanczos", "unsharp", "teacher", "student")


def merge_method(result: dict, other: dict, method: str, where: str) -> dict:
    """``result`` (:func:`score_clips`) with ``method``'s rows taken from ``other``, a result on
    the same clips, frames and links (checked; ``where`` names ``other`` in the error), whose
    ``frames_below_reference`` counts against its own received frames.  A stream whose bytes
    differ (another libx264 build) is an error too: the two would not score the same frames."""
    for stem, clip in result["clips"].items():
        theirs = (other.get("clips") or {}).get(stem)
        if theirs is None or (theirs["frames"], theirs["start"], theirs["size"]) != (clip["frames"], clip["start"],
                                                                                   clip["size"]):
            raise SharpkdError(f"{where} holds no {method} rows for clip {stem!r} at {clip['frames']} frames from frame "
                               f"{clip['start']}: rerun the stage that wrote it (dvc repro)")
        for spec, link in clip["links"].items():
            t = (theirs.get("links") or {}).get(spec)
            if t is None or method not in t.get("methods", {}):
                raise SharpkdError(f"{where} holds no {method} rows for clip {stem!r} through {spec}: rerun the "
                                   "stage that wrote it (dvc repro)")
            if t["sha256"] != link["sha256"]:
                raise SharpkdError(f"{where}: clip {stem!r} through {spec} coded to other bytes there "
                                   f"(sha256 {t['sha256'][:12]}, here {link['sha256'][:12]}): rerun both stages on "
                                   "one machine")
            link["methods"][method] = t["methods"][method]
    for spec in result["mean"]:
        result["mean"][spec] = mean_over_clips([c["links"][spec]["methods"] for c in result["clips"].values()])
    return result


def _ordered(methods: Mapping[str, dict]) -> dict:
    return {m: methods[m] for m in [*METHOD_ORDER, *sorted(set(methods) - set(METHOD_ORDER))] if m in methods}


def _coded(link: dict) -> dict:
    w, h = map(int, link["coded_size"].split("x"))
    return {"coded_width": w, "coded_height": h, "kbps": link["kbps"]}


def eval_summary(result: dict) -> dict:
    """eval.json's ``video``: per link, the mean over clips and each clip's scores, coded frame size
    and bit rate (numbers only, worth diffing; bytes, hashes and frame types go to the settings)."""
    clips = result["clips"]
    links = list(result["mean"])
    out = {"n_clips": len(clips), "frames_per_clip": next(iter(clips.values()))["frames"] if clips else 0,
           "links": {}}
    for spec in links:
        out["links"][spec] = {
            "mean": _ordered(result["mean"][spec]),
            "clips": {stem: _coded(c["links"][spec]) | {"methods": _ordered(c["links"][spec]["methods"])}
                      for stem, c in clips.items()}}
    return out


def settings_record(result: dict, *, dir: str, scale: float, links: Sequence[str], frames: int, start: int,
                    unsharp: tuple[float, float] | None, teacher_from: str | None) -> dict:
    """eval_settings.json's ``video``: how the rows were measured, and each clip's streams."""
    return {"dir": dir} | link_settings(scale, links, frames, start) | {
        "unsharp": None if unsharp is None else {"radius": unsharp[0], "amount": unsharp[1]},
        "teacher_from": teacher_from,
        "clips": {stem: {k: c[k] for k in ("file", "size", "fps", "frames", "start")}
                  | {"links": {spec: {k: ln[k] for k in ("coded_size", "bytes", "sha256", "frame_types")}
                               for spec, ln in c["links"].items()}}
                  for stem, c in result["clips"].items()}}


def format_link_table(spec: str, mean: Mapping[str, dict], n_clips: int, frames: int) -> str:
    """A plain-text table of one link's mean scores: PSNR, gain over the received frame and over
    Lanczos, temporal error and the frames below the received frame (mean per clip)."""
    rec, lz = mean["received"]["psnr"], (mean.get("lanczos") or {}).get("psnr")
    head = ["method", "PSNR (dB)", "vs received", "vs Lanczos", "temporal error", "frames below received"]
    rows = []
    for m, v in _ordered(mean).items():
        te = v.get("temporal_error")
        below = v.get("frames_below_reference")
        rows.append([m, f"{v['psnr']:.3f}", f"{v['psnr'] - rec:+.3f}", "-" if lz is None else f"{v['psnr'] - lz:+.3f}",
                     "-" if te is None else f"{te:.3f}", "-" if below is None else f"{below:g} of {frames}"])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [f"video link {spec}: mean of {n_clips} clip(s), {frames} frames each"]
    for r in [head, *rows]:
        lines.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    return "\n".join(lines)
