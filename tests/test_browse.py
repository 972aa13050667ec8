"""The browse path (catalog/browse.py + the text index of migration 8) against the SQL definition.

``Catalog.page`` and ``Catalog.facets`` answer from an in-memory table and the trigram text
index; ``Catalog.match`` is the SQL of ``query.compile_sql``, the one definition of the filter
grammar.  Here many random filters over a catalog with every kind of value (tags from three
sources, missing tracks, NULL years and lengths, attributes on some tracks, non-ASCII and
punctuated titles, file names in folders) must give the same ids both ways, on SQLite and on
a real PostgreSQL server, and the two backends must page in the same order.
"""

from __future__ import annotations

import random
import sqlite3

import numpy as np
import pytest

from soundalike.catalog.backends import open_backend
from soundalike.catalog.copy import copy_catalog
from soundalike.catalog.schema import SCHEMA_VERSION, migrate
from soundalike.catalog.store import Catalog, Tag
from soundalike.errors import QueryError

from conftest import new_catalog_target

WORDS = ("moon", "river", "night", "train", "ab", "Élan", "o'neil", "50% off", "snake_case", "x")
GENRES = ("rock", "jazz", "hip hop", "ambient")
MOODS = ("sad", "happy", "dark")
KEYS = ("8A", "9A", "8B", "1A")


def fill(cat: Catalog, *, n: int = 80, seed: int = 0) -> None:
    """``n`` tracks with varied metadata, tags and attributes (deterministic for ``seed``)."""
    rng = random.Random(seed)
    missing = []
    for i in range(n):
        title = None if i % 9 == 0 else " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        if title and i % 7 == 0:
            title = title.upper()
        folder = rng.choice(("moon", "music", "Night"))
        tid = cat.upsert_track(
            path=f"/lib/{folder}/{rng.choice(WORDS).replace(' ', '_')}_{i:03d}.mp3", content_hash=f"h{i}",
            size=1, mtime=0.0, duration_s=None if i % 11 == 0 else round(rng.uniform(5, 400), 1),
            sr=rng.choice((22050, 44100, None)), channels=rng.choice((1, 2)), title=title,
            artist=rng.choice(("Mancini", "Falco", None, "moonband")), album=rng.choice((None, "Night Train")),
            year=None if i % 5 == 0 else rng.randint(1960, 2020))
        tags = [Tag(rng.choice(GENRES), "genre", "file")]
        if rng.random() < 0.6:
            tags.append(Tag(rng.choice(MOODS), "mood", "file"))
        cat.set_tags(tid, tags, source="file")
        if rng.random() < 0.5:
            cat.set_tags(tid, [Tag(rng.choice(("piano", "moon", "guitar")), "instrument", "model", 0.7, "m1")],
                         source="model", model_id="m1")
        if rng.random() < 0.3:
            cat.set_tags(tid, [Tag(rng.choice(GENRES), "genre", "suggested", 0.5, "m1")],
                         source="suggested", model_id="m1")
        if rng.random() < 0.7:
            cat.put_attributes(tid, {"bpm": round(rng.uniform(60, 180), 1), "camelot": rng.choice(KEYS),
                                     "vocals": rng.random(), "energy": rng.random(),
                                     "loudness_lufs": rng.uniform(-30, -5),
                                     "duration_s": None if rng.random() < 0.3 else round(rng.uniform(5, 400), 1)})
        if i % 13 == 0:
            missing.append(tid)
    cat.mark_missing(missing)


def random_filter(rng: random.Random) -> str:
    def term() -> str:
        kind = rng.randrange(9)
        if kind == 0:
            return "genre:" + "|".join(f'"{g}"' if " " in g else g for g in rng.sample(GENRES, rng.randint(1, 2)))
        if kind == 1:
            return f"mood:{rng.choice(MOODS)}"
        if kind == 2:
            lo = rng.choice((0, 30, 100, 200))
            return rng.choice((f"duration:{lo}..{lo + 150}", f"duration:{lo}..", f"year:..{1960 + lo // 4}"))
        if kind == 3:
            return rng.choice(("bpm:90..130", "bpm:120..", "energy:high", "loudness:-20..-10", "sr:44100"))
        if kind == 4:
            return "key:" + "|".join(rng.sample(KEYS, rng.randint(1, 2)))
        if kind == 5:
            return rng.choice(("vocals:yes", "vocals:no"))
        if kind == 6:
            field = rng.choice(("title", "artist", "album", "file"))
            return f"{field}:" + rng.choice(("moon", "ab", "night", "o'neil", "x", "river|train", "_0"))
        if kind == 7:
            return rng.choice(("moon", "piano", '"night train"', "ab", "rock", "50%", "snake_case"))
        return rng.choice(("instrument:moon", "id:1..20", "channels:1"))

    terms = [("-" if rng.random() < 0.25 else "") + term() for _ in range(rng.randint(1, 3))]
    return " ".join(terms)


def _reference_page(cat: Catalog, ids, order: str) -> list[int]:
    """The documented orders, computed here from the tracks themselves."""
    tracks = cat.get_tracks(ids)
    attrs = cat.attributes_of(ids)

    def key(i):
        t = tracks[i]
        name = t.title if t.title is not None else t.path.rsplit("/", 1)[-1]
        return {"id": (i,), "title": (name.lower(), i), "artist": ((t.artist or "").lower(), i),
                "path": (t.path,), "length": (t.duration_s or 0.0, i), "added": (-t.added_at, -i),
                "bpm": (attrs.get(i, {}).get("bpm") or 1e9, i)}[order]

    return sorted(ids, key=key)


@pytest.fixture
def filled(catalog_target):
    cat = Catalog.open(catalog_target)
    fill(cat)
    yield cat
    cat.close()


def test_random_filters_match_the_sql_definition(filled):
    cat = filled
    rng = random.Random(7)
    for _ in range(150):
        f = random_filter(rng)
        for suggested in (False, True):
            want = cat.match(f, include_suggested=suggested).tolist()
            total, got = cat.page(where=f, include_suggested=suggested, limit=10_000, order="id")
            assert (total, got) == (len(want), want), f
    assert cat.page(where="genre:rock -genre:rock")[0] == 0


def test_facets_count_the_matched_tracks(filled):
    cat = filled
    rng = random.Random(3)
    for _ in range(30):
        f = random_filter(rng)
        ids = cat.match(f).tolist()
        want: dict[str, dict[str, int]] = {}
        for tid, pairs in cat.tag_pairs(ids, sources=("file", "user", "model")).items():
            for c, t in pairs:
                want.setdefault(c, {}).setdefault(t, 0)
                want[c][t] += 1
        got = {c: dict(v) for c, v in cat.facets(where=f, limit_per_category=100).items()}
        assert got == want, f


@pytest.mark.parametrize("order", ["id", "title", "artist", "path", "length", "added", "bpm"])
def test_pages_follow_the_documented_order(filled, order):
    cat = filled
    for f in ("", "genre:rock|jazz", "-mood:sad duration:..300"):
        ids = cat.match(f).tolist()
        want = _reference_page(cat, ids, order)
        total, first = cat.page(where=f, order=order, limit=7)
        _, second = cat.page(where=f, order=order, offset=7, limit=7)
        _, whole = cat.page(where=f, order=order, limit=10_000)
        assert total == len(ids) and whole == want and first + second == want[:14], (order, f)
    assert cat.page(order=order, offset=10_000)[1] == []


def test_relevance_puts_title_prefix_then_title_matches_first(filled):
    cat = filled
    total, ids = cat.page(text="moon", order="relevance", limit=10_000)
    tracks = cat.get_tracks(ids)
    groups = [0 if (tracks[i].title or "").lower().startswith("moon") else
              1 if "moon" in (tracks[i].title or "").lower() else 2 for i in ids]
    assert total == len(ids) > 5 and groups == sorted(groups) and set(groups) == {0, 1, 2}
    assert set(ids) == set(cat.match("moon").tolist())


def test_cached_results_follow_every_change(filled):
    cat = filled
    total, _ = cat.page(where="genre:rock")
    rock = cat.facets()["genre"]
    tid = int(cat.match("-genre:rock")[0])
    cat.set_tags(tid, [Tag("rock", "genre", "file")], source="file")
    assert cat.page(where="genre:rock")[0] == total + 1
    assert dict(cat.facets()["genre"])["rock"] == dict(rock)["rock"] + 1
    cat.upsert_track(path="/new/zebra crossing.mp3", content_hash="z", size=1, mtime=0.0, title=None,
                     duration_s=3.0)
    assert cat.page(text="zebra")[0] == 1 and cat.page(where="file:crossing")[0] == 1
    assert cat.browse_ranges()["duration"][0] == 3.0


#: Pieces of the texts and queries of the text-search tests: case, non-ASCII letters whose
#: lower case SQL does not fold (É, Ü, İ), ones that fold to two characters, LIKE's and
#: FTS's special characters, quotes, CJK, an emoji.
TEXT_PIECES = ("ab", "Ab", "AB", "b", "é", "É", "ß", "ü", "Ü", "ǅ", "中文", "x y", "%", "_", "'", "\\",
               "-", "🎵", "İ", "ﬁ", "mo", "On")


def _piece_text(rng: random.Random, k: int = 4) -> str:
    return "".join(rng.choice(TEXT_PIECES) for _ in range(rng.randint(1, k)))


def test_text_search_matches_the_sql_definition(catalog_target):
    """``title:`` / ``artist:`` / ``album:`` / ``file:`` terms, bare words and the page's
    text search, answered in memory, give the ids of the SQL substring test for random
    values of 1-6 characters (non-ASCII, any case), and a value spanning two tracks'
    texts (the separator of the joined text) matches nothing it should not."""
    rng = random.Random(31)
    texts: dict[str, list[str]] = {"title": [], "artist": [], "album": [], "file": []}
    with Catalog.open(catalog_target) as cat:
        gone = []
        for i in range(150):
            title = None if i % 10 == 0 else _piece_text(rng)
            artist = None if i % 4 == 0 else _piece_text(rng, 2)
            album = None if i % 3 == 0 else _piece_text(rng, 3)
            name = f"{_piece_text(rng)}_{i}.mp3"
            tid = cat.upsert_track(path=f"/lib/{_piece_text(rng, 2)}/{name}", content_hash=f"t{i}", size=1,
                                   mtime=0.0, title=title, artist=artist, album=album)
            if i % 17 == 5:
                gone.append(tid)
            for f, v in (("title", title), ("artist", artist), ("album", album), ("file", name)):
                texts[f].append(v or "")
        cat.set_tags(1, [Tag("ab", "genre", "file"), Tag("é", "mood", "user")], source="file")
        cat.mark_missing(gone)
        queries = {*TEXT_PIECES, *(p.upper() for p in TEXT_PIECES), "a", "o", "1", "_1", ".mp3", "3.mp"}
        for _ in range(120):
            t = rng.choice(texts[rng.choice(tuple(texts))])
            if t:
                a = rng.randrange(len(t))
                queries.add(t[a:a + rng.randint(1, 6)])
        spanning = set()
        for f, vals in texts.items():  # the end of one track's text and the start of the next's
            for a, b in zip(vals, vals[1:]):
                if a and b:
                    spanning |= {a[-1] + b[0], a[-2:] + b[:2]}
        queries |= set(rng.sample(sorted(spanning), 60))
        queries = sorted(q for q in queries if q.strip() and '"' not in q)
        hits = 0
        for q in queries:
            for f in (f'title:"{q}"', f'artist:"{q}"', f'album:"{q}"', f'file:"{q}"', f'"{q}"', f'-"{q}"'):
                want = cat.match(f).tolist()
                total, got = cat.page(where=f, limit=10_000, order="id")
                assert (total, got) == (len(want), want), f
                hits += bool(want) and not f.startswith("-")
            want = cat.match(None, text=q).tolist()
            assert cat.page(text=q, limit=10_000, order="id") == (len(want), want), q
            # relevance: titles starting with the text, then holding it, then the rest; A-Z in each
            by_title = _reference_page(cat, want, "title")
            tracks = cat.get_tracks(want)
            w = q.strip().lower()
            group = {i: 0 if (tracks[i].title or "").lower().startswith(w) else
                     1 if w in (tracks[i].title or "").lower() else 2 for i in want}
            assert cat.page(text=q, limit=10_000, order="relevance")[1] == sorted(by_title, key=group.get), q
        assert hits > 200  # the values do match things
        # answered from memory: no term is left for SQL
        from soundalike.catalog import query as q_
        from soundalike.catalog.browse import evaluate

        got = evaluate(q_.parse('title:ab artist:é|b -album:x "ab" file:_1'), table=cat._track_table_cached(),
                       tags=lambda: cat._facet_table_cached(q_.BASE_SOURCES),
                       sql_ids=lambda rest: pytest.fail(f"{rest} went to SQL"))
        assert got.tolist() == cat.match('title:ab artist:é|b -album:x "ab" file:_1').tolist()
        for q in sorted(spanning):  # never a match across two tracks' texts
            for f in texts:
                got = set(cat.page(where=f'{f}:"{q}"', limit=10_000, order="id")[1])
                # SQL's lower(): ASCII letters only; the value is lower-cased (and stripped) by the parser
                want = {i + 1 for i, t in enumerate(texts[f])
                        if q.strip().lower().encode() in t.encode().lower() and i + 1 not in gone}
                assert got == want, (f, q)


def test_text_columns_cut_at_each_track():
    """The joined text of a field: a value across two tracks' texts is no match; a value
    holding the separator byte is tested text by text; an empty text matches nothing."""
    from soundalike.catalog.browse import TrackTable

    rows = [(1, "abc", None, "/x/one.mp3", 1.0, None, None, None, 0.0, "Album"),
            (2, "def", "é", "/x/two.mp3", 1.0, None, None, None, 0.0, None),
            (4, "a\x00b", "", "/y/a.b", 1.0, None, None, None, 0.0, "cd")]
    t = TrackTable.from_rows(rows, [])
    assert np.flatnonzero(t.text_mask(("title",), "cd")).tolist() == []
    assert np.flatnonzero(t.text_mask(("title", "album"), "cd")).tolist() == [4]
    assert np.flatnonzero(t.text_mask(("title",), "c")).tolist() == [1]
    assert np.flatnonzero(t.text_mask(("title",), "a\x00b")).tolist() == [4]
    assert np.flatnonzero(t.text_mask(("title",), "\x00")).tolist() == [4]
    assert np.flatnonzero(t.text_mask(("file",), "x")).tolist() == []  # the folder is not the file name
    assert np.flatnonzero(t.text_mask(("file",), "o.mp3")).tolist() == [2]
    assert np.flatnonzero(t.text_mask(("album",), "album")).tolist() == [1]  # ASCII folded
    assert np.flatnonzero(t.text_mask(("artist",), "é")).tolist() == [2]
    assert np.flatnonzero(t.text_mask(("artist",), "e")).tolist() == []
    assert np.flatnonzero(t.text_mask(("title",), "abcdefghijklmnopqrstuvwxyz0123456789")).tolist() == []


def test_key_compatible_still_needs_a_query_track(filled):
    with pytest.raises(QueryError, match="relative to a query track"):
        filled.page(where="key:compatible")


def test_text_index_follows_writes(catalog_target, tmp_path):
    cat = Catalog.open(catalog_target)
    tid = cat.upsert_track(path="/m/a/first_file.mp3", content_hash="a", size=1, mtime=0.0, title="Alpha Song",
                           artist="Someone")
    assert cat.match("title:alpha").tolist() == [tid]
    # re-ingest with new tags: the old title is gone from the index, the new one is there
    cat.upsert_track(path="/m/a/first_file.mp3", content_hash="b", size=1, mtime=1.0, title="Omega Tune",
                     artist="Someone")
    assert cat.match("title:alpha").size == 0 and cat.match("omega").tolist() == [tid]
    assert cat.match("file:first_f").tolist() == [tid] and cat.match("file:m/a").size == 0  # not the folders
    cat.mark_missing([tid])
    assert cat.match("omega").size == 0 and cat.page(text="omega")[0] == 0
    cat.close()
    # a copy rebuilds the index from the copied tracks (it is derived data, not copied)
    dst = tmp_path / "copy.sqlite"
    copy_catalog(catalog_target, dst)
    with Catalog.open(dst) as c:
        c.upsert_track(path="/m/a/first_file.mp3", content_hash="b", size=1, mtime=1.0, title="Omega Tune")
        assert c.match("omega").tolist() == [tid] and c.match("someone").size == 0


def _v7_catalog(target) -> None:
    """A catalog as the previous soundalike left it (schema 7, no text index), with two tracks."""
    backend = open_backend(target, create=True, timeout_s=10)
    migrate(backend, upto=7)
    assert backend.get_schema_version() == 7
    backend.begin()
    for i, (title, path) in enumerate((("Moon River", "/m/jazz/moon_river.mp3"), (None, "/m/banjo/banjo_a3.mp3"))):
        backend.execute("INSERT INTO tracks (path, content_hash, size, mtime, title, status, added_at, updated_at) "
                        "VALUES (?, ?, 1, 0, ?, 'ok', ?, ?)", (path, f"h{i}", title, float(i), float(i)))
    backend.commit()
    backend.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_v7_catalog_migrates_to_the_text_index(backend, tmp_path, request):
    target = new_catalog_target(backend, tmp_path, request)
    _v7_catalog(target)
    with Catalog.open(target) as cat:
        assert cat.schema_version == SCHEMA_VERSION >= 8
        assert [cat.get_track(i).path for i in cat.match("banjo").tolist()] == ["/m/banjo/banjo_a3.mp3"]
        assert cat.page(text="river")[0] == 1 and cat.match("title:moon r").size == 1
        new = cat.upsert_track(path="/m/x/moonlight.mp3", content_hash="n", size=1, mtime=0.0)
        assert new in cat.match("file:moonl").tolist()
    if backend == "sqlite":
        con = sqlite3.connect(target)
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        con.close()
        assert {"track_text_insert", "track_text_update", "track_text_delete"} <= names


@pytest.mark.postgres
def test_both_backends_answer_alike(tmp_path, request):
    """The same catalog on SQLite and PostgreSQL: the same ids (by path), totals, facets and
    page order for every filter and sort (ORDER BY on text would follow each database's
    collation; the browse path sorts in Python)."""
    cats = [Catalog.open(new_catalog_target(b, tmp_path, request)) for b in ("sqlite", "postgresql")]
    try:
        for c in cats:
            fill(c, seed=5)
        rng = random.Random(11)
        filters = ["", "moon", "ab", "file:_0", "-title:night"] + [random_filter(rng) for _ in range(40)]
        for f in filters:
            for order in ("relevance", "title", "artist", "path", "length", "bpm"):
                answers = []
                for c in cats:
                    total, ids = c.page(where=f, order=order, limit=25, text="moon" if order == "relevance" else None)
                    paths = [c.get_track(i).path for i in ids]
                    answers.append((total, paths, c.facets(where=f)))
                assert answers[0] == answers[1], (f, order)
        sq, pg = (c.browse_ranges() for c in cats)
        assert sq == pg and sq["bpm"] is not None and sum(sq["keys"].values()) > 10
    finally:
        for c in cats:
            c.close()


def test_browse_ranges_equal_the_sql_summaries(filled):
    r = filled.browse_ranges()
    s = filled.attribute_summary()
    assert r["duration"] == filled.duration_range()
    assert r["bpm"] == tuple(s["bpm_range"]) and r["keys"] == s["keys"]
    assert np.isfinite(r["bpm"]).all()


# ------------------------------------------------------------------ tables brought forward


def _browse_answers(cat: Catalog) -> list:
    """Everything the browse path answers for a spread of filters: totals, whole pages in
    every order, facets with and without suggested tags, slider bounds, filter notes."""
    from soundalike.catalog.browse import ORDERS

    out: list = [cat.browse_ranges(), cat.filter_notes("genre:rock|polka mood:nope"),
                 cat.filter_notes("colour:red")]
    rng = random.Random(19)
    for f in ["", "genre:rock|jazz", "key:8A|12B", "-mood:sad duration:..300", "moon"] + [
            random_filter(rng) for _ in range(12)]:
        for suggested in (False, True):
            out.append((f, suggested, cat.facets(where=f, include_suggested=suggested, limit_per_category=100)))
        for order in ORDERS:
            out.append((f, order, cat.page(where=f, order=order, limit=10_000,
                                           text="moon" if order == "relevance" else None)))
    for q in ("moon", "o", "mo", "zed", "t", "album", "n ag", ".mp3", "élan"):  # text search (joined texts)
        out.append((q, cat.page(text=q, limit=10_000), cat.page(where=f"album:{q}", limit=10_000),
                    cat.page(text=q, limit=10_000, order="relevance"), cat.facets(text=q)))
    return out


def _forget_tables() -> None:
    """Drop this process's browse and facet tables (the next request rebuilds them)."""
    from soundalike.catalog.browse import forget_cached

    forget_cached()


def _changes(cat: Catalog, rng: random.Random, step: int) -> None:
    """One round of the writes a served catalog sees: new tracks (new tags, a new key),
    re-tagged, re-measured, missing and returning tracks, an ingest."""
    ok = cat.match("").tolist()
    gone = [i for i in range(1, max(ok) + 1) if i not in set(ok)]
    kind = step % 6
    if kind == 0:  # new tracks, one with a tag and a key nobody had
        for j in range(3):
            tid = cat.upsert_track(path=f"/new/{step}/t{j}.mp3", content_hash=f"n{step}{j}", size=1, mtime=0.0,
                                   duration_s=10.0 * (j + 1), title=rng.choice((None, "Moon Polka", "zed")),
                                   album=rng.choice((None, "New Album", "ÉLAN")))
            cat.set_tags(tid, [Tag(rng.choice(("polka", "rock")), "genre", "file")], source="file")
            cat.put_attributes(tid, {"bpm": 100.0 + j, "camelot": rng.choice(("12B", "8A")), "duration_s": 9.0})
    elif kind == 1:  # tags edited: a whole source replaced, one added, one removed
        a, b, c = rng.sample(ok, 3)
        cat.set_tags(a, [Tag("ambient", "genre", "file"), Tag("happy", "mood", "file")], source="file")
        cat.add_tag(b, Tag("dark", "mood", "user"))
        for t in cat.track_tags(c, sources=("file",)):
            cat.remove_tag(c, tag=t.tag, category=t.category, source="file")
    elif kind == 2:  # attributes re-measured (a key and a tempo move), title changed by re-ingest
        a, b = rng.sample(ok, 2)
        cat.put_attributes(a, {"bpm": 77.0, "camelot": "1A", "vocals": 0.9, "energy": 0.1, "duration_s": None})
        t = cat.get_track(b)
        cat.upsert_track(path=t.path, content_hash="changed", size=2, mtime=1.0, title="Moon Again",
                         duration_s=123.0, year=1999, album="Zed Album")
    elif kind == 3:  # tracks go missing (one way and the other)
        a, b, c = rng.sample(ok, 3)
        cat.mark_missing([a, b])
        cat.mark_changed(c)
    elif kind == 4:  # missing tracks come back
        for i in gone[:3]:
            cat.touch_track(i, size=1, mtime=5.0)
    else:  # an ingest of a new file (every table at once, in one transaction)
        cat.register_model(model_id="m1", name="m1", dim=4)
        cat.put_ingested(track={"path": f"/in/{step}.ogg", "content_hash": f"i{step}", "size": 1, "mtime": 0.0,
                                "title": "Ingested Moon", "duration_s": 42.0},
                         file_tags=[Tag("jazz", "genre", "file")], model_id="m1",
                         embeddings=[("m1", np.ones(4, np.float32))], predictions=None,
                         model_tags=[Tag("piano", "instrument", "model", 0.8, "m1")],
                         attributes={"bpm": 140.0, "camelot": "9A", "duration_s": 41.0})


@pytest.mark.parametrize("rejoin", [False, True], ids=["texts-apart", "texts-rejoined"])
def test_tables_brought_forward_answer_as_fresh_ones(filled, monkeypatch, rejoin):
    """After every kind of write, the tables updated from the changed tracks give exactly
    what tables built from scratch give (ids, totals, pages in every order, facets, text
    search: the changed tracks' texts searched apart from the joined ones, or -- rejoin --
    joined anew whenever any changed)."""
    from soundalike.catalog import browse
    from soundalike.catalog.browse import TrackTable
    from soundalike.catalog.facets import FacetTable

    if rejoin:
        monkeypatch.setattr(browse, "_TEXT_DIRTY_MIN", 0)
        monkeypatch.setattr(browse, "_TEXT_DIRTY_SHARE", 0.0)
    cat = filled
    _browse_answers(cat)  # the tables of the filled state
    updates = {"tracks": 0, "facets": 0}
    for cls, name in ((TrackTable, "tracks"), (FacetTable, "facets")):
        orig = cls.updated

        def counted(self, *a, _orig=orig, _name=name, **k):
            updates[_name] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(cls, "updated", counted)
    full_reads = []
    orig_rows = Catalog._browse_rows
    monkeypatch.setattr(Catalog, "_browse_rows", lambda self, ids: (full_reads.append(ids is None),
                                                                    orig_rows(self, ids))[1])
    rng = random.Random(23)
    for step in range(12):
        before = dict(updates)
        token = cat.change_token()
        _changes(cat, rng, step)
        assert cat.change_token() > token
        full_reads.clear()
        brought = _browse_answers(cat)
        assert not any(full_reads), step  # nothing reloaded: the tables were brought forward
        assert updates["tracks"] > before["tracks"] and updates["facets"] > before["facets"], step
        _forget_tables()
        assert brought == _browse_answers(cat), step
        assert any(full_reads)


def test_changed_track_ids_name_every_write(catalog_target):
    with Catalog.open(catalog_target) as cat:
        a = cat.upsert_track(path="/a.mp3", content_hash="a", size=1, mtime=0.0)
        b = cat.upsert_track(path="/b.mp3", content_hash="b", size=1, mtime=0.0)
        t0 = cat.change_token()
        assert cat.changed_track_ids(t0).tolist() == []
        cat.add_tag(a, Tag("x", "genre", "user"))
        t1 = cat.change_token()
        assert cat.changed_track_ids(t0).tolist() == [a] and cat.changed_track_ids(t1).tolist() == []
        cat.put_attributes(b, {"bpm": 90.0})
        assert cat.changed_track_ids(t1).tolist() == [b] and cat.changed_track_ids(t0).tolist() == [a, b]
        t2 = cat.change_token()
        cat.mark_missing([a])
        cat.remove_tag(a, tag="x", category="genre")
        assert cat.changed_track_ids(t2).tolist() == [a]
        t3 = cat.change_token()
        cat.set_favourite(b, True)  # not a browse change: the token stays, no track is named
        assert cat.change_token() == t3 and cat.changed_track_ids(t3).tolist() == []


def test_every_write_of_browse_data_stamps_its_tracks():
    """The tables are brought forward from ``tracks.version``: a Catalog method that writes
    tracks, tags or attributes without stamping the version would leave them stale.  Each
    such method must stamp (``version = {_TX_VERSION}``, ``_TRACK_CHANGED`` or the track
    upsert, which sets it) -- or be the copy's raw row writer, whose target is a new catalog."""
    import inspect
    import re

    src = inspect.getsource(Catalog)
    methods = re.split(r"\n    def ", src)
    writes = re.compile(r"(INSERT INTO (tracks|tags|track_attributes)\b|DELETE FROM (tags|tracks)\b|"
                        r"UPDATE (tracks|tags|track_attributes)\b|_TAG_UPSERT|_attributes_upsert|_track_upsert\()")
    stamps = re.compile(r"version = \{_TX_VERSION\}|_TRACK_CHANGED|_track_upsert\(")
    checked = []
    for m in methods:
        name = m.split("(", 1)[0]
        if name in ("_track_upsert", "_attributes_upsert", "write_rows", "clear_table", "changed_track_ids"):
            continue
        if writes.search(m):
            checked.append(name)
            assert stamps.search(m), f"Catalog.{name} writes browse data without stamping tracks.version"
    assert {"upsert_track", "set_tags", "add_tag", "remove_tag", "mark_missing", "put_attributes",
            "put_ingested"} <= set(checked)


def test_same_state_reads_the_change_token_once(catalog_target):
    """A request inside ``same_state`` reads the token once and answers from that state;
    after the block a commit made meanwhile (another connection) is seen."""
    with Catalog.open(catalog_target) as cat, Catalog.open(catalog_target) as other:
        fill(cat, n=20)
        reads = []
        orig = cat._db.fetchone
        cat._db.fetchone = lambda sql, *a, **k: (reads.append(sql), orig(sql, *a, **k))[1]
        with cat.same_state():
            before = cat.page(where="genre:rock")
            other.upsert_track(path="/other/new.mp3", content_hash="o", size=1, mtime=0.0, title="Rock Me")
            other.set_tags(other.track_by_path("/other/new.mp3").id, [Tag("rock", "genre", "file")], source="file")
            with cat.same_state():  # nested: still the outer block's state
                assert cat.page(where="genre:rock") == before
            assert cat.facets(where="genre:rock") == cat.facets(where="genre:rock") and cat.browse_ranges()
        assert sum("counters" in s for s in reads) == 1
        assert cat.page(where="genre:rock")[0] == before[0] + 1
        assert sum("counters" in s for s in reads) == 2
