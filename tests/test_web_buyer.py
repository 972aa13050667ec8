"""The buyer's routes over HTTP (TestClient): peaks, download, favourites, playlists, exports,
CSRF protection of every state-changing route, sort and file-name search."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from soundalike.catalog.store import Catalog
from soundalike.web.app import create_app
from test_search_fixtures import build_catalog


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from soundalike.ingest.peaks import backfill_peaks

    b = build_catalog(tmp_path_factory.mktemp("buyercat"), per_style=2, durations=(2.0, 5.0))
    with Catalog.open(b.path) as cat:
        assert backfill_peaks(cat).computed == 10
    return b


@pytest.fixture()
def c(built):
    with TestClient(create_app(built.path), raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        r = client.get("/")  # the page sets the CSRF cookie
        assert r.status_code == 200 and client.cookies.get("soundalike_csrf")
        client.headers["X-CSRF-Token"] = client.cookies.get("soundalike_csrf")
        yield client


@pytest.fixture()
def bare(built):
    """A client that never loaded the page: no cookie, no token."""
    with TestClient(create_app(built.path), raise_server_exceptions=False, base_url="http://127.0.0.1") as client:
        yield client


def test_peaks_endpoint(c, built):
    tid = built.ids["drum-loop"][1]  # 5 s
    r = c.get(f"/api/tracks/{tid}/peaks")
    assert r.status_code == 200
    p = r.json()
    assert p["n"] == 1000 and len(p["min"]) == len(p["max"]) == 1000
    assert abs(p["duration_s"] - 5.0) < 0.01
    assert all(lo <= hi for lo, hi in zip(p["min"], p["max"], strict=True)) and max(p["max"]) > 10
    assert c.get("/api/tracks/999999/peaks").status_code == 404


def test_download_is_the_original_file(c, built):
    tid = built.ids["piano-arpeggio"][0]
    r = c.get(f"/api/tracks/{tid}/download")
    assert r.status_code == 200
    assert r.content == (built.audio_dir / "piano-arpeggio-0.wav").read_bytes()
    assert r.headers["content-disposition"].startswith("attachment") and "piano-arpeggio-0.wav" in r.headers[
        "content-disposition"]


def test_state_changes_need_the_csrf_token(bare, c, built):
    tid = built.ids["bass-groove"][0]
    # no cookie / header at all
    r = bare.put(f"/api/favourites/{tid}")
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["detail"]
    # a cookie but no header (what a cross-site form post would carry, were it sent)
    bare.get("/")
    assert bare.put(f"/api/favourites/{tid}").status_code == 403
    assert bare.post("/api/playlists", json={"name": "x"}).status_code == 403
    # a wrong header
    assert bare.put(f"/api/favourites/{tid}", headers={"X-CSRF-Token": "0" * 32}).status_code == 403
    # the right token from another origin
    tok = bare.cookies.get("soundalike_csrf")
    r = bare.put(f"/api/favourites/{tid}", headers={"X-CSRF-Token": tok, "Origin": "https://evil.example"})
    assert r.status_code == 403 and "cross-site" in r.json()["detail"]
    assert tid not in c.get("/api/favourites/ids").json()["ids"]
    # same origin, right token: accepted
    r = bare.put(f"/api/favourites/{tid}", headers={"X-CSRF-Token": tok, "Origin": "http://127.0.0.1"})
    assert r.status_code == 200
    assert bare.delete(f"/api/favourites/{tid}", headers={"X-CSRF-Token": tok}).status_code == 200
    # reading never needs it
    assert bare.get("/api/favourites").status_code == 200


def test_favourites_and_similar_to_them(c, built):
    a, b = built.ids["drum-loop"][0], built.ids["piano-arpeggio"][1]
    for tid in (a, b):
        assert c.put(f"/api/favourites/{tid}").status_code == 200
    assert c.put(f"/api/favourites/{a}").status_code == 200  # idempotent
    assert c.get("/api/favourites/ids").json()["ids"] == [b, a]  # newest first
    assert [t["id"] for t in c.get("/api/favourites").json()["tracks"]] == [b, a]
    assert c.put("/api/favourites/999999").status_code == 404
    hits = c.get("/api/similar/favourites", params={"k": 5}).json()["hits"]
    assert hits and not {a, b} & {h["id"] for h in hits}
    # within a filter
    hits = c.get("/api/similar/favourites", params={"k": 5, "where": "mood:energetic"}).json()["hits"]
    assert {h["id"] for h in hits} <= set(built.ids["drum-loop"]) - {a}
    m3u = c.get("/api/favourites/export.m3u8")
    assert m3u.status_code == 200 and m3u.headers["content-type"].startswith("audio/x-mpegurl")
    lines = m3u.text.splitlines()
    assert lines[0] == "#EXTM3U" and lines[-1].endswith(f"/api/tracks/{a}/audio")
    assert c.delete(f"/api/favourites/{a}").status_code == 200
    assert c.delete(f"/api/favourites/{b}").status_code == 200
    assert c.get("/api/favourites/ids").json()["ids"] == []
    assert c.get("/api/similar/favourites").json()["hits"] == []


def test_playlists_round_trip_and_exports(c, built):
    ids = [built.ids["bass-groove"][1], built.ids["ambient-drone"][0], built.ids["noise-texture"][1]]
    r = c.post("/api/playlists", json={"name": "  Trailer   picks "})
    assert r.status_code == 201
    pl = r.json()
    assert pl["name"] == "Trailer picks" and pl["n_tracks"] == 0
    assert c.post("/api/playlists", json={"name": "trailer PICKS"}).status_code == 409
    assert c.post("/api/playlists", json={"name": ""}).status_code == 422
    r = c.post(f"/api/playlists/{pl['id']}/tracks", json={"track_ids": ids + [ids[0]]})
    assert r.status_code == 200 and r.json()["n_tracks"] == 3
    assert c.post(f"/api/playlists/{pl['id']}/tracks", json={"track_ids": ["1"]}).status_code == 422
    assert c.post(f"/api/playlists/{pl['id']}/tracks", json={"track_ids": [999999]}).status_code == 404
    got = c.get(f"/api/playlists/{pl['id']}").json()
    assert [t["id"] for t in got["tracks"]] == ids  # in the order added, no repeats
    # exports: M3U8 with durations and URLs, CSV a spreadsheet can read
    m3u = c.get(f"/api/playlists/{pl['id']}/export.m3u8")
    assert 'filename="Trailer-picks.m3u8"' in m3u.headers["content-disposition"]
    lines = m3u.text.splitlines()
    assert lines[:2] == ["#EXTM3U", "#PLAYLIST:Trailer picks"]
    assert lines[2].startswith("#EXTINF:5,artist 1 - bass-groove 1")
    assert lines[3] == f"http://127.0.0.1/api/tracks/{ids[0]}/audio"
    rows = list(csv.DictReader(io.StringIO(c.get(f"/api/playlists/{pl['id']}/export.csv").text)))
    assert [int(r["id"]) for r in rows] == ids and rows[0]["file"] == "bass-groove-1.wav"
    assert rows[0]["position"] == "1" and float(rows[0]["duration_s"]) == 5.0
    assert c.get(f"/api/playlists/{pl['id']}/export.pdf").status_code == 404
    # remove one, then delete the playlist
    r = c.delete(f"/api/playlists/{pl['id']}/tracks/{ids[1]}")
    assert r.json()["n_tracks"] == 2
    assert [t["id"] for t in c.get(f"/api/playlists/{pl['id']}").json()["tracks"]] == [ids[0], ids[2]]
    assert any(p["id"] == pl["id"] for p in c.get("/api/playlists").json()["playlists"])
    assert c.delete(f"/api/playlists/{pl['id']}").status_code == 200
    assert c.get(f"/api/playlists/{pl['id']}").status_code == 404
    assert not any(p["id"] == pl["id"] for p in c.get("/api/playlists").json()["playlists"])


def test_playlists_survive_a_reopen(built):
    with TestClient(create_app(built.path), base_url="http://127.0.0.1") as c1:
        c1.get("/")
        c1.headers["X-CSRF-Token"] = c1.cookies.get("soundalike_csrf")
        pid = c1.post("/api/playlists", json={"name": "kept"}).json()["id"]
        c1.post(f"/api/playlists/{pid}/tracks", json={"track_ids": [built.ids["drum-loop"][0]]})
    with Catalog.open(built.path) as cat:
        assert cat.playlist_track_ids(pid) == [built.ids["drum-loop"][0]]
        cat.delete_playlist(pid)


def test_sort_orders_and_file_name_search(c, built):
    def ids(**params):
        return [t["id"] for t in c.get("/api/tracks", params={"limit": 100, **params}).json()["tracks"]]

    by_len = c.get("/api/tracks", params={"limit": 100, "sort": "length"}).json()["tracks"]
    lens = [t["duration_s"] for t in by_len]
    assert lens == sorted(lens) and lens[0] < lens[-1]
    titles = [t["display_title"].lower() for t in c.get("/api/tracks", params={"sort": "title"}).json()["tracks"]]
    assert titles == sorted(titles)
    added = ids(sort="added")
    assert added == sorted(added, reverse=True)  # newest first
    assert c.get("/api/tracks", params={"sort": "loudest"}).status_code == 422
    # the file name is searched too ("piano-arpeggio-1.wav" has no such title word "wav")
    assert ids(q="arpeggio-1.wav") == [built.ids["piano-arpeggio"][1]]
    assert ids(where="file:drum-loop") == sorted(built.ids["drum-loop"], key=lambda i: ids(sort="title").index(i))
    assert ids(q="audio") == []  # the folder (".../audio/") is not the file's name
    # no tempo measured in this catalog: sorting by BPM keeps every track, in id order
    unmeasured = c.get("/api/tracks", params={"sort": "bpm", "limit": 100}).json()["tracks"]
    assert [t["id"] for t in unmeasured] == sorted(t["id"] for t in unmeasured) and unmeasured
    # relevance: a title that starts with the words comes before one that only contains them
    rel = c.get("/api/tracks", params={"q": "groove"}).json()["tracks"]
    assert rel and all("groove" in (t["title"] + t["file"]) for t in rel)


def test_facets_of_some_categories_and_ranges(c, built):
    f = c.get("/api/facets", params=[("categories", "mood"), ("categories", "genre")]).json()
    assert set(f["facets"]) == {"mood", "genre"}
    lo, hi = f["ranges"]["duration"]
    assert lo == pytest.approx(2.0) and hi == pytest.approx(5.0)


def test_track_rows_carry_a_readable_title(c, built):
    t = c.get("/api/tracks", params={"limit": 1}).json()["tracks"][0]
    assert t["display_title"] and t["file"].endswith(".wav") and "added_at" in t


def test_peaks_are_computed_on_first_view_once_and_stored(tmp_path, catalog_target, monkeypatch):
    """A track ingested without peaks (a spread analysis decodes only its excerpts) gets
    them on its first request, over real HTTP: concurrent first requests decode the file
    once, every one gets the same answer, the catalog keeps them (both backends), and a
    file that is not the one ingested, or cannot be decoded, is the route's clear error."""
    import json
    import os
    import threading
    import urllib.error
    import urllib.request

    from soundalike.audio import peaks as P
    from test_web_hardening import _Server

    b = build_catalog(tmp_path, per_style=1, duration_s=4.0, target=catalog_target)
    with Catalog.open(b.path) as cat:
        ids = cat.ids_without_peaks()
        tracks = cat.get_tracks(ids)
    assert len(ids) == 5
    real, calls, gate = P.peaks_of_file, [], threading.Event()

    def slow(path, **kw):  # the first decode waits until every request is in
        calls.append(path)
        gate.wait(20)
        return real(path, **kw)

    monkeypatch.setattr(P, "peaks_of_file", slow)
    server = _Server(create_app(b.path))

    def get(tid):
        try:
            with urllib.request.urlopen(f"{server.url}/api/tracks/{tid}/peaks", timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        tid = ids[0]
        answers: list = []
        threads = [threading.Thread(target=lambda: answers.append(get(tid))) for _ in range(6)]
        for t in threads:
            t.start()
        deadline = time.time() + 30
        while not calls and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # the other five requests arrive while the first decodes
        gate.set()
        for t in threads:
            t.join(60)
        assert len(calls) == 1 and len(answers) == 6
        assert all(a == answers[0] for a in answers) and answers[0][0] == 200
        body = answers[0][1]
        want = real(tracks[tid].path)
        assert body["n"] == 1000 and body["max"] == want.max.tolist() and body["min"] == want.min.tolist()
        with Catalog.open(b.path) as cat:
            stored = cat.get_peaks(tid)
            assert stored is not None and stored.max.tolist() == body["max"] and tid not in cat.ids_without_peaks()
        assert get(tid) == answers[0] and len(calls) == 1  # from the catalog now: no decode
        # a file changed behind the catalog's back: not decoded, the track taken out of service
        changed = tracks[ids[1]]
        with open(changed.path, "ab") as f:
            f.write(b"\0" * 4096)
        status, err = get(ids[1])
        assert status == 409 and "run `soundalike ingest`" in err["detail"] and len(calls) == 1
        # a file that is the one catalogued but cannot be decoded: 422 naming it and why
        bad = tracks[ids[2]]
        Path(bad.path).write_bytes(b"not audio at all\n" * 200)
        st = os.stat(bad.path)
        with Catalog.open(b.path) as cat:
            cat.upsert_track(path=bad.path, content_hash="garbage", size=st.st_size, mtime=st.st_mtime)
        status, err = get(ids[2])
        assert status == 422 and Path(bad.path).name in err["detail"] and "not an audio file" in err["detail"]
        with Catalog.open(b.path) as cat:
            assert cat.get_peaks(ids[2]) is None
    finally:
        gate.set()
        server.stop()


@pytest.mark.parametrize("path, title", [
    ("/m/banjo/banjo_A3_05_forte_normal.mp3", "banjo A3 05 forte normal"),
    ("/m/song.hq.ogg", "song"),          # a quality suffix goes
    ("/m/mix.high.tar.gz", "mix.high.tar"),  # only right before the extension
    ("/m/x.preview", "x"),                # as the extension it is one like any other
    ("/m/.hidden", ".hidden"),            # a leading dot is no extension
    ("/m/..mp3", "."),                    # as pathlib's stem says
    ("/m/a.", "a."),
    ("/m/_ _.mp3", "_ _.mp3"),            # nothing readable left: the file's name
])
def test_title_from_path_reads_the_file_name(path, title):
    from soundalike.web.present import title_from_path

    assert title_from_path(path) == title
