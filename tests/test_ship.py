"""Shipping a pipeline-trained student: only the exact output recorded in dvc.lock, with its provenance."""

import hashlib
import json

import pytest
import torch
import yaml

from sharpkd.nets.card import shipped_card, student_card
from sharpkd.errors import SharpkdError
from sharpkd.nets.students import build_student
from tools.ship import main, ship


@pytest.fixture
def run(tmp_path):
    (tmp_path / "models" / "p").mkdir(parents=True)
    (tmp_path / "metrics" / "p").mkdir(parents=True)
    weights = tmp_path / "models" / "p" / "student.safetensors"
    weights.write_bytes(b"weights")
    (tmp_path / "models" / "p" / "student.json").write_text(json.dumps({"arch": "sharp", "parameters": 5804}))
    (tmp_path / "metrics" / "p" / "eval.json").write_text(json.dumps({
        "methods": {"student": {"psnr": 39.4, "ssim": 0.96}}, "n_images": 31}))
    (tmp_path / "metrics" / "p" / "eval_settings.json").write_text(json.dumps({"sizes": ["1920x1080"]}))
    lock = {"stages": {"train": {"params": {"params.yaml": {"train.epochs": 10}}, "outs": [
        {"path": "models/p/student.safetensors", "md5": hashlib.md5(b"weights").hexdigest()}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    return tmp_path


def test_ship_copies_weights_and_writes_the_card(run):
    out = ship("p", root=run, dest=run / "shipped")
    assert out.read_bytes() == b"weights"
    card = json.loads((run / "shipped" / "student-balanced.json").read_text())
    assert card["arch"] == "sharp" and card["parameters"] == 5804
    assert card["evaluation"]["methods"]["student"]["psnr"] == 39.4
    assert card["evaluation"]["settings"] == {"sizes": ["1920x1080"]}
    assert card["provenance"]["dvc_lock_train_params"] == {"params.yaml": {"train.epochs": 10}}
    assert card["provenance"]["dvc_lock_student_md5"] == hashlib.md5(b"weights").hexdigest()


def test_ship_takes_the_settings_the_evaluate_stage_wrote_for_this_run(run):
    (run / "data" / "p").mkdir(parents=True)
    (run / "data" / "p" / "eval_settings.json").write_text(json.dumps({"train_links": ["none", "h264v:23"]}))
    ship("p", root=run, dest=run / "shipped")  # the copy under metrics/ (another run's) is not used
    card = json.loads((run / "shipped" / "student-balanced.json").read_text())
    assert card["evaluation"]["settings"] == {"train_links": ["none", "h264v:23"]}


def test_ship_writes_a_named_student_to_its_own_file(run, monkeypatch):
    monkeypatch.setitem(__import__("sharpkd.app.shipped", fromlist=["SHIPPED"]).SHIPPED, "fast", ("student-fast.safetensors", "int8"))
    out = ship("p", root=run, dest=run / "shipped", name="fast")
    assert out == run / "shipped" / "student-fast.safetensors" and out.read_bytes() == b"weights"
    assert json.loads((run / "shipped" / "student-fast.json").read_text())["arch"] == "sharp"
    assert not (run / "shipped" / "student-balanced.safetensors").exists()  # the balanced one is left alone
    with pytest.raises(SharpkdError, match="no shipped student is named 'nope'"):
        ship("p", root=run, dest=run / "shipped", name="nope")


def test_ship_refuses_weights_that_are_not_the_locked_output(run):
    (run / "models" / "p" / "student.safetensors").write_bytes(b"retrained by hand")
    with pytest.raises(SharpkdError, match="not the student dvc.lock records"):
        ship("p", root=run, dest=run / "shipped")
    assert not (run / "shipped").exists()


def test_ship_before_a_run_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("tools.ship.ROOT", tmp_path)
    assert main(["--profile", "nothing"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "run the pipeline" in err[0]


def test_student_card_counts_the_folded_model():
    model = build_student("sharp")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    params = {"arch": "sharp", "arch_config": {}, "epochs": 2, "batch": 4, "patch": 32, "lr": 1e-3, "seed": 0,
              "loss": {"l2_gt": 1.0}}
    best = {"epoch": 2, "val_psnr": 31.23456, "val_ssim": 0.912361}
    card = student_card(params, model, profile="p", train_crops=10, val_images=2, best=best, steps_per_epoch=5,
                        processes=1, device="cpu")
    assert card["parameters"] == 5_804  # RepConv branches folded, as the weights are saved
    assert card["validation"] == {"psnr": 31.2346, "ssim": 0.91236, "best_epoch": 2,
                                  "metric": "RGB uint8, full validation images"}
    assert card["training"]["steps_per_epoch"] == 5 and card["training"]["loss"] == {"l2_gt": 1.0}
    assert not model.head.is_fused  # the caller's model is untouched


def test_shipped_card_needs_the_distill_train_stage(tmp_path):
    (tmp_path / "w").write_bytes(b"x")
    with pytest.raises(SharpkdError, match="no train stage"):
        shipped_card({}, {}, {}, {"stages": {}}, tmp_path / "w", profile="p", revision="r")


@pytest.mark.parametrize("name", sorted(__import__("sharpkd.app.shipped", fromlist=["SHIPPED"]).SHIPPED))
def test_every_shipped_student_is_described_with_its_network(name):
    """The help's line names the network from the weights' own config (a card trained with the
    arch's defaults has an empty arch_config)."""
    import re

    from sharpkd.app.shipped import describe

    line = describe(name)
    assert re.search(r"\(sharp c\d+b\d+( x2)?, [+-]\d+\.\d\d dB over the degraded input", line), line


def test_ship_main_takes_the_run_of_another_checkout(run, tmp_path_factory, monkeypatch):
    here = tmp_path_factory.mktemp("checkout")
    monkeypatch.setattr("tools.ship.ROOT", here)
    assert main(["--profile", "p", "--root", str(run)]) == 0
    assert (here / "sharpkd" / "weights" / "student-balanced.safetensors").read_bytes() == b"weights"
    assert not (run / "sharpkd").exists()  # the other checkout is only read


def test_ship_main_records_the_code_revision_given_and_refuses_an_unknown_one(run, tmp_path_factory, monkeypatch,
                                                                             capsys):
    import subprocess

    here = tmp_path_factory.mktemp("checkout")
    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=here,  # noqa: E731
                                    check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    git("commit", "-q", "--allow-empty", "-m", "code")
    sha = git("rev-parse", "HEAD")
    monkeypatch.setattr("tools.ship.ROOT", here)
    assert main(["--profile", "p", "--root", str(run), "--revision", sha[:10]]) == 0
    card = json.loads((here / "sharpkd" / "weights" / "student-balanced.json").read_text())
    assert card["provenance"]["git_revision"] == sha
    (here / "sharpkd" / "weights" / "student-balanced.json").unlink()
    assert main(["--profile", "p", "--root", str(run), "--revision", "0badc0ffee"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: --revision 0badc0ffee: not a commit of {here}"]
    assert not (here / "sharpkd" / "weights" / "student-balanced.json").exists()
