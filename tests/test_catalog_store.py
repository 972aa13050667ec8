"""The catalog store on a real SQLite file and a real PostgreSQL database: schema,
migrations, transactions, queries."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from soundalike.catalog.store import SCHEMA_VERSION, Catalog, Tag
from soundalike.errors import CatalogError


def _add(cat: Catalog, path: str, **kw) -> int:
    return cat.upsert_track(path=path, content_hash=kw.pop("h", path), size=10, mtime=1.0, **kw)


def test_new_catalog_has_current_schema_and_wal(tmp_path):
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        assert cat.schema_version == SCHEMA_VERSION
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:  # an outside observer
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        assert cat.count_tracks() == 0


def test_newer_schema_is_refused_not_damaged(tmp_path):
    p = tmp_path / "c.sqlite"
    Catalog.open(p).close()
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.commit()
    conn.close()
    with pytest.raises(CatalogError, match="newer"):
        Catalog.open(p)


def test_not_a_database_is_a_catalog_error(tmp_path):
    p = tmp_path / "c.sqlite"
    p.write_text("this is not sqlite" * 100)
    with pytest.raises(CatalogError, match="not a soundalike catalog"):
        Catalog.open(p)


def test_open_missing_without_create(tmp_path):
    with pytest.raises(CatalogError, match="no catalog here"):
        Catalog.open(tmp_path / "nope.sqlite", create=False)


def test_upsert_is_idempotent_by_path(catalog_target):
    with Catalog.open(catalog_target) as cat:
        a = _add(cat, "/m/a.wav", title="A")
        b = _add(cat, "/m/a.wav", title="A2")
        assert a == b
        assert cat.count_tracks() == 1
        assert cat.get_track(a).title == "A2"


def test_transaction_rolls_back_everything_on_error(catalog_target):
    with Catalog.open(catalog_target) as cat:
        cat.register_model(model_id="m1", name="test", dim=4)
        with pytest.raises(RuntimeError):
            with cat.transaction():
                tid = _add(cat, "/m/a.wav")
                cat.put_analysis(tid, "m1", np.ones(4, np.float32), {})
                raise RuntimeError("boom")
        assert cat.count_tracks() == 0
        assert cat.count_analyses() == 0


def test_embeddings_round_trip_float32(catalog_target):
    with Catalog.open(catalog_target) as cat:
        cat.register_model(model_id="m1", name="test", dim=3, labels=["x", "y"])
        rng = np.random.default_rng(0)
        vecs = {}
        for i in range(5):
            tid = _add(cat, f"/m/{i}.wav")
            vecs[tid] = rng.standard_normal(3).astype(np.float32)
            cat.put_analysis(tid, "m1", vecs[tid], {"x": 0.25})
        ids, X = cat.embeddings("m1")
        assert X.dtype == np.float32 and X.shape == (5, 3)
        for tid, row in zip(ids, X):
            np.testing.assert_array_equal(row, vecs[int(tid)])
        assert cat.get_analysis(int(ids[0]), "m1").predictions == {"x": 0.25}
        assert cat.default_model_id() == "m1"
        assert cat.models()[0].labels == ["x", "y"]


def test_nan_embedding_is_refused(catalog_target):
    with Catalog.open(catalog_target) as cat:
        cat.register_model(model_id="m1", name="test", dim=2)
        tid = _add(cat, "/m/a.wav")
        with pytest.raises(CatalogError, match="NaN"):
            cat.put_analysis(tid, "m1", np.array([np.nan, 1], np.float32))


def test_tags_are_kept_apart_by_source(catalog_target):
    with Catalog.open(catalog_target) as cat:
        tid = _add(cat, "/m/a.wav")
        cat.set_tags(tid, [Tag("Rock", "Genre", "file")], source="file")
        cat.add_tag(tid, Tag("calm", "mood", "user"))
        cat.set_tags(tid, [Tag("guitar", "tag", "model", 0.9, "m1")], source="model", model_id="m1")
        # Replacing model tags leaves file and user tags alone.
        cat.set_tags(tid, [Tag("piano", "tag", "model", 0.8, "m1")], source="model", model_id="m1")
        tags = {(t.category, t.tag, t.source) for t in cat.track_tags(tid)}
        assert tags == {("genre", "rock", "file"), ("mood", "calm", "user"), ("tag", "piano", "model")}
        assert cat.tag_counts()["genre"] == {"rock": 1}
        with pytest.raises(CatalogError):
            Tag("x", "y", "bogus")  # type: ignore[arg-type]


def test_mark_missing_keeps_rows_and_find_tracks(catalog_target):
    with Catalog.open(catalog_target) as cat:
        a = _add(cat, "/m/a.wav", title="Blue Moon", artist="Someone")
        _add(cat, "/m/b.wav", title="Red Sun")
        assert cat.mark_missing([a]) == 1
        assert cat.count_tracks("ok") == 1 and cat.count_tracks("missing") == 1
        assert cat.get_track(a).status == "missing"
        assert [t.id for t in cat.find_tracks(str(a))] == [a]
        assert [t.title for t in cat.find_tracks("moon")] == ["Blue Moon"]
        assert [t.title for t in cat.find_tracks("/m/b.wav")] == ["Red Sun"]
        assert cat.find_tracks("100%_") == []  # LIKE wildcards are escaped


#: The v1 schema exactly as soundalike 0.1 wrote it (kept here, apart from the code under
#: test, so the migration is checked against what old files really hold).
V1_SCHEMA = """
CREATE TABLE tracks (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, content_hash TEXT NOT NULL,
    size INTEGER NOT NULL, mtime REAL NOT NULL, duration_s REAL, sr INTEGER, channels INTEGER, format TEXT,
    title TEXT, artist TEXT, album TEXT, genre TEXT, year INTEGER,
    status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'missing')),
    added_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX tracks_hash ON tracks(content_hash);
CREATE INDEX tracks_status ON tracks(status);
CREATE TABLE tags (track_id INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE, tag TEXT NOT NULL,
    category TEXT NOT NULL, source TEXT NOT NULL CHECK (source IN ('file', 'user', 'model', 'suggested')),
    confidence REAL NOT NULL DEFAULT 1.0, model_id TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (track_id, category, tag, source, model_id));
CREATE INDEX tags_lookup ON tags(category, tag);
CREATE TABLE models (model_id TEXT PRIMARY KEY, name TEXT NOT NULL, dim INTEGER NOT NULL,
    labels TEXT NOT NULL DEFAULT '[]', label_category TEXT NOT NULL DEFAULT 'tag', created_at REAL NOT NULL);
CREATE TABLE analyses (track_id INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
    model_id TEXT NOT NULL REFERENCES models(model_id), embedding BLOB NOT NULL, dim INTEGER NOT NULL,
    predictions TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, PRIMARY KEY (track_id, model_id));
CREATE INDEX analyses_model ON analyses(model_id);
CREATE TABLE ingest_errors (id INTEGER PRIMARY KEY, path TEXT NOT NULL, reason TEXT NOT NULL,
    error_type TEXT NOT NULL, size INTEGER, mtime REAL, time REAL NOT NULL);
CREATE INDEX ingest_errors_path ON ingest_errors(path);
PRAGMA user_version = 1;
"""


def test_a_v1_file_migrates_and_keeps_everything(tmp_path):
    p = tmp_path / "old.sqlite"
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 4)).astype(np.float32)
    conn = sqlite3.connect(p)
    conn.executescript(V1_SCHEMA)
    conn.execute("INSERT INTO models VALUES ('m1', 'test', 4, '[\"a\"]', 'genre', 1.0)")
    for i in range(3):
        conn.execute("INSERT INTO tracks (path, content_hash, size, mtime, title, added_at, updated_at) "
                     "VALUES (?, ?, 10, 1.0, ?, 1.0, 1.0)", (f"/m/{i}.wav", f"h{i}", f"T{i}"))
        conn.execute("INSERT INTO analyses VALUES (?, 'm1', ?, 4, '{\"a\": 0.5}', 1.0)", (i + 1, X[i].tobytes()))
        conn.execute("INSERT INTO tags VALUES (?, 'rock', 'genre', 'file', 1.0, '')", (i + 1,))
    conn.commit()
    conn.close()
    with Catalog.open(p) as cat:
        assert cat.schema_version == SCHEMA_VERSION
        ids, got = cat.embeddings("m1")
        assert ids.tolist() == [1, 2, 3]
        np.testing.assert_array_equal(got, X)
        assert cat.get_analysis(2, "m1").predictions == {"a": 0.5}
        assert [t.tag for t in cat.track_tags(3)] == ["rock"]
        _, versions = cat.analysis_versions("m1")
        assert (versions > 0).all() and len(set(versions.tolist())) == 3  # old rowid order kept
        before = cat.change_token()
        assert before > versions.max() - 1
        cat.put_analysis(1, "m1", X[2])
        _, after = cat.analysis_versions("m1")
        assert after[0] > versions.max() and cat.change_token() > before  # re-made: newest version
    with Catalog.open(p) as cat:  # opening again changes nothing
        assert cat.schema_version == SCHEMA_VERSION and cat.count_analyses() == 3


def test_change_token_moves_on_every_commit_and_only_then(catalog_target):
    with Catalog.open(catalog_target) as cat:
        cat.register_model(model_id="m1", name="test", dim=4)
        t0 = cat.change_token()
        a = _add(cat, "/m/a.wav")
        t1 = cat.change_token()
        assert t1 > t0
        cat.get_track(a), cat.match("genre:rock"), cat.stats()  # reads leave it alone
        assert cat.change_token() == t1
        with cat.transaction():  # one transaction, however many writes: one step
            cat.put_analysis(a, "m1", np.ones(4, np.float32))
            cat.set_tags(a, [Tag("rock", "genre", "file")], source="file")
        t2 = cat.change_token()
        assert t2 == t1 + 1
        _, (v,) = cat.analysis_versions("m1")
        assert v == t2  # the analysis carries its transaction's version
        cat.add_tag(a, Tag("calm", "mood", "user"))
        t3 = cat.change_token()
        cat.mark_missing([a])
        t4 = cat.change_token()
        assert t2 < t3 < t4
        assert cat.analysis_versions("m1")[0].tolist() == []  # missing tracks leave the index set
        with pytest.raises(RuntimeError), cat.transaction():
            cat.add_tag(a, Tag("x", "mood", "user"))
            raise RuntimeError("rolled back")
        assert cat.change_token() == t4


def test_other_connections_see_the_token_move(catalog_target):
    with Catalog.open(catalog_target) as reader, Catalog.open(catalog_target) as writer:
        before = reader.change_token()
        _add(writer, "/m/a.wav")
        assert reader.change_token() > before


def test_a_writer_in_the_way_is_a_busy_error_and_nothing_is_written(catalog_target):
    from soundalike.errors import CatalogBusyError

    with Catalog.open(catalog_target) as a, Catalog.open(catalog_target, timeout_s=0.3) as b:
        with a.transaction():
            _add(a, "/m/a.wav")
            with pytest.raises(CatalogBusyError, match="try again"):
                _add(b, "/m/a.wav")  # waits for a's uncommitted row, then gives up
        assert b.count_tracks() == 1
        _add(b, "/m/a.wav")  # and once a committed, the same write goes through
        assert b.count_tracks() == 1


# --------------------------------------------------------------------------- one ingested file


def _catalog_rows(cat: Catalog) -> dict:
    """Every row ingest writes, without ids and times (compared across two catalogs)."""
    out = {}
    for t in cat.iter_tracks(status=None):
        d = t.to_dict()
        key = d.pop("path")
        for k in ("id", "added_at", "updated_at"):
            d.pop(k)
        d["tags"] = sorted((g.tag, g.category, g.source, g.confidence, g.model_id) for g in cat.track_tags(t.id))
        d["analyses"] = sorted((a.model_id, a.embedding.tobytes(), a.predictions, a.analysis)
                               for a in cat.track_analyses(t.id))
        pk = cat.get_peaks(t.id)
        d["peaks"] = None if pk is None else (pk.to_bytes(), pk.duration_s)
        d["attributes"] = cat.track_attributes(t.id)
        out[key] = d
    out["errors"] = [(e.path, e.reason) for e in cat.errors()]
    return out


def test_put_ingested_writes_what_the_single_methods_write(catalog_target, tmp_path):
    """The ingest driver's one-call commit equals upsert_track + set_tags + put_analysis +
    put_peaks + put_attributes + clear_error, on both backends: first ingest, then a
    re-ingest of a changed file whose tags shrank (old tags go, others stay)."""
    from soundalike.audio.peaks import Peaks

    rng = np.random.default_rng(3)
    peaks = Peaks(min=-rng.integers(0, 127, 50).astype(np.int8), max=rng.integers(0, 127, 50).astype(np.int8),
                  duration_s=12.5)
    attrs = {"duration_s": 12.5, "bpm": 121.0, "bpm_confidence": 0.8, "bpm_alternative": 60.5,
             "bpm_ambiguous": True, "key_tonic": 9, "key_mode": "minor", "camelot": "8A",
             "key_confidence": 0.6, "loudness_lufs": -11.5, "loudness_range_lu": 4.0, "vocals": 0.2,
             "energy": 0.7, "seconds_read": 9.0}

    def versions(n_file_tags: int, h: str):
        track = dict(path="/m/a.mp3", content_hash=h, size=10, mtime=2.0, duration_s=12.5, sr=44100,
                     channels=2, format="mp3", title="A", artist="B", album="C", genre="rock", year=1999,
                     inode=(1 << 64) - 5, device=7)
        # a repeated tag keeps its last confidence, as one upsert after another did
        file_tags = [Tag("rock", "genre", "file"), Tag("B", "artist", "file"), Tag("X", "tag", "file")][:n_file_tags]
        model_tags = [Tag("guitar", "instrument", "model", 0.9, "m1"), Tag("slow", "tag", "model", 0.4, "m1"),
                      Tag("Slow", "tag", "model", 0.5, "m1")][: n_file_tags + 1]
        return track, file_tags, model_tags, rng.standard_normal(4).astype(np.float32), {"guitar": 0.9, "slow": 0.5}

    targets = {"one call": catalog_target, "single methods": tmp_path / "single.sqlite"}
    seen = {}
    for step, (n, h) in enumerate([(3, "h1"), (1, "h2")]):
        track, file_tags, model_tags, emb, preds = versions(n, h)
        adapted = emb[::-1].copy()
        for name, target in targets.items():
            with Catalog.open(target) as cat:
                if step == 0:
                    for mid in ("m1", "m1-adapted"):
                        cat.register_model(model_id=mid, name=mid, dim=4)
                    cat.record_error(path="/m/a.mp3", reason="earlier failure", error_type="AudioDecodeError")
                    cat.record_error(path="/m/other.mp3", reason="stays", error_type="AudioDecodeError")
                if name == "one call":
                    tid = cat.put_ingested(track=track, file_tags=file_tags, model_id="m1",
                                           embeddings=[("m1", emb), ("m1-adapted", adapted)], predictions=preds,
                                           analysis="spread:10", model_tags=model_tags, peaks=peaks,
                                           attributes=attrs, attributes_version=3)
                    assert tid == cat.track_by_path("/m/a.mp3").id
                else:
                    with cat.transaction():
                        tid = cat.upsert_track(**track)
                        cat.set_tags(tid, file_tags, source="file")
                        cat.put_analysis(tid, "m1", emb, preds, analysis="spread:10")
                        cat.put_analysis(tid, "m1-adapted", adapted, analysis="spread:10")
                        cat.put_peaks(tid, peaks)
                        cat.set_tags(tid, model_tags, source="model", model_id="m1")
                        cat.put_attributes(tid, attrs, model_id="m1", version=3)
                        cat.clear_error("/m/a.mp3")
                seen[name] = _catalog_rows(cat)
        assert seen["one call"] == seen["single methods"]
        if step == 0:
            assert ("slow", "tag", "model", 0.5, "m1") in seen["one call"]["/m/a.mp3"]["tags"]
    final = seen["one call"]["/m/a.mp3"]
    assert final["content_hash"] == "h2" and final["peaks"] is not None  # peaks follow the new hash
    assert sorted(t[:3] for t in final["tags"]) == [("guitar", "instrument", "model"), ("rock", "genre", "file"),
                                                   ("slow", "tag", "model")]
    assert seen["one call"]["errors"] == [("/m/other.mp3", "stays")]


def test_put_ingested_is_one_transaction(catalog_target):
    """A bad second embedding rolls the whole file back: no track, tag or error change."""
    with Catalog.open(catalog_target) as cat:
        cat.register_model(model_id="m1", name="m1", dim=2)
        token = cat.change_token()
        with pytest.raises(Exception):
            cat.put_ingested(track=dict(path="/m/a.mp3", content_hash="h", size=1, mtime=1.0),
                             file_tags=[Tag("rock", "genre", "file")], model_id="m1",
                             embeddings=[("m1", np.ones(2, np.float32)), ("not-registered", np.ones(2, np.float32))],
                             predictions={})
        assert cat.count_tracks() == 0 and cat.change_token() == token
        assert cat.put_ingested(track=dict(path="/m/a.mp3", content_hash="h", size=1, mtime=1.0), file_tags=[],
                                model_id="m1", embeddings=[("m1", np.ones(2, np.float32))], predictions={}) > 0
        assert cat.count_tracks() == 1 and cat.change_token() > token


def test_default_model_and_token_in_one_read(catalog_target):
    """The one-statement read a model-less search makes equals its two reads, with and
    without an adaptation of the default model, and on an empty catalog."""
    with Catalog.open(catalog_target) as cat:
        assert cat.default_model_and_token() == (None, cat.change_token())
        cat.register_model(model_id="m1", name="m1", dim=2)
        tid = _add(cat, "/m/a.wav")
        cat.put_analysis(tid, "m1", np.ones(2, np.float32))
        assert cat.default_model_and_token() == ("m1", cat.change_token()) == \
            (cat.default_model_id(adapted=True), cat.change_token())
        cat.register_model(model_id="m1-adapted", name="m1 adapted", dim=2)
        cat.put_adaptation(model_id="m1-adapted", base_model_id="m1", method="linear", data=b"x")
        assert cat.default_model_id() == "m1"
        assert cat.default_model_and_token() == ("m1-adapted", cat.change_token())


def test_sqlite_reads_through_a_memory_map_and_a_larger_cache(tmp_path):
    """Search reads a few rows at random places: through the OS's file cache, mapped,
    not one read() call per page missed in SQLite's small default cache."""
    from soundalike.catalog.backends import SQLITE_CACHE_KIB

    with Catalog.open(tmp_path / "c.sqlite") as cat:
        tid = _add(cat, "/m/a.mp3")
        cat.set_tags(tid, [Tag("Rock", "Genre", "file")], source="file")
        assert cat._db.fetchone("PRAGMA mmap_size")[0] > 0
        assert cat._db.fetchone("PRAGMA cache_size")[0] == -SQLITE_CACHE_KIB
        # tags read back (built without normalising again) equal the ones written
        assert cat.tag_lists([tid])[tid] == [Tag("rock", "genre", "file")]
