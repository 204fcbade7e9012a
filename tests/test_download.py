"""Tests for sharpkd.data.sources: verified fetch over a loopback HTTP server, archive safety, collect()."""

from __future__ import annotations

import hashlib
import io
import socket
import stat
import struct
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sharpkd import fetch as fetch_module
from sharpkd.data.sources import SAMPLE_FILES, collect, extract_archive
from sharpkd.fetch import fetch, sha256_file
from sharpkd.errors import ArchiveError, DownloadError, SharpkdError

PAYLOAD = bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8))
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
WRONG_SHA = "0" * 64


# ------------------------------------------------------------------------------------------
# loopback server


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.requests.append(self.path)
        route = srv.routes.get(self.path)
        if route is None:
            self.send_error(404, "no such file")
            return
        kind, body = route
        if kind == "ok":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif kind == "nolength":  # no Content-Length: only counting the bytes can bound the download
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
        elif kind == "truncated":  # promises more bytes than it sends, then closes
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 5000))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
        elif kind == "disconnect":  # sends half the body, then resets the connection
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        else:
            raise AssertionError(kind)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.routes = {}
    srv.requests = []
    srv.lock = threading.Lock()
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture
def refused_url():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/weights.pth"


class _RecordingBar:
    """Stand-in for tqdm that records what the download reports."""

    instances: list["_RecordingBar"] = []

    def __init__(self, *args, total=None, disable=None, **kwargs):
        self.total, self.disable, self.n = total, disable, 0
        _RecordingBar.instances.append(self)

    def update(self, n):
        self.n += n

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _cache_listing(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# ------------------------------------------------------------------------------------------
# fetch


def test_sha256_file(tmp_path):
    (tmp_path / "f").write_bytes(PAYLOAD)
    assert sha256_file(tmp_path / "f") == PAYLOAD_SHA


def test_fetch_downloads_with_progress_then_hits_cache(server, tmp_path, monkeypatch):
    server.routes["/w/model.pth"] = ("ok", PAYLOAD)
    _RecordingBar.instances = []
    monkeypatch.setattr(fetch_module, "tqdm", _RecordingBar)
    cache = tmp_path / "cache"
    path = fetch(f"{server.base}/w/model.pth", PAYLOAD_SHA, cache_dir=cache)
    assert path == cache / "model.pth"
    assert path.read_bytes() == PAYLOAD
    assert _cache_listing(cache) == ["model.pth"]
    bar = _RecordingBar.instances[-1]
    assert bar.total == len(PAYLOAD) and bar.n == len(PAYLOAD)
    assert len(server.requests) == 1

    again = fetch(f"{server.base}/w/model.pth", PAYLOAD_SHA.upper(), cache_dir=cache)
    assert again == path
    assert len(server.requests) == 1  # no new request: served from the cache


def test_fetch_filename_override_and_progress_off(server, tmp_path, monkeypatch):
    server.routes["/dl"] = ("ok", PAYLOAD)
    _RecordingBar.instances = []
    monkeypatch.setattr(fetch_module, "tqdm", _RecordingBar)
    path = fetch(f"{server.base}/dl", PAYLOAD_SHA, filename="x.bin", cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "x.bin"
    assert _RecordingBar.instances[-1].disable is True


def test_fetch_wrong_sha256(server, tmp_path):
    server.routes["/model.pth"] = ("ok", PAYLOAD)
    with pytest.raises(DownloadError) as ei:
        fetch(f"{server.base}/model.pth", WRONG_SHA, cache_dir=tmp_path / "c")
    msg = str(ei.value)
    assert WRONG_SHA in msg and PAYLOAD_SHA in msg and str(tmp_path / "c" / "model.pth") in msg
    assert _cache_listing(tmp_path / "c") == []


def test_fetch_replaces_cached_file_with_wrong_hash(server, tmp_path):
    server.routes["/model.pth"] = ("ok", PAYLOAD)
    (tmp_path / "model.pth").write_bytes(b"stale")
    with pytest.warns(UserWarning, match="does not match"):
        path = fetch(f"{server.base}/model.pth", PAYLOAD_SHA, cache_dir=tmp_path)
    assert path.read_bytes() == PAYLOAD and len(server.requests) == 1


def test_fetch_stale_cache_and_bad_download(server, tmp_path):
    server.routes["/model.pth"] = ("ok", b"also wrong")
    (tmp_path / "model.pth").write_bytes(b"stale")
    with pytest.warns(UserWarning), pytest.raises(DownloadError, match="was not used"):
        fetch(f"{server.base}/model.pth", PAYLOAD_SHA, cache_dir=tmp_path)
    assert _cache_listing(tmp_path) == ["model.pth"]  # the user's file is left alone, no .part
    assert (tmp_path / "model.pth").read_bytes() == b"stale"


@pytest.mark.parametrize("kind", ["truncated", "disconnect"])
def test_fetch_broken_transfer_leaves_nothing(server, tmp_path, kind):
    server.routes["/model.pth"] = (kind, PAYLOAD)
    with pytest.raises(DownloadError) as ei:
        fetch(f"{server.base}/model.pth", PAYLOAD_SHA, cache_dir=tmp_path)
    msg = str(ei.value)
    assert "model.pth" in msg and server.base in msg and PAYLOAD_SHA in msg
    assert str(tmp_path / "model.pth") in msg
    assert _cache_listing(tmp_path) == []  # neither the final file nor a .part file


def test_fetch_truncated_message_says_truncated(server, tmp_path):
    server.routes["/model.pth"] = ("truncated", PAYLOAD)
    with pytest.raises(DownloadError, match="truncated"):
        fetch(f"{server.base}/model.pth", PAYLOAD_SHA, cache_dir=tmp_path)


def test_fetch_http_404(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        fetch(f"{server.base}/missing.pth", PAYLOAD_SHA, cache_dir=tmp_path)
    assert _cache_listing(tmp_path) == []


def test_fetch_refused_port(refused_url, tmp_path):
    with pytest.raises(DownloadError) as ei:
        fetch(refused_url, PAYLOAD_SHA, cache_dir=tmp_path)
    msg = str(ei.value)
    assert PAYLOAD_SHA in msg and str(tmp_path / "weights.pth") in msg and refused_url in msg
    assert "cannot connect" in msg
    assert _cache_listing(tmp_path) == []


def test_fetch_respects_torch_home(server, tmp_path, monkeypatch):
    server.routes["/model.pth"] = ("ok", PAYLOAD)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    path = fetch(f"{server.base}/model.pth", PAYLOAD_SHA, progress=False)
    assert path == tmp_path / "th" / "hub" / "checkpoints" / "model.pth"
    assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("as_uri", [False, True])
def test_fetch_local_file(tmp_path, as_uri):
    src = tmp_path / "src" / "w.safetensors"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    url = src.as_uri() if as_uri else str(src)
    path = fetch(url, PAYLOAD_SHA, cache_dir=tmp_path / "c", progress=False)
    assert path == tmp_path / "c" / "w.safetensors" and path.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="cannot open the local file"):
        fetch(str(tmp_path / "absent.bin"), PAYLOAD_SHA, cache_dir=tmp_path / "c")


@pytest.mark.parametrize("sha", ["", "abc", "g" * 64, None])
def test_fetch_rejects_bad_sha256(tmp_path, sha):
    with pytest.raises(DownloadError, match="sha256|SHA-256"):
        fetch("http://127.0.0.1:9/x.pth", sha, cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------
# archives


def _png_bytes(seed: int, size=(12, 10)) -> bytes:
    buf = io.BytesIO()
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode="w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return path


@pytest.mark.parametrize("kind", ["zip", "tar.gz", "tar", "tar.bz2", "tar.xz"])
def test_extract_archive_images_only(tmp_path, kind):
    members = [("imgs/a.png", _png_bytes(1)), ("imgs/sub/B.JPG", b"jpeg-ish"), ("readme.txt", b"hi"),
               ("__MACOSX/imgs/._a.png", b"junk")]
    arc = tmp_path / f"a.{kind}"
    if kind == "zip":
        _zip(arc, dict(members))
    else:
        _tar(arc, members, mode="w" if kind == "tar" else f"w:{kind.split('.')[1]}")
    info = extract_archive(arc, tmp_path / "out")
    assert info == {"extracted": ["imgs/a.png", "imgs/sub/B.JPG"],
                    "skipped": ["__MACOSX/imgs/._a.png", "readme.txt"]}
    assert (tmp_path / "out" / "imgs" / "a.png").read_bytes() == _png_bytes(1)
    assert not (tmp_path / "out" / "readme.txt").exists()


def _symlink_tarinfo(name="link.png", target="/etc/passwd"):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def _hardlink_tarinfo():
    info = tarfile.TarInfo("hard.png")
    info.type = tarfile.LNKTYPE
    info.linkname = "good.png"
    return info


def _fifo_tarinfo():
    info = tarfile.TarInfo("pipe.png")
    info.type = tarfile.FIFOTYPE
    return info


def _chr_tarinfo():
    info = tarfile.TarInfo("dev/null.png")
    info.type = tarfile.CHRTYPE
    return info


@pytest.mark.parametrize(
    "bad, member",
    [
        (("../x.png", b"x"), "../x.png"),
        (("/abs.png", b"x"), "/abs.png"),
        (("a/../../x.png", b"x"), "a/../../x.png"),
        (_symlink_tarinfo(), "link.png"),
        (_hardlink_tarinfo(), "hard.png"),
        (_fifo_tarinfo(), "pipe.png"),
        (_chr_tarinfo(), "dev/null.png"),
    ],
)
def test_unsafe_tar_refused_before_writing(tmp_path, bad, member):
    # The good member comes first: nothing may be written before the bad one is seen.
    arc = _tar(tmp_path / "bad.tar.gz", [("good.png", _png_bytes(2)), bad])
    with pytest.raises(ArchiveError) as ei:
        extract_archive(arc, tmp_path / "out")
    assert repr(member) in str(ei.value) or member in str(ei.value)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("name", ["../x.png", "/abs.png", "C:/x.png", "a\\..\\..\\x.png"])
def test_unsafe_zip_names_refused(tmp_path, name):
    arc = tmp_path / "bad.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("good.png", _png_bytes(3))
        zf.writestr(zipfile.ZipInfo(name), b"x")  # ZipInfo keeps the name verbatim
    with pytest.raises(ArchiveError, match="archive refused"):
        extract_archive(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.png").exists()


def test_zip_symlink_member_refused(tmp_path):
    arc = tmp_path / "link.zip"
    with zipfile.ZipFile(arc, "w") as zf:
        zf.writestr("good.png", _png_bytes(4))
        info = zipfile.ZipInfo("evil.png")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="evil.png.*symbolic link"):
        extract_archive(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_duplicate_member_refused(tmp_path):
    arc = _tar(tmp_path / "dup.tar", [("a.png", b"1"), ("./a.png", b"2")], mode="w")
    with pytest.raises(ArchiveError, match="twice"):
        extract_archive(arc, tmp_path / "out")


@pytest.mark.parametrize("content", [b"not an archive at all" * 10, b""])
def test_unknown_archive_format(tmp_path, content):
    (tmp_path / "x.zip").write_bytes(content)
    with pytest.raises(ArchiveError, match="not a zip or tar"):
        extract_archive(tmp_path / "x.zip", tmp_path / "out")


# ------------------------------------------------------------------------------------------
# collect


def test_collect_sample(tmp_path):
    from skimage import data as skdata

    prov = collect("sample", tmp_path / "raw")
    assert prov["source"] == "sample" and prov["count"] == 9 and prov["skipped_count"] == 0
    files = [d["file"] for d in prov["images"]]
    assert files == sorted(SAMPLE_FILES)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == files
    for d in prov["images"]:
        src = Path(skdata.data_dir) / d["file"]
        assert (tmp_path / "raw" / d["file"]).read_bytes() == src.read_bytes()
        assert d["sha256"] == sha256_file(src) and d["bytes"] == src.stat().st_size
    astro = next(d for d in prov["images"] if d["file"] == "astronaut.png")
    assert (astro["width"], astro["height"]) == (512, 512)
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # no temp dirs left behind


@pytest.fixture
def mixed_dir(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(_png_bytes(5))
    Image.fromarray(np.full((8, 6, 3), 90, np.uint8)).save(root / "sub" / "b.JPG", quality=95)
    (root / "sub__b.JPG").write_bytes((root / "sub" / "b.JPG").read_bytes())  # flat-name clash
    (root / "broken.png").write_bytes(_png_bytes(6)[:-40])
    (root / "notes.txt").write_text("hello")
    (root / ".hidden.png").write_bytes(_png_bytes(7))
    return root


def test_collect_dir_mixed(mixed_dir, tmp_path):
    out = tmp_path / "raw"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")  # replaced, not merged
    with pytest.warns(UserWarning, match="broken.png"):
        prov = collect("dir", out, dir=mixed_dir)
    assert prov["count"] == 3 and prov["skipped_count"] == 2
    assert [d["file"] for d in prov["images"]] == ["a.png", "sub__b-2.JPG", "sub__b.JPG"]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "sub__b-2.JPG", "sub__b.JPG"]
    origins = {d["file"]: d["origin"] for d in prov["images"]}
    assert origins["sub__b.JPG"].endswith("photos/sub/b.JPG")  # "/" sorts before "_"
    assert origins["sub__b-2.JPG"].endswith("photos/sub__b.JPG")
    skipped = {d["file"]: d["reason"] for d in prov["skipped"]}
    assert set(skipped) == {"broken.png", "notes.txt"}
    assert "truncated" in skipped["broken.png"] and "not an image" in skipped["notes.txt"]
    a = next(d for d in prov["images"] if d["file"] == "a.png")
    assert (a["width"], a["height"], a["bytes"]) == (12, 10, len(_png_bytes(5)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "raw"]
    with pytest.warns(UserWarning):
        assert collect("dir", tmp_path / "raw2", dir=mixed_dir)["images"] == prov["images"]  # deterministic


def test_collect_dir_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SharpkdError, match="empty"):
        collect("dir", tmp_path / "out", dir=tmp_path / "empty")
    with pytest.raises(SharpkdError, match="missing"):
        collect("dir", tmp_path / "out", dir=tmp_path / "missing")
    with pytest.raises(SharpkdError, match="dir"):
        collect("dir", tmp_path / "out")
    with pytest.raises(SharpkdError, match="unknown image source"):
        collect("ftp", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_collect_all_corrupt_leaves_out_dir_untouched(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"garbage")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.png").write_bytes(b"k")
    with pytest.warns(UserWarning), pytest.raises(SharpkdError, match="no usable images"):
        collect("dir", tmp_path / "out", dir=tmp_path / "bad")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "out"]


def test_collect_url(server, tmp_path):
    arc = _zip(tmp_path / "set.zip", {"set/one.png": _png_bytes(8), "set/two/two.png": _png_bytes(9),
                                      "set/LICENSE": b"cc0"})
    data = arc.read_bytes()
    server.routes["/data/set.zip"] = ("ok", data)
    url = f"{server.base}/data/set.zip"
    with pytest.raises(SharpkdError, match="sha256"):
        collect("url", tmp_path / "raw", url=url, sha256="", cache_dir=tmp_path / "cache")
    prov = collect("url", tmp_path / "raw", url=url, sha256=hashlib.sha256(data).hexdigest(),
                   cache_dir=tmp_path / "cache")
    assert prov["count"] == 2 and prov["skipped_count"] == 1
    assert [d["file"] for d in prov["images"]] == ["set__one.png", "set__two__two.png"]
    assert prov["images"][0]["origin"] == f"{url}#set/one.png"
    assert prov["skipped"] == [{"file": "set/LICENSE", "reason": "not an image file (extension 'none')"}]
    assert (tmp_path / "raw" / "set__two__two.png").read_bytes() == _png_bytes(9)
    assert _cache_listing(tmp_path / "cache") == ["set.zip"]


def test_collect_url_wrong_hash(server, tmp_path):
    server.routes["/set.zip"] = ("ok", _zip(tmp_path / "s.zip", {"a.png": _png_bytes(1)}).read_bytes())
    with pytest.raises(DownloadError):
        collect("url", tmp_path / "raw", url=f"{server.base}/set.zip", sha256=WRONG_SHA, cache_dir=tmp_path / "c")
    assert not (tmp_path / "raw").exists()


# ------------------------------------------------------------------------------------------
# one-line messages, bounded downloads


@pytest.mark.parametrize("kind, needle", [("ok", "not the expected one"), ("truncated", "truncated")])
def test_fetch_failures_are_one_line(server, tmp_path, kind, needle):
    server.routes["/model.pth"] = (kind, PAYLOAD)
    with pytest.raises(DownloadError) as ei:
        fetch(f"{server.base}/model.pth", WRONG_SHA if kind == "ok" else PAYLOAD_SHA, cache_dir=tmp_path)
    msg = str(ei.value)
    assert "\n" not in msg and needle in msg and str(tmp_path / "model.pth") in msg


@pytest.mark.parametrize("kind", ["ok", "nolength"])
def test_fetch_max_bytes_stops_at_the_budget(server, tmp_path, kind):
    server.routes["/big.zip"] = (kind, PAYLOAD)
    with pytest.raises(DownloadError, match="max_download_mb") as ei:
        fetch(f"{server.base}/big.zip", PAYLOAD_SHA, cache_dir=tmp_path, max_bytes=100_000)
    assert "\n" not in str(ei.value)
    assert _cache_listing(tmp_path) == []
    assert fetch(f"{server.base}/big.zip", PAYLOAD_SHA, cache_dir=tmp_path, max_bytes=len(PAYLOAD)).read_bytes() == PAYLOAD


def test_damaged_zip_member_is_an_archive_error(tmp_path):
    """A deflate stream that zlib rejects (zlib.error is no OSError) is a clean ArchiveError."""
    arc = tmp_path / "a.zip"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("x.png", _png_bytes(0))
    data = bytearray(arc.read_bytes())
    data[28] = 255  # local extra-field length: the data then starts in the middle of the stream
    arc.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match=r"'x.png'.*damaged archive"):
        extract_archive(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists()
