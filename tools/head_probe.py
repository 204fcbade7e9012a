#!/usr/bin/env python3
"""Where the default student's time goes: its 3x3 head and tail on the half-resolution frame.

Times three networks of random weights on a 1080p frame through the OpenVINO runtime
(:class:`sharpkd.runtime.CompiledStudent`, what ``sharpkd bench`` uses), interleaved ``--passes``
times, median of ``--runs`` each:

* ``sharp`` (the default: pixel_unshuffle 2, 3x3 head 12->16, one block, 3x3 tail 16->12, pixel_shuffle);
* the same cost written on the full frame: a 6x6 stride-2 conv head and a 6x6 stride-2 transposed
  conv tail (the receptive field and MACs of the 3x3 pair on the unshuffled frame; no reshapes);
* ``head: patch`` at 1/2 resolution (2x2 stride-2 head, transposed-conv tail, same body).

    .venv/bin/python tools/head_probe.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args()
    import torch
    from torch import nn

    from sharpkd.inference import prepare
    from sharpkd.models import build_student
    from sharpkd.runtime import CompiledStudent

    torch.manual_seed(0)
    nets = {"sharp (unshuffle, 3x3 head and tail)": build_student("sharp")}
    full = build_student("sharp", head="patch", unshuffle=2)
    full.head, full.tail = nn.Conv2d(3, 16, 6, stride=2, padding=2), nn.ConvTranspose2d(16, 3, 6, stride=2, padding=2)
    nets["6x6 stride-2 conv head, 6x6 transposed-conv tail"] = full
    nets["patch head at 1/2 resolution"] = build_student("sharp", head="patch", unshuffle=2)
    compiled = {name: CompiledStudent(prepare(m.reparameterize()), "openvino") for name, m in nets.items()}
    frame = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    for p in range(args.passes):
        for name, c in compiled.items():
            for _ in range(3):
                c.run_uint8(frame)
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                c.run_uint8(frame)
                times.append(time.perf_counter() - t0)
            print(f"pass {p + 1}: {name}: median {np.median(times) * 1000:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
