"""Hostile input and failing machines: bounded archives, outputs that never clobber
inputs, one clear line for every error.  README's "Bad input" table points at these tests."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from sharpkd.data import sources as download

from sharpkd.app import sharpen

from sharpkd import stage
from sharpkd.app.cli import main
from sharpkd.data.sources import ArchiveLimits, collect, extract_archive
from sharpkd.fetch import fetch
from sharpkd.errors import ArchiveError, DownloadError, SharpkdError, one_line, state_dict_mismatch
from sharpkd.files import clean_stale_temps
from sharpkd.images import load_image
from sharpkd.nets.students import FORMAT, build_student, load_student

ROOT = Path(__file__).resolve().parents[1]


def rand(h, w, c=3, seed=0):
    shape = (h, w) if c == 1 else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def png_bytes(seed=0, size=(12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rand(size[1], size[0], seed=seed)).save(buf, format="PNG")
    return buf.getvalue()


def sharpen_cli(weights, *args) -> int:
    return main(["sharpen", *map(str, args), "--weights", str(weights), "-q"])


def err_lines(capsys) -> tuple[list[str], list[str]]:
    cap = capsys.readouterr()
    return cap.out.splitlines(), cap.err.splitlines()


def temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp-" in p.name]


# ------------------------------------------------------------------------------------------
# archives: bounded before anything is written

MIB = 1 << 20


def zip_bomb(path: Path, inflated=3 * MIB, name="bomb.png") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ok.png", png_bytes(1))
        zf.writestr(name, b"\0" * inflated)
    return path


def test_zip_bomb_refused_by_ratio_before_writing(tmp_path):
    arc = zip_bomb(tmp_path / "bomb.zip")
    assert arc.stat().st_size < 20_000  # 3 MiB of zeros in a few KiB
    with pytest.raises(ArchiveError) as ei:
        extract_archive(arc, tmp_path / "out")
    msg = str(ei.value)
    assert "'bomb.png'" in msg and "max_ratio" in msg and "\n" not in msg
    assert not (tmp_path / "out").exists()  # nothing extracted, not even the good member


def test_member_and_total_limits_name_the_member(tmp_path):
    big = bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8))  # incompressible
    arc = tmp_path / "a.zip"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", big)
        zf.writestr("b.png", big)
    with pytest.raises(ArchiveError, match=r"'a.png'.*max_member_mb"):
        extract_archive(arc, tmp_path / "o1", ArchiveLimits(max_member_mb=2000 / MIB))
    with pytest.raises(ArchiveError, match=r"'b.png'.*max_total_mb"):
        extract_archive(arc, tmp_path / "o2", ArchiveLimits(max_total_mb=5000 / MIB))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert extract_archive(arc, tmp_path / "o3", ArchiveLimits(max_total_mb=7000 / MIB))["extracted"] == ["a.png",
                                                                                                        "b.png"]


def test_tar_gz_bomb_refused_at_its_header(tmp_path):
    arc = tmp_path / "bomb.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        info = tarfile.TarInfo("photos/huge.jpg")
        info.size = 4 * MIB
        tf.addfile(info, io.BytesIO(b"\0" * info.size))
        data = png_bytes(2)
        info = tarfile.TarInfo("photos/after.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveError, match=r"'photos/huge.jpg'.*max_ratio"):
        extract_archive(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_streaming_budget_does_not_trust_headers(tmp_path, monkeypatch):
    """With the header check out of the way (a header that lies), the copy itself stops at the
    budget, the partial member is removed and the archive refused."""
    arc = zip_bomb(tmp_path / "bomb.zip")
    monkeypatch.setattr(download._Budget, "declare", lambda self, *a: None)
    read = []
    real = download._copy_member

    def counting(src, out, target, budget):
        try:
            return real(src, out, target, budget)
        finally:
            read.append(out.tell())

    monkeypatch.setattr(download, "_copy_member", counting)
    with pytest.raises(ArchiveError, match=r"'bomb.png'.*max_ratio.*header says"):
        extract_archive(arc, tmp_path / "out")
    assert max(read) <= ArchiveLimits().ratio_bytes(arc.stat().st_size)  # never wrote past the budget
    assert not (tmp_path / "out").exists()  # ok.png, extracted first, removed again


def test_collect_url_bomb_refused_leaves_nothing(tmp_path):
    arc = zip_bomb(tmp_path / "images.zip")
    sha = hashlib.sha256(arc.read_bytes()).hexdigest()
    out = tmp_path / "data" / "photos"
    with pytest.raises(ArchiveError, match="bomb.png"):
        collect("url", out, url=str(arc), sha256=sha, cache_dir=tmp_path / "cache")
    assert not out.exists() and list((tmp_path / "data").iterdir()) == []  # no extraction folder left


def test_collect_url_moves_extracted_images_once(tmp_path, monkeypatch):
    arc = tmp_path / "images.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("a/x.png", png_bytes(3))
        zf.writestr("notes.txt", b"hello")
    copies = []
    monkeypatch.setattr(download.shutil, "copyfile", lambda *a, **k: copies.append(a))
    prov = collect("url", tmp_path / "photos", url=str(arc), sha256=hashlib.sha256(arc.read_bytes()).hexdigest(),
                   cache_dir=tmp_path / "cache", limits=ArchiveLimits(max_member_mb=1))
    assert prov["count"] == 1 and copies == []  # extracted beside the output, then renamed into it
    assert (tmp_path / "photos" / "a__x.png").read_bytes() == png_bytes(3)


def test_max_download_size_local_file(tmp_path):
    src = tmp_path / "big.zip"
    src.write_bytes(b"x" * 5000)
    with pytest.raises(DownloadError) as ei:
        fetch(str(src), hashlib.sha256(src.read_bytes()).hexdigest(), cache_dir=tmp_path / "c", max_bytes=4000)
    assert "max_download_mb" in str(ei.value) and "\n" not in str(ei.value)
    assert list((tmp_path / "c").iterdir()) == []


@pytest.mark.parametrize("bad", [0, -1, "big", True])
def test_archive_limits_params_validated(bad):
    with pytest.raises(SharpkdError, match="download.max_ratio"):
        ArchiveLimits.from_params({"max_ratio": bad})
    assert ArchiveLimits.from_params({"max_ratio": None, "url": "x"}) == ArchiveLimits()


def test_params_yaml_limits_reach_the_stage():
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())["download"]
    limits = ArchiveLimits.from_params(params)
    for key in ("max_member_mb", "max_total_mb", "max_ratio", "max_download_mb"):
        assert key in params and getattr(limits, key) == params[key]
    assert "ArchiveLimits.from_params(p)" in (ROOT / "stages" / "download.py").read_text()


# ------------------------------------------------------------------------------------------
# one-line messages


def test_state_dict_mismatch_is_one_line(tmp_path, capsys):
    from safetensors.torch import save_file

    other = build_student("sharp", channels=8)
    other.reparameterize()
    state = {k: v.contiguous() for k, v in other.state_dict().items()}
    state["extra.weight"] = torch.zeros(2)
    first = sorted(state)[0]
    del state[first]
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path), metadata={"format": FORMAT, "arch": "sharp", "config": "{}"})
    with pytest.raises(SharpkdError) as ei:
        load_student(path)
    msg = str(ei.value)
    assert "\n" not in msg and "1 missing, 1 unexpected keys" in msg and "wrong shape" in msg
    assert f"missing {first!r}" in msg and "'extra.weight'" in msg
    img = tmp_path / "x.png"
    Image.fromarray(rand(8, 8)).save(img)
    assert main(["sharpen", str(img), "-o", str(tmp_path / "o"), "--weights", str(path), "-q"]) == 1
    out, err = err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("error: ") and "bad.safetensors" in err[0]


def test_teacher_state_dict_mismatch_is_one_line():
    from sharpkd.training.teacher import VDSRRGB, _vdsr_from_state_dict

    sd = VDSRRGB(depth=1, width=4).state_dict()
    sd["junk"] = torch.zeros(1)
    sd["output.weight"] = torch.zeros(3, 5, 3, 3)
    with pytest.raises(SharpkdError) as ei:
        _vdsr_from_state_dict(sd, "v.safetensors")
    msg = str(ei.value)
    assert "\n" not in msg and "1 unexpected keys" in msg and "'output.weight' is [3, 5, 3, 3] in the file" in msg


def test_state_dict_mismatch_summary_counts():
    exp = {"a": torch.zeros(1), "b": torch.zeros(2), "c": torch.zeros(3)}
    got = {"b": torch.zeros(2), "c": torch.zeros(4), "x": torch.zeros(1), "y": torch.zeros(1), "z": torch.zeros(1)}
    msg = state_dict_mismatch(exp, got)
    assert msg.startswith("1 missing, 3 unexpected keys, 1 with the wrong shape, e.g. missing 'a'")
    assert "'x', 'y'" in msg and "'z'" not in msg  # two examples, not a dump


def test_one_line_joins_lines():
    assert one_line("a\n  b\r\n\tc  ") == "a b c"


def test_skip_message_names_the_file_once(tmp_path, weights, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    assert sharpen_cli(weights, bad, "-o", tmp_path / "o") == 1
    out, err = err_lines(capsys)
    assert err == [f"skipped {bad}: cannot read image: not a recognised image format (corrupt or not an image)"]
    assert out == [f"sharpened 0 file(s) into {tmp_path / 'o'}; 1 failed"]


@pytest.mark.parametrize("option, value, needle", [("--tile", "0", "--tile must be at least 64"),
                                                   ("--tile", "31", "--tile must be at least 64"),
                                                   ("--strength", "nan", "--strength must be between"),
                                                   ("--format", "gif", "--format 'gif'")])
def test_bad_option_values_checked_once_up_front(tmp_path, weights, capsys, option, value, needle):
    files = []
    for i in range(3):
        files.append(tmp_path / f"x{i}.png")
        Image.fromarray(rand(8, 8, seed=i)).save(files[-1])
    assert sharpen_cli(weights, *files, "-o", tmp_path / "o", option, value) == 2
    out, err = err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0] and out == []
    assert not (tmp_path / "o").exists()  # refused before any folder or file was made


def test_argparse_errors_of_sharpen_are_one_line(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["sharpen", "x.png", "--tile", "abc", "-o", "o"])
    assert ei.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: argument --tile: invalid int value: 'abc' (see sharpkd sharpen --help)"]


def test_stage_main_one_line_for_oserror_and_sigterm(capsys):
    def disk_full():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/x.safetensors")

    with pytest.raises(SystemExit) as ei:
        stage.main(disk_full)
    assert ei.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: /data/x.safetensors: No space left on device (free some space or write to another disk)"]

    def terminated():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as ei:
        stage.main(terminated)
    assert ei.value.code == 130 and signal.getsignal(signal.SIGTERM) == before


# ------------------------------------------------------------------------------------------
# the output folder


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "same"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(rand(12, 14, c=1, seed=1), "L").save(folder / "gray.png")
    Image.fromarray(rand(10, 9, seed=2)).save(folder / "sub" / "c.jpg")
    return folder


def test_output_is_an_existing_file(tmp_path, photos, weights, capsys):
    (tmp_path / "afile").write_text("mine")
    assert sharpen_cli(weights, photos, "-o", tmp_path / "afile") == 2
    assert sharpen_cli(weights, photos, "-o", tmp_path / "afile" / "below") == 2
    out, err = err_lines(capsys)
    assert len(err) == 2 and all(e.startswith("error: -o ") for e in err) and "not a folder" in err[0]
    assert (tmp_path / "afile").read_text() == "mine"


def test_output_not_writable(tmp_path, photos, weights, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anyway: let the probe fail as it does for other users
            def denied(folder):
                raise PermissionError(errno.EACCES, "Permission denied", str(folder))

            monkeypatch.setattr(sharpen, "_probe_writable", denied)
        assert sharpen_cli(weights, photos, "-o", ro) == 2
    finally:
        ro.chmod(0o755)
    out, err = err_lines(capsys)
    assert len(err) == 1 and err[0].startswith(f"error: -o {ro}: Permission denied") and out == []
    assert list(ro.iterdir()) == []


def test_output_equal_to_or_inside_input_is_refused(tmp_path, photos, weights, capsys):
    before = sorted(p.relative_to(photos) for p in photos.rglob("*"))
    for _ in range(2):  # run twice: no same/same/same
        assert sharpen_cli(weights, photos, "-o", photos) == 2
    assert sharpen_cli(weights, photos, "-o", photos / "sharpened") == 2
    out, err = err_lines(capsys)
    assert len(err) == 3 and "is the input folder" in err[0] and "inside the input folder" in err[2]
    assert sorted(p.relative_to(photos) for p in photos.rglob("*")) == before


def test_input_file_is_never_overwritten(tmp_path, photos, weights, capsys):
    original = (photos / "gray.png").read_bytes()
    assert sharpen_cli(weights, photos / "gray.png", "-o", photos) == 1
    assert sharpen_cli(weights, photos / "gray.png", "-o", photos, "--overwrite") == 1
    out, err = err_lines(capsys)
    assert err[0] == (f"skipped {photos / 'gray.png'}: its output {photos / 'gray.png'} would replace an input "
                      "file; choose another output folder (-o)")
    assert (photos / "gray.png").read_bytes() == original


def test_hard_link_to_an_input_is_not_overwritten(tmp_path, weights):
    src = tmp_path / "a.png"
    Image.fromarray(rand(8, 8)).save(src)
    (tmp_path / "o").mkdir()
    os.link(src, tmp_path / "o" / "b.png")
    (tmp_path / "b.jpg").write_bytes(src.read_bytes())  # decodes (Pillow sniffs), output o/b.png
    jobs, failed = sharpen.plan([src, tmp_path / "b.jpg"], tmp_path / "o", "png")
    assert [j.src.name for j in jobs] == ["a.png"] and "replace an input" in failed[0][1]


def test_output_folder_is_not_walked_as_input(tmp_path, photos):
    out = photos / "out"
    (out / "same").mkdir(parents=True)
    Image.fromarray(rand(8, 8)).save(out / "same" / "gray.png")
    jobs, failed = sharpen.plan([photos], out)
    assert sorted(j.src.relative_to(photos).as_posix() for j in jobs) == ["gray.png", "sub/c.jpg"]


def test_existing_outputs_kept_unless_overwrite(tmp_path, photos, weights, capsys):
    out = tmp_path / "o"
    assert sharpen_cli(weights, photos, "-o", out) == 0
    first = (out / "same" / "gray.png").read_bytes()
    (out / "same" / "gray.png").write_bytes(b"edited by the user")
    assert sharpen_cli(weights, photos, "-o", out) == 0
    assert (out / "same" / "gray.png").read_bytes() == b"edited by the user"
    assert sharpen_cli(weights, photos, "-o", out, "--overwrite") == 0
    assert (out / "same" / "gray.png").read_bytes() == first
    lines, _ = err_lines(capsys)
    assert lines[1] == f"sharpened 0 file(s) into {out}; 0 failed; kept 2 existing output(s) (--overwrite replaces them)"
    assert lines[2] == f"sharpened 2 file(s) into {out}; 0 failed"


def test_folder_where_an_output_file_goes(tmp_path, photos, weights, capsys):
    out = tmp_path / "o"
    (out / "same" / "gray.png").mkdir(parents=True)
    (out / "same" / "sub").parent.mkdir(exist_ok=True)
    (out / "same" / "sub").write_text("a file where a folder goes")
    assert sharpen_cli(weights, photos, "-o", out, "--overwrite") == 1
    lines, err = err_lines(capsys)
    assert len(err) == 2 and all(e.startswith("skipped ") for e in err)
    assert "is a folder" in err[0] and "is a file" in err[1]
    assert lines == [f"sharpened 0 file(s) into {out}; 2 failed"]


@pytest.mark.parametrize("code, text", [(errno.ENOSPC, "No space left on device"),
                                        (errno.EACCES, "Permission denied")])
def test_write_failures_are_one_line_and_later_files_still_run(tmp_path, weights, capsys, monkeypatch, code, text):
    for name in ("a", "b", "c"):
        Image.fromarray(rand(9, 9)).save(tmp_path / f"{name}.png")
    real_save = Image.Image.save
    calls = []

    def failing_save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 1:
            Path(fp).write_bytes(b"\x89PNG half")  # something written before the disk filled up
            raise OSError(code, text)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    out = tmp_path / "o"
    assert sharpen_cli(weights, tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png", "-o", out) == 1
    lines, err = err_lines(capsys)
    assert len(err) == 1 and err[0].startswith(f"skipped {tmp_path / 'a.png'}: cannot write {out / 'a.png'}: {text} (")
    assert lines == [f"sharpened 2 file(s) into {out}; 1 failed"]
    assert sorted(p.name for p in out.iterdir()) == ["b.png", "c.png"]  # no a.png, no temp file


def test_stale_temps_cleaned_on_start(tmp_path, photos, weights, capsys):
    out = tmp_path / "o"
    (out / "same").mkdir(parents=True)
    stale = [out / ".x.png.tmp-abcd1234.png", out / "same" / ".clip.mp4.tmp-zz_9yy8x.mp4"]
    for p in stale:
        p.write_bytes(b"left by SIGKILL")
    mine = [out / ".hidden", out / ".notes.tmp-1.txt", out / "same" / ".y.png.tmp-abcd1234.jpg"]
    for p in mine:
        p.write_bytes(b"the user's")
    assert sharpen_cli(weights, photos, "-o", out) == 0
    out_lines, err = err_lines(capsys)
    assert err == [f"removed 2 temporary file(s) left in {out} by an interrupted run"]
    assert not any(p.exists() for p in stale) and all(p.exists() for p in mine)
    assert clean_stale_temps(tmp_path / "missing") == []


def test_sigterm_is_handled_like_ctrl_c(tmp_path, weights, capsys, monkeypatch):
    for name in ("a", "b"):
        Image.fromarray(rand(9, 9)).save(tmp_path / f"{name}.png")
    real_save = Image.Image.save

    def killed_while_writing(self, fp, *args, **kwargs):
        real_save(self, fp, *args, **kwargs)  # the temp file is complete, not yet renamed
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass

    monkeypatch.setattr(Image.Image, "save", killed_while_writing)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "o"
    assert sharpen_cli(weights, tmp_path / "a.png", tmp_path / "b.png", "-o", out) == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted"]
    assert list(out.iterdir()) == []  # no a.png, no temp file
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_swallowed_by_a_library_still_stops(tmp_path, weights, capsys, monkeypatch):
    """numpy and others may swallow the KeyboardInterrupt (the file then fails to decode): the
    recorded signal still stops the run after that file, with exit 130."""
    from sharpkd.errors import ImageDecodeError

    for name in ("a", "b"):
        Image.fromarray(rand(9, 9)).save(tmp_path / f"{name}.png")
    seen = []

    def swallowing_load(path):
        seen.append(path)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
        except KeyboardInterrupt:
            pass
        raise ImageDecodeError(f"{path}: cannot read image: garbled")

    monkeypatch.setattr(sharpen, "load_image", swallowing_load)
    assert sharpen_cli(weights, tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "o") == 130
    assert len(seen) == 1 and capsys.readouterr().err.splitlines() == ["interrupted"]


def test_an_error_a_library_makes_of_sigterm_is_still_the_interrupt():
    """safetensors turns the KeyboardInterrupt of a SIGTERM during a model load into ValueError:
    out of sigterm_as_interrupt it comes as the interrupt (exit 130), other errors as themselves."""
    from sharpkd.process import interrupt_requested, sigterm_as_interrupt

    with pytest.raises(KeyboardInterrupt) as info:
        with sigterm_as_interrupt():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises here
            except KeyboardInterrupt:
                raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'")
    assert isinstance(info.value.__cause__, ValueError) and not interrupt_requested()
    with pytest.raises(ValueError):
        with sigterm_as_interrupt():
            raise ValueError("not a signal")


def test_sigterm_subprocess_exit_130(tmp_path, weights):
    """A real SIGTERM to a running ``sharpkd sharpen``: exit 130, no temporary files."""
    big = tmp_path / "big.png"
    Image.fromarray(rand(1500, 1500)).save(big)
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "sharpkd.app.cli", "sharpen", str(big), "-o", str(out),
                             "--weights", str(weights), "-q", "--tile", "64"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    while not out.exists() and proc.poll() is None:  # started: the output folder was checked
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:  # finished before the signal arrived (a very fast machine)
        assert (out / "big.png").exists()
    else:
        assert proc.returncode == 130 and err.decode().splitlines()[-1] == "interrupted", err.decode()
    assert temps(out) == []


# ------------------------------------------------------------------------------------------
# content decides: videos by container, images by Pillow


def test_jpeg_named_mp4_is_skipped(tmp_path, weights, capsys):
    fake = tmp_path / "clip.mp4"
    Image.fromarray(rand(16, 16)).save(fake, format="JPEG")
    junk = tmp_path / "junk.mkv"
    junk.write_bytes(os.urandom(64))
    (tmp_path / "empty.avi").write_bytes(b"")
    assert sharpen_cli(weights, fake, junk, tmp_path / "empty.avi", "-o", tmp_path / "o") == 1
    _, err = err_lines(capsys)
    assert err == [f"skipped {fake}: the content is a JPEG image, not a video; rename it to .jpg to sharpen it as an image",
                   f"skipped {junk}: not a video: the file has no MP4/MOV, AVI or MKV/WebM container header",
                   f"skipped {tmp_path / 'empty.avi'}: file is empty (0 bytes)"]
    assert not (tmp_path / "o" / "clip.mp4").exists()


@pytest.mark.parametrize("head", [b"\x00\x00\x00\x18ftypisom", b"\x00\x00\x00\x08wide", b"RIFF\x10\x00\x00\x00AVI LIST",
                                  b"\x1a\x45\xdf\xa3\x93\x42\x82\x88"])
def test_video_containers_recognised_by_content(tmp_path, head):
    path = tmp_path / "v.mov"
    path.write_bytes(head + b"\0" * 16)
    assert sharpen.video_content_problem(path) is None


def test_png_with_a_jpeg_name_is_still_an_image(tmp_path, weights):
    img = rand(11, 13)
    Image.fromarray(img).save(tmp_path / "really_png.jpg", format="PNG")
    assert sharpen_cli(weights, tmp_path / "really_png.jpg", "-o", tmp_path / "o") == 0
    assert load_image(tmp_path / "o" / "really_png.jpg").rgb.shape == img.shape  # its name keeps its format


# ------------------------------------------------------------------------------------------
# grey in, grey out


@pytest.mark.parametrize("kind", ["L", "LA", "I;16", "L-jpg"])
def test_grey_in_grey_out(tmp_path, weights, kind):
    g = rand(20, 22, c=1, seed=3)
    src = tmp_path / "g.png"
    fmt = "png"
    if kind == "L":
        Image.fromarray(g, "L").save(src)
    elif kind == "LA":
        Image.fromarray(np.dstack([g, rand(20, 22, c=1, seed=4)]), "LA").save(src)
    elif kind == "I;16":
        cv2.imwrite(str(src), g.astype(np.uint16) * 257)  # 16-bit grey PNG
    else:
        src = tmp_path / "g.jpg"
        Image.fromarray(g, "L").save(src, quality=95)
        fmt = "jpg"
    assert sharpen_cli(weights, src, "-o", tmp_path / "o", "--format", fmt) == 0
    dst = tmp_path / "o" / f"g.{fmt}"
    with Image.open(dst) as im:
        mode = im.mode
    assert mode == {"L": "L", "LA": "LA", "I;16": "I;16", "L-jpg": "L"}[kind]
    out = load_image(dst)
    assert out.bit_depth == (16 if kind == "I;16" else 8) and out.rgb.shape[:2] == g.shape
    if kind == "LA":
        assert np.array_equal(out.alpha, rand(20, 22, c=1, seed=4))


def test_colour_stays_colour(tmp_path, weights):
    Image.fromarray(rand(10, 12)).save(tmp_path / "c.png")
    assert sharpen_cli(weights, tmp_path / "c.png", "-o", tmp_path / "o") == 0
    with Image.open(tmp_path / "o" / "c.png") as im:
        assert im.mode == "RGB"


# ------------------------------------------------------------------------------------------
# experiments/peak_memory.py


def test_peak_memory_tool_reports_json(tmp_path, weights):
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "peak_memory.py"), "--sizes", "tiny=64x48",
                           "--weights", str(weights), "--out", str(tmp_path / "mem.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    row = result["runs"]["tiny"]
    assert row["width"] == 64 and row["height"] == 48 and row["exit"] == 0 and row["peak_rss_mib"] > 10
    assert json.loads((tmp_path / "mem.json").read_text()) == result


def test_sigterm_during_model_load_turned_into_another_error_is_still_an_interrupt(tmp_path, weights, capsys,
                                                                                  monkeypatch):
    """safetensors turns the KeyboardInterrupt of a SIGTERM during the load into a ValueError: the
    recorded signal still gives "interrupted" and exit 130, not a traceback (seen in CI)."""
    import sharpkd.app.sharpen as sharpen_mod

    Image.fromarray(rand(9, 9)).save(tmp_path / "a.png")

    def load_hit_by_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            for _ in range(1000):
                pass
        except KeyboardInterrupt:
            raise ValueError("could not determine the shape of object type 'torch.storage.UntypedStorage'") from None
        raise AssertionError("the SIGTERM did not arrive")

    monkeypatch.setattr(sharpen_mod, "load_student", load_hit_by_sigterm)
    assert sharpen_cli(weights, tmp_path / "a.png", "-o", tmp_path / "o") == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted"]


# ------------------------------------------------------------------------------------------
# concurrent runs into one folder: a run's start-up cleanup never removes another run's work


_HELD_RUN = """
import sys, time
from pathlib import Path
import sharpkd.app.sharpen as s
real = s.Sharpener.__call__
go = Path(sys.argv[1])
def held(self, rgb):
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:  # hold the run half-way until told
        time.sleep(0.02)
    return real(self, rgb)
s.Sharpener.__call__ = held
from sharpkd.app.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_two_concurrent_runs_into_one_folder_both_complete(tmp_path, weights):
    from test_video import make_clip

    clip = tmp_path / "long.mp4"
    make_clip(clip, n=6)
    photo = tmp_path / "photo.png"
    Image.fromarray(rand(10, 12)).save(photo)
    out, go = tmp_path / "out", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", _HELD_RUN, str(go), "sharpen", str(clip), "-o", str(out),
                              "--weights", str(weights), "-q"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not temps(out) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert temps(out), "the first run never started writing its video"
        second = subprocess.run([sys.executable, "-m", "sharpkd.app.cli", "sharpen", str(photo), "-o", str(out),
                                 "--weights", str(weights), "-q"], capture_output=True, text=True, cwd=ROOT,
                                timeout=120)
        assert second.returncode == 0 and "removed" not in second.stderr, second.stderr
        assert temps(out), "the second run removed the first run's temporary file"
    finally:
        go.write_text("go")
        o, e = first.communicate(timeout=120)
    assert first.returncode == 0, e
    assert (out / "long.mp4").is_file() and (out / "photo.png").is_file() and temps(out) == []


def test_cleanup_leaves_a_temp_that_is_being_written(tmp_path):
    from sharpkd.files import atomic_path

    with atomic_path(tmp_path / "a.png") as tmp:
        tmp.write_bytes(b"in progress")
        assert clean_stale_temps(tmp_path) == [] and tmp.exists()
    assert (tmp_path / "a.png").read_bytes() == b"in progress"
    (tmp_path / ".b.png.tmp-abcd1234.png").write_bytes(b"left by SIGKILL")  # no owner holds it
    assert clean_stale_temps(tmp_path) == [tmp_path / ".b.png.tmp-abcd1234.png"]


# ------------------------------------------------------------------------------------------
# outputs replace only regular files


def _special_outputs(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    link = tmp_path / "stdout.json"
    link.symlink_to("/proc/self/fd/1")
    target = tmp_path / "target.json"
    target.write_text("the user's")
    link2 = tmp_path / "link.json"
    link2.symlink_to(target)
    paths = {"fifo": fifo, "stdout-link": link, "file-link": link2}
    try:  # a null device of its own: a test must never risk the machine's /dev/null
        os.mknod(tmp_path / "null.json", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        paths["device"] = tmp_path / "null.json"
    except PermissionError:
        pass
    return paths


def _special_output(tmp_path: Path, kind: str) -> Path:
    paths = _special_outputs(tmp_path)
    if kind not in paths:
        pytest.skip("making a device file needs root")
    return paths[kind]


@pytest.mark.parametrize("kind", ["fifo", "stdout-link", "file-link", "device"])
def test_atomic_path_refuses_what_is_not_a_regular_file(tmp_path, kind):
    from sharpkd.files import atomic_path, write_json

    path = _special_output(tmp_path, kind)
    with pytest.raises(SharpkdError, match="outputs only replace regular files"):
        write_json(path, {"a": 1})
    assert path.is_symlink() or not path.is_file()
    assert (tmp_path / "target.json").read_text() == "the user's"
    assert temps(tmp_path) == []
    with pytest.raises(SharpkdError):
        with atomic_path(path):
            raise AssertionError("the block must not run")


@pytest.mark.parametrize("kind", ["fifo", "stdout-link", "device"])
def test_bench_and_export_outputs_refuse_special_files(tmp_path, weights, capsys, kind):
    path = _special_output(tmp_path, kind)
    for argv in (["bench", "--weights", str(weights), "--height", "8", "--width", "8", "--runs", "1",
                  "--warmup", "0", "--out", str(path)],
                 ["export-onnx", "--weights", str(weights), "-o", str(path)]):
        assert main(argv) == 2
        out, err = err_lines(capsys)
        assert len(err) == 1 and err[0].startswith("error: ") and "regular files" in err[0] and out == []
    assert os.path.lexists(path) and (path.is_symlink() or not path.is_file())


def test_sharpen_outputs_that_are_special_files_are_skipped(tmp_path, weights, capsys):
    out = tmp_path / "o"
    out.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(rand(9, 9)).save(tmp_path / f"{name}.png")
    os.mkfifo(out / "a.png")
    (out / "b.png").symlink_to("/proc/self/fd/1")
    assert sharpen_cli(weights, *(tmp_path / f"{n}.png" for n in "abc"), "-o", out, "--overwrite") == 1
    lines, err = err_lines(capsys)
    assert len(err) == 2 and all(e.startswith("skipped ") and "regular files" in e for e in err)
    assert lines == [f"sharpened 1 file(s) into {out}; 2 failed"]
    assert (out / "b.png").is_symlink() and not (out / "a.png").is_file() and (out / "c.png").is_file()


def test_stage_folder_output_that_is_a_link_is_refused(tmp_path):
    from sharpkd.files import atomic_dir

    real = tmp_path / "real"
    real.mkdir()
    (real / "keep").write_text("x")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(SharpkdError, match="symbolic link"):
        with atomic_dir(tmp_path / "link"):
            raise AssertionError("the block must not run")
    assert (real / "keep").read_text() == "x" and (tmp_path / "link").is_symlink()


# ------------------------------------------------------------------------------------------
# a failure of one input fails that input only


def test_webp_size_limit_fails_that_file_only(tmp_path, weights, capsys):
    wide, small = tmp_path / "wide.png", tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 20000, 3), np.uint8)).save(wide)
    Image.fromarray(rand(9, 9)).save(small)
    out = tmp_path / "o"
    assert sharpen_cli(weights, wide, small, "-o", out, "--format", "webp", "--tile", "64") == 1
    lines, err = err_lines(capsys)
    assert len(err) == 1 and err[0].startswith(f"skipped {wide}: ") and "16383" in err[0] and "--format" in err[0]
    assert lines == [f"sharpened 1 file(s) into {out}; 1 failed"]
    assert sorted(p.name for p in out.iterdir()) == ["a.webp"]


def test_any_library_error_fails_that_file_only(tmp_path, weights, capsys, monkeypatch):
    for name in ("a", "b"):
        Image.fromarray(rand(9, 9)).save(tmp_path / f"{name}.png")
    real = sharpen.load_image

    def flaky(path):
        if Path(path).name == "a.png":
            raise RuntimeError("something deep inside a library\nwith a second line")
        return real(path)

    monkeypatch.setattr(sharpen, "load_image", flaky)
    assert sharpen_cli(weights, tmp_path / "a.png", tmp_path / "b.png", "-o", tmp_path / "o") == 1
    lines, err = err_lines(capsys)
    assert err == [f"skipped {tmp_path / 'a.png'}: failed (RuntimeError: something deep inside a library with a "
                   "second line)"]
    assert lines == [f"sharpened 1 file(s) into {tmp_path / 'o'}; 1 failed"]


# ------------------------------------------------------------------------------------------
# every numeric option at its edges: a run or one error line, never a traceback

HUGE = str(10**12)
_BENCH = ["bench", "--height", "8", "--width", "8", "--runs", "1", "--warmup", "0"]
_EDGES = {
    "sharpen": {"--strength": ["0", "-1", "2", "2.01", "nan", "inf", "-inf", HUGE],
                "--tile": ["0", "-1", "64", HUGE],
                "--crf": ["0", "-1", "51", "52", HUGE],
                "--preset": ["0", "-1", HUGE, "ultrafast"],
                "--format": ["", ".", "webp", "../x"],
                "--codec": ["", "libaom-av1", "x"],
                "--max-frame-pixels": ["-1", "1", HUGE]},
    "stream": {"--size": ["0x0", "-1x-1", "1x1x1", f"{HUGE}x{HUGE}", "x"],
               "--strength": ["-1", "nan", HUGE], "--tile": ["0", "-1"], "--pix-fmt": ["", "gray"],
               "--max-frame-pixels": ["-1", "1", HUGE]},
    "bench": {"--height": ["0", "-1", "1", HUGE], "--width": ["0", "-1", HUGE], "--runs": ["0", "-1", HUGE],
              "--warmup": ["-1", "0", HUGE], "--threads": ["-1", "0", "1", HUGE], "--tile": ["0", "-1", HUGE],
              "--degrade": ["0", "-1", "1", "1.5", "nan", HUGE],
              "--config": ["[]", '{"channels": 30000}', '{"channels": -8}', '{"blocks": 1e9}', '{"channels": "x"}',
                           '{"unshuffle": 0}', '{"int8": 7}', '{"int8": {"first_bits": 0}}', "nan"]},
}


def _edge_cases():
    for command, options in _EDGES.items():
        for option, values in options.items():
            for value in values:
                yield pytest.param(command, option, value, id=f"{command}{option}={value[:20]}")


@pytest.mark.parametrize("command, option, value", list(_edge_cases()))
def test_every_option_at_its_edges(tmp_path, weights, capsys, command, option, value):
    Image.fromarray(rand(8, 8)).save(tmp_path / "a.png")
    if command == "sharpen":
        argv = ["sharpen", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--weights", str(weights), "-q"]
    elif command == "stream":
        argv = ["stream", "--size", "8x8", "--weights", str(weights), "-q"]
    elif option == "--config":
        argv = [*_BENCH, "--arch", "sharp"]
    else:
        argv = [*_BENCH, "--weights", str(weights)]
    try:
        rc = main([*argv, f"{option}={value}"])
    except SystemExit as exc:  # argparse's own refusal
        rc = exc.code
    out, err = err_lines(capsys)
    text = "\n".join(err)
    assert "Traceback" not in text and "\x1b[" not in text and ".tmp-" not in text
    if rc != 0:
        errors = [e for e in err if e.startswith("error: ") or e.startswith("skipped ")]
        assert len(errors) == 1 and len(err) <= 2, err  # the error, and at most the summary's count
        assert option in errors[0] or errors[0].startswith("skipped") or option == "--config", errors[0]
    else:
        assert not any(e.startswith("error") for e in err)


@pytest.mark.parametrize("config, needle", [("[1, 2]", "must be a JSON object"),
                                            ('{"channels": 30000}', "channels must be an integer from 8 to 512"),
                                            ('{"blocks": 100000}', "blocks must be an integer from 0 to 64"),
                                            ('{"channels": "x"}', "channels must be an integer")])
def test_hostile_weights_config_is_one_line(tmp_path, capsys, config, needle):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"format": FORMAT, "arch": "sharp", "config": config})
    Image.fromarray(rand(8, 8)).save(tmp_path / "a.png")
    t = time.perf_counter()
    assert main(["sharpen", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--weights", str(path), "-q"]) == 1
    assert time.perf_counter() - t < 10  # refused before allocating anything
    out, err = err_lines(capsys)
    assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and needle in err[0], err


def test_int8_weights_with_a_zero_activation_range_are_refused(tmp_path, capsys):
    from sharpkd.nets.students import save_student
    from sharpkd.nets.int8 import to_int8

    model = to_int8(build_student("sharp", channels=8), [rand(8, 8)])
    model.act_max[1] = 0.0
    path = tmp_path / "int8.safetensors"
    save_student(model, path)
    Image.fromarray(rand(8, 8)).save(tmp_path / "a.png")
    assert main(["sharpen", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--weights", str(path), "-q"]) == 1
    out, err = err_lines(capsys)
    assert len(err) == 1 and err[0].startswith(f"error: {path}: int8 activation ranges") and "Traceback" not in err[0]


@pytest.mark.parametrize("closed", ["<&-", ">&-"])
def test_stream_with_stdin_or_stdout_closed(tmp_path, weights, closed):
    cmd = f"head -c 192 /dev/zero | {sys.executable} -m sharpkd.app.cli stream --size 8x8 -q --weights {weights} {closed}"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=120)
    which = "stdin" if closed == "<&-" else "stdout"
    assert proc.returncode == 2 and proc.stderr.splitlines() == [proc.stderr.strip()], proc.stderr
    assert proc.stderr.startswith(f"error: {which} is closed")


# ------------------------------------------------------------------------------------------
# params.yaml checked at the edge: one schema, every stage


def _params_with(tmp_path: Path, dotted: str, value) -> Path:
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    node, keys = params, dotted.split(".")
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize("dotted, value, needle", [
    ("degrade.scale", 0, "degrade.scale must be a number above 0 and at most 1"),
    ("degrade.scale", 1.5, "degrade.scale must be"),
    ("degrade.scale", "abc", "degrade.scale must be"),
    ("degrade.scale", True, "degrade.scale must be"),
    ("slice.rows", 0, "slice.rows must be an integer from 1"),
    ("slice.val_fraction", 1, "slice.val_fraction"),
    ("train.loss.l2_gt", -1, "train.loss.l2_gt"),
    ("train.epochs", "many", "train.epochs"),
    ("teacher.adapt.lr", 0, "teacher.adapt.lr"),
    ("degrade.sclae", 0.6, "unknown key(s) 'sclae' in section degrade"),
    ("train.loss.l3", 1, "unknown key(s) 'l3' in section train.loss"),
    ("teacher.restormer.depth", 3, "unknown key(s) 'depth' in section teacher.restormer"),
    ("profile", "../x", "profile must be a plain name"),
    ("profile", "/abs", "profile must be a plain name"),
    ("profile", 3, "profile must be a plain name"),
    ("resize", [1, 2], "resize must be a mapping"),
])
def test_params_checked_by_load_params(tmp_path, capsys, dotted, value, needle):
    path = _params_with(tmp_path, dotted, value)
    with pytest.raises(SystemExit) as ei:
        stage.main(lambda: stage.load_params("download", path))  # any stage: the whole file is checked
    assert ei.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: ") and needle in err[0], err


def test_a_stage_script_refuses_bad_params(tmp_path):
    _params_with(tmp_path, "degrade.scale", 0)
    proc = subprocess.run([sys.executable, "-m", "stages.degrade", "--slices", "s", "--out", "o", "--links-out", "l",
                           "--provenance", "p.json"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1 and proc.stderr.splitlines() == [
        "error: params.yaml: degrade.scale must be a number above 0 and at most 1, got 0"], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


RUN_OVERRIDES = [  # ready-made runs, as dvc exp run -S sets them (the profiles/ files are checked too)
    {"profile": "photos", "download.source": "dir", "resize.mode": "none", "slice.rows": 5, "slice.cols": 6,
     "slice.crop_height": 128, "slice.crop_width": 232, "slice.val_fraction": 0.15, "slice.report_size": [464, 256],
     "teacher.kind": "vdsr", "teacher.tile": 2048, "teacher.adapt.steps": 4000, "teacher.adapt.lr": 0.0001,
     "train.epochs": 10, "train.steps_per_epoch": 0, "train.int8.steps": 8000,
     "train.arch_config": {"channels": 32, "blocks": 2}},
    {"profile": "photos_464", "resize.mode": "fixed", "slice.report_size": [], "train.loss.l1_gt": 1,
     "train.loss.ssim": 1, "train.loss.vgg_feature": 0.1, "train.loss.deep_feature": 0.1, "train.arch": "report",
     "degrade.codec": "h264", "degrade.h264_crf": 23, "degrade.train_links": ["none", "h264:23", "h264:28", "h264v:23", "h264v:1000k"],
     "teacher.kind": "checkpoint", "teacher.checkpoint": "x.pth", "teacher.sha256": "0" * 64},
]


def _profile_overrides() -> list[dict]:
    import yaml

    from sharpkd.profiles import load_profile, overrides

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    out = []
    for f in sorted((ROOT / "profiles").glob("*.yaml")):
        sets = overrides(load_profile(f.stem, ROOT), params)
        out.append({k.removeprefix("++"): yaml.safe_load(v) for k, v in (s.split("=", 1) for s in sets)})
    return out


@pytest.mark.parametrize("overrides", RUN_OVERRIDES + _profile_overrides())
def test_the_repository_params_profiles_and_overrides_pass(tmp_path, overrides):
    import yaml

    for section in stage.PARAMS_SCHEMA:
        stage.load_params(section, ROOT / "params.yaml")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in overrides.items():
        node, keys = params, dotted.split(".")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for section in stage.PARAMS_SCHEMA:
        stage.load_params(section, tmp_path / "params.yaml")


# ------------------------------------------------------------------------------------------
# animated and multi-page inputs: the first frame, and one warning that says so


@pytest.mark.parametrize("name", ["anim.webp", "anim.png", "pages.tif"])  # GIF is no input extension
def test_animated_or_multi_page_input_says_only_the_first_was_sharpened(tmp_path, weights, name):
    frames = [Image.fromarray(rand(10, 12, seed=i)) for i in range(3)]
    src = tmp_path / name
    frames[0].save(src, save_all=True, append_images=frames[1:])
    proc = subprocess.run([sys.executable, "-m", "sharpkd.app.cli", "sharpen", str(src), "-o", str(tmp_path / "o"),
                           "--weights", str(weights), "-q"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    what = "pages" if name.endswith(".tif") else "frames"
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "o" / name  # an image keeps its format
    assert proc.stderr.splitlines() == [f"warning: {src}: holds 3 {what}; only the first was sharpened (into the "
                                        f"still image {out.name})"]
    assert load_image(out).rgb.shape == (10, 12, 3) and load_image(out).frames == 1
    assert load_image(src).frames == 3


def test_a_write_failure_names_the_output_not_its_temporary_file(tmp_path, weights, capsys, monkeypatch):
    import sharpkd.files as fsutil

    def disk_full(path, obj):
        with fsutil.atomic_path(path) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    monkeypatch.setattr(fsutil, "write_json", disk_full)
    out = tmp_path / "bench.json"
    assert main(["bench", "--weights", str(weights), "--height", "8", "--width", "8", "--runs", "1", "--warmup", "0",
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {out}: No space left on device (free some space or write to another disk)"]
    assert list(tmp_path.iterdir()) == []


def test_a_missing_params_key_is_one_error_naming_it(tmp_path):
    """A key a stage needs that the file lacks: one line naming it and its section, exit 1."""
    import yaml

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["degrade"]["scale"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    p = stage.load_params("degrade", tmp_path / "params.yaml")
    with pytest.raises(SharpkdError, match=r"section degrade has no key 'scale'"):
        p["scale"]
    assert p.get("scale") is None and p["codec"] == params["degrade"]["codec"]
    del params["teacher"]["adapt"]["lr"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SharpkdError, match=r"section teacher.adapt has no key 'lr'"):
        stage.load_params("teacher", tmp_path / "params.yaml")["adapt"]["lr"]
    proc = subprocess.run([sys.executable, "-m", "stages.degrade", "--slices", str(tmp_path / "s"), "--out",
                           str(tmp_path / "d"), "--links-out", str(tmp_path / "l"), "--provenance",
                           str(tmp_path / "p.json")], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: params.yaml: section degrade has no key 'scale'; add it "
                                                "(params.yaml lists every key)"]


def test_a_closed_stdout_after_the_work_is_quiet(tmp_path, weights):
    """`sharpkd sharpen ... | head -c 0`: the file is written, nothing is reported as an error, exit 141."""
    Image.fromarray(rand(16, 20)).save(tmp_path / "a.png")
    cmd = (f"{sys.executable} -m sharpkd.app.cli sharpen {tmp_path / 'a.png'} -o {tmp_path / 'o'} -q "
           f"--weights {weights} | head -c 0; exit ${{PIPESTATUS[0]}}")
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 141 and proc.stderr == ""
    assert (tmp_path / "o" / "a.png").is_file()


def test_torch_compile_runtime_keeps_the_compilers_notes_out_of_the_terminal(tmp_path):
    """`--runtime torch-compile` on an int8 student: only sharpen's own lines, no dynamo warnings."""
    Image.fromarray(rand(16, 20)).save(tmp_path / "a.png")
    proc = subprocess.run([sys.executable, "-m", "sharpkd.app.cli", "sharpen", str(tmp_path / "a.png"), "-o",
                           str(tmp_path / "o"), "--student", "fast", "--runtime", "torch-compile", "-q"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout.strip().splitlines()[-1].startswith("sharpened 1 file(s)")


def test_an_unreadable_subfolder_is_one_warning_not_silence(tmp_path, weights, monkeypatch, capsys):
    """A folder below an input that cannot be listed (permission denied): named in one warning line,
    the other files sharpened."""
    src = tmp_path / "in"
    (src / "locked").mkdir(parents=True)
    Image.fromarray(rand(16, 20)).save(src / "a.png")
    Image.fromarray(rand(16, 20)).save(src / "locked" / "b.png")
    real = os.scandir

    def scandir(path="."):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    from sharpkd.app.cli import main

    with pytest.warns(UserWarning) as record:  # the command prints each as one `warning:` line
        assert main(["sharpen", str(src), "-o", str(tmp_path / "o"), "--weights", str(weights), "-q"]) == 0
    assert [str(w.message) for w in record] == [
        f"{src / 'locked'}: cannot read this folder (Permission denied); its files are skipped"]
    assert (tmp_path / "o" / "in" / "a.png").is_file() and not (tmp_path / "o" / "in" / "locked").exists()
