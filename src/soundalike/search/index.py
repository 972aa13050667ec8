"""A faiss vector index per model id: the pure index, with no catalog in sight.

Vectors are L2-normalised float32 embeddings, so inner product is cosine similarity.
Small catalogs use an exact ``IndexFlatIP``; above :attr:`IndexConfig.hnsw_threshold`
vectors the index is an ``IndexHNSWFlat`` (approximate, recall measured by
``benchmarks/bench_search.py``).

Filters are applied *inside* the search, so the top ``k`` are the top ``k`` of the
allowed tracks, never a post-filtered over-fetch.  A filter becomes a :class:`Selection`
of internal positions; cached ones (one per filter text, dropped when the catalog
changes) gather their vectors into one contiguous block on first use, and are answered
exactly by scanning just that block (at 1M tracks a 10% filter scans 100k vectors in a
few ms, where a bitmap selector would walk all 1M positions).  Other filters go to faiss
as an ``IDSelectorBitmap``: exact on a flat index and on small selections, otherwise
HNSW with ``efSearch`` widened in proportion to how much the filter removes.

Searches of one index run concurrently (faiss releases the GIL; each runs on one
OpenMP thread); adding and removing vectors waits for them and runs alone.

On disk (in a directory the caller picks; for a catalog ``music.sqlite`` the sync
uses ``music.sqlite.index/``)::

    <model_id>.faiss      the faiss index
    <model_id>.ids.npy    int64 track id per internal position (-1: removed)
    <model_id>.json       {"model_id", "dim", "count", "kind", "synced_version", ...}

HNSW cannot delete, so removed positions become tombstones excluded by the selector;
:meth:`VectorIndex.compacted` rebuilds without them.  Keeping an index in step with the
catalog is :mod:`soundalike.search.sync`'s job.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from soundalike.errors import CatalogError, ModelMismatchError, QueryError

IndexKind = Literal["flat", "hnsw"]
#: Bumped when the on-disk layout changes; older indexes are rebuilt.  2: ``synced_version``
#: (the catalog's change marker) replaced ``synced_at`` (a time stamp).
FORMAT_VERSION = 2


@dataclass(frozen=True)
class IndexConfig:
    """How indexes are built and searched.

    Attributes
    ----------
    hnsw_threshold : above this many vectors build HNSW instead of exact flat search.  50k (was
        200k): an exact unfiltered query at 100k x 200-d reads 80 MB (~7 ms of one core), which
        held ``/api/similar`` to ~140 req/s on two cores; HNSW at efSearch 256 answers it in
        under 1 ms with recall@10 0.9992 against the exact top 10 (1,000 queries on
        ``bench_catalog.py``'s clustered 100k catalog; ``benchmarks/bench_search.py`` at 1M).
        Filtered queries on a cached filter stay exact (the gathered vectors are scanned).
    hnsw_m : HNSW graph degree
    ef_construction : HNSW build-time beam width
    ef_search : HNSW query beam width for unfiltered queries (at 1M clustered 200-d vectors,
        M=32/efC=80: 64 gives recall@10 0.88, 128 gives 0.93, 256 gives 0.96 in 0.7 ms)
    ef_search_max : cap on the widened beam for filtered HNSW queries
    exact_filter_max : on HNSW, filtered queries that keep at most this many vectors are
        answered exactly over the filter's gathered vectors (a flat index is always exact);
        scanning 150k contiguous 200-d vectors takes about 4 ms on one core, while filtered
        HNSW at 1M needs a wide beam for recall >= 0.95 (``benchmarks/bench_search.py``)
    exact_bitmap_max : on HNSW, filters whose vectors are not gathered (one-off masks, or
        beyond the memory budget) are exact through a bitmap up to this many vectors; the
        bitmap walks every position, so at 1M it costs ~25 ms however few are allowed
    subset_cache_mb : memory for the vectors of cached filters, gathered into one
        contiguous block per filter so an exact filtered search reads only those vectors
        (a bitmap over all positions makes faiss walk every position); filters beyond the
        budget fall back to the bitmap
    max_tombstone_fraction : rebuild an HNSW index once this share of positions is deleted
    """

    hnsw_threshold: int = 50_000
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 256
    ef_search_max: int = 1024
    exact_filter_max: int = 150_000
    exact_bitmap_max: int = 20_000
    subset_cache_mb: float = 512.0
    max_tombstone_fraction: float = 0.2

    def kind_for(self, n: int) -> IndexKind:
        return "hnsw" if n > self.hnsw_threshold else "flat"


#: IndexConfig fields that shaped a built index (its kind, its graph): kept from its saved
#: metadata on load; the others (how to search) are the current defaults.
_BUILD_FIELDS = ("hnsw_threshold", "hnsw_m", "ef_construction")


def normalize(X: np.ndarray) -> np.ndarray:
    """L2-normalise rows of float32 ``(n, d)`` (zero rows stay zero); returns a new array."""
    X = np.array(X, dtype=np.float32, copy=True, ndmin=2)
    norms = np.linalg.norm(X, axis=1, keepdims=True).astype(np.float32)
    np.divide(X, norms, out=X, where=norms > 0)
    return X


class _RWLock:
    """Many readers (searches) or one writer (add/remove), writers first.

    faiss releases the GIL while it searches, so concurrent searches of one index run in
    parallel; only changes to the index must be alone.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextlib.contextmanager
    def read(self):
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self):
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Selection:
    """The positions one filter allows in one state of a :class:`VectorIndex`.

    Made by :meth:`VectorIndex.selection` / :meth:`VectorIndex.cached_selection`; cached
    ones may also hold the allowed vectors gathered into one contiguous block, so an exact
    filtered search reads ``n_allowed`` vectors instead of walking every position.

    Attributes
    ----------
    mask : bool ``(n_positions,)``
    positions : int64 ``(n_allowed,)`` allowed positions, ascending
    generation : the index state it belongs to (a stale one is remapped by track id)
    track_ids : int64 ``(n_allowed,)`` the tracks at :attr:`positions`
    vectors : float32 ``(n_allowed, dim)`` or None (not gathered)
    """

    def __init__(self, mask: np.ndarray, generation: int, ids: np.ndarray):
        self.mask = np.asarray(mask, bool)
        self.mask.flags.writeable = False
        self.positions = np.flatnonzero(self.mask)
        self.track_ids = ids[self.positions]
        self.generation = generation
        self.vectors: np.ndarray | None = None
        self._bits: np.ndarray | None = None

    @property
    def n_allowed(self) -> int:
        return int(self.positions.shape[0])

    @property
    def bits(self) -> np.ndarray:
        """uint8 bitmap of :attr:`mask` (little bit order), as ``IDSelectorBitmap`` reads it."""
        if self._bits is None:
            self._bits = np.packbits(self.mask, bitorder="little")
        return self._bits

    @property
    def nbytes_vectors(self) -> int:
        return 0 if self.vectors is None else int(self.vectors.nbytes)


#: Excluded ids up to this many are dropped from an over-fetched result (exact: the top
#: ``k + e`` hold the top ``k`` of the rest); more become a one-off mask.
_MAX_OVERFETCH = 64


def rebuild_hint(model_name: str | None, model_id: str) -> str:
    return f"run `soundalike index rebuild --model {model_name or model_id}`"


class VectorIndex:
    """Normalised embeddings of one model id, searchable with in-search filters.

    Build with :meth:`build`, load with :meth:`load`; usually through :func:`open_index`.

    Attributes
    ----------
    model_id : the model that made every vector
    dim : embedding length
    kind : ``"flat"`` (exact) or ``"hnsw"``
    ids : int64 ``(n_positions,)`` track id per internal position, ``-1`` for tombstones
    synced_version : newest change marker (``analyses.version``) of the vectors included;
        kept for whoever syncs the index, never interpreted here
    """

    def __init__(self, *, model_id: str, dim: int, kind: IndexKind, index: Any, ids: np.ndarray,
                 config: IndexConfig = IndexConfig(), synced_version: int = 0):
        self.model_id = model_id
        self.dim = int(dim)
        self.kind: IndexKind = kind
        self.index = index
        self.ids = np.asarray(ids, np.int64)
        self.config = config
        self.synced_version = int(synced_version)
        self._rw = _RWLock()
        self._cache_lock = threading.Lock()
        self._generation = 0
        #: single-query searches of concurrent callers, combined into one pass (see _combined)
        self._comb = threading.Condition(threading.Lock())
        self._comb_pending: list[_Slot] = []
        self._comb_running = False
        #: how many searches the largest combined pass answered (for tests and benchmarks)
        self.combined_max = 0
        self._reindex()

    # ------------------------------------------------------------------ construction

    @staticmethod
    def _empty_faiss(kind: IndexKind, dim: int, config: IndexConfig):
        import faiss

        if kind == "flat":
            return faiss.IndexFlatIP(dim)
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search
        return index

    @classmethod
    def build(cls, ids: np.ndarray, X: np.ndarray, *, model_id: str, config: IndexConfig = IndexConfig(),
              kind: IndexKind | None = None, synced_version: int = 0) -> VectorIndex:
        """Build an index over ``X`` float32 ``(n, d)`` for track ``ids`` int64 ``(n,)``.

        ``kind`` defaults to ``config.kind_for(n)``.
        """
        ids = np.asarray(ids, np.int64).reshape(-1)
        X = np.asarray(X, np.float32)
        if X.ndim != 2 or X.shape[0] != ids.shape[0]:
            raise ValueError(f"X must be (n, d) with n = len(ids) = {ids.shape[0]}, got {X.shape}")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("track ids must be unique")
        dim = X.shape[1]
        kind = kind or config.kind_for(len(ids))
        index = cls._empty_faiss(kind, dim, config)
        if len(ids):
            index.add(normalize(X))
        return cls(model_id=model_id, dim=dim, kind=kind, index=index, ids=ids, config=config,
                   synced_version=synced_version)

    def _reindex(self) -> None:
        live = np.flatnonzero(self.ids >= 0)
        order = np.argsort(self.ids[live], kind="stable")
        self._sorted_ids = self.ids[live][order]
        self._sorted_pos = live[order]
        self._generation += 1
        self._sel_cache: OrderedDict[Any, Selection] = OrderedDict()
        self._live_mask = self.ids >= 0
        self._live_sel = Selection(self._live_mask, self._generation, self.ids) if self.n_tombstones else None

    # ------------------------------------------------------------------ facts

    @property
    def n_positions(self) -> int:
        return int(self.ids.shape[0])

    def __len__(self) -> int:
        return int(self._sorted_ids.shape[0])

    @property
    def n_tombstones(self) -> int:
        return self.n_positions - len(self)

    def track_ids(self) -> np.ndarray:
        """int64 sorted ids of the indexed tracks."""
        return self._sorted_ids.copy()

    def positions(self, track_ids: np.ndarray) -> np.ndarray:
        """Internal positions of those ``track_ids`` that are indexed (others are dropped)."""
        t = np.asarray(track_ids, np.int64).reshape(-1)
        if not len(self._sorted_ids) or not len(t):
            return np.zeros(0, np.int64)
        j = np.searchsorted(self._sorted_ids, t)
        j = np.minimum(j, len(self._sorted_ids) - 1)
        ok = self._sorted_ids[j] == t
        return self._sorted_pos[j[ok]]

    def vectors(self, track_ids: np.ndarray) -> np.ndarray:
        """Normalised float32 ``(m, dim)`` vectors of indexed ``track_ids`` (in the given order)."""
        pos = self.positions(track_ids)
        if len(pos) != len(np.asarray(track_ids).reshape(-1)):
            raise CatalogError("some tracks are not in the index")
        # one call for all of them: a reconstruct() per id costs ~8 us of SWIG each, which
        # the re-rank's 100 candidates a query would pay on every /api/similar request
        return np.asarray(self.index.reconstruct_batch(np.asarray(pos, np.int64)), np.float32) if len(pos) \
            else np.zeros((0, self.dim), np.float32)

    def meta(self) -> dict:
        return {"format": FORMAT_VERSION, "model_id": self.model_id, "dim": self.dim, "kind": self.kind,
                "count": len(self), "positions": self.n_positions, "tombstones": self.n_tombstones,
                "synced_version": self.synced_version, "config": asdict(self.config)}

    # ------------------------------------------------------------------ changes

    def add(self, ids: np.ndarray, X: np.ndarray) -> None:
        """Add (or replace) vectors for track ``ids``; ``X`` is float32 ``(n, dim)``."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        if not len(ids):
            return
        X = np.asarray(X, np.float32)
        if X.ndim != 2 or X.shape != (len(ids), self.dim):
            raise ModelMismatchError(f"index of model {self.model_id} holds {self.dim}-d vectors, "
                                     f"got shape {X.shape}")
        with self._rw.write():
            self._remove_positions(self.positions(ids))
            self.index.add(normalize(X))
            self.ids = np.concatenate([self.ids, ids])
            self._reindex()

    def remove(self, ids: np.ndarray) -> int:
        """Remove track ``ids`` (absent ones are ignored); returns how many were removed."""
        with self._rw.write():
            pos = self.positions(ids)
            self._remove_positions(pos)
            self._reindex()
            return int(len(pos))

    def _remove_positions(self, pos: np.ndarray) -> None:
        if not len(pos):
            return
        if self.kind == "flat":
            self.index.remove_ids(np.asarray(pos, np.int64))
            self.ids = np.delete(self.ids, pos)
        else:
            # HNSW cannot delete: keep a tombstone that every search excludes.
            self.ids = self.ids.copy()
            self.ids[pos] = -1

    def compacted(self) -> VectorIndex:
        """A fresh index without tombstones, of the kind its size calls for."""
        live = np.flatnonzero(self.ids >= 0)
        X = self.index.reconstruct_n(0, self.n_positions)[live] if len(live) else \
            np.zeros((0, self.dim), np.float32)
        return VectorIndex.build(self.ids[live], X, model_id=self.model_id, config=self.config,
                                 synced_version=self.synced_version)

    # ------------------------------------------------------------------ search

    def allowed_mask(self, track_ids: np.ndarray | None) -> np.ndarray:
        """bool ``(n_positions,)``: live positions whose track is in ``track_ids`` (``None``: all)."""
        if track_ids is None:
            return self._live_mask.copy()
        mask = np.zeros(self.n_positions, bool)
        mask[self.positions(track_ids)] = True
        return mask

    def selection(self, allowed: np.ndarray | Selection | None) -> Selection | None:
        """A :class:`Selection` for a bool mask ``(n_positions,)`` (``None``: every live position)."""
        if isinstance(allowed, Selection):
            if allowed.generation == self._generation:
                return allowed
            allowed = self.allowed_mask(allowed.track_ids)  # made before the index changed
        if allowed is None:
            return self._live_sel
        mask = np.asarray(allowed, bool)
        if mask.shape != (self.n_positions,):
            raise ValueError(f"allowed mask must have shape ({self.n_positions},), got {mask.shape}")
        if self.n_tombstones:
            mask = mask & self._live_mask
        return Selection(mask, self._generation, self.ids)

    def clear_masks(self) -> None:
        """Forget cached filter selections (the catalog's tags or tracks changed)."""
        with self._cache_lock:
            self._sel_cache.clear()

    def cached_selection(self, key: Any, track_ids_fn) -> Selection:
        """``selection(allowed_mask(track_ids_fn()))`` cached under ``key`` until the index changes.

        At most 16 are kept (least recently used dropped); their gathered vectors share
        :attr:`IndexConfig.subset_cache_mb`.
        """
        with self._cache_lock:
            hit = self._sel_cache.get(key)
            if hit is not None and hit.generation == self._generation:
                self._sel_cache.move_to_end(key)
                return hit
        sel = Selection(self.allowed_mask(track_ids_fn()), self._generation, self.ids)
        with self._cache_lock:
            if sel.generation == self._generation:
                self._sel_cache[key] = sel
                while len(self._sel_cache) > 16:
                    self._sel_cache.popitem(last=False)
        return sel

    def cached_mask(self, key: Any, track_ids_fn) -> np.ndarray:
        """The mask of :meth:`cached_selection` (read-only)."""
        return self.cached_selection(key, track_ids_fn).mask

    def _stored_vectors(self) -> np.ndarray:
        """float32 ``(n_positions, dim)`` view of the vectors faiss holds (no copy)."""
        import faiss

        store = self.index if self.kind == "flat" else faiss.downcast_index(self.index.storage)
        n = store.ntotal
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        return faiss.rev_swig_ptr(store.get_xb(), n * self.dim).reshape(n, self.dim)

    def _subset_vectors(self, sel: Selection) -> np.ndarray | None:
        """The gathered vectors of a cached ``sel``, gathering them if the budget allows."""
        if sel.vectors is not None:
            return sel.vectors
        with self._cache_lock:
            if not any(v is sel for v in self._sel_cache.values()):
                return None  # a one-off filter: gathering costs more than one bitmap search
            if sel.vectors is not None:
                return sel.vectors
            used = sum(v.nbytes_vectors for v in self._sel_cache.values())
            need = sel.n_allowed * self.dim * 4
            if used + need > self.config.subset_cache_mb * 1e6:
                return None
            sel.vectors = np.ascontiguousarray(self._stored_vectors()[sel.positions])
            return sel.vectors

    def search(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | Selection | None = None,
               exclude_ids: np.ndarray | tuple = ()) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` tracks by cosine similarity, filters applied inside the search.

        Parameters
        ----------
        queries : float32 ``(dim,)`` or ``(q, dim)``; normalised here
        k : number of results per query
        allowed : optional bool mask ``(n_positions,)`` from :meth:`allowed_mask`, or a
            :class:`Selection` (positions outside it are never returned)
        exclude_ids : track ids never returned (e.g. the query track itself)

        Returns
        -------
        (ids, scores)
            int64 and float32 ``(q, k)``; unfilled slots have id ``-1`` and score ``-inf``.

        Notes
        -----
        Unfiltered: the flat index is exact, HNSW uses ``ef_search``.  Filtered: exact
        over the filter's gathered vectors when the selection is cached, fits
        ``subset_cache_mb`` and (HNSW) allows at most ``exact_filter_max``; else exact
        through a bitmap selector (flat, or HNSW up to ``exact_bitmap_max``); else HNSW
        with the selector and ``efSearch`` widened in proportion to what the filter removes.
        Concurrent searches run in parallel (faiss releases the GIL), one thread each.
        """
        Q = normalize(queries)
        if Q.shape[1] != self.dim:
            raise ModelMismatchError(f"query vector has {Q.shape[1]} dimensions, index of model "
                                     f"{self.model_id} has {self.dim}")
        if k < 1:
            raise QueryError(f"k must be at least 1, got {k}")
        excl_ids = np.asarray(exclude_ids, np.int64).reshape(-1)
        nq = Q.shape[0]
        out_ids = np.full((nq, k), -1, np.int64)
        out_scores = np.full((nq, k), -np.inf, np.float32)
        with self._rw.read(), _single_thread(nq <= 4):
            if self.n_positions == 0:
                return out_ids, out_scores
            sel = self.selection(allowed)
            excl = self.positions(excl_ids) if len(excl_ids) else np.zeros(0, np.int64)
            if sel is not None and len(excl):
                excl = excl[sel.mask[excl]]
            if len(excl) > _MAX_OVERFETCH:
                mask = (sel.mask if sel is not None else self._live_mask).copy()
                mask[excl] = False
                sel, excl = Selection(mask, self._generation, self.ids), np.zeros(0, np.int64)
            n_allowed = (sel.n_allowed if sel is not None else len(self)) - len(excl)
            if n_allowed <= 0:
                return out_ids, out_scores
            kk = min(k, n_allowed)
            D, I = self._combined(Q, kk + len(excl), sel)
            if len(excl):
                D, I = _drop(D, I, excl, kk)
            kk = min(kk, I.shape[1])
            D, I = D[:, :kk], I[:, :kk]
            valid = I >= 0
            out_ids[:, :kk] = np.where(valid, self.ids[np.maximum(I, 0)], -1)
            out_scores[:, :kk] = np.where(valid, D, -np.inf)
            return out_ids, out_scores

    def _combined(self, Q: np.ndarray, k: int, sel: Selection | None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_search_positions` of one query, answered together with the single queries
        other threads asked meanwhile (as ingest's group commit does for files).

        An exact search is bound by reading every stored vector (100k x 200-d: 80 MB a
        query), so searching many queries in one pass (a matrix product, see
        :data:`BLAS_FROM`) costs little more than one: 16 concurrent queries ~3.5 ms each
        instead of ~18 (measured side by side at load 6).  The first caller to find no pass
        running searches everything waiting, grouped by selection, with the largest ``k``
        asked (every caller takes its first ``k``: the same hits it would get alone); the
        others wait for that pass, and the next pass starts as soon as it ends.  A lone
        query waits for nothing.
        """
        if Q.shape[0] != 1 or (sel is None and self.kind == "hnsw"):
            # a graph search reads a few thousand vectors, each query its own: grouping
            # saves nothing and makes each caller wait for everyone's queries
            return self._search_positions(Q, k, sel)
        slot = _Slot(Q, k, sel)
        with self._comb:
            self._comb_pending.append(slot)
            while self._comb_running and not slot.done:
                self._comb.wait()
            if slot.done:
                return slot.answer()
            self._comb_running = True
            batch, self._comb_pending = self._comb_pending, []
        try:
            groups: dict[int, list[_Slot]] = {}
            for s in batch:
                groups.setdefault(id(s.sel), []).append(s)
            for group in groups.values():
                try:
                    D, I = self._search_positions(np.concatenate([s.Q for s in group]),
                                                  max(s.k for s in group), group[0].sel)
                    for j, s in enumerate(group):
                        s.result = (D[j : j + 1, : s.k], I[j : j + 1, : s.k])
                except BaseException as exc:  # noqa: BLE001 - each caller raises it
                    for s in group:
                        s.error = exc
        finally:
            with self._comb:
                for s in batch:
                    s.done = True
                self._comb_running = False
                self.combined_max = max(self.combined_max, len(batch))
                self._comb.notify_all()
        return slot.answer()

    def _search_positions(self, Q: np.ndarray, k: int, sel: Selection | None) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32, positions int64) ``(q, k)`` of the top ``k`` within ``sel``."""
        import faiss

        _use_blas_for(Q.shape[0])

        cfg = self.config
        if sel is None:
            if self.kind == "hnsw":
                params = faiss.SearchParametersHNSW()
                params.efSearch = max(cfg.ef_search, k)
                return self.index.search(Q, k, params=params)
            return self.index.search(Q, k)
        if sel.n_allowed == 0:
            return np.zeros((Q.shape[0], 0), np.float32), np.zeros((Q.shape[0], 0), np.int64)
        if self.kind == "flat" or sel.n_allowed <= cfg.exact_filter_max:
            V = self._subset_vectors(sel)
            if V is not None:
                kk = min(k, sel.n_allowed)
                D, J = faiss.knn(Q, V, kk, metric=faiss.METRIC_INNER_PRODUCT)
                return D, np.where(J >= 0, sel.positions[np.maximum(J, 0)], -1)
        exact = self.kind == "flat" or sel.n_allowed <= cfg.exact_bitmap_max
        bits = sel.bits
        fsel = faiss.IDSelectorBitmap(self.n_positions, faiss.swig_ptr(bits))
        if exact:
            params = faiss.SearchParameters()
            params.sel = fsel
            target = self.index if self.kind == "flat" else faiss.downcast_index(self.index.storage)
            return target.search(Q, k, params=params)
        params = faiss.SearchParametersHNSW()
        params.sel = fsel
        frac = sel.n_allowed / max(len(self), 1)
        params.efSearch = int(min(cfg.ef_search_max, max(k, math.ceil(cfg.ef_search / frac))))
        return self.index.search(Q, k, params=params)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: str | Path) -> Path:
        """Write ``<model_id>.faiss``, ``.ids.npy`` and ``.json`` into ``directory`` atomically."""
        import faiss

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        stem = d / _safe_name(self.model_id)
        tag = f".tmp{os.getpid()}"
        with self._rw.read():
            faiss.write_index(self.index, str(stem) + ".faiss" + tag)
            with open(str(stem) + ".ids.npy" + tag, "wb") as f:
                np.save(f, self.ids)
            Path(str(stem) + ".json" + tag).write_text(json.dumps(self.meta(), indent=2))
        # meta last: a reader that sees the new meta sees the new index and ids too
        for ext in (".faiss", ".ids.npy", ".json"):
            os.replace(str(stem) + ext + tag, str(stem) + ext)
        return stem.with_suffix(".faiss")

    @classmethod
    def load(cls, directory: str | Path, model_id: str, *, config: IndexConfig | None = None) -> VectorIndex:
        """Load the index of ``model_id`` from ``directory``.

        Raises
        ------
        FileNotFoundError
            No index for that model there, or one in an older on-disk format (build anew).
        ModelMismatchError
            The files describe another model, or disagree with each other.
        """
        import faiss

        stem = Path(directory) / _safe_name(model_id)
        meta_path = Path(str(stem) + ".json")
        if not meta_path.exists():
            raise FileNotFoundError(meta_path)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelMismatchError(f"{meta_path}: unreadable index metadata ({exc}); "
                                     f"{rebuild_hint(None, model_id)}") from exc
        if isinstance(meta.get("format"), int) and meta["format"] < FORMAT_VERSION:
            raise FileNotFoundError(f"{meta_path}: index format {meta['format']} is older than "
                                    f"{FORMAT_VERSION}; build it anew")
        try:
            ids = np.load(str(stem) + ".ids.npy")
            index = faiss.read_index(str(stem) + ".faiss")
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelMismatchError(f"{stem}.faiss: unreadable index ({exc}); "
                                     f"{rebuild_hint(None, model_id)}") from exc
        if meta.get("model_id") != model_id:
            raise ModelMismatchError(
                f"{meta_path}: index was built for model {meta.get('model_id')!r}, not {model_id!r}; "
                f"{rebuild_hint(None, model_id)}")
        if meta.get("format") != FORMAT_VERSION or index.d != meta.get("dim") or index.ntotal != len(ids):
            raise ModelMismatchError(f"{meta_path}: index files disagree (dim {index.d} vs {meta.get('dim')}, "
                                     f"{index.ntotal} vectors vs {len(ids)} ids); {rebuild_hint(None, model_id)}")
        # the graph was built with the saved M/efConstruction; how to search it is today's policy
        saved = meta.get("config", {})
        cfg = config or IndexConfig(**{f: saved[f] for f in _BUILD_FIELDS if f in saved})
        return cls(model_id=model_id, dim=index.d, kind=meta["kind"], index=index, ids=ids, config=cfg,
                   synced_version=int(meta.get("synced_version", 0)))


class _Slot:
    """One caller's query in a combined search pass (:meth:`VectorIndex._combined`)."""

    __slots__ = ("Q", "k", "sel", "done", "result", "error")

    def __init__(self, Q: np.ndarray, k: int, sel: Selection | None):
        self.Q, self.k, self.sel = Q, k, sel
        self.done, self.result, self.error = False, None, None

    def answer(self) -> tuple[np.ndarray, np.ndarray]:
        if self.error is not None:
            raise self.error
        return self.result


#: From this many queries on, faiss answers an exact search with one matrix product over
#: the stored vectors (BLAS: each vector read once for all queries) instead of a scan per
#: query.  faiss 1.15's default (128,000) leaves a combined pass of 16 queries scanning 16
#: times; measured on 100k x 200-d, one thread: 4 queries 11 ms each by BLAS vs 18 by scans,
#: 16 queries 3.5 vs 18; one or two queries are faster scanned.
BLAS_FROM = 4
#: The threshold for fewer queries: with faiss's threshold lowered, even a single query went
#: the slow way (measured with faiss 1.15, one thread, 1 query: 10k x 200-d 0.8 ms at the
#: default vs 3.5-5.6 ms at 4; 100k x 200-d 14.7 vs 37-40 ms), so it is set per search.
_SCAN_BELOW_BLAS = 1 << 30


def _use_blas_for(nq: int) -> None:
    """Set faiss's (process-wide) BLAS threshold for a search of ``nq`` queries.  Searches
    of one index run one pass at a time (:meth:`VectorIndex._combined`); a concurrent
    search elsewhere that sees the other setting gets the same hits, only at the other speed."""
    import faiss

    want = BLAS_FROM if nq >= BLAS_FROM else _SCAN_BELOW_BLAS
    if faiss.cvar.distance_compute_blas_threshold != want:
        faiss.cvar.distance_compute_blas_threshold = want


@contextlib.contextmanager
def _single_thread(on: bool):
    """Run faiss on one thread: for a handful of queries, OpenMP start-up and spinning cost
    more than they save (measured: 100k x 200 flat search 40 ms on 2 threads, 7 ms on 1)."""
    if not on:
        yield
        return
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _drop(D: np.ndarray, I: np.ndarray, excl: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove positions ``excl`` from each row of an over-fetched result, keep ``k`` per row."""
    D2 = np.full((I.shape[0], k), -np.inf, np.float32)
    I2 = np.full((I.shape[0], k), -1, np.int64)
    # excl holds at most _MAX_OVERFETCH positions: a broadcast compare, not np.isin (whose
    # table method allocates a bool per position up to the largest: 1 ms at 100k)
    bad = (I[:, :, None] == np.asarray(excl, np.int64)[None, None, :]).any(axis=2)
    for r in range(I.shape[0]):
        keep = np.flatnonzero(~bad[r])[:k]
        D2[r, : len(keep)] = D[r, keep]
        I2[r, : len(keep)] = I[r, keep]
    return D2, I2


def _safe_name(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", model_id)


# --------------------------------------------------------------------------- per-segment vectors


class SegmentIndex:
    """Per-segment vectors of one model, searched by a track's best-matching segment.

    A track has a few unit-length segment vectors (where in the track each begins:
    ``starts``); :meth:`best` scores every track by its closest segment to the query
    (exact: one matrix product over all segments, then a max per track), which is what
    lets a short clip find the part of a track it came from.  Kept in memory, in step
    with the catalog through :func:`soundalike.search.sync.cached_segments`; no catalog
    here either.

    Attributes
    ----------
    model_id : the model whose segment vectors these are
    dim : vector length
    synced_version : the catalog change version the index has read up to
    """

    def __init__(self, *, model_id: str, dim: int) -> None:
        self.model_id = model_id
        self.dim = int(dim)
        self.synced_version = 0
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._packed: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Number of tracks with segments."""
        return len(self._rows)

    @property
    def n_segments(self) -> int:
        return int(sum(len(s) for s, _ in self._rows.values()))

    def track_ids(self) -> np.ndarray:
        return np.fromiter(sorted(self._rows), np.int64, len(self._rows))

    def put(self, track_id: int, starts: np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace a track's segments: ``starts`` ``(n,)`` s, ``vectors`` float32 ``(n, dim)``."""
        V = normalize(vectors)
        if V.shape[1] != self.dim:
            raise ModelMismatchError(f"track {track_id}: {V.shape[1]}-d segment vectors for model "
                                     f"{self.model_id}, expected {self.dim}-d")
        with self._lock:
            self._rows[int(track_id)] = (np.asarray(starts, np.float32).reshape(-1), V)
            self._packed = None

    def remove(self, track_ids: np.ndarray) -> int:
        with self._lock:
            n = sum(self._rows.pop(int(t), None) is not None for t in track_ids)
            if n:
                self._packed = None
            return n

    def _pack(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(track ids (t,), first segment of each (t,), all vectors (m, dim), starts (m,))``."""
        with self._lock:
            if self._packed is None:
                ids = np.fromiter(sorted(self._rows), np.int64, len(self._rows))
                blocks = [self._rows[int(t)] for t in ids]
                counts = np.fromiter((len(s) for s, _ in blocks), np.int64, len(blocks))
                first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
                X = (np.concatenate([v for _, v in blocks]) if blocks
                     else np.zeros((0, self.dim), np.float32))
                S = np.concatenate([s for s, _ in blocks]) if blocks else np.zeros(0, np.float32)
                self._packed = (ids, first, np.ascontiguousarray(X, np.float32), S)
            return self._packed

    def best(self, query: np.ndarray, *, track_ids: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every track's best segment for one query vector.

        Parameters
        ----------
        query : float32 ``(dim,)`` (normalised here)
        track_ids : only these tracks (``None``: all); ids without segments are left out

        Returns
        -------
        (ids, scores, starts)
            int64 track ids, float32 cosine of each one's closest segment and float32 where
            that segment begins (seconds), in id order.
        """
        q = normalize(np.asarray(query, np.float32).reshape(1, -1))[0]
        if q.shape[0] != self.dim:
            raise ModelMismatchError(f"query vector has {q.shape[0]} dimensions, segments of model "
                                     f"{self.model_id} have {self.dim}")
        ids, first, X, S = self._pack()
        if len(ids) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)
        sims = X @ q
        best = np.maximum.reduceat(sims, first)
        # where the best one begins: the first segment of each track reaching its maximum
        hit = sims >= np.repeat(best, np.diff(np.append(first, len(sims))))
        where = np.flatnonzero(hit)
        owner = np.searchsorted(first, where, side="right") - 1
        at = np.full(len(ids), -1, np.int64)
        at[owner[::-1]] = where[::-1]
        starts = S[at]
        if track_ids is not None:
            keep = np.isin(ids, np.asarray(track_ids, np.int64))
            return ids[keep], best[keep].astype(np.float32), starts[keep]
        return ids, best.astype(np.float32), starts
