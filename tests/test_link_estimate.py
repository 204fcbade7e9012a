"""The link estimate and the pair of experts it picks between: a coded frame gets the link-mixture
expert, an uncoded one the clean-pairs expert, at the cost of one network plus the estimate."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from sharpkd.app import shipped
from sharpkd.app.sharpen import Sharpener
from sharpkd.errors import SharpkdError
from sharpkd.nets.link import (LinkEstimator, coded_probability, load_estimator, patch_boxes, save_estimator)
from sharpkd.nets.students import build_student, save_student
from sharpkd.training.link import train_estimator
from sharpkd.video.changed import ChangedWindows


def texture(n, h=32, w=48, seed=0):
    """Fine random texture: what a clean received frame keeps."""
    return np.random.default_rng(seed).integers(60, 200, (n, h, w, 3), dtype=np.uint8)


def flattened(x):
    """Each 8x8 block replaced by its mean: what a hard codec leaves."""
    n, h, w, c = x.shape
    blocks = x.reshape(n, h // 8, 8, w // 8, 8, c).mean((2, 4), keepdims=True)
    return np.broadcast_to(blocks, (n, h // 8, 8, w // 8, 8, c)).reshape(x.shape).round().astype(np.uint8)


@pytest.mark.parametrize("h,w", [(1080, 1920), (720, 1280), (131, 517), (40, 56), (1, 1)])
def test_patch_boxes_lie_inside_the_frame_and_spread_over_it(h, w):
    boxes = patch_boxes(h, w)
    assert boxes and len(set(boxes)) == len(boxes)
    for t, l, ph, pw in boxes:
        assert 0 <= t and t + ph <= h and 0 <= l and l + pw <= w and ph == min(128, h) and pw == min(128, w)
    if h >= 3 * 128 and w >= 4 * 128:
        assert len(boxes) == 12
        assert min(b[0] for b in boxes) == 0 and max(b[0] + b[2] for b in boxes) == h
        assert min(b[1] for b in boxes) == 0 and max(b[1] + b[3] for b in boxes) == w


def test_estimate_is_a_probability_the_same_for_8_and_16_bits_and_refuses_other_shapes():
    torch.manual_seed(0)
    model = LinkEstimator().eval()
    frame = texture(1, 200, 300)[0]
    p = coded_probability(model, frame)
    assert 0 < p < 1 and p == coded_probability(model, frame.copy())
    assert coded_probability(model, frame.astype(np.uint16) * 257) == pytest.approx(p, abs=1e-6)
    with pytest.raises(SharpkdError, match="HxWx3"):
        coded_probability(model, frame[..., 0])


def test_training_learns_the_label_and_is_deterministic():
    clean = texture(24, seed=1)
    coded = flattened(texture(24, seed=2))
    x = np.concatenate([clean, coded])
    y = np.array([False] * 24 + [True] * 24)
    a = train_estimator(x, y, steps=120, batch=16, window=32, lr=3e-3, channels=4)
    b = train_estimator(x, y, steps=120, batch=16, window=32, lr=3e-3, channels=4)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    fresh_clean, fresh_coded = texture(4, 64, 96, seed=3), flattened(texture(4, 64, 96, seed=4))
    assert max(coded_probability(a, f) for f in fresh_clean) < 0.5 < min(coded_probability(a, f) for f in fresh_coded)


def test_training_refuses_one_class_and_mismatched_labels():
    x = texture(4)
    with pytest.raises(SharpkdError, match="both clean and coded"):
        train_estimator(x, np.ones(4, bool), steps=1)
    with pytest.raises(SharpkdError, match="4 crops but 3 labels"):
        train_estimator(x, np.ones(3, bool), steps=1)
    with pytest.raises(SharpkdError, match="uint8"):
        train_estimator(x.astype(np.float32), np.array([0, 1, 0, 1], bool), steps=1)


def constant_estimator(path, coded: bool):
    """An estimate that reads every frame as coded (or as clean), saved with the shipped threshold."""
    model = LinkEstimator(channels=2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.head.bias.fill_(20.0 if coded else -20.0)
    save_estimator(model, path, {"threshold": 0.5})
    return path


def test_save_and_load_round_trip_same_bytes_and_refuse_other_files(tmp_path, weights):
    torch.manual_seed(0)
    model = LinkEstimator(channels=4)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_estimator(model, a, {"threshold": 0.5})
    loaded, meta = load_estimator(a)
    save_estimator(loaded, b, {"threshold": 0.5})
    assert a.read_bytes() == b.read_bytes() and meta["threshold"] == "0.5"
    with pytest.raises(SharpkdError, match="not a sharpkd link estimate"):
        load_estimator(weights)  # a student file
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(SharpkdError, match="not a readable link estimate"):
        load_estimator(junk)


@pytest.fixture
def pair(tmp_path, weights, monkeypatch):
    """``weights`` as the link-mixture expert of a pair whose clean-pairs expert is another network."""
    torch.manual_seed(1)
    other = build_student("sharp")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    clean = tmp_path / "clean.safetensors"
    save_student(other, clean, {"card": "{}"})
    estimate = tmp_path / "estimate.safetensors"
    monkeypatch.setattr(shipped, "expert_files", lambda w: (clean, estimate) if w == weights else None)
    return clean, estimate


@pytest.mark.parametrize("coded", [True, False])
def test_the_pair_runs_the_expert_the_estimate_picks_and_says_so(pair, weights, coded):
    clean, estimate = pair
    constant_estimator(estimate, coded)
    frame = texture(1, 64, 96)[0]
    routed = Sharpener(weights, runtime="torch")
    expected = Sharpener(weights if coded else clean, runtime="torch")(frame)
    assert np.array_equal(routed(frame), expected)
    assert np.array_equal(routed(frame.astype(np.uint16) * 257), Sharpener(weights if coded else clean,
                                                                          runtime="torch")(frame.astype(np.uint16) * 257))
    assert routed.frames_total == 2 and routed.frames_clean == (0 if coded else 2)
    assert routed.experts_line() == (f"link estimate: {0 if coded else 2} of 2 frame(s) read as uncoded "
                                     "(clean-pairs expert), the rest as coded (link-mixture expert)")
    alone = Sharpener(clean, runtime="torch")
    alone(frame)
    assert alone.estimator is None and alone.experts_line() is None


def test_reuse_unchanged_never_mixes_the_experts_windows(pair, weights, monkeypatch):
    """A window is reused only from a frame the same expert sharpened: when the estimate switches
    experts, every window runs again, and the output is what the pair gives frame by frame."""
    clean, estimate = pair
    constant_estimator(estimate, True)
    import sharpkd.nets.link as link

    seq = [0.9, 0.1, 0.1, 0.9]  # coded, clean, clean, coded: the same for each of the two sharpeners
    calls = {"n": 0}

    def fake(model, rgb):
        calls["n"] += 1
        return seq[(calls["n"] - 1) % 4]

    monkeypatch.setattr(link, "coded_probability", fake)
    f = texture(1, 96, 160)[0]
    reuse = ChangedWindows(Sharpener(weights, tile=64, overlap=32, runtime="torch"))
    outs = [reuse(f) for _ in range(4)]
    full = Sharpener(weights, tile=64, overlap=32, runtime="torch")
    for i, out in enumerate(outs):
        assert np.array_equal(out, full(f)), i
    assert reuse.frames_clean == 2 and full.frames_clean == 2
    assert reuse.computed == reuse.total - reuse.total // 4  # the third frame (clean again, unchanged) reused all


def test_the_shipped_default_is_a_pair_and_other_files_run_alone(weights):
    files = shipped.expert_files(shipped.shipped_weights("balanced"))
    assert files is not None and all(p.is_file() for p in files)
    assert shipped.expert_files(weights) is None
    assert shipped.expert_files(shipped.shipped_weights("fast")) is None
    _, meta = load_estimator(files[1])
    assert 0 < float(meta["threshold"]) < 1
    clean_card = files[0].with_suffix(".json")
    assert clean_card.is_file()


def test_the_shipped_estimate_reads_a_clean_and_a_coded_received_frame():
    """A real received frame: the synthetic texture of a photo, clean (60% bilinear and back) and
    through H.264 at CRF 28: the shipped estimate puts them on the two sides of its threshold."""
    from sharpkd.data.degrade import degrade

    _, estimate = shipped.expert_files(shipped.shipped_weights("balanced"))
    model, meta = load_estimator(estimate)
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:360, 0:640]
    scene = (128 + 60 * np.sin(xx / 7.0) * np.cos(yy / 11.0))[..., None] + rng.normal(0, 12, (360, 640, 3))
    gt = np.clip(scene, 0, 255).astype(np.uint8)
    t = float(meta["threshold"])
    assert coded_probability(model, degrade(gt, 0.6)) < t < coded_probability(model, degrade(gt, 0.6, codec="h264", h264_crf=28))


def test_estimate_card_names_the_shipped_files_by_sha256():
    _, estimate = shipped.expert_files(shipped.shipped_weights("balanced"))
    import json

    card = json.loads(estimate.with_suffix(".json").read_text())
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert card["sha256"] == sha(estimate)
    clean = shipped.expert_files(shipped.shipped_weights("balanced"))[0]
    assert card["clean_expert"]["sha256"] == sha(clean)  # the docs trust the card for which files were scored
    assert card["coded_expert"]["sha256"] == sha(shipped.shipped_weights("balanced"))


def test_picker_judges_images_alone_and_holds_its_choice_within_a_sequence():
    from sharpkd.nets.link import Picker

    calls = []

    def est(p):
        return lambda: calls.append(p) or p

    picker = Picker(0.5, band=0.15, every=2)
    assert [picker.choose(est(p)) for p in (0.45, 0.55, 0.45)] == [True, False, True]  # images: each by itself
    assert calls == [0.45, 0.55, 0.45]
    calls.clear()
    picker.start()
    ps = (0.45, 0.1, 0.55, 0.9, 0.66, 0.1, 0.4, 0.9, 0.34, 0.9)
    assert [picker.choose(est(p)) for p in ps] == [True, True, True, True, False, False, False, False, True, True]
    assert calls == [0.45, 0.55, 0.66, 0.4, 0.34]  # every second frame: within the band the choice holds
    picker.end()
    assert picker.choose(est(0.55)) is False and picker.current is None
    for bad in ((0.0, 0.1, 1), (1.0, 0.1, 1), (0.5, 1.0, 1), (0.5, -0.1, 1), (0.5, 0.1, 0)):
        with pytest.raises(SharpkdError, match="threshold"):
            Picker(*bad)


def test_a_video_is_one_sequence_for_the_pair(pair, weights, monkeypatch, tmp_path):
    """A video is estimated on its first frame (and every 30th), and keeps that expert; an image after
    it is estimated and judged by itself again."""
    import sharpkd.nets.link as link
    from sharpkd.app.sharpen import Job, sharpen_video

    clean, estimate = pair
    constant_estimator(estimate, True)
    ps = iter([0.45, 0.55])  # the video's first frame; the image after it
    monkeypatch.setattr(link, "coded_probability", lambda model, rgb: next(ps))
    seen = []
    sharpener = Sharpener(weights, runtime="torch")

    def fake_encode(src, dst, s, options, progress):
        for _ in range(4):
            s(texture(1, 32, 48)[0])
            seen.append(s.frames_clean)
        return {"frames": 4}

    monkeypatch.setattr("sharpkd.video.codec.sharpen_video", fake_encode)
    sharpen_video(Job(tmp_path / "a.mp4", tmp_path / "b.mp4", "video"), sharpener, progress=False)
    assert seen == [1, 2, 3, 4]  # estimated once, on the first frame: its expert holds
    sharpener(texture(1, 32, 48)[0])  # an image: 0.55 alone reads as coded
    assert sharpener.frames_clean == 4 and sharpener.frames_total == 5


def tiny_run(root):
    """A photo-profile run folder as the degrade stage leaves it, with a handful of small images."""
    import json

    from sharpkd.data.degrade import degrade
    from sharpkd.data.shards import write_split

    folder = root / "data" / "photos"
    gts = {f"p{i}.png": texture(1, 48, 64, seed=10 + i)[0] for i in range(4)}
    crops, links = {}, {}
    for i in range(8):
        name, coded = f"c{i}.png@r0c0", i % 2 == 1
        crops[name] = flattened(texture(1, 32, 48, seed=20 + i))[0] if coded else texture(1, 32, 48, seed=20 + i)[0]
        links[name] = "h264v:23" if coded else "none"
    write_split(folder / "degraded", "train", crops)
    write_split(folder / "slices", "val_full", gts)
    write_split(folder / "degraded", "val_full", {k: degrade(v, 0.6) for k, v in gts.items()})
    write_split(folder / "degraded_links", "val_full.h264_23",
                {k: degrade(v, 0.6, codec="h264", h264_crf=23) for k, v in gts.items()})
    (folder / "degrade.json").write_text(json.dumps({"train_crops": links}))
    return root


def run_experiment(*args, cwd):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "experiments" / "link_estimate.py"
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_experiment_trains_scores_and_writes_weights_card_and_report(tmp_path, weights):
    """experiments/link_estimate.py end to end on a tiny run and clip: the report has every set, the
    saved estimate loads with its threshold, the card names the files by sha256, and scoring the
    saved estimate again (--estimator) writes the same weights."""
    import json

    from tests.test_video_link import panning, write_clip

    run = tiny_run(tmp_path / "run")
    (tmp_path / "clips").mkdir()
    write_clip(tmp_path / "clips" / "pan.mp4", panning(frames=4, h=62, w=90))
    common = ["--run", run, "--clean-expert", weights, "--coded-expert", weights, "--clips", tmp_path / "clips",
              "--frames", 3, "--links", "h264v:28", "--steps", 8, "--window", 32, "--batch", 4]
    est, out = tmp_path / "w" / "est.safetensors", tmp_path / "report.json"
    proc = run_experiment(*common, "--save", est, "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report["photos"]) == {"none", "h264:23"} and set(report["clips"]["pan"]) == {"none", "h264v:28"}
    for v in [*report["photos"].values(), *report["clips"]["pan"].values()]:
        assert v["pair_minus_coded_expert"] == 0 and v["oracle_minus_pair"] == 0  # both experts are one file
        assert v["frames"] in (3, 4) and 0 <= v["p_coded"]["min"] <= v["p_coded"]["max"] <= 1
    assert report["settings"]["estimator"]["crops"] == {"h264v:23": 4, "none": 4}
    model, meta = load_estimator(est)
    assert float(meta["threshold"]) == report["settings"]["threshold"]
    card = json.loads(est.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(est.read_bytes()).hexdigest() == report["settings"]["estimator"]["sha256"]
    first = est.read_bytes()
    proc = run_experiment(*common, "--estimator", est, "--save", est, "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert est.read_bytes() == first


@pytest.mark.parametrize("change,says", [
    (("--run", "missing"), "--run missing: data/photos/slices not found"),
    (("--estimator", "nope.safetensors"), "--estimator nope.safetensors: no such file"),
    (("--threshold", "1.5"), "--threshold must be between 0 and 1"),
])
def test_experiment_bad_options_give_one_error_line_and_write_nothing(tmp_path, weights, change, says):
    run = tiny_run(tmp_path / "run")
    args = {"--run": run, "--clean-expert": weights, "--coded-expert": weights, "--clips": tmp_path,
            "--out": tmp_path / "report.json"}
    args[change[0]] = change[1]
    proc = run_experiment(*[x for kv in args.items() for x in kv], cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "report.json").exists()


def test_a_pair_missing_from_the_installation_is_one_error_line(tmp_path, monkeypatch, capsys):
    """An installation that lost the clean-pairs expert or the estimate: `sharpen` stops with one
    `error:` line naming the missing file, a non-zero exit and no output file."""
    from PIL import Image

    from sharpkd.app.cli import main

    monkeypatch.setitem(shipped.EXPERTS, "balanced", ("student-balanced-clean.safetensors", "gone.safetensors"))
    Image.fromarray(texture(1, 40, 56)[0]).save(tmp_path / "a.png")
    rc = main(["sharpen", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "--student", "balanced", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("error: ") and "gone.safetensors" in err[0]
    assert "reinstall sharpkd" in err[0] and not list((tmp_path / "out").glob("*.png"))
