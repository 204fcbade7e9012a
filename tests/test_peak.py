"""``sharpkd bench --peak``: the machine's limit through OpenVINO, kept and carried into student benches."""

from __future__ import annotations

import json

import pytest

from sharpkd.app.cli import main
from sharpkd.inference import peak
from sharpkd.inference.runtimes import available

pytestmark = pytest.mark.skipif(not available("openvino"), reason="bench --peak measures through OpenVINO")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARPKD_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_peak_json_kept_and_carried_into_a_student_bench(tmp_path, capsys, weights, cache):
    out = tmp_path / "peak.json"
    assert main(["bench", "--peak", "--height", "16", "--width", "24", "--runs", "1", "--warmup", "0",
                 "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == result
    p = result["peak"]
    assert {(r["channels"], r["precision"]) for r in p["convolutions"]} == {
        (c, k) for c in peak.CHANNELS for k in ("f32", "int8")}
    assert all(r["gmacs"] > 0 and (r["height"], r["width"]) == (8, 12) and r["kernels"] for r in p["convolutions"])
    assert set(p["passes_ms"]) == set(peak.PASSES) and all(v > 0 for v in p["passes_ms"].values())
    assert p["peak_gmacs"]["int8"] == max(r["gmacs"] for r in p["convolutions"] if r["precision"] == "int8")
    m = result["machine"]
    assert {"cpu", "cpu_isa", "cpu_features", "cpu_cores", "kernel", "openvino", "torch"} <= set(m)
    assert (cache / peak.CACHE_NAME).is_file()

    assert main(["bench", "--weights", str(weights), "--height", "16", "--width", "24", "--runs", "1",
                 "--warmup", "0", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["peak"]["peak_gmacs"] == p["peak_gmacs"]
    o = bench["of_peak"]
    assert o["precision"] == "f32" and o["frame_io_ms"] == p["passes_ms"]["frame_io"]
    assert o["fraction"] == pytest.approx(o["floor_ms"] / bench["median_ms"], abs=1e-4)

    assert main(["bench", "--weights", str(weights), "--height", "16", "--width", "24", "--runs", "1",
                 "--warmup", "0", "--threads", "3", "--json"]) == 0
    assert "of_peak" not in json.loads(capsys.readouterr().out)  # measured with other threads: not carried


@pytest.mark.parametrize("argv, needle", [(["--height", "15"], "error: --height must be a positive multiple of 2"),
                                          (["--runs", "0"], "error: --runs must be between 1 and 10000"),
                                          (["--teacher", "t.safetensors"], "error: --teacher names one model"),
                                          (["--device", "cuda"], "error: ")])
def test_peak_bad_options_are_one_line(argv, needle, capsys):
    assert main(["bench", "--peak", *argv]) in (1, 2)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(needle), err


def test_a_corrupt_peak_cache_is_ignored(cache):
    cache.mkdir()
    (cache / peak.CACHE_NAME).write_text("{")
    with pytest.warns(UserWarning, match="rewritten"):
        assert peak.cached(2) is None
