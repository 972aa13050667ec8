"""VectorIndex, catalog sync, similar(), nearest_to_vector, suggestions and export."""

from __future__ import annotations

import json

import numpy as np
import pytest

import soundalike
from soundalike.catalog.store import Catalog
from soundalike.errors import ModelMismatchError, QueryError, TrackNotFoundError
from soundalike.search import index as ix
from soundalike.search import sync
from soundalike.search.export import export_embeddings
from soundalike.search.similar import nearest_to_vector, similar, similar_with_query
from soundalike.search.suggest import apply_suggestions, suggest_tags
from test_search_fixtures import STYLES, build_catalog, demo_catalog  # noqa: F401 - fixture


def _clustered(n, d, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((8, d)).astype(np.float32)
    X = centers[rng.integers(0, 8, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return np.arange(10, 10 + 3 * n, 3, dtype=np.int64), X.astype(np.float32)


def _brute(ids, X, q, k, allowed=None):
    Xn = ix.normalize(X)
    s = Xn @ ix.normalize(q)[0]
    if allowed is not None:
        s = np.where(np.isin(ids, allowed), s, -np.inf)
    order = np.argsort(-s, kind="stable")[:k]
    return ids[order]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_matches_brute_force_and_filters_never_leak(kind):
    ids, X = _clustered(3000, 24)
    vi = ix.VectorIndex.build(ids, X, model_id="m", kind=kind, config=ix.IndexConfig(exact_filter_max=100,
                                                                                     exact_bitmap_max=100))
    rng = np.random.default_rng(1)
    allowed = rng.choice(ids, 400, replace=False)  # above exact_filter_max: HNSW filtered path
    mask = vi.allowed_mask(allowed)
    recall = []
    for qi in rng.integers(0, len(ids), 20):
        got, scores = vi.search(X[qi], 10)
        assert got[0, 0] == ids[qi]  # a vector's nearest neighbour is itself
        assert np.all(np.diff(scores[0]) <= 1e-6)
        recall.append(len(set(got[0]) & set(_brute(ids, X, X[qi], 10))) / 10)
        fgot, _ = vi.search(X[qi], 10, allowed=mask, exclude_ids=[ids[qi]])
        assert set(fgot[0]) <= set(allowed) and ids[qi] not in fgot[0]
        recall.append(len(set(fgot[0]) & set(_brute(ids, X, X[qi], 10, np.setdiff1d(allowed, ids[qi])))) / 10)
    assert np.mean(recall) >= (0.99 if kind == "flat" else 0.9)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_every_filtered_path_gives_the_exact_answer(kind):
    """Gathered subset, bitmap selector, one-off mask and over-fetched exclusions agree with brute force."""
    ids, X = _clustered(2000, 16, seed=3)
    rng = np.random.default_rng(4)
    allowed = rng.choice(ids, 150, replace=False)
    gathered = ix.VectorIndex.build(ids, X, model_id="m", kind=kind)
    no_budget = ix.VectorIndex.build(ids, X, model_id="m", kind=kind, config=ix.IndexConfig(subset_cache_mb=0))
    for vi in (gathered, no_budget):
        sel = vi.cached_selection("f", lambda: allowed)
        assert sel is vi.cached_selection("f", lambda: pytest.fail("not cached"))
        many = ids[rng.choice(len(ids), 100, replace=False)]  # more than the over-fetch limit
        for qi in rng.integers(0, len(ids), 10):
            want = _brute(ids, X, X[qi], 7, np.setdiff1d(allowed, ids[qi]))
            for allowed_arg in (sel, vi.allowed_mask(allowed)):
                got, scores = vi.search(X[qi], 7, allowed=allowed_arg, exclude_ids=[ids[qi]])
                assert got[0].tolist() == want.tolist()
                assert np.all(np.diff(scores[0]) <= 1e-6)
            got, _ = vi.search(X[qi], 7, allowed=sel, exclude_ids=many)
            assert got[0].tolist() == _brute(ids, X, X[qi], 7, np.setdiff1d(allowed, many)).tolist()
        assert (sel.vectors is not None) == (vi is gathered)
    # a selection made before a change is re-checked, never returns a removed track
    sel = gathered.cached_selection("f", lambda: allowed)
    gathered.remove(allowed[:20])
    got, _ = gathered.search(X[:20], 5, allowed=sel)
    assert set(got.ravel()) - {-1} <= set(allowed[20:].tolist())
    # fewer allowed than k: the rest of the row is empty
    got, scores = gathered.search(X[0], 5, allowed=gathered.allowed_mask(allowed[20:23]))
    assert sorted(got[0, :3].tolist()) == sorted(allowed[20:23].tolist())
    assert got[0, 3:].tolist() == [-1, -1] and np.all(np.isneginf(scores[0, 3:]))


def test_concurrent_searches_while_the_index_changes():
    import threading

    ids, X = _clustered(3000, 16, seed=5)
    vi = ix.VectorIndex.build(ids, X, model_id="m")
    sel = vi.cached_selection("f", lambda: ids[::3])
    errors = []

    def reader(seed):
        r = np.random.default_rng(seed)
        try:
            for _ in range(60):
                qi = int(r.integers(0, len(ids)))
                got, _ = vi.search(X[qi], 5, allowed=sel if qi % 2 else None)
                assert len(got[0]) == 5 and set(got[0].tolist()) <= set(ids.tolist()) | {-1}
                if qi % 2:
                    assert set(got[0].tolist()) <= set(ids[::3].tolist()) | {-1}  # never leaks
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for i in range(0, 300, 30):
        vi.remove(ids[i : i + 30])
        vi.add(ids[i : i + 30], X[i : i + 30])
    for t in threads:
        t.join()
    assert not errors and len(vi) == len(ids)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_concurrent_single_queries_combined_in_one_pass_answer_what_each_gets_alone(kind):
    """Single-query searches that arrive together are answered in one pass (a matrix product
    from BLAS_FROM queries on): every caller gets the hits it gets searching alone."""
    import threading

    ids, X = _clustered(4000, 32, seed=6)
    vi = ix.VectorIndex.build(ids, X, model_id="m", kind=kind)
    sel = vi.cached_selection("f", lambda: ids[::4])
    one_off = vi.allowed_mask(ids[1::5])
    asks = [(int(qi), k, a) for j, (qi, k) in enumerate(zip(range(0, 4000, 17), [5, 10, 49] * 100, strict=False))
            for a in [(None, sel, one_off)[j % 3]]]
    alone = [vi.search(X[qi], k, allowed=a, exclude_ids=[ids[qi]]) for qi, k, a in asks]
    assert vi.combined_max == 1
    # Whether threads meet depends on the scheduler (on a loaded machine a round can run
    # one thread at a time): up to five rounds, each answer checked in every round.
    for _round in range(5):
        together: dict[int, tuple] = {}
        start = threading.Barrier(16)

        def caller(me):
            start.wait()
            for j in range(me, len(asks), 16):
                qi, k, a = asks[j]
                together[j] = vi.search(X[qi], k, allowed=a, exclude_ids=[ids[qi]])

        threads = [threading.Thread(target=caller, args=(m,)) for m in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for j, (got_ids, got_scores) in sorted(together.items()):
            assert got_ids.tolist() == alone[j][0].tolist(), asks[j]
            np.testing.assert_allclose(got_scores, alone[j][1], rtol=0, atol=1e-5)
        assert len(together) == len(asks)
        if vi.combined_max >= 2:
            break
    assert vi.combined_max >= 2, "16 threads searching at once never met in one pass (5 rounds)"


def test_remove_add_save_load_roundtrip(tmp_path):
    ids, X = _clustered(500, 16)
    for kind in ("flat", "hnsw"):
        vi = ix.VectorIndex.build(ids, X, model_id="m1", kind=kind)
        assert vi.remove(ids[:50]) == 50 and len(vi) == 450
        got, _ = vi.search(X[:50], 5)
        assert not set(got.ravel()) & set(ids[:50])
        vi.add(ids[:5], X[:5])
        vi.save(tmp_path / kind)
        back = ix.VectorIndex.load(tmp_path / kind, "m1")
        assert back.kind == kind and len(back) == 455
        assert np.array_equal(back.search(X[:5], 3)[0], vi.search(X[:5], 3)[0])
        with pytest.raises(FileNotFoundError):
            ix.VectorIndex.load(tmp_path / kind, "other")
        meta = tmp_path / kind / "m1.json"
        m = json.loads(meta.read_text())
        m["model_id"] = "other"
        meta.write_text(json.dumps(m))
        with pytest.raises(ModelMismatchError, match="index rebuild"):
            ix.VectorIndex.load(tmp_path / kind, "m1")


def test_wrong_query_dimension_is_a_mismatch():
    ids, X = _clustered(50, 8)
    vi = ix.VectorIndex.build(ids, X, model_id="m")
    with pytest.raises(ModelMismatchError):
        vi.search(np.ones(9, np.float32), 3)


def test_similar_finds_same_style_and_explains(demo_catalog):
    b = demo_catalog
    for style in STYLES:
        q = b.ids[style][0]
        hits = similar(q, k=3, catalog=b.path)
        assert q not in [h.track.id for h in hits]
        assert [h.rank for h in hits] == [1, 2, 3]
        # the nearest track is another track of the same style, sharing its instrument tag
        assert hits[0].track.id in b.ids[style]
        assert any(s.category == "instrument" for s in hits[0].shared_tags)
    # the lazy top-level API is the same function
    assert [h.track.id for h in soundalike.similar(b.ids["drum-loop"][1], k=2, catalog=b.path)] == \
        [h.track.id for h in similar(b.ids["drum-loop"][1], k=2, catalog=b.path)]


def test_similar_filters_inside_search_and_excludes_artist(demo_catalog):
    b = demo_catalog
    q = b.ids["drum-loop"][0]
    hits = similar(q, k=10, where="-instrument:drums year:1990..2005", catalog=b.path)
    assert hits and all(h.track.id not in b.ids["drum-loop"] for h in hits)
    assert all(1990 <= h.track.year <= 2005 for h in hits)
    with Catalog.open(b.path) as cat:
        artist = cat.get_track(q).artist
        hits = similar(q, k=10, exclude_same_artist=True, catalog=cat)
        assert hits and all(h.track.artist != artist for h in hits)
    assert similar(q, k=5, where="title:nothing-like-this", catalog=b.path) == []


def test_outside_file_is_analyzed_on_the_fly(demo_catalog, tmp_path):
    import soundfile as sf

    from soundalike.audio.synth import demo_track

    clip = tmp_path / "clip.flac"
    sf.write(clip, demo_track("piano-arpeggio", seed=11, duration_s=2.0), 22050)
    rq, hits = similar_with_query(str(clip), k=2, catalog=demo_catalog.path)
    assert rq.track is None and hits[0].track.id in demo_catalog.ids["piano-arpeggio"]


def test_query_errors(demo_catalog):
    with pytest.raises(TrackNotFoundError):
        similar("no such track or file", catalog=demo_catalog.path)
    with pytest.raises(TrackNotFoundError):
        similar(99999, catalog=demo_catalog.path)
    with pytest.raises(QueryError, match="position"):
        similar(1, where="year:x", catalog=demo_catalog.path)


def test_index_follows_catalog_changes(tmp_path, catalog_target):
    b = build_catalog(tmp_path, per_style=2, duration_s=1.0, target=catalog_target)
    with Catalog.open(b.path) as cat:
        idx, rep = sync.open_index(cat, b.model_id)
        assert rep["action"] == "built" and len(idx) == 10
        gone = b.ids["noise-texture"][0]
        cat.mark_missing([gone])
        idx2, rep2 = sync.open_index(cat, b.model_id)  # loaded from disk, then synced
        assert rep2["action"] == "loaded" and rep2["removed"] == 1 and gone not in idx2.track_ids()
        cached = sync.cached_index(cat, b.model_id)
        hits = nearest_to_vector(cat, model_id=b.model_id, vector=cat.get_analysis(gone, b.model_id).embedding,
                                 k=9)
        assert len(hits) == 9 and gone not in [h.track.id for h in hits]
        # a re-made analysis replaces the indexed vector
        target = b.ids["drum-loop"][0]
        new_vec = cat.get_analysis(b.ids["piano-arpeggio"][0], b.model_id).embedding
        cat.put_analysis(target, b.model_id, new_vec)
        assert sync.cached_index(cat, b.model_id) is cached
        got = nearest_to_vector(cat, model_id=b.model_id, vector=new_vec, k=2)
        assert {h.track.id for h in got} == {target, b.ids["piano-arpeggio"][0]}
    # an index of another dimension is refused with the fix in the message
    with Catalog.open(b.path) as cat:
        stem = cat.index_dir() / ix._safe_name(b.model_id)
    other = ix.VectorIndex.build(np.arange(3), np.ones((3, 7), np.float32), model_id=b.model_id)
    other.save(stem.parent)
    with Catalog.open(b.path) as cat, pytest.raises(ModelMismatchError, match="soundalike index rebuild"):
        sync.open_index(cat, b.model_id)
    with Catalog.open(b.path) as cat:
        idx, rep = sync.open_index(cat, b.model_id, rebuild=True)
        assert rep["action"] == "rebuilt" and idx.dim == 40
    sync.forget_cached()


def test_suggestions_fill_missing_genre_and_stay_apart(tmp_path, catalog_target):
    b = build_catalog(tmp_path, per_style=4, duration_s=1.5, target=catalog_target)
    sync.forget_cached(b.path)
    with Catalog.open(b.path) as cat:
        sugg = suggest_tags(cat, categories=["genre"], min_confidence=0.5)
        by_track = {}
        for s in sugg:
            by_track.setdefault(s.track_id, []).append(s)
        assert set(by_track) == set(b.untagged_genre)  # only tracks lacking a genre
        from soundalike.audio.synth import DEMO_STYLES
        style_of = {tid: st for st, tids in b.ids.items() for tid in tids}
        right = sum(by_track[t][0].tag == DEMO_STYLES[style_of[t]]["genre"] for t in by_track)
        assert right >= len(by_track) - 1  # neighbours' genre is the style's genre
        assert all(0.5 <= s.confidence <= 1.0 and s.evidence == "neighbors" for s in sugg)
        n = apply_suggestions(cat, sugg, model_id=b.model_id)
        assert n == len(sugg)
        t = b.untagged_genre[0]
        assert not [g for g in cat.track_tags(t, sources=["file", "user"]) if g.category == "genre"]
        assert [g for g in cat.track_tags(t, sources=["suggested"]) if g.category == "genre"]
        tag = by_track[t][0].tag
        assert t not in cat.match(f"genre:{tag}")
        assert t in cat.match(f"genre:{tag}", include_suggested=True)
    sync.forget_cached()


@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_export_embeddings(demo_catalog, tmp_path, fmt):
    import csv

    with Catalog.open(demo_catalog.path) as cat:
        rep = export_embeddings(cat, path=tmp_path / f"e.{fmt}", format=fmt)
        ids, X = cat.embeddings(demo_catalog.model_id)
    assert rep["count"] == len(ids) == 20 and rep["dim"] == 40
    if fmt == "csv":
        rows = list(csv.reader(open(rep["files"][0])))
        assert rows[0][:3] == ["id", "path", "e0"] and len(rows) == 21
        assert int(rows[1][0]) == ids[0]
        np.testing.assert_allclose(np.array(rows[1][2:], float), X[0], rtol=1e-6)
    else:
        M = np.load(rep["files"][0])
        assert M.dtype == np.float32 and np.array_equal(M, X)
        assert np.array_equal(np.load(rep["files"][1]), ids)
        assert len(open(rep["files"][2]).read().splitlines()) == 20


def test_loaded_index_keeps_build_settings_and_takes_current_search_policy(tmp_path):
    ids, X = _clustered(300, 8)
    cfg = ix.IndexConfig(hnsw_threshold=100, hnsw_m=8, ef_construction=20, ef_search=7, exact_filter_max=5)
    ix.VectorIndex.build(ids, X, model_id="m", kind="hnsw", config=cfg).save(tmp_path)
    back = ix.VectorIndex.load(tmp_path, "m")
    assert (back.config.hnsw_m, back.config.ef_construction) == (8, 20)
    assert back.config.hnsw_threshold == cfg.hnsw_threshold
    assert back.config.ef_search == ix.IndexConfig().ef_search
    assert back.config.exact_filter_max == ix.IndexConfig().exact_filter_max
    assert ix.VectorIndex.load(tmp_path, "m", config=cfg).config == cfg


def test_unfiltered_graph_searches_wait_for_no_combined_pass():
    """On HNSW an unfiltered query walks its own part of the graph: grouping saves nothing,
    so concurrent unfiltered callers search at once (no pass formed), with the hits each
    gets alone; the default switches to HNSW above 50k vectors (exact flat below)."""
    import threading

    assert ix.IndexConfig().kind_for(50_000) == "flat" and ix.IndexConfig().kind_for(50_001) == "hnsw"
    ids, X = _clustered(3000, 32, seed=8)
    vi = ix.VectorIndex.build(ids, X, model_id="m", kind="hnsw")
    before = vi.combined_max
    alone = {qi: vi.search(X[qi], 10, exclude_ids=[ids[qi]]) for qi in range(0, 3000, 7)}
    out: dict[int, tuple] = {}
    start = threading.Barrier(16)

    def caller(me):
        start.wait()
        for qi in list(alone)[me::16]:
            out[qi] = vi.search(X[qi], 10, exclude_ids=[ids[qi]])

    threads = [threading.Thread(target=caller, args=(m,)) for m in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert vi.combined_max == before  # no pass was formed
    assert all(out[qi][0].tolist() == alone[qi][0].tolist() for qi in alone) and len(out) == len(alone)
