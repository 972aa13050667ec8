"""The catalog: one SQLite file (WAL) holding tracks, tags, analyses and ingest errors.

Writes are transactional (``with catalog.transaction(): ...``), so a process killed at
any moment -- SIGKILL included -- loses nothing that was committed and leaves no
half-written track.  The schema is versioned with ``PRAGMA user_version`` and migrated
forward on open; a catalog written by a newer soundalike is refused, not damaged.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from soundalike.errors import CatalogError

TagSource = Literal["file", "user", "model", "suggested"]
TAG_SOURCES: tuple[str, ...] = ("file", "user", "model", "suggested")

#: Schema migrations, applied in order; ``user_version`` counts how many have run.
MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE tracks (
        id            INTEGER PRIMARY KEY,
        path          TEXT NOT NULL UNIQUE,
        content_hash  TEXT NOT NULL,
        size          INTEGER NOT NULL,
        mtime         REAL NOT NULL,
        duration_s    REAL,
        sr            INTEGER,
        channels      INTEGER,
        format        TEXT,
        title         TEXT,
        artist        TEXT,
        album         TEXT,
        genre         TEXT,
        year          INTEGER,
        status        TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'missing')),
        added_at      REAL NOT NULL,
        updated_at    REAL NOT NULL
    );
    CREATE INDEX tracks_hash ON tracks(content_hash);
    CREATE INDEX tracks_status ON tracks(status);
    CREATE TABLE tags (
        track_id    INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
        tag         TEXT NOT NULL,
        category    TEXT NOT NULL,
        source      TEXT NOT NULL CHECK (source IN ('file', 'user', 'model', 'suggested')),
        confidence  REAL NOT NULL DEFAULT 1.0,
        model_id    TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (track_id, category, tag, source, model_id)
    );
    CREATE INDEX tags_lookup ON tags(category, tag);
    CREATE TABLE models (
        model_id        TEXT PRIMARY KEY,
        name            TEXT NOT NULL,
        dim             INTEGER NOT NULL,
        labels          TEXT NOT NULL DEFAULT '[]',
        label_category  TEXT NOT NULL DEFAULT 'tag',
        created_at      REAL NOT NULL
    );
    CREATE TABLE analyses (
        track_id     INTEGER NOT NULL REFERENCES tracks(id) ON DELETE CASCADE,
        model_id     TEXT NOT NULL REFERENCES models(model_id),
        embedding    BLOB NOT NULL,
        dim          INTEGER NOT NULL,
        predictions  TEXT NOT NULL DEFAULT '{}',
        created_at   REAL NOT NULL,
        PRIMARY KEY (track_id, model_id)
    );
    CREATE INDEX analyses_model ON analyses(model_id);
    CREATE TABLE ingest_errors (
        id          INTEGER PRIMARY KEY,
        path        TEXT NOT NULL,
        reason      TEXT NOT NULL,
        error_type  TEXT NOT NULL,
        size        INTEGER,
        mtime       REAL,
        time        REAL NOT NULL
    );
    CREATE INDEX ingest_errors_path ON ingest_errors(path);
    """,
    # 2: what made each analysis: 'full' (every patch) or 'spread:N' (soundalike.ingest.plan)
    """
    ALTER TABLE analyses ADD COLUMN analysis TEXT NOT NULL DEFAULT 'full';
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_TRACK_FIELDS = ("id", "path", "content_hash", "size", "mtime", "duration_s", "sr", "channels",
                 "format", "title", "artist", "album", "genre", "year", "status", "added_at",
                 "updated_at")


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


@dataclass(frozen=True)
class StoredAnalysis:
    track_id: int
    model_id: str
    embedding: np.ndarray
    predictions: dict[str, float]
    created_at: float
    analysis: str = "full"


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    name: str
    dim: int
    labels: list[str] = field(default_factory=list)
    label_category: str = "tag"
    n_tracks: int = 0


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


def _track(row: sqlite3.Row) -> Track:
    return Track(**{k: row[k] for k in _TRACK_FIELDS})


class Catalog:
    """An open catalog file.  Use :meth:`open`; close with :meth:`close` or ``with``."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn
        self._in_tx = False

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True, timeout_s: float = 30.0) -> Catalog:
        """Open (and create or migrate) the catalog at ``path``.

        Raises
        ------
        CatalogError
            The file is missing (``create=False``), not a SQLite database, or written by a
            newer schema.
        """
        p = Path(path).expanduser()
        if not p.exists():
            if not create:
                raise CatalogError(f"{p}: no catalog here; run `soundalike ingest DIR --catalog {p}` first")
            p.parent.mkdir(parents=True, exist_ok=True)
        elif p.is_dir():
            raise CatalogError(f"{p}: is a directory, not a catalog file")
        try:
            conn = sqlite3.connect(str(p), timeout=timeout_s, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            cat = cls(p, conn)
            cat._migrate()
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"{p}: not a soundalike catalog ({exc})") from exc
        return cat

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise CatalogError(
                f"{self.path}: catalog schema v{version} is newer than this soundalike "
                f"(v{SCHEMA_VERSION}); upgrade soundalike"
            )
        for i in range(version, SCHEMA_VERSION):
            with self.transaction():
                for stmt in MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        self.conn.execute(stmt)
                self.conn.execute(f"PRAGMA user_version = {i + 1}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error); nests as a no-op."""
        if self._in_tx:
            yield self.conn
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")
        finally:
            self._in_tx = False

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    # ------------------------------------------------------------------ tracks

    def upsert_track(self, *, path: str, content_hash: str, size: int, mtime: float,
                     duration_s: float | None = None, sr: int | None = None,
                     channels: int | None = None, format: str | None = None,
                     title: str | None = None, artist: str | None = None, album: str | None = None,
                     genre: str | None = None, year: int | None = None) -> int:
        """Insert or update the track at ``path`` (status becomes ``ok``); returns its id."""
        now = time.time()
        values = dict(path=path, content_hash=content_hash, size=size, mtime=mtime,
                      duration_s=duration_s, sr=sr, channels=channels, format=format, title=title,
                      artist=artist, album=album, genre=genre, year=year)
        with self.transaction() as c:
            row = c.execute("SELECT id FROM tracks WHERE path = ?", (path,)).fetchone()
            if row is None:
                cols = ", ".join(values)
                marks = ", ".join("?" for _ in values)
                cur = c.execute(
                    f"INSERT INTO tracks ({cols}, status, added_at, updated_at) VALUES ({marks}, 'ok', ?, ?)",
                    (*values.values(), now, now))
                return int(cur.lastrowid)
            sets = ", ".join(f"{k} = ?" for k in values)
            c.execute(f"UPDATE tracks SET {sets}, status = 'ok', updated_at = ? WHERE id = ?",
                      (*values.values(), now, row["id"]))
            return int(row["id"])

    def get_track(self, track_id: int) -> Track | None:
        row = self.conn.execute("SELECT * FROM tracks WHERE id = ?", (int(track_id),)).fetchone()
        return _track(row) if row else None

    def get_tracks(self, ids: Iterable[int]) -> dict[int, Track]:
        """Tracks by id (missing ids are left out)."""
        ids = [int(i) for i in ids]
        out: dict[int, Track] = {}
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for row in self.conn.execute(f"SELECT * FROM tracks WHERE id IN ({marks})", chunk):
                out[row["id"]] = _track(row)
        return out

    def track_by_path(self, path: str | Path) -> Track | None:
        row = self.conn.execute("SELECT * FROM tracks WHERE path = ?", (str(path),)).fetchone()
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
        rows = self.conn.execute(
            "SELECT * FROM tracks WHERE title LIKE ? ESCAPE '\\' OR artist LIKE ? ESCAPE '\\' "
            "OR path LIKE ? ESCAPE '\\' ORDER BY status = 'ok' DESC, id LIMIT ?",
            (like, like, like, limit)).fetchall()
        return [_track(r) for r in rows]

    def iter_tracks(self, *, status: str | None = "ok") -> Iterator[Track]:
        if status is None:
            cur = self.conn.execute("SELECT * FROM tracks ORDER BY id")
        else:
            cur = self.conn.execute("SELECT * FROM tracks WHERE status = ? ORDER BY id", (status,))
        for row in cur:
            yield _track(row)

    def count_tracks(self, status: str | None = None) -> int:
        if status is None:
            return self.conn.execute("SELECT COUNT(*) FROM tracks").fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM tracks WHERE status = ?", (status,)).fetchone()[0]

    def file_states(self) -> dict[str, tuple[int, int, float, str, str]]:
        """path -> (id, size, mtime, content_hash, status) for every track: ingest's change check."""
        return {r["path"]: (r["id"], r["size"], r["mtime"], r["content_hash"], r["status"])
                for r in self.conn.execute("SELECT id, path, size, mtime, content_hash, status FROM tracks")}

    def touch_track(self, track_id: int, *, size: int, mtime: float) -> None:
        """Record a new mtime for unchanged content (and bring a missing track back)."""
        with self.transaction() as c:
            c.execute("UPDATE tracks SET size = ?, mtime = ?, status = 'ok', updated_at = ? WHERE id = ?",
                      (size, mtime, time.time(), int(track_id)))

    def mark_missing(self, track_ids: Iterable[int]) -> int:
        """Mark tracks whose files disappeared; nothing is deleted.  Returns how many changed."""
        ids = [int(i) for i in track_ids]
        n = 0
        with self.transaction() as c:
            for start in range(0, len(ids), 900):
                chunk = ids[start : start + 900]
                marks = ",".join("?" * len(chunk))
                cur = c.execute(f"UPDATE tracks SET status = 'missing', updated_at = ? "
                                f"WHERE status = 'ok' AND id IN ({marks})", (time.time(), *chunk))
                n += cur.rowcount
        return n

    # ------------------------------------------------------------------ tags

    def set_tags(self, track_id: int, tags: Iterable[Tag], *, source: TagSource,
                 model_id: str | None = None) -> None:
        """Replace ``track_id``'s tags of ``source`` (and ``model_id``) with ``tags``."""
        if source not in TAG_SOURCES:
            raise CatalogError(f"tag source must be one of {TAG_SOURCES}, got {source!r}")
        mid = model_id or ""
        with self.transaction() as c:
            c.execute("DELETE FROM tags WHERE track_id = ? AND source = ? AND model_id = ?",
                      (int(track_id), source, mid))
            c.executemany(
                "INSERT OR REPLACE INTO tags (track_id, tag, category, source, confidence, model_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(int(track_id), t.tag, t.category, source, float(t.confidence), mid)
                 for t in tags if t.tag])

    def add_tag(self, track_id: int, tag: Tag) -> None:
        """Add one tag (kept with its own source), replacing the same tag from that source."""
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO tags (track_id, tag, category, source, confidence, model_id) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (int(track_id), tag.tag, tag.category, tag.source, float(tag.confidence),
                 tag.model_id or ""))

    def remove_tag(self, track_id: int, *, tag: str, category: str, source: TagSource = "user") -> int:
        with self.transaction() as c:
            return c.execute("DELETE FROM tags WHERE track_id = ? AND tag = ? AND category = ? AND source = ?",
                             (int(track_id), normalize_tag(tag), normalize_tag(category), source)).rowcount

    def track_tags(self, track_id: int, *, sources: Iterable[str] | None = None) -> list[Tag]:
        """A track's tags, most confident first."""
        q = "SELECT tag, category, source, confidence, model_id FROM tags WHERE track_id = ?"
        args: list = [int(track_id)]
        if sources is not None:
            srcs = list(sources)
            q += f" AND source IN ({','.join('?' * len(srcs))})"
            args += srcs
        q += " ORDER BY source = 'suggested', confidence DESC, category, tag"
        return [Tag(r["tag"], r["category"], r["source"], r["confidence"], r["model_id"] or None)
                for r in self.conn.execute(q, args)]

    def tag_counts(self, *, sources: Iterable[str] = ("file", "user", "model")) -> dict[str, dict[str, int]]:
        """category -> tag -> number of ok tracks carrying it (any of ``sources``)."""
        srcs = list(sources)
        rows = self.conn.execute(
            f"SELECT category, tag, COUNT(DISTINCT track_id) AS n FROM tags JOIN tracks ON tracks.id = tags.track_id "
            f"WHERE tracks.status = 'ok' AND source IN ({','.join('?' * len(srcs))}) "
            f"GROUP BY category, tag ORDER BY category, n DESC, tag", srcs)
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            out.setdefault(r["category"], {})[r["tag"]] = r["n"]
        return out

    # ------------------------------------------------------------------ models & analyses

    def register_model(self, *, model_id: str, name: str, dim: int, labels: list[str] | None = None,
                       label_category: str = "tag") -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO models (model_id, name, dim, labels, label_category, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(model_id) DO UPDATE SET name = excluded.name",
                (model_id, name, int(dim), json.dumps(list(labels or [])), label_category, time.time()))

    def models(self) -> list[ModelInfo]:
        rows = self.conn.execute(
            "SELECT m.*, (SELECT COUNT(*) FROM analyses a JOIN tracks t ON t.id = a.track_id "
            "WHERE a.model_id = m.model_id AND t.status = 'ok') AS n FROM models m ORDER BY n DESC, created_at")
        return [ModelInfo(r["model_id"], r["name"], r["dim"], json.loads(r["labels"]),
                          r["label_category"], r["n"]) for r in rows]

    def model(self, ref: str) -> ModelInfo | None:
        """A model by id or by name (the most used one of that name)."""
        for m in self.models():
            if m.model_id == ref:
                return m
        for m in self.models():
            if m.name == ref:
                return m
        return None

    def default_model_id(self) -> str | None:
        """The model with the most analyses of ok tracks, or None for an empty catalog."""
        ms = [m for m in self.models() if m.n_tracks > 0]
        return ms[0].model_id if ms else None

    def put_analysis(self, track_id: int, model_id: str, embedding: np.ndarray,
                     predictions: dict[str, float] | None = None, *, analysis: str = "full") -> None:
        """Store (or replace) a track's analysis by ``model_id``.

        ``analysis`` says how much of the track it looked at: ``"full"`` or ``"spread:N"``
        (see :mod:`soundalike.ingest.plan`).
        """
        emb = np.ascontiguousarray(embedding, dtype=np.float32).reshape(-1)
        if not np.isfinite(emb).all():
            raise CatalogError(f"track {track_id}: embedding contains NaN or inf")
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO analyses (track_id, model_id, embedding, dim, predictions, created_at, "
                "analysis) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (int(track_id), model_id, emb.tobytes(), emb.size,
                 json.dumps({k: round(float(v), 6) for k, v in (predictions or {}).items()}), time.time(),
                 str(analysis)))

    def analysis_settings(self, model_id: str) -> dict[int, str]:
        """track id -> how its analysis by ``model_id`` was made (``"full"``, ``"spread:N"``)."""
        return {int(r[0]): r[1] for r in self.conn.execute(
            "SELECT track_id, analysis FROM analyses WHERE model_id = ?", (model_id,))}

    def has_analysis(self, track_id: int, model_id: str) -> bool:
        return self.conn.execute("SELECT 1 FROM analyses WHERE track_id = ? AND model_id = ?",
                                 (int(track_id), model_id)).fetchone() is not None

    def get_analysis(self, track_id: int, model_id: str) -> StoredAnalysis | None:
        r = self.conn.execute("SELECT * FROM analyses WHERE track_id = ? AND model_id = ?",
                              (int(track_id), model_id)).fetchone()
        if r is None:
            return None
        return StoredAnalysis(r["track_id"], r["model_id"], np.frombuffer(r["embedding"], np.float32).copy(),
                              json.loads(r["predictions"]), r["created_at"], r["analysis"])

    def track_analyses(self, track_id: int) -> list[StoredAnalysis]:
        rows = self.conn.execute("SELECT model_id FROM analyses WHERE track_id = ? ORDER BY created_at",
                                 (int(track_id),)).fetchall()
        return [a for r in rows if (a := self.get_analysis(track_id, r["model_id"])) is not None]

    def embeddings(self, model_id: str, *, status: str | None = "ok") -> tuple[np.ndarray, np.ndarray]:
        """All embeddings of ``model_id``: ids int64 ``(n,)`` and float32 ``(n, dim)``, by id."""
        q = ("SELECT a.track_id, a.embedding, a.dim FROM analyses a JOIN tracks t ON t.id = a.track_id "
             "WHERE a.model_id = ?")
        args: list = [model_id]
        if status is not None:
            q += " AND t.status = ?"
            args.append(status)
        rows = self.conn.execute(q + " ORDER BY a.track_id", args).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        dims = {r["dim"] for r in rows}
        if len(dims) != 1:
            raise CatalogError(f"model {model_id}: embeddings of several dimensions {sorted(dims)}")
        ids = np.fromiter((r["track_id"] for r in rows), np.int64, len(rows))
        X = np.frombuffer(b"".join(r["embedding"] for r in rows), np.float32).reshape(len(rows), dims.pop())
        return ids, X.copy()

    # ------------------------------------------------------------------ errors

    def record_error(self, *, path: str, reason: str, error_type: str, size: int | None = None,
                     mtime: float | None = None) -> None:
        """Remember that ``path`` failed (replacing an earlier error for the same path)."""
        with self.transaction() as c:
            c.execute("DELETE FROM ingest_errors WHERE path = ?", (path,))
            c.execute("INSERT INTO ingest_errors (path, reason, error_type, size, mtime, time) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (path, reason, error_type, size, mtime, time.time()))

    def clear_error(self, path: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM ingest_errors WHERE path = ?", (path,))

    def error_states(self) -> dict[str, tuple[int | None, float | None]]:
        """path -> (size, mtime) of files that failed: unchanged failures are not retried."""
        return {r["path"]: (r["size"], r["mtime"])
                for r in self.conn.execute("SELECT path, size, mtime FROM ingest_errors")}

    def errors(self) -> list[IngestErrorRecord]:
        return [IngestErrorRecord(r["id"], r["path"], r["reason"], r["error_type"], r["time"])
                for r in self.conn.execute("SELECT * FROM ingest_errors ORDER BY path")]

    # ------------------------------------------------------------------ summary

    def stats(self) -> dict:
        c = self.conn
        by_status = dict(c.execute("SELECT status, COUNT(*) FROM tracks GROUP BY status").fetchall())
        by_format = dict(c.execute("SELECT format, COUNT(*) FROM tracks WHERE status = 'ok' "
                                   "GROUP BY format ORDER BY 2 DESC").fetchall())
        dur = c.execute("SELECT COALESCE(SUM(duration_s), 0) FROM tracks WHERE status = 'ok'").fetchone()[0]
        tags = dict(c.execute("SELECT source, COUNT(*) FROM tags GROUP BY source").fetchall())
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "tracks": by_status.get("ok", 0),
            "missing": by_status.get("missing", 0),
            "errors": c.execute("SELECT COUNT(*) FROM ingest_errors").fetchone()[0],
            "total_duration_s": float(dur),
            "formats": {str(k): v for k, v in by_format.items()},
            "tags_by_source": tags,
            "models": [{"model_id": m.model_id, "name": m.name, "dim": m.dim, "tracks": m.n_tracks}
                       for m in self.models()],
        }
