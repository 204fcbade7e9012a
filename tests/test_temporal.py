"""experiments/temporal.py: the temporal student against the single-frame one, end to end on a tiny run."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments import temporal
from sharpkd.data.shards import write_split
from tests.test_video_link import panning, texture, write_clip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    """A pipeline checkout in miniature: params.yaml, 6 training crops and 2 validation photos, a clip."""
    root = tmp_path_factory.mktemp("run")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    slices = root / "data" / "default" / "slices"
    write_split(slices, "train", {f"p{i}.png@r0c0": np.ascontiguousarray(texture(40, 56, seed=i)[:40, :56])
                                  for i in range(6)})
    write_split(slices, "val_full", {f"v{i}.png": np.ascontiguousarray(texture(48, 64, seed=10 + i)[:48, :64])
                                     for i in range(2)})
    write_clip(root / "clip.mp4", panning(4, 48, 64, seed=3))
    return root


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--root", str(root), "--profile", "default", "--epochs", "1", "--seeds", "2", "--clips",
            str(root / "clip.mp4"), "--frames", "3", "--video-links", "h264v:28", "--links", "none,h264v:28",
            "--out", str(out), *extra]


def test_both_arms_train_score_and_resume(run_root, tmp_path, capsys):
    out = tmp_path / "temporal.json"
    assert temporal.main(_args(run_root, out)) == 0
    d = json.loads(out.read_text())
    assert sorted(d["runs"]) == ["single:0", "single:1", "temporal:0", "temporal:1"]
    row = d["summary"]["links"]["h264v:28"]
    assert row["single"]["psnr"]["n"] == 2 and "ci95_low" in row["temporal_minus_single"]
    assert d["timing"]["temporal"]["macs_per_1080p_frame"] > d["timing"]["single"]["macs_per_1080p_frame"]
    assert d["settings"]["train_crops"] == 6 and d["settings"]["loss"] == "l2_gt"
    for run in d["runs"].values():  # the temporal arm is scored as the temporal student, with its flicker
        assert set(run["mean"]["h264v:28"]) == {"received", "lanczos", run["arm"]}
    # the received pairs are cached once; a rerun keeps every finished run and trains nothing
    caches = list((run_root / ".sharpkd" / "state" / "default").glob("temporal-*/*"))
    assert sorted(p.name for p in caches) == ["train", "val_full"]
    capsys.readouterr()
    assert temporal.main(_args(run_root, out)) == 0
    assert "4 runs already there" in capsys.readouterr().out
    assert json.loads(out.read_text())["runs"] == d["runs"]
    # a wider single-frame arm joins without redoing the others
    assert temporal.main(_args(run_root, out, "--equal", '{"channels": 8, "blocks": 2, "unshuffle": 2}')) == 0
    again = json.loads(out.read_text())
    assert "temporal_minus_single_equal" in again["summary"]["links"]["h264v:28"]
    assert {k: again["runs"][k] for k in d["runs"]} == d["runs"]


@pytest.mark.parametrize("extra,says", [
    (["--arch-config", "[8]"], "--arch-config '[8]': give a JSON object"),
    (["--equal", "{bad"], "--equal '{bad': not JSON"),
    (["--equal", '{"channels": 7}'], "channels must be an integer from 8"),
    (["--links", "h264v:xx"], "--links"),
    (["--video-links", "h264:23"], "--video-links"),
    (["--frames", "1"], "--frames must be at least 2"),
    (["--seeds", "1"], "--seeds must be at least 2"),
])
def test_bad_options_are_one_error_line(run_root, tmp_path, capsys, extra, says):
    assert temporal.main(_args(run_root, tmp_path / "t.json", *extra)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0]
    assert not (tmp_path / "t.json").exists()


def test_a_root_without_a_run_is_named(run_root, tmp_path, capsys):
    clip = ["--clips", str(run_root / "clip.mp4")]
    assert temporal.main(["--root", str(tmp_path), *clip, "--out", str(tmp_path / "t.json")]) == 1
    assert f"--root {tmp_path}: no params.yaml there" in capsys.readouterr().err
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    assert temporal.main(["--root", str(tmp_path), "--profile", "nope", *clip, "--out", str(tmp_path / "t.json")]) == 1
    assert "no data/nope/slices" in capsys.readouterr().err
