"""The filter grammar: parsing table, error table, and compiled SQL against a real catalog."""

from __future__ import annotations

import numpy as np
import pytest

from soundalike.catalog.backends import POSTGRESQL, SQLITE
from soundalike.catalog.query import Range, compile_sql, parse
from soundalike.catalog.store import Catalog, Tag
from soundalike.errors import QueryError

# (filter, [(kind, field, values, negated), ...])
PARSE_CASES = [
    ("", []),
    ("genre:rock", [("tag", "genre", ("rock",), False)]),
    ("Genre:ROCK", [("tag", "genre", ("rock",), False)]),
    ("genre:rock|pop", [("tag", "genre", ("rock", "pop"), False)]),
    ("-mood:sad", [("tag", "mood", ("sad",), True)]),
    ('genre:"hip hop"', [("tag", "genre", ("hip hop",), False)]),
    ('genre:"hip hop"|rock', [("tag", "genre", ("hip hop", "rock"), False)]),
    ("year:1990..1999", [("numeric", "year", (Range(1990, 1999),), False)]),
    ("year:1990..", [("numeric", "year", (Range(1990, None),), False)]),
    ("duration:..30", [("numeric", "duration", (Range(None, 30),), False)]),
    ("duration:2.5..10", [("numeric", "duration", (Range(2.5, 10),), False)]),
    ("sr:22050|44100", [("numeric", "sr", (Range(22050, 22050), Range(44100, 44100)), False)]),
    ("title:moon", [("text", "title", ("moon",), False)]),
    ("piano", [("any", None, ("piano",), False)]),
    ('"night train"', [("any", None, ("night train",), False)]),
    ("-noise", [("any", None, ("noise",), True)]),
    ("  genre:rock   -year:..1980  piano ", [("tag", "genre", ("rock",), False),
                                              ("numeric", "year", (Range(None, 1980),), True),
                                              ("any", None, ("piano",), False)]),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES)
def test_parse_table(text, expected):
    q = parse(text)
    assert [(t.kind, t.field, t.values, t.negated) for t in q.terms] == expected


# (filter, 1-based position named in the error, words in the reason)
ERROR_CASES = [
    ("genre:", 6, "needs a value"),
    ("year:abc", 6, "number"),
    ("year:1999..1990", 6, "empty range"),
    ("year:..", 6, "no bound"),
    ("year:1..2..3", 6, "malformed range"),
    ('"abc', 1, "unterminated quote"),
    ("genre:rock -", 12, "'-' must be followed"),
    ("genre:rock|", 11, "'|' needs a value after"),
    ("|rock", 1, "'|' needs a value before"),
    ('genre:a"b', 8, "unexpected quote"),
    ('genre:"a"b', 10, "expected a space"),
    ("year:nan", 6, "finite"),
    ('genre:""', 1, "empty value"),
]


@pytest.mark.parametrize(("text", "pos", "reason"), ERROR_CASES)
def test_parse_errors_name_position_and_reason(text, pos, reason):
    with pytest.raises(QueryError) as ei:
        parse(text)
    msg = str(ei.value)
    assert msg.startswith(f"position {pos}:"), msg
    assert reason in msg


@pytest.mark.parametrize("dialect", [SQLITE, POSTGRESQL], ids=lambda d: d.name)
def test_compiled_sql_never_contains_values(dialect):
    evil = "genre:\"x'); DROP TABLE tracks; --\" title:o'neil year:1990..1999"
    sql, params = compile_sql(evil, dialect=dialect)
    assert "DROP" not in sql and "neil" not in sql and "1990" not in sql
    # text values are bound as they are, or inside a LIKE pattern / FTS phrase that holds them
    assert "x'); drop table tracks; --" in params and 1990.0 in params
    assert any(isinstance(p, str) and "o'neil" in p for p in params)
    assert sql.count("?") == len(params)


def test_compilation_follows_the_dialect():
    assert compile_sql("", status=None, dialect=SQLITE)[0] == "1"
    assert compile_sql("", status=None, dialect=POSTGRESQL)[0] == "TRUE"
    sq, _ = compile_sql("-title:mo", dialect=SQLITE)  # shorter than a trigram: a substring scan
    pg, _ = compile_sql("-title:mo", dialect=POSTGRESQL)
    assert "instr(" in sq and "coalesce" in sq and ", 0)" in sq
    assert "strpos(" in pg and ", FALSE)" in pg and "instr(" not in pg
    sq, sp = compile_sql("title:moon", dialect=SQLITE)  # through the text index (migration 8)
    pg, pp = compile_sql("title:moon", dialect=POSTGRESQL)
    assert "track_text MATCH ?" in sq and '{title} : "moon"' in sp and "instr(" in sq
    assert "LIKE ?" in pg and "%moon%" in pp


@pytest.fixture
def cat(catalog_target):
    """Six tracks with hand-picked metadata and tags (no audio needed for filtering), on each backend."""
    c = Catalog.open(catalog_target)
    rows = [  # title, artist, year, duration_s, tags, status
        ("Moon River", "Mancini", 1961, 160.0, [("jazz", "genre"), ("sad", "mood"), ("piano", "instrument")]),
        ("Rock Me", "Falco", 1985, 200.0, [("rock", "genre"), ("happy", "mood")]),
        ("Hip Song", "MC X", 1995, 25.0, [("hip hop", "genre")]),
        ("Night Train", "Band", 1999, 29.0, [("rock", "genre"), ("sad", "mood"), ("guitar", "instrument")]),
        ("Untitled", None, None, 300.0, [("piano", "instrument")]),
        ("Gone", "Ghost", 1990, 10.0, [("rock", "genre")]),
    ]
    ids = {}
    for i, (title, artist, year, dur, tags) in enumerate(rows):
        tid = c.upsert_track(path=f"/music/{i}.wav", content_hash=str(i), size=1, mtime=0.0, duration_s=dur,
                             sr=44100 if i % 2 else 22050, title=title, artist=artist, year=year)
        c.set_tags(tid, [Tag(t, cat_, "file") for t, cat_ in tags], source="file")
        ids[title] = tid
    c.mark_missing([ids["Gone"]])
    # a suggested tag and a model tag
    c.set_tags(ids["Untitled"], [Tag("jazz", "genre", "suggested", 0.8, "m1")], source="suggested", model_id="m1")
    c.set_tags(ids["Hip Song"], [Tag("energetic", "mood", "model", 0.7, "m1")], source="model", model_id="m1")
    yield c, ids
    c.close()


# (filter, titles kept)
MATCH_CASES = [
    ("", {"Moon River", "Rock Me", "Hip Song", "Night Train", "Untitled"}),
    ("genre:rock", {"Rock Me", "Night Train"}),  # "Gone" is missing: never matched
    ("genre:rock|jazz", {"Rock Me", "Night Train", "Moon River"}),
    ("genre:rock -mood:sad", {"Rock Me"}),
    ('genre:"hip hop"', {"Hip Song"}),
    ("mood:energetic", {"Hip Song"}),  # model tags match
    ("genre:jazz", {"Moon River"}),  # suggested tags do not, by default
    ("year:1980..1999", {"Rock Me", "Hip Song", "Night Train"}),
    ("year:..1970", {"Moon River"}),
    ("-year:1980..1999", {"Moon River", "Untitled"}),  # no year: kept by a negation
    ("duration:..30", {"Hip Song", "Night Train"}),
    ("sr:44100", {"Rock Me", "Night Train"}),
    ("piano", {"Moon River", "Untitled"}),  # bare word: a tag in any category
    ("moon", {"Moon River"}),  # ... or title text
    ('"night train"', {"Night Train"}),
    ("artist:falco|band", {"Rock Me", "Night Train"}),
    ("-piano -rock", {"Hip Song"}),
    ("title:zzz", set()),
]


@pytest.mark.parametrize(("text", "titles"), MATCH_CASES)
def test_match_ids_table(cat, text, titles):
    c, ids = cat
    got = set(c.match(text).tolist())
    assert got == {ids[t] for t in titles}


def test_suggested_tags_match_only_on_request(cat):
    c, ids = cat
    assert set(c.match("genre:jazz", include_suggested=True).tolist()) == {
        ids["Moon River"], ids["Untitled"]}


def test_page_ids_paginates_and_counts(cat):
    c, ids = cat
    total, first = c.page(where="-genre:jazz", offset=0, limit=2, order="title")
    _, second = c.page(where="-genre:jazz", offset=2, limit=2, order="title")
    assert total == 4 and len(first) == 2 and len(second) == 2 and not set(first) & set(second)
    names = {v: k for k, v in ids.items()}
    assert [names[i] for i in first + second] == sorted(names[i] for i in first + second)
    total, only = c.page(text="mancini")
    assert total == 1 and only == [ids["Moon River"]]


def test_facet_counts_follow_the_filter(cat):
    c, _ = cat
    all_f = c.facets()
    assert dict(all_f["genre"]) == {"rock": 2, "jazz": 1, "hip hop": 1}  # missing track not counted
    sad = c.facets(where="mood:sad")
    assert dict(sad["genre"]) == {"rock": 1, "jazz": 1}
    assert dict(c.facets(include_suggested=True)["genre"])["jazz"] == 2


def test_tag_lists_of_many_tracks_equal_one_by_one(cat):
    c, ids = cat
    every = [*ids.values(), 999]  # 999: no such track, answered with no tags
    for sources in (None, ("file", "user", "model"), ("suggested",)):
        got = c.tag_lists(every, sources=sources)
        assert set(got) == set(every) and got[999] == []
        for tid in ids.values():
            assert got[tid] == c.tag_lists([tid], sources=sources)[tid] == c.track_tags(tid, sources=sources)
            order = [(g.source == "suggested", -g.confidence, g.category, g.tag) for g in got[tid]]
            assert order == sorted(order)
            assert all(sources is None or g.source in sources for g in got[tid])
    two = c.tag_lists([ids["Moon River"]], limit_per_track=2)[ids["Moon River"]]
    assert two == c.track_tags(ids["Moon River"])[:2] and len(two) == 2


def test_tracks_with_tag_pairs_equals_the_two_reads(cat):
    c, ids = cat
    every = [*ids.values(), 999]
    for sources in (("file", "user", "model"), ("suggested",)):
        tracks, pairs = c.tracks_with_tag_pairs(every, sources=sources)
        assert tracks == c.get_tracks(every) and 999 not in tracks
        assert pairs == c.tag_pairs(every, sources=sources)
    assert pairs[ids["Untitled"]] == {("genre", "jazz")}


def test_search_reads_equal_the_single_reads(cat):
    """What similar() reads in one statement each equals the single reads, on both backends:
    the query track's data, and the candidates' tracks and attributes (ids as = ANY(array)
    on PostgreSQL, IN lists on SQLite)."""
    c, ids = cat
    c.register_model(model_id="m", name="m", dim=2)
    rich, bare = ids["Moon River"], ids["Untitled"]
    c.put_analysis(rich, "m", np.array([0.5, -1.0], np.float32), {"x": 0.25}, analysis="spread:10")
    c.put_attributes(rich, {"bpm": 99.5, "bpm_ambiguous": False, "camelot": "8A", "key_tonic": 9}, model_id="m")
    for tid in (rich, bare, 999):
        for sources in (("file", "user", "model"), ("suggested",)):
            track, analysis, pairs, attrs = c.query_track_data(tid, model_id="m", sources=sources)
            assert track == c.get_track(tid)
            assert pairs == (c.tag_pairs([tid], sources=sources)[tid] if track else set())
            assert attrs == c.track_attributes(tid)
            ref = c.get_analysis(tid, "m")
            assert (analysis is None) == (ref is None)
            if ref is not None:
                assert (analysis.embedding.tobytes(), analysis.predictions, analysis.analysis) == \
                    (ref.embedding.tobytes(), ref.predictions, ref.analysis)
    assert c.query_track_data(rich, model_id="m", sources=("file",))[3]["bpm"] == 99.5
    every = [*ids.values(), 999, 2 ** 70]
    tracks, attrs = c.tracks_and_attributes(every)
    assert tracks == c.get_tracks(every) and set(tracks) == set(ids.values())
    assert attrs == c.attributes_of(list(ids.values())) and set(attrs) == {rich}
