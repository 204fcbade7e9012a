"""The ``sharpkd`` command: sharpen images, folders and videos; benchmark; export to ONNX."""

from __future__ import annotations

import argparse
import json
import sys

from sharpkd.errors import SharpkdError, UsageError, one_line, os_error_message

DEFAULT_TILE = 2048  # sharpkd.inference.tiled.DEFAULT_TILE, without importing torch for --help
RUNTIMES = ("auto", "torch", "torch-compile", "openvino", "onnxruntime")  # sharpkd.inference.runtimes.RUNTIMES, likewise


def _add_runtime(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--runtime", default="auto", choices=RUNTIMES,
                        help=f"what runs the student{what} (sharpkd/inference/runtimes.py); auto: openvino on the CPU when "
                             "installed, else torch")


def _add_weights(parser: argparse.ArgumentParser, auto: bool = False) -> None:
    """``--weights PATH`` or ``--student NAME`` (a shipped student, sharpkd.app.shipped.SHIPPED), not both;
    ``auto``: ``--student auto`` (sharpkd.app.auto) is the default."""
    from sharpkd.app.shipped import DEFAULT_STUDENT, SHIPPED, describe

    g = parser.add_mutually_exclusive_group()
    g.add_argument("--weights", metavar="PATH", help="a student .safetensors you trained (models/<profile>/student.safetensors); "
                                                     "not with --student")
    if auto:
        g.add_argument("--student", metavar="NAME", default="auto",
                       help="a shipped student, or auto: the sharpest on coded frames that keeps up with the frame "
                            "rate, timed on this machine on first use and cached (sharpkd bench --calibrate times "
                            "again; images: the sharpest on clean frames); " + "; ".join(describe(n) for n in SHIPPED))
        return
    g.add_argument("--student", metavar="NAME",
                   help=f"a shipped student (default: {DEFAULT_STUDENT}): "
                        + "; ".join(describe(n) for n in SHIPPED))


def _weights(args: argparse.Namespace):
    """The student file the command runs: ``--weights``, else the shipped ``--student``."""
    from sharpkd.app.shipped import DEFAULT_STUDENT, shipped_weights

    return args.weights or shipped_weights(args.student or DEFAULT_STUDENT)


def _check_output_file(path: str | None, option: str) -> None:
    """Refuse ``option PATH`` up front (before any work) when PATH is something an output must not
    replace (a FIFO, a device, a symbolic link, a folder; :func:`sharpkd.files.replace_problem`)."""
    from sharpkd.files import replace_problem

    if path is not None and (problem := replace_problem(path)) is not None:
        raise UsageError(f"{option} {path}: {problem}")


def _device(name: str) -> str:
    from sharpkd.process import resolve_device

    return resolve_device(name)


def cmd_sharpen(args: argparse.Namespace) -> int:
    from sharpkd.files import clean_stale_temps
    from sharpkd.app.sharpen import OVERLAP, Sharpener, check_options, check_output_dir, plan, run_jobs

    from sharpkd.video.codec import check_video_options

    from sharpkd.app.measure import check_student, chosen_weights

    fmt = check_options(tile=args.tile, strength=args.strength, fmt=args.format)
    video = check_video_options(args.codec, args.crf, args.preset, args.keep_partial, args.max_frame_pixels)
    check_student(args.student)
    if args.timings and __import__("os").path.isdir(args.timings):
        raise UsageError(f"--timings {args.timings}: is a folder; give the JSON file to write")
    device = _device(args.device)
    out = check_output_dir(args.output, args.inputs)
    stale = clean_stale_temps(out)
    if stale:
        print(f"removed {len(stale)} temporary file(s) left in {out} by an interrupted run", file=sys.stderr)
    jobs, failed = plan(args.inputs, out, fmt)
    from sharpkd.app.auto import pick_for_jobs

    weights = chosen_weights(args, lambda: pick_for_jobs(jobs, device=device, runtime=args.runtime, tile=args.tile))
    sharpener = Sharpener(weights, device=device, tile=args.tile, overlap=OVERLAP, strength=args.strength,
                          runtime=args.runtime)
    multiple = max(1, int(getattr(sharpener.model, "multiple_of", 1)))
    if args.tile % multiple:
        raise UsageError(f"--tile must be a multiple of {multiple} for this student, got {args.tile}")
    if args.reuse_unchanged:
        from sharpkd.video.changed import ChangedWindows

        sharpener = ChangedWindows(sharpener)
    summary, videos = run_jobs(jobs, sharpener, progress=not args.quiet, overwrite=args.overwrite, video=video)
    for v in videos:
        ratio = v["flicker_ratio"]
        copied = (", ".join(f"{v['copied_streams'].count(t)} {t}" for t in ("audio", "subtitle")
                            if t in v["copied_streams"]) + f" stream(s) copied ({sum(v['copied_packets'])} packets)"
                  ) if v["copied_streams"] else "no audio"
        if v.get("empty_streams"):
            copied += (f", {len(v['empty_streams'])} {'/'.join(sorted(set(v['empty_streams'])))} stream(s) not "
                       "copied: declared by the container but no packet of them could be read")
        dropped = f", {len(v['dropped_streams'])} data stream(s) dropped" if v["dropped_streams"] else ""
        speed = f"{v['processing_fps']:.2f} frames/s" if v["processing_fps"] else "n/a"
        t = v.get("per_frame_ms") or {}
        if t:
            speed += (f" (per frame: decode {t['decode']:.0f} + to RGB {t['to_rgb']:.0f} ms CPU, model "
                      f"{t['model']:.0f} ms, to YUV {t['to_yuv']:.0f} + encode {t['encode']:.0f} ms CPU)")
        if v.get("recomputed") is not None:
            speed += f"; recomputed {100 * v['recomputed']:.1f}% of the windows (--reuse-unchanged)"
        print(f"{v['file']}: {v['frames']} frames at {v['fps']:.3f} fps, {v['size'][0]}x{v['size'][1]}, "
              f"{v['codec']} crf {v['crf']} {v['pix_fmt']}, {copied}{dropped}; processed at {speed}; "
              f"temporal stability: output/input frame difference = {ratio if ratio is not None else 'n/a'}")
        if v["partial"]:
            of = f" of {v['frames_expected']}" if v["frames_expected"] else ""
            print(f"{v['file']}: partial: kept the {v['frames']}{of} frames that decoded (--keep-partial): "
                  f"{v['partial']}")
    if args.timings:
        from sharpkd.files import write_json

        write_json(args.timings, {"videos": videos})
    failed += summary.failed
    for src, why in failed:
        print(f"skipped {src}: {one_line(why)}", file=sys.stderr)
    kept = (f"; kept {len(summary.kept)} existing output(s) (--overwrite replaces them)" if summary.kept else "")
    experts = getattr(sharpener, "experts_line", lambda: None)()
    print(f"sharpened {len(summary.done)} file(s) into {args.output}; {len(failed)} failed{kept}"
          + (f"; {experts}" if experts else ""))
    return 1 if failed else 0


def cmd_stream(args: argparse.Namespace) -> int:
    """Raw frames in on stdin, sharpened raw frames out on stdout (see :func:`sharpkd.video.codec.stream`)."""
    import os

    from sharpkd.app.sharpen import OVERLAP, Sharpener, check_options
    from sharpkd.video.codec import RAW_FORMATS, parse_size, stream

    from sharpkd.app.auto import check_fps, pick
    from sharpkd.app.measure import check_student, chosen_weights

    width, height = parse_size(args.size)
    from sharpkd.video.codec import check_max_frame_pixels, frame_size_problem

    if problem := frame_size_problem(width, height, check_max_frame_pixels(args.max_frame_pixels)):
        raise UsageError(f"--size {args.size}: {problem.removeprefix('its ')}")
    check_options(tile=args.tile, strength=args.strength, fmt="png")
    check_student(args.student)
    fps = check_fps(args.fps)
    if args.pix_fmt not in RAW_FORMATS:
        raise UsageError(f"--pix-fmt {args.pix_fmt!r}: use one of {', '.join(RAW_FORMATS)}")
    for name, f in (("stdin", sys.stdin), ("stdout", sys.stdout)):
        if f is None or not _fd_open(f):
            raise UsageError(f"{name} is closed: pipe raw frames in and read the sharpened ones from stdout, e.g. "
                             f"ffmpeg ... -f rawvideo - | sharpkd stream --size {width}x{height} | ffmpeg ...")
    if sys.stdin.isatty():
        raise UsageError("stdin is a terminal: pipe raw frames in, e.g. ffmpeg -i in.mp4 -f rawvideo "
                         f"-pix_fmt {args.pix_fmt} - | sharpkd stream --size {width}x{height} | ...")
    if sys.stdout.isatty():
        raise UsageError("stdout is a terminal: pipe the frames on (e.g. to ffmpeg -f rawvideo ...) or redirect them")
    device = _device(args.device)
    bits = 16 if args.pix_fmt == "rgb48le" else 8
    weights = chosen_weights(args, lambda: pick(width, height, fps, f"--fps {fps:g}", device=device,
                                                runtime=args.runtime, tile=args.tile, bits=bits), quiet=args.quiet)
    sharpener = Sharpener(weights, device=device, tile=args.tile, overlap=OVERLAP,
                          strength=args.strength, runtime=args.runtime)
    multiple = max(1, int(getattr(sharpener.model, "multiple_of", 1)))
    if args.tile % multiple:
        raise UsageError(f"--tile must be a multiple of {multiple} for this student, got {args.tile}")
    sharpener.start_sequence()  # one stream: a pair of experts keeps its expert until the link clearly changes
    result = stream(sharpener, width, height, args.pix_fmt, progress=not args.quiet and sys.stderr.isatty())
    if result["broken_pipe"]:  # the next program stopped reading: stop quietly, as a SIGPIPE would
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second BrokenPipeError when Python flushes at exit
        return 141
    if not args.quiet:
        fps = f"{result['fps']:.1f} frames/s" if result["fps"] else "n/a"
        experts = sharpener.experts_line()
        print(f"stream: {result['frames']} frame(s) of {width}x{height} {args.pix_fmt} at {fps}"
              + (f"; {experts}" if experts else ""), file=sys.stderr)
    return 0


def _fd_open(f) -> bool:
    """False when the file object ``f`` is closed or its file descriptor is (a stream without a
    descriptor, such as a test's stand-in, counts as open)."""
    import os

    if getattr(f, "closed", False):
        return False
    try:
        fd = f.fileno()
    except Exception:
        return True
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _one_line_usage(parser: argparse.ArgumentParser):
    """``parser.error`` that prints one line (argparse prints the usage first) and exits 2."""

    def error(message: str):
        parser.exit(2, f"error: {one_line(message)} (see {parser.prog} --help)\n")

    return error


def _load_model(arch: str | None, args: argparse.Namespace):
    from sharpkd.app.sharpen import single_frame
    from sharpkd.nets.students import build_student, load_student

    if getattr(args, "config", None) and (args.weights or not arch):
        raise UsageError("--config sets the architecture of --arch; a weights file carries its own")
    if args.weights or not arch:
        model, meta = load_student(_weights(args))
        single_frame(model, f"--weights {_weights(args)}")
        return model, meta.get("arch", "?")
    try:
        config = json.loads(args.config) if getattr(args, "config", None) else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"--config must be a JSON object, e.g. '{{\"channels\": 32}}': {exc}") from None
    if not isinstance(config, dict):
        raise UsageError(f"--config must be a JSON object, e.g. '{{\"channels\": 32}}', got {args.config!r}")
    model = build_student(arch, **config)  # untrained weights time exactly like trained ones
    single_frame(model, f"--config {args.config}")
    if hasattr(model, "reparameterize"):
        model.reparameterize()
    return model.eval(), arch


#: Ranges of ``sharpkd bench``'s numeric options (checked before anything is built or timed).
BENCH_RANGES = {"height": (1, 16384), "width": (1, 16384), "runs": (1, 10000), "warmup": (0, 1000),
                "threads": (0, 1024), "tile": (64, 16384)}


def _check_bench_options(args: argparse.Namespace) -> None:
    """:class:`UsageError` naming the first ``bench`` option outside its range (:data:`BENCH_RANGES`)."""
    import math

    for name, (lo, hi) in BENCH_RANGES.items():
        value = getattr(args, name)
        if not lo <= value <= hi:
            extra = " (0: torch's choice)" if name == "threads" else ""
            raise UsageError(f"--{name} must be between {lo} and {hi}{extra}, got {value}")
    if not (math.isfinite(args.degrade) and 0 < args.degrade <= 1):
        raise UsageError(f"--degrade must be above 0 and at most 1 (1 = off), got {args.degrade}")


def cmd_bench(args: argparse.Namespace) -> int:
    _check_bench_options(args)
    _check_output_file(args.out, "--out")
    import torch

    from sharpkd.inference.bench import benchmark, machine, temporal_stability_of_frames
    from sharpkd.nets.cost import count_macs, count_params

    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    if args.peak or args.calibrate:
        from sharpkd.app import measure

        args.device = device
        return measure.bench_peak(args) if args.peak else measure.bench_calibrate(args)
    if args.teacher:
        return _bench_teacher(args, device)
    from sharpkd.inference.runtimes import resolve

    model, arch = _load_model(args.arch, args)
    if args.compare:
        return _bench_compare(args, model, arch, device)
    runtime = resolve(args.runtime, model, device)
    precision = _precision(args, device, model)
    result = {"arch": arch, "config": getattr(model, "config", {}), "runtime": runtime, "device": device,
              "precision": precision,
              "height": args.height, "width": args.width,
              "threads": torch.get_num_threads(), "parameters": count_params(model),  # the folded, shipped form
              "macs_per_frame": count_macs(model, args.height, args.width)}
    result |= benchmark(model, args.height, args.width, runs=args.runs, warmup=args.warmup, device=device,
                        runtime=runtime, precision=args.precision)
    if args.frames:
        result |= {"temporal": temporal_stability_of_frames(model, args.frames, args.pattern, device, args.degrade)}
    result["machine"] = machine(device)
    from sharpkd.app.measure import emit, with_peak

    result = with_peak(result, model)  # the cached `bench --peak` figures of this machine, when there are some
    emit(args, result)
    if not args.json:
        form = " int8" if getattr(model, "int8", None) else ""  # sharpkd.nets.quant: int8 convolutions in the runtimes
        route = f" ({result['int8_route']})" if "int8_route" in result else ""  # runtime.int8_route
        print(f"{arch}{form} ({result['parameters']:,} parameters, {result['macs_per_frame'] / 1e9:.2f} GMAC per "
              f"{args.width}x{args.height} frame) on {device} via {runtime}{route}: median {result['median_ms']:.1f} ms, "
              f"p95 {result['p95_ms']:.1f} ms, {result['fps']:.1f} fps")
        if "of_peak" in result:  # sharpkd.app.measure.with_peak
            o = result["of_peak"]
            print(f"  {100 * o['fraction']:.0f}% of this CPU's peak (bench --peak): at best {o['floor_ms']:.1f} ms, "
                  f"its MACs at {o['peak_gmacs']:.1f} GMAC/s {o['precision']}"
                  + (f" + {o['frame_io_ms']:.1f} ms of full-resolution passes" if o["frame_io_ms"] is not None else ""))
        if args.frames:
            t = result["temporal"]
            print(f"temporal stability on {t['frames']} consecutive frames: mean |frame difference| input "
                  f"{t['frame_diff_input']}, output {t['frame_diff_output']} (ratio {t['flicker_ratio']})")
    return 0


def _bench_compare(args: argparse.Namespace, model, arch: str, device: str) -> int:
    """Every installed runtime on the same frame in one process, side by side (``--compare``)."""
    import torch

    from sharpkd.inference.bench import benchmark, machine
    from sharpkd.nets.cost import count_macs, count_params
    from sharpkd.inference.runtimes import RUNTIMES, available

    rows = []
    for runtime in RUNTIMES[1:]:
        if not available(runtime) or (device != "cpu" and runtime in ("openvino", "onnxruntime")):
            continue
        timing = benchmark(model, args.height, args.width, runs=args.runs, warmup=max(args.warmup, 2),
                           device=device, runtime=runtime)
        rows.append({"runtime": runtime} | timing)
        if not args.json:
            print(f"  {runtime:14s} median {timing['median_ms']:7.1f} ms  p95 {timing['p95_ms']:7.1f} ms  "
                  f"{timing['fps']:5.1f} fps", flush=True)
    result = {"arch": arch, "config": getattr(model, "config", {}), "device": device, "height": args.height,
              "width": args.width, "threads": torch.get_num_threads(), "parameters": count_params(model),
              "macs_per_frame": count_macs(model, args.height, args.width), "runtimes": rows,
              "machine": machine(device)}
    from sharpkd.app.measure import emit

    emit(args, result)
    return 0


def _precision(args: argparse.Namespace, device: str, model=None) -> str:
    """What ``--precision`` means on ``device``: on CUDA the autocast dtype (auto: bf16, as
    sharpen runs), on the CPU the runtime's own (float32, or int8 for an int8 student)."""
    if device == "cpu":
        if args.precision not in ("auto", "fp32"):
            raise UsageError(f"--precision {args.precision} is for --device cuda; on the CPU the runtime runs the "
                             "student as it ships (float32, or int8)")
        return "int8" if getattr(model, "int8", None) else "fp32"
    return "bf16" if args.precision == "auto" else args.precision


def _bench_teacher(args: argparse.Namespace, device: str) -> int:
    """Time a saved teacher on one frame through the same tiled inference the pipeline uses."""
    import torch

    from sharpkd.inference.bench import benchmark, machine
    from sharpkd.training.teacher import describe, load_teacher

    model = load_teacher(args.teacher, device=device)
    d = describe(model)
    precision = _precision(args, device, model)
    timing = benchmark(model, args.height, args.width, runs=args.runs, warmup=args.warmup, device=device,
                       tile=args.tile, precision=args.precision)
    result = d | timing | {"device": device, "precision": precision, "height": args.height, "width": args.width, "tile": args.tile,
                           "threads": torch.get_num_threads(), "runs": args.runs, "machine": machine(device)}
    from sharpkd.app.measure import emit

    emit(args, result)
    if not args.json:
        print(f"teacher {d['arch']} ({d['parameters']:,} parameters) on {device}, {args.width}x{args.height} "
              f"in {args.tile}px tiles: median {timing['median_ms']:.0f} ms per frame over {args.runs} runs")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from sharpkd.inference.export import export_onnx

    _check_output_file(args.output, "-o")
    from sharpkd.app.shipped import expert_files

    model, arch = _load_model(None, args)
    export_onnx(model, args.output)
    pair = ("; of the pair of experts, the link-mixture one: the link estimate that picks between them is not "
            "part of the graph" if expert_files(_weights(args)) else "")
    print(f"wrote {args.output} ({arch}, dynamic height and width{pair})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="sharpkd", description="Restore the sharpness lost to downscale/upscale.")
    sub = ap.add_subparsers(dest="command", required=True)

    fmt = argparse.ArgumentDefaultsHelpFormatter
    s = sub.add_parser("sharpen", help="sharpen images, folders (recursive) and videos", formatter_class=fmt,
                       description="Sharpen images, folders (recursively) and videos into an output folder.  "
                                   "A file named on the command line goes to OUTPUT/<name>; a file found in a "
                                   "folder keeps its path below that folder.  Images keep their format unless "
                                   "--format says otherwise; videos keep their container.  Existing outputs are "
                                   "kept unless --overwrite.  Exit 0 when every file was sharpened, 1 when some "
                                   "failed (each named on one error line), 2 for an unusable command line.")
    s.add_argument("inputs", nargs="+", help="image files, folders, video files (mp4, avi, mov, mkv)")
    s.add_argument("-o", "--output", required=True,
                   help="output folder (created; must not be an input folder or inside one)")
    _add_weights(s, auto=True)
    s.add_argument("--strength", type=float, default=1.0,
                   help="0 = input, 1 = model output, up to 2 = stronger (extrapolated) sharpening")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when a GPU is visible")
    s.add_argument("--tile", type=int, default=DEFAULT_TILE, help="largest window in pixels (bounds memory)")
    s.add_argument("--format", default="same",
                   help="output image format: same (the input's own: png, jpg, webp, tif or bmp; other inputs "
                        "become png), or one of png, jpg, webp, tif, bmp for every image")
    s.add_argument("--overwrite", action="store_true",
                   help="replace outputs that already exist (without it they are kept, and counted)")
    s.add_argument("--codec", default="libx264",
                   help="video encoder: libx264/h264, libx265/h265, libsvtav1/av1, libaom-av1")
    s.add_argument("--crf", type=int, default=18,
                   help="video quality, constant rate factor (lower = better and bigger; 18 is "
                        "near-transparent; 0-51 for H.264/H.265, 0-63 for AV1)")
    s.add_argument("--preset", default="veryfast",
                   help="encoder speed/size trade-off: ultrafast ... veryfast (keeps up with the model "
                        "on a CPU) ... medium ... veryslow (AV1: also the encoder's speed number)")
    _add_runtime(s, " on 8-bit input")
    s.add_argument("--max-frame-pixels", type=int, default=0,
                   help="largest video frame decoded, in pixels (default 0: 8192x8192); larger ones fail the file "
                        "before decoding")
    s.add_argument("--keep-partial", action="store_true",
                   help="keep what decoded of a truncated or damaged video (without it: skip the file, exit 1)")
    s.add_argument("--reuse-unchanged", action="store_true",
                   help="videos: run the model only on the windows (of --tile pixels) whose input changed from "
                        "the previous frame, keeping the previous output elsewhere (the same bytes as running "
                        "every window); with a small --tile, e.g. 256, a local change touches few windows")
    s.add_argument("--timings", metavar="FILE",
                   help="also write each video's summary as JSON: frames, frames/s, where each frame's time went "
                        "(per_frame_ms: decode, to_rgb, model, to_yuv, encode, the model's waits)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    s.set_defaults(fn=cmd_sharpen)
    s.error = _one_line_usage(s)  # type: ignore[method-assign]

    r = sub.add_parser("stream", help="raw frames in on stdin, sharpened raw frames out on stdout (for pipes)",
                       formatter_class=fmt,
                       description="Sharpen raw video frames from stdin to stdout, e.g. ffmpeg -i in.mp4 -f rawvideo "
                                   "-pix_fmt rgb24 - | sharpkd stream --size 1920x1080 | ffmpeg -f rawvideo "
                                   "-pix_fmt rgb24 -s 1920x1080 -r 30 -i - out.mp4.  Exit 0 at the end of the "
                                   "input, 1 when it ends inside a frame (after writing the whole frames), 2 for "
                                   "an unusable command line, 141 when the reader of stdout stops.")
    r.add_argument("--size", required=True, help="frame size WIDTHxHEIGHT, as the sender's -s (e.g. 1920x1080)")
    r.add_argument("--pix-fmt", default="rgb24", help="rgb24 or rgb48le (16 bits per channel)")
    _add_weights(r, auto=True)
    r.add_argument("--fps", type=float, default=30.0,
                   help="frame rate the stream must keep up with (chooses the student with --student auto)")
    r.add_argument("--max-frame-pixels", type=int, default=0,
                   help="largest --size accepted, in pixels (0: 8192x8192)")
    r.add_argument("--strength", type=float, default=1.0,
                   help="0 = input, 1 = model output, up to 2 = stronger (extrapolated) sharpening")
    r.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda when a GPU is visible")
    r.add_argument("--tile", type=int, default=DEFAULT_TILE, help="largest window in pixels (bounds memory)")
    _add_runtime(r, " on 8-bit input")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary line on stderr")
    r.set_defaults(fn=cmd_stream)
    r.error = _one_line_usage(r)  # type: ignore[method-assign]

    b = sub.add_parser("bench", help="time one frame: median and p95 ms, fps, parameters, MACs", formatter_class=fmt)
    b.add_argument("--arch", help="time an untrained student of this arch (sharp, or report: the report's network) "
                                  "instead of weights")
    b.add_argument("--config", help="with --arch: its config as JSON (train.arch_config), "
                                    "e.g. '{\"channels\": 32, \"blocks\": 2}'")
    _add_weights(b)
    b.add_argument("--height", type=int, default=1080, help="frame height in pixels")
    b.add_argument("--width", type=int, default=1920, help="frame width in pixels")
    b.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where the model runs")
    _add_runtime(b, "")
    b.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="on --device cuda: autocast dtype (auto: bf16, as sharpen runs; fp32: none); the CPU "
                        "runs the student as it ships")
    b.add_argument("--compare", action="store_true", help="time every installed runtime side by side in one run")
    b.add_argument("--runs", type=int, default=20, help="timed calls")
    b.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--out", help="also write the JSON to this file (metrics/<profile>/bench/<row>-<cpu|cuda>.json "
                                 "feeds the generated benchmark tables)")
    b.add_argument("--teacher", help="time a saved teacher (.safetensors from the teacher stage) instead of a student")
    b.add_argument("--tile", type=int, default=512, help="window size for --teacher (the pipeline's teacher.tile)")
    b.add_argument("--frames", help="folder of consecutive video frames: also report temporal stability")
    b.add_argument("--pattern", default="*", help="file-name pattern of the frames in --frames (sorted by name)")
    b.add_argument("--degrade", type=float, default=0.6, help="degrade the frames first, as the link does (1 = off)")
    m = b.add_mutually_exclusive_group()
    m.add_argument("--peak", action="store_true",
                   help="instead of a model: what this CPU does through OpenVINO, float and int8: GMAC/s of plain "
                        "3x3 convolutions (32->32, 64->64) at half the frame's size, and ms per frame of the "
                        "full-resolution passes (uint8->float, pixel (un)shuffle, residual add, float->uint8); "
                        "kept in the cache folder, and later bench JSON of a student carries it (of_peak)")
    m.add_argument("--calibrate", action="store_true",
                   help="instead of one model: time every shipped student at --width x --height again and keep "
                        "the frame rates for --student auto (in $SHARPKD_CACHE_DIR, else "
                        "$XDG_CACHE_HOME/sharpkd or ~/.cache/sharpkd)")
    b.set_defaults(fn=cmd_bench)
    b.error = _one_line_usage(b)  # type: ignore[method-assign]

    e = sub.add_parser("export-onnx", help="export the student to ONNX with dynamic height and width",
                       formatter_class=fmt)
    _add_weights(e)
    e.add_argument("-o", "--output", required=True, help="model.onnx to write")
    e.set_defaults(fn=cmd_export_onnx)
    e.error = _one_line_usage(e)  # type: ignore[method-assign]
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command: 0 done, 1 a user error or some files skipped, 2 an unusable command line
    (option value, output folder), 130 interrupted (Ctrl-C or SIGTERM; temporary files removed),
    141 the reader of stdout went away (the work itself is done and written: only what was left to
    print is lost, and nothing is printed about it).  Every error is one line on stderr."""
    import warnings

    from sharpkd.process import sigterm_as_interrupt

    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda message, *a, **k: f"warning: {one_line(message)}\n"
    try:
        with sigterm_as_interrupt():
            return args.fn(args)
    except BrokenPipeError:  # stdout's reader stopped (`sharpkd sharpen ... | head -1`): quiet, as SIGPIPE is
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second BrokenPipeError when Python flushes at exit
        return 141
    except UsageError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except SharpkdError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # also an error a library made of it (sigterm_as_interrupt)
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
