"""Playlist selection and diversity rules on an exact in-memory vector space."""

from __future__ import annotations

import numpy as np
import pytest

from soundalike.errors import QueryError
from soundalike.search.diversity import Candidate, Caps, diversify, is_near_duplicate, title_stem
from soundalike.search.playlist import path_ids, radio_ids


class ArraySpace:
    """Exact cosine search over a small matrix (the same contract as the faiss space)."""

    def __init__(self, X, *, artists=None, albums=None, bpms=None, allowed=None):
        X = np.asarray(X, np.float32)
        self.X = X / np.linalg.norm(X, axis=1, keepdims=True)
        n = len(X)
        self.artists = artists or [f"artist{i}" for i in range(n)]
        self.albums = albums or [None] * n
        self.bpms = bpms or [None] * n
        self.allowed = set(range(n)) if allowed is None else set(allowed)

    def search(self, q, k, exclude):
        s = self.X @ q
        order = [i for i in np.argsort(-s, kind="stable") if i in self.allowed and i not in set(exclude)]
        order = order[:k]
        return np.asarray(order, np.int64), s[order]

    def vector(self, i):
        return self.X[i]

    def candidate(self, i, score):
        return Candidate(i, score, self.artists[i], self.albums[i], None, 100.0, f"song {i}",
                         self.bpms[i] or 120.0, "8A", -14.0)

    def bpm(self, i):
        return self.bpms[i]


def _cloud(n=300, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, dim))
    return centres[rng.integers(0, 6, n)] + 0.6 * rng.standard_normal((n, dim))


def test_radio_has_no_repeats_starts_at_seed_and_respects_caps():
    X = _cloud()
    artists = [f"a{i % 12}" for i in range(len(X))]
    albums = [f"b{i % 36}" for i in range(len(X))]   # album i%36 always has artist i%12
    sp = ArraySpace(X, artists=artists, albums=albums)
    out = radio_ids(sp, seed_id=5, length=30, max_per_artist=3, max_per_album=1)
    ids = [i for i, _ in out]
    assert ids[0] == 5 and len(ids) == 30 and len(set(ids)) == 30
    per_artist = {a: sum(artists[i] == a for i in ids) for a in set(artists)}
    per_album = {b: sum(albums[i] == b for i in ids) for b in set(albums)}
    assert max(per_artist.values()) <= 3 and max(per_album.values()) <= 1


def test_radio_stays_inside_the_allowed_set_and_stops_when_it_runs_out():
    X = _cloud(n=50)
    allowed = set(range(0, 50, 5))          # 10 allowed tracks, the seed among them
    sp = ArraySpace(X, allowed=allowed)
    out = radio_ids(sp, seed_id=0, length=30)
    ids = [i for i, _ in out]
    assert set(ids) <= allowed and len(ids) == len(allowed) == len(set(ids))


def test_radio_drift_zero_orders_by_similarity_to_the_seed():
    X = _cloud(n=80)
    sp = ArraySpace(X)
    ids = [i for i, _ in radio_ids(sp, seed_id=3, length=10, drift=0.0)]
    sims = sp.X[ids[1:]] @ sp.X[3]
    assert np.all(np.diff(sims) <= 1e-6)    # each next one is the next nearest to the seed
    with pytest.raises(QueryError):
        radio_ids(sp, seed_id=3, length=5, drift=1.5)


def test_radio_leaves_out_duplicates_unless_asked():
    X = _cloud(n=60)
    X = np.vstack([X, X[7] * 1.0001])       # track 60 is the same audio as track 7 ...
    sp = ArraySpace(X)                      # ... and all share length, tempo, key, loudness
    assert 60 not in [i for i, _ in radio_ids(sp, seed_id=7, length=40)]
    assert 60 in [i for i, _ in radio_ids(sp, seed_id=7, length=40, include_duplicates=True)]


def test_path_endpoints_monotone_progress_no_repeats():
    X = _cloud(n=400, seed=1)
    sp = ArraySpace(X)
    far = int(np.argmin(sp.X @ sp.X[0]))
    out = path_ids(sp, start_id=0, end_id=far, length=20)
    ids = [i for i, _, _ in out]
    prog = [p for _, _, p in out]
    assert ids[0] == 0 and ids[-1] == far
    assert len(ids) == len(set(ids)) and 10 <= len(ids) <= 20
    assert prog[0] == 0.0 and prog[-1] == 1.0
    assert all(b >= a for a, b in zip(prog, prog[1:]))
    # Steps spread along the way: the middle of the list is near the middle of the path.
    assert 0.2 <= prog[len(prog) // 2] <= 0.8


def test_path_with_bpm_prefers_the_interpolated_tempo():
    rng = np.random.default_rng(2)
    n = 300
    X = rng.standard_normal((n, 8))
    bpms = list(rng.uniform(80, 160, n))
    bpms[0], bpms[1] = 90.0, 150.0
    sp = ArraySpace(X, bpms=bpms)
    from soundalike.audio.attributes import tempo_distance

    out = path_ids(sp, start_id=0, end_id=1, length=8, bpm_path=True, bpm_tolerance=0.08)
    assert len(out) == 8  # plenty of candidates: no step skipped, so entry j is step j
    lam = np.linspace(0, 1, 8)
    want = 90.0 ** (1 - lam) * 150.0 ** lam
    assert all(tempo_distance(bpms[i], w) <= 0.08 for (i, _, _), w in zip(out, want))
    without = path_ids(sp, start_id=0, end_id=1, length=8)
    assert sum(tempo_distance(bpms[i], w) <= 0.08 for (i, _, _), w in zip(without, want)) < 8


def test_path_argument_errors():
    sp = ArraySpace(_cloud(n=20))
    with pytest.raises(QueryError):
        path_ids(sp, start_id=1, end_id=1, length=5)
    with pytest.raises(QueryError):
        path_ids(sp, start_id=1, end_id=2, length=1)


# --------------------------------------------------------------------------- diversity


@pytest.mark.parametrize("c,dup", [
    (Candidate(2, 0.50, content_hash="h1"), True),                                # same file content
    (Candidate(2, 0.95, title="Blue Moon (Radio Edit)", artist="X"), True),       # a version
    (Candidate(2, 0.95, title="Blue Moon - 2011 Remaster", artist=None), True),   # artist unknown
    (Candidate(2, 0.95, title="Blue Moon", artist="Y"), False),                   # a cover by another
    (Candidate(2, 0.80, title="Blue Moon", artist="X"), False),                   # not similar enough
    (Candidate(2, 0.995, duration_s=181.0, bpm=121.0, camelot="8A", loudness_lufs=-9.5), True),
    (Candidate(2, 0.995, duration_s=181.0, bpm=121.0, camelot="9A", loudness_lufs=-9.5), False),
    (Candidate(2, 0.995, duration_s=150.0, bpm=121.0, camelot="8A", loudness_lufs=-9.5), False),
    (Candidate(2, 0.995, duration_s=181.0, bpm=60.5, camelot="8A", loudness_lufs=-13.0), True),  # 1/2 tempo, remastered
    (Candidate(2, 0.9999, duration_s=180.0), False),        # embedding alone is no proof
    (Candidate(1, 0.10), True),                             # the seed itself
])
def test_near_duplicate_rule(c, dup):
    seed = Candidate(1, 1.0, artist="X", content_hash="h1", duration_s=180.0, title="Blue Moon",
                     bpm=120.0, camelot="8A", loudness_lufs=-10.0)
    assert is_near_duplicate(c, seed) is dup


@pytest.mark.parametrize("title,stem", [("Song (Radio Edit)", "song"), ("Song - 2011 Remaster", "song"),
                                        ("Song [Live]", "song"), ("  ", None), (None, None),
                                        ("Hey-Ho", "hey ho")])
def test_title_stem(title, stem):
    assert title_stem(title) == stem


def test_diversify_caps_and_order():
    cands = [Candidate(i, 1 - i / 100, artist=f"x{i % 3}", album=f"al{i % 5}") for i in range(2, 40)]
    out = list(diversify(cands, k=6, max_per_artist=2))
    assert [c.id for c in out] == [2, 3, 4, 5, 6, 7]
    assert max(sum(c.artist == a for c in out) for a in ("x0", "x1", "x2")) <= 2
    # An album is (artist, album title): "Greatest Hits" by two artists is two albums.
    assert len(list(diversify(cands, k=20, max_per_album=1))) == 15
    same_artist = [Candidate(i, 1 - i / 100, artist="x", album=f"al{i % 5}") for i in range(2, 40)]
    out = list(diversify(same_artist, k=10, max_per_album=1))
    assert len(out) == 5 and len({c.album for c in out}) == 5
    seed = Candidate(1, 1.0, artist="x", album="al0")
    assert all(c.album != "al0" for c in diversify(same_artist, k=10, max_per_album=1, seed=seed,
                                                   count_seed=True))
    assert any(c.album == "al0" for c in diversify(same_artist, k=10, max_per_album=1, seed=seed))
    with pytest.raises(ValueError):
        Caps(max_per_artist=0)


def test_unknown_artist_is_not_capped():
    cands = [Candidate(i, 0.5) for i in range(2, 12)]
    assert len(list(diversify(cands, k=10, max_per_artist=1, max_per_album=1))) == 10


def test_a_folder_counts_as_the_album_of_untagged_files():
    from soundalike.search.diversity import album_key

    assert album_key("Elysia", "/m/mars/1.ogg") == "Elysia"
    assert album_key(None, "/m/supertux/a.ogg") == album_key("  ", "/m/supertux/b.ogg") == "folder:/m/supertux"
    cands = [Candidate(i, 0.9, artist=f"x{i}", album=album_key(None, f"/m/{'ab'[i % 2]}/{i}.ogg"))
             for i in range(2, 10)]
    out = list(diversify(cands, k=10, max_per_album=1))
    assert len(out) == 2  # one per folder, whoever the artists are
