"""Helpers of the end-to-end tests: a temporary git + DVC copy of the repository on tiny params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GIT_ID = ["-c", "user.email=ci@example.com", "-c", "user.name=ci"]


def run(cmd, cwd, check=False, **kw):
    """Run ``cmd`` in ``cwd`` with this venv's tools (dvc, python) first on PATH."""
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd)}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200, **kw)
    if check:
        assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (ROOT / f).is_file()]


def tiny_params(params: dict, profile: str = "e2e") -> dict:
    """The committed params with tiny budgets (seconds per stage on a 2-core CPU)."""
    params["profile"] = profile
    params["degrade"] |= {"codec": "jpeg", "jpeg_quality": 60,  # a lossy link: every stage sees the codec path
                          "train_links": ["jpeg:60", "h264:28"],  # a training mixture ...
                          "val_links": ["h264:28"]}  # ... and one extra validation set
    # fixed-size crops and a second (report-protocol) validation scale, as the photo-pool run uses
    params["slice"] |= {"rows": 3, "cols": 3, "crop_height": 64, "crop_width": 96, "report_size": [232, 128]}
    params["teacher"]["adapt"] |= {"steps": 4, "patch": 32, "batch": 2, "checkpoint_every": 2}
    params["teacher"]["allow_worse_than_input"] = True
    params["teacher"]["self_ensemble"] = True  # the x8 path runs end to end (tiny teacher, tiny images)
    params["train"] |= {"epochs": 2, "steps_per_epoch": 2, "batch": 2, "patch": 32}
    params["train"]["loss"] |= {"vgg_feature": 0.0, "deep_feature": 0.0, "l1_teacher": 0.5,
                                "l2_teacher_zoom": 0.5}  # the stage loads the teacher and runs it online
    return params


def make_repo(dst: Path, profile: str = "e2e") -> Path:
    """A git repository at ``dst`` holding the project's files (no data, models or metrics) on
    :func:`tiny_params`, committed on branch ``main``."""
    for f in tracked_files():
        if f.startswith(("metrics/", "data/", "models/")):
            continue  # the run must produce these itself
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    params = tiny_params(yaml.safe_load((dst / "params.yaml").read_text()), profile)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", *GIT_ID, "commit", "-qm", "e2e"]):
        run(cmd, dst, check=True)
    return dst


def ran_stages(output: str) -> list[str]:
    """The stages a `dvc repro` output says it ran."""
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def set_param(repo: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params[section][key] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
