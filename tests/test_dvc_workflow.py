"""DVC as its users use it, end to end on tiny params, with a real local-folder remote:

* `ci/pipeline.sh` on main runs every stage and pushes outputs and run-cache;
* a fresh clone + `dvc pull` is up to date and `dvc repro` runs nothing;
* a branch that changes `train.epochs` reruns only train and evaluate, and the script's
  Markdown report shows the param and metric deltas; switching branches and back runs nothing;
* `dvc exp run -S train.lr=X` then `-S train.lr=<original>` restores the original results from
  the run-cache without running train or evaluate, and never reruns the teacher;
* a forced rerun of a stage leaves `dvc.lock` byte-identical.
"""

import shutil

import pytest
import yaml

from tests.e2e import BIN, GIT_ID, make_repo, ran_stages, run, set_param

DVC = str(BIN / "dvc")
STAGES = ["download", "resize", "slice", "degrade", "teacher", "teacher_video", "train", "evaluate"]


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    base = tmp_path_factory.mktemp("dvcflow")
    repo = make_repo(base / "origin")
    run([DVC, "remote", "add", "-d", "shared", str(base / "remote")], repo, check=True)
    run(["git", "add", ".dvc/config"], repo, check=True)
    run(["git", *GIT_ID, "commit", "-qm", "remote"], repo, check=True)
    ci = run(["bash", "ci/pipeline.sh", "main"], repo, check=True)
    assert ran_stages(ci.stdout) == STAGES
    run(["git", "add", "-A"], repo, check=True)
    run(["git", *GIT_ID, "commit", "-qm", "pipeline results"], repo, check=True)
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    return base, repo


@pytest.mark.slow
def test_fresh_clone_after_pull_is_up_to_date_and_runs_nothing(origin):
    base, repo = origin
    clone = base / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], base, check=True)
    run([DVC, "pull"], clone, check=True)
    assert "up to date" in run([DVC, "status"], clone, check=True).stdout.lower()
    repro = run([DVC, "repro"], clone, check=True)
    assert ran_stages(repro.stdout) == []
    assert run(["git", "status", "--porcelain"], clone).stdout == ""


@pytest.mark.slow
def test_a_branch_reruns_only_what_it_changed_and_reports_the_diff(origin):
    base, repo = origin
    clone = base / "branch"
    run(["git", "clone", "-q", str(repo), str(clone)], base, check=True)
    run(["git", "checkout", "-q", "-b", "more-epochs"], clone, check=True)
    set_param(clone, "train", "epochs", 3)
    run(["git", *GIT_ID, "commit", "-qam", "3 epochs"], clone, check=True)
    ci = run(["bash", "ci/pipeline.sh", "main"], clone, check=True)
    assert ran_stages(ci.stdout) == ["train", "evaluate"]
    report = (clone / "report.md").read_text()
    assert "| train | ran |" in report and "| teacher | unchanged |" in report
    assert "train.epochs" in report and "| 2 " in report and "| 3 " in report  # params diff: old and new
    assert "eval.json" in report and "methods.student.psnr" in report  # metrics diff

    # the developer commits the branch's results; switching to main and back then runs nothing
    run(["git", "add", "-A"], clone, check=True)
    run(["git", *GIT_ID, "commit", "-qm", "results of 3 epochs"], clone, check=True)
    for branch in ("main", "more-epochs"):
        run(["git", "checkout", "-q", branch], clone, check=True)
        run([DVC, "checkout"], clone, check=True)
        assert ran_stages(run([DVC, "repro"], clone, check=True).stdout) == [], branch
        assert "up to date" in run([DVC, "status"], clone, check=True).stdout.lower()


@pytest.mark.slow
def test_a_param_changed_and_back_restores_from_the_run_cache(origin):
    _, repo = origin
    lock = (repo / "dvc.lock").read_bytes()
    lr = yaml.safe_load((repo / "params.yaml").read_text())["train"]["lr"]
    other = run([DVC, "exp", "run", "-S", f"train.lr={lr * 2}"], repo, check=True)
    assert ran_stages(other.stdout) == ["train", "evaluate"]
    back = run([DVC, "exp", "run", "-S", f"train.lr={lr}"], repo, check=True)
    assert ran_stages(back.stdout) == []
    assert "Stage 'train' is cached - skipping run" in back.stdout
    assert "Stage 'evaluate' is cached - skipping run" in back.stdout
    assert (repo / "dvc.lock").read_bytes() == lock


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["teacher", "train"])
def test_a_forced_rerun_leaves_dvc_lock_byte_identical(origin, stage):
    _, repo = origin
    before = (repo / "dvc.lock").read_bytes()
    proc = run([DVC, "repro", "-f", "-s", stage], repo, check=True)
    assert ran_stages(proc.stdout) == [stage]
    assert (repo / "dvc.lock").read_bytes() == before
    lock = yaml.safe_load(before)
    assert not any(o.get("persist") for s in lock["stages"].values() for o in s.get("outs", []))


@pytest.mark.slow
def test_an_int8_student_comes_out_of_the_pipeline_and_back_to_float_from_the_run_cache(origin):
    import json

    from sharpkd.nets.students import load_student

    _, repo = origin
    lock = (repo / "dvc.lock").read_bytes()
    q = run([DVC, "exp", "run", "-S", "train.int8.steps=3"], repo, check=True)
    assert ran_stages(q.stdout) == ["train", "evaluate"]  # the teacher's outputs are reused
    model, meta = load_student(repo / "models/e2e/student.safetensors")
    assert model.int8 == {"first_bits": 7} and float(model.act_max[0]) == 1.0
    card = json.loads(meta["card"])
    assert card["training"]["int8"]["steps"] == 3
    scores = json.loads((repo / "metrics/e2e/eval.json").read_text())
    assert scores["methods"]["student"]["psnr"] > 0
    assert scores["student"] == {"parameters": card["parameters"], "macs_per_1080p_frame": card["macs_per_1080p_frame"]}
    back = run([DVC, "exp", "run", "-S", "train.int8.steps=0"], repo, check=True)
    assert ran_stages(back.stdout) == []
    assert (repo / "dvc.lock").read_bytes() == lock
