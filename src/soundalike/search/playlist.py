"""Playlists that flow: a radio that drifts from a seed, and a path from one track to another.

>>> pl = playlist(seed="Blue Moon", length=30, where="vocals:no")          # doctest: +SKIP
>>> pl = playlist(start="42", end="97", length=20, bpm_path=True)           # doctest: +SKIP
>>> pl.write("mix.m3u8")                                                    # doctest: +SKIP

*Radio* (``seed``): each next track is the nearest unplayed one to a mix of the current
track (weight ``drift``) and the seed (``1 - drift``), so the list wanders through the
neighbourhood without snapping back and without repeating a track.

*Path* (``start``/``end``): ``length`` targets spaced evenly on the line from A's embedding to
B's (normalised); each step takes the nearest unused track to its target whose *progress*
(its projection onto A->B, 0 at A and 1 at B) is not behind the previous step's, so the list
moves steadily from A to B.  With ``bpm_path`` the tempo moves too: each step prefers
tracks within ``bpm_tolerance`` of the tempo interpolated geometrically from A's to B's.

Both respect the filter, the caps per artist/album and leave out near-duplicates of
tracks already in the list (:mod:`soundalike.search.diversity`).  The selection core
(:func:`radio_ids`, :func:`path_ids`) works on any :class:`Space`; :func:`playlist` binds it
to a catalog's index.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from soundalike.errors import QueryError
from soundalike.search.diversity import Candidate, Caps, album_key, is_near_duplicate

if TYPE_CHECKING:
    from soundalike.catalog.store import Catalog, Track

PlaylistFormat = Literal["m3u8", "csv", "json"]
#: Candidates fetched per step (more when the caps or the path's direction reject many).
POOL = 64
DEFAULT_DRIFT = 0.7
DEFAULT_BPM_TOLERANCE = 0.08


class Space(Protocol):
    """What the selection core needs: nearest-neighbour search and track facts."""

    def search(self, q: np.ndarray, k: int, exclude: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Ids and cosine scores of the ``k`` nearest allowed tracks to unit vector ``q``."""
        ...

    def vector(self, track_id: int) -> np.ndarray:
        """The track's unit-length embedding, float32 ``(dim,)``."""
        ...

    def candidate(self, track_id: int, score: float) -> Candidate:
        """Artist/album/hash/duration of a track for the caps."""
        ...

    def bpm(self, track_id: int) -> float | None:
        """The track's tempo, if known."""
        ...


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32)
    n = float(np.linalg.norm(v))
    return v / np.float32(n) if n > 0 else v


def _is_duplicate_of_any(c: Candidate, v: np.ndarray, chosen: list[tuple[Candidate, np.ndarray]]) -> bool:
    """Whether ``c`` (unit vector ``v``) is a near-duplicate of a track already in the list."""
    return any(is_near_duplicate(c._replace(score=float(v @ w)), prev) for prev, w in chosen)


def radio_ids(space: Space, *, seed_id: int, length: int, drift: float = DEFAULT_DRIFT,
              max_per_artist: int | None = None, max_per_album: int | None = None,
              include_duplicates: bool = False) -> list[tuple[int, float]]:
    """``[(track_id, score to the step's target), ...]``, the seed first, no repeats."""
    if not 0.0 <= drift <= 1.0:
        raise QueryError(f"drift must be within 0..1, got {drift}")
    caps = Caps(max_per_artist=max_per_artist, max_per_album=max_per_album)
    seed_v = _unit(space.vector(seed_id))
    seed_c = space.candidate(seed_id, 1.0)
    caps.count(seed_c)
    out, used, chosen = [(seed_id, 1.0)], {seed_id}, [(seed_c, seed_v)]
    cur_v = seed_v
    while len(out) < length:
        q = _unit(np.float32(drift) * cur_v + np.float32(1.0 - drift) * seed_v)
        pick = None
        for pool in (POOL, POOL * 8):
            ids, scores = space.search(q, pool, sorted(used))
            for i, s in zip(ids, scores, strict=True):
                i = int(i)
                if i < 0 or i in used:
                    continue
                v = _unit(space.vector(i))
                c = space.candidate(i, float(s))
                if not include_duplicates and _is_duplicate_of_any(c, v, chosen):
                    continue
                if caps.admit(c):
                    pick = (i, float(s), v, c)
                    break
            if pick or len(ids) < pool:
                break
        if pick is None:
            break  # the filter or the caps left nothing more
        out.append(pick[:2])
        used.add(pick[0])
        chosen.append((pick[3], pick[2]))
        cur_v = pick[2]
    return out


def path_ids(space: Space, *, start_id: int, end_id: int, length: int, bpm_path: bool = False,
             bpm_tolerance: float = DEFAULT_BPM_TOLERANCE, max_per_artist: int | None = None,
             max_per_album: int | None = None, include_duplicates: bool = False
             ) -> list[tuple[int, float, float]]:
    """``[(track_id, score to the step's target, progress 0..1), ...]`` from A to B.

    A is first and B last; progress never decreases; no track twice.  Steps for which no
    allowed track lies ahead are skipped, so the list can come out shorter than ``length``.
    """
    from soundalike.audio.attributes import tempo_distance

    if length < 2:
        raise QueryError(f"a path needs a length of at least 2, got {length}")
    if start_id == end_id:
        raise QueryError("a path needs two different tracks")
    va, vb = _unit(space.vector(start_id)), _unit(space.vector(end_id))
    d = vb - va
    dd = float(d @ d)
    if dd <= 1e-12:
        raise QueryError("the two tracks have the same embedding: no path between them")

    def progress(v: np.ndarray) -> float:
        return float((v - va) @ d) / dd

    caps = Caps(max_per_artist=max_per_artist, max_per_album=max_per_album)
    ca, cb = space.candidate(start_id, 1.0), space.candidate(end_id, 1.0)
    caps.count(ca)
    caps.count(cb)
    bpm_a, bpm_b = space.bpm(start_id), space.bpm(end_id)
    use_bpm = bpm_path and bpm_a and bpm_b
    out: list[tuple[int, float, float]] = [(start_id, 1.0, 0.0)]
    used, chosen, last = {start_id, end_id}, [(ca, va), (cb, vb)], 0.0
    for step in range(1, length - 1):
        lam = step / (length - 1)
        target = _unit((1.0 - lam) * va + lam * vb)
        want_bpm = bpm_a ** (1 - lam) * bpm_b ** lam if use_bpm else None
        best = None
        for pool in (POOL, POOL * 8):
            ids, scores = space.search(target, pool, sorted(used))
            for i, s in zip(ids, scores, strict=True):
                i = int(i)
                if i < 0 or i in used:
                    continue
                v = _unit(space.vector(i))
                p = progress(v)
                if p < last or p > 1.0:
                    continue
                c = space.candidate(i, float(s))
                if not include_duplicates and _is_duplicate_of_any(c, v, chosen):
                    continue
                if not caps.allows(c):
                    continue
                value = float(s)
                if want_bpm:
                    bpm = space.bpm(i)
                    dist = tempo_distance(bpm, want_bpm) if bpm else 1.0
                    value -= 0.0 if dist <= bpm_tolerance else 0.5 + dist
                if best is None or value > best[0]:
                    best = (value, i, float(s), p, v, c)
            if best is not None or len(ids) < pool:
                break
        if best is None:
            continue
        _, i, s, p, v, c = best
        caps.count(c)
        out.append((i, s, p))
        used.add(i)
        chosen.append((c, v))
        last = p
    out.append((end_id, 1.0, 1.0))
    return out


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class PlaylistEntry:
    """One track of a playlist.

    Attributes
    ----------
    position : 1-based
    track : the catalog track
    score : cosine similarity to the step's target (radio: the drifting query; path: the
        point on A->B)
    progress : path only: 0 at A, 1 at B
    bpm, camelot : the track's tempo and key, where known
    """

    position: int
    track: Track
    score: float
    progress: float | None = None
    bpm: float | None = None
    camelot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        t = self.track
        return {"position": self.position, "id": t.id, "path": t.path, "name": t.display_name,
                "title": t.title, "artist": t.artist, "album": t.album, "duration_s": t.duration_s,
                "score": round(self.score, 6),
                "progress": None if self.progress is None else round(self.progress, 4),
                "bpm": self.bpm, "camelot": self.camelot}


@dataclass(frozen=True)
class Playlist:
    """A playlist: its entries and how it was made."""

    kind: Literal["radio", "path"]
    entries: tuple[PlaylistEntry, ...]
    model_id: str
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model_id": self.model_id, "params": self.params,
                "tracks": [e.to_dict() for e in self.entries]}

    def to_m3u8(self) -> str:
        """Extended M3U in UTF-8: ``#EXTINF:<seconds>,<artist> - <title>`` then the path."""
        lines = ["#EXTM3U", f"#PLAYLIST:soundalike {self.kind}"]
        for e in self.entries:
            secs = int(round(e.track.duration_s)) if e.track.duration_s else -1
            lines += [f"#EXTINF:{secs},{e.track.display_name}", e.track.path]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        cols = ["position", "id", "path", "name", "artist", "album", "duration_s", "bpm", "camelot",
                "score", "progress"]
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for e in self.entries:
            w.writerow(e.to_dict())
        return buf.getvalue()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def render(self, fmt: PlaylistFormat) -> str:
        return {"m3u8": self.to_m3u8, "csv": self.to_csv, "json": self.to_json}[fmt]()

    def write(self, path: str | os.PathLike, *, fmt: PlaylistFormat | None = None) -> Path:
        """Write to ``path`` (format from ``fmt`` or the suffix: .m3u8/.m3u, .csv, .json),
        atomically (a temporary file renamed over the target)."""
        p = Path(path)
        fmt = fmt or format_for(p)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(self.render(fmt), encoding="utf-8")
        os.replace(tmp, p)
        return p


def format_for(path: str | os.PathLike) -> PlaylistFormat:
    """Playlist format from a file suffix."""
    suffix = Path(path).suffix.lower()
    fmt = {".m3u8": "m3u8", ".m3u": "m3u8", ".csv": "csv", ".json": "json"}.get(suffix)
    if fmt is None:
        raise QueryError(f"{path}: unknown playlist format {suffix!r} (use .m3u8, .csv or .json)")
    return fmt  # type: ignore[return-value]


# --------------------------------------------------------------------------- catalog binding


class _IndexSpace:
    """A :class:`Space` over a catalog's faiss index, within a filter."""

    def __init__(self, cat: Catalog, index, mask, attrs: Callable[[int], dict | None]):
        self.cat, self.index, self.mask, self._attrs = cat, index, mask, attrs
        self._tracks: dict[int, Track] = {}
        self._vec: dict[int, np.ndarray] = {}

    def track(self, i: int) -> Track:
        if i not in self._tracks:
            self._tracks.update(self.cat.get_tracks([i]))
        return self._tracks[i]

    def search(self, q, k, exclude):
        ids, scores = self.index.search(np.asarray(q, np.float32), k, allowed=self.mask,
                                        exclude_ids=np.asarray(list(exclude), np.int64))
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def vector(self, i):
        if i not in self._vec:
            self._vec[i] = self.index.vectors(np.asarray([i], np.int64))[0]
        return self._vec[i]

    def candidate(self, i, score):
        t = self.track(i)
        a = self._attrs(i) or {}
        return Candidate(i, score, t.artist, album_key(t.album, t.path), t.content_hash,
                         a.get("duration_s") or t.duration_s,
                         t.title, a.get("bpm"), a.get("camelot"),
                         a.get("loudness_lufs"))

    def bpm(self, i):
        a = self._attrs(i)
        return a.get("bpm") if a else None


def playlist(*, seed: int | str | None = None, start: int | str | None = None,
             end: int | str | None = None, length: int = 30, where: str | None = None,
             model: str | None = None, drift: float = DEFAULT_DRIFT, bpm_path: bool = False,
             bpm_tolerance: float = DEFAULT_BPM_TOLERANCE, max_per_artist: int | None = None,
             max_per_album: int | None = None, include_duplicates: bool = False,
             include_suggested: bool = False,
             catalog: Catalog | str | os.PathLike | None = None) -> Playlist:
    """A radio from ``seed``, or a path from ``start`` to ``end`` (catalog tracks: id, path or
    title/artist text), ``length`` tracks long at most, within the filter ``where``.

    Raises
    ------
    QueryError, TrackNotFoundError, CatalogError
    """
    from soundalike.catalog.query import parse
    from soundalike.search.similar import _filter_mask, open_catalog, resolve_query
    from soundalike.search.sync import cached_index, model_info

    if (seed is None) == (start is None and end is None):
        raise QueryError("give either a seed (radio) or both start and end (path)")
    if seed is None and (start is None or end is None):
        raise QueryError("a path needs both start and end")
    if length < 1:
        raise QueryError(f"length must be at least 1, got {length}")
    parse(where)
    with open_catalog(catalog) as cat:
        info = model_info(cat, model)
        index = cached_index(cat, info.model_id)

        def resolve(ref) -> Track:
            ref = int(ref) if isinstance(ref, str) and ref.isdigit() else ref
            rq = resolve_query(cat, ref, model_id=info.model_id)
            if rq.track is None:
                raise QueryError(f"{ref}: playlists are made of catalog tracks; ingest it first")
            if len(index.positions(np.asarray([rq.track.id], np.int64))) == 0:
                raise QueryError(f"{rq.track.display_name}: no embedding of model {info.name}")
            return rq.track

        first = resolve(seed if seed is not None else start)
        mask = _filter_mask(cat, index, where, include_suggested, reference=cat.track_attributes(first.id))
        attrs_of = _attributes_getter(cat)
        space = _IndexSpace(cat, index, mask, attrs_of)
        params: dict[str, Any] = {"length": length, "where": where, "max_per_artist": max_per_artist,
                                  "max_per_album": max_per_album}
        if seed is not None:
            s = first
            rows = [(i, sc, None) for i, sc in radio_ids(
                space, seed_id=s.id, length=length, drift=drift, max_per_artist=max_per_artist,
                max_per_album=max_per_album, include_duplicates=include_duplicates)]
            kind = "radio"
            params.update(seed=s.id, drift=drift)
        else:
            a, b = first, resolve(end)
            rows = path_ids(space, start_id=a.id, end_id=b.id, length=length, bpm_path=bpm_path,
                            bpm_tolerance=bpm_tolerance, max_per_artist=max_per_artist,
                            max_per_album=max_per_album, include_duplicates=include_duplicates)
            kind = "path"
            params.update(start=a.id, end=b.id, bpm_path=bpm_path)
        entries = []
        for pos, (i, sc, prog) in enumerate(rows, start=1):
            at = attrs_of(i) or {}
            entries.append(PlaylistEntry(pos, space.track(i), float(sc), prog, at.get("bpm"),
                                         at.get("camelot")))
        return Playlist(kind, tuple(entries), info.model_id, params)


def _attributes_getter(cat: Catalog) -> Callable[[int], dict | None]:
    """``track_id -> attributes dict`` (or ``None``), cached."""
    cache: dict[int, dict | None] = {}

    def get(i: int) -> dict | None:
        if i not in cache:
            cache[i] = cat.track_attributes(i)
        return cache[i]

    return get


__all__ = ["Playlist", "PlaylistEntry", "Space", "format_for", "path_ids", "playlist", "radio_ids"]
