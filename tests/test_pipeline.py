"""End to end: `dvc repro` of the whole pipeline in a temporary copy of the repo, then a no-op rerun.

Tiny params (few steps, no VGG) keep it to a couple of minutes on a 2-core CPU; the structure
(stages, deps, outs, metrics) is exactly the committed one.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(cmd, cwd, **kw):
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(cwd)}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200, **kw)


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split("\n")
    return [f for f in out if f and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dst = tmp_path_factory.mktemp("e2e") / "repo"
    for f in tracked_files():
        if f.startswith(("metrics/", "data/", "models/")):
            continue  # the run must produce these itself
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["profile"] = "e2e"
    # fixed-size crops and a second (report-protocol) validation scale, as the photo-pool run uses
    params["slice"] |= {"rows": 3, "cols": 3, "crop_height": 64, "crop_width": 96, "report_size": [232, 128]}
    params["teacher"]["adapt"] |= {"steps": 4, "patch": 32, "batch": 2, "checkpoint_every": 2}
    params["teacher"]["allow_worse_than_input"] = True
    params["train"] |= {"epochs": 2, "steps_per_epoch": 2, "batch": 2, "patch": 32}
    params["train"]["loss"] |= {"vgg_feature": 0.0, "deep_feature": 0.0, "l1_teacher": 0.5}
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "e2e"]):
        assert run(cmd, dst).returncode == 0
    proc = run([str(BIN / "dvc"), "repro"], dst)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return dst


@pytest.mark.slow
def test_repro_writes_honest_metrics(repo):
    ev = json.loads((repo / "metrics/e2e/eval.json").read_text())
    methods = ev["methods"]
    assert set(methods) == {"identity", "bicubic", "lanczos", "unsharp", "teacher", "student"}
    for m in methods.values():
        assert 10 < m["psnr"] < 100 and 0 < m["ssim"] <= 1 and m["n"] == ev["n_images"] >= 1
    assert ev["student"]["arch"] == "sharp"
    teacher = json.loads((repo / "metrics/e2e/teacher.json").read_text())
    assert {"identity", "bicubic", "lanczos", "teacher_as_is", "teacher_adapted"} <= set(teacher)
    split = json.loads((repo / "metrics/e2e/split.json").read_text())
    assert set(split["train"]).isdisjoint(split["val"])
    assert (repo / "metrics/e2e/comparison.png").stat().st_size > 1000
    assert (repo / "metrics/e2e/train/metrics.json").exists()
    scores = (repo / "metrics/e2e/eval_scores.csv").read_text().splitlines()
    assert len(scores) == 1 + 2 * 6 * ev["n_images"]
    assert sum(line.startswith("232x128/") for line in scores) == 6 * ev["n_images"]
    report = ev["report_protocol"]
    assert report["size"] == "232x128" and set(report["methods"]) == set(methods)
    assert ev["sizes"] == ["464x256"]
    assert teacher["report_protocol"]["size"] == "232x128"
    assert {"teacher_as_is", "teacher_adapted"} <= set(teacher["report_protocol"])
    assert split["n_train_crops"] == 9 * split["n_train"] and split["crop"]["height"] == 64


@pytest.mark.slow
def test_second_repro_does_nothing(repo):
    t0 = time.time()
    proc = run([str(BIN / "dvc"), "repro"], repo)
    assert proc.returncode == 0, proc.stderr
    assert "Running stage" not in proc.stdout
    status = run([str(BIN / "dvc"), "status"], repo)
    assert "up to date" in status.stdout.lower(), status.stdout
    assert time.time() - t0 < 60


@pytest.mark.slow
def test_metrics_diff_and_plots_work(repo):
    proc = run([str(BIN / "dvc"), "metrics", "show", "--json"], repo)
    assert proc.returncode == 0, proc.stderr
    assert "eval.json" in proc.stdout
    proc = run([str(BIN / "dvc"), "plots", "show", "-o", str(repo / "plots_out")], repo)
    assert proc.returncode == 0, proc.stderr
