"""``--student auto``: the sharpest shipped student that keeps up, timed on this machine.

The first time a frame size is needed on a machine, each shipped student (:data:`sharpkd.app.shipped.SHIPPED`)
is timed briefly on a random frame of that size (:data:`RUNS` calls after :data:`WARMUP`, through
the same :class:`sharpkd.app.sharpen.Sharpener` that sharpens), and the frame rates are kept in
``calibration.json`` in the user's cache folder (:mod:`sharpkd.cache`), keyed by the CPU model
(and GPU on CUDA), the runtime and its version, the sharpkd version and the thread count, and
within that by frame size.  ``sharpkd bench --calibrate`` measures again.

The choice (:func:`choose`): the students in order of quality, the first whose measured frame
rate is at least the target (a video's own frame rate; ``sharpkd stream --fps``); when none
keeps up, the fastest.  Video and streams arrive coded, so their order is by the cards' mean gain
over the H.264 link sets (``evaluation.links``); images by the gain on clean frames
(``evaluation.student_gain_over_input.psnr_db``).  Images have no frame rate to keep up with: the
sharpest student, and no timing runs.  The measured rate is the model's alone: decoding and
encoding share the CPU too.

Nothing here stops a command: when timing fails, :func:`pick` returns :data:`FALLBACK` with a
one-line warning.
"""

from __future__ import annotations

import json
import math
import types
from pathlib import Path
from typing import Callable

from sharpkd.app.shipped import DEFAULT_STUDENT, SHIPPED, shipped_card
from sharpkd.errors import SharpkdError, UsageError, one_line

AUTO = "auto"
FALLBACK = DEFAULT_STUDENT
CACHE_NAME = "calibration.json"
RUNS, WARMUP = 3, 1
DEFAULT_STREAM_FPS = 30.0


def coded_gain(card: dict) -> float | None:
    """A card's mean PSNR gain (dB) over the received frame on its H.264 link sets (``None`` without any)."""
    gains = []
    for spec, link in ((card.get("evaluation") or {}).get("links") or {}).items():
        m = (link or {}).get("methods") or {}
        try:
            if spec.startswith("h264"):
                gains.append(float(m["student"]["psnr"]) - float(m["identity"]["psnr"]))
        except (KeyError, TypeError, ValueError):
            continue
    return sum(gains) / len(gains) if gains else None


def quality_order(coded: bool = False) -> list[str]:
    """The shipped students, sharpest first by the PSNR gain on their cards: on clean frames, or with
    ``coded`` on the H.264 link sets (what a received video is); a student without one goes last."""
    def gain(name: str) -> float:
        card = shipped_card(name)
        g = (coded_gain(card) if coded else
             ((card.get("evaluation") or {}).get("student_gain_over_input") or {}).get("psnr_db"))
        return float(g) if isinstance(g, (int, float)) and math.isfinite(g) else -math.inf

    return sorted(SHIPPED, key=lambda n: -gain(n))


def check_fps(fps: float) -> float:
    """``--fps`` must be a positive, finite frame rate."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise UsageError(f"--fps must be a positive number of frames per second, got {fps}")
    return float(fps)


def _runtime(runtime: str, device: str) -> str:
    from sharpkd.inference.runtimes import resolve

    return resolve(runtime, types.SimpleNamespace(arch="sharp"), device)  # every shipped student is a sharp one


def calibration_key(device: str = "cpu", runtime: str = "auto") -> dict:
    """What cached timings must match: CPU (and GPU) model, runtime and its version, sharpkd
    version, torch threads."""
    import torch

    from sharpkd import __version__
    from sharpkd.inference.bench import machine, runtime_versions

    name = _runtime(runtime, device)
    m = machine(device)
    version = runtime_versions().get(name) if name in ("openvino", "onnxruntime") else torch.__version__
    key = {"cpu": m["cpu"], "device": "cuda" if str(device).startswith("cuda") else "cpu", "runtime": name,
           "runtime_version": version, "sharpkd": __version__, "threads": torch.get_num_threads()}
    if "gpu" in m:
        key["gpu"] = m["gpu"]
    return key


def size_key(width: int, height: int, bits: int = 8) -> str:
    return f"{width}x{height}" + ("" if bits == 8 else f"x{bits}")


def measure_student(name: str, width: int, height: int, *, device: str = "cpu", runtime: str = "auto",
                    tile: int | None = None, bits: int = 8, runs: int = RUNS, warmup: int = WARMUP) -> dict:
    """``{"median_ms", "fps"}`` of the shipped student ``name`` on one random frame, as ``sharpen`` runs it."""
    import numpy as np

    from sharpkd.app.sharpen import OVERLAP, Sharpener
    from sharpkd.app.shipped import shipped_weights
    from sharpkd.inference.bench import time_calls
    from sharpkd.inference.tiled import DEFAULT_TILE

    sharpener = Sharpener(shipped_weights(name), device=device, tile=tile or DEFAULT_TILE, overlap=OVERLAP,
                          runtime=runtime)
    sharpener.start_sequence()  # timed as a video runs it: a pair of experts estimates the link once a second
    dtype = np.uint8 if bits == 8 else np.uint16
    frame = np.random.default_rng(0).integers(0, np.iinfo(dtype).max + 1, (height, width, 3), dtype=dtype)
    sync = (lambda: __import__("torch").cuda.synchronize()) if str(device).startswith("cuda") else (lambda: None)
    t = time_calls(lambda: sharpener(frame), runs, warmup, sync)
    return {"median_ms": round(t["median_ms"], 3), "fps": round(t["fps"], 3)}


def _valid(entry) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("fps"), (int, float)) and entry["fps"] > 0


def _load() -> dict:
    """The calibration cache, ``{}`` (with one warning) when its content is not what this module writes."""
    import warnings

    from sharpkd.cache import cache_dir, read_cache

    data = read_cache(CACHE_NAME)
    if data and not isinstance(data.get("entries"), dict):
        warnings.warn(f"ignoring the cache {cache_dir() / CACHE_NAME} (not a calibration file); it will be rewritten")
        return {}
    return data


def calibrate(width: int, height: int, *, device: str = "cpu", runtime: str = "auto", tile: int | None = None,
              bits: int = 8, force: bool = False, measure: Callable[..., dict] | None = None) -> dict:
    """``{name: {"median_ms", "fps"}}`` for every shipped student at ``width x height``: from the
    cache when it holds them all for this machine (:func:`calibration_key`), else measured
    (``force``: always) and written back atomically.  Raises when a measurement fails; a cache
    that cannot be written is a warning."""
    import warnings

    from sharpkd.cache import write_cache

    measure = measure or measure_student
    key = calibration_key(device, runtime)
    kstr = json.dumps(key, sort_keys=True)
    data = _load()
    entries = data.get("entries", {})
    entry = entries.get(kstr) if isinstance(entries.get(kstr), dict) else {"key": key, "sizes": {}}
    sizes = entry.get("sizes") if isinstance(entry.get("sizes"), dict) else {}
    skey = size_key(width, height, bits)
    have = sizes.get(skey) if isinstance(sizes.get(skey), dict) else {}
    if not force and all(_valid(have.get(n)) for n in SHIPPED):
        return {n: have[n] for n in SHIPPED}
    timings = {n: measure(n, width, height, device=device, runtime=runtime, tile=tile, bits=bits) for n in SHIPPED}
    for n, t in timings.items():
        if not _valid(t):
            raise SharpkdError(f"timing student {n} gave no frame rate ({t!r})")
    sizes[skey] = timings
    entries[kstr] = {"key": key, "sizes": sizes}
    try:
        write_cache(CACHE_NAME, {"entries": entries})
    except OSError as exc:
        warnings.warn(f"could not keep the student timings in the cache ({one_line(exc)})")
    return timings


def choose(timings: dict, target_fps: float | None, order: list[str] | None = None) -> tuple[str, bool]:
    """``(name, keeps_up)``: the first student of ``order`` (sharpest first) whose ``fps`` is at
    least ``target_fps``; else the fastest, with ``keeps_up`` False.  No target: the sharpest."""
    order = [n for n in (order or quality_order()) if n in timings] if timings else list(order or quality_order())
    if target_fps is None:
        return order[0], True
    for name in order:
        if timings[name]["fps"] >= target_fps:
            return name, True
    return max(order, key=lambda n: timings[n]["fps"]), False


def _fps(v: float) -> str:
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def explain(name: str, keeps_up: bool, timings: dict, target_fps: float, source: str, width: int, height: int,
            order: list[str] | None = None) -> str:
    """The one line that says which student runs and why."""
    order = order or quality_order()
    mine = f"{_fps(timings[name]['fps'])} fps measured at {width}x{height}"
    if keeps_up:
        better = [n for n in order[:order.index(name)] if n in timings]
        slower = "; " + ", ".join(f"{n}: {_fps(timings[n]['fps'])} fps" for n in better) if better else ""
        return f"student: {name} ({mine} >= {_fps(target_fps)} fps of {source}{slower})"
    others = ", ".join(f"{n} {_fps(timings[n]['fps'])}" for n in order if n != name and n in timings)
    return (f"student: {name} ({mine}, the fastest; none keeps up with {_fps(target_fps)} fps of {source}: "
            f"{others} fps)")


def pick(width: int | None, height: int | None, target_fps: float | None, source: str, *, device: str = "cpu",
         runtime: str = "auto", tile: int | None = None, bits: int = 8,
         measure: Callable[..., dict] | None = None) -> tuple[str, str]:
    """``(student, line)`` for ``--student auto``: without a frame rate (images) the sharpest,
    untimed; else :func:`choose` on :func:`calibrate`.  Never raises: a failure gives
    :data:`FALLBACK` and a ``warning:`` line."""
    try:
        if target_fps is None or not width or not height:
            order = quality_order()
            return order[0], f"student: {order[0]} (the sharpest shipped student; {source}: no frame rate to keep up with)"
        order = quality_order(coded=True)  # a video or a stream arrives coded
        timings = calibrate(width, height, device=device, runtime=runtime, tile=tile, bits=bits, measure=measure)
        name, keeps_up = choose(timings, target_fps, order)
        return name, explain(name, keeps_up, timings, target_fps, source, width, height, order)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - choosing a student must never stop the command
        return FALLBACK, (f"warning: student auto: timing the shipped students failed ({one_line(exc)}); "
                          f"using {FALLBACK}")


def probe_video(path: str | Path) -> tuple[int, int, float] | None:
    """``(width, height, fps)`` of a video's first video stream, or ``None`` when it cannot be read
    (the sharpen run reports that file itself)."""
    try:
        import av

        with av.open(str(path)) as inp:
            v = inp.streams.video[0]
            rate = v.average_rate or v.guessed_rate
            w, h = int(v.codec_context.width), int(v.codec_context.height)
            return (w, h, float(rate)) if rate and w > 0 and h > 0 else None
    except Exception:  # noqa: BLE001 - a file PyAV cannot read is reported by the run itself
        return None


def pick_for_jobs(jobs, *, device: str = "cpu", runtime: str = "auto", tile: int | None = None,
                  measure: Callable[..., dict] | None = None) -> tuple[str, str]:
    """``--student auto`` for ``sharpkd sharpen``: the video with the most pixels per second sets
    the size and the frame rate to keep up with; without a readable video, the sharpest student."""
    videos = []
    for job in jobs:
        if job.kind == "video" and (p := probe_video(job.src)) is not None:
            videos.append((p[0] * p[1] * p[2], p, job.src))
    if not videos:
        return pick(None, None, None, "images only", device=device, runtime=runtime, tile=tile, measure=measure)
    _, (w, h, fps), src = max(videos, key=lambda v: v[0])
    more = f" (the most demanding of {len(videos)} videos)" if len(videos) > 1 else ""
    return pick(w, h, fps, Path(src).name + more, device=device, runtime=runtime, tile=tile, measure=measure)


__all__ = ["AUTO", "CACHE_NAME", "DEFAULT_STREAM_FPS", "FALLBACK", "calibrate", "calibration_key", "check_fps",
           "choose", "coded_gain", "explain", "measure_student", "pick", "pick_for_jobs", "probe_video", "quality_order"]
