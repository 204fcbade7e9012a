"""The teacher stage as several processes: the outputs of 1 and 2 processes are the same bytes.

Tiny shards on the CPU (gloo): the stage run as one process, as two processes it launches itself
(``teacher.nproc: 2``) and as two processes under ``torchrun --standalone``; every output file
(shards, link shards, weights, metrics) compared byte for byte.  Every process runs one thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sharpkd.data.degrade import degrade
from sharpkd.data.shards import write_split
from sharpkd.files import write_json
from sharpkd.training.distributed import gather_parts

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--slices", "slices", "--degraded", "degraded", "--links", "degraded_links", "--out", "teacher",
        "--links-out", "teacher_links", "--model", "teacher.safetensors", "--metrics", "teacher.json",
        "--state-dir", "state"]
OUTPUTS = ("teacher", "teacher_links", "teacher.safetensors", "teacher.json")
PARAMS = {"kind": "restormer",
          "restormer": {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 1, 1, 1],
                        "ffn_expansion_factor": 2.0},
          "vdsr_path": "", "checkpoint": "", "sha256": "",
          "adapt": {"steps": 0, "lr": 0.001, "patch": 16, "batch": 2, "seed": 0, "checkpoint_every": 50},
          "allow_worse_than_input": True, "self_ensemble": False, "tile": 32, "overlap": 8, "device": "cpu",
          "nproc": 1}


def _image(rng, h, w):
    base = rng.random((h // 4 + 1, w // 4 + 1, 3))
    return (np.kron(base, np.ones((4, 4, 1)))[:h, :w] * 200 + rng.random((h, w, 3)) * 55).astype(np.uint8)


def make_data(folder: Path) -> None:
    """Five training crops, three validation images (one larger than a tile) and one link set."""
    rng = np.random.default_rng(0)
    gt = {"train": {f"t{i}@r0c0": _image(rng, 24, 32) for i in range(5)},
          "val_full": {f"v{i}": _image(rng, 40 + 8 * i, 48) for i in range(3)}}
    for split, images in gt.items():
        write_split(folder / "slices", split, images)
        write_split(folder / "degraded", split, {n: degrade(im) for n, im in images.items()})
    write_split(folder / "degraded_links", "val_full.jpeg_50",
                {n: degrade(im, codec="jpeg", jpeg_quality=50) for n, im in gt["val_full"].items()})
    write_json(folder / "degraded_links" / "links.json",
               {"scale": 0.6, "val_links": {"jpeg:50": {"val_full": "val_full.jpeg_50"}}})


def run_stage(folder: Path, params: dict, torchrun: int = 0) -> subprocess.CompletedProcess:
    (folder / "params.yaml").write_text(yaml.safe_dump({"teacher": params, "degrade": DEGRADE}))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    env.pop(ERROR_ENV, None)
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(torchrun),
               "-m", "stages.teacher", *ARGS]
    else:
        cmd = [sys.executable, "-m", "stages.teacher", *ARGS]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)


ERROR_ENV = "SHARPKD_ERROR_FILE"
#: The sections of params.yaml besides ``teacher`` that the stage reads (the Lanczos gate's links).
DEGRADE = {"scale": 0.6, "codec": "none"}


def safetensors_parts(data: bytes) -> tuple[bytes, dict]:
    """(tensor bytes, metadata with ``params`` parsed) of a safetensors file."""
    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + n])["__metadata__"]
    return data[8 + n :], meta | {"params": json.loads(meta["params"])}


def output_bytes(folder: Path) -> dict[str, bytes]:
    out = {}
    for name in OUTPUTS:
        path = folder / name
        for f in sorted(path.rglob("*") if path.is_dir() else [path]):
            if f.is_file():
                out[f.relative_to(folder).as_posix()] = f.read_bytes()
    return out


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    folder = tmp_path_factory.mktemp("one")
    make_data(folder)
    proc = run_stage(folder, PARAMS | {"self_ensemble": True})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return output_bytes(folder)


@pytest.mark.parametrize("how", ["launched", "torchrun"])
def test_two_processes_write_the_bytes_of_one(tmp_path, one_process, how):
    """The x8 self-ensemble included: each process runs its images' eight passes."""
    make_data(tmp_path)
    params = PARAMS | {"self_ensemble": True, "nproc": 2}
    proc = run_stage(tmp_path, params, torchrun=2 if how == "torchrun" else 0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = output_bytes(tmp_path)
    assert sorted(two) == sorted(one_process)
    assert any(k.startswith("teacher_links/") and k.endswith(".safetensors") for k in two)
    for name, data in one_process.items():
        if name != "teacher.safetensors":
            assert two[name] == data, name
    # the weights: the same tensors; their provenance records the params, teacher.nproc with them
    ours, theirs = (safetensors_parts(d["teacher.safetensors"]) for d in (two, one_process))
    assert ours[0] == theirs[0] and ours[1]["params"] | {"nproc": 1} == theirs[1]["params"]
    assert not list((tmp_path / "state").glob("infer-*"))


def test_two_processes_adapt_then_infer(tmp_path):
    """Adaptation data-parallel over two processes (the global batch split), then sharded inference."""
    make_data(tmp_path)
    proc = run_stage(tmp_path, PARAMS | {"nproc": 2, "adapt": PARAMS["adapt"] | {"steps": 2}})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "teacher.safetensors").exists() and "adapt_train_l1" in (tmp_path / "teacher.json").read_text()


@pytest.mark.parametrize("nproc", [0, -2, "two", True, 1.5])
def test_bad_nproc_is_one_error_line(tmp_path, nproc):
    make_data(tmp_path)
    proc = run_stage(tmp_path, PARAMS | {"nproc": nproc})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: params.yaml: teacher.nproc must be an integer from 1")


def test_a_failure_of_every_process_is_one_error_line(tmp_path):
    """A random teacher fails the gate on every rank; the launcher prints it once."""
    make_data(tmp_path)
    proc = run_stage(tmp_path, PARAMS | {"nproc": 2, "allow_worse_than_input": False})
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:") or "Traceback" in ln]
    assert len(lines) == 1 and lines[0].startswith("error: the teacher is not better than the degraded input"), lines
    assert not (tmp_path / "teacher").exists()


def test_teacher_json_holds_the_margin_over_lanczos_on_every_link_set(tmp_path):
    """Recorded with any gate: the primary link (none) and each val link; the tiny random teacher
    is below Lanczos on both, which the default gate (input, allowed worse here) lets pass."""
    make_data(tmp_path)
    proc = run_stage(tmp_path, PARAMS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "teacher.json").read_text())
    assert metrics["gate"] == "input"
    assert set(metrics["over_lanczos_db"]) == {"none", "jpeg:50"}
    assert all(v < 0 for v in metrics["over_lanczos_db"].values())


@pytest.mark.parametrize("nproc", [1, 2])
def test_the_lanczos_gate_stops_every_process_with_one_error_line(tmp_path, nproc):
    make_data(tmp_path)
    proc = run_stage(tmp_path, PARAMS | {"gate": "lanczos", "nproc": nproc})
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:") or "Traceback" in ln]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: teacher.gate is lanczos and the teacher does not beat Lanczos")
    assert "2 of 2 link set(s)" in lines[0] and "jpeg:50 (" in lines[0] and "none (" in lines[0]
    assert not (tmp_path / "teacher").exists() and not (tmp_path / "teacher.json").exists()


def test_odd_batch_for_two_processes_is_one_error_line(tmp_path):
    make_data(tmp_path)
    proc = run_stage(tmp_path, PARAMS | {"nproc": 2, "adapt": PARAMS["adapt"] | {"steps": 2, "batch": 3}})
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:") or "Traceback" in ln]
    assert len(lines) == 1 and "divisible by the 2 processes" in lines[0], lines


def test_torchrun_world_must_match_nproc(tmp_path):
    make_data(tmp_path)
    proc = run_stage(tmp_path, PARAMS, torchrun=2)
    assert proc.returncode != 0
    assert "error: teacher.nproc is 1 but 2 processes run" in proc.stderr


def test_gather_parts_without_a_group_returns_the_part():
    assert gather_parts([1, 2], 2) == [1, 2]


def test_sigterm_to_the_launcher_ends_every_process(tmp_path):
    """SIGTERM (a cancelled job) reaches the launched processes: exit 130, no output, no process left."""
    import signal
    import time

    make_data(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"teacher": PARAMS | {
        "nproc": 2, "adapt": PARAMS["adapt"] | {"steps": 100000}}, "degrade": DEGRADE}))
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "stages.teacher", *ARGS], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    children = []
    while time.monotonic() < deadline and len(children) < 2:  # both ranks started
        time.sleep(0.5)
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        children = [int(c) for c in out]
    assert len(children) == 2
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in stderr
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not (tmp_path / "teacher").exists()
