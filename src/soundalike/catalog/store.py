"""The catalog: tracks, tags, analyses and ingest errors behind one door, :class:`Catalog`.

``Catalog`` is the only code that holds a database connection; every query another
module needs is a named method here (the test ``test_layers.py`` fails on SQL or a
connection anywhere else).  The database is a SQLite file (WAL; the default) reached
through :mod:`.backends`, the schema and its migrations live in :mod:`.schema`, the
filter grammar in :mod:`.query`.

Writes are transactional (``with catalog.transaction(): ...``), so a process killed at
any moment -- SIGKILL included -- loses nothing that was committed and leaves no
half-written track.  The schema is migrated forward on open; a catalog written by a
newer soundalike is refused, not damaged.

Every writing transaction bumps the catalog's change counter, and each analysis
carries the counter value of the transaction that wrote it (``analyses.version``):
:meth:`Catalog.change_token` tells a reader cheaply *whether* anything changed, and
:meth:`Catalog.analysis_versions` *what* (the index sync in :mod:`soundalike.search.sync`).
"""

from __future__ import annotations

import itertools
import os
import json
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from soundalike.catalog import query as _q
from soundalike.catalog.backends import Backend, chunked, database_errors, is_url, open_backend
from soundalike.catalog.schema import SCHEMA_VERSION, migrate
from soundalike.errors import CatalogBusyError, CatalogError, ModelMismatchError, TrackNotFoundError

TagSource = Literal["file", "user", "model", "suggested"]
TAG_SOURCES: tuple[str, ...] = ("file", "user", "model", "suggested")

#: The musical attribute columns of ``track_attributes`` (schema migration 3).
ATTRIBUTE_COLUMNS = ("duration_s", "bpm", "bpm_confidence", "bpm_alternative", "bpm_ambiguous",
                     "key_tonic", "key_mode", "camelot", "key_confidence", "loudness_lufs",
                     "loudness_range_lu", "vocals", "energy", "seconds_read")

_TRACK_FIELDS = ("id", "path", "content_hash", "size", "mtime", "duration_s", "sr", "channels",
                 "format", "title", "artist", "album", "genre", "year", "status", "added_at",
                 "updated_at", "inode", "device")


@dataclass(frozen=True)
class Track:
    """One file in the catalog."""

    id: int
    path: str
    content_hash: str
    size: int
    mtime: float
    duration_s: float | None = None
    sr: int | None = None
    channels: int | None = None
    format: str | None = None
    title: str | None = None
    artist: str | None = None
    album: str | None = None
    genre: str | None = None
    year: int | None = None
    status: str = "ok"
    added_at: float = 0.0
    updated_at: float = 0.0
    inode: int | None = None  # st_ino / st_dev of the file at ingest (None: ingested before v3)
    device: int | None = None

    def file_problem(self, st: os.stat_result) -> str | None:
        """Why the file ``st`` describes is not the file this track was ingested from, or None.

        It must be a regular file with the size and mtime recorded at ingest and, when they
        were recorded, the same inode and device (a file swapped for another or for a
        symlink elsewhere -- ``ln -sf /etc/passwd track.mp3`` -- fails at least one).
        """
        import stat as stat_

        if not stat_.S_ISREG(st.st_mode):
            return "is no longer a regular file"
        if self.inode is not None and (_u63(st.st_ino), _u63(st.st_dev)) != (self.inode, self.device):
            return "was replaced by another file since it was ingested"
        if st.st_size != self.size or st.st_mtime != self.mtime:
            return "changed since it was ingested"
        return None

    @property
    def display_name(self) -> str:
        """``Artist – Title`` when known, else the file name."""
        name = self.title or Path(self.path).stem
        return f"{self.artist} – {name}" if self.artist else name

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in _TRACK_FIELDS}


@dataclass(frozen=True)
class Tag:
    """A label on a track: ``category:tag`` from a ``source`` with a ``confidence``."""

    tag: str
    category: str = "tag"
    source: TagSource = "user"
    confidence: float = 1.0
    model_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tag", normalize_tag(self.tag))
        object.__setattr__(self, "category", normalize_tag(self.category) or "tag")
        if self.source not in TAG_SOURCES:
            raise CatalogError(f"tag source must be one of {TAG_SOURCES}, got {self.source!r}")

    @classmethod
    def stored(cls, tag: str, category: str, source: str, confidence: float, model_id: str | None) -> "Tag":
        """A tag as read back from the catalog: it was normalised and checked when written,
        so nothing is done again (a search's hits read ~60 tags a request)."""
        t = object.__new__(cls)
        object.__setattr__(t, "tag", tag)
        object.__setattr__(t, "category", category)
        object.__setattr__(t, "source", source)
        object.__setattr__(t, "confidence", confidence)
        object.__setattr__(t, "model_id", model_id or None)
        return t


@dataclass(frozen=True)
class StoredAnalysis:
    track_id: int
    model_id: str
    embedding: np.ndarray
    predictions: dict[str, float]
    created_at: float
    #: what made it: ``"full"`` (every patch) or ``"spread:N"`` (see soundalike.ingest.plan)
    analysis: str = "full"


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    name: str
    dim: int
    labels: list[str] = field(default_factory=list)
    label_category: str = "tag"
    n_tracks: int = 0


#: Orders :meth:`Catalog.page` knows.
PageOrder = Literal["id", "title", "artist", "path", "length", "added", "relevance"]
PAGE_ORDERS: tuple[str, ...] = ("id", "title", "artist", "path", "length", "added", "relevance", "bpm")


@dataclass(frozen=True)
class PlaylistInfo:
    """A saved playlist (its tracks: :meth:`Catalog.playlist_track_ids`)."""

    id: int
    name: str
    created_at: float
    updated_at: float
    n_tracks: int = 0

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "created_at": self.created_at,
                "updated_at": self.updated_at, "n_tracks": self.n_tracks}


@dataclass(frozen=True)
class StoredAdaptation:
    """A catalog adaptation: ``data`` maps ``base_model_id`` vectors to ``model_id``'s."""

    model_id: str
    base_model_id: str
    method: str
    data: bytes
    created_at: float


@dataclass(frozen=True)
class IngestErrorRecord:
    id: int
    path: str
    reason: str
    error_type: str
    time: float


def normalize_tag(s: str) -> str:
    """Tags and categories are compared lower-case with single spaces."""
    return " ".join(str(s).strip().lower().split())



_TRACK_COLS = ", ".join(_TRACK_FIELDS)
_TRACK_COLS_T = ", ".join(f"t.{f}" for f in _TRACK_FIELDS)
_ANALYSIS_COLS = "track_id, model_id, embedding, predictions, created_at, analysis"
_instances = itertools.count(1)
#: id chunk size when a statement also binds a few tag sources
CHUNK_WITH_SOURCES = 890
#: The writing transaction's change version, read where it is needed (see Catalog._bump).
_TX_VERSION = "(SELECT value FROM counters WHERE name = 'change')"
#: Stamp a track as changed by this transaction (its tags or attributes; after Catalog._bump).
_TRACK_CHANGED = f"UPDATE tracks SET version = {_TX_VERSION} WHERE id = ?"


def _fits_int64(v) -> bool:
    """Whether ``v`` is an integer a SQL BIGINT holds (larger ones name no track)."""
    try:
        return -(1 << 63) <= int(v) < (1 << 63)
    except (TypeError, ValueError, OverflowError):
        return False


def _u63(v: int | None) -> int | None:
    """An unsigned 64-bit number (inode, device) folded into a signed 64-bit column."""
    return None if v is None else (int(v) - (1 << 64) if int(v) >= 1 << 63 else int(v))


_PEAKS_UPSERT = ("INSERT INTO peaks (track_id, format, duration_s, data, content_hash, created_at) "
                 "VALUES ({track}, ?, ?, ?, {hash}, ?) ON CONFLICT (track_id) DO UPDATE SET format = excluded.format, "
                 "duration_s = excluded.duration_s, data = excluded.data, content_hash = excluded.content_hash, "
                 "created_at = excluded.created_at")
#: Tag rows bound into one multi-row INSERT (6 values each: well under both backends' limits).
_TAG_ROWS_PER_INSERT = 400


def _tag_rows(tags: Iterable[Tag], *, source: str, model_id: str) -> list[tuple]:
    """``(tag, category, source, confidence, model_id)`` rows of ``tags``, one per key.

    A repeated ``(category, tag)`` keeps its last confidence (what inserting them one by
    one with the upsert gave); one multi-row upsert may not touch a row twice.
    """
    rows: dict[tuple[str, str], tuple] = {}
    for t in tags:
        if t.tag:
            rows[(t.category, t.tag)] = (t.tag, t.category, source, float(t.confidence), model_id)
    return list(rows.values())


def _attribute_values(attributes: dict) -> list:
    """The :data:`ATTRIBUTE_COLUMNS` of an attributes dict as stored (missing = NULL)."""
    values = [attributes.get(c) for c in ATTRIBUTE_COLUMNS]
    i = ATTRIBUTE_COLUMNS.index("bpm_ambiguous")
    if values[i] is not None:
        values[i] = int(bool(values[i]))
    return values


_ATTRIBUTE_READ = ("track_id", *ATTRIBUTE_COLUMNS, "model_id", "version")


def _attribute_row(r: Sequence) -> tuple[int, dict]:
    """``(track id, attributes dict)`` of a row of :data:`_ATTRIBUTE_READ`."""
    d = dict(zip(_ATTRIBUTE_READ, r, strict=True))
    if d["bpm_ambiguous"] is not None:
        d["bpm_ambiguous"] = bool(d["bpm_ambiguous"])
    return int(d.pop("track_id")), d


def _track(row: Sequence) -> Track:
    return Track(*row)


def _analysis(row: Sequence) -> StoredAnalysis:
    return StoredAnalysis(int(row[0]), row[1], np.frombuffer(row[2], np.float32).copy(),
                          json.loads(row[3]), float(row[4]), str(row[5]))


def _segment_arrays(track_id: int, starts, vectors) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(starts float32 (n,), unit-length vectors float16 (n, dim))``."""
    V = np.asarray(vectors, np.float32)
    st = np.ascontiguousarray(starts, np.float32).reshape(-1)
    if V.ndim != 2 or V.shape[0] != st.shape[0] or V.shape[0] == 0:
        raise CatalogError(f"track {track_id}: segments need (n, dim) vectors and n starts, "
                           f"got {V.shape} and {st.shape}")
    if not (np.isfinite(V).all() and np.isfinite(st).all()):
        raise CatalogError(f"track {track_id}: segment vectors contain NaN or inf")
    norms = np.linalg.norm(V, axis=1, keepdims=True)
    V = np.divide(V, norms, out=np.zeros_like(V), where=norms > 0)
    return st, np.ascontiguousarray(V, np.float16)


def _segment_row(r: Sequence) -> tuple[np.ndarray, np.ndarray]:
    n, d = int(r[0]), int(r[1])
    return (np.frombuffer(bytes(r[2]), np.float32).copy(),
            np.frombuffer(bytes(r[3]), np.float16).reshape(n, d).astype(np.float32))


class Catalog:
    """An open catalog.  Use :meth:`open`; close with :meth:`close` or ``with``.

    Attributes
    ----------
    path : the catalog file (SQLite) or its URL (server backends), as given to :meth:`open`
    dialect_name : ``"sqlite"`` or ``"postgresql"``
    """

    def __init__(self, path: Path | str, backend: Backend):
        self.path = path
        self._db = backend
        self._in_tx = False
        self._tx_bumped = False
        self._tx_dirty = False
        #: the change token a read-only request reads once (:meth:`same_state`), or None
        self._pinned_token: int | None = None
        self._models_by_id: dict[str, ModelInfo] = {}
        #: (default model id, change token) as :meth:`default_model_and_token` last read them
        self._default_seen: tuple[str, int] | None = None
        #: distinguishes open catalogs for per-connection caches (``id()`` can be reused)
        self.instance_key = next(_instances)
        #: :attr:`location`, worked out once (resolving a path is ~0.1 ms, and cache keys ask
        #: for it several times a request)
        self._location: str | None = None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True, timeout_s: float = 30.0) -> Catalog:
        """Open (and create or migrate) the catalog at ``path`` (a file, or a server URL).

        Raises
        ------
        CatalogError
            The file is missing (``create=False``), not a database, or written by a
            newer schema.
        """
        backend = open_backend(path, create=create, timeout_s=timeout_s)
        # a URL is kept without its password: `path` appears in messages
        where: Path | str = backend.location if is_url(path) else Path(path).expanduser()
        cat = cls(where, backend)
        try:
            migrate(backend)
        except database_errors() as exc:
            backend.close()
            raise CatalogError(f"{where}: not a soundalike catalog ({exc})") from exc
        except BaseException:
            backend.close()
            raise
        return cat

    @property
    def dialect_name(self) -> str:
        return self._db.dialect.name

    @property
    def location(self) -> str:
        """A stable text naming this catalog (cache keys, messages; a URL without password)."""
        if self._location is None:
            self._location = self._db.location if is_url(self.path) else str(Path(self.path).resolve())
        return self._location

    def index_dir(self) -> Path:
        """Where this process keeps the catalog's faiss indexes.

        A SQLite catalog: ``<catalog file>.index/`` beside it.  A server catalog: the
        embeddings live in the database and each host keeps its own copy of the index
        in ``<data dir>/indexes/<database>-<hash of the URL>/`` (rebuilt from the
        database whenever it is missing).
        """
        if is_url(self.path):
            import hashlib
            import re

            from soundalike.paths import data_dir

            loc = self._db.location
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", loc.rsplit("/", 1)[-1].split("?")[0]) or "catalog"
            return data_dir() / "indexes" / f"{name}-{hashlib.sha1(loc.encode()).hexdigest()[:12]}"
        p = Path(self.path)
        return p.with_name(p.name + ".index")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Catalog]:
        """One atomic unit of writes (``BEGIN IMMEDIATE`` on SQLite); nests as a no-op.

        A transaction that wrote anything bumps the change counter once, just before it
        commits (see :meth:`change_token`).
        """
        if self._in_tx:
            yield self
            return
        try:
            self._db.begin()
        except database_errors() as exc:
            if self._db.is_busy(exc):
                raise CatalogBusyError(f"{self.path}: another writer holds the catalog ({exc}); "
                                       f"nothing was written, try again") from exc
            raise
        self._in_tx, self._tx_bumped, self._tx_dirty = True, False, False
        try:
            try:
                yield self
                if self._tx_dirty and not self._tx_bumped:
                    self._bump()
            except BaseException:
                self._db.rollback()
                raise
            else:
                self._db.commit()
            finally:
                self._in_tx, self._tx_bumped, self._tx_dirty = False, False, False
        except database_errors() as exc:
            if self._db.is_busy(exc):
                raise CatalogBusyError(f"{self.path}: another writer was in the way ({exc}); "
                                       f"nothing was written, try again") from exc
            raise

    @contextmanager
    def savepoint(self) -> Iterator[Catalog]:
        """A part of the open :meth:`transaction` that fails alone (``SAVEPOINT``).

        When the block raises, what it wrote is rolled back and the exception goes on to
        the caller; the transaction stays open with everything written before the block,
        so the caller may go on (ingest's group commit: one file's failing write costs
        that file, not the group).  On a server every answer of the block is awaited at
        its end, so an error of the block is raised inside it, not by a later statement.
        A busy error (a deadlock the server broke, a lock timeout) spoils the whole
        transaction: it is raised as :class:`CatalogBusyError` without rolling back
        to the savepoint.
        """
        assert self._in_tx, "a savepoint lives inside Catalog.transaction()"
        # the change counter's bump is rolled back with the block: bump again after it
        bumped, dirty = self._tx_bumped, self._tx_dirty
        self._db.execute("SAVEPOINT soundalike_part")
        try:
            yield self
            self._db.sync()
        except BaseException as exc:
            if isinstance(exc, database_errors()) and self._db.is_busy(exc):
                raise CatalogBusyError(f"{self.path}: another writer was in the way ({exc}); "
                                       f"nothing was written, try again") from exc
            self._db.rollback_to("soundalike_part")
            self._tx_bumped, self._tx_dirty = bumped, dirty
            raise
        self._db.execute("RELEASE SAVEPOINT soundalike_part")

    @property
    def answers_later(self) -> bool:
        """Whether, inside a transaction, a statement's answer (and its error) can come back
        after the statement returned (a server's pipelined transaction): then an error is
        known for sure only at the end of a :meth:`savepoint` or at commit."""
        return self._db.answers_later

    def _write(self, sql: str, params: Sequence = ()):
        """Run a writing statement (inside :meth:`transaction`) and mark the transaction dirty."""
        assert self._in_tx, "writes go through Catalog.transaction()"
        self._tx_dirty = True
        return self._db.execute(sql, params)

    def _write_aside(self, sql: str, params: Sequence = ()):
        """A write that changes no track, tag or analysis (peaks, favourites, playlists):
        it leaves :meth:`change_token` alone, so search indexes and facet tables stay valid."""
        assert self._in_tx, "writes go through Catalog.transaction()"
        return self._db.execute(sql, params)

    def _bump(self) -> None:
        """Bump the change counter once for this transaction (its value is read in SQL).

        The counter row stays locked until commit, so concurrent writers get increasing
        values in the order they commit.  Statements read the value with
        :data:`_TX_VERSION` instead of fetching it, so on PostgreSQL nothing waits for an
        answer here (the transaction is pipelined).
        """
        if not self._tx_bumped:
            self._db.execute("UPDATE counters SET value = value + 1 WHERE name = 'change'")
            self._tx_bumped = True

    @property
    def schema_version(self) -> int:
        return self._db.get_schema_version()

    def change_token(self) -> int:
        """A number that grows with every committed change to tracks, tags or analyses.

        One indexed row read, cheap enough to call per request: an index cache compares
        it with the token it last synced at.  It is catalog-wide (not per model) on
        purpose: a tag edit moves filter results even when no vector changed.
        """
        if self._pinned_token is not None:
            return self._pinned_token
        row = self._db.fetchone("SELECT value FROM counters WHERE name = 'change'")
        return int(row[0]) if row else 0

    @contextmanager
    def same_state(self) -> Iterator[Catalog]:
        """Answer every :meth:`change_token` inside from one read (a read-only request).

        A web page request asks for the token five to ten times (the page, the filter's
        notes, the facets, the slider bounds each find their cached table by it); on a
        server each read is a round trip (~1 ms, more under load).  Inside this block the
        first read is kept, so the whole request also answers from one catalog state.
        Not for writes: a transaction inside would not move the token seen here.
        """
        if self._pinned_token is not None:  # nested: the outer block's state
            yield self
            return
        self._pinned_token = self.change_token()
        try:
            yield self
        finally:
            self._pinned_token = None

    # ------------------------------------------------------------------ tracks

    def upsert_track(self, *, path: str, content_hash: str, size: int, mtime: float,
                     duration_s: float | None = None, sr: int | None = None,
                     channels: int | None = None, format: str | None = None,
                     title: str | None = None, artist: str | None = None, album: str | None = None,
                     genre: str | None = None, year: int | None = None,
                     inode: int | None = None, device: int | None = None) -> int:
        """Insert or update the track at ``path`` (status becomes ``ok``); returns its id.

        ``inode``/``device`` (``os.stat``'s ``st_ino``/``st_dev``) identify the file ingested.

        One statement keyed on the unique path, so concurrent writers of the same file
        meet in the database's constraint, never in a duplicate row.
        """
        values = dict(path=path, content_hash=content_hash, size=size, mtime=mtime,
                      duration_s=duration_s, sr=sr, channels=channels, format=format, title=title,
                      artist=artist, album=album, genre=genre, year=year, inode=inode, device=device)
        with self.transaction():
            self._bump()  # before the row: its version is this commit's token
            return int(self._write(*self._track_upsert(values)).fetchone()[0])

    def _track_upsert(self, values: dict) -> tuple[str, tuple]:
        """The upsert of one track row (``upsert_track``'s keywords) and its parameters."""
        now = time.time()
        values = {**values, "inode": _u63(values.get("inode")), "device": _u63(values.get("device"))}
        cols = ", ".join(values)
        sets = ", ".join(f"{k} = excluded.{k}" for k in values if k != "path")
        return (f"INSERT INTO tracks ({cols}, status, added_at, updated_at, version) "
                f"VALUES ({self._db.dialect.marks(len(values))}, 'ok', ?, ?, {_TX_VERSION}) "
                f"ON CONFLICT (path) DO UPDATE SET {sets}, status = 'ok', updated_at = excluded.updated_at, "
                f"version = excluded.version "
                f"RETURNING id", (*values.values(), now, now))

    def get_track(self, track_id: int) -> Track | None:
        """The track with this id, or None (also for ids no 64-bit column can hold)."""
        if not _fits_int64(track_id):
            return None
        row = self._db.fetchone(f"SELECT {_TRACK_COLS} FROM tracks WHERE id = ?", (int(track_id),))
        return _track(row) if row else None

    def get_tracks(self, ids: Iterable[int]) -> dict[int, Track]:
        """Tracks by id (missing ids are left out)."""
        out: dict[int, Track] = {}
        for chunk in chunked(int(i) for i in ids if _fits_int64(i)):
            for row in self._db.fetchall(*self._tracks_query(chunk)):
                out[int(row[0])] = _track(row)
        return out

    def _tracks_query(self, ids: Sequence[int]) -> tuple[str, list]:
        cond, args = self._db.in_list("id", ids)
        return f"SELECT {_TRACK_COLS} FROM tracks WHERE {cond}", args

    def track_by_path(self, path: str | Path) -> Track | None:
        row = self._db.fetchone(f"SELECT {_TRACK_COLS} FROM tracks WHERE path = ?", (str(path),))
        return _track(row) if row else None

    def find_tracks(self, ref: str, *, limit: int = 20) -> list[Track]:
        """Resolve a user's reference: a numeric id, a path, or a title/artist substring."""
        ref = str(ref).strip()
        if ref.isdigit():
            t = self.get_track(int(ref))
            if t:
                return [t]
        p = Path(ref).expanduser()
        for candidate in (str(p), str(p.resolve()) if p.exists() else None):
            if candidate:
                t = self.track_by_path(candidate)
                if t:
                    return [t]
        like = "%" + ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        like_op = self._db.dialect.ilike
        rows = self._db.fetchall(
            f"SELECT {_TRACK_COLS} FROM tracks WHERE title {like_op} ? ESCAPE '\\' OR artist {like_op} ? "
            f"ESCAPE '\\' OR path {like_op} ? ESCAPE '\\' ORDER BY status = 'ok' DESC, id LIMIT ?",
            (like, like, like, limit))
        return [_track(r) for r in rows]

    def iter_tracks(self, *, status: str | None = "ok") -> Iterator[Track]:
        if status is None:
            rows = self._db.fetchall(f"SELECT {_TRACK_COLS} FROM tracks ORDER BY id")
        else:
            rows = self._db.fetchall(f"SELECT {_TRACK_COLS} FROM tracks WHERE status = ? ORDER BY id", (status,))
        for row in rows:
            yield _track(row)

    def count_tracks(self, status: str | None = None) -> int:
        if status is None:
            return int(self._db.fetchone("SELECT COUNT(*) FROM tracks")[0])
        return int(self._db.fetchone("SELECT COUNT(*) FROM tracks WHERE status = ?", (status,))[0])

    def ids_by_artist(self, artist: str) -> list[int]:
        """Ids of every track whose artist equals ``artist`` (case-insensitive)."""
        return [int(r[0]) for r in self._db.fetchall("SELECT id FROM tracks WHERE lower(artist) = lower(?)",
                                                     (artist,))]

    def file_states(self) -> dict[str, tuple[int, int, float, str, str]]:
        """path -> (id, size, mtime, content_hash, status) for every track: ingest's change check."""
        return {r[1]: (int(r[0]), r[2], r[3], r[4], r[5])
                for r in self._db.fetchall("SELECT id, path, size, mtime, content_hash, status FROM tracks")}

    def touch_track(self, track_id: int, *, size: int, mtime: float, inode: int | None = None,
                    device: int | None = None) -> None:
        """Record a new mtime (and file identity) for unchanged content (and bring a missing track back)."""
        with self.transaction():
            self._bump()
            self._write("UPDATE tracks SET size = ?, mtime = ?, inode = coalesce(?, inode), "
                        f"device = coalesce(?, device), status = 'ok', updated_at = ?, version = {_TX_VERSION} "
                        "WHERE id = ?",
                        (size, mtime, _u63(inode), _u63(device), time.time(), int(track_id)))

    def mark_changed(self, track_id: int) -> None:
        """Take a track whose file is no longer the one ingested out of service (status
        ``missing``: listings, search and the audio route skip it; the next ingest of its
        folder re-checks the file and brings it back if it is audio again)."""
        with self.transaction():
            self._bump()
            self._write(f"UPDATE tracks SET status = 'missing', updated_at = ?, version = {_TX_VERSION} "
                        "WHERE id = ? AND status = 'ok'",
                        (time.time(), int(track_id)))

    def mark_missing(self, track_ids: Iterable[int]) -> int:
        """Mark tracks whose files disappeared; nothing is deleted.  Returns how many changed."""
        n = 0
        ids = [int(i) for i in track_ids]
        if not ids:
            return 0
        with self.transaction():
            self._bump()
            for chunk in chunked(ids):
                self._tx_dirty = True
                n += self._db.execute_count(f"UPDATE tracks SET status = 'missing', updated_at = ?, "
                                            f"version = {_TX_VERSION} "
                                            f"WHERE status = 'ok' AND id IN ({self._db.dialect.marks(len(chunk))})",
                                            (time.time(), *chunk))
        return n

    # ------------------------------------------------------------------ tags

    _TAG_UPSERT = ("INSERT INTO tags (track_id, tag, category, source, confidence, model_id) "
                   "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (track_id, category, tag, source, model_id) "
                   "DO UPDATE SET confidence = excluded.confidence")

    def set_tags(self, track_id: int, tags: Iterable[Tag], *, source: TagSource,
                 model_id: str | None = None) -> None:
        """Replace ``track_id``'s tags of ``source`` (and ``model_id``) with ``tags``."""
        if source not in TAG_SOURCES:
            raise CatalogError(f"tag source must be one of {TAG_SOURCES}, got {source!r}")
        mid = model_id or ""
        rows = _tag_rows(tags, source=source, model_id=mid)
        with self.transaction():
            self._bump()
            self._write("DELETE FROM tags WHERE track_id = ? AND source = ? AND model_id = ?",
                        (int(track_id), source, mid))
            self._write(_TRACK_CHANGED, (int(track_id),))
            for chunk in chunked(rows, _TAG_ROWS_PER_INSERT):
                # one multi-row statement, not one per tag (a round trip's worth of work each
                # on a server backend)
                self._write(self._TAG_UPSERT.replace("(?, ?, ?, ?, ?, ?)", ", ".join(
                    ["(?, ?, ?, ?, ?, ?)"] * len(chunk))), [v for r in chunk for v in (int(track_id), *r)])

    def add_tag(self, track_id: int, tag: Tag) -> None:
        """Add one tag (kept with its own source), replacing the same tag from that source."""
        with self.transaction():
            self._bump()
            self._write(self._TAG_UPSERT, (int(track_id), tag.tag, tag.category, tag.source,
                                           float(tag.confidence), tag.model_id or ""))
            self._write(_TRACK_CHANGED, (int(track_id),))

    def remove_tag(self, track_id: int, *, tag: str, category: str, source: TagSource = "user") -> int:
        with self.transaction():
            self._tx_dirty = True
            self._bump()
            n = self._db.execute_count(
                "DELETE FROM tags WHERE track_id = ? AND tag = ? AND category = ? AND source = ?",
                (int(track_id), normalize_tag(tag), normalize_tag(category), source))
            self._write(_TRACK_CHANGED, (int(track_id),))
            return n

    def track_tags(self, track_id: int, *, sources: Iterable[str] | None = None) -> list[Tag]:
        """A track's tags, most confident first."""
        return self.tag_lists([track_id], sources=sources)[int(track_id)]

    def tag_lists(self, track_ids: Iterable[int], *, sources: Iterable[str] | None = None,
                  limit_per_track: int | None = None) -> dict[int, list[Tag]]:
        """Tags of many tracks at once (one query per chunk of ids, not one per track).

        Returns every requested id with its tags, suggested last, most confident first,
        then by category and tag; at most ``limit_per_track`` each.
        """
        ids = [int(i) for i in track_ids]
        out: dict[int, list[Tag]] = {i: [] for i in ids}
        srcs = list(sources) if sources is not None else None
        for chunk in chunked(ids):
            for tid, tag, category, source, confidence, model_id in self._db.fetch_rows(
                    *self._tag_lists_query(chunk, srcs)):
                lst = out[int(tid)]
                if limit_per_track is None or len(lst) < limit_per_track:
                    lst.append(Tag.stored(tag, category, source, confidence, model_id))
        return out

    def _tag_lists_query(self, ids: Sequence[int], sources: list[str] | None) -> tuple[str, list]:
        cond, args = self._db.in_list("track_id", ids)
        q = f"SELECT track_id, tag, category, source, confidence, model_id FROM tags WHERE {cond}"
        if sources is not None:
            q += f" AND source IN ({self._db.dialect.marks(len(sources))})"
            args += sources
        return q + " ORDER BY track_id, source = 'suggested', confidence DESC, category, tag", args

    def tag_pairs(self, track_ids: Iterable[int], *, sources: Sequence[str]) -> dict[int, set[tuple[str, str]]]:
        """``(category, tag)`` sets of many tracks from ``sources`` (what similar's "why" compares)."""
        ids = [int(i) for i in track_ids]
        out: dict[int, set[tuple[str, str]]] = {i: set() for i in ids}
        for chunk in chunked(ids):
            for tid, category, tag in self._db.fetchall(*self._tag_pairs_query(chunk, sources)):
                out[int(tid)].add((category, tag))
        return out

    def _tag_pairs_query(self, ids: Sequence[int], sources: Sequence[str]) -> tuple[str, list]:
        cond, args = self._db.in_list("track_id", ids)
        return (f"SELECT track_id, category, tag FROM tags WHERE source IN ({self._db.dialect.marks(len(sources))}) "
                f"AND {cond}", [*sources, *args])

    def tracks_with_tag_pairs(self, track_ids: Iterable[int], *, sources: Sequence[str]
                              ) -> tuple[dict[int, Track], dict[int, set[tuple[str, str]]]]:
        """:meth:`get_tracks` and :meth:`tag_pairs` in one query (a search result's hits:
        one round trip fewer per request on a server backend)."""
        ids = [int(i) for i in track_ids]
        tracks: dict[int, Track] = {}
        pairs: dict[int, set[tuple[str, str]]] = {i: set() for i in ids}
        m = self._db.dialect.marks
        n = len(_TRACK_FIELDS)
        for chunk in chunked(ids, CHUNK_WITH_SOURCES):
            cond, args = self._db.in_list("t.id", chunk)
            for row in self._db.fetchall(
                    f"SELECT {_TRACK_COLS_T}, g.category, g.tag FROM tracks t LEFT JOIN tags g "
                    f"ON g.track_id = t.id AND g.source IN ({m(len(sources))}) "
                    f"WHERE {cond}", [*sources, *args]):
                tid = int(row[0])
                if tid not in tracks:
                    tracks[tid] = _track(row[:n])
                if row[n] is not None:
                    pairs[tid].add((row[n], row[n + 1]))
        return tracks, pairs

    def known_tags(self, *, sources: Sequence[str], categories: Iterable[str] | None = None
                   ) -> dict[str, dict[int, set[str]]]:
        """category -> track id -> its tags from ``sources``, over ``ok`` tracks (tag completion)."""
        cats = set(categories) if categories is not None else None
        out: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
        rows = self._db.fetchall(
            "SELECT g.category, g.track_id, g.tag FROM tags g JOIN tracks t ON t.id = g.track_id "
            f"WHERE t.status = 'ok' AND g.source IN ({self._db.dialect.marks(len(sources))})", list(sources))
        for category, tid, tag in rows:
            if cats is None or category in cats:
                out[category][int(tid)].add(tag)
        return out

    def tag_counts(self, *, sources: Iterable[str] = ("file", "user", "model")) -> dict[str, dict[str, int]]:
        """category -> tag -> number of ok tracks carrying it (any of ``sources``)."""
        srcs = list(sources)
        rows = self._db.fetchall(
            f"SELECT category, tag, COUNT(DISTINCT track_id) AS n FROM tags JOIN tracks ON tracks.id = tags.track_id "
            f"WHERE tracks.status = 'ok' AND source IN ({self._db.dialect.marks(len(srcs))}) "
            f"GROUP BY category, tag ORDER BY category, n DESC, tag", srcs)
        out: dict[str, dict[str, int]] = {}
        for category, tag, n in rows:
            out.setdefault(category, {})[tag] = int(n)
        return out

    # ------------------------------------------------------------------ filters (catalog/query.py)

    def _where(self, where: _q.Query | str | None, text: str | None, include_suggested: bool,
               reference: dict | None = None):
        return _q.compile_sql(_q.with_text(where, text), include_suggested=include_suggested,
                              dialect=self._db.dialect, reference=reference)

    def match(self, where: _q.Query | str | None, *, include_suggested: bool = False,
              text: str | None = None, reference: dict | None = None) -> np.ndarray:
        """Ids of the ``ok`` tracks matching a filter (and optional free text).

        Parameters
        ----------
        where : filter text or parsed query (``None``: all tracks); see :mod:`.query`
        include_suggested : let tag terms match suggested tags
        text : free text matched like a bare quoted phrase (title/artist/album/tag)
        reference : the query track's attributes, for ``key:compatible``

        Returns
        -------
        int64 ``(n,)`` sorted track ids.
        """
        sql, params = self._where(where, text, include_suggested, reference)
        # ids in the binary format: a filter matching 10k tracks is 10k ints to parse
        rows = self._db.fetch_rows(f"SELECT t.id FROM tracks t WHERE {sql} ORDER BY t.id", params)
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def filter_notes(self, where: _q.Query | str | None, *, include_suggested: bool = False,
                     token: int | None = None) -> list[str]:
        """Plain notes on the tag terms of a filter that name what the catalog does not have.

        ``genre:rock`` on a catalog whose tags are all model tags of category ``tag``
        matches nothing; this says why: "no track has a tag in category 'genre'
        (categories here: instrument, tag)", or "no genre tag is rok (genre has: jazz,
        rock ...)".  Empty when every category and value exists.  From the cached facet table
        of the catalog state ``token`` (:meth:`change_token`; None: read it now), so a request
        that has read the token already asks no statement of its own.
        """
        q = where if isinstance(where, _q.Query) else _q.parse(where)
        terms = [t for t in q.terms if t.kind == "tag"]
        if not terms:
            return []
        # answered from the cached facet table (a DISTINCT over every tag row was ~0.1 s at 100k)
        table = self._facet_table_cached(_q.BASE_SOURCES + ((_q.SUGGESTED,) if include_suggested else ()), token)
        labels = set(table.labels)
        existing = sorted({c for c, _ in labels})
        notes: list[str] = []
        for t in terms:
            if t.field not in existing:
                have = ", ".join(existing) if existing else "none: the catalog has no tags yet"
                notes.append(f"no track has a tag in category '{t.field}' (categories here: {have})")
                continue
            vals = [str(v) for v in t.values]
            missing = [v for v in vals if (t.field, v) not in labels]
            if missing:
                some = [tag for tag, _ in table.counts(None, categories=[t.field], limit_per_category=12).get(t.field, [])]
                shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
                notes.append(f"no {t.field} tag is {shown} ({t.field} has: {', '.join(some)}"
                             f"{' ...' if len(some) == 12 else ''})")
        return notes

    def page(self, *, where: _q.Query | str | None = None, text: str | None = None,
             include_suggested: bool = False, offset: int = 0, limit: int = 50,
             order: PageOrder = "id") -> tuple[int, list[int]]:
        """One page of matching track ids and the total count.

        ``order``: ``id``; ``title`` / ``artist`` / ``path`` (A-Z, lower-cased); ``length``
        (shortest first); ``added`` (newest first); ``bpm`` (slowest first, unmeasured
        last); ``relevance`` -- with ``text``, titles that start with it, then titles that
        contain it, then the rest (tag, artist, album or file name matches), each A-Z;
        without ``text`` the same as ``title``.  Ties go by id.

        The filter is evaluated once (and cached for this catalog state, so the facets of
        the same filter reuse it) and sorted in memory (:mod:`.browse`): the order is
        the same on every backend.

        Returns
        -------
        (total, ids)
            number of matching tracks, and at most ``limit`` ids from ``offset`` in ``order``.
        """
        from soundalike.catalog.browse import ORDERS

        if order not in ORDERS:
            raise CatalogError(f"unknown track order {order!r}: one of {', '.join(PAGE_ORDERS)}")
        table, ids = self._browse(_q.with_text(where, text), include_suggested)
        return len(ids), table.page(ids, order=order, offset=int(offset), limit=int(limit), text=text)

    def prepare_browse(self) -> None:
        """Build this state's browse tables now (a server's start): the track table with
        the relevance order and the joined texts of text search, and the facet table --
        so the first page and the first search are as fast as the next (building them
        reads every track and tag: seconds at 100k)."""
        self.page(limit=1, order="relevance")
        self.facets(limit_per_category=1)
        self._track_table_cached()._text_columns()

    def refresh_statistics(self) -> None:
        """Let the database's query planner see the catalog as it is now (after bulk writes:
        a copy, a big ingest).  PostgreSQL ``ANALYZE``; SQLite ``PRAGMA optimize``."""
        self._db.execute("ANALYZE" if self.dialect_name == "postgresql" else "PRAGMA optimize")

    def duration_range(self) -> tuple[float, float] | None:
        """Shortest and longest ``ok`` track in seconds (for a length slider), None when empty."""
        r = self._db.fetchone("SELECT min(duration_s), max(duration_s) FROM tracks WHERE status = 'ok'")
        return (float(r[0]), float(r[1])) if r and r[0] is not None else None

    def browse_ranges(self) -> dict:
        """Whole-catalog bounds for the page's sliders and key menu, from the cached table:
        ``{"duration": (lo, hi) | None, "bpm": (lo, hi) | None, "keys": {camelot: n_tracks}}``
        over ``ok`` tracks (as :meth:`duration_range` and :meth:`attribute_summary` count them)."""
        t = self._track_table_cached()

        def bounds(col: np.ndarray):
            v = col[t.ids]
            v = v[~np.isnan(v)]
            return (float(v.min()), float(v.max())) if len(v) else None

        def compute() -> dict:
            codes = t.camelot[t.ids]
            n = np.bincount(codes[codes >= 0], minlength=len(t.keys))
            return {"duration": bounds(t.header_duration), "bpm": bounds(t.numbers["bpm"]),
                    "keys": {k: int(c) for k, c in zip(t.keys, n, strict=True) if c}}

        # once per catalog state (every facets request asks; ~2 ms of passes over 100k)
        r = t.memo("ranges", compute)
        return {"duration": r["duration"], "bpm": r["bpm"], "keys": dict(r["keys"])}

    def facets(self, *, where: _q.Query | str | None = None, text: str | None = None,
               include_suggested: bool = False, categories: list[str] | None = None,
               limit_per_category: int = 50) -> dict[str, list[tuple[str, int]]]:
        """Tag counts per category over the tracks matching a filter.

        A track counts once per tag however many sources or models gave it.

        Returns
        -------
        ``{category: [(tag, n_tracks), ...]}`` most frequent first, at most
        ``limit_per_category`` per category; categories sorted by name.
        """
        sources = _q.BASE_SOURCES + ((_q.SUGGESTED,) if include_suggested else ())
        # counted in memory from the catalog's (track, tag) pairs, cached per change token
        # (see catalog/facets.py: a GROUP BY over every tag row was most of a second at 100k)
        table = self._facet_table_cached(sources)
        q = _q.with_text(where, text)
        ids = self._browse(q, include_suggested)[1] if q else None
        return table.counts(ids, categories=categories, limit_per_category=limit_per_category)

    def _browse(self, q: _q.Query, include_suggested: bool):
        """:meth:`match` through the in-memory table of this catalog state (:mod:`.browse`),
        cached per filter; returns ``(table, ids)``, the ids sorted."""
        from soundalike.catalog.browse import cached_match, evaluate

        token = self.change_token()
        table = self._track_table_cached(token)
        sources = _q.BASE_SOURCES + ((_q.SUGGESTED,) if include_suggested else ())
        key = (self.location, token, q.terms, include_suggested)
        return table, cached_match(key, lambda: evaluate(
            q, table=table, tags=lambda: self._facet_table_cached(sources, token),
            sql_ids=lambda rest: self.match(rest, include_suggested=include_suggested)))

    def changed_track_ids(self, since: int) -> np.ndarray:
        """int64 sorted ids of the tracks whose row, tags or attributes a transaction
        committed after change token ``since`` changed (``tracks.version``, any status).

        The browse tables of the state ``since`` are brought forward by re-reading just
        these (:meth:`_track_table`, :meth:`_facet_table`).  A superset is harmless
        (re-reading a track is idempotent); every write of tracks, tags and attributes
        stamps the version after the transaction's counter bump, so none is missed.
        """
        # no ORDER BY: SQLite would walk the rowid order (all tracks) rather than the version index
        rows = self._db.fetchall("SELECT id FROM tracks WHERE version > ?", (int(since),))
        return np.sort(np.fromiter((r[0] for r in rows), np.int64, count=len(rows)))

    _BROWSE_TRACKS = "SELECT id, title, artist, path, duration_s, year, sr, channels, added_at, album FROM tracks"
    _BROWSE_ATTRS = ("SELECT track_id, duration_s, bpm, loudness_lufs, loudness_range_lu, energy, vocals, camelot "
                     "FROM track_attributes")

    def _browse_rows(self, ids: np.ndarray | None) -> tuple[list[tuple], list[tuple]]:
        """Track and attribute rows the :class:`~.browse.TrackTable` is built from (``ok``
        tracks; of ``ids`` only, or of every track for None)."""
        if ids is None:
            return (self._db.fetchall(self._BROWSE_TRACKS + " WHERE status = 'ok'"),
                    self._db.fetchall(self._BROWSE_ATTRS))
        tracks: list[tuple] = []
        attrs: list[tuple] = []
        for chunk in chunked(int(i) for i in ids):
            cond, args = self._db.in_list("id", chunk)
            tracks += self._db.fetchall(f"{self._BROWSE_TRACKS} WHERE status = 'ok' AND {cond}", args)
            cond, args = self._db.in_list("track_id", chunk)
            attrs += self._db.fetchall(f"{self._BROWSE_ATTRS} WHERE {cond}", args)
        return tracks, attrs

    def _track_table_cached(self, token: int | None = None):
        from soundalike.catalog.browse import cached_table

        token = self.change_token() if token is None else token
        return cached_table((self.location, token), lambda prev: self._track_table(prev))

    def _track_table(self, prev=None):
        """A fresh :class:`~.browse.TrackTable`, or ``prev = (token, table)`` (an older state
        of this catalog) brought forward by the tracks changed since (when they are few)."""
        from soundalike.catalog.browse import TrackTable, worth_updating

        if prev is not None:
            changed = self.changed_track_ids(prev[0])
            if worth_updating(len(changed), len(prev[1].ids)):
                return prev[1].updated(changed, *self._browse_rows(changed))
        return TrackTable.from_rows(*self._browse_rows(None))

    def _facet_table_cached(self, sources: Sequence[str], token: int | None = None):
        from soundalike.catalog.facets import cached_table

        sources = tuple(sources)
        token = self.change_token() if token is None else token
        return cached_table((self.location, sources, token), lambda prev: self._facet_table(sources, prev))

    def _facet_table(self, sources: Sequence[str], prev=None):
        """The :class:`~.facets.FacetTable` of ``sources``, fresh or (``prev = (token,
        table)``) brought forward by re-reading the tags of the tracks changed since."""
        from soundalike.catalog.browse import worth_updating
        from soundalike.catalog.facets import FacetTable

        sql = (f"SELECT g.track_id, g.category, g.tag FROM tags g JOIN tracks t ON t.id = g.track_id "
               f"WHERE t.status = 'ok' AND g.source IN ({self._db.dialect.marks(len(sources))})")
        if prev is not None:
            changed = self.changed_track_ids(prev[0])
            if worth_updating(len(changed), prev[1].max_id + 1):
                rows = []
                for chunk in chunked((int(i) for i in changed), CHUNK_WITH_SOURCES):
                    cond, args = self._db.in_list("t.id", chunk)
                    rows += self._db.fetchall(f"{sql} AND {cond}", [*sources, *args])
                return prev[1].updated(changed, np.fromiter((r[0] for r in rows), np.int64, count=len(rows)),
                                       [r[1] for r in rows], [r[2] for r in rows])
        rows = self._db.fetchall(sql, list(sources))
        return FacetTable.from_pairs(np.fromiter((r[0] for r in rows), np.int64, count=len(rows)),
                                     [r[1] for r in rows], [r[2] for r in rows])

    # ------------------------------------------------------------------ models & analyses

    def register_model(self, *, model_id: str, name: str, dim: int, labels: list[str] | None = None,
                       label_category: str = "tag") -> None:
        with self.transaction():
            self._write(
                "INSERT INTO models (model_id, name, dim, labels, label_category, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model_id) DO UPDATE SET name = excluded.name",
                (model_id, name, int(dim), json.dumps(list(labels or [])), label_category, time.time()))

    def models(self) -> list[ModelInfo]:
        rows = self._db.fetchall(
            "SELECT m.model_id, m.name, m.dim, m.labels, m.label_category, "
            "(SELECT COUNT(*) FROM analyses a JOIN tracks t ON t.id = a.track_id "
            "WHERE a.model_id = m.model_id AND t.status = 'ok') AS n FROM models m ORDER BY n DESC, created_at")
        return [ModelInfo(r[0], r[1], int(r[2]), json.loads(r[3]), r[4], int(r[5])) for r in rows]

    def model(self, ref: str) -> ModelInfo | None:
        """A model by id or by name (the most used one of that name)."""
        for m in self.models():
            if m.model_id == ref:
                return m
        for m in self.models():
            if m.name == ref:
                return m
        return None

    def find_model(self, ref: str) -> ModelInfo | None:
        """A model by id, else by name (the newest of that name), or None.

        Reads only the ``models`` table (:meth:`model` also counts analyses, which is
        slow on large catalogs), so ``n_tracks`` is left at 0.  Found by id, a model is
        remembered by this open catalog: a model id names fixed weights, so its row
        never changes meaning (a search asks for it on every request).
        """
        hit = self._models_by_id.get(ref)
        if hit is not None:
            return hit
        cols = "model_id, name, dim, labels, label_category"
        row = self._db.fetchone(f"SELECT {cols} FROM models WHERE model_id = ?", (ref,))
        if row is None:
            row = self._db.fetchone(f"SELECT {cols} FROM models WHERE name = ? ORDER BY created_at DESC LIMIT 1",
                                    (ref,))
        if row is None:
            return None
        info = ModelInfo(row[0], row[1], int(row[2]), json.loads(row[3] or "[]"), row[4], 0)
        if info.model_id == ref:
            self._models_by_id[ref] = info
        return info

    def default_model_id(self, *, adapted: bool = False) -> str | None:
        """The model with the most analyses of ok tracks, or None for an empty catalog.

        ``adapted``: the newest adaptation of that model instead, when the catalog holds
        one (``soundalike index adapt``).  With one model (the usual case) no analyses are
        counted: counting reads every row, 1 s at 100k tracks on PostgreSQL, and
        ``similar()`` asks on every call (one statement, adaptation included).
        """
        return self._default_model(adapted=adapted)[0]

    def default_model_and_token(self) -> tuple[str | None, int]:
        """:meth:`default_model_id` (``adapted=True``) and :meth:`change_token`, read in one
        statement (a search without a model names both: one round trip fewer)."""
        return self._default_model(adapted=True)

    def _default_model(self, *, adapted: bool) -> tuple[str | None, int]:
        registered = self._db.fetchall(
            "SELECT m.model_id, (SELECT 1 FROM analyses a JOIN tracks t ON t.id = a.track_id "
            "WHERE a.model_id = m.model_id AND t.status = 'ok' LIMIT 1), (SELECT x.model_id FROM adaptations x "
            "WHERE x.base_model_id = m.model_id ORDER BY x.created_at DESC LIMIT 1), "
            "(SELECT value FROM counters WHERE name = 'change') FROM models m")
        token = int(registered[0][3]) if registered else self.change_token()
        if len(registered) <= 1:
            mid = registered[0][0] if registered and registered[0][1] else None
        else:
            ms = [m for m in self.models() if m.n_tracks > 0]
            mid = ms[0].model_id if ms else None
        if mid is not None and adapted:
            mid = {r[0]: r[2] for r in registered}.get(mid) or mid
            # every write that can change the answer (models, adaptations, analyses, a
            # track's status) bumps the token, so the answer holds while the token does
            self._default_seen = (mid, token)
        return mid, token

    def remembered_default_model(self) -> tuple[str, int] | None:
        """``(model id, change token)`` as :meth:`default_model_and_token` last answered on
        this open catalog (None: not asked yet).  The model is still the default while the
        catalog's change token is that token; a caller compares it with a token it reads
        anyway (:meth:`query_track_and_token`) and asks again when it moved."""
        return self._default_seen

    def put_analysis(self, track_id: int, model_id: str, embedding: np.ndarray,
                     predictions: dict[str, float] | None = None, *, analysis: str = "full") -> None:
        """Store (or replace) a track's analysis; it gets this transaction's change version.

        ``analysis`` says how much of the track it looked at: ``"full"`` or ``"spread:N"``
        (see :mod:`soundalike.ingest.plan`).
        """
        values = self._analysis_values(f"track {track_id}", embedding, predictions)
        with self.transaction():
            self._bump()
            self._write(self._analysis_upsert("?"), (int(track_id), model_id, *values, time.time(), str(analysis)))

    @staticmethod
    def _analysis_values(what: str, embedding: np.ndarray, predictions: dict[str, float] | None
                         ) -> tuple[bytes, int, str]:
        """``(embedding bytes, dim, predictions JSON)`` as stored; refuses NaN and inf."""
        emb = np.ascontiguousarray(embedding, dtype=np.float32).reshape(-1)
        if not np.isfinite(emb).all():
            raise CatalogError(f"{what}: embedding contains NaN or inf")
        return emb.tobytes(), int(emb.size), json.dumps({k: round(float(v), 6) for k, v in (predictions or {}).items()})

    @staticmethod
    def _analysis_upsert(track_sql: str) -> str:
        """The analysis upsert; ``track_sql`` names the track (``?`` for an id, or a sub-select)."""
        return ("INSERT INTO analyses (track_id, model_id, embedding, dim, predictions, created_at, version, "
                f"analysis) VALUES ({track_sql}, ?, ?, ?, ?, ?, {_TX_VERSION}, ?) ON CONFLICT (track_id, model_id) "
                "DO UPDATE SET embedding = excluded.embedding, dim = excluded.dim, predictions = excluded.predictions, "
                "created_at = excluded.created_at, version = excluded.version, analysis = excluded.analysis")

    def has_analysis(self, track_id: int, model_id: str) -> bool:
        return self._db.fetchone("SELECT 1 FROM analyses WHERE track_id = ? AND model_id = ?",
                                 (int(track_id), model_id)) is not None

    def get_analysis(self, track_id: int, model_id: str) -> StoredAnalysis | None:
        r = self._db.fetchone(f"SELECT {_ANALYSIS_COLS} FROM analyses WHERE track_id = ? AND model_id = ?",
                              (int(track_id), model_id))
        return _analysis(r) if r is not None else None

    def get_analyses(self, track_ids: Iterable[int], model_id: str) -> dict[int, StoredAnalysis]:
        """Analyses of many tracks by one model (tracks without one are left out)."""
        out: dict[int, StoredAnalysis] = {}
        for chunk in chunked(int(i) for i in track_ids):
            cond, args = self._db.in_list("track_id", chunk)
            for r in self._db.fetchall(f"SELECT {_ANALYSIS_COLS} FROM analyses WHERE model_id = ? "
                                       f"AND {cond}", [model_id, *args]):
                out[int(r[0])] = _analysis(r)
        return out

    def track_analyses(self, track_id: int) -> list[StoredAnalysis]:
        rows = self._db.fetchall(f"SELECT {_ANALYSIS_COLS} FROM analyses WHERE track_id = ? ORDER BY created_at",
                                 (int(track_id),))
        return [_analysis(r) for r in rows]

    def analysis_settings(self, model_id: str) -> dict[int, str]:
        """track id -> how its analysis by ``model_id`` was made (``"full"``, ``"spread:N"``)."""
        return {int(r[0]): str(r[1]) for r in self._db.fetchall(
            "SELECT track_id, analysis FROM analyses WHERE model_id = ?", (model_id,))}

    def analyzed_ids(self, model_id: str) -> set[int]:
        """Ids of every track (any status) with an analysis by ``model_id``."""
        return {int(r[0]) for r in self._db.fetchall("SELECT track_id FROM analyses WHERE model_id = ?",
                                                     (model_id,))}

    def index_rows(self, model_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Everything an index of ``model_id`` is built from, in one read (one consistent state).

        Returns int64 ``(n,)`` ids of ``ok`` tracks (sorted), int64 ``(n,)`` versions and
        float32 ``(n, dim)`` embeddings (``(0, 0)`` when there are none).
        """
        ids, versions, blobs, dims = [], [], [], set()
        for rows in self._db.iter_rows(
                "SELECT a.track_id, a.version, a.dim, a.embedding FROM analyses a JOIN tracks t ON t.id = a.track_id "
                "WHERE a.model_id = ? AND t.status = 'ok' ORDER BY a.track_id", (model_id,), batch=5000):
            for tid, v, d, blob in rows:
                ids.append(tid)
                versions.append(v)
                dims.add(d)
                blobs.append(bytes(blob))
        if not ids:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        if len(dims) != 1:
            raise ModelMismatchError(f"model {model_id}: embeddings of several dimensions {sorted(dims)}; "
                                     f"run `soundalike index rebuild --model {model_id}` after re-ingesting")
        X = np.frombuffer(b"".join(blobs), np.float32).reshape(len(ids), dims.pop()).copy()
        return np.asarray(ids, np.int64), np.asarray(versions, np.int64), X

    def analysis_versions(self, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """What an index of ``model_id`` must hold: ``ok`` track ids and their analyses' versions.

        Returns int64 ``(n,)`` ids (sorted) and int64 ``(n,)`` versions; a version grows
        each time the analysis is re-made, in commit order.
        """
        rows = self._db.fetchall(
            "SELECT a.track_id, a.version FROM analyses a JOIN tracks t ON t.id = a.track_id "
            "WHERE a.model_id = ? AND t.status = 'ok' ORDER BY a.track_id", (model_id,))
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        versions = np.fromiter((r[1] for r in rows), np.int64, len(rows))
        return ids, versions

    def vectors(self, model_id: str, ids: Sequence[int] | np.ndarray, *, dim: int) -> np.ndarray:
        """Embeddings of ``model_id`` for track ``ids``: float32 ``(len(ids), dim)`` in that order.

        Ids without an analysis stay zero rows.

        Raises
        ------
        ModelMismatchError
            A stored embedding is not ``dim`` long.
        """
        out = np.zeros((len(ids), dim), np.float32)
        where = {int(t): i for i, t in enumerate(ids)}
        for chunk in chunked(int(t) for t in ids):
            cond, args = self._db.in_list("track_id", chunk)
            for tid, blob, d in self._db.fetchall(
                    f"SELECT track_id, embedding, dim FROM analyses WHERE model_id = ? AND {cond}",
                    [model_id, *args]):
                if d != dim:
                    raise ModelMismatchError(f"track {tid}: {d}-d embedding for model {model_id}, expected "
                                             f"{dim}-d; run `soundalike index rebuild --model {model_id}`")
                out[where[int(tid)]] = np.frombuffer(blob, np.float32)
        return out

    def embeddings(self, model_id: str, *, status: str | None = "ok") -> tuple[np.ndarray, np.ndarray]:
        """All embeddings of ``model_id``: ids int64 ``(n,)`` and float32 ``(n, dim)``, by id."""
        q = ("SELECT a.track_id, a.embedding, a.dim FROM analyses a JOIN tracks t ON t.id = a.track_id "
             "WHERE a.model_id = ?")
        args: list = [model_id]
        if status is not None:
            q += " AND t.status = ?"
            args.append(status)
        rows = self._db.fetchall(q + " ORDER BY a.track_id", args)
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        dims = {r[2] for r in rows}
        if len(dims) != 1:
            raise CatalogError(f"model {model_id}: embeddings of several dimensions {sorted(dims)}")
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        X = np.frombuffer(b"".join(bytes(r[1]) for r in rows), np.float32).reshape(len(rows), dims.pop())
        return ids, X.copy()

    # ------------------------------------------------------------------ one ingested file

    #: how the statements of :meth:`put_ingested` name their track: by its unique path, so
    #: nothing waits for the id the upsert generates (one round trip per file on a server)
    _BY_PATH = "(SELECT id FROM tracks WHERE path = ?)"

    def put_ingested(self, *, track: dict, file_tags: Sequence[Tag], model_id: str,
                     embeddings: Sequence[tuple[str, np.ndarray]], predictions: dict[str, float] | None,
                     analysis: str = "full", model_tags: Sequence[Tag] = (), peaks=None,
                     attributes: dict | None = None, attributes_version: int = 1,
                     segments: dict[str, tuple[np.ndarray, np.ndarray] | None] | None = None,
                     want_id: bool = True) -> int | None:
        """Everything ingest writes for one analyzed file, in one transaction; returns its id.

        The same rows as :meth:`upsert_track`, :meth:`set_tags` (``file``; ``model`` of
        ``model_id``), :meth:`put_analysis` for each ``(model_id, embedding)`` of
        ``embeddings`` (the first is ``model_id``'s own, with ``predictions``; the rest are
        its adaptations), :meth:`put_peaks`, :meth:`put_attributes` and :meth:`clear_error`
        called one after the other -- in 9 statements instead of about 20 plus one per tag,
        none of which waits for an answer: on PostgreSQL the whole file is one round trip
        (sent pipelined, answered at COMMIT), so the commit rate is bound by the server's
        WAL flush, not by the network.

        Parameters
        ----------
        track : :meth:`upsert_track`'s keywords (``path``, ``content_hash``, ``size``,
            ``mtime`` required)
        file_tags, model_tags : the file's own tags, and ``model_id``'s top tags
        embeddings : ``(model id, float32 (dim,) vector)`` pairs, ``model_id``'s first
        analysis : ``"full"`` or ``"spread:N"`` (all of ``embeddings`` were made so)
        peaks : :class:`~soundalike.audio.peaks.Peaks` or None
        attributes : :meth:`put_attributes`'s dict, stored with ``model_id`` and
            ``attributes_version``, or None
        segments : model id -> ``(starts (n,) s, vectors (n, dim))`` as :meth:`put_segments`
            stores them, or None to drop that model's segments of the track (so none go
            stale); models not named keep theirs
        want_id : False: return None without waiting for the id (inside a caller's
            transaction on a server, reading it would wait for the server's answer: group
            commit sends many files before it waits for any)
        """
        from soundalike.audio.peaks import PEAKS_FORMAT

        path = str(track["path"])
        rows = [*_tag_rows(file_tags, source="file", model_id=""),
                *_tag_rows(model_tags, source="model", model_id=model_id)]
        stored = [(mid, *self._analysis_values(path, emb, predictions if i == 0 else None))
                  for i, (mid, emb) in enumerate(embeddings)]
        by_path = self._BY_PATH
        now = time.time()
        with self.transaction():
            self._tx_dirty = True
            self._bump()  # first: the track row's version is this commit's token
            tid = self._db.execute_deferred(*self._track_upsert(dict(track)))
            self._write(f"DELETE FROM tags WHERE track_id = {by_path} AND (source = 'file' AND model_id = '' "
                        f"OR source = 'model' AND model_id = ?)", (path, model_id))
            for chunk in chunked(rows, _TAG_ROWS_PER_INSERT):
                self._write("INSERT INTO tags (track_id, tag, category, source, confidence, model_id) "
                            f"SELECT t.id, v.* FROM tracks t, (VALUES {', '.join(['(?, ?, ?, ?, ?)'] * len(chunk))}) v "
                            "WHERE t.path = ? ON CONFLICT (track_id, category, tag, source, model_id) "
                            "DO UPDATE SET confidence = excluded.confidence",
                            [*(v for r in chunk for v in r), path])
            for mid, blob, dim, preds in stored:
                self._write(self._analysis_upsert(by_path), (path, mid, blob, dim, preds, now, str(analysis)))
            if peaks is not None:  # the hash the peaks belong to: the row's own, just written
                self._write_aside(_PEAKS_UPSERT.format(track=by_path, hash="(SELECT content_hash FROM tracks "
                                                       "WHERE path = ?)"),
                                  (path, PEAKS_FORMAT, float(peaks.duration_s), peaks.to_bytes(), path, now))
            if attributes is not None:
                self._write(self._attributes_upsert(by_path),
                            (path, *_attribute_values(attributes), model_id, int(attributes_version), now))
            for mid, seg in (segments or {}).items():
                if seg is None or len(seg[0]) == 0:
                    self._write(f"DELETE FROM segments WHERE track_id = {by_path} AND model_id = ?", (path, mid))
                    continue
                st, V = _segment_arrays(path, *seg)
                self._write(
                    "INSERT INTO segments (track_id, model_id, n, dim, starts, vectors, version, created_at) "
                    f"SELECT t.id, ?, ?, ?, ?, ?, {_TX_VERSION}, ? FROM tracks t WHERE t.path = ? "
                    "ON CONFLICT (track_id, model_id) DO UPDATE SET n = excluded.n, dim = excluded.dim, "
                    "starts = excluded.starts, vectors = excluded.vectors, version = excluded.version, "
                    "created_at = excluded.created_at",
                    (mid, int(V.shape[0]), int(V.shape[1]), st.tobytes(), V.tobytes(), now, path))
            self._write("DELETE FROM ingest_errors WHERE path = ?", (path,))
        return int(tid()[0]) if want_id else None

    # ------------------------------------------------------------------ adaptations

    def put_adaptation(self, *, model_id: str, base_model_id: str, method: str, data: bytes) -> None:
        """Store (or replace) the adaptation that makes ``model_id`` from ``base_model_id``.

        ``model_id`` must already be registered (:meth:`register_model`).
        """
        with self.transaction():
            self._write(
                "INSERT INTO adaptations (model_id, base_model_id, method, data, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (model_id) DO UPDATE SET "
                "base_model_id = excluded.base_model_id, method = excluded.method, data = excluded.data, "
                "created_at = excluded.created_at",
                (model_id, base_model_id, method, bytes(data), time.time()))

    def adaptations(self, base_model_id: str | None = None) -> list[StoredAdaptation]:
        """Adaptations (of one base model, or all), newest first."""
        q = "SELECT model_id, base_model_id, method, data, created_at FROM adaptations"
        args: tuple = ()
        if base_model_id is not None:
            q += " WHERE base_model_id = ?"
            args = (base_model_id,)
        rows = self._db.fetchall(q + " ORDER BY created_at DESC", args)
        return [StoredAdaptation(r[0], r[1], r[2], bytes(r[3]), float(r[4])) for r in rows]

    def get_adaptation(self, model_id: str) -> StoredAdaptation | None:
        r = self._db.fetchone("SELECT model_id, base_model_id, method, data, created_at FROM adaptations "
                              "WHERE model_id = ?", (model_id,))
        return StoredAdaptation(r[0], r[1], r[2], bytes(r[3]), float(r[4])) if r else None

    def delete_adaptation(self, model_id: str) -> int:
        """Remove adaptation ``model_id`` with its model row, adapted vectors and segment
        vectors (a superseded automatic fit; the base model's vectors are untouched).

        Returns how many adapted track vectors went.

        Raises
        ------
        CatalogError
            ``model_id`` is not an adaptation.
        """
        if self.get_adaptation(model_id) is None:
            raise CatalogError(f"{model_id!r} is not an adaptation of this catalog")
        with self.transaction():
            n = int(self._db.fetchone("SELECT COUNT(*) FROM analyses WHERE model_id = ?", (model_id,))[0])
            self._bump()
            for table in ("segments", "analyses", "adaptations", "models"):
                self._write(f"DELETE FROM {table} WHERE model_id = ?", (model_id,))
        self._models_by_id.pop(model_id, None)  # (another open catalog finds no vectors of it)
        return n

    def put_analyses(self, model_id: str, ids: Sequence[int] | np.ndarray, X: np.ndarray, *,
                     settings: Mapping[int, str] | None = None) -> None:
        """Store many analyses of one model (no predictions) in one transaction.

        ``X`` float32 ``(len(ids), dim)``; existing analyses of those tracks are replaced.
        ``settings``: track id -> how much of it the vectors looked at (``"spread:6"``;
        an adaptation passes its base model's, :meth:`analysis_settings`); default ``"full"``.
        """
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or len(X) != len(ids):
            raise CatalogError(f"expected {len(ids)} vectors, got shape {X.shape}")
        if not np.isfinite(X).all():
            raise CatalogError(f"model {model_id}: vectors contain NaN or inf")
        now = time.time()
        with self.transaction():
            self._bump()
            for tid, x in zip(ids, X, strict=True):
                self._write(
                    "INSERT INTO analyses (track_id, model_id, embedding, dim, predictions, analysis, created_at, "
                    f"version) VALUES (?, ?, ?, ?, '{{}}', ?, ?, {_TX_VERSION}) ON CONFLICT (track_id, model_id) "
                    "DO UPDATE SET embedding = excluded.embedding, dim = excluded.dim, predictions = "
                    "excluded.predictions, analysis = excluded.analysis, created_at = excluded.created_at, "
                    "version = excluded.version",
                    (int(tid), model_id, x.tobytes(), int(x.size), (settings or {}).get(int(tid), "full"), now))

    def count_analyses(self, model_id: str | None = None) -> int:
        if model_id is None:
            return int(self._db.fetchone("SELECT COUNT(*) FROM analyses")[0])
        return int(self._db.fetchone("SELECT COUNT(*) FROM analyses WHERE model_id = ?", (model_id,))[0])

    # ------------------------------------------------------------------ per-segment vectors

    def put_segments(self, track_id: int, model_id: str, starts: np.ndarray, vectors: np.ndarray) -> None:
        """Store (or replace) a track's segment vectors of one model.

        Parameters
        ----------
        starts : float ``(n,)`` where each segment begins in the track, seconds
        vectors : float ``(n, dim)``; stored unit-length as float16
        """
        st, V = _segment_arrays(track_id, starts, vectors)
        with self.transaction():
            self._bump()
            self._write(
                "INSERT INTO segments (track_id, model_id, n, dim, starts, vectors, version, created_at) "
                f"VALUES (?, ?, ?, ?, ?, ?, {_TX_VERSION}, ?) ON CONFLICT (track_id, model_id) DO UPDATE SET "
                "n = excluded.n, dim = excluded.dim, starts = excluded.starts, vectors = excluded.vectors, "
                "version = excluded.version, created_at = excluded.created_at",
                (int(track_id), model_id, int(V.shape[0]), int(V.shape[1]), st.tobytes(), V.tobytes(),
                 time.time()))

    def get_segments(self, track_id: int, model_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """``(starts float32 (n,), vectors float32 (n, dim))`` of a track and model, or None."""
        r = self._db.fetchone("SELECT n, dim, starts, vectors FROM segments WHERE track_id = ? AND model_id = ?",
                              (int(track_id), model_id))
        return _segment_row(r) if r else None

    def segment_rows(self, model_id: str, *, since_version: int = 0
                     ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """``(track id, version, starts (n,), vectors float32 (n, dim))`` of ``ok`` tracks, by id,
        for segments written after ``since_version`` (0: all)."""
        for rows in self._db.iter_rows(
                "SELECT s.track_id, s.version, s.n, s.dim, s.starts, s.vectors FROM segments s "
                "JOIN tracks t ON t.id = s.track_id WHERE s.model_id = ? AND s.version > ? "
                "AND t.status = 'ok' ORDER BY s.track_id", (model_id, int(since_version)), batch=2000):
            for tid, v, n, d, st, vec in rows:
                starts, V = _segment_row((n, d, st, vec))
                yield int(tid), int(v), starts, V

    def segment_ids(self, model_id: str) -> np.ndarray:
        """int64 ids of the ``ok`` tracks with segment vectors of ``model_id``, sorted."""
        rows = self._db.fetchall("SELECT s.track_id FROM segments s JOIN tracks t ON t.id = s.track_id "
                                 "WHERE s.model_id = ? AND t.status = 'ok' ORDER BY s.track_id", (model_id,))
        return np.fromiter((r[0] for r in rows), np.int64, len(rows))

    def count_segments(self, model_id: str | None = None) -> int:
        """Segment vectors stored (of one model, or all)."""
        q, args = "SELECT COALESCE(SUM(n), 0) FROM segments", ()
        if model_id is not None:
            q, args = q + " WHERE model_id = ?", (model_id,)
        return int(self._db.fetchone(q, args)[0])

    def delete_segments(self, model_id: str, track_ids: Iterable[int] | None = None) -> int:
        """Drop segment vectors of ``model_id`` (of some tracks, or all); returns how many rows."""
        with self.transaction():
            if track_ids is None:
                n = int(self._db.fetchone("SELECT COUNT(*) FROM segments WHERE model_id = ?", (model_id,))[0])
                if n:
                    self._bump()
                    self._write("DELETE FROM segments WHERE model_id = ?", (model_id,))
                return n
            n = 0
            for chunk in chunked(int(i) for i in track_ids):
                marks = self._db.dialect.marks(len(chunk))
                k = int(self._db.fetchone(f"SELECT COUNT(*) FROM segments WHERE model_id = ? "
                                          f"AND track_id IN ({marks})", [model_id, *chunk])[0])
                if k:
                    self._bump()
                    self._write(f"DELETE FROM segments WHERE model_id = ? AND track_id IN ({marks})",
                                [model_id, *chunk])
                n += k
            return n

    def reclaim_space(self) -> None:
        """Give freed pages back to the file system (SQLite ``VACUUM``; PostgreSQL's autovacuum
        does this on its own).  Outside any transaction."""
        if self.dialect_name == "sqlite" and not self._in_tx:
            try:
                self._db.execute("VACUUM")
                # VACUUM writes the whole database through the WAL: fold it back into the
                # file and truncate it, or the log holds the freed space (and more) until
                # the next checkpoint (a reader elsewhere: it stays until then)
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except database_errors() as exc:  # a reader elsewhere: the pages are reused later
                if not self._db.is_busy(exc):
                    raise

    # ------------------------------------------------------------------ musical attributes

    def put_attributes(self, track_id: int, attributes: dict, *, model_id: str = "",
                       version: int = 1) -> None:
        """Store (or replace) a track's musical attributes.

        ``attributes`` is :meth:`soundalike.audio.attributes.Attributes.to_dict` (keys:
        ``duration_s``, ``bpm``, ``bpm_confidence``, ``bpm_alternative``, ``bpm_ambiguous``,
        ``key_tonic``, ``key_mode``, ``camelot``, ``key_confidence``, ``loudness_lufs``,
        ``loudness_range_lu``, ``vocals``, ``energy``, ``seconds_read``; missing = NULL).
        """
        with self.transaction():
            self._bump()
            self._write(self._attributes_upsert("?"),
                        (int(track_id), *_attribute_values(attributes), model_id, int(version), time.time()))
            self._write(_TRACK_CHANGED, (int(track_id),))

    def _attributes_upsert(self, track_sql: str) -> str:
        """The attributes upsert; ``track_sql`` names the track (``?`` for an id, or a sub-select)."""
        sets = ", ".join(f"{k} = excluded.{k}" for k in (*ATTRIBUTE_COLUMNS, "model_id", "version", "computed_at"))
        return (f"INSERT INTO track_attributes (track_id, {', '.join(ATTRIBUTE_COLUMNS)}, model_id, version, "
                f"computed_at) VALUES ({track_sql}, {self._db.dialect.marks(len(ATTRIBUTE_COLUMNS))}, ?, ?, ?) "
                f"ON CONFLICT (track_id) DO UPDATE SET {sets}")

    def track_attributes(self, track_id: int) -> dict | None:
        """A track's stored attributes (the keys of :meth:`put_attributes` plus ``model_id``,
        ``version``), or ``None`` when it has none yet."""
        return self.attributes_of([track_id]).get(int(track_id))

    def attributes_of(self, track_ids: Iterable[int]) -> dict[int, dict]:
        """Attributes of many tracks at once (tracks without any are left out)."""
        out: dict[int, dict] = {}
        for chunk in chunked(int(i) for i in track_ids):
            for r in self._db.fetchall(*self._attributes_query(chunk)):
                tid, d = _attribute_row(r)
                out[tid] = d
        return out

    def _attributes_query(self, ids: Sequence[int]) -> tuple[str, list]:
        cond, args = self._db.in_list("track_id", ids)
        return f"SELECT {', '.join(_ATTRIBUTE_READ)} FROM track_attributes WHERE {cond}", args

    # ------------------------------------------------------------------ what a search reads

    def query_track_data(self, track_id: int, *, model_id: str, sources: Sequence[str]
                         ) -> tuple[Track | None, StoredAnalysis | None, set[tuple[str, str]], dict | None]:
        """A search query's track in one statement: the track (None: no such id), its
        analysis by ``model_id``, its ``(category, tag)`` pairs from ``sources`` and its
        attributes -- what :meth:`get_track`, :meth:`get_analysis`, :meth:`tag_pairs` and
        :meth:`track_attributes` return (one round trip instead of four on a server)."""
        return self.query_track_and_token(track_id, model_id=model_id, sources=sources)[:4]

    def query_track_and_token(self, track_id: int, *, model_id: str, sources: Sequence[str]
                              ) -> tuple[Track | None, StoredAnalysis | None, set[tuple[str, str]],
                                         dict | None, int | None]:
        """:meth:`query_track_data` and, read by the same statement, :meth:`change_token`
        (None when there is no such track): a search then needs no statement of its own
        for the token its index cache compares."""
        if not _fits_int64(track_id):
            return None, None, set(), None, None
        n, na = len(_TRACK_FIELDS), len(_ATTRIBUTE_READ)
        # 1:1 joins, then one row per tag (the track's columns repeated: a few rows)
        rows = self._db.fetch_rows(
            f"SELECT {_TRACK_COLS_T}, a.track_id, a.model_id, a.embedding, a.predictions, a.created_at, a.analysis, "
            f"{', '.join('x.' + c for c in _ATTRIBUTE_READ)}, "
            "(SELECT value FROM counters WHERE name = 'change'), g.category, g.tag FROM tracks t "
            "LEFT JOIN analyses a ON a.track_id = t.id AND a.model_id = ? "
            "LEFT JOIN track_attributes x ON x.track_id = t.id "
            f"LEFT JOIN tags g ON g.track_id = t.id AND g.source IN ({self._db.dialect.marks(len(sources))}) "
            "WHERE t.id = ?", (model_id, *sources, int(track_id)))
        if not rows:
            return None, None, set(), None, None
        r = rows[0]
        analysis = _analysis(r[n:n + 6]) if r[n] is not None else None
        attrs = _attribute_row(r[n + 6:n + 6 + na])[1] if r[n + 6] is not None else None
        pairs = {(x[-2], x[-1]) for x in rows if x[-2] is not None}
        token = int(r[n + 6 + na]) if r[n + 6 + na] is not None else 0
        return _track(r[:n]), analysis, pairs, attrs, token

    def candidates_and_tags(self, ids: Sequence[int], *, tag_ids: Sequence[int], sources: Sequence[str]
                            ) -> tuple[dict[int, Track], dict[int, dict], dict[int, list[Tag]]]:
        """:meth:`tracks_and_attributes` of ``ids`` and :meth:`tag_lists` of ``tag_ids`` (from
        ``sources``), sent together (:meth:`Backend.fetch_batch`: one round trip on a
        server): a search's candidates, and the tags of those likely to be its hits.

        Every id of ``tag_ids`` is a key of the tag lists (empty: no tags), as in
        :meth:`tag_lists`.  At most :data:`CHUNK_WITH_SOURCES` ids of each; more raise.
        """
        ids = [int(i) for i in ids if _fits_int64(i)]
        tag_ids = [int(i) for i in tag_ids if _fits_int64(i)]
        if len(ids) > CHUNK_WITH_SOURCES or len(tag_ids) > CHUNK_WITH_SOURCES:
            raise ValueError(f"at most {CHUNK_WITH_SOURCES} ids in one statement")
        tracks: dict[int, Track] = {}
        attrs: dict[int, dict] = {}
        lists: dict[int, list[Tag]] = {i: [] for i in tag_ids}
        if not ids and not tag_ids:
            return tracks, attrs, lists
        # two plain reads sent together (one round trip on a server): a UNION of the two
        # costs the server more than both (0.6 against 0.25 ms, measured)
        ta_sql, ta_args = self._tracks_and_attributes_query(ids)
        tl_sql, tl_args = self._tag_lists_query(tag_ids, list(sources))
        ta_rows, tl_rows = self._db.fetch_batch([(ta_sql, ta_args), (tl_sql, tl_args)])
        self._tracks_and_attributes_rows(ta_rows, tracks, attrs)
        for tid, tag, category, source, confidence, model_id in tl_rows:
            lists[int(tid)].append(Tag.stored(tag, category, source, confidence, model_id))
        return tracks, attrs, lists

    def tracks_and_attributes(self, ids: Iterable[int]) -> tuple[dict[int, Track], dict[int, dict]]:
        """:meth:`get_tracks` and :meth:`attributes_of` in one statement (a search's candidates)."""
        tracks: dict[int, Track] = {}
        attrs: dict[int, dict] = {}
        for chunk in chunked(int(i) for i in ids if _fits_int64(i)):
            self._tracks_and_attributes_rows(self._db.fetch_rows(*self._tracks_and_attributes_query(chunk)),
                                             tracks, attrs)
        return tracks, attrs

    def _tracks_and_attributes_query(self, ids: Sequence[int]) -> tuple[str, list]:
        cond, args = self._db.in_list("t.id", ids)
        return (f"SELECT {_TRACK_COLS_T}, {', '.join('x.' + c for c in _ATTRIBUTE_READ)} "
                f"FROM tracks t LEFT JOIN track_attributes x ON x.track_id = t.id WHERE {cond}", args)

    @staticmethod
    def _tracks_and_attributes_rows(rows: Iterable[Sequence], tracks: dict, attrs: dict) -> None:
        n = len(_TRACK_FIELDS)
        for r in rows:
            tid = int(r[0])
            tracks[tid] = _track(r[:n])
            if r[n] is not None:
                attrs[tid] = _attribute_row(r[n:])[1]

    def ids_needing_attributes(self, *, version: int, model_id: str | None = None) -> list[int]:
        """``ok`` tracks without attributes, with an older ``version``, or (given
        ``model_id``) whose vocals/energy came from another tagger."""
        sql = ("SELECT t.id FROM tracks t LEFT JOIN track_attributes a ON a.track_id = t.id "
               "WHERE t.status = 'ok' AND (a.track_id IS NULL OR a.version < ?")
        args: list = [int(version)]
        if model_id is not None:
            sql += " OR a.model_id <> ?"
            args.append(model_id)
        return [int(r[0]) for r in self._db.fetchall(sql + ") ORDER BY t.id", args)]

    def attribute_summary(self) -> dict:
        """How many ok tracks have attributes, and their ranges (for ``catalog stats``)."""
        r = self._db.fetchone(
            "SELECT count(*), min(a.bpm), max(a.bpm), min(a.loudness_lufs), max(a.loudness_lufs), "
            "sum(CASE WHEN a.vocals >= 0.5 THEN 1 ELSE 0 END), sum(CASE WHEN a.vocals < 0.5 THEN 1 ELSE 0 END) "
            "FROM track_attributes a JOIN tracks t ON t.id = a.track_id WHERE t.status = 'ok'")
        keys = self._db.fetchall(
            "SELECT a.camelot, count(*) FROM track_attributes a JOIN tracks t ON t.id = a.track_id "
            "WHERE t.status = 'ok' AND a.camelot IS NOT NULL GROUP BY a.camelot ORDER BY 2 DESC, 1")
        return {"tracks": int(r[0]), "bpm_range": [r[1], r[2]], "loudness_range_lufs": [r[3], r[4]],
                "vocals": {"yes": int(r[5] or 0), "no": int(r[6] or 0)},
                "keys": {k: int(n) for k, n in keys}}

    # ------------------------------------------------------------------ errors

    def record_error(self, *, path: str, reason: str, error_type: str, size: int | None = None,
                     mtime: float | None = None) -> None:
        """Remember that ``path`` failed (replacing an earlier error for the same path)."""
        with self.transaction():
            self._write("DELETE FROM ingest_errors WHERE path = ?", (path,))
            self._write("INSERT INTO ingest_errors (path, reason, error_type, size, mtime, time) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (path, reason, error_type, size, mtime, time.time()))

    def clear_error(self, path: str) -> None:
        with self.transaction():
            self._db.execute("DELETE FROM ingest_errors WHERE path = ?", (path,))

    def error_states(self) -> dict[str, tuple[int | None, float | None]]:
        """path -> (size, mtime) of files that failed: unchanged failures are not retried."""
        return {r[0]: (r[1], r[2]) for r in self._db.fetchall("SELECT path, size, mtime FROM ingest_errors")}

    def errors(self) -> list[IngestErrorRecord]:
        return [IngestErrorRecord(int(r[0]), r[1], r[2], r[3], r[4]) for r in self._db.fetchall(
            "SELECT id, path, reason, error_type, time FROM ingest_errors ORDER BY path")]

    # ------------------------------------------------------------------ waveform peaks

    def put_peaks(self, track_id: int, peaks) -> None:
        """Store a track's waveform :class:`~soundalike.audio.peaks.Peaks` (replacing older ones)."""
        from soundalike.audio.peaks import PEAKS_FORMAT

        t = self.get_track(track_id)
        if t is None:
            raise TrackNotFoundError(f"no track {track_id} in the catalog")
        with self.transaction():
            self._write_aside(_PEAKS_UPSERT.format(track="?", hash="?"),
                              (int(track_id), PEAKS_FORMAT, float(peaks.duration_s), peaks.to_bytes(),
                               t.content_hash, time.time()))

    def get_peaks(self, track_id: int):
        """The stored :class:`~soundalike.audio.peaks.Peaks` of a track, or None (none, or of an older file)."""
        from soundalike.audio.peaks import PEAKS_FORMAT, Peaks

        r = self._db.fetchone(
            "SELECT p.data, p.duration_s FROM peaks p JOIN tracks t ON t.id = p.track_id "
            "WHERE p.track_id = ? AND p.format = ? AND p.content_hash = t.content_hash",
            (int(track_id), PEAKS_FORMAT))
        return Peaks.from_bytes(bytes(r[0]), duration_s=float(r[1])) if r else None

    def ids_without_peaks(self) -> list[int]:
        """``ok`` tracks with no current peaks (never computed, another format, or the file changed)."""
        from soundalike.audio.peaks import PEAKS_FORMAT

        rows = self._db.fetchall(
            "SELECT t.id FROM tracks t LEFT JOIN peaks p ON p.track_id = t.id AND p.format = ? "
            "AND p.content_hash = t.content_hash WHERE t.status = 'ok' AND p.track_id IS NULL ORDER BY t.id",
            (PEAKS_FORMAT,))
        return [int(r[0]) for r in rows]

    # ------------------------------------------------------------------ favourites

    def set_favourite(self, track_id: int, on: bool) -> None:
        """Mark (``on``) or unmark a track as a favourite; marking twice keeps the first time."""
        with self.transaction():
            if on:
                self._write_aside("INSERT INTO favourites (track_id, added_at) VALUES (?, ?) "
                            "ON CONFLICT (track_id) DO NOTHING", (int(track_id), time.time()))
            else:
                self._write_aside("DELETE FROM favourites WHERE track_id = ?", (int(track_id),))

    def favourite_ids(self) -> list[int]:
        """Ids of the favourite ``ok`` tracks, most recently marked first."""
        rows = self._db.fetchall("SELECT f.track_id FROM favourites f JOIN tracks t ON t.id = f.track_id "
                                 "WHERE t.status = 'ok' ORDER BY f.added_at DESC, f.track_id DESC")
        return [int(r[0]) for r in rows]

    # ------------------------------------------------------------------ saved playlists

    def _playlist_rows(self, pid: int | None = None) -> list[PlaylistInfo]:
        sql = ("SELECT p.id, p.name, p.created_at, p.updated_at, "
               "(SELECT count(*) FROM playlist_tracks x WHERE x.playlist_id = p.id) FROM playlists p")
        rows = (self._db.fetchall(sql + " WHERE p.id = ?", (int(pid),)) if pid is not None
                else self._db.fetchall(sql + " ORDER BY p.updated_at DESC, p.id DESC"))
        return [PlaylistInfo(int(r[0]), r[1], float(r[2]), float(r[3]), int(r[4])) for r in rows]

    def playlists(self) -> list[PlaylistInfo]:
        """Saved playlists, most recently changed first."""
        return self._playlist_rows()

    def playlist(self, playlist_id: int) -> PlaylistInfo | None:
        rows = self._playlist_rows(playlist_id)
        return rows[0] if rows else None

    def playlist_by_name(self, name: str) -> PlaylistInfo | None:
        """The playlist called ``name`` (case-insensitive, spaces collapsed), or None."""
        r = self._db.fetchone("SELECT id FROM playlists WHERE lower(name) = lower(?)", (" ".join(name.split()),))
        return self.playlist(int(r[0])) if r else None

    def create_playlist(self, name: str) -> PlaylistInfo:
        """A new empty playlist.

        Raises
        ------
        CatalogError
            the name is empty, or another playlist has it (names are unique, case-insensitive).
        """
        clean = " ".join(str(name).split())
        if not clean:
            raise CatalogError("a playlist needs a name")
        with self.transaction():
            if self.playlist_by_name(clean) is not None:
                raise CatalogError(f"a playlist named {clean!r} exists already")
            now = time.time()
            r = self._write_aside("INSERT INTO playlists (name, created_at, updated_at) VALUES (?, ?, ?) RETURNING id",
                            (clean, now, now)).fetchone()
        return self.playlist(int(r[0]))

    def playlist_track_ids(self, playlist_id: int) -> list[int]:
        """The playlist's ``ok`` tracks in order."""
        rows = self._db.fetchall("SELECT x.track_id FROM playlist_tracks x JOIN tracks t ON t.id = x.track_id "
                                 "WHERE x.playlist_id = ? AND t.status = 'ok' ORDER BY x.position",
                                 (int(playlist_id),))
        return [int(r[0]) for r in rows]

    def add_to_playlist(self, playlist_id: int, track_ids: Iterable[int]) -> int:
        """Append tracks not yet in the playlist, in the order given; returns how many were added."""
        with self.transaction():
            have = set(self.playlist_track_ids(playlist_id))
            r = self._db.fetchone("SELECT coalesce(max(position), 0) FROM playlist_tracks WHERE playlist_id = ?",
                                  (int(playlist_id),))
            pos, now, n = int(r[0]), time.time(), 0
            for tid in track_ids:
                if int(tid) in have:
                    continue
                pos += 1
                n += 1
                have.add(int(tid))
                self._write_aside("INSERT INTO playlist_tracks (playlist_id, position, track_id, added_at) VALUES (?, ?, ?, ?)",
                            (int(playlist_id), pos, int(tid), now))
            self._write_aside("UPDATE playlists SET updated_at = ? WHERE id = ?", (now, int(playlist_id)))
        return n

    def remove_from_playlist(self, playlist_id: int, track_id: int) -> int:
        """Remove a track from a playlist; returns how many entries went (0 or 1)."""
        with self.transaction():
            # counted first: a pipelined PostgreSQL transaction reports no rowcount
            n = self._db.fetchone("SELECT count(*) FROM playlist_tracks WHERE playlist_id = ? AND track_id = ?",
                                  (int(playlist_id), int(track_id)))[0]
            self._write_aside("DELETE FROM playlist_tracks WHERE playlist_id = ? AND track_id = ?",
                              (int(playlist_id), int(track_id)))
            self._write_aside("UPDATE playlists SET updated_at = ? WHERE id = ?", (time.time(), int(playlist_id)))
        return int(n or 0)

    def delete_playlist(self, playlist_id: int) -> None:
        with self.transaction():
            self._write_aside("DELETE FROM playlist_tracks WHERE playlist_id = ?", (int(playlist_id),))
            self._write_aside("DELETE FROM playlists WHERE id = ?", (int(playlist_id),))

    # ------------------------------------------------------------------ summary

    def stats(self) -> dict:
        db = self._db
        by_status = {r[0]: int(r[1]) for r in db.fetchall("SELECT status, COUNT(*) FROM tracks GROUP BY status")}
        by_format = {r[0]: int(r[1]) for r in db.fetchall(
            "SELECT format, COUNT(*) FROM tracks WHERE status = 'ok' GROUP BY format ORDER BY 2 DESC")}
        dur = db.fetchone("SELECT COALESCE(SUM(duration_s), 0) FROM tracks WHERE status = 'ok'")[0]
        plans: dict[str, dict[str, int]] = defaultdict(dict)  # model -> how its analyses were made -> count
        for mid, how, n in db.fetchall("SELECT model_id, analysis, COUNT(*) FROM analyses GROUP BY model_id, analysis "
                                       "ORDER BY model_id, 3 DESC"):
            plans[str(mid)][str(how)] = int(n)
        tags = {r[0]: int(r[1]) for r in db.fetchall("SELECT source, COUNT(*) FROM tags GROUP BY source")}
        by_category = {r[0]: int(r[1]) for r in db.fetchall(
            "SELECT category, COUNT(DISTINCT tag) FROM tags WHERE source <> 'suggested' "
            "GROUP BY category ORDER BY category")}
        return {
            "path": str(self.path),
            "backend": self.dialect_name,
            "schema_version": self.schema_version,
            "tracks": by_status.get("ok", 0),
            "missing": by_status.get("missing", 0),
            "errors": int(db.fetchone("SELECT COUNT(*) FROM ingest_errors")[0]),
            "total_duration_s": float(dur),
            "formats": {str(k): v for k, v in by_format.items()},
            "tags_by_source": tags,
            "tag_values_by_category": by_category,
            "attributes": self.attribute_summary(),
            "models": [{"model_id": m.model_id, "name": m.name, "dim": m.dim, "tracks": m.n_tracks,
                        "analyses": plans.get(m.model_id, {})}
                       for m in self.models()],
        }

    # ------------------------------------------------------------------ whole-catalog copies (copy.py)

    def table_layout(self) -> list[tuple[str, list[str]]]:
        """Every table with its columns, parents before children (the order to copy them in)."""
        tables = self._db.tables()
        order: list[str] = []

        def visit(name: str, seen: tuple[str, ...] = ()) -> None:
            if name in order or name in seen:
                return
            for parent in sorted(tables[name][1] & set(tables)):
                visit(parent, (*seen, name))
            order.append(name)

        for name in sorted(tables):
            visit(name)
        return [(name, tables[name][0]) for name in order]

    def _known_table(self, table: str, columns: Sequence[str]) -> None:
        layout = dict(self.table_layout())
        if table not in layout or not set(columns) <= set(layout[table]):
            raise CatalogError(f"{self.path}: no table {table} with columns {list(columns)}")

    def read_table(self, table: str, columns: Sequence[str], *, batch: int = 2000) -> Iterator[list[tuple]]:
        """All rows of ``table`` (``columns`` only), in batches, in a stable order."""
        self._known_table(table, columns)
        cols = ", ".join(columns)
        yield from self._db.iter_rows(f"SELECT {cols} FROM {table} ORDER BY {cols.split(', ')[0]}",
                                      batch=batch)

    def write_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
        """Insert rows as they are (explicit ids included) inside the caller's transaction."""
        self._known_table(table, columns)
        assert self._in_tx, "write_rows goes through Catalog.transaction()"
        self._tx_dirty = True
        self._db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                             f"({self._db.dialect.marks(len(columns))})", rows)

    def clear_table(self, table: str) -> None:
        """Delete every row of ``table`` inside the caller's transaction (seeded tables before a copy)."""
        self._known_table(table, [])
        self._write(f"DELETE FROM {table}")

    def count_rows(self, table: str) -> int:
        self._known_table(table, [])
        return int(self._db.fetchone(f"SELECT COUNT(*) FROM {table}")[0])

    def after_bulk_insert(self) -> None:
        """Let generated ids continue after explicitly inserted ones (tables with an ``id``)."""
        for table, cols in self.table_layout():
            if "id" in cols:
                self._db.reset_identity(table)

    def embeddings_checksum(self) -> tuple[int, str]:
        """``(n, sha256)`` over every analysis (track id, model id, dim, embedding bytes), by key."""
        import hashlib

        h = hashlib.sha256()
        n = 0
        for rows in self._db.iter_rows("SELECT track_id, model_id, dim, embedding FROM analyses "
                                       "ORDER BY track_id, model_id"):
            for tid, mid, dim, blob in rows:
                h.update(f"{int(tid)}\0{mid}\0{int(dim)}\0".encode())
                h.update(bytes(blob))
                n += 1
        return n, h.hexdigest()

    def integrity_check(self) -> str:
        """``"ok"`` when the database's own consistency check passes (SQLite ``integrity_check``)."""
        if self.dialect_name == "sqlite":
            return str(self._db.fetchone("PRAGMA integrity_check")[0])
        return "ok"
