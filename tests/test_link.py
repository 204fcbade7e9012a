"""The link's codec in the degradation: none is the report's, JPEG and H.264 are seeded-free and
deterministic, and the baselines see the same received frame as the networks."""

import numpy as np
import pytest

from sharpkd.evaluation.classical import baseline_outputs
from sharpkd.data.degrade import CODECS, compress, degrade, downscale, link_params, transmitted
from sharpkd.errors import SharpkdError
from sharpkd.evaluation.metrics import psnr


def photo(h=61, w=83, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 6 + 1, w // 6 + 1, 3)).astype(np.uint8)
    return np.ascontiguousarray(np.kron(base, np.ones((6, 6, 1), np.uint8))[:h, :w])


def test_none_is_the_reports_degradation():
    g = photo()
    assert np.array_equal(degrade(g, 0.6, codec="none"), degrade(g, 0.6))
    assert link_params({"scale": 0.6}) == {"codec": "none", "jpeg_quality": 75, "h264_crf": 23}


@pytest.mark.parametrize("codec", ["jpeg", "h264"])
def test_codecs_lose_detail_keep_the_size_and_are_deterministic(codec):
    g = photo()  # odd sizes: H.264's 4:2:0 needs even ones, padded and cropped back
    low = downscale(g, 0.6)
    a, b = compress(low, codec), compress(low, codec)
    assert a.shape == low.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    assert 20 < psnr(a, low) < 60
    assert psnr(degrade(g, codec=codec), g) < psnr(degrade(g), g)


@pytest.mark.parametrize("codec,key,good,poor", [("jpeg", "jpeg_quality", 95, 20), ("h264", "h264_crf", 12, 40)])
def test_the_quality_setting_orders_the_loss(codec, key, good, poor):
    low = downscale(photo(seed=1), 0.6)
    assert psnr(compress(low, codec, **{key: good}), low) > psnr(compress(low, codec, **{key: poor}), low) + 2


def test_baselines_start_from_the_received_frame():
    g = photo(seed=2)
    link = {"codec": "jpeg", "jpeg_quality": 50, "h264_crf": 23}
    outs = baseline_outputs(g, 0.6, link=link)
    assert np.array_equal(outs["identity"], degrade(g, 0.6, **link))
    assert not np.array_equal(outs["lanczos"], baseline_outputs(g, 0.6)["lanczos"])
    assert np.array_equal(transmitted(g, 0.6, **link), compress(downscale(g, 0.6), **link))


@pytest.mark.parametrize("kwargs", [{"codec": "vp9"}, {"codec": "jpeg", "jpeg_quality": 0},
                                    {"codec": "h264", "h264_crf": 60}])
def test_bad_settings_are_named(kwargs):
    with pytest.raises(SharpkdError, match="degrade\\."):
        compress(downscale(photo(), 0.6), **kwargs)
    assert set(CODECS) == {"none", "jpeg", "h264"}


# --------------------------------------------------------------------------------------------
# links as spec strings, training mixtures, extra validation sets

import json  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402

import yaml  # noqa: E402

from sharpkd.data.degrade import (draw_link, link_list, link_name, link_slug, link_split, parse_link,  # noqa: E402
                             train_assignment, val_links)
from sharpkd.errors import one_line  # noqa: E402


@pytest.mark.parametrize("spec", ["none", "jpeg:1", "jpeg:75", "jpeg:100", "h264:0", "h264:23", "h264:51"])
def test_link_spec_round_trip(spec):
    kw = parse_link(spec)
    assert link_name(**kw) == spec and set(kw) == {"codec", "jpeg_quality", "h264_crf"}
    assert parse_link(f"  {spec} ") == kw
    assert link_slug(spec) == spec.replace(":", "_") and link_split("val_full", spec) == f"val_full.{link_slug(spec)}"


def test_a_link_spec_degrades_like_its_keywords():
    g = photo(seed=3)
    assert np.array_equal(degrade(g, 0.6, **parse_link("jpeg:40")), degrade(g, 0.6, codec="jpeg", jpeg_quality=40))
    assert np.array_equal(degrade(g, 0.6, **parse_link("none")), degrade(g, 0.6))


@pytest.mark.parametrize("spec,says", [
    ("h265:23", "is not a link (none, jpeg:Q, h264:CRF)"), ("jpeg", "is not a link"), ("h264:", "is not a link"),
    ("jpeg:7.5", "is not a link"), ("H264:23", "is not a link"), ("h264:-1", "is not a link"), ("", "is not a link"),
    (23, "is not a link"), (None, "is not a link"), ("jpeg:0", "JPEG quality must be 1..100"),
    ("jpeg:101", "JPEG quality must be 1..100"), ("h264:52", "H.264 CRF must be 0..51"),
])
def test_bad_link_specs_are_one_line(spec, says):
    with pytest.raises(SharpkdError) as err:
        link_list(["h264:23", spec], "val_links")
    assert str(err.value).startswith(f"degrade.val_links: {spec!r}") and says in str(err.value)
    assert one_line(err.value) == str(err.value)


@pytest.mark.parametrize("value,expected", [(None, []), ([], []), ("h264:28", ["h264:28"]),
                                            ([" jpeg:50", "none"], ["jpeg:50", "none"])])
def test_link_lists(value, expected):
    assert link_list(value, "train_links") == expected


def test_link_list_errors():
    with pytest.raises(SharpkdError, match="degrade.train_links must be a list of links"):
        link_list({"h264": 23}, "train_links")
    with pytest.raises(SharpkdError, match="degrade.val_links lists 'h264:23' more than once"):
        val_links({"val_links": ["h264:23", "h264:28", " h264:23"]})
    with pytest.raises(SharpkdError, match="degrade.seed must be an integer"):
        train_assignment(["a"], {"train_links": ["none"], "seed": "x"})


NAMES = [f"photo{i:03d}_r{r}c{c}.png" for i in range(60) for r in range(2) for c in range(2)]


def test_mixture_draw_is_deterministic_and_ignores_the_other_crops():
    p = {"codec": "none", "train_links": ["none", "h264:23", "h264:28"], "seed": 0}
    a = train_assignment(NAMES, p)
    assert a == train_assignment(list(reversed(NAMES)), p)
    more = train_assignment(NAMES[:50] + ["new_crop.png"], p)  # crops added or removed: the others keep their link
    assert all(more[n] == a[n] for n in NAMES[:50])
    assert a != train_assignment(NAMES, p | {"seed": 1})
    assert all(draw_link(n, p["train_links"], 0) == a[n] for n in NAMES)


@pytest.mark.parametrize("links,share", [(["none", "h264:23"], 0.5), (["none", "none", "jpeg:50"], 2 / 3)])
def test_mixture_is_uniform_over_the_list(links, share):
    names = [f"crop{i}" for i in range(3000)]
    counts = Counter(train_assignment(names, {"train_links": links, "seed": 0}).values())
    assert set(counts) == set(links) and abs(counts["none"] / len(names) - share) < 0.04


def test_no_mixture_is_the_codec_link_for_every_crop():
    assert set(train_assignment(NAMES, {"codec": "jpeg", "jpeg_quality": 60, "train_links": []}).values()) == {"jpeg:60"}


def _run_degrade_stage(tmp_path, monkeypatch, degrade_params, name):
    """The degrade stage on tiny slices, in ``tmp_path/name`` (its own params.yaml)."""
    import stages.degrade

    from sharpkd.data.shards import write_split

    slices = tmp_path / "slices"
    if not slices.exists():
        write_split(slices, "train", {f"s{i}_c{c}.png": photo(32 + i, 40, seed=i * 4 + c) for i in range(3) for c in range(4)})
        write_split(slices, "val_full", {"v0.png": photo(50, 60, seed=20), "v1.png": photo(48, 66, seed=21)})
        write_split(slices, "val_report", {"v0.png": photo(24, 30, seed=22), "v1.png": photo(24, 30, seed=23)})
    work = tmp_path / name
    work.mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump({"degrade": degrade_params}))
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", ["degrade", "--slices", str(slices), "--out", "degraded",
                                      "--links-out", "links", "--provenance", "degrade.json"])
    stages.degrade.run()
    return work


BASE = {"scale": 0.6, "codec": "jpeg", "jpeg_quality": 60, "h264_crf": 23}


def test_degrade_stage_without_links_writes_todays_bytes(tmp_path, monkeypatch):
    from sharpkd.data.degrade import degrade_all
    from sharpkd.data.shards import read_split, shard_paths, write_split

    work = _run_degrade_stage(tmp_path, monkeypatch, BASE | {"train_links": [], "val_links": [], "seed": 0}, "now")
    before = tmp_path / "before"  # what the stage wrote before links existed: every split through `codec`
    for split in ("train", "val_full", "val_report"):
        write_split(before, split, degrade_all(read_split(tmp_path / "slices", split), 0.6, **link_params(BASE)))
        assert [p.read_bytes() for p in shard_paths(work / "degraded", split)] == \
               [p.read_bytes() for p in shard_paths(before, split)]
    same = _run_degrade_stage(tmp_path, monkeypatch, BASE | {"train_links": ["jpeg:60"]}, "same")  # all crops: codec's link
    assert [p.read_bytes() for p in shard_paths(same / "degraded", "train")] == \
           [p.read_bytes() for p in shard_paths(before, "train")]
    record = json.loads((work / "degrade.json").read_text())
    assert record["train_counts"] == {"jpeg:60": 12} and record["primary_link"] == "jpeg:60"


def test_degrade_stage_mixture_and_extra_validation_sets(tmp_path, monkeypatch):
    from sharpkd.data.shards import read_split, split_names

    p = BASE | {"train_links": ["none", "h264:28"], "val_links": ["h264:23", "none"], "seed": 0}
    work = _run_degrade_stage(tmp_path, monkeypatch, p, "mix")
    record = json.loads((work / "degrade.json").read_text())
    gt = read_split(tmp_path / "slices", "train")
    assert record["train_crops"] == train_assignment(gt, p) and sum(record["train_counts"].values()) == len(gt)
    assert set(record["train_counts"]) == {"none", "h264:28"}
    deg = read_split(work / "degraded", "train")
    for name, spec in record["train_crops"].items():
        assert np.array_equal(deg[name], degrade(gt[name], 0.6, **parse_link(spec)))
    assert split_names(work / "degraded") == ["train", "val_full", "val_report"]  # the primary sets, as before
    assert split_names(work / "links") == ["val_full.h264_23", "val_full.none", "val_report.h264_23", "val_report.none"]
    val = read_split(tmp_path / "slices", "val_report")
    got = read_split(work / "links", "val_report.h264_23")
    assert all(np.array_equal(got[n], degrade(val[n], 0.6, codec="h264", h264_crf=23)) for n in val)
    assert json.loads((work / "links" / "links.json").read_text())["val_links"]["h264:23"] == \
           {"val_full": "val_full.h264_23", "val_report": "val_report.h264_23"}


def test_degrade_stage_bad_link_is_one_line(tmp_path):
    import subprocess

    from tests.e2e import ROOT

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"degrade": BASE | {"val_links": ["h265:23"]}}))
    proc = subprocess.run([sys.executable, "-m", "stages.degrade", "--slices", "s", "--out", "d", "--links-out", "l",
                           "--provenance", "p.json"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: degrade.val_links: 'h265:23' is not a link (none, jpeg:Q, h264:CRF)"
    assert not any((tmp_path / n).exists() for n in ("d", "l", "p.json"))
