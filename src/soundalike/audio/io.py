"""Decoding audio files into mono float32 samples.

``soundfile`` (libsndfile) reads wav, flac, ogg/vorbis, opus, mp3, au/snd and aiff;
PyAV (FFmpeg) is the fallback for what libsndfile cannot read (m4a/AAC, ...).
Resampling uses ``soxr``.  Files are read in blocks, so an hour-long file never
needs its whole decoded source in memory at once, and partial reads
(``offset_s``/``duration_s``) seek instead of decoding from the start.

Every failure raises :class:`~soundalike.errors.AudioDecodeError` naming the path
and the reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from soundalike.errors import AudioDecodeError

#: File extensions ingest looks at (lower case, without the dot).
AUDIO_EXTENSIONS = frozenset(
    {"wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "au", "snd", "aif", "aiff", "aifc",
     "m4a", "mp4", "aac", "wma", "webm", "mka"}
)

#: Shortest audio we accept: below this no feature or model output means anything.
MIN_DURATION_S = 0.1

#: Frames decoded per block (per channel) when streaming.
BLOCK_FRAMES = 1 << 16


class Waveform(NamedTuple):
    """Mono samples and their rate: ``y`` is float32 ``(n,)``, ``sr`` in Hz."""

    y: np.ndarray
    sr: int

    @property
    def duration_s(self) -> float:
        return len(self.y) / self.sr


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header (no decoding)."""

    path: str
    sr: int
    channels: int
    frames: int
    format: str
    subtype: str
    backend: str  # "soundfile" or "pyav"

    @property
    def duration_s(self) -> float:
        return self.frames / self.sr if self.sr else 0.0


# --------------------------------------------------------------------------- helpers


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioDecodeError(path, "file not found")
    if path.is_dir():
        raise AudioDecodeError(path, "is a directory, not an audio file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioDecodeError(path, f"cannot stat file: {exc.strerror or exc}") from exc
    if size == 0:
        raise AudioDecodeError(path, "empty file (zero bytes)")
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(path, "permission denied")


def _to_mono(block: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) -> float32 (frames,)."""
    if block.ndim == 2:
        block = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
    return np.ascontiguousarray(block, dtype=np.float32)


def _check_finite(path: Path, y: np.ndarray) -> None:
    if y.size and not np.isfinite(y).all():
        raise AudioDecodeError(path, "contains NaN or infinite samples")


class _Resampler:
    """Streaming resampler (identity when the rates agree)."""

    def __init__(self, sr_in: int, sr_out: int):
        self.identity = sr_in == sr_out
        if not self.identity:
            import soxr

            self._stream = soxr.ResampleStream(sr_in, sr_out, 1, dtype="float32", quality="HQ")

    def __call__(self, y: np.ndarray, last: bool = False) -> np.ndarray:
        if self.identity:
            return y
        return self._stream.resample_chunk(y, last=last)


# --------------------------------------------------------------------------- soundfile


def _sf_open(path: Path):
    import soundfile as sf

    try:
        return sf.SoundFile(str(path))
    except sf.LibsndfileError:
        return None
    except (RuntimeError, TypeError, ValueError):
        return None


def _sf_blocks(path: Path, f, start: int, stop: int | None) -> Iterator[np.ndarray]:
    import soundfile as sf

    try:
        if start:
            if not f.seekable():
                raise AudioDecodeError(path, "file is not seekable")
            f.seek(start)
        remaining = None if stop is None else max(0, stop - start)
        while remaining is None or remaining > 0:
            n = BLOCK_FRAMES if remaining is None else min(BLOCK_FRAMES, remaining)
            block = f.read(n, dtype="float32", always_2d=True)
            if len(block) == 0:
                break
            if remaining is not None:
                remaining -= len(block)
            yield block
    except sf.LibsndfileError as exc:
        raise AudioDecodeError(path, f"truncated or corrupt data: {exc}") from exc
    except RuntimeError as exc:
        raise AudioDecodeError(path, f"truncated or corrupt data: {exc}") from exc


# --------------------------------------------------------------------------- PyAV


def _av_open(path: Path):
    import av

    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise AudioDecodeError(path, f"not an audio file or unsupported format ({_av_reason(exc)})") from exc
    if not container.streams.audio:
        container.close()
        raise AudioDecodeError(path, "no audio stream in file")
    return container


def _av_reason(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    # FFmpeg errors repeat the path; keep just the reason.
    return msg.split(": '")[0]


def _av_info(path: Path) -> AudioInfo:
    container = _av_open(path)
    try:
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        sr = int(ctx.sample_rate or 0)
        channels = int(ctx.channels or getattr(ctx.layout, "nb_channels", 0) or 0)
        if sr <= 0 or channels <= 0:
            raise AudioDecodeError(path, "unsupported codec or stream without sample rate")
        if stream.duration is not None and stream.time_base is not None:
            duration_s = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration_s = container.duration / 1_000_000
        else:
            duration_s = 0.0
        fmt = (container.format.name or "").split(",")[0].upper()
        return AudioInfo(str(path), sr, channels, int(round(duration_s * sr)), fmt,
                         str(ctx.name).upper(), "pyav")
    finally:
        container.close()


def _av_blocks(path: Path, start: int, stop: int | None) -> Iterator[np.ndarray]:
    """Decode with FFmpeg, returning (frames, channels) float32 blocks in [start, stop)."""
    import av

    container = _av_open(path)
    try:
        stream = container.streams.audio[0]
        sr = int(stream.codec_context.sample_rate)
        resampler = av.AudioResampler(format="fltp", layout=None, rate=sr)
        pos: int | None = None
        if start > 0 and stream.time_base is not None:
            # Seek somewhat before the target; frame timestamps tell where we landed.
            target = max(0.0, start / sr - 0.5)
            try:
                container.seek(int(target / stream.time_base), stream=stream, backward=True)
            except av.error.FFmpegError:
                container.seek(0, stream=stream)
        else:
            pos = 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                raise AudioDecodeError(path, f"truncated or corrupt data ({_av_reason(exc)})") from exc
            for frame in frames:
                if pos is None:
                    if frame.pts is None or frame.time_base is None:
                        raise AudioDecodeError(path, "cannot seek: stream has no timestamps")
                    pos = int(round(float(frame.pts * frame.time_base) * sr))
                for out in resampler.resample(frame):
                    arr = out.to_ndarray()  # (channels, n) planar float32
                    block = np.ascontiguousarray(arr.T, dtype=np.float32)
                    n = len(block)
                    lo, hi = pos, pos + n
                    pos = hi
                    if hi <= start:
                        continue
                    if stop is not None and lo >= stop:
                        return
                    a = max(0, start - lo)
                    b = n if stop is None else min(n, stop - lo)
                    yield block[a:b]
    except av.error.FFmpegError as exc:
        raise AudioDecodeError(path, f"truncated or corrupt data ({_av_reason(exc)})") from exc
    finally:
        container.close()


# --------------------------------------------------------------------------- public API


def info(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header: sample rate, channels, length, container and codec.

    Raises
    ------
    AudioDecodeError
        When the file is missing, empty, not audio, or uses an unsupported codec.
    """
    p = Path(path)
    _check_file(p)
    f = _sf_open(p)
    if f is not None:
        with f:
            if f.samplerate <= 0 or f.channels <= 0:
                raise AudioDecodeError(p, "header has no valid sample rate or channel count")
            return AudioInfo(str(p), int(f.samplerate), int(f.channels), int(f.frames),
                             str(f.format), str(f.subtype), "soundfile")
    return _av_info(p)


def _raw_blocks(p: Path, start: int, stop: int | None) -> tuple[AudioInfo, Iterator[np.ndarray]]:
    f = _sf_open(p)
    if f is not None:
        meta = AudioInfo(str(p), int(f.samplerate), int(f.channels), int(f.frames),
                         str(f.format), str(f.subtype), "soundfile")

        def gen() -> Iterator[np.ndarray]:
            with f:
                yield from _sf_blocks(p, f, start, stop)

        return meta, gen()
    meta = _av_info(p)
    return meta, _av_blocks(p, start, stop)


def stream(
    path: str | os.PathLike,
    *,
    sr: int | None = None,
    offset_s: float = 0.0,
    duration_s: float | None = None,
) -> tuple[int, Iterator[np.ndarray]]:
    """Decode a file block by block, in bounded memory.

    Parameters
    ----------
    path : audio file
    sr : target sample rate in Hz (``None`` keeps the file's own)
    offset_s, duration_s : the part of the file to read, in seconds of the source

    Returns
    -------
    (sr, blocks) : the output rate and an iterator of mono float32 ``(n,)`` blocks.
        Non-finite samples raise :class:`AudioDecodeError` as they are met.
    """
    p = Path(path)
    _check_file(p)
    if offset_s < 0 or (duration_s is not None and duration_s <= 0):
        raise AudioDecodeError(p, f"invalid range: offset_s={offset_s}, duration_s={duration_s}")
    src_sr = info(p).sr
    start = int(round(offset_s * src_sr))
    stop = None if duration_s is None else start + int(round(duration_s * src_sr))
    _, raw = _raw_blocks(p, start, stop)
    out_sr = int(sr or src_sr)
    resample = _Resampler(src_sr, out_sr)

    def gen() -> Iterator[np.ndarray]:
        for block in raw:
            y = _to_mono(block)
            _check_finite(p, y)
            out = resample(y)
            if len(out):
                yield out
        tail = resample(np.zeros(0, np.float32), last=True)
        if len(tail):
            yield tail

    return out_sr, gen()


def load(
    path: str | os.PathLike,
    *,
    sr: int | None = None,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    min_duration_s: float = MIN_DURATION_S,
) -> Waveform:
    """Decode an audio file (or a part of it) to mono float32 at ``sr``.

    Parameters
    ----------
    path : wav, flac, mp3, ogg/vorbis, opus, au/snd, aiff, m4a/aac, ...
    sr : target rate in Hz; ``None`` keeps the file's rate
    offset_s : start of the read, in seconds; the file is seeked, not decoded up to it
    duration_s : length of the read in seconds (``None``: to the end)
    min_duration_s : shorter results raise ``AudioDecodeError``

    Returns
    -------
    Waveform
        ``y`` float32 ``(n,)`` and ``sr``.

    Raises
    ------
    AudioDecodeError
        zero bytes, truncated or corrupt data, not audio, unsupported codec,
        NaN/inf samples, or shorter than ``min_duration_s``.
    """
    p = Path(path)
    out_sr, blocks = stream(p, sr=sr, offset_s=offset_s, duration_s=duration_s)
    parts = list(blocks)
    y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if offset_s == 0 and duration_s is None:
        _check_complete(p, y, out_sr)
    if len(y) < min_duration_s * out_sr:
        got = len(y) / out_sr
        if got == 0 and offset_s > 0:
            raise AudioDecodeError(p, f"offset {offset_s:.3f} s is past the end of the file")
        raise AudioDecodeError(p, f"too short: {got:.3f} s of audio (minimum {min_duration_s} s)")
    return Waveform(y, out_sr)


def _check_complete(p: Path, y: np.ndarray, out_sr: int) -> None:
    """Raise if a container promised clearly more audio than it delivered (truncation)."""
    meta = info(p)
    if meta.backend != "soundfile" or meta.frames <= 0 or meta.frames >= 2**62:
        return
    expected = meta.frames * out_sr / meta.sr
    if len(y) < 0.98 * expected - out_sr * 0.05:
        raise AudioDecodeError(
            p, f"truncated: header promises {meta.duration_s:.2f} s, only {len(y) / out_sr:.2f} s decoded"
        )


def duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the header (no decoding)."""
    return info(path).duration_s


def is_audio_path(path: str | os.PathLike) -> bool:
    """Whether a path's extension is one ingest should try to decode."""
    return Path(path).suffix.lower().lstrip(".") in AUDIO_EXTENSIONS


def frames_to_s(n: int, sr: int) -> float:
    return n / sr if sr else math.nan
