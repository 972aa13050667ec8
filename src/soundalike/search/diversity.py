"""Diversity for result lists: caps per artist and album, and no near-duplicates of the seed.

Pure functions over candidates already ranked by similarity (no catalog, no index), so
``similar``, the playlists and the HTTP API share one rule and tests can call it directly.

A *near-duplicate* of the seed is another copy or version of the same recording, and it
takes more than embedding similarity to say so (a crude embedding such as MFCC statistics
puts different tracks of one style at cosine 0.999):

- the same file content (equal content hash); or
- a version: the same title once bracketed or dashed suffixes are dropped ("Song (Radio
  Edit)", "Song - 2011 Remaster"), the same artist where both are known, and cosine >=
  :data:`VERSION_SCORE`; or
- the same audio: cosine >= :data:`DUPLICATE_SCORE`, the decoded length within
  :data:`DUPLICATE_DURATION_S` (or 2 %), and -- the audio overlapping -- the same key, tempo
  within 2 % (or its half/double); both tracks need their musical attributes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

#: Cosine similarity from which two tracks with matching attributes are the same audio.
DUPLICATE_SCORE = 0.99
#: Cosine similarity from which two tracks of the same title and artist are versions.
VERSION_SCORE = 0.9
#: "Nearly equal length": within this many seconds (or 2 % of the longer one).
DUPLICATE_DURATION_S = 2.0


class Candidate(NamedTuple):
    """What diversity needs to know about one ranked candidate."""

    id: int
    score: float
    artist: str | None = None
    album: str | None = None
    content_hash: str | None = None
    duration_s: float | None = None
    title: str | None = None
    bpm: float | None = None
    camelot: str | None = None
    loudness_lufs: float | None = None


def _norm(s: str | None) -> str | None:
    s = (s or "").strip().lower()
    return s or None


_BRACKETS = re.compile(r"[\(\[\{][^\)\]\}]*[\)\]\}]")
_DASH_SUFFIX = re.compile(r"\s+[-\u2013\u2014/]\s+.*$")


def title_stem(title: str | None) -> str | None:
    """``"Song (Radio Edit)"``, ``"Song - 2011 Remaster"`` -> ``"song"``; ``None`` if empty."""
    if not title:
        return None
    t = _DASH_SUFFIX.sub("", _BRACKETS.sub(" ", title.lower()))
    t = re.sub(r"[^\w]+", " ", t).strip()
    return t or None


def _tempo_close(a: float, b: float) -> bool:
    # Octave-aware: the same audio can be read at half or double the tempo.
    return min(abs(x - b) for x in (a, 2 * a, a / 2)) <= 0.02 * b


def is_near_duplicate(c: Candidate, seed: Candidate) -> bool:
    """Whether ``c`` is another copy/version of ``seed`` (see the module docstring)."""
    if c.id == seed.id:
        return True
    if c.content_hash and seed.content_hash and c.content_hash == seed.content_hash:
        return True
    a, b = title_stem(c.title), title_stem(seed.title)
    if c.score >= VERSION_SCORE and a and a == b:
        ca, sa = _norm(c.artist), _norm(seed.artist)
        if not (ca and sa) or ca == sa:
            return True
    if c.score >= DUPLICATE_SCORE and c.duration_s and seed.duration_s:
        tol = max(DUPLICATE_DURATION_S, 0.02 * max(c.duration_s, seed.duration_s))
        same_length = abs(c.duration_s - seed.duration_s) <= tol
        # Not loudness: a remaster or a re-master for radio moves it by several LU.
        same_music = (c.bpm and seed.bpm and _tempo_close(c.bpm, seed.bpm)
                      and c.camelot and c.camelot == seed.camelot)
        return bool(same_length and same_music)
    return False


def album_key(album: str | None, path: str) -> str:
    """What ``max_per_album`` counts: the album tag, or -- for files without one -- the
    folder they are in (music folders are mostly one album, or one soundtrack, each)."""
    if album and album.strip():
        return album
    parent = path.replace("\\", "/").rsplit("/", 2)
    return "folder:" + ("/".join(parent[:-1]) if len(parent) > 1 else "")


class Caps:
    """Running per-artist / per-album counts; ``admit`` says yes and counts, or says no.

    ``None`` caps nothing.  Tracks without an artist (album) are never capped by it: an
    unknown artist is not one artist.  (Callers give a file without an album tag its
    folder as album, :func:`album_key`.)
    """

    def __init__(self, *, max_per_artist: int | None = None, max_per_album: int | None = None):
        for name, v in (("max_per_artist", max_per_artist), ("max_per_album", max_per_album)):
            if v is not None and v < 1:
                raise ValueError(f"{name} must be at least 1, got {v}")
        self.max_per_artist, self.max_per_album = max_per_artist, max_per_album
        self.artists: dict[str, int] = {}
        self.albums: dict[tuple[str | None, str], int] = {}

    def _keys(self, c: Candidate):
        artist, album = _norm(c.artist), _norm(c.album)
        if album and album.startswith("folder:"):
            return artist, (None, album)  # a folder is one album whoever the artists are
        return artist, ((artist, album) if album else None)

    def allows(self, c: Candidate) -> bool:
        artist, album = self._keys(c)
        if self.max_per_artist and artist and self.artists.get(artist, 0) >= self.max_per_artist:
            return False
        if self.max_per_album and album and self.albums.get(album, 0) >= self.max_per_album:
            return False
        return True

    def count(self, c: Candidate) -> None:
        artist, album = self._keys(c)
        if artist:
            self.artists[artist] = self.artists.get(artist, 0) + 1
        if album:
            self.albums[album] = self.albums.get(album, 0) + 1

    def admit(self, c: Candidate) -> bool:
        if not self.allows(c):
            return False
        self.count(c)
        return True


def diversify(candidates: Iterable[Candidate], *, k: int, seed: Candidate | None = None,
              max_per_artist: int | None = None, max_per_album: int | None = None,
              include_duplicates: bool = False, count_seed: bool = False) -> Iterator[Candidate]:
    """The first ``k`` candidates (in the given order) that pass the caps and, unless
    ``include_duplicates``, are not near-duplicates of ``seed`` (never the seed itself).

    ``count_seed``: the seed counts against the caps (a playlist that starts with it);
    ``similar`` leaves it out, as the seed is not in its list.
    """
    caps = Caps(max_per_artist=max_per_artist, max_per_album=max_per_album)
    if seed is not None and count_seed:
        caps.count(seed)
    n = 0
    for c in candidates:
        if n >= k:
            return
        if seed is not None and c.id == seed.id:
            continue
        if seed is not None and not include_duplicates and is_near_duplicate(c, seed):
            continue
        if caps.admit(c):
            n += 1
            yield c


__all__ = ["Candidate", "Caps", "album_key", "DUPLICATE_DURATION_S", "DUPLICATE_SCORE", "VERSION_SCORE",
           "diversify", "is_near_duplicate", "title_stem"]
