"""The web server against hostile and odd requests, over a real uvicorn server on 127.0.0.1.

Host/Origin checks (DNS rebinding, cross-site uploads), body limits enforced before or
while reading (Content-Length and chunked bodies over raw sockets), decoded-length caps on
uploads, safety headers, and HTTP details of the audio route (HEAD, multi-range,
case-insensitive units, Content-Type from the content, no server paths in messages).
"""

from __future__ import annotations

import io
import os
import select
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from soundalike.web.app import create_app
from test_search_fixtures import build_catalog

LIMIT = 300_000  # the test server's upload limit, bytes
CLIP_S = 20.0  # its decoded-length limit, seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, app):
        import uvicorn

        self.port = _free_port()
        self.srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.th = threading.Thread(target=self.srv.run, daemon=True)
        self.th.start()
        deadline = time.time() + 20
        while not self.srv.started and time.time() < deadline:
            time.sleep(0.05)
        assert self.srv.started, "uvicorn did not start"
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.srv.should_exit = True
        self.th.join(timeout=10)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardweb")
    built = build_catalog(root, per_style=1, duration_s=2.0)
    server = _Server(create_app(built.path, max_upload_bytes=LIMIT, max_clip_s=CLIP_S))
    yield server, built
    server.stop()


def _wav_bytes(seconds: float, sr: int = 8000, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * sr), dtype=np.float32) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr, format=fmt)
    return buf.getvalue()


def _raw_request(port: int, head: bytes, timeout: float = 20.0) -> bytes:
    """Send ``head`` (request line + headers, no body) and read whatever comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and b"}" in data:
                break
        return data


# --------------------------------------------------------------------------- Host and origin


def test_foreign_host_is_refused_loopback_names_are_not(site):
    server, built = site
    tid = built.ids["drum-loop"][0]
    for path in ("/", "/api/tracks", f"/api/tracks/{tid}/audio"):
        r = httpx.get(server.url + path, headers={"Host": "evil.example"})
        assert r.status_code == 400, path
        assert "evil.example" in r.json()["detail"] and "--allowed-host" in r.json()["detail"]
        assert b"RIFF" not in r.content
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "localhost", f"[::1]:{server.port}"):
        assert httpx.get(server.url + "/api/tracks", headers={"Host": host}).status_code == 200, host


def test_allowed_host_option_adds_a_name(tmp_path):
    built = build_catalog(tmp_path, per_style=1, duration_s=1.0)
    server = _Server(create_app(built.path, allowed_hosts=["127.0.0.1", "music.lan"]))
    try:
        assert httpx.get(server.url + "/api/tracks", headers={"Host": "music.lan:8000"}).status_code == 200
        assert httpx.get(server.url + "/api/tracks", headers={"Host": "localhost"}).status_code == 400
    finally:
        server.stop()


def test_cross_site_upload_is_refused(site):
    server, _ = site
    files = {"file": ("clip.wav", _wav_bytes(1.0), "audio/wav")}
    url = server.url + "/api/similar/upload"
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Origin": f"http://localhost:{server.port}"}):
        r = httpx.post(url, files=files, headers=headers)
        assert r.status_code == 403, headers
        assert "cross-site" in r.json()["detail"]
    same = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
    r = httpx.post(url, files=files, headers=same)
    assert r.status_code == 200, r.text
    assert httpx.post(url, files=files).status_code == 200  # curl and scripts send neither header


def test_safety_headers_and_no_cdn_docs(site):
    server, _ = site
    for path in ("/", "/api/tracks", "/static/app.js", "/api/tracks/99999", "/openapi.json"):
        r = httpx.get(server.url + path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert httpx.get(server.url + "/openapi.json").status_code == 200
    for path in ("/docs", "/redoc"):
        assert httpx.get(server.url + path).status_code == 404


# --------------------------------------------------------------------------- body limits


def test_declared_oversize_body_is_refused_before_it_is_sent(site):
    server, _ = site
    head = (f"POST /api/similar/upload HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: 500000000\r\n\r\n").encode()
    data = _raw_request(server.port, head)  # not one byte of the 500 MB body is sent
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert b"500 MB declared" in data and b"limit" in data


def test_chunked_body_reading_stops_at_the_limit(site):
    """A chunked upload with no Content-Length: the server answers 413 once the limit is
    passed, while the client is still sending (on main it read all 40 MB, then refused)."""
    server, _ = site
    total = 40_000_000
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    head = (f"POST /api/similar/upload HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: multipart/form-data; boundary=xyz\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    s.sendall(head)
    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\nContent-Type: audio/wav\r\n\r\n'
    s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
    piece = b"\0" * 65536
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    sent, reply = len(part), b""
    try:
        while sent < total:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                reply = s.recv(65536)
                break
            s.sendall(chunk)
            sent += len(piece)
        if not reply:
            reply = s.recv(65536)
    except (BrokenPipeError, ConnectionResetError):
        reply = reply or s.recv(65536)
    finally:
        s.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < total / 2, f"the server let {sent} bytes be sent before refusing"


def test_upload_limits_in_bytes_and_seconds(site):
    server, _ = site
    url = server.url + "/api/similar/upload"
    big = httpx.post(url, files={"file": ("big.wav", b"\0" * (LIMIT + 100_000), "audio/wav")})
    assert big.status_code == 413 and "limit" in big.json()["detail"]
    # an hour of silence compresses to a few kB of FLAC; decoding stops at the clip limit
    buf = io.BytesIO()
    sf.write(buf, np.zeros(3600 * 8000, np.float32), 8000, format="FLAC")
    assert len(buf.getvalue()) < LIMIT
    r = httpx.post(url, files={"file": ("hour.flac", buf.getvalue(), "audio/flac")}, timeout=120)
    assert r.status_code == 413, r.text
    assert "too long" in r.json()["detail"] and f"{CLIP_S:g} s" in r.json()["detail"]
    ok = httpx.post(url, files={"file": ("short.wav", _wav_bytes(3.0), "audio/wav")})
    assert ok.status_code == 200 and ok.json()["hits"]


# --------------------------------------------------------------------------- audio route details


def test_head_multirange_and_case_insensitive_units(site):
    server, built = site
    tid = built.ids["drum-loop"][0]
    data = (built.audio_dir / "drum-loop-0.wav").read_bytes()
    url = f"{server.url}/api/tracks/{tid}/audio"
    h = httpx.head(url)
    assert h.status_code == 200 and h.content == b""
    assert int(h.headers["content-length"]) == len(data) and h.headers["content-type"] == "audio/wav"
    hr = httpx.head(url, headers={"Range": "bytes=0-9"})
    assert hr.status_code == 206 and hr.headers["content-range"] == f"bytes 0-9/{len(data)}"
    r = httpx.get(url, headers={"Range": "BYTES=0-9"})
    assert r.status_code == 206 and r.content == data[:10]
    r = httpx.get(url, headers={"Range": "bytes=0-1, 5-9"})
    assert r.status_code == 206
    ctype = r.headers["content-type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    assert int(r.headers["content-length"]) == len(r.content)
    boundary = ctype.split("boundary=")[1].encode()
    parts = [p for p in r.content.split(b"--" + boundary) if p.strip(b"\r\n-")]
    got = []
    for p in parts:
        head, _, body = p.partition(b"\r\n\r\n")
        assert b"Content-Type: audio/wav" in head
        got.append((head.split(b"Content-Range: bytes ")[1].split(b"/")[0], body[:-2] if body.endswith(b"\r\n") else body))
    assert got == [(b"0-1", data[0:2]), (b"5-9", data[5:10])]
    # overlapping ranges merge into one part
    r = httpx.get(url, headers={"Range": "bytes=0-4,3-9"})
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes 0-9/{len(data)}" and r.content == data[:10]


def test_parse_ranges_table():
    from soundalike.web.app import parse_ranges

    size = 100
    assert parse_ranges("bytes=0-9", size) == [(0, 9)]
    assert parse_ranges("Bytes=0-9,20-29", size) == [(0, 9), (20, 29)]
    assert parse_ranges("bytes=90-,200-300", size) == [(90, 99)]  # the unsatisfiable one is dropped
    assert parse_ranges("bytes=-10,0-0", size) == [(90, 99), (0, 0)]
    assert parse_ranges("bytes=0-9,10-19", size) == [(0, 19)]
    assert parse_ranges("items=0-1", size) is None
    assert parse_ranges("bytes=" + ",".join(f"{i}-{i}" for i in range(0, 80, 2)), size) is None  # too many: all


def test_content_type_from_content_and_no_paths_in_errors(tmp_path):
    from soundalike.ingest.pipeline import ingest
    from soundalike.catalog.store import Catalog

    music = tmp_path / "music"
    music.mkdir()
    (music / "really-flac.MP3").write_bytes(_wav_bytes(2.0, sr=22050, fmt="FLAC"))
    (music / "tone.wav").write_bytes(_wav_bytes(2.0, sr=22050))
    cat_path = tmp_path / "cat.sqlite"
    s = ingest([music], catalog=cat_path, model="mfcc-stats", workers=1)
    assert s.ingested == 2, s.errors
    with Catalog.open(cat_path) as cat:
        ids = {Path(t.path).name: t.id for t in cat.iter_tracks()}
    server = _Server(create_app(cat_path))
    try:
        r = httpx.get(f"{server.url}/api/tracks/{ids['really-flac.MP3']}/audio")
        assert r.status_code == 200 and r.headers["content-type"] == "audio/flac"
        # the file rots in place after ingest (same inode, size and mtime): the decode error
        # names the file, not where it lives
        tone = music / "tone.wav"
        st = tone.stat()
        with open(tone, "r+b") as fh:
            fh.write(b"not audio any more\n" * (st.st_size // 19))
        os.utime(tone, ns=(st.st_atime_ns, st.st_mtime_ns))
        r = httpx.get(f"{server.url}/api/tracks/{ids['tone.wav']}/spectrogram.png")
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert str(tmp_path) not in detail and "/music/" not in detail
        assert "tone.wav" in detail
    finally:
        server.stop()
        shutil.rmtree(music, ignore_errors=True)


def test_a_track_file_swapped_after_ingest_is_not_served(tmp_path):
    """ln -sf /etc/passwd <track>, or a same-size file with the same mtime moved in its place:
    409, nothing of the other file sent, and the track is taken out of service."""
    from soundalike.ingest.pipeline import ingest

    music = tmp_path / "music"
    music.mkdir()
    for name in ("a.wav", "b.wav", "c.wav"):
        (music / name).write_bytes(_wav_bytes(1.0, sr=22050))
    cat_path = tmp_path / "cat.sqlite"
    assert ingest([music], catalog=cat_path, model="mfcc-stats", workers=1).ingested == 3
    from soundalike.catalog.store import Catalog

    with Catalog.open(cat_path) as cat:
        ids = {Path(t.path).name: t.id for t in cat.iter_tracks()}
    server = _Server(create_app(cat_path))
    try:
        url = f"{server.url}/api/tracks/{{}}/audio"
        assert httpx.get(url.format(ids["a.wav"])).status_code == 200
        os.unlink(music / "a.wav")
        os.symlink("/etc/passwd", music / "a.wav")
        for r in (httpx.get(url.format(ids["a.wav"])), httpx.head(url.format(ids["a.wav"])),
                  httpx.get(url.format(ids["a.wav"]), headers={"Range": "bytes=0-99"})):
            assert r.status_code in (404, 409) and b"root:" not in r.content
        assert httpx.get(f"{server.url}/api/tracks/{ids['a.wav']}").status_code == 404  # out of service
        # same size, same mtime, another inode: still refused
        b = music / "b.wav"
        st = b.stat()
        other = music / ".other.wav"
        other.write_bytes(_wav_bytes(1.0, sr=22050)[:-4] + b"XXXX")
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert other.stat().st_size == st.st_size
        os.replace(other, b)
        r = httpx.get(url.format(ids["b.wav"]))
        assert r.status_code == 409 and "replaced" in r.json()["detail"]
        assert httpx.get(url.format(ids["c.wav"])).status_code == 200  # the untouched one still plays
    finally:
        server.stop()


def test_threads_that_exit_hand_their_catalog_to_the_next(catalog_target):
    """The server's pool replaces idle threads; each new thread adopts a gone thread's
    catalog, so connections never outnumber the threads alive (they used to pile up)."""
    import threading

    from soundalike.catalog.store import Catalog
    from soundalike.web.app import _Catalogs

    Catalog.open(catalog_target).close()  # create it
    cats = _Catalogs(catalog_target)
    seen: list[object] = []

    def use() -> None:
        cat = cats.get()
        assert cat is cats.get()  # one catalog per thread while it lives
        cat.stats()  # a real query from this thread
        seen.append(cat)

    for _ in range(5):  # one thread after another: each dies before the next starts
        t = threading.Thread(target=use)
        t.start()
        t.join()
    assert len({id(c) for c in seen}) == 1
    assert cats.open_count() == 1

    gate = threading.Barrier(3)

    def hold() -> None:
        cats.get()
        gate.wait()  # three threads alive at once need three catalogs

    held = [threading.Thread(target=hold) for _ in range(3)]
    for t in held:
        t.start()
    for t in held:
        t.join()
    assert cats.open_count() == 3
    t = threading.Thread(target=use)
    t.start()
    t.join()
    assert cats.open_count() == 3  # the fourth thread reused one of the three
    cats.close()
    assert cats.open_count() == 0


def test_a_new_thread_at_the_limit_waits_for_a_retiring_one(catalog_target):
    """The server's pool can start a thread while an idle one is still exiting: at the
    limit the newcomer adopts the leaving thread's catalog instead of opening another."""
    import threading

    from soundalike.catalog.store import Catalog
    from soundalike.web.app import _Catalogs

    Catalog.open(catalog_target).close()
    cats = _Catalogs(catalog_target, limit=2)
    mine = cats.get()  # the start-up thread's, as in serve
    got: dict[str, object] = {}
    holding = threading.Event()

    def leaving() -> None:
        got["leaving"] = cats.get()
        holding.set()
        time.sleep(0.3)  # still alive when the newcomer asks

    def newcomer() -> None:
        got["newcomer"] = cats.get()

    a = threading.Thread(target=leaving)
    a.start()
    assert holding.wait(10)
    b = threading.Thread(target=newcomer)
    b.start()
    a.join()
    b.join()
    assert got["newcomer"] is got["leaving"]  # adopted, not a third connection
    assert cats.open_count() == 2
    assert got["newcomer"] is not mine
    cats.close()
