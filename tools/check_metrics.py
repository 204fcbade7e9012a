"""Check that a rerun reproduced the committed metrics within the cross-machine tolerance.

``python tools/check_metrics.py [--rev HEAD] [--profile default]`` compares every number of the
workspace's ``metrics/<profile>/{eval,teacher}.json`` with the same file at git revision ``--rev``.
Bit-identical on the same machine and thread count; across CPUs (AVX2 vs AVX-512 kernels) and
thread counts float summation order differs, so PSNR-like figures (dB) may move by up to
``--db`` and SSIM-like ones by up to ``--ssim``.  Exit 1 naming every figure outside them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DB_TOLERANCE = 0.1
SSIM_TOLERANCE = 0.002


def flatten(obj, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, key + ".")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def tolerance(key: str, db: float, ssim: float) -> float:
    leaf = key.rsplit(".", 1)[-1]
    if "ssim" in leaf:
        return ssim
    if "psnr" in leaf or leaf.endswith("_db"):
        return db
    if leaf.startswith("adapt_train_"):
        return abs(db)  # a loss value: follows the weights
    return 0.0  # counts (parameters, MACs, images) must be exact


def compare(old: dict, new: dict, db: float, ssim: float) -> list[str]:
    a, b = flatten(old), flatten(new)
    problems = [f"{k}: missing in the rerun" for k in sorted(set(a) - set(b))]
    problems += [f"{k}: not in the committed file" for k in sorted(set(b) - set(a))]
    for k in sorted(set(a) & set(b)):
        tol = tolerance(k, db, ssim)
        if abs(a[k] - b[k]) > tol:
            problems.append(f"{k}: committed {a[k]:g}, rerun {b[k]:g} (tolerance {tol:g})")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--db", type=float, default=DB_TOLERANCE, help="tolerance of dB figures")
    ap.add_argument("--ssim", type=float, default=SSIM_TOLERANCE, help="tolerance of SSIM figures")
    args = ap.parse_args(argv)
    failures = []
    for name in ("eval.json", "teacher.json"):
        path = Path("metrics") / args.profile / name
        shown = subprocess.run(["git", "show", f"{args.rev}:{path.as_posix()}"], capture_output=True, text=True)
        if shown.returncode != 0:
            print(f"error: {path} is not committed at {args.rev}", file=sys.stderr)
            return 1
        if not path.is_file():
            print(f"error: {path} not found: run `dvc repro` first", file=sys.stderr)
            return 1
        problems = compare(json.loads(shown.stdout), json.loads(path.read_text()), args.db, args.ssim)
        failures += [f"{path}: {p}" for p in problems]
    for line in failures:
        print(f"error: {line}", file=sys.stderr)
    if not failures:
        print(f"metrics/{args.profile} reproduces {args.rev} within {args.db} dB / {args.ssim} SSIM")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
