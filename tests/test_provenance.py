"""What a measurement records about where it came from: the code revision and the command."""

import json
import subprocess
import sys
from pathlib import Path

from sharpkd import provenance

ROOT = Path(__file__).resolve().parents[1]


def test_the_revision_of_a_checkout_is_its_commit_and_whether_tracked_files_changed(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "sharpkd").mkdir()
    (tmp_path / "sharpkd" / "x.py").write_text("a = 1\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert provenance.revision(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "untracked.txt").write_text("not code\n")
    assert provenance.revision(tmp_path)["dirty"] is False
    (tmp_path / "sharpkd" / "x.py").write_text("a = 2\n")
    assert provenance.revision(tmp_path) == {"commit": head, "dirty": True}


def test_outside_a_checkout_the_revision_is_the_installed_version(tmp_path):
    assert set(provenance.revision(tmp_path)) == {"version"}


def test_the_command_is_written_as_a_person_retypes_it():
    assert provenance.command_line(["/usr/bin/sharpkd", "bench", "--out", "a b.json"]) == "sharpkd bench --out 'a b.json'"
    script = str(ROOT / "experiments" / "seeds.py")
    assert provenance.command_line([script, "--seeds", "3"]) == "python experiments/seeds.py --seeds 3"


def test_a_bench_json_records_revision_command_and_machine(tmp_path, monkeypatch):
    from sharpkd.app.cli import main

    out = tmp_path / "b.json"
    argv = ["bench", "--arch", "sharp", "--height", "64", "--width", "64", "--runs", "1", "--warmup", "0",
            "--runtime", "torch", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["/somewhere/bin/sharpkd", *argv])
    assert main(argv) == 0
    r = json.loads(out.read_text())
    assert r["command"] == "sharpkd " + " ".join(argv)
    assert r["revision"] == provenance.revision() and r["machine"]["cpu"]
