"""The JSON API with FastAPI's TestClient: filters, pagination, Range streaming, safety."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from soundalike.web.app import create_app
from test_search_fixtures import demo_catalog  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def client(demo_catalog):  # noqa: F811
    app = create_app(demo_catalog.path, max_upload_bytes=300_000)
    with TestClient(app, raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
        yield c, demo_catalog


def test_page_and_openapi(client):
    c, _ = client
    r = c.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "http://" not in r.text and "https://" not in r.text  # no CDN: works offline
    js = c.get("/static/app.js")
    assert js.status_code == 200 and "https://" not in js.text
    spec = c.get("/openapi.json").json()
    assert {"/api/tracks", "/api/facets", "/api/similar", "/api/tracks/{track_id}/audio",
            "/api/similar/upload"} <= set(spec["paths"])


def test_tracks_filters_and_pagination(client):
    c, b = client
    all_ = c.get("/api/tracks", params={"limit": 500}).json()
    assert all_["total"] == 20 and len(all_["tracks"]) == 20
    seen = []
    for offset in range(0, 20, 7):
        page = c.get("/api/tracks", params={"offset": offset, "limit": 7}).json()
        assert page["total"] == 20
        seen += [t["id"] for t in page["tracks"]]
    assert sorted(seen) == sorted(t["id"] for t in all_["tracks"]) and len(set(seen)) == 20
    r = c.get("/api/tracks", params={"where": "instrument:piano|drums -year:..1995"}).json()
    expect = {t for s in ("piano-arpeggio", "drum-loop") for t in b.ids[s]}
    assert r["total"] == len(r["tracks"]) > 0
    assert all(t["id"] in expect and t["year"] > 1995 for t in r["tracks"])
    assert c.get("/api/tracks", params={"q": "bass-groove 2"}).json()["total"] == 1
    bad = c.get("/api/tracks", params={"where": "year:1999..1990"})
    assert bad.status_code == 400 and "position 6" in bad.json()["detail"]
    assert c.get("/api/tracks", params={"limit": 0}).status_code == 422


def test_facets_count_within_filter(client):
    c, _ = client
    f = c.get("/api/facets").json()["facets"]
    assert {x["tag"]: x["count"] for x in f["instrument"]} == {
        "bass": 4, "drums": 4, "noise": 4, "piano": 4, "synth pad": 4}
    g = c.get("/api/facets", params={"where": "mood:calm"}).json()["facets"]
    assert [x["tag"] for x in g["mood"]] == ["calm"] and g["mood"][0]["count"] == 4


def test_track_detail_and_spectrogram(client):
    c, b = client
    tid = b.ids["piano-arpeggio"][0]
    d = c.get(f"/api/tracks/{tid}").json()
    assert d["id"] == tid and {"category": "instrument", "tag": "piano", "source": "file",
                               "confidence": 1.0} in d["tags"]
    assert "predictions" in d and d["audio_url"].endswith("/audio")
    png = c.get(f"/api/tracks/{tid}/spectrogram.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert c.get("/api/tracks/424242").status_code == 404


def test_audio_range_requests(client):
    c, b = client
    tid = b.ids["drum-loop"][0]
    data = (b.audio_dir / "drum-loop-0.wav").read_bytes()
    size = len(data)
    full = c.get(f"/api/tracks/{tid}/audio")
    assert full.status_code == 200 and full.content == data
    assert full.headers["accept-ranges"] == "bytes" and full.headers["content-type"].startswith("audio/")
    for header, (start, end) in {"bytes=0-99": (0, 99), "bytes=1000-": (1000, size - 1),
                                 "bytes=-500": (size - 500, size - 1),
                                 f"bytes=100-{size + 50}": (100, size - 1)}.items():
        r = c.get(f"/api/tracks/{tid}/audio", headers={"Range": header})
        assert r.status_code == 206, header
        assert r.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert r.content == data[start : end + 1]
        assert int(r.headers["content-length"]) == end - start + 1
    for bad in (f"bytes={size}-", "bytes=500-100", "bytes=abc", "bytes=-0", f"bytes={size}-,{size + 9}-"):
        r = c.get(f"/api/tracks/{tid}/audio", headers={"Range": bad})
        assert r.status_code == 416, bad
        assert r.headers["content-range"] == f"bytes */{size}"


def test_audio_only_by_catalog_id(client):
    c, _ = client
    assert c.get("/api/tracks/999999/audio").status_code == 404
    for url in ("/api/tracks/..%2F..%2Fetc%2Fpasswd/audio", "/api/tracks/%2Fetc%2Fpasswd/audio",
                "/api/tracks/1/audio/../../../../etc/passwd", "/static/../../../../etc/passwd",
                "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/api/audio?path=/etc/passwd"):
        r = c.get(url)
        assert r.status_code in (404, 422), url
        assert b"root:" not in r.content


def test_similar_within_filter(client):
    c, b = client
    q = b.ids["bass-groove"][0]
    r = c.get("/api/similar", params={"id": q, "k": 5}).json()
    assert r["hits"][0]["id"] in b.ids["bass-groove"] and q not in [h["id"] for h in r["hits"]]
    assert r["hits"][0]["shared_tags"]
    f = c.get("/api/similar", params={"id": q, "k": 5, "where": "mood:calm|dark"}).json()
    allowed = set(b.ids["ambient-drone"]) | set(b.ids["noise-texture"])
    assert f["hits"] and {h["id"] for h in f["hits"]} <= allowed
    assert c.get("/api/similar", params={"id": 999999}).status_code == 404
    assert c.get("/api/similar", params={"id": q, "where": '"open'}).status_code == 400


def test_similar_json_is_the_bytes_starlette_would_send(client):
    """/api/similar renders with orjson: the same bytes as Starlette's ``json.dumps``
    (compact separators, UTF-8 not escaped), with the JSON content type, whatever the hits
    hold (floats, None, non-ASCII names)."""
    c, b = client
    for tid in (b.ids["bass-groove"][0], b.ids["ambient-drone"][0]):
        for params in ({"id": tid, "k": 8}, {"id": tid, "k": 3, "where": "mood:calm|dark"},
                       {"id": tid, "where": "genre:nosuchgenre"}):
            r = c.get("/api/similar", params=params)
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            body = r.json()
            assert r.content == json.dumps(body, ensure_ascii=False, allow_nan=False,
                                           separators=(",", ":")).encode("utf-8")
            assert body["hits"] or params.get("where") == "genre:nosuchgenre"


def _wav_bytes(y, sr=22050, fmt="WAV"):
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt)
    return buf.getvalue()


def test_upload_search_and_its_limits(client):
    from soundalike.audio.synth import demo_track

    c, b = client
    clip = _wav_bytes(demo_track("ambient-drone", seed=9, duration_s=2.0))
    r = c.post("/api/similar/upload", params={"k": 3}, files={"file": ("mine.wav", clip, "audio/wav")})
    assert r.status_code == 200, r.text
    assert r.json()["hits"][0]["id"] in b.ids["ambient-drone"]
    big = _wav_bytes(np.zeros(200_000, np.float32))  # 400 kB > 300 kB limit
    r = c.post("/api/similar/upload", files={"file": ("big.wav", big, "audio/wav")})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = c.post("/api/similar/upload", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert r.status_code == 415
    r = c.post("/api/similar/upload", files={"file": ("fake.wav", b"RIFF not really audio" * 10, "audio/wav")})
    assert r.status_code == 415 and "cannot decode" in r.json()["detail"]
    assert "Traceback" not in r.text
    r = c.post("/api/similar/upload", files={"file": ("x.wav", clip, "image/png")})
    assert r.status_code == 415


def test_server_binds_localhost_by_default():
    import inspect

    from soundalike.cli import search as cli_search

    assert inspect.signature(cli_search.serve).parameters["host"].default == "127.0.0.1"


def test_worker_factory_reads_its_settings_from_the_environment(demo_catalog, monkeypatch):  # noqa: F811
    """`serve --workers N` starts each worker with app_from_env(): same catalog, same answers."""
    from soundalike.errors import CatalogError
    from soundalike.web import app as web

    for name in (web.ENV_CATALOG, web.ENV_MODEL, web.ENV_MAX_UPLOAD):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CatalogError, match=web.ENV_CATALOG):
        web.app_from_env()
    env = web.serve_settings_env(demo_catalog.path, max_upload_bytes=1234)
    assert env[web.ENV_MAX_UPLOAD] == "1234" and web.ENV_MODEL not in env
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    tid = demo_catalog.ids["piano-arpeggio"][0]
    with TestClient(web.app_from_env(), base_url="http://127.0.0.1") as c, \
            TestClient(create_app(demo_catalog.path), base_url="http://127.0.0.1") as ref:
        got = c.get("/api/similar", params={"id": tid, "k": 3}).json()
        assert got["hits"] and got == ref.get("/api/similar", params={"id": tid, "k": 3}).json()
        files = {"file": ("clip.wav", b"x" * 2000, "audio/wav")}
        assert c.post("/api/similar/upload", files=files).status_code == 413  # the 1234-byte limit


def test_similar_rows_carry_the_same_tags_and_refuse_tracks_out_of_service(demo_catalog, tmp_path,  # noqa: F811
                                                                           request):
    """The hits' tag lists come from the search's own read: the same 8 per row as a fresh
    tag_lists query (with and without suggested tags in the search); a track taken out of
    service is no query (404), like an unknown id."""
    from soundalike.catalog.copy import copy_catalog
    from soundalike.catalog.store import Catalog

    on_server = str(demo_catalog.path).startswith("postgresql")
    path = request.getfixturevalue("pg_server").new_database() if on_server else tmp_path / "c.sqlite"
    copy_catalog(demo_catalog.path, path)  # a copy of our own: one track goes out of service
    q = demo_catalog.ids["bass-groove"][0]
    gone = demo_catalog.ids["ambient-drone"][0]
    with Catalog.open(path) as cat:
        cat.mark_changed(gone)
    with TestClient(create_app(path), raise_server_exceptions=False, base_url="http://127.0.0.1") as c, \
            Catalog.open(path) as cat:
        for extra in ({}, {"include_suggested": "true"}, {"where": "mood:calm|dark"}):
            hits = c.get("/api/similar", params={"id": q, "k": 8, **extra}).json()["hits"]
            assert hits
            ref = cat.tag_lists([h["id"] for h in hits], sources=("file", "user", "model"), limit_per_track=8)
            for h in hits:
                assert [(t["category"], t["tag"], t["source"]) for t in h["tags"]] == \
                    [(g.category, g.tag, g.source) for g in ref[h["id"]]]
        r = c.get("/api/similar", params={"id": gone})
        assert r.status_code == 404 and r.json()["detail"] == f"no track {gone} in the catalog"
