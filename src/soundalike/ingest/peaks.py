"""Waveform peaks for catalog tracks: at ingest when asked, on first view, or in bulk.

The peaks (:mod:`soundalike.audio.peaks`) need every sample, and a default ingest decodes
only the excerpts its spread analysis reads, so it stores them only when the analysis
decoded the whole file anyway (a full analysis) or ``ingest --peaks`` asks for them.  The
web page computes a track's missing peaks when it is first shown (``GET
/api/tracks/{id}/peaks``), and :func:`backfill_peaks` (``soundalike catalog peaks``) computes
them for every track that has none -- never computed, or files whose content changed --
committing each track on its own, so an interrupted run keeps what it did and the next
run does the rest.  A file that cannot be decoded is reported and skipped, never fatal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class BackfillResult:
    """What :func:`backfill_peaks` did."""

    computed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def to_dict(self) -> dict:
        return {"computed": self.computed, "failed": [{"path": p, "reason": r} for p, r in self.failed]}


def track_peaks(path: str, *, decoded=None):
    """A file's waveform :class:`~soundalike.audio.peaks.Peaks` for ingest.

    Parameters
    ----------
    path : the audio file
    decoded : the whole file already decoded for the analysis (a
        :class:`~soundalike.audio.io.Waveform`), reused at no decoding cost; ``None``
        (a partial or block-wise analysis) decodes the file once more at its own rate

    Raises
    ------
    AudioDecodeError
    """
    from soundalike.audio.peaks import peaks_from_blocks, peaks_of_file

    if decoded is not None:
        return peaks_from_blocks([decoded.y], sr=decoded.sr)
    return peaks_of_file(path)


def backfill_peaks(catalog, *, on_progress: Callable[[int, int], None] | None = None) -> BackfillResult:
    """Compute and store peaks for every ``ok`` track that has no current ones.

    Parameters
    ----------
    catalog : open :class:`~soundalike.catalog.store.Catalog`
    on_progress : called as ``(done, total)`` after each track

    Returns
    -------
    BackfillResult
        how many tracks got peaks, and the files that could not be decoded (with why).
    """
    from soundalike.audio.peaks import peaks_of_file
    from soundalike.errors import AudioDecodeError

    ids = catalog.ids_without_peaks()
    out = BackfillResult()
    tracks = catalog.get_tracks(ids)
    for n, tid in enumerate(ids, 1):
        t = tracks.get(tid)
        if t is not None:
            try:
                catalog.put_peaks(tid, peaks_of_file(t.path))
                out.computed += 1
            except AudioDecodeError as exc:
                out.failed.append((t.path, exc.reason))
            except OSError as exc:
                out.failed.append((t.path, exc.strerror or str(exc)))
        if on_progress is not None:
            on_progress(n, len(ids))
    return out
