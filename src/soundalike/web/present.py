"""How tracks are shown and exported to people: readable titles, M3U8 and CSV playlists.

Pure functions over :class:`~soundalike.catalog.store.Track` (no catalog, no HTTP), so
the web page, the CLI and the tests agree on one rule each.

>>> display_title("383 1", "/music/banjo/banjo_A3_05_forte_normal.mp3")
'banjo A3 05 forte normal'
>>> display_title("Blue Moon", "/m/x.mp3")
'Blue Moon'
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

# Titles that say nothing about the music: no letter at all ("000", "195", "383 1"),
# or a ripper's placeholder ("Track 01", "Audio Track 3", "Untitled").
_NO_LETTER = re.compile(r"^[^a-zA-Z\u00C0-\uFFFF]*$")
_PLACEHOLDER = re.compile(r"^(?:(?:audio\s*)?track|untitled|unknown|title|piste|titel)[\s_#.-]*\d*$", re.IGNORECASE)


_QUALITY_SUFFIXES = frozenset({"hq", "lq", "mq", "preview", "low", "high"})


def is_junk_title(title: str | None) -> bool:
    """Whether a file's title tag is missing or meaningless (digits, "Track 01", ...)."""
    if title is None or not title.strip():
        return True
    t = title.strip()
    return bool(_NO_LETTER.match(t) or _PLACEHOLDER.match(t))


def title_from_path(path: str) -> str:
    """A readable title from a file name: stem without ``.hq``-style suffixes, ``_`` as spaces."""
    # os.path, not pathlib: this runs for every row of every page and search (~10 us less each)
    name = os.path.basename(path)
    dot_at = name.rfind(".")
    stem = name[:dot_at] if 0 < dot_at < len(name) - 1 else name  # what PurePath.stem says
    head, dot, tail = stem.rpartition(".")
    if dot and head and tail.lower() in _QUALITY_SUFFIXES:  # "song.hq.ogg" -> "song"
        stem = head
    return " ".join(stem.replace("_", " ").split()) or name


def display_title(title: str | None, path: str) -> str:
    """The title to show: the file's own title tag unless it is junk, else the file name."""
    return title.strip() if not is_junk_title(title) else title_from_path(path)


def _m3u_text(s: str) -> str:
    return " ".join(str(s).split())  # one line: no CR/LF can break the playlist


def m3u8(tracks: Sequence, *, url_of, name: str | None = None) -> str:
    """An extended M3U playlist (UTF-8) of ``tracks`` in order.

    Parameters
    ----------
    tracks : :class:`~soundalike.catalog.store.Track` objects
    url_of : ``track -> str``, where a player fetches the track (an HTTP URL or a path)
    name : playlist name (``#PLAYLIST``)

    Returns
    -------
    str
        ``#EXTM3U``, then ``#EXTINF:<seconds>,<artist> - <title>`` and the location per track.
    """
    lines = ["#EXTM3U"]
    if name:
        lines.append(f"#PLAYLIST:{_m3u_text(name)}")
    for t in tracks:
        secs = int(round(t.duration_s)) if t.duration_s else -1
        title = display_title(t.title, t.path)
        label = f"{t.artist} - {title}" if t.artist else title
        lines.append(f"#EXTINF:{secs},{_m3u_text(label)}")
        lines.append(_m3u_text(url_of(t)))
    return "\n".join(lines) + "\n"


#: Columns of :func:`playlist_csv`, in order.
CSV_COLUMNS = ("position", "id", "title", "artist", "album", "year", "duration_s", "bpm", "key", "file", "url")


def playlist_csv(tracks: Sequence, *, url_of, extra: dict[int, dict] | None = None) -> str:
    """A CSV (header + one row per track, in order) for spreadsheets and store back-ends.

    ``extra`` maps a track id to more columns it has (``bpm``, ``key``); missing ones are empty.
    Cells that a spreadsheet would run as a formula (leading ``= + - @``) get a leading
    apostrophe, so an exported title cannot execute anything when the file is opened.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for pos, t in enumerate(tracks, 1):
        x = (extra or {}).get(t.id, {})
        row = [pos, t.id, display_title(t.title, t.path), t.artist or "", t.album or "", t.year or "",
               round(t.duration_s, 3) if t.duration_s else "", x.get("bpm", "") or "", x.get("key", "") or "",
               Path(t.path).name, url_of(t)]
        w.writerow([_safe_cell(v) for v in row])
    return buf.getvalue()


def _safe_cell(v) -> object:
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v


def ascii_filename(name: str) -> str:
    """A ``Content-Disposition`` fallback name: ASCII letters, digits and ``._- `` only."""
    keep = "".join(c if (c.isascii() and (c.isalnum() or c in "._- ")) else "_" for c in name)
    return keep.strip() or "download"


def unique_ids(ids: Iterable[int]) -> list[int]:
    """Ids in first-seen order without repeats."""
    seen: set[int] = set()
    return [i for i in (int(x) for x in ids) if not (i in seen or seen.add(i))]
