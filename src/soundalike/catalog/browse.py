"""The browse path: filters, counts and sorted pages from an in-memory table of one catalog state.

The web page asks, on every filter change, for a page of rows, the total, the facet
counts and one more count per chosen category; each used to be a full SQL pass over the
catalog (count, page, facets) -- about a second at 100k tracks.  Here the catalog's
per-track columns are loaded once per :meth:`~soundalike.catalog.store.Catalog.change_token`
into NumPy arrays indexed by track id (a :class:`TrackTable`):

- filter terms on tags, numbers and attributes (``genre:rock``, ``duration:60..``,
  ``bpm:118..124``, ``key:8A``, ``vocals:no``) become boolean masks (microseconds to
  a few milliseconds);
- substring terms (``title:moon``, ``file:banjo``, bare words and the page's text search)
  are answered in memory too, from each text field's lower-cased texts joined into one
  byte string (:class:`TextColumn`): the rarest byte of the value is looked up in it with
  NumPy, the other bytes checked at those places, and the places mapped to tracks by
  ``searchsorted`` -- a few ms at 100k tracks for a word, tens for one letter that every
  track holds, the same on every backend (the trigram index of schema migration 8 cannot
  look up values under three characters, and PostgreSQL's one ``SELECT`` per field was
  ~130 ms at 100k); the tracks a commit changed are tested one by one beside the joined
  texts until there are many (``_TEXT_DIRTY_MIN``), then the texts are joined again;
- every sort order is a rank per track, computed once: a page is ``argpartition`` over
  the matched ids' ranks, the total is their number;
- the matched id set of a filter is cached (per catalog state), so the rows, the total
  and the facets of one filter share one evaluation;
- a new catalog state (an ingest commits every file) is not a reload: every write stamps
  the tracks it changed with its commit's token (``tracks.version``, schema migration 10),
  and the previous state's table is brought forward by re-reading just the tracks
  :meth:`~soundalike.catalog.store.Catalog.changed_track_ids` names
  (:meth:`TrackTable.updated`, :meth:`~soundalike.catalog.facets.FacetTable.updated`;
  the text sort orders are carried over too).  The result is exactly the table a fresh
  build gives (the tests compare them after every kind of write); only when many tracks
  changed (:func:`worth_updating`) is the table rebuilt.

:func:`evaluate` gives exactly the ids of ``Catalog.match`` (the SQL of
:func:`~soundalike.catalog.query.compile_sql`, the one definition of the grammar): the
tests compare the two on many random filters on both backends.  Sorting happens here in
Python, so both backends order pages identically (SQL ``ORDER BY`` on text follows each
database's collation).
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from soundalike.catalog import query as _q
from soundalike.catalog.facets import FacetTable

#: Tables kept per process (catalog states); matched id sets kept, and their most bytes in all.
_TABLES, _MATCHES, _MATCH_BYTES = 4, 128, 32 << 20

#: Sort orders and what they sort by (ties by id); text is compared lower-cased in Python.
ORDERS = ("id", "title", "artist", "path", "length", "added", "relevance", "bpm")

#: Bring a table forward from the changed tracks while they are at most this share of it
#: (plus a few): re-reading 20% of the rows costs about as much as reading them all.
_UPDATE_SHARE, _UPDATE_MIN = 0.2, 1000


def worth_updating(n_changed: int, n_rows: int) -> bool:
    """Whether a table of ``n_rows`` tracks is better updated from ``n_changed`` changed
    tracks than rebuilt."""
    return n_changed <= max(_UPDATE_MIN, _UPDATE_SHARE * n_rows)


def file_name(path: str) -> str:
    """The last ``/``-separated part of a path (as the SQL ``file:`` expression computes it)."""
    return path.rsplit("/", 1)[-1]


def search_key(text: str | None) -> bytes:
    """A text as the filter's substring test compares it: UTF-8 with the ASCII letters
    lower-cased, NULL as empty -- the SQL ``lower(coalesce(col, ''))`` of
    :meth:`~soundalike.catalog.backends.Dialect.contains`: SQLite's ``lower`` folds ASCII
    only, and so does PostgreSQL's under the C locale the tests' servers use (a server
    whose locale folds more, e.g. ``É``, gives its SQL ``match`` more hits than this for
    capitals outside ASCII; the browse path answers alike on every backend)."""
    return (text or "").encode("utf-8", "surrogatepass").lower()


#: The searched text fields (query.TEXT_FIELDS) and how each comes from a track row.
_SEARCH: dict[str, Callable[[tuple], bytes]] = {
    "title": lambda r: search_key(r[1]),
    "artist": lambda r: search_key(r[2]),
    "album": lambda r: search_key(r[9]),
    "file": lambda r: search_key(file_name(r[3])),
    # the relevance order's title groups (prefix / contains) compare the title lower-cased
    # by Python, as Catalog.page documents them -- not a filter field
    "title_lower": lambda r: (r[1] or "").lower().encode("utf-8", "surrogatepass"),
}

#: Track texts changed since a table's joined text was built, searched one by one until
#: there are more than this many (or this share of the tracks); then it is joined anew.
_TEXT_DIRTY_MIN, _TEXT_DIRTY_SHARE = 2000, 0.02

#: Separates the texts of the tracks in a TextColumn (a value holding it is tested per text).
_SEP = b"\0"


@dataclass(frozen=True)
class TextColumn:
    """One text field of a set of tracks joined into one byte string, for substring search.

    Attributes
    ----------
    ids : int64 ``(m,)`` the track of each text
    starts : int64 ``(m,)`` where each text starts in ``data``
    data : the :func:`search_key` texts joined by ``_SEP``
    arr : uint8 ``(len(data),)`` view of ``data``
    histogram : int64 ``(256,)`` occurrences of each byte value in ``data``
    """

    ids: np.ndarray
    starts: np.ndarray
    data: bytes
    arr: np.ndarray
    histogram: np.ndarray

    @classmethod
    def build(cls, ids: np.ndarray, texts: list[bytes]) -> TextColumn:
        lens = np.fromiter(map(len, texts), np.int64, count=len(texts))
        starts = np.zeros(len(texts), np.int64)
        if len(texts) > 1:
            np.cumsum(lens[:-1] + 1, out=starts[1:])
        data = _SEP.join(texts)
        arr = np.frombuffer(data, np.uint8)
        return cls(ids=np.asarray(ids, np.int64), starts=starts, data=data, arr=arr,
                   histogram=np.bincount(arr, minlength=256))

    def find(self, needle: bytes) -> np.ndarray:
        """int64 ids (unsorted, repeats possible) of the tracks whose text holds ``needle``
        (non-empty, without ``_SEP``: then no match can run from one text into the next)."""
        rows, _pos = self.find_places(needle)
        return self.ids[rows]

    def find_places(self, needle: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Every place ``needle`` (as for :meth:`find`) starts in ``data``: int64 ``(h,)``
        row (index into ``ids``) and int64 ``(h,)`` byte offset in ``data``."""
        k = len(needle)
        none = np.zeros(0, np.int64)
        if k == 0 or k > len(self.arr):
            return none, none
        # anchor on the needle's rarest byte: its places are the fewest candidates
        j = min(range(k), key=lambda i: self.histogram[needle[i]])
        if self.histogram[needle[j]] == 0:
            return none, none
        pos = np.flatnonzero(self.arr == needle[j]) - j
        pos = pos[(pos >= 0) & (pos <= len(self.arr) - k)]
        for i in range(k):
            if i != j and len(pos):
                pos = pos[self.arr[pos + i] == needle[i]]
        return np.searchsorted(self.starts, pos, side="right") - 1, pos


#: The text columns of a table and how each comes from a track row (see TrackTable.from_rows).
_TEXTS: dict[str, Callable[[tuple], str]] = {
    "title": lambda r: (r[1] if r[1] is not None else file_name(r[3])).lower(),
    "artist": lambda r: (r[2] or "").lower(),
    "path": lambda r: r[3],
}


@dataclass
class TrackTable:
    """The ``ok`` tracks of one catalog state, column by column, indexed by track id.

    Attributes
    ----------
    ids : int64 ``(n,)`` sorted ids of the ``ok`` tracks
    ok : bool ``(size,)``, ``size = max id + 1``: which ids are ``ok`` tracks
    numbers : field -> float64 ``(size,)`` for ``NUMERIC_FIELDS`` and ``ATTRIBUTE_FIELDS``
        plus ``vocals``; NaN where the value is NULL (``duration``: the decoded length
        where the attributes have it, else the header's -- as the SQL compares it)
    camelot : int16 ``(size,)`` index into ``keys`` (-1: none)
    keys : the Camelot codes present
    header_duration : float64 ``(size,)`` ``tracks.duration_s`` (the length sort, the slider bounds)
    sort_text : order -> object ``(size,)``: the per-track text it sorts by (``title``,
        ``artist``, ``path``); None where no ok track
    added : float64 ``(size,)`` ``added_at``
    search_text : text field (``title``, ``artist``, ``album``, ``file``) -> object
        ``(size,)``: each ok track's :func:`search_key` text (None where no ok track), and
        ``title_lower`` (the title lower-cased by Python, UTF-8: the relevance groups);
        searched through :class:`TextColumn` s built on the first text search
    """

    ids: np.ndarray
    ok: np.ndarray
    numbers: dict[str, np.ndarray]
    camelot: np.ndarray
    keys: tuple[str, ...]
    header_duration: np.ndarray
    sort_text: dict[str, np.ndarray]
    added: np.ndarray
    search_text: dict[str, np.ndarray]
    _ranks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: (joined texts per field, sorted ids whose text changed since they were joined)
    _text: tuple[dict[str, TextColumn], np.ndarray] | None = field(default=None, repr=False)
    _text_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _memo: dict[str, object] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        return len(self.ok)

    @classmethod
    def from_rows(cls, tracks: list[tuple], attributes: list[tuple]) -> TrackTable:
        """Build from ``(id, title, artist, path, duration_s, year, sr, channels, added_at,
        album)`` rows of ``ok`` tracks and ``(track_id, duration_s, bpm, loudness_lufs,
        loudness_range_lu, energy, vocals, camelot)`` rows of ``track_attributes``."""
        n = len(tracks)
        ids = np.fromiter((r[0] for r in tracks), np.int64, count=n)
        order = np.argsort(ids, kind="stable")
        tracks = [tracks[i] for i in order]
        ids = ids[order]
        size = int(ids[-1]) + 1 if n else 1
        ok = np.zeros(size, bool)
        ok[ids] = True

        def col(rows, j, idx) -> np.ndarray:
            out = np.full(size, np.nan)
            if rows:
                out[idx] = np.array([r[j] for r in rows], dtype=np.float64)  # None -> NaN
            return out

        numbers = {"year": col(tracks, 5, ids), "sr": col(tracks, 6, ids), "channels": col(tracks, 7, ids),
                   "id": np.where(ok, np.arange(size, dtype=np.float64), np.nan)}
        header = col(tracks, 4, ids)
        attrs = [r for r in attributes if 0 <= int(r[0]) < size and ok[int(r[0])]]
        aidx = np.fromiter((int(r[0]) for r in attrs), np.int64, count=len(attrs))
        decoded = col(attrs, 1, aidx)
        numbers["duration"] = np.where(np.isnan(decoded), header, decoded)
        for name, j in (("bpm", 2), ("loudness", 3), ("lra", 4), ("energy", 5), ("vocals", 6)):
            numbers[name] = col(attrs, j, aidx)
        keys = tuple(sorted({r[7] for r in attrs if r[7]}))
        kindex = {k: i for i, k in enumerate(keys)}
        camelot = np.full(size, -1, np.int16)
        camelot[aidx] = np.fromiter((kindex.get(r[7], -1) if r[7] else -1 for r in attrs), np.int16,
                                    count=len(attrs))
        sort_text = {k: np.full(size, None, dtype=object) for k in _TEXTS}
        for k, f in _TEXTS.items():
            sort_text[k][ids] = [f(r) for r in tracks]
        search_text = {k: np.full(size, None, dtype=object) for k in _SEARCH}
        for k, f in _SEARCH.items():
            search_text[k][ids] = [f(r) for r in tracks]
        added = col(tracks, 8, ids)
        return cls(ids=ids, ok=ok, numbers=numbers, camelot=camelot, keys=keys, header_duration=header,
                   sort_text=sort_text, added=added, search_text=search_text)

    def updated(self, changed: np.ndarray, tracks: list[tuple], attributes: list[tuple]) -> TrackTable:
        """This table with the tracks ``changed`` replaced by their rows now: ``tracks`` /
        ``attributes`` as :meth:`from_rows` takes them, of the ``changed`` tracks that are
        ``ok`` (a changed id without a track row is no longer ``ok``: it leaves the table).

        The same table :meth:`from_rows` builds from all rows of the new state (the tests
        compare the two); costs a copy of the columns plus the changed rows, not a reload.
        """
        changed = np.asarray(changed, np.int64)
        size = max(self.size, int(changed.max()) + 1 if len(changed) else 0)
        grow = size - self.size

        def ext(a: np.ndarray, fill) -> np.ndarray:
            return np.concatenate([a, np.full(grow, fill, a.dtype)]) if grow else a.copy()

        ok = ext(self.ok, False)
        ok[changed] = False
        tids = np.fromiter((int(r[0]) for r in tracks), np.int64, count=len(tracks))
        ok[tids] = True
        numbers = {k: ext(v, np.nan) for k, v in self.numbers.items()}
        for v in numbers.values():
            v[changed] = np.nan
        header, added = ext(self.header_duration, np.nan), ext(self.added, np.nan)
        header[changed] = added[changed] = np.nan
        sort_text = {k: ext(v, None) for k, v in self.sort_text.items()}
        for v in sort_text.values():
            v[changed] = None
        search_text = {k: ext(v, None) for k, v in self.search_text.items()}
        for v in search_text.values():
            v[changed] = None
        if len(tracks):
            for name, j in (("year", 5), ("sr", 6), ("channels", 7)):
                numbers[name][tids] = np.array([r[j] for r in tracks], dtype=np.float64)
            header[tids] = np.array([r[4] for r in tracks], dtype=np.float64)
            added[tids] = np.array([r[8] for r in tracks], dtype=np.float64)
            for k, f in _TEXTS.items():
                sort_text[k][tids] = [f(r) for r in tracks]
            for k, f in _SEARCH.items():
                search_text[k][tids] = [f(r) for r in tracks]
        numbers["id"] = np.where(ok, np.arange(size, dtype=np.float64), np.nan)
        attrs = [r for r in attributes if 0 <= int(r[0]) < size and ok[int(r[0])]]
        aidx = np.fromiter((int(r[0]) for r in attrs), np.int64, count=len(attrs))
        decoded = np.full(size, np.nan)
        for name, j in (("bpm", 2), ("loudness", 3), ("lra", 4), ("energy", 5), ("vocals", 6)):
            if len(attrs):
                numbers[name][aidx] = np.array([r[j] for r in attrs], dtype=np.float64)
        if len(attrs):
            decoded[aidx] = np.array([r[1] for r in attrs], dtype=np.float64)
        # duration: the decoded length where the attributes have it, else the header's
        dur = numbers["duration"]
        dur[changed] = np.where(np.isnan(decoded[changed]), header[changed], decoded[changed])
        # Camelot codes index the sorted keys present: patched in place while the keys stay
        # the same ones, re-indexed when a key appears or the last track of one goes
        camelot = ext(self.camelot, -1)
        camelot[changed] = -1
        got = [r[7] or None for r in attrs]
        kindex = {k: i for i, k in enumerate(self.keys)}
        keys = self.keys
        present = np.bincount(camelot[ok & (camelot >= 0)], minlength=len(keys)) > 0 if keys else np.zeros(0, bool)
        for k in got:
            if k is not None and k in kindex:
                present[kindex[k]] = True
        if all(k is None or k in kindex for k in got) and present.all():
            camelot[aidx] = np.fromiter((kindex[k] if k is not None else -1 for k in got), np.int16, count=len(got))
        else:
            key_of = np.array([*self.keys, None], dtype=object)[camelot]  # -1 -> None
            key_of[aidx] = np.array(got, dtype=object) if got else key_of[aidx]
            keys = tuple(sorted({k for k in key_of[ok] if k is not None}))
            kindex = {k: i for i, k in enumerate(keys)}
            camelot = np.fromiter((kindex.get(k, -1) if k is not None else -1 for k in key_of.tolist()), np.int16,
                                  count=size)
        new = TrackTable(ids=np.flatnonzero(ok).astype(np.int64), ok=ok, numbers=numbers, camelot=camelot,
                         keys=keys, header_duration=header, sort_text=sort_text, added=added,
                         search_text=search_text)
        self._carry_text_ranks(new, changed)
        with self._text_lock:
            if self._text is not None:  # the joined texts carry over; the changed tracks are searched apart
                new._text = (self._text[0], np.union1d(self._text[1], changed))
        return new

    def _carry_text_ranks(self, new: TrackTable, changed: np.ndarray) -> None:
        """Give ``new`` the text orders this table has sorted, with the changed tracks taken
        out and put back where they now sort (a Python sort of 100k titles is ~70 ms; this,
        a few ms).  The order is (text, id), as :meth:`rank` sorts it; the unchanged tracks
        keep their texts, so they stay in order."""
        with self._lock:
            ranks = {o: r for o, r in self._ranks.items() if o in ("title", "artist", "path")}
        for order, r in ranks.items():
            ordered = np.empty(len(self.ids), np.int64)
            ordered[r[self.ids]] = self.ids
            lst = ordered[~np.isin(ordered, changed)].tolist()
            text = new.sort_text[order]
            for i in sorted((int(i) for i in changed if new.ok[i]), key=lambda i: (text[i], i)):
                lst.insert(bisect.bisect_left(lst, (text[i], i), key=lambda j: (text[j], j)), i)
            out = np.full(new.size, np.iinfo(np.int64).max, np.int64)
            out[np.asarray(lst, np.int64)] = np.arange(len(lst), dtype=np.int64)
            new._ranks[order] = out

    def memo(self, name: str, compute: Callable[[], object]):
        """``compute()`` once per table (a value derived from this catalog state only)."""
        with self._lock:
            if name in self._memo:
                return self._memo[name]
        v = compute()
        with self._lock:
            return self._memo.setdefault(name, v)

    # ------------------------------------------------------------------ sorting

    def rank(self, order: str) -> np.ndarray:
        """int64 ``(size,)``: each ok track's position in ``order`` (computed once per order)."""
        with self._lock:
            r = self._ranks.get(order)
        if r is not None:
            return r
        n = len(self.ids)
        if order == "id":
            perm = np.arange(n)
        elif order in ("title", "relevance", "artist", "path"):
            text = self.sort_text["title" if order == "relevance" else order][self.ids].tolist()
            perm = np.array(sorted(range(n), key=text.__getitem__), dtype=np.int64)  # stable: ties by id
        elif order == "length":
            perm = np.lexsort((self.ids, np.nan_to_num(self.header_duration[self.ids], nan=0.0)))
        elif order == "added":
            perm = np.lexsort((-self.ids, -self.added[self.ids]))
        elif order == "bpm":
            perm = np.lexsort((self.ids, np.nan_to_num(self.numbers["bpm"][self.ids], nan=1e9)))
        else:
            raise ValueError(order)
        r = np.full(self.size, np.iinfo(np.int64).max, np.int64)
        r[self.ids[perm]] = np.arange(n, dtype=np.int64)
        with self._lock:
            self._ranks[order] = r
        return r

    def page(self, ids: np.ndarray, *, order: str, offset: int, limit: int, text: str | None = None) -> list[int]:
        """``limit`` ids of ``ids`` from ``offset`` in ``order`` (see ``Catalog.page``)."""
        k = offset + limit
        if k <= 0 or not len(ids) or offset >= len(ids):
            return []
        key = self.rank("title" if order == "relevance" else order)[ids]
        w = (text or "").strip().lower()
        if order == "relevance" and w:
            key = self.relevance_groups(w)[ids] * np.int64(len(self.ids) + 1) + key
        if k < len(ids):
            part = np.argpartition(key, k - 1)[:k]
            top = part[np.argsort(key[part], kind="stable")]
        else:
            top = np.argsort(key, kind="stable")
        return [int(i) for i in ids[top[offset:k]]]

    # ------------------------------------------------------------------ text search

    def _text_columns(self) -> tuple[dict[str, TextColumn], np.ndarray]:
        """The joined texts and the ids changed since they were joined (built here on the
        first text search of a table, or when too many tracks changed since)."""
        with self._text_lock:
            t = self._text
            if t is None or len(t[1]) > max(_TEXT_DIRTY_MIN, _TEXT_DIRTY_SHARE * len(self.ids)):
                t = ({f: TextColumn.build(self.ids, col[self.ids].tolist()) for f, col in self.search_text.items()},
                     np.zeros(0, np.int64))
                self._text = t
            return t

    def text_mask(self, fields: tuple[str, ...], value: str) -> np.ndarray:
        """bool ``(size,)``: the ok tracks any of whose ``fields`` (``title``, ``artist``,
        ``album``, ``file``) contains ``value`` (already lower-cased, as the filter parser
        gives it) -- the SQL of ``query._text_ids`` / ``query._contains``."""
        needle = value.encode("utf-8", "surrogatepass")
        m = np.zeros(self.size, bool)
        if not needle:
            m[self.ids] = True  # '' is in every text (instr(x, '') > 0 in SQL)
            return m
        if _SEP in needle:  # could run across texts in the joined string: test each text
            for f in fields:
                texts = self.search_text[f][self.ids].tolist()
                m[self.ids[np.fromiter((needle in t for t in texts), bool, count=len(texts))]] = True
            return m
        columns, dirty = self._text_columns()
        for f in fields:
            hit = columns[f].find(needle)
            m[hit[hit < self.size]] = True
        if len(dirty):  # changed since the texts were joined: their old texts do not count
            dirty = dirty[dirty < self.size]
            m[dirty] = False
            live = dirty[self.ok[dirty]]
            for f in fields:
                texts = self.search_text[f][live].tolist()
                m[live[np.fromiter((needle in t for t in texts), bool, count=len(texts))]] = True
        return m

    def relevance_groups(self, w: str) -> np.ndarray:
        """int64 ``(size,)``: 0 where the lower-cased title starts with ``w``, 1 where it
        holds it elsewhere, 2 for the rest (the relevance order's groups), from the joined
        titles (a Python pass over the matched titles was ~50 ms for 100k matches)."""
        needle = w.encode("utf-8", "surrogatepass")
        group = np.full(self.size, 2, np.int64)

        def each(ids: np.ndarray) -> None:
            texts = self.search_text["title_lower"][ids].tolist()
            group[ids] = np.fromiter((0 if t.startswith(needle) else 1 if needle in t else 2 for t in texts),
                                     np.int64, count=len(ids))

        if _SEP in needle:
            each(self.ids)
            return group
        columns, dirty = self._text_columns()
        col = columns["title_lower"]
        rows, pos = col.find_places(needle)
        group[col.ids[rows]] = 1
        group[col.ids[rows[pos == col.starts[rows]]]] = 0
        if len(dirty):  # changed since the titles were joined: their own texts decide
            dirty = dirty[dirty < self.size]
            group[dirty] = 2
            each(dirty[self.ok[dirty]])
        return group

    # ------------------------------------------------------------------ filtering

    def term_mask(self, term: _q.Term, tags: FacetTable | None, tag_codes: dict) -> np.ndarray | None:
        """Where one (positive) term is true, as a bool ``(size,)`` mask; None: not in memory."""
        if term.kind == "tag":
            assert tags is not None
            m = np.zeros(self.size, bool)
            for v in term.values:
                code = tag_codes.get((term.field, str(v)))
                if code is not None:
                    tr = tags.tracks_of(code)
                    m[tr[tr < self.size]] = True
            return m
        if term.kind in ("numeric", "attribute"):
            col = self.numbers[term.field or ""]
            m = np.zeros(self.size, bool)
            with np.errstate(invalid="ignore"):
                for r in term.values:
                    assert isinstance(r, _q.Range)
                    lo = col >= r.lo if r.lo is not None else ~np.isnan(col)
                    hi = col <= r.hi if r.hi is not None else ~np.isnan(col)
                    m |= lo & hi
            return m
        if term.kind == "vocals":
            col = self.numbers["vocals"]
            m = np.zeros(self.size, bool)
            with np.errstate(invalid="ignore"):
                for v in term.values:
                    m |= (col >= _q.VOCALS_THRESHOLD) if v == "yes" else (col < _q.VOCALS_THRESHOLD)
            return m
        if term.kind == "key" and "compatible" not in term.values:
            codes = [self.keys.index(str(v)) for v in term.values if str(v) in self.keys]
            return np.isin(self.camelot, np.asarray(codes, np.int16)) if codes else np.zeros(self.size, bool)
        if term.kind == "text":
            m = np.zeros(self.size, bool)
            for v in term.values:
                m |= self.text_mask((term.field or "",), str(v))
            return m
        if term.kind == "any":  # a tag equal to the word in any category, or the word in any text field
            assert tags is not None
            m = np.zeros(self.size, bool)
            for v in term.values:
                m |= self.text_mask(tuple(_q.TEXT_FIELDS), str(v))
                for code in (c for (_cat, tag), c in tag_codes.items() if tag == v):
                    tr = tags.tracks_of(code)
                    m[tr[tr < self.size]] = True
            return m
        return None  # key:compatible (the SQL says why it needs a query track)


def evaluate(query: _q.Query, *, table: TrackTable, tags: Callable[[], FacetTable],
             sql_ids: Callable[[_q.Query], np.ndarray]) -> np.ndarray:
    """Sorted int64 ids of the ok tracks matching ``query``.

    ``tags()`` gives the facet table of the same sources the filter's tag terms match
    (asked only when there is a tag term); ``sql_ids`` answers the terms the table cannot
    (a :class:`~soundalike.catalog.query.Query` of just those), as ``Catalog.match`` would.
    """
    mask = table.ok.copy()
    rest: list[_q.Term] = []
    facet = tags() if any(t.kind in ("tag", "any") for t in query.terms) else None
    codes = facet.code_index() if facet is not None else {}
    for term in query.terms:
        m = table.term_mask(term, facet, codes)
        if m is None:
            rest.append(term)
        else:
            mask &= ~m if term.negated else m
    if rest:
        got = sql_ids(_q.Query(tuple(rest), query.text))
        m = np.zeros(table.size, bool)
        got = got[got < table.size]
        m[got] = True
        mask &= m
    return np.flatnonzero(mask).astype(np.int64)


# ------------------------------------------------------------------ caches


class _LRU:
    def __init__(self, size: int, max_bytes: int | None = None, *, chain: bool = False):
        self.size, self.max_bytes, self.items, self.lock = size, max_bytes, OrderedDict(), threading.Lock()
        self.chain = chain  # keys end in a change token: offer build() the newest older state

    def _too_big(self) -> bool:
        if len(self.items) > self.size:
            return True
        return self.max_bytes is not None and len(self.items) > 1 and sum(
            v.nbytes for v in self.items.values()) > self.max_bytes

    def get(self, key, build):
        """The value of ``key``, else ``build(prev)``: ``prev`` is ``(token, value)`` of the
        newest kept key equal but for an older token (the last item; None when none)."""
        with self.lock:
            v = self.items.get(key)
            if v is not None:
                self.items.move_to_end(key)
                return v
            prev = max(((k[-1], val) for k, val in self.items.items()
                        if k[:-1] == key[:-1] and k[-1] < key[-1]), key=lambda kv: kv[0],
                       default=None) if self.chain else None
        v = build(prev)  # outside the lock: a slow build never blocks other requests
        with self.lock:
            self.items[key] = v
            self.items.move_to_end(key)
            while self._too_big():
                self.items.popitem(last=False)
        return v


_tables = _LRU(_TABLES, chain=True)
_matches = _LRU(_MATCHES, _MATCH_BYTES)


def cached_table(key: tuple, build: Callable[[tuple | None], TrackTable]) -> TrackTable:
    """The table for ``key`` (catalog location, change token), built once by ``build(prev)``;
    ``prev`` is ``(token, table)`` of the newest older state kept of that catalog (or None),
    for bringing forward instead of reloading."""
    return _tables.get(key, build)


def forget_cached() -> None:
    """Drop this process's browse tables, cached matches and facet tables: the next request
    builds them from the catalog (benchmarks time that rebuild; tests compare against it)."""
    from soundalike.catalog import facets

    for lru in (_tables, _matches):
        with lru.lock:
            lru.items.clear()
    with facets._lock:
        facets._tables.clear()


def cached_match(key: tuple, build: Callable[[], np.ndarray]) -> np.ndarray:
    """The matched ids for ``key`` (catalog location, change token, query terms, sources)."""
    ids = _matches.get(key, lambda _prev: build())
    ids.setflags(write=False)  # shared between requests
    return ids
