"""Shipping a pipeline-trained student: only the exact output recorded in dvc.lock, with its provenance."""

import hashlib
import json

import pytest
import yaml

from sharpkd.ship import ship


@pytest.fixture
def run(tmp_path):
    (tmp_path / "models" / "p").mkdir(parents=True)
    (tmp_path / "metrics" / "p").mkdir(parents=True)
    weights = tmp_path / "models" / "p" / "student.safetensors"
    weights.write_bytes(b"weights")
    (tmp_path / "models" / "p" / "student.json").write_text(json.dumps({"arch": "sharp", "parameters": 6488}))
    (tmp_path / "metrics" / "p" / "eval.json").write_text(json.dumps({
        "methods": {"student": {"psnr": 39.4}}, "n_images": 31, "sizes": ["1920x1080"],
        "report_protocol": {"size": "464x256"}, "degradation": {"scale": 0.6}, "ssim_settings": {}, "other": 1,
        "student": {"arch": "sharp", "parameters": 5804, "macs_per_1080p_frame": 2.99e9}}))
    lock = {"stages": {"distill-train": {"params": {"params.yaml": {"train.epochs": 10}}, "outs": [
        {"path": "models/p/student.safetensors", "md5": hashlib.md5(b"weights").hexdigest()}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    return tmp_path


def test_ship_copies_weights_and_writes_the_card(run):
    out = ship("p", root=run, dest=run / "shipped")
    assert out.read_bytes() == b"weights"
    card = json.loads((run / "shipped" / "student.json").read_text())
    assert card["arch"] == "sharp" and card["parameters"] == 5804  # the folded form's count, from eval.json
    assert card["evaluation"]["report_protocol"] == {"size": "464x256"} and "other" not in card["evaluation"]
    assert card["provenance"]["dvc_lock_train_params"] == {"params.yaml": {"train.epochs": 10}}


def test_ship_refuses_weights_that_are_not_the_locked_output(run):
    (run / "models" / "p" / "student.safetensors").write_bytes(b"retrained by hand")
    with pytest.raises(SystemExit, match="not the output recorded in dvc.lock"):
        ship("p", root=run, dest=run / "shipped")
    assert not (run / "shipped").exists()
