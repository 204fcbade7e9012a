"""The pipeline's video set (params.yaml ``evaluate.video``): sharpkd.evaluation.video_links scores
every method on tiny clips, the teacher_video stage writes the teacher's rows, and the evaluate
stage merges them into eval.json ``video`` (and adds nothing when ``evaluate.video.dir`` is empty)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sharpkd.errors import SharpkdError, one_line
from sharpkd.evaluation.classical import unsharp_mask
from sharpkd.evaluation.video_links import (clip_files, eval_summary, format_link_table, merge_method, score_clips,
                                            settings_record)
from tests.test_video_link import panning, write_clip

ROOT = Path(__file__).resolve().parents[1]
LINKS = ["h264v:28", "h264v:100k"]
SMALL_TEACHER = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 1, 1, 1],
                 "ffn_expansion_factor": 2.0}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two clips of 5 frames, 64x48 (a 38x29 coded frame at 60%), and a file that is not a clip."""
    d = tmp_path_factory.mktemp("clips")
    write_clip(d / "b.mp4", panning(5, 48, 64, seed=1))
    write_clip(d / "a.mp4", panning(5, 48, 64, seed=0))
    (d / "notes.txt").write_text("not a clip")
    return d


def brighter(rgb):
    return np.clip(rgb.astype(np.int16) + 2, 0, 255).astype(np.uint8)


def test_every_method_on_every_clip_and_link_deterministically(clips):
    files = clip_files(clips)
    assert [f.name for f in files] == ["a.mp4", "b.mp4"]
    run = lambda: score_clips(files, LINKS, frames=4, methods={"student": brighter}, unsharp=(1.0, 0.5))  # noqa: E731
    r = run()
    assert r == run()
    assert list(r["clips"]) == ["a", "b"] and list(r["mean"]) == LINKS
    for clip in r["clips"].values():
        assert clip["frames"] == 4 and clip["size"] == "64x48"
        for spec in LINKS:
            link = clip["links"][spec]
            assert set(link["methods"]) == {"received", "lanczos", "unsharp", "student"}
            assert link["coded_size"] == "38x29" and link["frame_types"][0] == "I" and len(link["frame_types"]) == 4
            assert link["bytes"] > 0 and len(link["sha256"]) == 64 and link["kbps"] > 0
            assert link["methods"]["received"]["frames_below_reference"] == 0
            assert all(v["temporal_error"] is not None for v in link["methods"].values())
    for spec in LINKS:
        assert set(r["mean"][spec]) == {"received", "lanczos", "unsharp", "student"}
        a, b = (r["clips"][c]["links"][spec]["methods"]["student"]["psnr"] for c in "ab")
        assert r["mean"][spec]["student"]["psnr"] == round((a + b) / 2, 4)
    # a temporal method gets the frame received before (the first frame itself)
    seen = []
    got = score_clips(files[:1], LINKS[:1], frames=3, temporal={"prev": lambda rgb, before: seen.append(
        (rgb, before)) or before})
    assert np.array_equal(seen[0][0], seen[0][1]) and all(np.array_equal(seen[i][1], seen[i - 1][0]) for i in (1, 2))
    assert got["mean"]["h264v:28"]["prev"]["psnr"] < got["mean"]["h264v:28"]["received"]["psnr"]
    with pytest.raises(SharpkdError, match="given twice"):
        score_clips(files[:1], LINKS[:1], frames=2, methods={"x": brighter}, temporal={"x": lambda a, b: a})
    # without an unsharp mask there is no unsharp row; the baselines are always there
    assert set(score_clips(files[:1], LINKS[:1], frames=2)["mean"]["h264v:28"]) == {"received", "lanczos"}


def _error(fn) -> str:
    with pytest.raises(SharpkdError) as err:
        fn()
    msg = str(err.value)
    assert one_line(msg) == msg
    return msg


def test_bad_video_sets_are_one_error_naming_the_file_and_the_param(clips, tmp_path):
    missing = tmp_path / "nowhere"
    assert _error(lambda: clip_files(missing)) == f"evaluate.video.dir {missing}: no such file or folder"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    msg = _error(lambda: clip_files(tmp_path / "empty"))
    assert msg.startswith(f"evaluate.video.dir {tmp_path / 'empty'}: no video files (")
    msg = _error(lambda: score_clips(clip_files(clips), LINKS, frames=6))
    assert msg.startswith(f"{clips / 'a.mp4'}: 5 frames from frame 0, 6 asked for")
    assert "evaluate.video.frames 6, evaluate.video.start 0" in msg
    msg = _error(lambda: score_clips(clip_files(clips), LINKS, frames=4, start=2))
    assert "3 frames from frame 2, 4 asked for" in msg and "evaluate.video.start 2" in msg
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mp4").write_bytes(b"not a video")
    msg = _error(lambda: score_clips(clip_files(tmp_path / "bad"), LINKS, frames=2))
    assert msg.startswith(f"{tmp_path / 'bad' / 'x.mp4'}: cannot open as a video") and "evaluate.video.dir" in msg
    assert _error(lambda: score_clips(clip_files(clips), ["h264:23"], frames=2)).startswith(
        "evaluate.video.links: 'h264:23' is not a video link")
    assert _error(lambda: score_clips(clip_files(clips), LINKS, frames=1)).startswith(
        "evaluate.video.frames must be at least 2")


def test_params_schema_checks_the_video_keys(tmp_path):
    from sharpkd import stage

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["evaluate"]["video"] == {"dir": "", "frames": 48, "start": 0,
                                           "links": ["h264v:23", "h264v:28", "h264v:1000k"]}
    for key, bad, says in (("frames", 1, "evaluate.video.frames must be an integer from 2"),
                           ("start", -1, "evaluate.video.start must be an integer from 0"),
                           ("links", [], "evaluate.video.links must be a list of at least 1"),
                           ("nope", 1, "unknown key(s) 'nope' in section evaluate.video")):
        p = yaml.safe_load((ROOT / "params.yaml").read_text())
        p["evaluate"]["video"][key] = bad
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
        with pytest.raises(SharpkdError, match=says.replace("(", r"\(").replace(")", r"\)")):
            stage.load_params("evaluate", tmp_path / "params.yaml")


def test_merge_takes_the_teachers_rows_and_checks_they_are_of_the_same_clips(clips):
    files = clip_files(clips)
    ours = score_clips(files, LINKS, frames=3, methods={"student": brighter})
    theirs = score_clips(files, LINKS, frames=3, methods={"teacher": lambda x: unsharp_mask(x, 1.0, 1.0)})
    merged = merge_method(json.loads(json.dumps(ours)), theirs, "teacher", "t.json")
    for spec in LINKS:
        assert set(merged["mean"][spec]) == {"received", "lanczos", "student", "teacher"}
        assert merged["mean"][spec]["teacher"] == theirs["mean"][spec]["teacher"]
    summary = eval_summary(merged)
    assert summary["n_clips"] == 2 and summary["frames_per_clip"] == 3
    row = summary["links"]["h264v:28"]["clips"]["a"]
    assert set(row) == {"coded_width", "coded_height", "kbps", "methods"} and "sha256" not in json.dumps(summary)
    assert (row["coded_width"], row["coded_height"]) == (38, 29)
    table = format_link_table("h264v:28", summary["links"]["h264v:28"]["mean"], 2, 3)
    assert table.splitlines()[2].split()[0] == "received" and "teacher" in table
    rec = settings_record(merged, dir="v", scale=0.6, links=LINKS, frames=3, start=0, unsharp=None, teacher_from="t")
    assert rec["clips"]["b"]["links"]["h264v:100k"]["sha256"] == merged["clips"]["b"]["links"]["h264v:100k"]["sha256"]
    short = score_clips(files, LINKS, frames=2, methods={"teacher": brighter})
    with pytest.raises(SharpkdError, match="t.json holds no teacher rows for clip 'a' at 3 frames"):
        merge_method(json.loads(json.dumps(ours)), short, "teacher", "t.json")
    other = json.loads(json.dumps(theirs))
    other["clips"]["a"]["links"]["h264v:28"]["sha256"] = "0" * 64
    with pytest.raises(SharpkdError, match="coded to other bytes"):
        merge_method(json.loads(json.dumps(ours)), other, "teacher", "t.json")


# ------------------------------------------------------------------------------------------
# the stages on tiny data


def _params(video_dir: str) -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["degrade"] |= {"codec": "none", "train_links": [], "val_links": []}
    p["teacher"] |= {"kind": "restormer", "restormer": dict(SMALL_TEACHER), "device": "cpu", "tile": 64, "overlap": 8}
    p["evaluate"] |= {"unsharp_radii": [1.0], "unsharp_amounts": [0.5], "grid_images": 1, "device": "cpu"}
    p["evaluate"]["video"] |= {"dir": video_dir, "frames": 3, "links": LINKS}
    return p


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, clips, weights):
    """A stage working folder: tiny slices and degraded splits, teacher outputs, a tiny teacher and student."""
    from sharpkd.data.degrade import degrade
    from sharpkd.data.shards import write_split
    from sharpkd.training.teacher import build_teacher, save_teacher

    d = tmp_path_factory.mktemp("stage")
    rng = np.random.default_rng(0)

    def img(h, w):
        return np.kron(rng.integers(0, 256, (h // 4, w // 4, 3)).astype(np.uint8), np.ones((4, 4, 1), np.uint8))

    gt = {"train": {f"t{i}.png": img(32, 40) for i in range(2)}, "val_full": {f"v{i}.png": img(40, 56) for i in range(2)}}
    for split, images in gt.items():
        write_split(d / "slices", split, images)
        write_split(d / "degraded", split, {n: degrade(g) for n, g in images.items()})
    write_split(d / "teacher", "val_full", gt["val_full"])
    for folder in ("links", "teacher_links"):
        (d / folder).mkdir()
    params = _params(str(clips))
    save_teacher(build_teacher(params["teacher"]), d / "teacher.safetensors", params["teacher"])
    (d / "student.safetensors").write_bytes(Path(weights).read_bytes())
    return d


def _run(module: str, argv: list[str], cwd: Path, params: dict, monkeypatch) -> None:
    import importlib

    (cwd / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [module, *argv])
    importlib.import_module(f"stages.{module}").run()


def teacher_video(d: Path, video_dir: str, out: str, monkeypatch) -> dict:
    _run("teacher_video", ["--model", "teacher.safetensors", "--metrics", out], d, _params(video_dir), monkeypatch)
    return json.loads((d / out).read_text())


EVAL_ARGS = ["--slices", "slices", "--degraded", "degraded", "--links", "links", "--teacher", "teacher",
             "--teacher-links", "teacher_links", "--teacher-model", "teacher.safetensors", "--model",
             "student.safetensors", "--scores", "scores.csv", "--grid", "grid.png", "--images", "restored"]


def evaluate(d: Path, video_dir: str, teacher_json: str, tag: str, monkeypatch) -> tuple[dict, dict]:
    _run("evaluate", [*EVAL_ARGS, "--teacher-video", teacher_json, "--metrics", f"eval-{tag}.json",
                      "--settings", f"settings-{tag}.json"], d, _params(video_dir), monkeypatch)
    return json.loads((d / f"eval-{tag}.json").read_text()), json.loads((d / f"settings-{tag}.json").read_text())


def test_teacher_video_stage_writes_the_teachers_rows(workdir, clips, monkeypatch):
    assert teacher_video(workdir, "", "none.json", monkeypatch) == {"video": None}
    got = teacher_video(workdir, str(clips), "tv.json", monkeypatch)["video"]
    assert got["dir"] == str(clips) and got["links"] == LINKS  # the settings keep params order and got["frames"] == 3 and got["scale"] == 0.6
    for spec in LINKS:
        assert set(got["mean"][spec]) == {"received", "lanczos", "teacher"}
        for c in ("a", "b"):
            t = got["clips"][c]["links"][spec]["methods"]["teacher"]
            assert set(t) == {"psnr", "psnr_min", "temporal_error", "motion_ratio", "frames_below_reference"}
    (workdir / "params.yaml").unlink()


def test_evaluate_stage_puts_video_rows_in_eval_json_and_nothing_without_a_video_set(workdir, clips, monkeypatch):
    teacher_video(workdir, str(clips), "tv.json", monkeypatch)
    teacher_video(workdir, "", "none.json", monkeypatch)
    plain, plain_info = evaluate(workdir, "", "none.json", "plain", monkeypatch)
    assert "video" not in plain and "video" not in plain_info
    ev, info = evaluate(workdir, str(clips), "tv.json", "video", monkeypatch)
    # the video set adds its own key and changes nothing else
    assert {k: v for k, v in ev.items() if k != "video"} == plain
    assert {k: v for k, v in info.items() if k != "video"} == plain_info
    v = ev["video"]
    assert v["n_clips"] == 2 and v["frames_per_clip"] == 3 and set(v["links"]) == set(LINKS)  # key-sorted JSON
    tv = json.loads((workdir / "tv.json").read_text())["video"]
    for spec in LINKS:
        mean = v["links"][spec]["mean"]
        assert set(mean) == {"received", "lanczos", "unsharp", "teacher", "student"}
        assert mean["teacher"] == tv["mean"][spec]["teacher"] and mean["received"] == tv["mean"][spec]["received"]
        assert set(v["links"][spec]["clips"]) == {"a", "b"}
        assert v["links"][spec]["clips"]["a"]["coded_width"] == 38

    def numbers(obj):  # eval.json holds numbers only
        return all(numbers(x) if isinstance(x, dict) else isinstance(x, (int, float)) or x is None for x in obj.values())

    assert numbers(v)
    assert "sha256" not in json.dumps(ev) and "frame_types" not in json.dumps(ev)
    assert info["video"]["clips"]["a"]["links"]["h264v:28"]["sha256"] == tv["clips"]["a"]["links"]["h264v:28"]["sha256"]
    assert info["video"]["unsharp"] == {"radius": 1.0, "amount": 0.5} and info["video"]["teacher_from"] == "tv.json"
    # a teacher_video output of no video set, while evaluate.video.dir is set, is one clear error
    with pytest.raises(SharpkdError, match="was not measured on evaluate.video.dir"):
        evaluate(workdir, str(clips), "none.json", "mismatch", monkeypatch)


def test_docs_table_per_link_only_when_eval_json_has_video(clips, tmp_path):
    from tools.results import video_set_tables

    d = tmp_path / "metrics" / "photos"
    d.mkdir(parents=True)
    (d / "eval.json").write_text(json.dumps({"methods": {}}))
    assert video_set_tables(d) == ""
    files = clip_files(clips)
    r = merge_method(score_clips(files, LINKS, frames=3, methods={"student": brighter}),
                     score_clips(files, LINKS, frames=3, methods={"teacher": brighter}), "teacher", "t.json")
    (d / "eval.json").write_text(json.dumps({"methods": {}, "video": eval_summary(r)}, sort_keys=True))
    info = settings_record(r, dir="clips", scale=0.6, links=LINKS, frames=3, start=0, unsharp=None, teacher_from="t")
    (d / "eval_settings.json").write_text(json.dumps({"video": info}))
    text = video_set_tables(d)
    assert text.index("**`h264v:28`**") < text.index("**`h264v:100k`**")  # params order, not key order
    rows = [line for line in text.splitlines() if line.startswith("| student |")]
    assert len(rows) == 2 and rows[0].endswith(" of 6 |") and "2 clips of `clips`, 3 frames each" in text
