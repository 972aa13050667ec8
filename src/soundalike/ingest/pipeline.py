"""Ingest: scan folders, analyze new or changed audio files in worker processes, commit.

Every file's rows (track row, file tags, embedding and model tags together) are written
in a savepoint of their own, and the files that finished while the previous ones were
committed are committed together (group commit, :class:`GroupCommitter`: one WAL flush
for many files; one file waiting is committed at once).  A file counts as done only
once its transaction committed, so killing ingest at any moment -- SIGKILL included --
loses at most the group being committed and nothing committed before, and running it
again skips what is done, duplicates nothing and finishes the rest.  A file that cannot
be decoded, or whose rows the database refuses, is recorded in ``ingest_errors`` with
its reason and never stops the batch.  Tracks whose files
disappeared from a scanned folder are marked ``missing``, not deleted.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from soundalike.audio.attributes import ATTRIBUTES_VERSION
from soundalike.audio.io import is_audio_path
from soundalike.catalog.store import Catalog, Tag
from soundalike.errors import (AudioDecodeError, CatalogBusyError, CatalogError, SoundalikeError,
                               WorkerStartError)
from soundalike.models.adapt import segment_spaces

#: How many of an analyzer's labels become model tags on the track.
DEFAULT_TOP_TAGS = 5
#: Labels below this probability are not stored as tags even if in the top N.
MIN_TAG_CONFIDENCE = 0.05
#: A single-label (softmax) model names one label per track: its top one.  Another label
#: is stored only above this probability -- which a softmax can give at most one label,
#: the top one, so in effect never: the other labels of a single-label task are by
#: construction wrong for the track (a cello note is not also a flute at 0.05).
SINGLE_LABEL_OTHERS_MIN = 0.5


def model_tags(predictions: dict[str, float], *, top_tags: int, single_label: bool) -> list[tuple[str, float]]:
    """The ``(label, probability)`` pairs stored as model tags, best first.

    Multi-label taggers: the ``top_tags`` best labels at or above ``MIN_TAG_CONFIDENCE``.
    Single-label classifiers: the top label, whatever its probability, plus any other at
    or above ``SINGLE_LABEL_OTHERS_MIN``.
    """
    ranked = sorted(predictions.items(), key=lambda kv: kv[1], reverse=True)
    if single_label:
        return ranked[:1] + [(lab, p) for lab, p in ranked[1:top_tags] if p >= SINGLE_LABEL_OTHERS_MIN]
    return [(lab, p) for lab, p in ranked[:top_tags] if p >= MIN_TAG_CONFIDENCE]

Event = dict[str, Any]


@dataclass
class IngestSummary:
    """What one ingest run did."""

    ingested: int = 0
    unchanged: int = 0
    failed: int = 0
    known_failures: int = 0
    missing: int = 0
    scanned: int = 0
    elapsed_s: float = 0.0
    model_id: str = ""
    model_name: str = ""
    analysis: str = ""
    audio_s: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# --------------------------------------------------------------------------- scanning


@dataclass
class ScanResult:
    """What :func:`scan_folders` found: audio files, and entries that cannot be ingested.

    ``problems`` are ``(path, reason, size, mtime)``: a symlink loop, a broken symlink, a
    symlink leading out of the scanned folders, a folder that cannot be read.  ``size`` and
    ``mtime`` are the entry's own (``lstat``), so an unchanged problem is not retried.
    """

    files: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str, int | None, float | None]] = field(default_factory=list)


def _lstat(p: Path) -> tuple[int | None, float | None]:
    try:
        st = os.lstat(p)
        return st.st_size, st.st_mtime
    except OSError:
        return None, None


def _inside(real: str, roots: list[str]) -> bool:
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def scan_folders(paths: Iterable[str | Path]) -> ScanResult:
    """Audio files under ``paths`` and the entries that cannot be ingested, without aborting.

    Folders are scanned recursively (hidden entries skipped, symlinked folders not
    entered).  A given folder is taken at its real location; below it every file keeps
    the name it has in the folder: a symlinked file is catalogued under the link's path
    (deleting the link marks the track missing), followed only when it leads to a file
    inside the scanned folders.  Two names for one file give one track (the real name
    wins).  A symlink loop, a broken symlink, a link out of the folders or an unreadable
    sub-folder is one entry of ``problems``, never an exception.

    Raises
    ------
    CatalogError
        A given path that does not exist at all.
    """
    result = ScanResult()
    given = []
    for p in paths:
        p = Path(p).expanduser()
        if not os.path.lexists(p):
            raise CatalogError(f"{p}: no such file or directory")
        given.append(Path(os.path.abspath(p)))
    roots = [os.path.realpath(p) for p in given if p.is_dir()]
    candidates: dict[str, list[Path]] = {}  # real path -> names found for it

    def consider(path: Path, *, explicit: bool) -> None:
        if not path.is_symlink():
            candidates.setdefault(str(path), []).append(path)
            return
        try:
            real = os.path.realpath(path, strict=True)
        except OSError as exc:  # ELOOP, ENOENT, EACCES on the way
            size, mtime = _lstat(path)
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            if isinstance(exc, FileNotFoundError) and not _is_loop(path):
                reason = f"broken symlink: points to {target}, which does not exist"
            elif _is_loop(path):
                reason = f"symlink loop: {path.name} -> {target} never reaches a file"
            else:
                reason = f"symlink cannot be followed ({(exc.strerror or str(exc)).lower()})"
            result.problems.append((path, reason, size, mtime))
            return
        if os.path.isdir(real):
            return  # a link to a folder: folders are entered only as themselves
        if not explicit and not _inside(real, roots):
            size, mtime = _lstat(path)
            result.problems.append((path, f"symlink leads outside the scanned folders (to {real}): not followed",
                                    size, mtime))
            return
        candidates.setdefault(real, []).append(path)

    for p in given:
        if not p.is_dir():
            consider(Path(os.path.realpath(p.parent)) / p.name, explicit=True)
            continue
        root = Path(os.path.realpath(p))

        def unreadable(exc: OSError) -> None:
            where = Path(exc.filename) if exc.filename else root
            from soundalike.audio.io import os_error_reason

            why = os_error_reason(exc).replace("the file", "this folder").replace(", not an audio file", "")
            result.problems.append((where, f"folder skipped: {why}", *_lstat(where)))

        for top, dirs, files in os.walk(root, followlinks=False, onerror=unreadable):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and is_audio_path(name):
                    consider(Path(top) / name, explicit=False)
    for real, names in candidates.items():
        result.files.append(Path(real) if Path(real) in names else min(names))
    result.files.sort()
    seen: set[Path] = set()
    result.problems = [x for x in result.problems if not (x[0] in seen or seen.add(x[0]))]
    return result


def _is_loop(path: Path) -> bool:
    """Whether following ``path`` runs in a circle (ELOOP) rather than into nothing."""
    import errno

    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def scan(paths: Iterable[str | Path]) -> list[Path]:
    """Audio files under ``paths`` (files are taken as given), absolute, sorted, unique.

    See :func:`scan_folders` (this drops its ``problems``).

    Raises
    ------
    CatalogError
        A path that does not exist.
    """
    return scan_folders(paths).files


def content_hash(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 of the file's bytes (hex)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- file tags


def read_file_tags(path: str | Path) -> dict[str, Any]:
    """Title, artist, album, genre and year from the file's own tags (mutagen); {} if none."""
    try:
        import mutagen

        f = mutagen.File(str(path), easy=True)
    except Exception:  # noqa: BLE001 - tags are optional; a broken tag block must not fail ingest
        return {}
    if f is None or not getattr(f, "tags", None):
        return {}
    out: dict[str, Any] = {}
    for key in ("title", "artist", "album", "genre"):
        try:
            vals = f.tags.get(key)
        except Exception:  # noqa: BLE001
            vals = None
        if vals:
            val = str(vals[0] if isinstance(vals, list) else vals).strip()
            if val:
                out[key] = val
    if any("\ufffd" in v for v in out.values() if isinstance(v, str)):
        # a Vorbis comment must be UTF-8; some writers put Latin-1 there ("Apn\xe9e"), which
        # mutagen reads as U+FFFD: decode those comments again from their own bytes
        again = _vorbis_comments_again(path, f)
        for key, val in list(out.items()):
            if isinstance(val, str) and "\ufffd" in val and again.get(key):
                out[key] = again[key][0].strip() or val
    try:
        date = f.tags.get("date") or f.tags.get("year")
    except Exception:  # noqa: BLE001
        date = None
    if date:
        s = str(date[0] if isinstance(date, list) else date)
        if len(s) >= 4 and s[:4].isdigit():
            out["year"] = int(s[:4])
    return out


def _legacy_text(raw: bytes) -> str:
    """Bytes that should have been UTF-8: as UTF-8 if they are, else as Windows-1252 (the
    superset of Latin-1 that Windows tag writers use), else as Latin-1 (never fails)."""
    for enc in ("utf-8", "cp1252", "latin-1"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")  # unreachable: every byte is Latin-1


def _vorbis_comment_block(path: str | Path, f) -> bytes | None:
    """The raw Vorbis comment block of an Ogg Vorbis / Ogg Opus / FLAC file read by
    mutagen as ``f`` (None for any other kind, or when it cannot be found)."""
    from mutagen.flac import FLAC
    from mutagen.ogg import OggPage
    from mutagen.oggopus import OggOpus
    from mutagen.oggvorbis import OggVorbis

    with open(path, "rb") as fh:
        if isinstance(f, FLAC):
            head = fh.read(10)
            if head[:3] == b"ID3":  # an ID3v2 tag before the stream (syncsafe size)
                size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
                fh.seek(10 + size + (10 if head[5] & 0x10 else 0))
            else:
                fh.seek(0)
            if fh.read(4) != b"fLaC":
                return None
            last = False
            while not last:
                h = fh.read(4)
                if len(h) < 4:
                    return None
                last, kind, size = bool(h[0] & 0x80), h[0] & 0x7F, int.from_bytes(h[1:], "big")
                if kind == 4:  # VORBIS_COMMENT
                    return fh.read(size)
                fh.seek(size, 1)
            return None
        prefix = b"\x03vorbis" if isinstance(f, OggVorbis) else b"OpusTags" if isinstance(f, OggOpus) else None
        if prefix is None:
            return None
        pages = []
        for _ in range(100_000):  # the comment header is the second packet: a few pages in
            page = OggPage(fh)
            if page.serial != f.info.serial:
                continue
            pages.append(page)
            packets = OggPage.to_packets(pages)
            for i, pk in enumerate(packets):
                if pk.startswith(prefix) and (i < len(packets) - 1 or page.complete):
                    return pk[len(prefix):]
    return None


def _vorbis_comments_again(path: str | Path, f) -> dict[str, list[str]]:
    """A file's Vorbis comments (lower-cased keys) decoded from their bytes with
    :func:`_legacy_text`; {} when the file has none or they cannot be read."""
    try:
        raw = _vorbis_comment_block(path, f)
    except Exception:  # noqa: BLE001 - a second try at optional tags; the first read stands
        return {}
    out: dict[str, list[str]] = {}
    if raw is None or len(raw) < 8:
        return out
    # the block read here, not by mutagen (which would replace the bytes again, and stops at
    # a comment without '=' -- samplitude writes one): u32 vendor length, vendor, u32
    # count, then per comment a u32 length and KEY=value bytes
    at = 4 + int.from_bytes(raw[:4], "little")
    count = int.from_bytes(raw[at:at + 4], "little")
    at += 4
    for _ in range(count):
        if at + 4 > len(raw):
            break
        n = int.from_bytes(raw[at:at + 4], "little")
        comment, at = raw[at + 4:at + 4 + n], at + 4 + n
        key, eq, value = comment.partition(b"=")
        if eq and key.isascii():
            out.setdefault(key.decode("ascii").lower(), []).append(_legacy_text(value))
    return out


def file_tags_as_tags(meta: dict[str, Any]) -> list[Tag]:
    """The catalog tags that a file's own metadata implies (source ``file``)."""
    tags = []
    genre = meta.get("genre")
    if genre:
        for g in str(genre).replace(";", "/").split("/"):
            if g.strip():
                tags.append(Tag(g, "genre", "file"))
    if meta.get("artist"):
        tags.append(Tag(meta["artist"], "artist", "file"))
    return tags


# --------------------------------------------------------------------------- worker side

_ANALYZER = None


def _watch_parent(parent: int) -> None:
    # A SIGKILLed parent cannot tell its workers to stop: they notice and leave.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _init_worker(model: str, threads: int, parent: int) -> None:
    global _ANALYZER
    import torch

    torch.set_num_threads(max(1, threads))
    # The analyzer's patch-parallel inference threads (models/pretrained.default_threads) are
    # this worker's share of the CPUs, as on Ray: otherwise each of N workers runs one per
    # CPU and N workers oversubscribe the machine N times.
    os.environ.setdefault("SOUNDALIKE_THREADS", str(max(1, threads)))
    # Decoders (mpg123 inside libsndfile) print warnings straight to fd 2; in workers every
    # failure already comes back as data with its reason, so silence C-level chatter.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    from soundalike.models.zoo import load_analyzer

    _ANALYZER = load_analyzer(model)


#: Files longer than this (seconds, from the header) are analyzed block by block ...
LONG_FILE_S = 600.0
#: ... in blocks of this many seconds, so an hour-long file never sits in memory whole.
BLOCK_S = 300.0


def analyze_in_blocks(path: str, analyzer, *, block_s: float | None = None
                      ) -> tuple[np.ndarray, dict[str, float], float]:
    """Analyze a long file in bounded memory: ``block_s`` blocks, duration-weighted means.

    Returns ``(embedding float32 (dim,), predictions, decoded duration in s)``.  The
    track embedding and label probabilities are the means over blocks weighted by their
    length (for patch-mean models this equals the whole-file mean up to block edges).
    """
    from soundalike.audio.io import MIN_DURATION_S, stream
    from soundalike.errors import AudioDecodeError

    sr, blocks = stream(path, sr=analyzer.sample_rate)
    size = int((block_s or BLOCK_S) * sr)
    emb_sum: np.ndarray | None = None
    pred_sum: dict[str, float] = {}
    total = 0
    decoded = 0  # every sample, the slivers that are not analyzed included
    pending: list[np.ndarray] = []
    n_pending = 0

    def flush(final: bool) -> None:
        nonlocal emb_sum, total, pending, n_pending
        y = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        pending, n_pending = [], 0
        if len(y) < MIN_DURATION_S * sr or (final and total and len(y) < 0.25 * size):
            return  # a sliver at the end adds nothing but noise
        a = analyzer.analyze(y, sr)
        w = float(len(y))
        emb_sum = a.embedding.astype(np.float64) * w if emb_sum is None else emb_sum + a.embedding * w
        for label, p in a.predictions.items():
            pred_sum[label] = pred_sum.get(label, 0.0) + float(p) * w
        total += len(y)

    for block in blocks:
        decoded += len(block)
        pending.append(block)
        n_pending += len(block)
        if n_pending >= size:
            flush(final=False)
    flush(final=True)
    if emb_sum is None or total == 0:
        raise AudioDecodeError(path, f"too short: no block of at least {MIN_DURATION_S} s decoded")
    return ((emb_sum / total).astype(np.float32), {k: v / total for k, v in pred_sum.items()},
            decoded / sr)


def analyze_file(path: str, known_hash: str | None, need_analysis: bool,
                 analyzer=None, *, analysis: str | None = None, peaks: bool = False) -> dict[str, Any]:
    """Hash, read tags, decode and analyze one file.  Never raises: errors come back as data.

    ``analysis`` is the analysis budget (``"full"`` or ``"spread:N"``, default
    :data:`soundalike.ingest.plan.DEFAULT_ANALYSIS`); the result says which one was made.

    A spread analysis decodes only what it analyzes: its patches and the attribute
    excerpts, each read by seeking (:func:`seek_pass`), placed by the header's length once
    :func:`soundalike.audio.io.length_checked` found the data ending there.  ``peaks=True``
    (``ingest --peaks``) also wants the waveform's peaks, which need every sample: the
    file is then decoded whole once (:func:`one_pass`), as is a file whose header's length
    cannot be trusted.  A full analysis decodes the whole file anyway and keeps the peaks
    it gets from that decode; otherwise the result's ``peaks`` is None and the web page
    computes them when the track is first shown (``GET /api/tracks/{id}/peaks``).
    """
    from soundalike.audio.io import info
    from soundalike.ingest.peaks import track_peaks
    from soundalike.ingest.plan import AnalysisPlan, planned_patches, track_segments

    analyzer = analyzer or _ANALYZER
    segments = None
    try:
        plan = AnalysisPlan.parse(analysis)
        st = os.stat(path)
        digest = content_hash(path)
        if digest == known_hash and not need_analysis:
            return {"kind": "touch", "path": path, "size": st.st_size, "mtime": st.st_mtime,
                    "inode": st.st_ino, "device": st.st_dev}
        meta = info(path)
        picks = planned_patches(analyzer, plan, frames=meta.frames, source_sr=meta.sr)
        attributes = None
        waveform = None
        if picks is None and meta.duration_s > LONG_FILE_S:
            embedding, predictions, decoded_s = analyze_in_blocks(path, analyzer)
            setting = "full"
            duration_s = decoded_s
            if peaks:
                waveform = track_peaks(path, decoded=None)  # its own streamed pass: bounded memory
        else:
            one = None
            if picks is not None and not peaks:
                # only what is analyzed is decoded, by seeking: None when the header's
                # length cannot place the seeks (the whole decode below learns it)
                one = seek_pass(path, analyzer=analyzer, plan=plan)
            if one is None:
                # One decode of the whole file: the waveform's peaks need every sample, and the
                # analysis patches and the attribute excerpts are cut from the same pass
                # instead of seeking for each (see one_pass()).
                one = one_pass(path, analyzer=analyzer, plan=plan, frames=meta.frames, source_sr=meta.sr)
            waveform, attributes = one.peaks, one.attributes
            # what was decoded (or a header length checked at its end), not the header's
            # guess (MP3 without a Xing header, cover art, a streamed FLAC without a
            # sample count: all off, some by 10^14)
            duration_s = one.frames / one.source_sr
            if one.analysis is None:
                # The spread positions come from the header's length; a header that lies
                # (a streamed FLAC claiming 10^14 s) sends them past the data, so the
                # track is analyzed whole, streamed block by block, instead.
                embedding, predictions, decoded_s = analyze_in_blocks(path, analyzer)
                setting = "full"
                duration_s = decoded_s
            else:
                embedding, predictions = one.analysis.analysis.embedding, one.analysis.analysis.predictions
                decoded_s, setting = one.analysis.decoded_s, one.analysis.setting
                segments = track_segments(one.analysis, analyzer)  # segment-aware search (search/segments.py)
        if attributes is None:  # a long file, or excerpts the header misplaced: read them by seeking
            attributes = track_attributes(path, predictions, sr=analyzer.sample_rate, decoded_s=duration_s)
        else:
            attributes = attributes(predictions)
        return {
            "kind": "ok", "path": path, "hash": digest, "size": st.st_size, "mtime": st.st_mtime,
            "inode": st.st_ino, "device": st.st_dev,
            "duration_s": duration_s,
            "sr": meta.sr, "channels": meta.channels, "format": meta.format.lower(),
            "tags": read_file_tags(path), "embedding": embedding, "predictions": predictions,
            "segments": segments,
            "attributes": attributes,
            "peaks": waveform,
            "analysis": setting, "decoded_s": decoded_s,
        }
    except SoundalikeError as exc:
        reason = exc.reason if hasattr(exc, "reason") else str(exc)
        return {"kind": "error", "path": path, "reason": reason, "type": type(exc).__name__,
                **_stat_or_none(path)}
    except OSError as exc:  # unreadable, vanished, a directory: say so, not "unexpected ..."
        from soundalike.audio.io import os_error_reason

        return {"kind": "error", "path": path, "reason": os_error_reason(exc), "type": "AudioDecodeError",
                **_stat_or_none(path)}
    except MemoryError:
        return {"kind": "error", "path": path, "reason": "out of memory while decoding",
                "type": "MemoryError", **_stat_or_none(path)}
    except Exception as exc:  # noqa: BLE001 - one bad file never stops a batch; the reason is kept
        return {"kind": "error", "path": path, "reason": f"unexpected {type(exc).__name__}: {exc}",
                "type": type(exc).__name__, **_stat_or_none(path)}


#: A header whose length is off from the decoded one by more than this (seconds) placed the
#: attribute excerpts elsewhere than the decoded length would: they are read again by seeking.
HEADER_SLACK_S = 0.5


@dataclass
class OnePassResult:
    """What :func:`one_pass` made of one decode of a file.

    Attributes
    ----------
    analysis : the analysis (a :class:`~soundalike.ingest.plan.TrackAnalysis`), or ``None``
        when the header's length sent every spread patch past the data
    peaks : the waveform's :class:`~soundalike.audio.peaks.Peaks`
    attributes : ``attributes(predictions) -> dict`` (the catalog's attribute row, once the
        tagger's predictions are known), or ``None``: the header misplaced the excerpts
    frames, source_sr : source frames decoded and the file's rate
    """

    analysis: Any
    peaks: Any
    attributes: Callable[[dict[str, float]], dict[str, Any]] | None
    frames: int
    source_sr: int


def seek_pass(path: str, *, analyzer, plan) -> OnePassResult | None:
    """A spread analysis that decodes only what it analyzes: patches and attribute excerpts.

    Each excerpt is read by seeking (:func:`soundalike.audio.io.checked_excerpts`, one call
    and one open file for the patches and the three attribute excerpts), placed by the
    header's length, which the same call confirms by decoding the last second before the
    stated end (:func:`soundalike.audio.io.length_checked`).  The samples are the full decode's own (see ``load_excerpts``),
    so the analysis and the attributes are those :func:`one_pass` cuts from a whole decode;
    no peaks (they need every sample).

    Returns
    -------
    OnePassResult or None
        ``peaks`` None, ``frames`` the header's (checked) length; ``None`` when the header's
        length cannot be trusted, or the plan runs every patch anyway (no seeking then).

    Raises
    ------
    AudioDecodeError
        The file cannot be decoded where its excerpts are.
    """
    from soundalike.audio import attributes as A
    from soundalike.audio.io import MIN_DURATION_S, checked_excerpts
    from soundalike.ingest.plan import Excerpt, TrackAnalysis, analyze_excerpts, patch_grid, planned_patches

    grid = patch_grid(analyzer)
    sr = grid.sr
    picks: list[int] = []

    def place(meta):
        # the patches and the attribute excerpts, placed by the header's length
        got = planned_patches(analyzer, plan, frames=meta.frames, source_sr=meta.sr)
        if got is None:
            return None
        picks.extend(got)
        slices = A.excerpt_slices(int(meta.frames * sr // meta.sr), sr)
        return ([grid.start(k) for k in picks] + [x.start for x in slices],
                [grid.length] * len(picks) + [x.stop - x.start for x in slices])

    # one open file: the header's length checked at its end, the excerpts read by seeking
    read = checked_excerpts(path, sr=sr, place=place)
    if read is None:
        return None
    meta, ys = read
    kept = [(k, y) for k, y in zip(picks, ys) if len(y) >= MIN_DURATION_S * sr]
    if not kept:
        return None
    excerpts = [Excerpt(grid.start(k) / sr, y, sr) for k, y in kept]
    ta = TrackAnalysis(analyze_excerpts(analyzer, [e.y for e in excerpts], sr), str(plan),
                       float(sum(e.duration_s for e in excerpts)), excerpts)
    parts = ys[len(picks):]
    total = meta.frames / meta.sr
    return OnePassResult(ta, None, lambda preds: _attributes_of_excerpts(parts, preds, sr=sr, total_s=total),
                         meta.frames, meta.sr)


def one_pass(path: str, *, analyzer, plan, frames: int, source_sr: int) -> OnePassResult:
    """Decode a file once for everything ingest needs: peaks, analysis, attributes.

    The peaks need every sample, so the file is decoded whole at its own rate
    (:func:`soundalike.audio.io.read_once`); a spread analysis's patches (the same samples
    :func:`~soundalike.ingest.plan.analyze_track` would read by seeking, placed by the
    header's length) and the attribute excerpts
    (:func:`soundalike.audio.attributes.excerpt_slices`) are cut from that pass and
    resampled alone, so the file is never decoded twice.  A full analysis keeps the whole
    file at the analyzer's rate and cuts the attribute excerpts from it, so a track's
    attributes are the same whatever its analysis budget.

    Raises
    ------
    AudioDecodeError
        The file cannot be decoded, or holds no samples.
    """
    from soundalike.audio import attributes as A
    from soundalike.audio.io import MIN_DURATION_S, read_once
    from soundalike.audio.peaks import PeaksAccumulator
    from soundalike.errors import AudioDecodeError
    from soundalike.ingest.plan import Excerpt, TrackAnalysis, analyze_excerpts, patch_grid, planned_patches

    grid = patch_grid(analyzer)
    sr = grid.sr
    picks = planned_patches(analyzer, plan, frames=frames, source_sr=source_sr)
    acc = PeaksAccumulator()
    n_header = int(frames * sr // source_sr) if source_sr else 0
    starts: list[int] = []
    lengths: list[int] = []
    if picks is not None:
        starts += [grid.start(k) for k in picks]
        lengths += [grid.length] * len(picks)
    # the attribute excerpts, placed by the header's length (checked against the decode below)
    slices = A.excerpt_slices(n_header, sr) if picks is not None and n_header > 0 else []
    starts += [s.start for s in slices]
    lengths += [s.stop - s.start for s in slices]
    one = read_once(path, sr=sr, starts=starts, lengths=lengths, on_block=acc.add, on_restart=acc.reset,
                    whole=picks is None)
    peaks = acc.result(sr=one.sr)
    if peaks.n_columns == 0:
        raise AudioDecodeError(path, "no samples decoded")
    if picks is None:
        y = one.y
        if len(y) < MIN_DURATION_S * sr:
            raise AudioDecodeError(path, f"too short: {len(y) / sr:.3f} s of audio "
                                         f"(the minimum is {MIN_DURATION_S} s)")
        ta = TrackAnalysis(analyzer.analyze(y, sr), "full", len(y) / sr, [Excerpt(0.0, y, sr)])
        # the same excerpts a spread analysis hands on, cut from the whole signal, so a
        # track's attributes do not depend on its analysis budget
        parts = [y[x] for x in A.excerpt_slices(len(y), sr)]
        return OnePassResult(ta, peaks, lambda preds: _attributes_of_excerpts(parts, preds, sr=sr,
                                                                              total_s=one.duration_s),
                             one.frames, one.sr)
    ys = one.excerpts[: len(picks)]
    kept = [(k, y) for k, y in zip(picks, ys) if len(y) >= MIN_DURATION_S * sr]
    ta = None
    if kept:
        excerpts = [Excerpt(grid.start(k) / sr, y, sr) for k, y in kept]
        a = analyze_excerpts(analyzer, [e.y for e in excerpts], sr)
        ta = TrackAnalysis(a, str(plan), float(sum(e.duration_s for e in excerpts)), excerpts)
    attrs = None
    parts = one.excerpts[len(picks):]
    if parts and abs(one.frames - frames) <= HEADER_SLACK_S * one.sr:
        total = one.frames / one.sr
        attrs = lambda preds: _attributes_of_excerpts(parts, preds, sr=sr, total_s=total)  # noqa: E731
    return OnePassResult(ta, peaks, attrs, one.frames, one.sr)


def _attributes_of_excerpts(parts: list[np.ndarray], predictions: dict[str, float], *, sr: int,
                            total_s: float) -> dict[str, Any]:
    """The attribute row from the excerpts :func:`audio.attributes.excerpt_slices` placed
    (tempo and key read each excerpt alone; loudness covers the excerpts only)."""
    from soundalike.audio import attributes as A
    from soundalike.models.vocabulary import energy_evidence, vocals_probability

    y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    slices, at = [], 0
    for p in parts:
        slices.append(slice(at, at + len(p)))
        at += len(p)
    ev = energy_evidence(predictions)
    t = A.estimate_tempo(y=y, sr=sr, slices=slices)
    k = A.estimate_key(y=y, sr=sr, slices=slices)
    ld = A.loudness(y=y, sr=sr)
    return A.Attributes(duration_s=round(total_s, 3), tempo=t, key=k, loudness=ld,
                        vocals=vocals_probability(predictions),
                        energy=A.energy_score(model_evidence=ev, loudness_lufs=ld.integrated_lufs,
                                              onset_rate=t.confidence if t else None),
                        seconds_read=round(len(y) / sr, 3)).to_dict()


def track_attributes(path: str, predictions: dict[str, float], *, sr: int, y: np.ndarray | None = None,
                     decoded_s: float | None = None) -> dict[str, Any]:
    """Musical attributes of one file as the catalog stores them (``Attributes.to_dict``).

    From the samples ingest already decoded (``y``), or -- for files analyzed block by block
    -- from the attribute excerpts read by seeking (loudness then covers those excerpts only);
    vocals and energy from the tagger's ``predictions`` (``models/vocabulary.py``).
    """
    from soundalike.audio import attributes as A
    from soundalike.audio.io import load
    from soundalike.models.vocabulary import energy_evidence, vocals_probability

    kw = {"vocals": vocals_probability(predictions), "energy_evidence": energy_evidence(predictions)}
    if y is None:
        total = decoded_s or 0.0
        parts = [load(path, sr=sr, offset_s=s.start / sr, duration_s=(s.stop - s.start) / sr).y
                 for s in A.excerpt_slices(int(total * sr), sr)]
        return _attributes_of_excerpts(parts, predictions, sr=sr, total_s=total)
    return A.compute_attributes(y=y, sr=sr, **kw).to_dict()


def _stat_or_none(path: str) -> dict[str, Any]:
    try:
        st = os.stat(path)
        return {"size": st.st_size, "mtime": st.st_mtime}
    except OSError:
        return {"size": None, "mtime": None}


# --------------------------------------------------------------------------- parent side


def _commit(cat: Catalog, res: dict[str, Any], *, model_id: str, label_category: str,
            top_tags: int, single_label: bool = False, adaptations: list | None = None,
            label_categories: dict[str, str] | None = None) -> None:
    if res["kind"] == "touch":
        t = cat.track_by_path(res["path"])
        if t is not None:
            cat.touch_track(t.id, size=res["size"], mtime=res["mtime"], inode=res.get("inode"),
                            device=res.get("device"))
        return
    if res["kind"] == "error":
        cat.record_error(path=res["path"], reason=res["reason"], error_type=res["type"],
                         size=res.get("size"), mtime=res.get("mtime"))
        return
    tags = res["tags"]
    preds = res["predictions"]
    top = model_tags(preds, top_tags=top_tags, single_label=single_label)
    cats = label_categories or {}  # models/vocabulary.py: each label's real category
    analysis = res.get("analysis", "full")
    # one Catalog call, one transaction: on PostgreSQL one round trip per file
    cat.put_ingested(
        track=dict(path=res["path"], content_hash=res["hash"], size=res["size"], mtime=res["mtime"],
                   duration_s=res["duration_s"], sr=res["sr"], channels=res["channels"], format=res["format"],
                   title=tags.get("title"), artist=tags.get("artist"), album=tags.get("album"),
                   genre=tags.get("genre"), year=tags.get("year"), inode=res.get("inode"),
                   device=res.get("device")),
        file_tags=file_tags_as_tags(tags), model_id=model_id,
        # the catalog's adaptations of this model follow it
        embeddings=[(model_id, res["embedding"]),
                    *((a.model_id, a.apply(res["embedding"])) for a in adaptations or ())],
        predictions=preds, analysis=analysis,
        model_tags=[Tag(label, cats.get(label, label_category), "model", float(p), model_id) for label, p in top],
        peaks=res.get("peaks"), attributes=res.get("attributes"), attributes_version=ATTRIBUTES_VERSION,
        segments=segment_spaces(model_id=model_id, segments=res.get("segments"), adaptations=adaptations),
        want_id=False)


#: Group commit: one transaction holds at most this many finished files ...
GROUP_FILES = 32
#: ... and about this many seconds of commit work (the bound shrinks when files are slow to write)
GROUP_SECONDS = 0.2
#: How often a group is committed again when another writer was in the way.
BUSY_RETRIES = 5


def commit_group(cat: Catalog, results: Sequence[dict[str, Any]], **commit: Any) -> list[tuple[str, str] | None]:
    """Commit finished files in one transaction, each in its own savepoint.

    The server's WAL flush (PostgreSQL's ``fdatasync`` at every ``COMMIT`` with
    ``synchronous_commit=on``) is paid once per group instead of once per file.  A file
    whose write the database refuses is rolled back alone (its savepoint) and recorded
    as that file's error; the others are committed.  Nothing of the group is durable
    before the one ``COMMIT``: a process killed before it loses the group, which the next
    ingest does again (none of it is marked done), and nothing committed earlier.

    Parameters
    ----------
    cat : the open catalog (outside a transaction)
    results : :func:`analyze_file` results (``kind`` ``ok``, ``touch`` or ``error``)
    commit : ``_commit``'s keywords (``model_id``, ``label_category``, ``top_tags``, ...)

    Returns
    -------
    list, one per result: None when it was written as asked, or ``(error_type, reason)``
    when its write failed and the failure was recorded in ``ingest_errors`` instead.

    Raises
    ------
    CatalogBusyError
        Another writer was in the way :data:`BUSY_RETRIES` times (the group is rolled
        back whole each time and nothing of it was written).
    """
    for attempt in range(BUSY_RETRIES):
        outcomes: list[tuple[str, str] | None] = []
        try:
            if cat.answers_later and len(results) > 1:
                # A server answers at the end: send the whole group without waiting (one
                # round trip for the group, not one per file).  Nearly always nothing is
                # refused; when something is, the group is rolled back whole and done
                # again below, file by file in savepoints, each answer awaited, so the
                # refused file is found and alone rolled back.
                try:
                    with cat.transaction():
                        for res in results:
                            _commit(cat, res, **commit)
                    return [None] * len(results)
                except CatalogBusyError:
                    raise
                except Exception:  # noqa: BLE001 - which file it was is found below
                    pass
            with cat.transaction():
                for res in results:
                    try:
                        with cat.savepoint():
                            _commit(cat, res, **commit)
                        outcomes.append(None)
                    except CatalogBusyError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - one file's refused write must not stop the group
                        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                        why = ("CatalogWriteError", f"the catalog refused this file's rows: {first}"[:500])
                        with cat.savepoint():
                            cat.record_error(path=res["path"], reason=why[1], error_type=why[0],
                                             size=res.get("size"), mtime=res.get("mtime"))
                        outcomes.append(why)
            return outcomes
        except CatalogBusyError:
            # another ingest held a row a file needs (a deadlock the database broke, or a lock
            # timeout): the transaction rolled back whole, so commit the group again
            if attempt == BUSY_RETRIES - 1:
                raise
            time.sleep(0.05 * 2 ** attempt)
    raise AssertionError("unreachable")


class GroupCommitter:
    """The committing side of ingest: takes the finished files waiting and commits them in groups.

    Called with every result waiting in the runner's queue; commits them in groups of at
    most :data:`GROUP_FILES` and about :data:`GROUP_SECONDS` of commit work (measured as it
    goes), then calls ``on_done(result, failure)`` for each, in order, once its group
    committed (``failure`` as :func:`commit_group` returns it).  One result waiting is
    committed at once: a slow trickle of files waits for nothing.
    """

    def __init__(self, cat: Catalog, *, on_done: Callable[[dict[str, Any], tuple[str, str] | None], None],
                 max_files: int = GROUP_FILES, max_seconds: float = GROUP_SECONDS, **commit: Any):
        self.cat, self.on_done, self.commit = cat, on_done, commit
        self.max_files, self.max_seconds = max(1, int(max_files)), float(max_seconds)
        self.per_file_s = 0.0  # running mean of commit seconds per file
        self.groups = 0

    def bound(self) -> int:
        """Files in the next group: :data:`GROUP_FILES`, fewer when files are slow to commit."""
        if self.per_file_s <= 0.0:
            return self.max_files
        return max(1, min(self.max_files, int(self.max_seconds / self.per_file_s)))

    def __call__(self, results: Sequence[dict[str, Any]]) -> None:
        i = 0
        while i < len(results):
            group = results[i : i + self.bound()]
            i += len(group)
            t0 = time.perf_counter()
            outcomes = commit_group(self.cat, group, **self.commit)
            per = (time.perf_counter() - t0) / len(group)
            self.per_file_s = per if self.groups == 0 else 0.8 * self.per_file_s + 0.2 * per
            self.groups += 1
            for res, failure in zip(group, outcomes, strict=True):
                self.on_done(res, failure)


def ingest(
    paths: Iterable[str | Path],
    *,
    catalog: str | Path | Catalog,
    model: str | None = None,
    workers: int | None = None,
    top_tags: int = DEFAULT_TOP_TAGS,
    retry_failed: bool = False,
    mark_missing: bool = True,
    analysis: str | None = None,
    precision: str | None = None,
    ray: str | None = None,
    ray_cpus_per_worker: int = 1,
    peaks: bool = False,
    on_event: Callable[[Event], None] | None = None,
) -> IngestSummary:
    """Bring the catalog up to date with the audio files under ``paths``.

    Parameters
    ----------
    paths : folders (scanned recursively) and/or files
    catalog : catalog file path or an open :class:`Catalog`
    model : analyzer name or trained run folder (default: ``zoo.DEFAULT_ANALYZER``, or the
        precision of it the catalog already holds: :func:`continuing_model`)
    workers : worker processes (default: CPU count; 1 analyzes in this process)
    top_tags : how many top predicted labels to store as model tags per track
    retry_failed : retry files that failed before even if they did not change
    mark_missing : mark catalog tracks under ``paths`` whose files are gone as missing
    analysis : the analysis budget, ``"full"`` or ``"spread:N"`` (default: the analyzer's,
        :func:`soundalike.ingest.plan.default_analysis`); a track whose stored analysis
        covers less (``spread:4`` when ``full`` is asked) is analyzed again
    precision : a pretrained model's arithmetic, ``"fp32"``, ``"bf16"``, ``"int8"``,
        ``"mixed"`` or ``"mixed-ef"`` (another model id: see :mod:`soundalike.models.pretrained`);
        None: the model's own (fp32 for a named model, ``mixed-ef`` for the default analyzer)
    ray : analyze on a Ray cluster instead of local processes: ``"auto"``, ``"HOST:PORT"``
        or ``"local"`` (see :mod:`soundalike.ingest.ray_runner`); committing stays here
    ray_cpus_per_worker : CPUs per Ray worker (``workers`` caps the number of Ray workers)
    peaks : also store every file's waveform peaks now (each file decoded whole once, as
        ingest did before); by default only a full analysis keeps them (it decodes every
        sample anyway) and the web page computes the others on first view
    on_event : called with ``{"event": "start", "total": n}``, then one
        ``{"event": "file", "path", "status": ingested|unchanged|failed, "reason"?,
        "duration_s"?}`` per file (``duration_s``: seconds of audio in an ingested file)

    Returns
    -------
    IngestSummary
    """
    from soundalike.ingest.plan import AnalysisPlan, default_analysis
    from soundalike.models.zoo import DEFAULT_ANALYZER, load_analyzer, split_precision

    t0 = time.perf_counter()
    if analysis is not None:
        AnalysisPlan.parse(analysis)  # a bad --analysis is an error before any work
    from soundalike.models.musicnn import check_overrides

    check_overrides()  # and so is a mistyped SOUNDALIKE_BF16: no catalog file is made for it
    roots = [Path(p).expanduser() for p in paths]
    found = scan_folders(roots)
    files = found.files
    cat = catalog if isinstance(catalog, Catalog) else Catalog.open(catalog)
    own = not isinstance(catalog, Catalog)
    try:
        if model is None and precision is None:
            model = continuing_model(cat)
        model = model or DEFAULT_ANALYZER
        if precision is not None:
            # one string names the analyzer everywhere, worker processes included; fp32 is
            # the plain name (the default analyzer itself carries a precision)
            base = split_precision(model)[0]
            model = base if precision == "fp32" else f"{base}@{precision}"
        analyzer = load_analyzer(model)
    except BaseException:
        if own:
            cat.close()
        raise
    plan = AnalysisPlan.parse(analysis if analysis is not None else default_analysis(analyzer))
    emit = on_event or (lambda e: None)
    summary = IngestSummary(scanned=len(files) + len(found.problems), model_id=analyzer.model_id,
                            model_name=analyzer.name,
                            analysis=str(plan))
    try:
        cat.register_model(model_id=analyzer.model_id, name=analyzer.name, dim=analyzer.embedding_dim,
                           labels=list(analyzer.labels), label_category=analyzer.label_category)
        states = cat.file_states()
        failed_before = cat.error_states()
        # A stored analysis that looked at less than the plan asks for is made again.
        analyzed = {tid for tid, setting in cat.analysis_settings(analyzer.model_id).items()
                    if AnalysisPlan.parse(setting).covers(plan)}
        from soundalike.models.adapt import Adaptation

        adaptations = [Adaptation.from_bytes(a.data) for a in cat.adaptations(analyzer.model_id)]
        todo: list[tuple[str, str | None, bool]] = []
        emit({"event": "start", "total": len(files) + len(found.problems)})
        for bad, reason, size, mtime in found.problems:  # loops, broken links, unreadable folders
            path = str(bad)
            if path in failed_before and not retry_failed and failed_before[path] == (size, mtime):
                summary.known_failures += 1
                emit({"event": "file", "path": path, "status": "known-failure"})
                continue
            cat.record_error(path=path, reason=reason, error_type="ScanError", size=size, mtime=mtime)
            summary.failed += 1
            summary.errors.append((path, reason))
            emit({"event": "file", "path": path, "status": "failed", "reason": reason})
        for f in files:
            path = str(f)
            try:
                st = f.stat()
            except OSError as exc:
                todo.append((path, None, True))  # the worker records the reason
                continue
            state = states.get(path)
            if state is not None:
                tid, size, mtime, digest, status = state
                has = tid in analyzed
                if size == st.st_size and mtime == st.st_mtime and status == "ok" and has:
                    summary.unchanged += 1
                    emit({"event": "file", "path": path, "status": "unchanged"})
                    continue
                todo.append((path, digest, not has))
                continue
            if path in failed_before and not retry_failed and failed_before[path] == (st.st_size, st.st_mtime):
                summary.known_failures += 1
                emit({"event": "file", "path": path, "status": "known-failure"})
                continue
            todo.append((path, None, True))

        def done(res: dict[str, Any], failure: tuple[str, str] | None) -> None:
            # called once the file's transaction committed: only then does it count as done
            if failure is not None:  # its rows were refused and its error recorded instead
                res = {**res, "kind": "error", "type": failure[0], "reason": failure[1]}
            if res["kind"] == "error":
                summary.failed += 1
                summary.errors.append((res["path"], res["reason"]))
                emit({"event": "file", "path": res["path"], "status": "failed", "reason": res["reason"]})
            elif res["kind"] == "touch":
                summary.unchanged += 1
                emit({"event": "file", "path": res["path"], "status": "unchanged"})
            else:
                summary.ingested += 1
                summary.audio_s += float(res["duration_s"] or 0.0)
                emit({"event": "file", "path": res["path"], "status": "ingested",
                      "duration_s": res["duration_s"]})

        handle = GroupCommitter(cat, on_done=done, model_id=analyzer.model_id,
                                label_category=analyzer.label_category, top_tags=top_tags,
                                single_label=getattr(analyzer, "multi_label", True) is False,
                                adaptations=adaptations,
                                label_categories=getattr(analyzer, "label_categories", None))

        n_workers = workers if workers is not None else (os.cpu_count() or 1)
        n_workers = max(1, min(n_workers, len(todo)))
        if ray is None and n_workers > 1 and (why := _spawn_blocker()) is not None:
            warnings.warn(f"ingest: analysing in this process, not in {n_workers} worker processes: {why}",
                          RuntimeWarning, stacklevel=2)
            n_workers = 1
        if ray is not None:
            if todo:
                from soundalike.ingest.ray_runner import run as run_on_ray

                spec = Path(model).expanduser()
                import functools

                run_on_ray(todo, model=str(spec.resolve()) if spec.exists() else model,
                           analysis=str(plan), handle=handle,
                           analyze_file=functools.partial(analyze_file, peaks=True) if peaks else analyze_file,
                           address=ray,
                           cpus_per_worker=ray_cpus_per_worker, max_workers=workers, on_event=emit)
        elif n_workers <= 1:
            for item in todo:  # one file finished at a time: each is committed at once
                handle([analyze_file(*item, analyzer=analyzer, analysis=str(plan), peaks=peaks)])
        else:
            _run_pool(todo, model=model, workers=n_workers, handle=handle, analysis=str(plan), peaks=peaks)

        if mark_missing:
            present = {str(f) for f in files}
            gone = [tid for path, (tid, *_rest, status) in states.items()
                    if status == "ok" and path not in present and _under(path, roots)]
            summary.missing = cat.mark_missing(gone)
    finally:
        summary.elapsed_s = time.perf_counter() - t0
        if own:
            cat.close()
    return summary


def continuing_model(cat: Catalog) -> str:
    """The analyzer an ingest without ``--model`` or ``--precision`` runs on ``cat``.

    :data:`~soundalike.models.zoo.DEFAULT_ANALYZER`, except in a catalog that already holds
    analyses of another precision of the same model (``musicnn-fusion`` made before the
    default became ``musicnn-fusion@bf16``, or the other way round): that one, so a
    catalog stays in one embedding space and none of its tracks is analyzed again.
    """
    from soundalike.models.zoo import DEFAULT_ANALYZER, split_precision

    family = split_precision(DEFAULT_ANALYZER)[0]
    for m in cat.models():  # most analyses first
        if m.n_tracks and split_precision(m.name)[0] == family:
            return m.name
    return DEFAULT_ANALYZER


def _under(path: str, roots: list[Path]) -> bool:
    p = Path(path)
    for r in roots:
        r = r.resolve()
        if p == r or r in p.parents:
            return True
    return False


def _spawn_blocker() -> str | None:
    """Why spawned worker processes could not start from this program, or ``None``.

    A spawned worker imports the parent's ``__main__`` again; a main that was read from standard
    input (``python -``) has no file to import, and every worker would die as it starts.
    """
    import sys

    main = sys.modules.get("__main__")
    if main is None or getattr(getattr(main, "__spec__", None), "name", None):
        return None  # ``python -m ...`` and the console script import the module by name
    path = getattr(main, "__file__", None)
    if path is None or os.path.isfile(path):
        return None  # an interactive session has no main to import; a script is a file
    return f"the main program ({path}) is not a file that worker processes can import"


def _worker_ready() -> int:
    return os.getpid()


#: What a pool whose workers died before any file reached them says (see :func:`_run_pool`).
WORKERS_DID_NOT_START = (
    "ingest's worker processes died as they started, before any file reached them. Worker "
    "processes import the calling script again, so a script must keep its top level under "
    "`if __name__ == \"__main__\":`; or pass workers=1 to analyse in this process")


def _run_pool(todo: list[tuple[str, str | None, bool]], *, model: str, workers: int,
              handle: Callable[[list[dict[str, Any]]], None], analysis: str | None = None,
              peaks: bool = False) -> None:
    """Analyze ``todo`` in ``workers`` spawned processes, handing results over as they finish.

    ``handle`` gets every result that finished while the previous ones were committed
    (a list: one group commit), one at a time when they come one at a time.

    A worker that dies (a decoder crashing the process) breaks the pool, and which of the files
    in flight killed it is not known.  So in a fresh pool those files are tried again *one at a
    time*: a file that crashes a worker on its own is recorded as an error, and the files that
    were only in flight beside it are analysed as usual.  One poisonous file never stops the
    batch, nor costs another file.  A pool whose workers die before any file reaches them (a
    calling script that spawned workers cannot import) raises :class:`WorkerStartError`.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")  # fork after torch threads start can deadlock
    queue = list(reversed(todo))
    suspects: list[tuple[str, str | None, bool]] = []  # in flight at a crash: each retried alone
    while queue or suspects:
        in_flight: dict[Any, tuple[str, str | None, bool]] = {}
        alone: list[tuple[str, str | None, bool]] = []  # the suspect now in flight by itself
        broken = False
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(model, threads, os.getpid())) as pool:
            def submit() -> None:
                if in_flight and (alone or suspects):
                    return  # a suspect runs by itself, so that a crash names its file
                alone.clear()
                if suspects:
                    alone.append(suspects.pop())
                    in_flight[pool.submit(analyze_file, *alone[0], analysis=analysis, peaks=peaks)] = alone[0]
                    return
                while queue and len(in_flight) < workers * 4:
                    item = queue.pop()
                    in_flight[pool.submit(analyze_file, *item, analysis=analysis, peaks=peaks)] = item

            ready = pool.submit(_worker_ready)  # first in the queue: the first worker up runs it
            submit()
            while in_flight and not broken:
                done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                finished = []  # every file waiting to be committed: one group
                for fut in done:
                    item = in_flight.pop(fut)
                    try:
                        finished.append(fut.result())
                    except BrokenProcessPool:  # the others done beside it may have finished
                        broken = True
                        in_flight[fut] = item
                if finished:
                    if not broken:
                        submit()  # the workers go on while the group commits
                    handle(finished)
                if not broken:
                    submit()
        if broken and not (ready.done() and ready.exception() is None):
            raise WorkerStartError(WORKERS_DID_NOT_START)
        if broken and alone and list(in_flight.values()) == alone:
            path = alone[0][0]
            handle([{"kind": "error", "path": path, "type": "WorkerCrash",
                     "reason": "the decoder crashed the worker process (twice, the second time alone)",
                     **_stat_or_none(path)}])
        elif broken:
            suspects.extend(reversed(list(in_flight.values())))
