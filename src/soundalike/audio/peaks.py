"""Waveform peaks: a whole track's min/max envelope in a few kB, for drawing its waveform.

The web page draws a track's waveform from peaks stored in the catalog, so it never
decodes audio to draw one.  Peaks are ``n_columns`` (default 1000) pairs of the lowest and
highest sample in each equal slice of the track, quantised to int8 (``-127..127`` for
``-1..1``): 2 kB per track whatever its length.

Peaks need one pass over the whole file (a waveform of 10 spread patches would show 10
islands), so they come from a decode at the file's own rate: resampling to a lower rate
would cost more than it saves (the decoder's work does not depend on the output rate), and
a lossy stream has no cheaper "packet level" amplitude -- a Vorbis or MP3 packet's
amplitude only exists after the inverse MDCT.  The pass keeps one min and one max per
``1/BIN_RATE_HZ`` s bin while streaming (bounded memory for hour-long files) and folds the
bins into columns at the end, when the real length is known (headers can lie about it).

>>> import numpy as np
>>> p = peaks_from_blocks([np.array([0.5, -0.25, 1.0, -1.0], np.float32)], sr=4, n_columns=2)
>>> p.min.tolist(), p.max.tolist()
([-32, -127], [64, 127])
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: Columns stored per track (the widest player bar is about this many device pixels).
N_COLUMNS = 1000
#: Min/max bins per second kept while streaming, before folding into columns.
BIN_RATE_HZ = 200
#: Format tag stored with the bytes, so a later layout can be told apart.
PEAKS_FORMAT = "minmax-int8-v1"


@dataclass(frozen=True)
class Peaks:
    """A track's waveform envelope.

    Attributes
    ----------
    min, max : int8 ``(n_columns,)``; sample minimum and maximum of each column scaled by
        127 (so ``-127`` is full scale negative); ``min <= max`` column by column
    duration_s : decoded length in seconds the columns span
    """

    min: np.ndarray
    max: np.ndarray
    duration_s: float

    @property
    def n_columns(self) -> int:
        return int(len(self.max))

    def to_bytes(self) -> bytes:
        """``min`` then ``max``, int8 each: ``2 * n_columns`` bytes."""
        return self.min.astype(np.int8).tobytes() + self.max.astype(np.int8).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, *, duration_s: float) -> Peaks:
        """Inverse of :meth:`to_bytes`.

        Raises
        ------
        ValueError
            ``data`` has an odd length.
        """
        if len(data) % 2:
            raise ValueError(f"peaks blob of {len(data)} bytes: expected min and max halves of equal length")
        a = np.frombuffer(data, dtype=np.int8)
        h = len(a) // 2
        return cls(min=a[:h].copy(), max=a[h:].copy(), duration_s=float(duration_s))

    def to_json(self) -> dict:
        return {"format": PEAKS_FORMAT, "n": self.n_columns, "duration_s": round(self.duration_s, 3),
                "min": self.min.astype(int).tolist(), "max": self.max.astype(int).tolist()}


def _quantise(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 127.0), -127, 127).astype(np.int8)


def peaks_from_blocks(blocks: Iterable[np.ndarray], *, sr: int, n_columns: int = N_COLUMNS,
                      bin_rate_hz: int = BIN_RATE_HZ) -> Peaks:
    """Peaks of a track given as a stream of mono float32 blocks.

    Parameters
    ----------
    blocks : mono float32 ``(n,)`` arrays in order (e.g. from :func:`soundalike.audio.io.stream`)
    sr : their sample rate in Hz
    n_columns : columns in the result; a track shorter than ``n_columns`` samples gets one
        column per sample
    bin_rate_hz : min/max bins per second kept while streaming (memory: 8 bytes per bin)

    Returns
    -------
    Peaks
        ``n_columns`` columns spanning the decoded length.  An empty stream gives zero
        columns and ``duration_s == 0``.
    """
    if sr <= 0 or n_columns <= 0:
        raise ValueError(f"sr and n_columns must be positive, got sr={sr}, n_columns={n_columns}")
    hop = max(1, sr // max(1, bin_rate_hz))
    mins: list[np.ndarray] = []
    maxs: list[np.ndarray] = []
    carry = np.zeros(0, np.float32)
    total = 0
    for b in blocks:
        y = np.asarray(b, dtype=np.float32).reshape(-1)
        total += len(y)
        if len(carry):
            y = np.concatenate([carry, y])
        whole = len(y) // hop * hop
        if whole:
            v = y[:whole].reshape(-1, hop)
            mins.append(v.min(axis=1))
            maxs.append(v.max(axis=1))
        carry = y[whole:].copy()
    if len(carry):
        mins.append(carry.min(keepdims=True))
        maxs.append(carry.max(keepdims=True))
    if not mins:
        z = np.zeros(0, np.int8)
        return Peaks(min=z, max=z.copy(), duration_s=0.0)
    lo = np.concatenate(mins)
    hi = np.concatenate(maxs)
    # a bin is a sample when the track is very short; fold bins into columns by equal
    # shares of the bins (reduceat over the column starts)
    n = min(n_columns, len(lo))
    starts = np.floor(np.arange(n) * (len(lo) / n)).astype(np.int64)
    return Peaks(min=_quantise(np.minimum.reduceat(lo, starts)), max=_quantise(np.maximum.reduceat(hi, starts)),
                 duration_s=total / sr)


def peaks_of_file(path: str | os.PathLike, *, n_columns: int = N_COLUMNS) -> Peaks:
    """Peaks of an audio file, from one streaming decode at its own sample rate.

    Raises
    ------
    AudioDecodeError
        the file cannot be decoded (see :func:`soundalike.audio.io.stream`) or holds no samples.
    """
    from soundalike.audio.io import stream
    from soundalike.errors import AudioDecodeError

    sr, blocks = stream(path)
    p = peaks_from_blocks(blocks, sr=sr, n_columns=n_columns)
    if p.n_columns == 0:
        raise AudioDecodeError(path, "no samples decoded: nothing to draw")
    return p
