"""tools/adapt_probe.py: validation PSNR along one adaptation run, its last point the stage's teacher."""

import json

import numpy as np
import yaml

from sharpkd import teacher as T
from sharpkd.inference import run_model
from sharpkd.metrics import psnr
from sharpkd.shards import write_split
from tools.adapt_probe import main

SMALL = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 1, 1, 1], "ffn_expansion_factor": 2.0}
TEACHER = {"kind": "restormer", "restormer": SMALL, "adapt": {"steps": 300, "lr": 1e-3, "patch": 16, "batch": 2, "seed": 0}}


def _run(root):
    rng = np.random.default_rng(0)
    data = {}
    for split, names in (("train", "pqrs"), ("val_full", "abc")):
        gt = {n: rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for n in names}
        lq = {n: np.clip(g.astype(int) + rng.integers(-20, 21, g.shape), 0, 255).astype(np.uint8) for n, g in gt.items()}
        write_split(root / "data" / "p" / "slices", split, gt)
        write_split(root / "data" / "p" / "degraded", split, lq)
        data[split] = gt, lq
    (root / "params.yaml").write_text(yaml.safe_dump({"teacher": TEACHER}))
    return data


def test_curve_ends_at_the_teacher_that_adapt_gives(tmp_path, capsys):
    data = _run(tmp_path)
    out = tmp_path / "adapt.json"
    args = ["--root", str(tmp_path), "--profile", "p", "--steps", "4", "--eval-every", "3", "--images", "2",
            "--tile", "64", "--x8", "--save", str(tmp_path / "t.safetensors"), "--out", str(out)]
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert [c["step"] for c in r["curve"]] == [0, 3, 4]  # every --eval-every steps, and the last
    assert r["images"] == ["a", "b"] and r["of_validation_images"] == 3
    assert r["adapt"] == {"lr": 1e-3, "patch": 16, "batch": 2, "seed": 0, "steps": 4}  # --steps over the params' 300

    # scoring between steps leaves the run alone: the last point is the teacher adapt(steps=4) makes
    (gt_t, lq_t), (gt_v, lq_v) = data["train"], data["val_full"]
    model = T.build_teacher(TEACHER)
    before = {n: round(psnr(run_model(model, lq_v[n], tile=64), gt_v[n]), 3) for n in "ab"}
    T.adapt(model, [(lq_t[n], gt_t[n]) for n in gt_t], steps=4, lr=1e-3, patch=16, batch=2, seed=0, progress=False)
    after = {n: round(psnr(run_model(model, lq_v[n], tile=64), gt_v[n]), 3) for n in "ab"}
    assert r["curve"][0]["psnr"] == before and r["curve"][-1]["psnr"] == after and before != after
    gain = np.mean([after[n] - r["psnr_input"][n] for n in "ab"])
    assert abs(r["curve"][-1]["gain_over_input_db"] - gain) < 1e-3
    # --save writes that teacher; --x8 scores its self-ensemble too (a random-init Restormer is not equivariant)
    saved = T.load_teacher(tmp_path / "t.safetensors")
    assert {n: round(psnr(run_model(saved, lq_v[n], tile=64), gt_v[n]), 3) for n in "ab"} == after
    assert r["x8"]["step"] == 4 and r["x8"]["psnr"] != after
    printed = capsys.readouterr().out
    assert "step 4:" in printed and "step 4, x8:" in printed


def test_missing_data_is_one_line_and_exit_1(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"teacher": TEACHER}))
    assert main(["--root", str(tmp_path), "--profile", "p"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
