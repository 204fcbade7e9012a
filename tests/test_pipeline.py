"""End to end: `dvc repro` of the whole pipeline in a temporary copy of the repo, then a no-op rerun.

Tiny params (few steps, no VGG) keep it to a couple of minutes on a 2-core CPU; the structure
(stages, deps, outs, metrics) is exactly the committed one.
"""

import json
import shutil
from collections import Counter

import pytest

from tests.e2e import BIN, make_repo, run


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dst = make_repo(tmp_path_factory.mktemp("e2e") / "repo")
    run([str(BIN / "dvc"), "repro"], dst, check=True)
    return dst


@pytest.mark.slow
def test_repro_writes_honest_metrics(repo):
    ev = json.loads((repo / "metrics/e2e/eval.json").read_text())
    methods = ev["methods"]
    assert set(methods) == {"identity", "bicubic", "lanczos", "unsharp", "teacher_as_is", "teacher", "student"}
    for m in methods.values():
        assert 10 < m["psnr"] < 100 and 0 < m["ssim"] <= 1 and set(m) == {"psnr", "ssim"}
    assert ev["student"] == {"parameters": 5_804, "macs_per_1080p_frame": 2_985_984_000}
    teacher = json.loads((repo / "metrics/e2e/teacher.json").read_text())
    assert set(teacher) == {"gain_over_input_db", "parameters", "macs_per_1080p_frame", "adapt_train_l1",
                            "forward_passes_per_output", "macs_per_1080p_output", "gate", "over_lanczos_db"}
    assert teacher["gate"] == "input"  # the margin over Lanczos is recorded on every link set, the primary one too
    assert set(teacher["over_lanczos_db"]) == {"jpeg:60", "h264:28"}  # tests/e2e.py: the primary link, val_links
    assert teacher["forward_passes_per_output"] == 8  # teacher.self_ensemble in tests/e2e.py
    assert teacher["macs_per_1080p_output"] == 8 * teacher["macs_per_1080p_frame"]
    info = json.loads((repo / "data/e2e/eval_settings.json").read_text())
    assert info["student"]["arch"] == "sharp" and info["teacher"]["kind"] == "restormer"
    assert not list((repo / ".sharpkd" / "state").rglob("*.pt"))  # resume states removed when done
    assert not list((repo / ".sharpkd" / "state").rglob("infer-*"))  # and the teacher outputs kept for a resume
    split = json.loads((repo / "data/e2e/split.json").read_text())
    assert set(split["train"]).isdisjoint(split["val"])
    assert (repo / "metrics/e2e/comparison.png").stat().st_size > 1000
    assert (repo / "metrics/e2e/train/metrics.json").exists()
    scores = (repo / "metrics/e2e/eval_scores.csv").read_text().splitlines()
    assert scores[0] == "image,method,psnr,ssim,link"
    assert len(scores) == 1 + 2 * 2 * 7 * ev["n_images"]  # 2 scales x (primary set + 1 link set) x 7 methods
    assert sum(line.startswith("232x128/") for line in scores) == 2 * 7 * ev["n_images"]
    assert Counter(line.rsplit(",", 1)[1] for line in scores[1:]) == {"jpeg:60": 14 * ev["n_images"],
                                                                       "h264:28": 14 * ev["n_images"]}
    report = ev["report_protocol"]
    assert info["report_protocol_size"] == "232x128" and set(report["methods"]) == set(methods)
    # the extra validation set: every method, both scales, numbers only, gains over its own received input
    assert set(ev["links"]) == {"h264:28"} and info["val_links"] == ["h264:28"]
    link = ev["links"]["h264:28"]
    assert set(link) == {"methods", "student_gain_over_input", "report_protocol"}
    assert set(link["methods"]) == set(methods) == set(link["report_protocol"]["methods"])
    assert link["methods"]["identity"]["psnr"] < methods["identity"]["psnr"]  # H.264 at CRF 28 loses more than JPEG 60
    assert link["student_gain_over_input"]["psnr_db"] == pytest.approx(
        link["methods"]["student"]["psnr"] - link["methods"]["identity"]["psnr"], abs=1e-3)
    record = json.loads((repo / "data/e2e/degrade.json").read_text())
    assert set(record["train_counts"]) == {"jpeg:60", "h264:28"} and len(record["train_crops"]) == split["n_train_crops"]
    assert info["sizes"] == ["464x256"]
    trained = json.loads((repo / "metrics/e2e/train/metrics.json").read_text())
    assert trained["train_l2_teacher_zoom"] > 0  # the online-teacher term ran in the stage
    assert split["n_train_crops"] == 9 * split["n_train"] and split["crop"]["height"] == 64


@pytest.mark.slow
def test_second_repro_does_nothing(repo):
    proc = run([str(BIN / "dvc"), "repro"], repo, check=True)
    assert "Running stage" not in proc.stdout
    status = run([str(BIN / "dvc"), "status"], repo)
    assert "up to date" in status.stdout.lower(), status.stdout


@pytest.mark.slow
def test_metrics_diff_and_plots_work(repo):
    proc = run([str(BIN / "dvc"), "metrics", "show", "--json"], repo)
    assert proc.returncode == 0, proc.stderr
    assert "eval.json" in proc.stdout
    proc = run([str(BIN / "dvc"), "plots", "show", "-o", str(repo / "plots_out")], repo)
    assert proc.returncode == 0, proc.stderr
