"""Facet counts from an in-memory table of (track, tag) pairs instead of a GROUP BY per request.

``SELECT category, tag, count(DISTINCT track_id) ... GROUP BY`` reads every tag row of every
matching track: on 100k tracks (~1M tag rows) that is most of a second per request, and the
web page asks for facets on every filter change (once more per chosen category).  Here the
catalog's distinct ``(track, category:tag)`` pairs are loaded once into two NumPy arrays --
``track`` (int64) and ``code`` (int32, the index of ``category:tag`` in a label table) --
and counting the facets of a set of tracks is a mask lookup and one ``bincount``: a few
milliseconds for 1M pairs.

The table is cached per catalog location, tag sources and :meth:`Catalog.change_token`
(which every change to tracks or tags moves), so a tag edit or an ingest is seen by the
next request.  A new state is not a new read of every tag: the previous state's table is
brought forward with the pairs of the tracks changed since (:meth:`FacetTable.updated`,
from :meth:`Catalog.changed_track_ids`), so an ingest committing while the page is served
costs each request milliseconds, not a reload of 1M pairs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: Facet tables kept per process (catalogs x source sets).
_CACHE_SIZE = 4


@dataclass(frozen=True)
class FacetTable:
    """Distinct (track, category:tag) pairs of one catalog state, for counting.

    Attributes
    ----------
    track : int64 ``(n_pairs,)`` track ids
    code : int32 ``(n_pairs,)`` index into ``labels``
    labels : ``(category, tag)`` per code, sorted
    max_id : largest track id (mask size)
    """

    track: np.ndarray
    code: np.ndarray
    labels: tuple[tuple[str, str], ...]
    max_id: int

    @classmethod
    def from_pairs(cls, track_ids: np.ndarray, categories: Sequence[str], tags: Sequence[str]) -> FacetTable:
        """Build from parallel sequences (duplicates allowed: a track counts once per tag)."""
        labels = sorted(set(zip(categories, tags, strict=True)))
        index = {lab: i for i, lab in enumerate(labels)}
        code = np.fromiter((index[(c, t)] for c, t in zip(categories, tags, strict=True)), np.int32,
                           count=len(track_ids))
        track = np.asarray(track_ids, dtype=np.int64)
        if len(track):
            # one pair per (track, label): sources and models giving the same tag count once
            key = np.unique(track * np.int64(len(labels) + 1) + code)
            track, code = key // np.int64(len(labels) + 1), (key % np.int64(len(labels) + 1)).astype(np.int32)
        return cls(track=track, code=code, labels=tuple(labels), max_id=int(track.max()) if len(track) else 0)

    def updated(self, changed: np.ndarray, track_ids: np.ndarray, categories: Sequence[str],
                tags: Sequence[str]) -> FacetTable:
        """This table with the pairs of the tracks ``changed`` replaced by the given pairs
        (their pairs now: parallel sequences as :meth:`from_pairs` takes them).

        The same table :meth:`from_pairs` builds from all pairs of the new state (labels no
        track carries any more are dropped, new ones sorted in), without re-reading the rest.
        """
        changed = np.unique(np.asarray(changed, np.int64))
        # pairs are sorted by track: each changed track's pairs are one slice
        lo, hi = np.searchsorted(self.track, changed, "left"), np.searchsorted(self.track, changed, "right")
        drop = np.concatenate([np.arange(a, b) for a, b in zip(lo.tolist(), hi.tolist()) if b > a] or
                              [np.zeros(0, np.int64)])
        track, code = np.delete(self.track, drop), np.delete(self.code, drop)
        new = FacetTable.from_pairs(track_ids, categories, tags)
        index = self.code_index()
        used = np.bincount(code, minlength=len(self.labels)) > 0
        for lab in new.labels:
            if lab in index:
                used[index[lab]] = True
        if all(lab in index for lab in new.labels) and used.all():
            # the same labels (the usual case): the new pairs go in where their tracks sort
            ncode = np.fromiter((index[lab] for lab in new.labels), np.int32, count=len(new.labels))[new.code] \
                if len(new.track) else np.zeros(0, np.int32)
            at = np.searchsorted(track, new.track, "left")
            track, code = np.insert(track, at, new.track), np.insert(code, at, ncode)
            out = FacetTable(track=track, code=code, labels=self.labels,
                             max_id=int(track.max()) if len(track) else 0)
            if "_by_code" in self.__dict__:  # sorted already (a tag filter was asked): carry it over
                out.__dict__["_by_code"] = self._by_code_updated(changed, new.track, ncode)
            return out
        labels = sorted({self.labels[i] for i in np.flatnonzero(used)} | set(new.labels))
        index = {lab: i for i, lab in enumerate(labels)}
        # both maps keep the order of sorted labels, so the kept pairs stay sorted
        old_map = np.fromiter((index.get(lab, -1) for lab in self.labels), np.int32, count=len(self.labels))
        new_map = np.fromiter((index[lab] for lab in new.labels), np.int32, count=len(new.labels))
        width = np.int64(len(labels) + 1)
        kept = track * width + old_map[code] if len(track) else np.zeros(0, np.int64)
        added = np.sort(new.track * width + new_map[new.code]) if len(new.track) else np.zeros(0, np.int64)
        key = np.insert(kept, np.searchsorted(kept, added), added)
        track, code = key // width, (key % width).astype(np.int32)
        return FacetTable(track=track, code=code, labels=tuple(labels),
                          max_id=int(track.max()) if len(track) else 0)

    def _by_code_updated(self, changed: np.ndarray, track: np.ndarray, code: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
        """:attr:`_by_code` of this table (same labels) with the pairs of ``changed``
        replaced by ``(track, code)``: a merge instead of a new sort of every pair."""
        tracks, starts = self._by_code
        codes = np.repeat(np.arange(len(self.labels), dtype=np.int64), np.diff(starts))
        keep = ~np.isin(tracks, changed)
        tracks, codes = tracks[keep], codes[keep]
        width = np.int64(max(self.max_id, int(track.max()) if len(track) else 0) + 1)
        key = codes * width + tracks  # (code, track) order
        nkey = np.sort(code.astype(np.int64) * width + track)
        at = np.searchsorted(key, nkey)
        tracks, codes = np.insert(tracks, at, nkey % width), np.insert(codes, at, nkey // width)
        return tracks, np.searchsorted(codes, np.arange(len(self.labels) + 1))

    @cached_property
    def _by_code(self) -> tuple[np.ndarray, np.ndarray]:
        # pairs are sorted by track: so is each slice.  Fewer than 2**15 labels sort as
        # int16, where a stable sort is a radix sort (1M pairs: 20 ms instead of 100)
        code = self.code.astype(np.int16) if len(self.labels) < 2 ** 15 else self.code
        order = np.argsort(code, kind="stable")
        starts = np.searchsorted(self.code[order], np.arange(len(self.labels) + 1))
        return self.track[order], starts

    def tracks_of(self, code: int) -> np.ndarray:
        """int64 sorted ids of the tracks carrying label ``code`` (a filter's tag term)."""
        tracks, starts = self._by_code
        return tracks[starts[code]:starts[code + 1]]

    @cached_property
    def _counts_all(self) -> np.ndarray:
        # the whole catalog's counts: every unfiltered page load asks (a pass over 1M pairs)
        n = np.bincount(self.code, minlength=len(self.labels))
        n.setflags(write=False)
        return n

    @cached_property
    def _codes(self) -> dict[tuple[str, str], int]:
        return {lab: i for i, lab in enumerate(self.labels)}

    def code_index(self) -> dict[tuple[str, str], int]:
        """``(category, tag)`` -> its code."""
        return self._codes

    def counts(self, ids: np.ndarray | None, *, categories: Sequence[str] | None = None,
               limit_per_category: int = 50) -> dict[str, list[tuple[str, int]]]:
        """``{category: [(tag, n_tracks), ...]}`` over ``ids`` (None: every track in the table).

        Most frequent first (ties by tag), at most ``limit_per_category`` per category,
        categories sorted by name; tags that no track of ``ids`` has are left out.
        """
        if ids is None:
            n = self._counts_all
        else:
            mask = np.zeros(self.max_id + 1, dtype=bool)
            ids = np.asarray(ids, dtype=np.int64)
            mask[ids[(ids >= 0) & (ids <= self.max_id)]] = True
            n = np.bincount(self.code[mask[self.track]], minlength=len(self.labels))
        wanted = set(categories) if categories else None
        out: dict[str, list[tuple[str, int]]] = {}
        for i in np.flatnonzero(n):
            c, t = self.labels[i]
            if wanted is None or c in wanted:
                out.setdefault(c, []).append((t, int(n[i])))
        return {c: sorted(v, key=lambda x: (-x[1], x[0]))[:limit_per_category] for c, v in sorted(out.items())}


_lock = threading.Lock()
_tables: OrderedDict[tuple, FacetTable] = OrderedDict()


def cached_table(key: tuple, build) -> FacetTable:
    """The table for ``key`` (catalog location, sources, change token), built once by
    ``build(prev)``; ``prev`` is ``(token, table)`` of the newest older state kept of the
    same catalog and sources (or None), for bringing forward instead of reloading."""
    with _lock:
        t = _tables.get(key)
        if t is not None:
            _tables.move_to_end(key)
            return t
        prev = max(((k[-1], v) for k, v in _tables.items() if k[:-1] == key[:-1] and k[-1] < key[-1]),
                   key=lambda kv: kv[0], default=None)
    t = build(prev)  # outside the lock: a slow build never blocks other catalogs' requests
    with _lock:
        _tables[key] = t
        _tables.move_to_end(key)
        while len(_tables) > _CACHE_SIZE:
            _tables.popitem(last=False)
    return t
