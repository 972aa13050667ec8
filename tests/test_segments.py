"""Segment-aware search: per-segment vectors in the catalog (both backends), the segment
index, clip queries scored by their best segment, ingest and adaptation keeping them."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio import synth
from soundalike.catalog.store import Catalog
from soundalike.errors import CatalogError
from soundalike.search.index import SegmentIndex, VectorIndex
from soundalike.search.segments import ClipIndex, apply_map, least_squares_map

SR = 16000


def _unit(X):
    X = np.asarray(X, np.float32)
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def _toy_catalog(target, *, n: int = 6, d: int = 8, seed: int = 0):
    """``n`` tracks with random unit vectors; each also has 3 segments near its own vector."""
    rng = np.random.default_rng(seed)
    cat = Catalog.open(target)
    cat.register_model(model_id="toy-1", name="toy", dim=d)
    T = _unit(rng.normal(size=(n, d)))
    ids, segs = [], {}
    for i, x in enumerate(T):
        tid = cat.upsert_track(path=f"/music/{i}.wav", content_hash=str(i), size=1, mtime=0.0)
        cat.put_analysis(tid, "toy-1", x)
        S = _unit(x + 0.3 * rng.normal(size=(3, d)))
        cat.put_segments(tid, "toy-1", np.array([0.0, 30.0, 60.0]), S)
        ids.append(tid)
        segs[tid] = S
    return cat, np.asarray(ids), T, segs


# --------------------------------------------------------------------------- the catalog


def test_segments_round_trip_replace_and_sync_rows(catalog_target):
    cat, ids, _, segs = _toy_catalog(catalog_target)
    with cat:
        starts, V = cat.get_segments(int(ids[0]), "toy-1")
        assert starts.tolist() == [0.0, 30.0, 60.0]
        assert V.dtype == np.float32 and V.shape == (3, 8)
        assert np.abs(V - segs[int(ids[0])]).max() < 2e-3  # stored as unit-length float16
        assert cat.count_segments("toy-1") == 18 and cat.count_segments() == 18
        assert cat.get_segments(int(ids[0]), "other") is None
        v0 = max(v for _, v, _, _ in cat.segment_rows("toy-1"))
        # replacing one track's segments: only it is newer than what a reader synced
        cat.put_segments(int(ids[2]), "toy-1", np.array([5.0]), np.ones((1, 8)) * 3)
        newer = list(cat.segment_rows("toy-1", since_version=v0))
        assert [r[0] for r in newer] == [int(ids[2])]
        assert np.allclose(newer[0][3], 1 / np.sqrt(8), atol=1e-3) and newer[0][2].tolist() == [5.0]
        cat.mark_missing([int(ids[1])])  # a missing track is never offered
        assert int(ids[1]) not in cat.segment_ids("toy-1").tolist()
        assert cat.delete_segments("toy-1", [int(ids[3])]) == 1
        assert cat.get_segments(int(ids[3]), "toy-1") is None
        assert cat.delete_segments("toy-1") == 5 and cat.count_segments() == 0


def test_bad_segments_are_refused(catalog_target):
    cat, ids, _, _ = _toy_catalog(catalog_target, n=1)
    with cat:
        with pytest.raises(CatalogError, match="segments need"):
            cat.put_segments(int(ids[0]), "toy-1", np.zeros(2), np.zeros((3, 8)))
        with pytest.raises(CatalogError, match="NaN"):
            cat.put_segments(int(ids[0]), "toy-1", np.zeros(1), np.full((1, 8), np.nan))
        assert cat.count_segments() == 3  # nothing was lost


# --------------------------------------------------------------------------- the segment index


def test_segment_index_scores_each_track_by_its_best_segment():
    rng = np.random.default_rng(1)
    si = SegmentIndex(model_id="m", dim=5)
    blocks = {t: _unit(rng.normal(size=(int(rng.integers(1, 5)), 5))) for t in (3, 10, 7, 42)}
    for t, V in blocks.items():
        si.put(t, np.arange(len(V), dtype=np.float32) * 10, V)
    q = _unit(rng.normal(size=5))
    ids, scores, starts = si.best(q)
    assert ids.tolist() == [3, 7, 10, 42]
    for t, s, st in zip(ids, scores, starts):
        sims = blocks[int(t)] @ q
        assert s == pytest.approx(sims.max(), abs=1e-6) and st == 10 * int(sims.argmax())
    ids2, scores2, _ = si.best(q, track_ids=np.array([42, 3, 99]))
    assert ids2.tolist() == [3, 42] and np.allclose(scores2, scores[[0, 3]])
    si.remove(np.array([7]))
    assert si.track_ids().tolist() == [3, 10, 42] and si.n_segments == sum(len(blocks[t]) for t in (3, 10, 42))


def test_clip_index_finds_the_track_a_clip_came_from_with_filters():
    """A clip matching one part of track 1 exactly, while track 2's mean is closer: track 1 wins
    by its segment; a filter or an exclusion without track 1 never returns it."""
    d = 4
    e = np.eye(d, dtype=np.float32)
    T = _unit(np.stack([e[0] + e[1], e[1] + e[2] * 0.2, e[3]]))  # track vectors of ids 1, 2, 3
    index = VectorIndex.build(np.array([1, 2, 3]), T, model_id="m")
    si = SegmentIndex(model_id="m", dim=d)
    si.put(1, np.array([0.0, 20.0]), np.stack([e[0], e[1]]))
    si.put(3, np.array([0.0]), e[3:4])
    clip = _unit(e[1] + 0.05 * e[0])
    plain_ids, _ = index.search(clip, 3)
    assert plain_ids[0, 0] == 2  # the mean of track 1 is diluted by its other part
    ci = ClipIndex(index, si)
    ids, scores = ci.search(clip, 3)
    assert ids[0].tolist()[:2] == [1, 2] and scores[0, 0] == pytest.approx(float(clip @ e[1]), abs=1e-6)
    assert ci.best_starts[1] == 20.0  # where in track 1 the clip matched
    ids, _ = ci.search(clip, 3, allowed=index.allowed_mask(np.array([2, 3])))
    assert 1 not in ids[0].tolist() and ids[0, 0] == 2
    ids, _ = ci.search(clip, 2, exclude_ids=[1])
    assert ids[0].tolist() == [2, 3]
    assert len(ci) == 3 and ci.dim == d  # stands in for the index


def test_least_squares_map_recovers_a_linear_change_of_space():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(200, 6)).astype(np.float32)
    W = rng.normal(size=(6, 4)).astype(np.float32)
    M = least_squares_map(A, A @ W + 1.0, ridge=1e-8)
    B = rng.normal(size=(5, 6)).astype(np.float32)
    assert np.allclose(apply_map(M, B), B @ W + 1.0, atol=1e-3)


# --------------------------------------------------------------------------- ingest -> similar


def _two_part_track(path, *, opening: str, rest: str, seed: int, opening_s: float = 9.0, total_s: float = 30.0):
    y = np.concatenate([synth.demo_track(opening, seed=seed, duration_s=opening_s, sr=SR),
                        synth.demo_track(rest, seed=seed + 1, duration_s=total_s - opening_s, sr=SR)])
    sf.write(path, y, SR)
    return y


def test_a_track_whose_opening_differs_is_found_by_a_clip_of_its_opening(tmp_path):
    """Ingest stores segment vectors (MTT_musicnn's patches); a 9-s clip of a track's piano
    opening, whose other 21 s are drums, finds that track first, though piano-only tracks'
    means are closer to the clip than its own mean is."""
    import soundalike
    from soundalike.ingest import ingest

    music = tmp_path / "music"
    music.mkdir()
    y = _two_part_track(music / "mixed.wav", opening="piano-arpeggio", rest="drum-loop", seed=5)
    for i in range(3):
        sf.write(music / f"piano{i}.wav", synth.demo_track("piano-arpeggio", seed=20 + i, duration_s=30.0, sr=SR), SR)
        sf.write(music / f"drums{i}.wav", synth.demo_track("drum-loop", seed=40 + i, duration_s=30.0, sr=SR), SR)
    db = tmp_path / "c.sqlite"
    s = ingest([music], catalog=db, model="MTT_musicnn", workers=1, top_tags=3)
    assert s.ingested == 7
    clip = tmp_path / "opening.wav"
    sf.write(clip, y[: int(9.0 * SR)], SR)
    with Catalog.open(db) as cat:
        mixed = cat.track_by_path(str((music / "mixed.wav").resolve()))
        model_id = cat.default_model_id()
        starts, V = cat.get_segments(mixed.id, model_id)
        assert len(starts) == 10 and starts[0] == 0.0 and V.shape == (10, 200)
        assert cat.count_segments(model_id) == 70
        hits = soundalike.similar(clip, k=3, catalog=cat)
        assert hits[0].track.id == mixed.id
        # without its segments the same clip ranks the piano tracks above it
        from soundalike.search.similar import nearest_to_vector
        from soundalike.search.sync import analyzer_for

        v = analyzer_for(cat, model_id).analyze(y[: int(9.0 * SR)], SR).embedding
        plain = nearest_to_vector(cat, model_id=model_id, vector=v, k=7, segments=False)
        assert plain[0].track.id != mixed.id
        seg = nearest_to_vector(cat, model_id=model_id, vector=v, k=3)
        assert seg[0].track.id == mixed.id
        # a filter that leaves the track out is obeyed by the segment scores too
        from soundalike.catalog.store import Tag

        with cat.transaction():
            cat.add_tag(mixed.id, Tag("left-out", "tag", "user"))
        hits = soundalike.similar(clip, k=3, catalog=cat, where="-tag:left-out")
        assert mixed.id not in [h.track.id for h in hits]


def test_index_adapt_moves_segments_into_the_adapted_space_and_drops_the_base_ones(tmp_path):
    from soundalike.models.adapt import Adaptation
    from soundalike.search.adapt import adapt_catalog

    cat, ids, T, segs = _toy_catalog(tmp_path / "c.sqlite", n=12, d=8)
    with cat:
        rep = adapt_catalog(cat, dim=4)
        assert rep.segment_tracks == 12
        a = Adaptation.from_bytes(cat.get_adaptation(rep.model_id).data)
        starts, V = cat.get_segments(int(ids[4]), rep.model_id)
        assert starts.tolist() == [0.0, 30.0, 60.0]
        assert np.abs(V - _unit(a.apply(segs[int(ids[4])]))).max() < 3e-3
        assert cat.count_segments("toy-1") == 0  # the base model's are gone (size)
        # a new track ingested after: its segments go straight to the adaptation's space
        from soundalike.ingest.plan import store_track_segments

        tid = cat.upsert_track(path="/music/new.wav", content_hash="new", size=1, mtime=0.0)
        x = _unit(np.arange(8, dtype=np.float32))
        with cat.transaction():
            cat.put_analysis(tid, "toy-1", x)
            cat.put_analysis(tid, rep.model_id, a.apply(x))
            store_track_segments(cat, tid, model_id="toy-1", segments=(np.zeros(1), x[None]), adaptations=[a])
        assert cat.get_segments(tid, "toy-1") is None
        assert np.allclose(cat.get_segments(tid, rep.model_id)[1], _unit(a.apply(x[None])), atol=3e-3)
        # a re-analysis that keeps no segments drops the stale ones
        store_track_segments(cat, tid, model_id="toy-1", segments=None, adaptations=[a])
        assert cat.get_segments(tid, rep.model_id) is None


def test_dropping_the_base_segments_gives_the_space_back_wal_included(tmp_path):
    """What ``index adapt`` reports (and leaves on disk) after the base model's segments go:
    a smaller catalog, not a write-ahead log holding a copy of it."""
    import os

    from soundalike.search.adapt import adapt_catalog, catalog_size

    cat, *_ = _toy_catalog(tmp_path / "c.sqlite", n=60, d=512)
    with cat:
        before = catalog_size(cat)
        rep = adapt_catalog(cat, dim=4, neighbours=0)
        assert rep.segment_tracks == 60 and cat.count_segments("toy-1") == 0
        wal = tmp_path / "c.sqlite-wal"
        assert not wal.exists() or os.path.getsize(wal) == 0
        assert catalog_size(cat) < before / 2


def test_track_segments_come_from_the_patches_the_analysis_ran():
    from types import SimpleNamespace

    from soundalike.ingest.plan import Excerpt, TrackAnalysis, spread_indices, track_segments
    from soundalike.models.base import Analysis

    an = SimpleNamespace(sample_rate=1000)  # generic 3-s patches at 1 kHz
    rng = np.random.default_rng(0)
    # a spread analysis: one patch per excerpt, kept as they are, with the excerpts' starts
    P = rng.normal(size=(10, 4)).astype(np.float32)
    ex = [Excerpt(float(s), np.zeros(3000, np.float32), 1000) for s in range(3, 33, 3)]
    starts, V = track_segments(TrackAnalysis(Analysis(P.mean(0), patch_embeddings=P), "spread:10", 30.0, ex), an)
    assert starts.tolist() == [e.start_s for e in ex] and np.array_equal(V, P)
    # a full analysis of 25 patches: the spread positions' patches, at the patch grid's times
    P = rng.normal(size=(25, 4)).astype(np.float32)
    ta = TrackAnalysis(Analysis(P.mean(0), patch_embeddings=P), "full", 75.0, [Excerpt(0.0, np.zeros(75000), 1000)])
    starts, V = track_segments(ta, an)
    picks = spread_indices(n_patches_full=25, n=10)
    assert np.array_equal(V, P[picks]) and starts.tolist() == [3.0 * k for k in picks]
    # an analyzer whose patch vectors are not in its track vectors' space keeps none
    ta = TrackAnalysis(Analysis(np.zeros(3, np.float32), patch_embeddings=P), "full", 75.0, [])
    assert track_segments(ta, an) is None
    assert track_segments(TrackAnalysis(Analysis(np.zeros(4, np.float32)), "full", 3.0, []), an) is None


def test_index_adapt_maps_stored_segments_as_ingest_maps_fresh_ones(tmp_path):
    """Segments are stored unit-length, but an adaptation is affine (it z-scores and centres
    first): ``index adapt`` must put them through it at their track's length.  With vectors
    whose length is fixed (here two unit-length blocks, length sqrt 2, as a single tagger's
    are long) that is exact: the segments it maps equal what ingest stores when it maps the
    raw segment vectors itself."""
    from soundalike.ingest.plan import store_track_segments
    from soundalike.models.adapt import Adaptation
    from soundalike.search.adapt import adapt_catalog

    rng = np.random.default_rng(3)
    offset = np.abs(rng.normal(size=12)).astype(np.float32) * 2  # a shared mean far from 0, as pooled layers have

    def fused(X):
        X = np.asarray(X, np.float32) + offset
        return np.hstack([_unit(X[:, :6]), _unit(X[:, 6:])])

    raw = {}
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        cat.register_model(model_id="toy-1", name="toy", dim=12)
        for i in range(20):
            tid = cat.upsert_track(path=f"/music/{i}.wav", content_hash=str(i), size=1, mtime=0.0)
            centre = rng.normal(size=12)
            raw[tid] = fused(centre + 0.4 * rng.normal(size=(3, 12)))
            cat.put_analysis(tid, "toy-1", fused(centre[None])[0])
            cat.put_segments(tid, "toy-1", np.array([0.0, 3.0, 6.0]), raw[tid])
        rep = adapt_catalog(cat, dim=8, neighbours=0)
        a = Adaptation.from_bytes(cat.get_adaptation(rep.model_id).data)
        worst_mapped, worst_fresh = 0.0, 0.0
        for tid, V in raw.items():
            mapped = cat.get_segments(tid, rep.model_id)[1]
            store_track_segments(cat, tid, model_id="toy-1", segments=(np.zeros(3), V), adaptations=[a])
            fresh = cat.get_segments(tid, rep.model_id)[1]
            worst_mapped = max(worst_mapped, float(np.abs(mapped - fresh).max()))
            worst_fresh = max(worst_fresh, float(np.abs(fresh - _unit(a.apply(V))).max()))
        assert worst_fresh < 3e-3 and worst_mapped < 3e-3  # float16 storage
