#!/usr/bin/env python3
"""What the runtime graph's unshuffled layout buys: the shipped students through OpenVINO, two ways.

:class:`sharpkd.runtime.UInt8Graph` runs a ``sharp`` student in its pixel-unshuffled layout: the
uint8 frame is unshuffled and shuffled back as uint8, and the residual add and the rounding run at
the head's resolution.  The other way, kept here to measure against, converts the full frame to
float32 first and adds the residual at full resolution (the graph before this layout).  Both
are compiled by :class:`sharpkd.runtime.CompiledStudent` and timed on one 1080p frame,
interleaved ``--passes`` times; the fastest median of each is printed::

    .venv/bin/python tools/layout_probe.py --passes 6 --runs 15
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--passes", type=int, default=6)
    ap.add_argument("--students", nargs="+", default=["default", "fast"], help="shipped students (--student names)")
    args = ap.parse_args()
    import torch
    from torch import nn

    from sharpkd.bench import time_calls
    from sharpkd.inference import prepare
    from sharpkd.models import load_student
    from sharpkd.runtime import CompiledStudent
    from sharpkd.sharpen import shipped_weights

    class FullFrame(nn.Module):
        """The student without its ``unshuffled`` method, so UInt8Graph converts the full frame."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.student = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.student(x)

    torch.set_num_threads(2)
    frame = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    compiled = {}
    for name in args.students:
        model = prepare(load_student(shipped_weights(name))[0])
        compiled[f"{name}, full-frame float"] = CompiledStudent(FullFrame(model), "openvino", threads=2)
        compiled[f"{name}, unshuffled layout"] = CompiledStudent(model, "openvino", threads=2)
    for c in compiled.values():
        c.run_uint8(frame)  # compile outside the timing
    best = {k: float("inf") for k in compiled}
    for p in range(args.passes):
        for name, c in compiled.items():
            ms = time_calls(lambda: c.run_uint8(frame), runs=args.runs, warmup=3)["median_ms"]
            best[name] = min(best[name], ms)
            print(f"pass {p + 1}: {name}: median {ms:.1f} ms", flush=True)
    print(f"fastest median of {args.passes} interleaved passes of {args.runs} calls, 1920x1080, 2 threads:")
    for name, ms in best.items():
        print(f"  {name}: {ms:.1f} ms")


if __name__ == "__main__":
    main()
