#!/usr/bin/env python3
"""Peak memory of the data stages (resize, slice, degrade) as the source folder grows.

For each ``--sizes`` count N, writes N synthetic PNG photos (seeded) into a temporary folder, runs
``python -m stages.resize``, ``stages.slice`` and ``stages.degrade`` there one after the other,
each in its own subprocess, and records that process's peak resident set size and wall time.
The peak is ``VmHWM`` of ``/proc/self/status``, read by the process as it exits (``ru_maxrss``
elsewhere, which on Linux also counts the launching process's memory at the fork).  The stages run on ``params.yaml`` with the ``resize`` section set
to ``--width`` x ``--height`` (``mode: fixed``); every other key is the repository's::

    .venv/bin/python experiments/data_memory.py                                  # 200 and 2000 images
    .venv/bin/python experiments/data_memory.py --sizes 200 2000 --out metrics/default/bench/data_memory.json

``--out`` writes (or updates) the JSON under ``--label`` (default ``current``): the runs, the git
revision, the machine (:func:`sharpkd.inference.bench.machine`) and the command.  Other processes
on the machine change wall times, not the memory figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
STAGES = {
    "resize": ["--raw", "raw", "--out", "resized"],
    "slice": ["--images", "resized", "--out", "slices", "--split", "split.json"],
    "degrade": ["--slices", "slices", "--out", "degraded", "--links-out", "degraded_links",
                "--provenance", "degrade.json"],
}


def synthetic_photos(folder: Path, n: int, width: int, height: int) -> None:
    """``n`` seeded photo-like PNGs (gradients, edges, noise) of ``width`` x ``height``."""
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(n):
        rng = np.random.default_rng(i)
        a, b, c = rng.uniform(0.01, 0.1, 3)
        base = np.stack([np.sin(a * x + c * y), np.cos(b * y + a * x), ((x // (8 + i % 13)) % 2) * 0.8], axis=2)
        img = np.clip(127 + 100 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:05d}.png")


# Runs a stage module and, as the process exits, writes its peak RSS in KiB to argv[1].
RUNNER = r"""
import atexit, resource, runpy, sys
out, module = sys.argv[1], sys.argv[2]
def peak():
    try:
        kib = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // (1024 if sys.platform == "darwin" else 1)
    open(out, "w").write(str(kib))
atexit.register(peak)
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def measure(module: str, args: list[str], cwd: Path, env: dict) -> dict:
    """Run ``python -m module args`` in ``cwd``; its exit status, peak RSS (MiB) and wall seconds."""
    peak = cwd / ".peak_kib"
    peak.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(peak), module, *args], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kib = int(peak.read_text()) if peak.exists() else 0
    out = {"exit": proc.returncode, "peak_rss_mib": round(kib / 1024, 1), "seconds": round(time.perf_counter() - t0, 2)}
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
    return out


def run_size(n: int, args) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["resize"] = {"mode": "fixed", "width": args.width, "height": args.height}
    env = os.environ | {"PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    with tempfile.TemporaryDirectory(prefix="sharpkd-data-memory-") as tmp:
        work = Path(tmp)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        synthetic_photos(work / "raw", n, args.source_width, args.source_height)
        out = {}
        for name, stage_args in STAGES.items():
            out[name] = measure(f"stages.{name}", stage_args, work, env)
            print(f"{n} images, {name}: {out[name]}", file=sys.stderr)
            if out[name]["exit"]:
                break
        out["data_mib"] = {d: round(sum(f.stat().st_size for f in (work / d).rglob("*") if f.is_file()) / 2**20, 1)
                           for d in ("raw", "resized", "slices", "degraded", "degraded_links") if (work / d).exists()}
    return out




def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[200, 2000], help="source image counts (default: 200 2000)")
    ap.add_argument("--source-width", type=int, default=256, help="synthetic photo width (default: 256)")
    ap.add_argument("--source-height", type=int, default=192, help="synthetic photo height (default: 192)")
    ap.add_argument("--width", type=int, default=192, help="resize.width (default: 192)")
    ap.add_argument("--height", type=int, default=128, help="resize.height (default: 128)")
    ap.add_argument("--label", default="current", help="the key the runs are stored under in --out (default: current)")
    ap.add_argument("--out", help="write (or update) this JSON file")
    args = ap.parse_args(argv)
    if any(n < 10 for n in args.sizes):
        print("error: --sizes: every count must be at least 10", file=sys.stderr)
        return 1

    runs = {str(n): run_size(n, args) for n in args.sizes}
    sys.path.insert(0, str(ROOT))
    from sharpkd.inference.bench import machine  # imports torch: after the runs
    from sharpkd.provenance import record as provenance

    record = {"runs": runs, "machine": machine("cpu"),
              **provenance([__file__, *(argv if argv is not None else sys.argv[1:])]),
              "source_size": f"{args.source_width}x{args.source_height}", "resize": f"{args.width}x{args.height}"}
    print(json.dumps(record, indent=2, sort_keys=True))
    if args.out:
        path = Path(args.out)
        data = json.loads(path.read_text()) if path.exists() else {}
        data[args.label] = record
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return 0 if all(r.get(s, {}).get("exit") == 0 for r in runs.values() for s in STAGES) else 1


if __name__ == "__main__":
    sys.exit(main())
