"""The catalog store on a real SQLite file: schema, migrations, transactions, queries."""

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


def test_upsert_is_idempotent_by_path(tmp_path):
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        a = _add(cat, "/m/a.wav", title="A")
        b = _add(cat, "/m/a.wav", title="A2")
        assert a == b
        assert cat.count_tracks() == 1
        assert cat.get_track(a).title == "A2"


def test_transaction_rolls_back_everything_on_error(tmp_path):
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        cat.register_model(model_id="m1", name="test", dim=4)
        with pytest.raises(RuntimeError):
            with cat.transaction():
                tid = _add(cat, "/m/a.wav")
                cat.put_analysis(tid, "m1", np.ones(4, np.float32), {})
                raise RuntimeError("boom")
        assert cat.count_tracks() == 0
        assert cat.count_analyses() == 0


def test_embeddings_round_trip_float32(tmp_path):
    with Catalog.open(tmp_path / "c.sqlite") as cat:
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


def test_nan_embedding_is_refused(tmp_path):
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        cat.register_model(model_id="m1", name="test", dim=2)
        tid = _add(cat, "/m/a.wav")
        with pytest.raises(CatalogError, match="NaN"):
            cat.put_analysis(tid, "m1", np.array([np.nan, 1], np.float32))


def test_tags_are_kept_apart_by_source(tmp_path):
    with Catalog.open(tmp_path / "c.sqlite") as cat:
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


def test_mark_missing_keeps_rows_and_find_tracks(tmp_path):
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        a = _add(cat, "/m/a.wav", title="Blue Moon", artist="Someone")
        _add(cat, "/m/b.wav", title="Red Sun")
        assert cat.mark_missing([a]) == 1
        assert cat.count_tracks("ok") == 1 and cat.count_tracks("missing") == 1
        assert cat.get_track(a).status == "missing"
        assert [t.id for t in cat.find_tracks(str(a))] == [a]
        assert [t.title for t in cat.find_tracks("moon")] == ["Blue Moon"]
        assert [t.title for t in cat.find_tracks("/m/b.wav")] == ["Red Sun"]
        assert cat.find_tracks("100%_") == []  # LIKE wildcards are escaped
