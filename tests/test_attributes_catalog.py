"""Musical attributes in the catalog: storage, migration, filter terms, similar's diversity
and tempo tolerance, playlists from Python, the CLI and HTTP, ingest and refresh.

The catalog-level tests run on both backends (``catalog_target``: SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio import synth
from soundalike.catalog import query as q
from soundalike.catalog.schema import MIGRATIONS, SCHEMA_VERSION
from soundalike.catalog.store import Catalog, Tag
from soundalike.errors import QueryError

MODEL = "test-vectors-0001"
DIM = 8

#: name -> (artist, album, bpm, camelot, key (tonic, mode), loudness, vocals, energy, decoded s)
TRACKS = {
    "a": ("ann", "one", 120.0, "8A", (9, "minor"), -12.0, 0.9, 0.8, 200.0),
    "b": ("ann", "one", 122.0, "9A", (4, "minor"), -14.0, 0.1, 0.7, 61.0),
    "c": ("ann", "two", 60.5, "8B", (0, "major"), -20.0, 0.2, 0.3, 180.0),
    "d": ("bob", "three", 240.0, "7A", (2, "minor"), -9.0, 0.05, 0.9, 95.0),
    "e": ("bob", "three", 90.0, "3B", (1, "major"), -17.0, 0.6, 0.5, 120.0),
    "f": ("cid", "four", 126.0, "8A", (9, "minor"), -30.0, 0.3, 0.1, 300.0),
    "g": ("cid", "four", 100.0, "12B", (4, "major"), -11.0, 0.4, 0.45, 150.0),
    "h": ("dee", None, None, None, None, None, None, None, None),   # no attributes at all
}


def _vec(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    base = np.ones(DIM, np.float32)
    return (base + 0.5 * rng.standard_normal(DIM)).astype(np.float32)


@pytest.fixture()
def attr_catalog(catalog_target, tmp_path):
    """The tracks of :data:`TRACKS` with attributes, on each backend (SQLite, PostgreSQL)."""
    path = catalog_target
    ids = {}
    with Catalog.open(path) as cat:
        cat.register_model(model_id=MODEL, name="vectors", dim=DIM)
        for n, (name, (artist, album, bpm, code, key, lufs, voc, energy, dur)) in enumerate(TRACKS.items()):
            tid = cat.upsert_track(path=str(tmp_path / f"{name}.wav"), content_hash=f"hash-{name}", size=1,
                                   mtime=0.0, duration_s=(dur or 100.0) + 7.0, title=name, artist=artist,
                                   album=album)
            cat.put_analysis(tid, MODEL, _vec(n), {})
            if bpm is not None:
                cat.put_attributes(tid, {"duration_s": dur, "bpm": bpm, "bpm_confidence": 0.8,
                                         "bpm_alternative": bpm * 2, "bpm_ambiguous": False,
                                         "key_tonic": key[0], "key_mode": key[1], "camelot": code,
                                         "key_confidence": 0.5, "loudness_lufs": lufs,
                                         "loudness_range_lu": 5.0, "vocals": voc, "energy": energy,
                                         "seconds_read": 45.0}, model_id=MODEL)
            ids[name] = tid
    return path, ids


# --------------------------------------------------------------------------- storage


def test_attributes_round_trip_and_summary(attr_catalog):
    path, ids = attr_catalog
    with Catalog.open(path) as cat:
        a = cat.track_attributes(ids["a"])
        assert a["bpm"] == 120.0 and a["camelot"] == "8A" and a["bpm_ambiguous"] is False
        assert a["key_mode"] == "minor" and a["model_id"] == MODEL and a["version"] == 1
        assert cat.track_attributes(ids["h"]) is None
        assert set(cat.attributes_of(ids.values())) == set(ids.values()) - {ids["h"]}
        assert cat.ids_needing_attributes(version=1) == [ids["h"]]
        assert set(cat.ids_needing_attributes(version=2)) == set(ids.values())
        s = cat.stats()["attributes"]
        assert s["tracks"] == 7 and s["bpm_range"] == [60.5, 240.0] and s["keys"]["8A"] == 2
        assert s["vocals"] == {"yes": 2, "no": 5}


def test_v2_catalog_migrates_to_attributes(tmp_path):
    # a catalog one version before the attributes migration (every earlier table there,
    # no track_attributes) gains the table and keeps its tracks
    from soundalike.catalog.backends import open_backend
    from soundalike.catalog.schema import migrate

    at = next(i for i, m in enumerate(MIGRATIONS) if m.description.startswith("musical attributes"))
    path = tmp_path / "old.sqlite"
    backend = open_backend(path, create=True, timeout_s=10)
    migrate(backend, upto=at)
    backend.close()
    con = sqlite3.connect(path)
    con.execute("INSERT INTO tracks (path, content_hash, size, mtime, status, added_at, updated_at) "
                "VALUES ('/x.wav', 'h', 1, 0, 'ok', 0, 0)")
    con.commit()
    assert con.execute("PRAGMA user_version").fetchone()[0] == at
    con.close()
    with Catalog.open(path) as cat:
        assert cat.schema_version == SCHEMA_VERSION
        tid = cat.find_tracks("/x.wav")[0].id
        assert cat.track_attributes(tid) is None
        cat.put_attributes(tid, {"bpm": 99.0})
        assert cat.track_attributes(tid)["bpm"] == 99.0


# --------------------------------------------------------------------------- filter grammar


FILTERS = [
    ("bpm:118..124", {"a", "b"}),
    ("bpm:..100", {"c", "e", "g"}),
    ("-bpm:100..", {"c", "e", "h"}),                   # negation keeps tracks without a tempo
    ("key:8A|9A", {"a", "b", "f"}),
    ("key:am", {"a", "f"}),
    ("key:C", {"c"}),
    ("key:c#|Db", {"e"}),
    ("loudness:-16..-10", {"a", "b", "g"}),
    ("loudness:..-25", {"f"}),
    ("vocals:no", {"b", "c", "d", "f", "g"}),
    ("vocals:yes", {"a", "e"}),
    ("-vocals:yes", {"b", "c", "d", "f", "g", "h"}),
    ("energy:high", {"a", "b", "d"}),
    ("energy:low", {"c", "f"}),
    ("energy:0.4..0.6", {"e", "g"}),
    ("duration:60..180", {"b", "c", "d", "e", "g", "h"}),  # decoded length (h: the header's)
    ("duration:100..110", {"h"}),                      # no attributes: the header's length
    ("duration:185..190", set()),                      # c's header says 187, decoded 180
    ("bpm:100..130 vocals:no", {"b", "f", "g"}),
    ("lra:5", {"a", "b", "c", "d", "e", "f", "g"}),
]


@pytest.mark.parametrize("where,expected", FILTERS)
def test_attribute_filters(attr_catalog, where, expected):
    path, ids = attr_catalog
    with Catalog.open(path) as cat:
        got = {n for n, i in ids.items() if i in set(cat.match(where).tolist())}
    assert got == expected


@pytest.mark.parametrize("code,expected", [
    ("8A", {"a", "b", "c", "d", "f"}),    # same, 9A, 7A, relative 8B
    ("12B", {"g"}),                       # 1B, 11B, 12A: nobody else
])
def test_key_compatible_is_relative_to_the_reference(attr_catalog, code, expected):
    path, ids = attr_catalog
    with Catalog.open(path) as cat:
        got = {n for n, i in ids.items() if i in set(cat.match("key:compatible",
                                                               reference={"camelot": code}).tolist())}
    assert got == expected


@pytest.mark.parametrize("where,message", [
    ("key:13A", "Camelot"), ("key:h", "key name"), ("bpm:fast", "number"),
    ("loudness:-10..-16", "empty range"), ("energy:extreme", "number"),
])
def test_bad_attribute_terms(where, message):
    with pytest.raises(QueryError, match=message):
        q.parse(where)


def test_key_compatible_needs_a_query_track(attr_catalog):
    path, _ = attr_catalog
    with Catalog.open(path) as cat, pytest.raises(QueryError, match="query track"):
        cat.match("key:compatible")
    with Catalog.open(path) as cat, pytest.raises(QueryError, match="no key yet"):
        cat.match("key:compatible", reference={})


def test_vocals_other_values_stay_tags():
    t = q.parse("vocals:female").terms[0]
    assert t.kind == "tag" and t.field == "vocals"


# --------------------------------------------------------------------------- similar


def test_similar_caps_duplicates_and_why(attr_catalog, tmp_path):
    from soundalike.search.similar import similar

    path, ids = attr_catalog
    with Catalog.open(path) as cat:  # a copy of "a" (same content) and a near-identical version
        dup = cat.upsert_track(path=str(tmp_path / "a-copy.wav"), content_hash="hash-a", size=1, mtime=0.0,
                               title="a copy", artist="zed", album="x")
        cat.put_analysis(dup, MODEL, _vec(0) * 1.5 + 0.3, {})
        ver = cat.upsert_track(path=str(tmp_path / "a-edit.wav"), content_hash="other", size=1, mtime=0.0,
                               title="a (radio edit)", artist="ann", album="y")
        cat.put_analysis(ver, MODEL, _vec(0), {})
    hits = similar(ids["a"], k=20, catalog=path)
    got = [h.track.id for h in hits]
    assert ids["a"] not in got and dup not in got and ver not in got
    with_dups = [h.track.id for h in similar(ids["a"], k=20, catalog=path, include_duplicates=True)]
    assert dup in with_dups and ver in with_dups
    capped = similar(ids["a"], k=20, catalog=path, max_per_album=1, max_per_artist=1)
    artists = [h.track.artist for h in capped]
    assert len(artists) == len(set(artists)) and len(capped) >= 3
    h = next(h for h in hits if h.track.id == ids["b"])
    assert "122 BPM (query 120 BPM)" in h.why and "9A (query 8A)" in h.why and "1:01 (query 3:20)" in h.why
    d = h.to_dict()
    assert d["bpm"] == 122.0 and d["camelot"] == "9A" and d["why"] == h.why


def test_similar_bpm_tolerance_is_octave_aware(attr_catalog):
    from soundalike.search.similar import similar

    path, ids = attr_catalog
    got = {h.track.id for h in similar(ids["a"], k=20, catalog=path, bpm_tolerance="6%")}
    assert got == {ids["b"], ids["c"], ids["d"], ids["f"]}      # 122, 60.5 (x2), 240 (/2), 126
    got = {h.track.id for h in similar(ids["a"], k=20, catalog=path, bpm_tolerance=0.02)}
    assert got == {ids["b"], ids["c"], ids["d"]}
    with pytest.raises(QueryError, match="no tempo"):
        similar(ids["h"], k=3, catalog=path, bpm_tolerance="6%")
    with pytest.raises(QueryError, match="percentage"):
        similar(ids["a"], k=3, catalog=path, bpm_tolerance="fast")


def test_similar_key_compatible(attr_catalog):
    from soundalike.search.similar import similar

    path, ids = attr_catalog
    got = {h.track.id for h in similar(ids["a"], k=20, catalog=path, where="key:compatible")}
    assert got == {ids["b"], ids["c"], ids["d"], ids["f"]}
    got = {h.track.id for h in similar(ids["g"], k=20, catalog=path, where="key:compatible")}
    assert got == set()


# --------------------------------------------------------------------------- playlists


def test_playlist_radio_and_path_from_python(attr_catalog, tmp_path):
    import soundalike

    path, ids = attr_catalog
    pl = soundalike.playlist(seed=str(ids["a"]), length=30, catalog=path)
    got = [e.track.id for e in pl.entries]
    assert got[0] == ids["a"] and len(got) == len(set(got)) == len(ids)
    pl = soundalike.playlist(seed=ids["a"], length=30, catalog=path, max_per_artist=1)
    assert len({e.track.artist for e in pl.entries}) == len(pl) == 4
    pl = soundalike.playlist(seed=ids["a"], length=30, catalog=path, where="vocals:no")
    assert {e.track.id for e in pl.entries[1:]} <= {ids[n] for n in "bcdfg"}
    p = soundalike.playlist(start=ids["c"], end=ids["d"], length=6, catalog=path)
    assert p.entries[0].track.id == ids["c"] and p.entries[-1].track.id == ids["d"]
    prog = [e.progress for e in p.entries]
    assert prog[0] == 0.0 and prog[-1] == 1.0 and all(b >= a for a, b in zip(prog, prog[1:]))
    out = p.write(tmp_path / "mix.m3u8")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("#EXTM3U\n") and text.count("#EXTINF:") == len(p)
    assert json.loads(p.to_json())["kind"] == "path"
    assert p.to_csv().splitlines()[0].startswith("position,id,path")
    with pytest.raises(QueryError):
        soundalike.playlist(seed=ids["a"], start=ids["b"], end=ids["c"], catalog=path)
    with pytest.raises(QueryError):
        p.write(tmp_path / "mix.txt")


def test_playlist_cli_and_http(attr_catalog, tmp_path):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from soundalike.cli import app
    from soundalike.web.app import create_app

    path, ids = attr_catalog
    out = tmp_path / "radio.csv"
    r = CliRunner().invoke(app, ["playlist", "--seed", str(ids["a"]), "--length", "5", "--catalog", str(path),
                                 "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert [t["id"] for t in body["tracks"]][0] == ids["a"] and len(body["tracks"]) == 5
    assert len(out.read_text().splitlines()) == 6
    with TestClient(create_app(path), raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
        j = c.get("/api/playlist", params={"from": ids["c"], "to": ids["d"], "length": 5}).json()
        assert j["tracks"][0]["id"] == ids["c"] and j["tracks"][-1]["id"] == ids["d"]
        m = c.get("/api/playlist", params={"seed": ids["a"], "length": 4, "format": "m3u8"})
        assert m.status_code == 200 and m.text.startswith("#EXTM3U")
        s = c.get("/api/similar", params={"id": ids["a"], "k": 10, "max_per_album": 1,
                                          "bpm_tolerance": "6%"}).json()
        assert {h["id"] for h in s["hits"]} <= {ids[n] for n in "bcdf"} and s["query"]["bpm"] == 120.0
        assert len({(h["artist"], h["album"]) for h in s["hits"]}) == len(s["hits"])
        assert c.get("/api/playlist", params={"seed": ids["a"], "from": ids["b"]}).status_code == 400
        assert c.get("/api/playlist", params={"seed": 9999}).status_code == 404


# --------------------------------------------------------------------------- ingest + refresh


@pytest.fixture(scope="module")
def drum_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("drums")
    for bpm in (96, 132):
        sf.write(d / f"drums-{bpm}.wav", synth.drum_pattern(bpm=bpm, duration_s=20.0, sr=22050, seed=bpm), 22050)
    return d


def test_ingest_stores_attributes_and_vocabulary_categories(drum_folder, tmp_path):
    from soundalike.audio.attributes import tempo_distance
    from soundalike.ingest import ingest
    from soundalike.models.vocabulary import CATEGORIES

    cat_path = tmp_path / "c.sqlite"
    s = ingest([drum_folder], catalog=cat_path, model="MTT_musicnn", workers=1)
    assert s.ingested == 2
    with Catalog.open(cat_path) as cat:
        for t in cat.iter_tracks():
            bpm = int(t.path.rsplit("-", 1)[1].split(".")[0])
            a = cat.track_attributes(t.id)
            assert tempo_distance(a["bpm"], bpm) <= 0.02, (a, bpm)
            assert a["duration_s"] == pytest.approx(20.0, abs=0.01)
            assert a["loudness_lufs"] is not None and a["camelot"] is not None
            assert 0.0 <= a["vocals"] <= 1.0 and 0.0 <= a["energy"] <= 1.0
            model_tags = [g for g in cat.track_tags(t.id) if g.source == "model"]
            assert model_tags and all(g.category in CATEGORIES for g in model_tags)
        assert "tag" not in cat.facets()


def test_refresh_attributes_and_tags_without_the_network(drum_folder, tmp_path):
    from soundalike.ingest import ingest
    from soundalike.ingest.refresh import refresh

    cat_path = tmp_path / "c.sqlite"
    ingest([drum_folder], catalog=cat_path, model="MTT_musicnn", workers=1)
    with Catalog.open(cat_path) as cat:  # as an older catalog: no attributes, tags in "tag"
        before = {t.id: cat.track_attributes(t.id) for t in cat.iter_tracks()}
        mid = cat.default_model_id()
        for t in cat.iter_tracks():
            tags = [Tag(g.tag, "tag", "model", g.confidence, mid) for g in cat.track_tags(t.id)
                    if g.source == "model"]
            with cat.transaction():
                cat.set_tags(t.id, tags, source="model", model_id=mid)
    con = sqlite3.connect(cat_path)
    con.execute("DELETE FROM track_attributes")
    con.commit()
    con.close()
    events = []
    s = refresh(["attributes", "tags"], catalog=cat_path, workers=1, on_event=events.append)
    assert s.attributes == 2 and s.tags == 2 and s.failed == 0
    assert events[0] == {"event": "start", "total": 2}
    with Catalog.open(cat_path) as cat:
        for tid, old in before.items():
            new = cat.track_attributes(tid)
            assert new["bpm"] == pytest.approx(old["bpm"], rel=0.01)
            assert new["camelot"] == old["camelot"] and new["vocals"] == pytest.approx(old["vocals"])
        assert "tag" not in cat.facets()
    again = refresh(["attributes"], catalog=cat_path, workers=1)
    assert again.attributes == 0                      # nothing missing or stale
    with pytest.raises(Exception, match="refresh takes"):
        refresh(["everything"], catalog=cat_path)


def test_refresh_reports_a_vanished_file(drum_folder, tmp_path):
    import shutil

    from soundalike.ingest import ingest
    from soundalike.ingest.refresh import refresh

    src = tmp_path / "music"
    shutil.copytree(drum_folder, src)
    cat_path = tmp_path / "c.sqlite"
    ingest([src], catalog=cat_path, model="mfcc-stats", workers=1)
    (src / "drums-96.wav").unlink()
    s = refresh(["attributes"], catalog=cat_path, force=True, workers=1)
    assert s.attributes == 1 and s.failed == 1 and "drums-96.wav" in s.errors[0][0]


def test_cli_refresh_and_info(drum_folder, tmp_path):
    from typer.testing import CliRunner

    from soundalike.cli import app

    cat_path = tmp_path / "c.sqlite"
    runner = CliRunner()
    r = runner.invoke(app, ["ingest", str(drum_folder), "--catalog", str(cat_path), "--model", "mfcc-stats",
                            "--workers", "1", "--json"])
    assert r.exit_code == 0, r.output
    con = sqlite3.connect(cat_path)
    con.execute("DELETE FROM track_attributes")
    con.commit()
    con.close()
    r = runner.invoke(app, ["ingest", "--refresh", "attributes", "--catalog", str(cat_path), "--workers", "1",
                            "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["attributes"] == 2
    r = runner.invoke(app, ["info", "drums-132", "--catalog", str(cat_path)])
    assert r.exit_code == 0 and "tempo" in r.output and "LUFS" in r.output
    r = runner.invoke(app, ["catalog", "stats", "--catalog", str(cat_path)])
    assert r.exit_code == 0 and "attributes 2 tracks" in r.output
    import subprocess
    import sys

    for args, message in ((["ingest"], "give folders or files"), (["ingest", "--refresh", "nonsense"], "refresh takes")):
        p = subprocess.run([sys.executable, "-m", "soundalike", *args, "--catalog", str(cat_path)],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode != 0 and message in p.stderr, p.stderr


def test_page_api_carries_bpm_and_key(attr_catalog):
    """The buyer's page gets each row's BPM and Camelot key, and the catalog's BPM bounds and
    keys for its slider and key menu, from the stored attributes."""
    from fastapi.testclient import TestClient

    from soundalike.web.app import create_app

    path, ids = attr_catalog
    with Catalog.open(path) as cat:
        attrs = cat.attributes_of(ids.values())
    measured = {tid: a for tid, a in attrs.items() if a.get("bpm") is not None}
    assert measured  # the fixture has tracks with and without attributes
    with TestClient(create_app(path), raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
        rows = c.get("/api/tracks", params={"limit": 100}).json()["tracks"]
        by_id = {r["id"]: r for r in rows}
        for tid in ids.values():
            if tid in measured:
                assert by_id[tid]["bpm"] == pytest.approx(measured[tid]["bpm"], abs=0.05)
                assert by_id[tid]["key"] == measured[tid]["camelot"]
            else:
                assert "bpm" not in by_id[tid] and "key" not in by_id[tid]
        f = c.get("/api/facets").json()
        bpms = [a["bpm"] for a in measured.values()]
        lo, hi = f["ranges"]["bpm"]
        assert lo <= min(bpms) and hi >= max(bpms) and hi - lo <= max(bpms) - min(bpms) + 2
        assert {k["key"] for k in f["keys"]} == {a["camelot"] for a in measured.values() if a["camelot"]}
        by_bpm = [r.get("bpm") for r in c.get("/api/tracks", params={"limit": 100, "sort": "bpm"}).json()["tracks"]]
        known = [b for b in by_bpm if b is not None]
        assert known == sorted(known) and by_bpm[:len(known)] == known  # slowest first, unmeasured last
        # the slider's bpm: term narrows the list to the tracks in range
        mid = sorted(bpms)[len(bpms) // 2]
        got = c.get("/api/tracks", params={"where": f"bpm:{mid - 1}..{mid + 1}"}).json()["tracks"]
        assert got and all(mid - 1 <= r["bpm"] <= mid + 1 for r in got)


# --------------------------------------------------------------------------- unsure tempo


@pytest.mark.parametrize("row,shown", [
    ({"bpm": 93.0, "bpm_confidence": 0.02}, None),       # an ambient drone's "tempo"
    ({"bpm": 93.0, "bpm_confidence": 0.9}, 93.0),
    ({"bpm": 93.0, "bpm_confidence": None}, 93.0),       # no confidence stored: as measured
    ({"bpm": None, "bpm_confidence": 0.9}, None),
    (None, None),
])
def test_shown_bpm_hides_unsure_tempi(row, shown):
    from soundalike.audio.attributes import TEMPO_MIN_CONFIDENCE, shown_bpm, tempo_unsure

    assert shown_bpm(row) == shown
    assert tempo_unsure(row) == (row is not None and row.get("bpm") is not None and shown is None)
    edge = {"bpm": 100.0, "bpm_confidence": TEMPO_MIN_CONFIDENCE}
    assert shown_bpm(edge) == 100.0 and shown_bpm({**edge, "bpm_confidence": TEMPO_MIN_CONFIDENCE - 0.001}) is None


def test_threshold_separates_drones_from_beats():
    """The shipped threshold keeps a drum loop's and an arpeggio's tempo and hides a drone's
    and a noise texture's (the demo catalog's styles, read the way ingest reads them)."""
    from soundalike.audio import attributes as A

    def conf(style, seed):
        y = synth.demo_track(style, seed=seed, duration_s=45.0, sr=16000)
        t = A.estimate_tempo(y=y, sr=16000, slices=A.excerpt_slices(len(y), 16000))
        return t.confidence if t else 0.0

    for seed in (1, 2):
        assert conf("drum-loop", seed) >= A.TEMPO_MIN_CONFIDENCE
        assert conf("piano-arpeggio", seed) >= A.TEMPO_MIN_CONFIDENCE
        assert conf("ambient-drone", seed) < A.TEMPO_MIN_CONFIDENCE
        assert conf("noise-texture", seed) < A.TEMPO_MIN_CONFIDENCE


def test_unsure_tempo_reads_unknown_in_why_info_and_web_rows(attr_catalog):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from soundalike.cli import app
    from soundalike.search.similar import similar
    from soundalike.web.app import create_app

    path, ids = attr_catalog
    with Catalog.open(path) as cat:  # b: a tempo measured on audio without a steady beat
        a = cat.track_attributes(ids["b"])
        cat.put_attributes(ids["b"], {k: a[k] for k in a if k not in ("model_id", "version")}
                           | {"bpm_confidence": 0.02}, model_id=MODEL)
    h = next(h for h in similar(ids["a"], k=20, catalog=path) if h.track.id == ids["b"])
    assert "? BPM (query 120 BPM)" in h.why and "122" not in h.why and "9A (query 8A)" in h.why
    back = next(h for h in similar(ids["b"], k=20, catalog=path) if h.track.id == ids["a"])
    assert "120 BPM (query ? BPM)" in back.why
    assert h.to_dict()["bpm"] == 122.0 and h.to_dict()["bpm_confidence"] == 0.02  # the data stays
    r = CliRunner().invoke(app, ["info", str(ids["b"]), "--catalog", str(path)])
    assert r.exit_code == 0 and "? (no steady beat: 122.0 at confidence 0.02" in r.output, r.output
    r = CliRunner().invoke(app, ["info", str(ids["a"]), "--catalog", str(path)])
    assert "120.0 (confidence 0.80" in r.output
    r = CliRunner().invoke(app, ["similar", str(ids["a"]), "--catalog", str(path), "-k", "20"])
    assert r.exit_code == 0 and "? BPM" in r.output
    with TestClient(create_app(path), raise_server_exceptions=False, base_url="http://127.0.0.1") as c:
        rows = {t["id"]: t for t in c.get("/api/tracks", params={"limit": 100}).json()["tracks"]}
        assert "bpm" not in rows[ids["b"]] and rows[ids["b"]]["bpm_unsure"] is True
        assert rows[ids["a"]]["bpm"] == 120.0 and "bpm_unsure" not in rows[ids["a"]]
        s = c.get("/api/similar", params={"id": ids["a"], "k": 20}).json()
        hb = next(x for x in s["hits"] if x["id"] == ids["b"])
        assert hb["bpm"] is None and hb["bpm_unsure"] is True and "? BPM" in hb["why"]
        assert s["query"]["bpm"] == 120.0 and s["query"]["bpm_unsure"] is False
