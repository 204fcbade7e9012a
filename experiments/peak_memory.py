#!/usr/bin/env python3
"""Peak memory of ``sharpkd sharpen`` on large photos.

Makes synthetic JPEGs (default: 1080p, 12 MP and 48 MP) in a temporary folder, runs
``sharpkd sharpen`` on each in its own subprocess and reports the child's peak resident set
size (``ru_maxrss`` from ``os.wait4``, i.e. that one process) and wall time as JSON::

    .venv/bin/python experiments/peak_memory.py                    # all three sizes, default tile
    .venv/bin/python experiments/peak_memory.py --tile 512 --out metrics/peak_memory.json
    .venv/bin/python experiments/peak_memory.py --sizes small=640x480

The images are smooth gradients with texture (so the JPEGs have realistic sizes), seeded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_SIZES = {"1080p": (1920, 1080), "12MP": (4000, 3000), "48MP": (8000, 6000)}


def synthetic_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: colour gradients, a few sharp edges and mild noise, built in
    horizontal bands so that even 48 MP needs little memory here."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height))
    band = 512
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    for top in range(0, height, band):
        rows = min(band, height - top)
        y = (np.arange(top, top + rows, dtype=np.float32) / max(height - 1, 1))[:, None]
        r = 0.5 + 0.4 * np.sin(6 * x + 3 * y)
        g = 0.5 + 0.4 * np.cos(4 * x * y + 2 * y)
        b = ((np.floor(x * 24) + np.floor(y * 16)) % 2) * 0.5 + 0.25  # hard edges
        rgb = np.stack([r + 0 * y, g, b + 0 * x], axis=2)
        rgb += rng.normal(0, 0.02, rgb.shape).astype(np.float32)
        img.paste(Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8)), (0, top))
    return img


def measure(cmd: list[str]) -> dict:
    """Run ``cmd``; its exit status, peak RSS (MiB) and wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024  # bytes on macOS
    out = {"exit": proc.returncode, "peak_rss_mib": round(kib / 1024, 1), "seconds": round(seconds, 2)}
    if proc.returncode != 0:
        out["stderr_tail"] = stderr.decode(errors="replace").strip().splitlines()[-3:]
    return out


def parse_sizes(items: list[str] | None) -> dict[str, tuple[int, int]]:
    if not items:
        return dict(DEFAULT_SIZES)
    sizes = {}
    for item in items:
        name, _, dims = item.rpartition("=")
        try:
            w, h = (int(v) for v in dims.lower().split("x"))
        except ValueError:
            raise SystemExit(f"error: --sizes {item!r}: expected NAME=WIDTHxHEIGHT, e.g. 12MP=4000x3000") from None
        sizes[name or dims] = (w, h)
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", help="NAME=WIDTHxHEIGHT ... (default: 1080p, 12MP, 48MP)")
    ap.add_argument("--tile", type=int, help="passed to sharpkd sharpen --tile (default: its default)")
    ap.add_argument("--device", default="cpu", help="passed to sharpkd sharpen --device")
    ap.add_argument("--weights", help="passed to sharpkd sharpen --weights (default: the shipped student)")
    ap.add_argument("--runtime", default="auto", help="passed to sharpkd sharpen --runtime (default: auto)")
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args(argv)

    runs = {}
    with tempfile.TemporaryDirectory(prefix="sharpkd-peak-memory-") as tmp:
        for name, (w, h) in parse_sizes(args.sizes).items():
            src = Path(tmp) / f"{name}.jpg"
            synthetic_photo(w, h).save(src, quality=92)
            cmd = [sys.executable, "-m", "sharpkd.app.cli", "sharpen", str(src), "-o", str(Path(tmp) / f"out-{name}"),
                   "-q", "--overwrite", "--device", args.device]
            if args.tile:
                cmd += ["--tile", str(args.tile)]
            if args.weights:
                cmd += ["--weights", args.weights]
            cmd += ["--runtime", args.runtime]
            runs[name] = {"width": w, "height": h, "megapixels": round(w * h / 1e6, 2),
                          "jpeg_bytes": src.stat().st_size} | measure(cmd)
            src.unlink()
            print(f"{name}: {runs[name]}", file=sys.stderr)
    import torch

    result = {"runs": runs, "tile": args.tile, "device": args.device, "runtime": args.runtime, "python": platform.python_version(),
              "torch": torch.__version__, "cpu_cores": os.cpu_count()}
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0 if all(r["exit"] == 0 for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
