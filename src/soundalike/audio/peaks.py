"""Waveform peaks: a whole track's min/max envelope in a few kB, for drawing its waveform.

The web page draws a track's waveform from peaks stored in the catalog, so it never
decodes audio to draw one.  Peaks are ``n_columns`` (default 1000) pairs of the lowest and
highest sample in each equal slice of the track, quantised to int8 (``-127..127`` for
``-1..1``): 2 kB per track whatever its length.

Peaks need one pass over the whole file (a waveform of 10 spread patches would show 10
islands), so they come from a decode at the file's own rate: resampling to a lower rate
would cost more than it saves (the decoder's work does not depend on the output rate), and
a lossy stream has no cheaper "packet level" amplitude -- a Vorbis or MP3 packet's
amplitude only exists after the inverse MDCT.  The pass keeps min/max bins that double in
width as the track grows (:class:`PeaksAccumulator`: bounded memory for hour-long files) and
folds them into columns at the end, when the real length is known (headers can lie).

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


class PeaksAccumulator:
    """Streaming min/max bins that fold in pairs as the track grows (bounded memory).

    Bins start one sample wide; whenever there are more than ``8 * n_columns`` of them,
    neighbours are merged and the bin width doubles.  So a 2 s jingle and a 2 h mix both
    end with between ``4 * n_columns`` and ``8 * n_columns`` bins (a few tens of kB), and
    every column drawn from them holds the exact minimum and maximum of its samples.
    """

    def __init__(self, *, n_columns: int = N_COLUMNS):
        if n_columns <= 0:
            raise ValueError(f"n_columns must be positive, got {n_columns}")
        self.n_columns = n_columns
        self.hop = 1
        self.total = 0
        self._lo: list[np.ndarray] = []
        self._hi: list[np.ndarray] = []
        self._n_bins = 0
        # the bin being filled: its min, max and how many samples it has
        self._p_lo, self._p_hi, self._p_n = np.float32(np.inf), np.float32(-np.inf), 0

    def reset(self) -> None:
        """Forget every sample added (a decode that starts over, see ``audio.io.read_once``)."""
        self.__init__(n_columns=self.n_columns)

    def add(self, block: np.ndarray) -> None:
        """Take the next mono float32 samples."""
        y = np.asarray(block, dtype=np.float32).reshape(-1)
        self.total += len(y)
        if self._p_n:
            take = y[: self.hop - self._p_n]
            if len(take):
                self._p_lo = min(self._p_lo, take.min())
                self._p_hi = max(self._p_hi, take.max())
                self._p_n += len(take)
            y = y[len(take):]
            if self._p_n == self.hop:
                self._push(np.array([self._p_lo]), np.array([self._p_hi]))
                self._p_lo, self._p_hi, self._p_n = np.float32(np.inf), np.float32(-np.inf), 0
        whole = len(y) // self.hop * self.hop
        if whole:
            v = y[:whole].reshape(-1, self.hop)
            self._push(v.min(axis=1), v.max(axis=1))
        rest = y[whole:]
        if len(rest):
            self._p_lo, self._p_hi, self._p_n = rest.min(), rest.max(), len(rest)
        if self._n_bins > 8 * self.n_columns:
            self._fold()

    def _push(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self._lo.append(lo.astype(np.float32))
        self._hi.append(hi.astype(np.float32))
        self._n_bins += len(lo)

    def _fold(self) -> None:
        lo, hi = np.concatenate(self._lo), np.concatenate(self._hi)
        while len(lo) > 8 * self.n_columns:
            odd = len(lo) % 2
            if odd:  # the last full bin is half of a wider one: it becomes the partial bin
                p_lo = min(lo[-1], self._p_lo) if self._p_n else lo[-1]
                p_hi = max(hi[-1], self._p_hi) if self._p_n else hi[-1]
                p_n = self.hop + self._p_n
                lo, hi = lo[:-1], hi[:-1]
            lo = np.minimum(lo[0::2], lo[1::2])
            hi = np.maximum(hi[0::2], hi[1::2])
            self.hop *= 2
            if odd:
                self._p_lo, self._p_hi, self._p_n = p_lo, p_hi, p_n
        self._lo, self._hi, self._n_bins = [lo], [hi], len(lo)

    def result(self, *, sr: int) -> Peaks:
        """The peaks of everything added so far (``sr``: the samples' rate in Hz)."""
        if sr <= 0:
            raise ValueError(f"sr must be positive, got {sr}")
        lo = list(self._lo)
        hi = list(self._hi)
        if self._p_n:
            lo.append(np.array([self._p_lo], np.float32))
            hi.append(np.array([self._p_hi], np.float32))
        if not lo:
            z = np.zeros(0, np.int8)
            return Peaks(min=z, max=z.copy(), duration_s=0.0)
        L, H = np.concatenate(lo), np.concatenate(hi)
        n = min(self.n_columns, len(L))
        starts = np.floor(np.arange(n) * (len(L) / n)).astype(np.int64)
        return Peaks(min=_quantise(np.minimum.reduceat(L, starts)), max=_quantise(np.maximum.reduceat(H, starts)),
                     duration_s=self.total / sr)


def peaks_from_blocks(blocks: Iterable[np.ndarray], *, sr: int, n_columns: int = N_COLUMNS) -> Peaks:
    """Peaks of a track given as a stream of mono float32 blocks.

    Parameters
    ----------
    blocks : mono float32 ``(n,)`` arrays in order (e.g. from :func:`soundalike.audio.io.stream`)
    sr : their sample rate in Hz
    n_columns : columns in the result; a track of fewer samples gets one column per sample

    Returns
    -------
    Peaks
        ``n_columns`` columns spanning the decoded length, each the exact min and max of
        its samples.  An empty stream gives zero columns and ``duration_s == 0``.
    """
    if sr <= 0:
        raise ValueError(f"sr must be positive, got {sr}")
    acc = PeaksAccumulator(n_columns=n_columns)
    for b in blocks:
        acc.add(b)
    return acc.result(sr=sr)


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
