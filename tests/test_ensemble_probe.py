"""tools/ensemble_probe.py: the teacher plain and x8 on a run's validation photos, scored."""

import json

import numpy as np

from sharpkd import teacher as T
from sharpkd.shards import write_split
from tools.ensemble_probe import main

SMALL = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 1, 1, 1], "ffn_expansion_factor": 2.0}


def _run(root, names=("a", "b", "c")):
    rng = np.random.default_rng(0)
    gt = {n: rng.integers(0, 256, (24, 40, 3), dtype=np.uint8) for n in names}
    lq = {n: np.clip(g.astype(int) + rng.integers(-20, 21, g.shape), 0, 255).astype(np.uint8) for n, g in gt.items()}
    write_split(root / "data" / "p" / "slices", "val_full", gt)
    write_split(root / "data" / "p" / "degraded", "val_full", lq)
    model = T.build_teacher({"kind": "restormer", "restormer": dict(SMALL), "adapt": {"seed": 0}})
    (root / "models" / "p").mkdir(parents=True)
    T.save_teacher(model, root / "models" / "p" / "teacher.safetensors")
    return gt, lq


def test_probe_scores_plain_and_x8_on_evenly_spaced_images(tmp_path, capsys):
    from sharpkd.metrics import psnr

    gt, lq = _run(tmp_path)
    out = tmp_path / "x8.json"
    assert main(["--root", str(tmp_path), "--profile", "p", "--images", "2", "--tile", "64", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [row["image"] for row in r["per_image"]] == ["a", "b"] and r["of_validation_images"] == 3
    row = r["per_image"][0]
    assert row["psnr_input"] == round(psnr(lq["a"], gt["a"]), 3)
    # a random-init teacher is not flip/rotation-equivariant: x8 gives another output
    assert row["psnr_teacher_x8"] != row["psnr_teacher"]
    mean = np.mean([x["psnr_teacher_x8"] - x["psnr_teacher"] for x in r["per_image"]])
    assert abs(r["x8_minus_plain_db"]["mean"] - mean) < 1e-3
    assert "x8 minus plain" in capsys.readouterr().out


def test_probe_without_a_teacher_is_one_line_and_exit_1(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "--profile", "p"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "teacher.safetensors not found" in err[0]


def test_probe_reads_the_teacher_given(tmp_path):
    _run(tmp_path)
    other = tmp_path / "other.safetensors"
    (tmp_path / "models" / "p" / "teacher.safetensors").rename(other)
    out = tmp_path / "x8.json"
    args = ["--root", str(tmp_path), "--profile", "p", "--images", "3", "--tile", "64", "--out", str(out)]
    assert main(args) == 1  # the run's own teacher is gone
    assert main([*args, "--teacher", str(other)]) == 0
    r = json.loads(out.read_text())
    assert r["teacher"] == "other.safetensors" and r["images"] == 3 == len(r["per_image"])


def test_probe_no_x8_scores_plain_only(tmp_path, capsys):
    from sharpkd.metrics import psnr

    gt, lq = _run(tmp_path)
    out = tmp_path / "plain.json"
    assert main(["--root", str(tmp_path), "--profile", "p", "--images", "3", "--tile", "64", "--no-x8",
                 "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert list(r["gain_over_input_db"]) == ["teacher"] and "x8_minus_plain_db" not in r
    assert all("psnr_teacher_x8" not in row for row in r["per_image"])
    mean = np.mean([row["psnr_teacher"] - row["psnr_input"] for row in r["per_image"]])
    assert abs(r["gain_over_input_db"]["teacher"] - mean) < 1e-3
    assert r["per_image"][0]["psnr_input"] == round(psnr(lq["a"], gt["a"]), 3)
    assert "x8" not in capsys.readouterr().out.splitlines()[-1]
