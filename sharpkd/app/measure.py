"""``sharpkd bench --peak`` and ``sharpkd bench --calibrate``: what this machine can do, and how
fast each shipped student runs on it (for ``--student auto``, :mod:`sharpkd.app.auto`)."""

from __future__ import annotations

import argparse
import json
import sys

from sharpkd.errors import UsageError


def _check_size(args: argparse.Namespace, multiple: int = 1) -> None:
    mode = "--peak" if getattr(args, "peak", False) else "--calibrate"
    for option, value in (("--weights", args.weights), ("--student", args.student), ("--arch", args.arch),
                          ("--teacher", args.teacher), ("--frames", args.frames), ("--compare", args.compare)):
        if value:
            raise UsageError(f"{option} names one model to time; {mode} times "
                             + ("no model" if mode == "--peak" else "every shipped student") + ", leave it out")
    for option, value in (("--height", args.height), ("--width", args.width)):
        if value < 1 or value % multiple:
            what = f"a positive multiple of {multiple}" if multiple > 1 else "positive"
            raise UsageError(f"{option} must be {what}, got {value}")


def emit(args: argparse.Namespace, result: dict) -> None:
    """Print a bench result as JSON (``--json``) and/or write it to ``--out`` atomically, with the
    code revision and command that made it (:func:`sharpkd.provenance.record`)."""
    if args.json or args.out:
        from sharpkd.provenance import record

        result |= record()
    if args.json:
        print(json.dumps(result, sort_keys=True))
    if args.out:
        from sharpkd.files import write_json

        write_json(args.out, result)


def bench_peak(args: argparse.Namespace) -> int:
    """Measure the peak figures (:func:`sharpkd.inference.peak.measure`) at ``--width x --height``,
    print them, keep them in the cache, and write ``--out`` / ``--json``."""
    import torch

    from sharpkd.inference import peak
    from sharpkd.inference.bench import machine

    if args.device != "cpu":
        raise UsageError("--peak measures the CPU through OpenVINO; use it with --device cpu")
    _check_size(args, multiple=2)
    figures = peak.measure(args.height, args.width, runs=args.runs, warmup=args.warmup,
                           threads=torch.get_num_threads())
    result = {"peak": figures, "machine": machine("cpu")}
    peak.save(result)
    emit(args, result)
    if not args.json:
        print(f"peak through OpenVINO {figures['openvino']} on {result['machine']['cpu']}, "
              f"{figures['threads']} thread(s):")
        for r in figures["convolutions"]:
            kernels = ", ".join(r["kernels"]) or "?"
            print(f"  3x3 conv {r['channels']}->{r['channels']} at {r['width']}x{r['height']} {r['precision']:4s}: "
                  f"{r['gmacs']:8.1f} GMAC/s  ({kernels})")
        print(f"  full-resolution passes at {args.width}x{args.height}, ms per frame: "
              + ", ".join(f"{k} {v:.2f}" for k, v in figures["passes_ms"].items()))
    return 0


def with_peak(result: dict, model) -> dict:
    """``result`` (a student's bench) with the cached peak figures of this machine and the
    student's time against them (``of_peak``), when a peak was measured with the same threads."""
    from sharpkd.inference import peak

    if result.get("device") != "cpu" or "median_ms" not in result:
        return result
    figures = peak.cached(result.get("threads", 0))
    if not figures:
        return result
    ours = peak.of_peak(figures, result["macs_per_frame"], result["median_ms"], bool(getattr(model, "int8", None)),
                        result["height"], result["width"])
    return result | {"peak": {k: figures[k] for k in ("peak_gmacs", "passes_ms", "height", "width", "threads",
                                                      "openvino")}, "of_peak": ours}


def bench_calibrate(args: argparse.Namespace) -> int:
    """Time every shipped student at ``--width x --height`` again and keep the result for ``--student auto``."""
    from sharpkd.app import auto
    from sharpkd.cache import cache_dir

    _check_size(args)
    timings = auto.calibrate(args.width, args.height, device=args.device, runtime=args.runtime, force=True)
    result = {"calibration": timings, "width": args.width, "height": args.height,
              "key": auto.calibration_key(args.device, args.runtime), "cache": str(cache_dir() / auto.CACHE_NAME)}
    emit(args, result)
    if not args.json:
        print(f"calibrated at {args.width}x{args.height} ({result['key']['runtime']}, "
              f"{result['key']['threads']} thread(s)); kept in {result['cache']}:")
        for name in auto.quality_order():
            print(f"  {name:10s} {timings[name]['median_ms']:8.1f} ms  {timings[name]['fps']:6.1f} fps")
    return 0


def chosen_weights(args: argparse.Namespace, pick, quiet: bool = False):
    """The student file to run: ``--weights``, a named ``--student``, or for ``--student auto``
    the one ``pick()`` (:func:`sharpkd.app.auto.pick`) returns, its line printed on stderr
    (a warning always, the choice unless ``quiet``)."""
    from sharpkd.app.auto import AUTO
    from sharpkd.app.shipped import shipped_weights

    if args.weights:
        return args.weights
    if args.student != AUTO:
        return shipped_weights(args.student)
    name, line = pick()
    if not quiet or line.startswith("warning:"):
        print(line, file=sys.stderr, flush=True)
    return shipped_weights(name)


def check_student(name: str | None) -> None:
    """``--student`` of ``sharpen`` and ``stream``: auto or a shipped name."""
    from sharpkd.app.auto import AUTO
    from sharpkd.app.shipped import SHIPPED

    if name is not None and name != AUTO and name not in SHIPPED:
        raise UsageError(f"--student must be {AUTO} or one of {', '.join(SHIPPED)}, got {name!r}")


__all__ = ["bench_calibrate", "bench_peak", "check_student", "chosen_weights", "with_peak"]
