"""Segment-aware search: a short clip finds the part of a track it came from.

A track's vector is the mean over its analysed patches; a 10-s clip from one part of a
track is closer to that part than to the track's mean (a quiet intro, a different
bridge, an ending in another instrumentation).  So each track also keeps a few
*segment vectors* in the catalog (``segments`` table): one per patch the analysis
budget already ran (at most :data:`soundalike.ingest.plan.MAX_SEGMENTS`, spread over the track; no extra
decoding or network work), in the space search compares.  An outside clip (``similar
FILE``, ``/api/similar`` uploads, ``listen``) then scores each track by
``max(cosine to the track vector, cosine to its best segment)``.  Ingest picks and stores
them (:func:`soundalike.ingest.plan.track_segments`, :func:`~soundalike.ingest.plan.store_track_segments`);
this module maps them into adaptations and searches them.

Measured on the game-soundtrack set (``benchmarks/bench_clips.py``, through
``soundalike.similar`` on a real catalog): see the README's "Clips" paragraph.

What is stored where (the catalog must stay small):

- a model with an adaptation (``soundalike index adapt``): its segments in every
  adaptation's space (256-d float16, ~5 kB per track of 10 segments); the base model's
  1906-d segments are not kept;
- a model without one (a small catalog): the base model's segments (float16).

When ``index adapt`` fits a new adaptation it maps the segments it finds: base segments
through the adaptation itself; segments that only exist in an older adaptation's space
through a least-squares linear map from that space to the new one, fitted on the
catalog's own track vectors (every track has both), then drops the base segments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np


if TYPE_CHECKING:
    from soundalike.catalog.store import Catalog

def least_squares_map(A: np.ndarray, B: np.ndarray, *, ridge: float = 1e-3) -> np.ndarray:
    """float32 ``(d_a + 1, d_b)``: the ridge least-squares affine map taking rows of ``A`` to ``B``
    (apply with :func:`apply_map`)."""
    A1 = np.hstack([np.asarray(A, np.float64), np.ones((len(A), 1))])
    G = A1.T @ A1
    G[np.diag_indices_from(G)] += ridge * np.trace(G) / len(G)
    return np.linalg.solve(G, A1.T @ np.asarray(B, np.float64)).astype(np.float32)


def apply_map(M: np.ndarray, X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float32)
    return (X @ M[:-1] + M[-1]).astype(np.float32)


def adapt_segments(cat: Catalog, adaptation) -> dict[str, int]:
    """Give a newly fitted adaptation its segment vectors (called by ``index adapt``).

    Base segments go through ``adaptation``; tracks with segments only in an older
    adaptation of the same base model get them mapped by a least-squares map fitted on
    the tracks' vectors in both spaces.  Then the base segments are dropped.

    Returns ``{"from_base", "mapped", "dropped_base"}`` counts of tracks.
    """
    base = adaptation.base_model_id
    new_id = adaptation.model_id  # a hash of the projection: computed once
    done: set[int] = set()
    rows = _at_track_scale(cat, base, list(cat.segment_rows(base)))
    _put_mapped(cat, new_id, rows, adaptation.apply)
    done.update(r[0] for r in rows)
    mapped = 0
    for old in cat.adaptations(base):
        if old.model_id == new_id:
            continue
        todo = [r for r in cat.segment_rows(old.model_id) if r[0] not in done]
        if not todo:
            continue
        todo = _at_track_scale(cat, old.model_id, todo)
        ids_old, X_old = cat.embeddings(old.model_id)
        ids_new, X_new = cat.embeddings(new_id)
        common, ia, ib = np.intersect1d(ids_old, ids_new, return_indices=True)
        if len(common) < 3:
            continue
        M = least_squares_map(X_old[ia], X_new[ib])
        _put_mapped(cat, new_id, todo, lambda V, M=M: apply_map(M, V))
        done.update(r[0] for r in todo)
        mapped += len(todo)
    dropped = cat.delete_segments(base)
    return {"from_base": len(rows), "mapped": mapped, "dropped_base": dropped}


def _at_track_scale(cat: Catalog, model_id: str, rows: list) -> list:
    """``rows`` with each track's segment vectors (stored unit-length) scaled to the length
    of the track's own vector of ``model_id``.

    The maps applied to them are affine (an adaptation z-scores and centres before it
    projects; the map between two adaptations has an intercept), so a vector's length
    matters.  ``musicnn-fusion`` stores unit-length track vectors, so nothing changes there;
    a single tagger's (``MTT_musicnn``: the mean penultimate layer, not normalised) are
    several units long, and its unit-length segments put through the adaptation as they
    were landed far off: on the 117 game soundtracks, after ``index adapt``, a track's
    10-s opening found it first 0.607 of the time, 0.855 with this (random 10-s clips
    0.906 -> 0.949).  The segments of one track are about as long as its mean (exact when
    they are all alike).  Tracks without a vector keep unit length.
    """
    if not rows:
        return rows
    ids, X = cat.embeddings(model_id)
    norm = dict(zip(ids.tolist(), np.linalg.norm(X, axis=1).astype(np.float32).tolist()))
    return [(tid, ver, starts, V * np.float32(norm.get(int(tid), 1.0))) for tid, ver, starts, V in rows]


def _put_mapped(cat: Catalog, model_id: str, rows: list, f, *, batch: int = 2000) -> None:
    """Store ``f`` of each row's segment vectors under ``model_id``: one matrix product per
    ``batch`` tracks (a product per track is slow where BLAS threads compete)."""
    for b in range(0, len(rows), batch):
        chunk = rows[b : b + batch]
        Y = f(np.concatenate([r[3] for r in chunk]))
        bounds = np.cumsum([0, *(len(r[3]) for r in chunk)])
        with cat.transaction():
            for (tid, _, starts, _), lo, hi in zip(chunk, bounds[:-1], bounds[1:]):
                cat.put_segments(tid, model_id, starts, Y[lo:hi])


class ClipIndex:
    """A track index that also scores each track by its best segment (outside clips).

    Stands in for :class:`~soundalike.search.index.VectorIndex` where a search takes
    one (``search``, ``cached_selection``, ``len``): a track's score is
    ``max(track cosine, best segment cosine)``.  Filters and exclusions apply to both.
    """

    def __init__(self, index, segments) -> None:
        self.index = index
        self.segments = segments
        #: track id -> where its best segment for the last query begins (seconds)
        self.best_starts: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.index)

    def __getattr__(self, name: str) -> Any:  # cached_selection, selection, dim, ...
        return getattr(self.index, name)

    def search(self, queries: np.ndarray, k: int, *, allowed=None, exclude_ids=()) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` tracks for one query by ``max(track, best segment)`` cosine: int64 and
        float32 ``(1, k)`` (unfilled slots: id ``-1``, score ``-inf``)."""
        q = np.asarray(queries, np.float32).reshape(-1)
        ids, scores = self.index.search(q, k, allowed=allowed, exclude_ids=exclude_ids)
        sel = self.index.selection(allowed)
        allowed_ids = sel.track_ids if sel is not None else None
        s_ids, s_scores, s_starts = self.segments.best(q, track_ids=allowed_ids)
        live = np.isin(s_ids, self.index.track_ids())  # a track the index holds (ok, analysed)
        excl = np.asarray(exclude_ids, np.int64).reshape(-1)
        if len(excl):
            live &= ~np.isin(s_ids, excl)
        s_ids, s_scores, s_starts = s_ids[live], s_scores[live], s_starts[live]
        best: dict[int, float] = {int(i): float(s) for i, s in zip(ids[0], scores[0]) if i >= 0}
        top = np.argsort(-s_scores, kind="stable")[:k]
        seg = {int(s_ids[j]): (float(s_scores[j]), float(s_starts[j])) for j in top}
        # exact union: a track in the top k by the max is in the top k of one of the lists
        need_track = [t for t in seg if t not in best]
        if need_track:
            V = self.index.vectors(np.asarray(need_track, np.int64))
            qn = q / max(float(np.linalg.norm(q)), 1e-12)
            for t, v in zip(need_track, V @ qn):
                best[t] = float(v)
        need_seg = [t for t in best if t not in seg]
        if need_seg:
            i2, s2, st2 = self.segments.best(q, track_ids=np.asarray(need_seg, np.int64))
            seg.update({int(i): (float(s), float(st)) for i, s, st in zip(i2, s2, st2)})
        self.best_starts = {}
        for t, (s, st) in seg.items():
            if s > best.get(t, -np.inf):
                best[t] = s
                self.best_starts[t] = st
        order = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        out_ids = np.full((1, k), -1, np.int64)
        out_scores = np.full((1, k), -np.inf, np.float32)
        for j, (t, s) in enumerate(order):
            out_ids[0, j], out_scores[0, j] = t, s
        return out_ids, out_scores


def clip_index(cat: Catalog, index, model_id: str):
    """``index`` wrapped in a :class:`ClipIndex` when the catalog keeps segments of ``model_id``
    (else ``index`` itself)."""
    from soundalike.search.sync import cached_segments

    segs = cached_segments(cat, model_id)
    return index if segs is None else ClipIndex(index, segs)
