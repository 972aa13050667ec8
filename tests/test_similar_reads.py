"""What a filtered similar() reads, and how many statements it sends, on both backends.

A call by track id is two round trips once the catalog's default model is known: the query
track's row (vector, tags, attributes and the change token), then the candidates with
their attributes and the likely hits' tags (two statements sent together).  These tests check that the folded reads
return what the single reads return, that similar() answers exactly what the unfolded
path answers (and the same on SQLite and PostgreSQL), that the remembered default model
follows another process's commits, and the statement count itself.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import new_catalog_target
from soundalike.catalog.store import Catalog, Tag
from soundalike.search import similar as sim
from soundalike.search import rerank
from soundalike.search.sync import cached_index, forget_cached

DIM = 8
N = 60
WHY = ("file", "user", "model")


def _fill(target) -> None:
    """N tracks in three clusters, file/model/suggested tags with confidences, attributes on
    two thirds, a few tracks sharing an artist (for the caps)."""
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((3, DIM)).astype(np.float32)
    with Catalog.open(target) as c:
        c.register_model(model_id="m", name="m", dim=DIM, labels=["a", "b"], label_category="tag")
        with c.transaction():
            for i in range(N):
                tid = c.upsert_track(path=f"/m/{i}.ogg", content_hash=f"h{i}", size=1, mtime=0.0,
                                     duration_s=100.0 + 7 * i, title=f"t{i}", artist=f"artist {i % 7}",
                                     album=f"album {i % 11}", year=1980 + i % 30)
                c.set_tags(tid, [Tag(f"g{i % 4}", "genre", "file"), Tag("x" if i % 2 else "y", "mood", "file")],
                           source="file")
                c.set_tags(tid, [Tag("a", "tag", "model", float(np.float32(0.3 + (i % 5) / 10))),
                                 Tag(f"b{i % 3}", "tag", "model", 0.5)], source="model", model_id="m")
                if i % 3 == 0:
                    c.add_tag(tid, Tag(f"s{i % 2}", "genre", "suggested", 0.61))
                if i % 3:
                    c.put_attributes(tid, {"bpm": 90.0 + i, "camelot": f"{1 + i % 12}A", "key_tonic": i % 12,
                                           "key_mode": "minor", "duration_s": 100.0 + 7 * i}, model_id="m")
                c.put_analysis(tid, "m", (centers[i % 3] + 0.4 * rng.standard_normal(DIM)).astype(np.float32))


@pytest.fixture
def filled(catalog_target):
    forget_cached()
    _fill(catalog_target)
    yield catalog_target
    forget_cached()


def _count(cat: Catalog, fn, batches: list | None = None):
    """(fn(), statements the catalog sent while it ran); ``batches`` gets the size of each
    group of statements sent together (one round trip on a server)."""
    db = cat._db  # counts what goes through the door, so it looks behind it
    real, real_batch, n = db.execute, db.fetch_batch, [0]

    def counting(sql, params=(), **kw):
        n[0] += 1
        return real(sql, params, **kw)

    def batch(statements):
        if batches is not None:
            batches.append(len(statements))
        return real_batch(statements)

    db.execute, db.fetch_batch = counting, batch
    try:
        return fn(), n[0]
    finally:
        del db.execute, db.fetch_batch


def _view(hits) -> list:
    return [(h.track.id, h.rank, round(h.score, 5), h.shared_tags, h.attributes, h.tags, h.why) for h in hits]


def _unfolded(cat: Catalog, query: int, *, k: int, where: str | None, include_suggested: bool = False,
              **caps) -> list:
    """similar() as it read before: default model, query track, candidates, then hits' tags,
    each its own statement."""
    from soundalike.search.sync import model_info_and_token

    info, token = model_info_and_token(cat, None)
    rq = sim.resolve_query(cat, query, model_id=info.model_id, include_suggested=include_suggested)
    index = cached_index(cat, info.model_id, token=token)
    mask = sim._filter_mask(cat, index, where, include_suggested, reference=rq.attributes)
    index = rerank.wrap(index)  # a catalog track's candidates are re-ranked (search/rerank.py)
    ids, scores, (tracks, attrs, lists) = sim._diverse_search(
        cat, index, rq, k, mask=mask, exclude=[rq.track.id], include_duplicates=False,
        max_per_artist=caps.get("max_per_artist"), max_per_album=caps.get("max_per_album"))
    assert lists == {}  # no sources: nothing read with the candidates
    sources = (*sim._WHY_SOURCES, "suggested") if include_suggested else sim._WHY_SOURCES
    return sim._hits(cat, ids[0], scores[0], rq.tags, sources, rq.attributes, known=(tracks, attrs, {}))


def test_folded_reads_equal_the_single_reads(filled):
    with Catalog.open(filled) as c:
        every = [*range(1, N + 1), 999, 2 ** 70]
        for sources in (WHY, (*WHY, "suggested"), ("suggested",)):
            for tag_ids in ([], every[:10], every[::3], every):
                tracks, attrs, lists = c.candidates_and_tags(every, tag_ids=tag_ids, sources=sources)
                assert (tracks, attrs) == c.tracks_and_attributes(every)
                assert lists == c.tag_lists([i for i in tag_ids if i < 2 ** 63], sources=sources)
        assert any(lst and lst[-1].source == "suggested" for lst in
                   c.candidates_and_tags([], tag_ids=every, sources=(*WHY, "suggested"))[2].values())
        assert c.candidates_and_tags([], tag_ids=[], sources=WHY) == ({}, {}, {})
        for tid in (1, 2, 999):
            track, analysis, pairs, attrs, token = c.query_track_and_token(tid, model_id="m", sources=WHY)
            ref = c.query_track_data(tid, model_id="m", sources=WHY)
            assert (track, pairs, attrs) == (ref[0], ref[2], ref[3])
            assert (analysis is None) == (ref[1] is None)
            assert token == (c.change_token() if tid != 999 else None)


@pytest.mark.parametrize("where,include_suggested,caps", [
    ("genre:g1|g2", False, {}),
    ("-mood:x", True, {"max_per_artist": 1}),
    (None, False, {"max_per_album": 1}),
    ("genre:s0", True, {}),
])
def test_similar_answers_what_the_unfolded_reads_answer(filled, where, include_suggested, caps):
    with Catalog.open(filled) as c:
        for q in (1, 5, 22, 40):
            for k in (3, 10, 40):
                got = sim.similar(q, k=k, where=where, include_suggested=include_suggested, catalog=c, **caps)
                ref = _unfolded(c, q, k=k, where=where, include_suggested=include_suggested, **caps)
                assert _view(got) == _view(ref)
                assert got and all(h.tags is not None for h in got)


def test_both_backends_answer_the_same(tmp_path, request):
    forget_cached()
    views = []
    for backend in ("sqlite", "postgresql"):
        (tmp_path / backend).mkdir()
        target = new_catalog_target(backend, tmp_path / backend, request)
        _fill(target)
        with Catalog.open(target) as c:
            views.append([_view(sim.similar(q, k=k, where=w, include_suggested=s, catalog=c))
                          for q in (1, 9, 33) for k in (4, 12) for w, s in (("genre:g1|g3", False),
                                                                            ("-mood:y", True), (None, False))])
    forget_cached()
    assert views[0] == views[1]


def test_two_round_trips_per_call_and_other_processes_commits_are_seen(filled):
    """Three statements: the query track with the token, then the candidates and the likely
    hits' tags sent together (two round trips on PostgreSQL)."""
    with Catalog.open(filled) as c, Catalog.open(filled) as writer:
        sim.similar(1, k=5, where="genre:g1", catalog=c)  # finds the default model, gathers the filter
        batches = []
        hits, n = _count(c, lambda: sim.similar(2, k=5, where="genre:g1", catalog=c), batches)
        assert n == 3 and batches == [2] and len(hits) == 5
        _, n = _count(c, lambda: sim.similar(3, k=5, where="genre:g1", model="m", catalog=c))
        assert n == 3
        # another connection commits a new track in the filter, right next to the query
        q = c.get_analysis(2, "m").embedding
        tid = writer.upsert_track(path="/m/new.ogg", content_hash="new", size=1, mtime=0.0, duration_s=55.0,
                                  title="new", artist="someone else")
        writer.set_tags(tid, [Tag("g1", "genre", "file")], source="file")
        writer.put_analysis(tid, "m", q)
        hits, n = _count(c, lambda: sim.similar(2, k=5, where="genre:g1", catalog=c))
        assert hits[0].track.id == tid and hits[0].tags == tuple(writer.track_tags(tid, sources=WHY))
        assert n > 3  # the token moved: the default model is asked again, the index synced
        _, n = _count(c, lambda: sim.similar(2, k=5, where="genre:g1", catalog=c))
        assert n == 3


def test_the_filter_notes_of_a_search_read_nothing_more(filled):
    """/api/similar's notes on its filter come from the facet table of the state the search
    answered at (``ResolvedQuery.token``): the request stays at three statements, and the
    notes are the ones a fresh read of the token gives."""
    where = "genre:g1|nosuch mood:x"
    with Catalog.open(filled) as c:
        rq, _ = sim.similar_with_query(1, k=5, where=where, catalog=c)
        c.filter_notes(where, token=rq.token)  # gathers the facet table once

        def request():
            rq, hits = sim.similar_with_query(2, k=5, where=where, catalog=c)
            return rq, c.filter_notes(where, token=rq.token)

        (rq, notes), n = _count(c, request)
        assert n == 3 and rq.token == c.change_token()
        assert notes == c.filter_notes(where) and "nosuch" in notes[0]
        _, n = _count(c, lambda: c.filter_notes(where))
        assert n == 1  # without the token: one read of it


def test_remembered_default_model_follows_a_new_adaptation(filled):
    with Catalog.open(filled) as c, Catalog.open(filled) as writer:
        assert sim.similar(1, k=3, catalog=c)
        assert c.remembered_default_model()[0] == "m"
        # another process adapts the model: every vector reversed, so the hits change
        writer.register_model(model_id="m+adapt", name="m+adapt", dim=DIM)
        ids, X = writer.embeddings("m")
        writer.put_analyses("m+adapt", ids, -X)
        writer.put_adaptation(model_id="m+adapt", base_model_id="m", method="test", data=b"x")
        rq, hits = sim.similar_with_query(1, k=3, catalog=c)
        assert rq.model_id == "m+adapt" == c.remembered_default_model()[0]
        assert np.array_equal(rq.vector, -X[list(ids).index(1)])
        assert _view(hits) == _view(_unfolded(c, 1, k=3, where=None))


def test_a_missing_track_is_still_an_error(filled):
    from soundalike.errors import TrackNotFoundError

    with Catalog.open(filled) as c:
        sim.similar(1, k=3, catalog=c)
        with pytest.raises(TrackNotFoundError, match="no track with id 999"):
            sim.similar(999, k=3, catalog=c)


def test_hits_beyond_the_best_candidates_get_their_tags_read(filled, monkeypatch):
    """With a cap that skips the closest candidates, hits can come from beyond the 2 k whose
    tags came with the candidates: theirs are read then, and the answer is the same."""
    rng = np.random.default_rng(9)
    with Catalog.open(filled) as c:
        q = c.get_analysis(1, "m").embedding
        for j in range(8):  # one artist crowding the query's neighbourhood
            tid = c.upsert_track(path=f"/crowd/{j}.ogg", content_hash=f"c{j}", size=1, mtime=0.0,
                                 duration_s=400.0 + 40 * j, title=f"crowd {j}", artist="crowd")
            c.set_tags(tid, [Tag("g1", "genre", "file")], source="file")
            c.put_analysis(tid, "m", (q + 0.01 * rng.standard_normal(DIM)).astype(np.float32))
        read = []
        real = Catalog.tag_lists
        monkeypatch.setattr(Catalog, "tag_lists", lambda self, ids, **kw: read.append(list(ids)) or
                            real(self, ids, **kw))
        got = sim.similar(1, k=3, max_per_artist=1, catalog=c)
        assert read and len(read[0]) == 2  # the two hits after the crowd's one
        assert [h.track.artist for h in got].count("crowd") == 1
        assert _view(got) == _view(_unfolded(c, 1, k=3, where=None, max_per_artist=1))


def test_only_the_best_2k_candidates_rows_are_read_unless_fewer_pass(filled, monkeypatch):
    """The candidates' rows: the best 2 k with the tags; the rest of the round only when
    fewer than k of those pass the caps, and the answer is the unfolded one either way."""
    asked = []
    real = Catalog.candidates_and_tags
    real_rest = Catalog.tracks_and_attributes
    monkeypatch.setattr(Catalog, "candidates_and_tags",
                        lambda self, ids, **kw: asked.append(("first", list(ids))) or real(self, ids, **kw))
    monkeypatch.setattr(Catalog, "tracks_and_attributes",
                        lambda self, ids: asked.append(("rest", list(ids))) or real_rest(self, ids))
    with Catalog.open(filled) as c:
        got = sim.similar(1, k=3, catalog=c)
        assert [(what, len(ids)) for what, ids in asked] == [("first", 6)]
        assert _view(got) == _view(_unfolded(c, 1, k=3, where=None))
        # seven artists in the catalog: one hit each cannot make 8, so the rest of every
        # round is read (then a round of 4 x as many candidates)
        asked.clear()
        got = sim.similar(1, k=8, max_per_artist=1, catalog=c)
        assert [what for what, _ in asked[:2]] == ["first", "rest"]
        assert len(asked[0][1]) == 16 and len(asked[1][1]) == 4 * 8 + 8 - 16
        assert len({h.track.artist for h in got}) == len(got) == 7
        assert _view(got) == _view(_unfolded(c, 1, k=8, where=None, max_per_artist=1))
