"""Make a pipeline-trained student the one shipped inside the package.

``python -m sharpkd.ship --profile photos`` copies ``models/<profile>/student.safetensors`` to
``sharpkd/weights/student.safetensors`` and writes ``sharpkd/weights/student.json``: the model
card of the training stage plus the evaluation summary, the git revision and the dvc.lock
entries (md5 of the weights and of the stage's params) that identify the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .fsutil import atomic_path, write_json

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def _git_revision(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ship(profile: str, root: str | Path = ".", dest: str | Path = WEIGHTS_DIR) -> Path:
    root, dest = Path(root), Path(dest)
    weights = root / "models" / profile / "student.safetensors"
    card = json.loads((root / "models" / profile / "student.json").read_text())
    evaluation = json.loads((root / "metrics" / profile / "eval.json").read_text())
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    stage = lock["stages"]["distill-train"]
    out = next(o for o in stage["outs"] if o["path"].endswith("student.safetensors"))
    md5 = hashlib.md5(weights.read_bytes()).hexdigest()
    if md5 != out["md5"]:
        raise SystemExit(f"{weights} (md5 {md5}) is not the output recorded in dvc.lock ({out['md5']}): run dvc repro")
    if "student" in evaluation:  # counted by the evaluate stage on the inference form that ships
        card |= {k: evaluation["student"][k] for k in ("parameters", "macs_per_1080p_frame")}
    keys = ("methods", "n_images", "sizes", "report_protocol", "degradation", "ssim_settings")
    card |= {"evaluation": {k: evaluation[k] for k in keys if k in evaluation},
             "provenance": {"profile": profile, "git_revision": _git_revision(root), "dvc_lock_student_md5": md5,
                            "dvc_lock_train_params": stage.get("params", {})}}
    dest.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest / "student.safetensors") as tmp:
        shutil.copyfile(weights, tmp)
    write_json(dest / "student.json", card)
    return dest / "student.safetensors"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="photos")
    args = ap.parse_args(argv)
    print("shipped", ship(args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
