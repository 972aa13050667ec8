"""Decoding audio files into mono float32 samples.

``soundfile`` (libsndfile) reads wav, flac, ogg/vorbis, opus, mp3, au/snd and aiff;
PyAV (FFmpeg) is the fallback for what libsndfile cannot read (m4a/AAC, wma, webm, ...).
The format is recognised from the file's content, never from its extension: a FLAC
file named ``.mp3`` loads as FLAC.  Resampling uses ``soxr``.  Ingest's whole-file pass
(:func:`read_once`) reads Ogg Vorbis with FFmpeg's decoder instead, which is faster and
agrees with libvorbis to float rounding.

Files are read in blocks, so an hour-long file never needs its whole decoded source in
memory at once (:func:`stream`), and partial reads (``offset_s``/``duration_s``) seek
instead of decoding from the start.  Partial reads are sample-accurate: they equal the
same slice of a full decode exactly for PCM/FLAC and for MP3, Vorbis and Opus as read
by libsndfile (we seek a little early and decode a pre-roll, because a lossy decoder
that starts cold at the target produces different samples for its first frames).

Every failure raises :class:`~soundalike.errors.AudioDecodeError` naming the path and
the reason.
"""

from __future__ import annotations

import contextlib

import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from soundalike.errors import AudioDecodeError, AudioTooLongError

#: File extensions ingest looks at (lower case, without the dot).
AUDIO_EXTENSIONS = frozenset(
    {"wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "au", "snd", "aif", "aiff", "aifc",
     "m4a", "mp4", "aac", "wma", "webm", "mka"}
)

#: Shortest audio we accept: below this no feature or model output means anything.
MIN_DURATION_S = 0.1

#: Frames decoded per block (per channel) when streaming.
BLOCK_FRAMES = 1 << 16

#: Frames decoded before the target of a seek in a lossy stream and thrown away.  An MP3
#: decoder that starts at the target lacks its bit reservoir and MDCT overlap and gets
#: the first frames wrong; 8192 frames was always enough in our measurements, twice that
#: is a margin that costs well under a millisecond of decoding.
SEEK_PREROLL_FRAMES = 16384

#: How much earlier than the target a PyAV (FFmpeg) seek aims, in seconds.
_AV_SEEK_PREROLL_S = 0.5

_LOSSY_SUBTYPES = frozenset({"MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III", "VORBIS", "OPUS"})


class Waveform(NamedTuple):
    """Mono samples and their rate: ``y`` is float32 ``(n,)``, ``sr`` in Hz."""

    y: np.ndarray
    sr: int

    @property
    def duration_s(self) -> float:
        return len(self.y) / self.sr


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header (no decoding).

    ``frames`` is the length in samples per channel at ``sr`` as the container states
    it (for MP3 without a Xing/LAME header, an estimate).
    """

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


def os_error_reason(exc: OSError) -> str:
    """What an ``OSError`` on an audio file means, in plain words (no errno, no path)."""
    if isinstance(exc, PermissionError):
        return "permission denied: the file cannot be read by this user"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an audio file"
    return f"cannot read the file: {(exc.strerror or str(exc)).lower()}"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioDecodeError(path, "file not found")
    if path.is_dir():
        raise AudioDecodeError(path, "is a directory, not an audio file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioDecodeError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise AudioDecodeError(path, "empty file (zero bytes)")
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(path, os_error_reason(PermissionError()))


def _sniff(path: Path) -> str | None:
    """Name the container from the file's first bytes (``None``: not a known audio format)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    return _sniff_head(head)


def _sniff_head(head: bytes) -> str | None:
    """:func:`_sniff` on a file's first 16 bytes."""
    if head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE" or head[:4] in (b"RF64", b"BW64"):
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "Ogg"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if head[:4] == b".snd":
        return "AU"
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM"
    if head[:4] == b"\x30\x26\xb2\x75":
        return "ASF/WMA"
    if head[:3] == b"ID3":
        return "MP3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync; ADTS AAC has layer bits 00.
        return "AAC (ADTS)" if head[1] & 0x06 == 0 else "MP3"
    return None


#: Container (as :func:`_sniff` names it) -> the media type to send it as.
_MIME = {"WAV": "audio/wav", "FLAC": "audio/flac", "Ogg": "audio/ogg", "AIFF": "audio/aiff",
         "AU": "audio/basic", "MP4/M4A": "audio/mp4", "Matroska/WebM": "audio/webm",
         "ASF/WMA": "audio/x-ms-wma", "MP3": "audio/mpeg", "AAC (ADTS)": "audio/aac"}


def sniff_mime(source: str | os.PathLike | bytes) -> str | None:
    """The media type of an audio file from its first bytes, not its name (None: unknown).

    ``source`` is a path or the file's first 16 bytes.
    """
    kind = _sniff_head(source[:16]) if isinstance(source, bytes) else _sniff(Path(source))
    return _MIME.get(kind) if kind else None


def _to_mono(block: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) -> float32 (frames,): the mean of the channels.

    Summed column by column: ``block.mean(axis=1)`` reduces along the short, strided
    axis and took ~20x longer (2.7 ms per 65,536 stereo frames, a third of an MP3's
    whole decode time); for two channels the result is bit for bit the same.
    """
    if block.ndim == 2:
        if block.shape[1] == 1:
            block = block[:, 0]
        else:
            return _mix([block[:, c] for c in range(block.shape[1])])
    return np.ascontiguousarray(block, dtype=np.float32)


def _mix(channels: list[np.ndarray]) -> np.ndarray:
    """The mean of two or more equal-length channels, float32 ``(frames,)``, summed in order
    (every decoder's mono mix is this one, so they agree bit for bit on equal samples)."""
    out = np.add(channels[0], channels[1], dtype=np.float32)
    for c in channels[2:]:
        out += c
    out *= np.float32(1.0 / len(channels))
    return out


def _check_finite(path: Path, y: np.ndarray, *, offset: int, sr: int) -> None:
    """Raise on NaN/inf; ``offset`` is the index of ``y[0]`` in the source, at ``sr`` Hz."""
    # A NaN or an infinity makes the sum non-finite; so, rarely, do huge finite samples,
    # which the element-wise test (a bool array per block: twice the time) then clears.
    if not y.size:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.add.reduce(y))
    if not math.isfinite(total) and not np.isfinite(y).all():
        first = offset + int(np.flatnonzero(~np.isfinite(y))[0])
        raise AudioDecodeError(path, f"contains NaN or infinite samples (the first at {first / sr:.3f} s)")


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


def _truncated(p: Path, promised_s: float, got_s: float) -> AudioDecodeError:
    return AudioDecodeError(
        p, f"truncated: the header promises {promised_s:.2f} s of audio, only {got_s:.2f} s could be decoded")


# --------------------------------------------------------------------------- soundfile


# libsndfile's header log says "data : 88200 (should be 29370)" when a file is shorter
# than its header claims (WAV "data", AIFF "SSND", AU "Data Size").
_SF_SHORT_CHUNK = re.compile(r"^\s*(?:data|SSND|Data Size)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M)
_PCM_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4,
              "DOUBLE": 8, "ULAW": 1, "ALAW": 1}
# Placeholder sizes written by streaming recorders that never patched the header.
_SF_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0xFFFFFFFE}


class _SfSource:
    """A file libsndfile can open."""

    backend = "soundfile"

    def __init__(self, path: Path, f):
        self.path = path
        self.f = f
        self._moved = False  # read or sought since opened (then a read from 0 seeks there)
        self.last_page: int | None | bool = False  # Vorbis: _ogg_last_page_start, once read
        self.meta = AudioInfo(str(path), int(f.samplerate), int(f.channels), int(f.frames),
                              str(f.format), str(f.subtype), self.backend)
        if self.meta.sr <= 0 or self.meta.channels <= 0:
            f.close()
            raise AudioDecodeError(path, "header has no valid sample rate or channel count")
        self._check_header_length()

    def _check_header_length(self) -> None:
        log = self.f.extra_info or ""
        if "File ended unexpectedly" in log and self.meta.format == "OGG":
            self.f.close()
            raise AudioDecodeError(self.path, "truncated: the Ogg stream stops before its last page")
        m = _SF_SHORT_CHUNK.search(log)
        if not m:
            return
        declared, actual = int(m.group(1)), int(m.group(2))
        if declared in _SF_UNKNOWN_SIZES or declared <= actual:
            return
        self.f.close()
        bytes_per_frame = _PCM_BYTES.get(self.meta.subtype, 0) * self.meta.channels
        if bytes_per_frame:
            promised_s = declared / bytes_per_frame / self.meta.sr
        else:
            promised_s = self.meta.frames * (declared / max(actual, 1)) / self.meta.sr
        raise _truncated(self.path, promised_s, self.meta.frames / self.meta.sr)

    def close(self) -> None:
        self.f.close()

    def _read(self, n: int) -> np.ndarray:
        """Read up to ``n`` frames as float32 ``(frames, channels)``.

        soundfile's ``SoundFile.read`` calls ``tell()`` and re-seeks to the current
        position around every read; libsndfile's MP3 decoder takes that as a real seek
        and loses its bit reservoir, corrupting the first frames of every block.  So we
        call libsndfile's ``sf_readf_float`` directly.
        """
        out = np.empty((n, self.meta.channels), np.float32)
        try:
            from soundfile import _ffi, _snd

            got = _snd.sf_readf_float(self.f._file, _ffi.cast("float *", out.ctypes.data), n)
        except (ImportError, AttributeError):  # pragma: no cover - soundfile internals moved
            return self.f.read(n, dtype="float32", always_2d=True)
        err = _snd.sf_error(self.f._file)
        if err:
            msg = _ffi.string(_snd.sf_error_number(err)).decode("utf-8", "replace")
            raise RuntimeError(msg)
        return out[:got]

    def _length_is_exact(self) -> bool:
        """Whether ``frames`` is a stated length rather than an estimate.

        For MP3 it is stated only by a Xing/Info/VBRI header; without one libsndfile
        guesses from the file size, tags and cover art included (often 0.2 s too long).
        """
        if not self.meta.subtype.startswith("MPEG_LAYER"):
            return True
        return _mp3_has_length_header(self.path)

    def _seek_start(self, start: int) -> int:
        """Where to seek for a read beginning at ``start`` (earlier for lossy codecs)."""
        if self.meta.subtype not in _LOSSY_SUBTYPES:
            return start
        at = max(0, start - SEEK_PREROLL_FRAMES)
        if self.meta.subtype == "VORBIS":
            # libsndfile lands on wrong samples when seeking into the last Ogg page;
            # aim at the page before it and decode forward.
            if self.last_page is False:  # read once per file (load_excerpts hands it on)
                self.last_page = _ogg_last_page_start(self.path)
            last = self.last_page
            if last is not None and start >= last:
                at = max(0, min(at, last - SEEK_PREROLL_FRAMES))
        return at

    def blocks(self, start: int, stop: int | None) -> Iterator[np.ndarray]:
        decoded = 0
        with self.f:
            for block in self._range(start, stop):
                decoded += len(block)
                yield block
        if start == 0 and stop is None and self._length_is_exact():
            expected = self.meta.frames
            if 0 < expected < 2**62 and decoded < 0.98 * expected - 0.05 * self.meta.sr:
                raise _truncated(self.path, expected / self.meta.sr, decoded / self.meta.sr)

    def _range(self, start: int, stop: int | None) -> Iterator[np.ndarray]:
        """``(frames, channels)`` blocks of samples ``[start, stop)``, the file left open
        (so that :func:`load_excerpts` reads all of a file's excerpts on one handle)."""
        import soundfile as sf

        p, f = self.path, self.f
        decoded = 0
        try:
            # (no f.tell(): for MP3 libsndfile takes it as a real seek, see _read)
            if start or self._moved:
                if not f.seekable():
                    raise AudioDecodeError(p, "cannot seek in this file")
                at = self._seek_start(start)
                if at >= self.meta.frames > 0:
                    return
                f.seek(at)
                skip = start - at
                while skip > 0:
                    self._moved = True
                    got = len(self._read(min(BLOCK_FRAMES, skip)))
                    if got == 0:
                        return
                    skip -= got
            self._moved = True
            remaining = None if stop is None else max(0, stop - start)
            while remaining is None or remaining > 0:
                n = BLOCK_FRAMES if remaining is None else min(BLOCK_FRAMES, remaining)
                block = self._read(n)
                if len(block) == 0:
                    break
                decoded += len(block)
                if remaining is not None:
                    remaining -= len(block)
                yield block
        except (sf.LibsndfileError, RuntimeError) as exc:
            where = f" after {(start + decoded) / self.meta.sr:.2f} s" if decoded else ""
            raise AudioDecodeError(p, f"corrupt or truncated {self.meta.format} data{where} "
                                      f"({str(exc).strip() or type(exc).__name__})") from exc


def _mp3_has_length_header(path: Path) -> bool:
    """Whether an MP3's first frame carries a Xing/Info/VBRI header (exact frame count)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(10)
            skip = 0
            if head[:3] == b"ID3" and len(head) == 10:  # ID3v2 size is "syncsafe" (7 bits/byte)
                skip = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7
                             | (head[9] & 0x7F))
            fh.seek(skip)
            first = fh.read(4096)
    except OSError:
        return False
    return any(tag in first for tag in (b"Xing", b"Info", b"VBRI"))


def _ogg_last_page_start(path: Path) -> int | None:
    """Granule position (sample index) where the last Ogg page's audio begins.

    That is the granule of the page before the last one; read from the file's tail
    (an Ogg page holds at most 65,307 bytes, so two pages fit in 132 KiB).
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 132 * 1024))
            tail = fh.read()
    except OSError:
        return None
    granules = []
    i = tail.find(b"OggS")
    while i >= 0:
        if i + 14 <= len(tail) and tail[i + 4] == 0:
            granules.append(int.from_bytes(tail[i + 6 : i + 14], "little", signed=True))
        i = tail.find(b"OggS", i + 4)
    granules = [g for g in granules if g >= 0]
    return granules[-2] if len(granules) >= 2 else None


@contextlib.contextmanager
def _quiet_c_stderr() -> Iterator[None]:
    """Silence C libraries writing to fd 2 (mpg123's "Illegal Audio-MPEG-Header" notes while
    libsndfile probes a file that is not MP3); our own error says what went wrong."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (daemonised): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _sf_open(path: Path) -> _SfSource | None:
    import soundfile as sf

    try:
        with _quiet_c_stderr():
            f = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        return None
    return _SfSource(path, f)


# --------------------------------------------------------------------------- PyAV


def _av_reason(exc: BaseException) -> str:
    """FFmpeg's message without errno numbers or the repeated path."""
    msg = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return str(msg).split(": '")[0]


class _AvSource:
    """A file opened with PyAV (FFmpeg)."""

    backend = "pyav"

    def __init__(self, path: Path):
        import av

        self.path = path
        kind = _sniff(path)
        try:
            self.container = av.open(str(path), mode="r", metadata_errors="replace")  # tags are not audio
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OSError) as exc:
            if kind is None:
                raise AudioDecodeError(path, "not an audio file (the content is no audio format we know)") from exc
            raise AudioDecodeError(path, f"corrupt or truncated {kind} file ({_av_reason(exc)})") from exc
        try:
            self._init_stream(kind)
        except BaseException:
            self.container.close()
            raise

    def _init_stream(self, kind: str | None) -> None:
        p = self.path
        c = self.container
        if not c.streams.audio:
            if kind is None and not c.streams:
                raise AudioDecodeError(p, "not an audio file (the content is no audio format we know)")
            raise AudioDecodeError(p, "no audio stream in file")
        self.stream = st = c.streams.audio[0]
        ctx = st.codec_context
        if ctx is None:
            raise AudioDecodeError(p, "unsupported codec: FFmpeg has no decoder for this audio stream")
        sr = int(ctx.sample_rate or 0)
        channels = int(getattr(ctx, "channels", 0) or getattr(ctx.layout, "nb_channels", 0) or 0)
        if sr <= 0 or channels <= 0:
            if kind is None:  # FFmpeg guessed a demuxer from the extension of a non-audio file
                raise AudioDecodeError(p, "not an audio file (the content is no audio format we know)")
            raise AudioDecodeError(p, f"unsupported codec {ctx.name!r}: no sample rate or channel count")
        tb = st.time_base
        self.start_pts = int(st.start_time or 0)
        fmt_name = (c.format.name or "").split(",")[0]
        # mov/mp4 durations come from the sample table and edit list (exact; the edit list
        # also trims the encoder's padding); elsewhere they may be bitrate estimates.
        self.exact_length = fmt_name in ("mov", "mp4") and st.duration is not None and tb is not None
        if st.duration is not None and tb is not None:
            duration_s = float(st.duration * tb)
        elif c.duration is not None:
            duration_s = c.duration / 1_000_000
        else:
            duration_s = 0.0
        self.meta = AudioInfo(str(p), sr, channels, int(round(duration_s * sr)), fmt_name.upper(),
                              str(ctx.name).upper(), self.backend)

    def close(self) -> None:
        self.container.close()

    def _pos(self, frame, sr: int) -> int | None:
        if frame.pts is None or frame.time_base is None:
            return None
        return int(round(float((frame.pts - self.start_pts) * frame.time_base) * sr))

    def blocks(self, start: int, stop: int | None) -> Iterator[np.ndarray]:
        """(frames, channels) float32 blocks covering samples ``[start, stop)``."""
        import av

        p, c, st, sr = self.path, self.container, self.stream, self.meta.sr
        full = start == 0 and stop is None
        if self.exact_length and self.meta.frames > 0:
            stop = self.meta.frames if stop is None else min(stop, self.meta.frames)
        resampler = av.AudioResampler(format="fltp", layout=None, rate=sr)
        pos: int | None = None
        decoded = 0
        try:
            target_s = start / sr - _AV_SEEK_PREROLL_S
            if target_s > 0 and st.time_base is not None:
                # Seek somewhat before the target; frame timestamps tell where we landed.
                # (Near the start we decode from the beginning: after a seek FFmpeg does
                # not drop the encoder's priming samples again.)
                ts = self.start_pts + int(target_s / st.time_base)
                try:
                    c.seek(ts, stream=st, backward=True)
                except av.error.FFmpegError:
                    c.seek(self.start_pts, stream=st)
            for packet in c.demux(st):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    if pos is None or decoded == 0:
                        raise
                    continue  # one damaged packet: FFmpeg conceals it, so do we
                for frame in frames:
                    fpos = self._pos(frame, sr)
                    if pos is None:
                        if fpos is None and start > 0:
                            raise AudioDecodeError(p, "cannot seek: the stream has no timestamps")
                        pos = fpos if fpos is not None else 0
                    for out in resampler.resample(frame):
                        block = np.ascontiguousarray(out.to_ndarray().T, dtype=np.float32)
                        n = len(block)
                        lo, hi = pos, pos + n
                        pos = hi
                        decoded += n
                        if hi <= start:
                            continue
                        if stop is not None and lo >= stop:
                            return
                        a = max(0, start - lo)
                        b = n if stop is None else min(n, stop - lo)
                        yield block[a:b]
        except av.error.DecoderNotFoundError as exc:
            raise AudioDecodeError(p, "unsupported codec: FFmpeg has no decoder for this audio stream") from exc
        except av.error.FFmpegError as exc:
            where = f" after {pos / sr:.2f} s" if pos else ""
            raise AudioDecodeError(p, f"corrupt or truncated {self.meta.format} data{where} "
                                      f"({_av_reason(exc)})") from exc
        finally:
            c.close()
        if full and self.exact_length and stop is not None and decoded < 0.98 * stop - 0.05 * sr:
            raise _truncated(p, stop / sr, decoded / sr)


def _open(p: Path) -> _SfSource | _AvSource:
    _check_file(p)
    src = _sf_open(p)
    return src if src is not None else _AvSource(p)


# --------------------------------------------------------------------------- public API


def info(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header: sample rate, channels, length, container and codec.

    Raises
    ------
    AudioDecodeError
        When the file is missing, empty, not audio, truncated (PCM containers whose
        header promises more than the file holds) or uses an unsupported codec.
    """
    src = _open(Path(path))
    src.close()
    return src.meta


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
    offset_s, duration_s : the part of the file to read, in seconds of the source;
        the file is seeked to ``offset_s``, not decoded up to it

    Returns
    -------
    (sr, blocks) : the output rate and an iterator of mono float32 ``(n,)`` blocks of
        at most about ``BLOCK_FRAMES * sr / source_sr`` samples each.  Decoding errors
        (corrupt data, NaN/inf samples, truncation) raise :class:`AudioDecodeError` as
        they are met.
    """
    p = Path(path)
    if not (offset_s >= 0 and (duration_s is None or duration_s > 0)):
        raise AudioDecodeError(p, f"invalid range: offset_s={offset_s}, duration_s={duration_s}")
    if sr is not None and sr <= 0:
        raise AudioDecodeError(p, f"invalid target sample rate {sr}")
    src = _open(p)
    src_sr = src.meta.sr
    start = int(round(offset_s * src_sr))
    stop = None if duration_s is None else start + int(round(duration_s * src_sr))
    out_sr = int(sr or src_sr)
    resample = _Resampler(src_sr, out_sr)

    def gen() -> Iterator[np.ndarray]:
        done = 0
        try:
            for block in src.blocks(start, stop):
                y = _to_mono(block)
                _check_finite(p, y, offset=start + done, sr=src_sr)
                done += len(y)
                out = resample(y)
                if len(out):
                    yield out
        finally:
            src.close()
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
    max_duration_s: float | None = None,
) -> Waveform:
    """Decode an audio file (or a part of it) to mono float32 at ``sr``.

    Parameters
    ----------
    path : wav, flac, mp3, ogg/vorbis, opus, au/snd, aiff, m4a/aac, ...
        (recognised by content, not by extension)
    sr : target rate in Hz; ``None`` keeps the file's rate
    offset_s : start of the read, in seconds; the file is seeked, not decoded up to it
    duration_s : length of the read in seconds (``None``: to the end)
    min_duration_s : shorter results raise ``AudioDecodeError``
    max_duration_s : longer audio raises :class:`~soundalike.errors.AudioTooLongError`
        as soon as decoding passes the limit (a file is never decoded past it, whatever
        its header claims); ``None``: no limit

    Returns
    -------
    Waveform
        ``y`` float32 ``(n,)`` and ``sr``.  Stereo and multichannel files are averaged
        to mono.

    Raises
    ------
    AudioDecodeError
        missing file, directory, zero bytes, truncated or corrupt data, not audio,
        unsupported codec, NaN/inf samples, or shorter than ``min_duration_s``.
    """
    p = Path(path)
    out_sr, blocks = stream(p, sr=sr, offset_s=offset_s, duration_s=duration_s)
    limit = None if max_duration_s is None else int(max_duration_s * out_sr) + 1
    y = _collect(blocks, limit=limit)
    if y is None:
        raise AudioTooLongError(p, f"too long: more than {max_duration_s:g} s of audio "
                                   f"(the limit is {max_duration_s:g} s)")
    if len(y) < min_duration_s * out_sr:
        got = len(y) / out_sr
        if got == 0 and offset_s > 0:
            raise AudioDecodeError(p, f"offset {offset_s:.3f} s is at or past the end of the file")
        raise AudioDecodeError(p, f"too short: {got:.3f} s of audio (the minimum is {min_duration_s} s)")
    return Waveform(y, out_sr)


#: Source audio read on each side of an excerpt and thrown away after resampling, so
#: the resampler's edge transients fall outside the excerpt (soxr HQ's filter is a few
#: milliseconds long; 50 ms is a wide margin that costs ~3 % more decoding per 3-s patch).
EXCERPT_MARGIN_S = 0.05


def load_excerpts(
    path: str | os.PathLike,
    *,
    sr: int,
    starts: list[int] | tuple[int, ...],
    length: int | list[int] | tuple[int, ...],
    margin_s: float = EXCERPT_MARGIN_S,
) -> list[np.ndarray]:
    """Read short excerpts of a file by seeking: the file is never decoded in full.

    Excerpt ``i`` is meant to equal ``full[starts[i] : starts[i] + length]`` where
    ``full = load(path, sr=sr).y`` (the whole file decoded and resampled to ``sr``).
    Each excerpt is a partial read (a seek with the decoder's pre-roll) of the source
    span that resamples onto exactly those output samples, plus ``margin_s`` of context
    on each side that is cut off again after resampling.  A file libsndfile reads is
    opened once for all excerpts, read in order of position, and excerpts that overlap or
    nearly touch are decoded once, as one span (:data:`MERGE_GAP_FRAMES`).  Measured against a full decode: equal up to the resampler's
    rounding (~1e-6) for PCM/FLAC; within the codec's seek accuracy for lossy formats
    (see :func:`load`).

    Parameters
    ----------
    path : audio file
    sr : output rate in Hz (the analyzer's)
    starts : first sample of each excerpt, as an index into the ``sr``-Hz signal; samples
        before the start of the file (negative indices) are zeros
    length : samples per excerpt at ``sr`` (one for all, or one per start)
    margin_s : context decoded on each side (seconds)

    Returns
    -------
    list of float32 ``(n,)`` arrays, one per start, in order.  ``n == length`` except
    for an excerpt that runs into the end of the file (shorter, possibly empty).

    Raises
    ------
    AudioDecodeError
        As :func:`load`: the file cannot be opened or its data at an excerpt is corrupt.
    """
    p = Path(path)
    lengths = [int(length)] * len(starts) if isinstance(length, (int, np.integer)) else [int(n) for n in length]
    if len(lengths) != len(starts):
        raise ValueError(f"{len(starts)} starts but {len(lengths)} lengths")
    for n in lengths:
        if n <= 0:
            raise AudioDecodeError(p, f"invalid excerpt length {n}")
    src = _open(p)
    try:
        if isinstance(src, _SfSource):
            return _excerpts_on_one_handle(src, sr=sr, starts=starts, lengths=lengths, margin_s=margin_s)
    finally:
        src.close()
    return _excerpts_one_by_one(p, sr=sr, starts=starts, lengths=lengths, margin_s=margin_s, meta=src.meta)


#: Excerpts whose source spans lie closer than this are decoded as one span: a seek costs
#: :data:`SEEK_PREROLL_FRAMES` decoded and thrown away, more than decoding the gap does.
MERGE_GAP_FRAMES = SEEK_PREROLL_FRAMES


def _excerpt_spans(starts, lengths, *, src_sr: int, sr: int, margin_s: float) -> list[tuple[int, int, int, int, int]]:
    """``(first source frame, source frames, output lead to drop, zeros before, samples after
    them)`` per excerpt: the zeros stand for the part of an excerpt before the track."""
    spans = []
    for j, n in zip(starts, lengths):
        j, n = int(j), int(n)
        pad = min(max(0, -j), n)
        a, n_src, lead = _excerpt_span(max(0, j), length=n - pad, src_sr=src_sr, sr=sr, margin_s=margin_s)
        spans.append((a, n_src, lead, pad, n - pad))
    return spans


def _excerpts_on_one_handle(src: _SfSource, *, sr: int, starts, lengths, margin_s: float = EXCERPT_MARGIN_S) -> list[np.ndarray]:
    """:func:`load_excerpts` for a libsndfile source: the excerpts read in order of
    position, and excerpts that overlap or nearly touch (an attribute excerpt with a patch
    inside it) decoded once, as one span.

    The samples are what the per-excerpt seeks gave (a seek lands on the sample its target
    names, see :data:`SEEK_PREROLL_FRAMES`): an excerpt inside a merged span is cut from a
    continuous decode, the reference a seek is meant to reproduce.  An MP3's spans are all
    read on one open file: each open builds mpg123's seek index again, scanning the frames
    from the start to the seek target (~5 ms for a target 3 minutes in; 9 excerpts of a
    4-minute track paid 45 ms for it).  Every other format opens the file again for each
    span: libsndfile's Vorbis decoder, sought a second time on one handle, sometimes lands
    on wrong samples (measured on real game soundtracks: 1 seek in ~5), and an open costs
    under a millisecond.  An Ogg Vorbis file's spans are decoded by FFmpeg where
    :mod:`soundalike.audio.oggvorbis` can place them exactly (every span but those in the
    first or the last page), ~1.7x faster than libvorbis; the rest go through libsndfile.
    """
    p, meta = src.path, src.meta
    src_sr = meta.sr
    spans = _excerpt_spans(starts, lengths, src_sr=src_sr, sr=sr, margin_s=margin_s)
    todo = sorted((i for i, s in enumerate(spans) if s[4] > 0 and not s[0] >= meta.frames > 0),
                  key=lambda i: spans[i][0])
    groups: list[list[int]] = []  # [first frame, stop, member...]
    for i in todo:
        a, n_src = spans[i][0], spans[i][1]
        if groups and a <= groups[-1][1] + MERGE_GAP_FRAMES:
            groups[-1][1] = max(groups[-1][1], a + n_src)
            groups[-1].append(i)
        else:
            groups.append([a, a + n_src, i])
    got: dict[int, np.ndarray] = {}
    reuse = meta.subtype.startswith("MPEG_LAYER")
    vorbis = _vorbis_excerpts(src) if meta.subtype == "VORBIS" and groups else None
    try:
        for n_group, (g_start, g_stop, *members) in enumerate(groups):
            data = _vorbis_span(vorbis, p, g_start, g_stop, src_sr) if vorbis is not None else None
            if data is None:
                data = _sf_span(src, n_group=n_group, reuse=reuse, start=g_start, stop=g_stop)
            for i in members:
                a, n_src, lead, _, n = spans[i]
                y = data[a - g_start : a - g_start + n_src]
                got[i] = _cut_excerpt(y, src_sr=src_sr, sr=sr, lead=lead, length=n) if len(y) else np.zeros(0, np.float32)
    finally:
        if vorbis is not None:
            vorbis.close()
    out = []
    for i, (_, _, _, pad, n) in enumerate(spans):
        y = got.get(i, np.zeros(0, np.float32))
        out.append(np.concatenate([np.zeros(pad, np.float32), y]) if pad else y)
    return out


#: Read Ogg Vorbis excerpts with FFmpeg's decoder, placed by the pages' granules
#: (:mod:`soundalike.audio.oggvorbis`; ~1.7x faster than libvorbis).  ``False``: libsndfile
#: only, as before (the benchmark's "before" column).
FFMPEG_VORBIS = True


def _vorbis_excerpts(src: _SfSource):
    """A :class:`~soundalike.audio.oggvorbis.VorbisExcerpts` for ``src``, or ``None``."""
    from soundalike.audio import oggvorbis

    if not FFMPEG_VORBIS or not oggvorbis.available():
        return None
    try:
        return oggvorbis.VorbisExcerpts(src.path, frames=src.meta.frames, sr=src.meta.sr,
                                        channels=src.meta.channels)
    except oggvorbis.Unsupported:
        return None


def _vorbis_span(vorbis, p: Path, start: int, stop: int, sr: int) -> np.ndarray | None:
    """Mono samples ``[start, stop)`` through FFmpeg, or ``None``: read them with libsndfile."""
    from soundalike.audio.oggvorbis import Unsupported

    try:
        chans = vorbis.span(start, stop - start)
    except Unsupported:
        return None
    y = chans[0].copy() if len(chans) == 1 else _mix(chans)  # (the views are read-only)
    _check_finite(p, y, offset=start, sr=sr)
    return y


def _sf_span(src: _SfSource, *, n_group: int, reuse: bool, start: int, stop: int) -> np.ndarray:
    """Mono samples ``[start, stop)`` through libsndfile: on ``src`` for the first span (and
    every span of an MP3), on a fresh open of the file for the others."""
    p, src_sr = src.path, src.meta.sr
    handle = src
    if n_group and not reuse:
        handle = _sf_open(p)
        if handle is None:  # pragma: no cover - it opened a moment ago
            raise AudioDecodeError(p, "cannot open the file again")
        handle.last_page = src.last_page
    parts, done = [], start
    try:
        for block in handle._range(start, stop):
            y = _to_mono(block)
            _check_finite(p, y, offset=done, sr=src_sr)
            done += len(y)
            parts.append(y)
    finally:
        if handle is not src:
            handle.close()
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _excerpts_one_by_one(p: Path, *, sr: int, starts, lengths, margin_s: float = EXCERPT_MARGIN_S,
                         meta: AudioInfo | None = None) -> list[np.ndarray]:
    """:func:`load_excerpts` for a source read through FFmpeg: each excerpt its own seek
    (``meta``: the header, when the caller has it)."""
    meta = meta or info(p)
    src_sr = meta.sr
    out: list[np.ndarray] = []
    for a, n_src, lead, pad, n in _excerpt_spans(starts, lengths, src_sr=src_sr, sr=sr, margin_s=margin_s):
        y = np.zeros(0, np.float32)
        if n > 0 and not a >= meta.frames > 0:
            _, blocks = stream(p, offset_s=a / src_sr, duration_s=n_src / src_sr)
            y = _cut_excerpt(_collect(blocks), src_sr=src_sr, sr=sr, lead=lead, length=n)
        out.append(np.concatenate([np.zeros(pad, np.float32), y]) if pad else y)
    return out


#: Seconds before the header's end that :func:`length_checked` decodes to find the data ending there.
LENGTH_CHECK_S = 1.0


def length_checked(path: str | os.PathLike, *, slack_s: float = 0.5) -> AudioInfo | None:
    """The file's header if its length can place excerpts without decoding the whole file.

    For an analysis that reads only excerpts by seeking, placed by the header's length
    (the file is then never decoded in full): the length must be stated exactly by the
    container (not an MP3's estimate without a Xing/Info/VBRI header, not FFmpeg's
    bitrate guess outside MP4), and the data must end there: the last
    :data:`LENGTH_CHECK_S` before the stated end are decoded (one seek) and must come out
    that long, to ``slack_s``.  A header that promises more than the data (a streamed FLAC
    claiming 10^14 s, a file cut short) or less fails the check.

    Returns
    -------
    AudioInfo or None
        The header, or ``None``: decode the file whole to learn its length.

    Raises
    ------
    AudioDecodeError
        The file cannot be opened at all (as :func:`info`).
    """
    p = Path(path)
    src = _open(p)
    meta = src.meta
    exact = src._length_is_exact() if isinstance(src, _SfSource) else bool(getattr(src, "exact_length", False))
    if not exact or meta.sr <= 0 or not (0 < meta.frames < 2**62):
        src.close()
        return None
    try:
        return meta if _ends_where_stated(src, slack_s=slack_s) else None
    finally:
        src.close()


def checked_excerpts(
    path: str | os.PathLike,
    *,
    sr: int,
    place: Callable[[AudioInfo], tuple[list[int], list[int]] | None],
    margin_s: float = EXCERPT_MARGIN_S,
    slack_s: float = 0.5,
) -> tuple[AudioInfo, list[np.ndarray]] | None:
    """:func:`length_checked`, then :func:`load_excerpts` where ``place`` puts them, on one
    open file.

    ``place(header)`` gives ``(starts, lengths)`` (as :func:`load_excerpts` takes them)
    from the header's length, or ``None``: nothing to read by seeking.  The samples are
    :func:`load_excerpts`' and the check :func:`length_checked`'s; what one open saves:
    an MP3's excerpts and its last second are read on one handle, so mpg123 builds its
    seek index (a scan of every frame header from the start to the target) once to the
    end of the file, not once for the check and again for the excerpts (7 ms of the
    4-minute mp3's 10-ms check).  The check decodes the last second after the excerpts,
    on the handle that read the first of them (for Vorbis a second seek on one handle
    may land a few samples off, see :func:`_excerpts_on_one_handle`, which a sample
    count to within ``slack_s`` does not see).

    Returns
    -------
    ``(header, excerpts)``, or ``None``: the header's length cannot be trusted (decode the
    whole file to learn it) or ``place`` gave ``None``.

    Raises
    ------
    AudioDecodeError
        As :func:`load_excerpts`, where the header's length holds.
    """
    p = Path(path)
    src = _open(p)
    if not isinstance(src, _SfSource):  # FFmpeg: each excerpt its own seek anyway
        src.close()
        meta = length_checked(p, slack_s=slack_s)
        where = place(meta) if meta is not None else None
        if where is None:
            return None
        return meta, load_excerpts(p, sr=sr, starts=where[0], length=where[1], margin_s=margin_s)
    try:
        meta = src.meta
        if not src._length_is_exact() or meta.sr <= 0 or not (0 < meta.frames < 2**62):
            return None
        where = place(meta)
        if where is None:
            return None
        starts, lengths = where
        if len(lengths) != len(starts):
            raise ValueError(f"{len(starts)} starts but {len(lengths)} lengths")
        for n in lengths:
            if n <= 0:
                raise AudioDecodeError(p, f"invalid excerpt length {n}")
        try:
            out = _excerpts_on_one_handle(src, sr=sr, starts=starts, lengths=lengths, margin_s=margin_s)
        except AudioDecodeError:
            if not _ends_where_stated(src, slack_s=slack_s, keep_open=True):
                return None  # the header misplaced the excerpts: the whole decode finds out
            raise
        return (meta, out) if _ends_where_stated(src, slack_s=slack_s, keep_open=True) else None
    finally:
        src.close()


def _ends_where_stated(src: _SfSource | _AvSource, *, slack_s: float, keep_open: bool = False) -> bool:
    """Whether the last :data:`LENGTH_CHECK_S` before the header's end decode to that
    length, to ``slack_s`` (see :func:`length_checked`); ``keep_open``: a libsndfile
    ``src`` stays open for more reads."""
    meta = src.meta
    tail = min(meta.frames, int(LENGTH_CHECK_S * meta.sr))
    got = 0
    blocks = src._range(meta.frames - tail, None) if keep_open else src.blocks(meta.frames - tail, None)
    try:
        for block in blocks:
            got += len(block)
            if got > tail + slack_s * meta.sr:
                break  # more data than the header says: enough to know
    except AudioDecodeError:
        return False  # the stated end cannot even be sought: not the file's end
    finally:
        blocks.close()
    return abs(got - tail) <= slack_s * meta.sr


def _excerpt_span(j: int, *, length: int, src_sr: int, sr: int, margin_s: float) -> tuple[int, int, int]:
    """The source span an excerpt at output sample ``j >= 0`` is resampled from.

    Returns ``(first source frame, source frames, output samples of lead to drop)``.  The
    read starts on an output sample that maps onto a whole source sample, at least
    ``margin_s`` before the excerpt: then the excerpt lands exactly on the output samples
    a full decode would give them, not between them.
    """
    g = math.gcd(src_sr, sr)
    step_out = sr // g  # output samples per whole number of source samples
    step_in = src_sr // g
    margin_out = int(math.ceil(margin_s * sr / step_out)) * step_out
    first = max(0, (j - margin_out) // step_out * step_out)
    a = first // step_out * step_in
    lead = j - first
    want = lead + length + margin_out
    return a, int(math.ceil(want * src_sr / sr)), lead


def _cut_excerpt(y: np.ndarray, *, src_sr: int, sr: int, lead: int, length: int) -> np.ndarray:
    if src_sr != sr:
        from soundalike.audio.resample import resample

        y = resample(y, src_sr, sr)
    return np.ascontiguousarray(y[lead : lead + length], dtype=np.float32)


@dataclass(frozen=True)
class OnePass:
    """What :func:`read_once` got from one decode of a whole file.

    Attributes
    ----------
    excerpts : float32 ``(n,)`` per requested excerpt, at the requested rate, in order
        (shorter, possibly empty, where the file ends before the excerpt does)
    frames : source frames decoded (the real length, whatever the header said)
    sr : the file's own rate in Hz
    y : with ``whole=True``, the whole file at the requested rate (as :func:`load` gives it)
    """

    excerpts: list[np.ndarray]
    frames: int
    sr: int
    y: np.ndarray | None = None

    @property
    def duration_s(self) -> float:
        return self.frames / self.sr


def read_once(
    path: str | os.PathLike,
    *,
    sr: int,
    starts: list[int] | tuple[int, ...],
    lengths: list[int] | tuple[int, ...],
    on_block: Callable[[np.ndarray], None] | None = None,
    on_restart: Callable[[], None] | None = None,
    whole: bool = False,
    margin_s: float = EXCERPT_MARGIN_S,
) -> OnePass:
    """Decode a whole file once at its own rate, keeping only some excerpts of it.

    For a stage that needs every sample anyway (the waveform's peaks, fed each mono block
    through ``on_block``) and others that need only excerpts (spread analysis patches,
    attribute excerpts): the excerpts are cut from the same decode instead of seeking for
    each.  Excerpt ``i`` is meant to equal ``full[starts[i] : starts[i] + lengths[i]]`` with
    ``full = load(path, sr=sr).y``, cut and resampled exactly as :func:`load_excerpts` cuts
    it (same source span and margins), so the two agree to the resampler's rounding (and
    for Ogg Vorbis FFmpeg's ~1e-7 from libvorbis) -- closer, for lossy formats, than a
    seek that lands only approximately.  Memory: the
    excerpts' source spans and one block, never the whole file.

    Parameters
    ----------
    path : audio file
    sr : the excerpts' rate in Hz
    starts, lengths : first sample (an index into the ``sr``-Hz signal; negative = zeros
        before the track) and samples of each excerpt
    on_block : called with every decoded mono float32 block at the file's rate, in order
    on_restart : called when the decode starts over from the first sample, so ``on_block``'s
        receiver forgets what it got.  Ogg Vorbis is decoded by FFmpeg (half libvorbis'
        time; its samples agree with libvorbis' to ~1e-7, not bit for bit); where FFmpeg
        fails or its length disagrees with libvorbis', the file is read again with
        libsndfile.  With ``on_block`` but no ``on_restart`` libsndfile reads it at once.
    whole : also keep the whole file resampled to ``sr`` (:attr:`OnePass.y`, bit for bit
        what :func:`load` gives -- for Ogg Vorbis to ~1e-7, see ``on_restart``): for a full
        analysis, which reads every sample
    margin_s : context decoded on each side of an excerpt (see :func:`load_excerpts`)

    Raises
    ------
    AudioDecodeError
        As :func:`stream`: the file cannot be opened, or its data is corrupt or truncated.
    """
    p = Path(path)
    if len(starts) != len(lengths):
        raise ValueError(f"{len(starts)} starts but {len(lengths)} lengths")
    src = _open(p)
    if isinstance(src, _SfSource) and src.meta.subtype == "VORBIS" and (on_block is None or on_restart is not None):
        src.close()
        try:
            return _read_once_from(p, _ffmpeg_vorbis_blocks(p, src.meta), src_sr=src.meta.sr, sr=sr,
                                   starts=starts, lengths=lengths, on_block=on_block, whole=whole,
                                   margin_s=margin_s)
        except _FfmpegDisagrees:
            if on_restart is not None:
                on_restart()
        src = _open(p)
    return _read_once_from(p, _mono_blocks(p, src), src_sr=src.meta.sr, sr=sr, starts=starts,
                           lengths=lengths, on_block=on_block, whole=whole, margin_s=margin_s)


class _FfmpegDisagrees(Exception):
    """FFmpeg could not decode a Vorbis stream exactly as libvorbis does (read it again there)."""


def _mono_blocks(p: Path, src: _SfSource | _AvSource) -> Iterator[np.ndarray]:
    """Every sample of an opened file as mono float32 blocks at its own rate (as :func:`stream`)."""
    done = 0
    try:
        for block in src.blocks(0, None):
            y = _to_mono(block)
            _check_finite(p, y, offset=done, sr=src.meta.sr)
            done += len(y)
            yield y
    finally:
        src.close()


def _ffmpeg_vorbis_blocks(p: Path, meta: AudioInfo) -> Iterator[np.ndarray]:
    """A whole Ogg Vorbis file decoded by FFmpeg, as mono float32 blocks of ~``BLOCK_FRAMES``.

    Why: FFmpeg's Vorbis decoder takes about half of libvorbis' time (224 vs 441 ms for a
    3.4-minute stereo game soundtrack), and its samples agree with libvorbis' to ~1e-7
    (float rounding in the inverse MDCT).  The mono mix is :func:`_to_mono`'s.  Frames are
    taken in order; a first frame that FFmpeg stamps before zero is one libvorbis does not
    output (the stream's start trimmed: 6 of 117 game soundtracks), so it is dropped.  A
    decoding error or another total than libvorbis states (``meta.frames``, exact for
    Vorbis; a chained stream, a start trimmed otherwise) raises :class:`_FfmpegDisagrees`,
    and the caller reads the file again with libsndfile (which also gives the real error,
    if there is one).  (FFmpeg's later timestamps are per Ogg page, interpolated, and do
    not count samples exactly, so only the total is checked.)
    """
    import av

    try:
        container = av.open(str(p), mode="r", metadata_errors="replace")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise _FfmpegDisagrees(str(exc)) from exc
    done = 0  # samples yielded
    at = 0  # samples taken (yielded + pending)
    try:
        if len(container.streams.audio) != 1 or container.streams.audio[0].codec_context.name != "vorbis":
            raise _FfmpegDisagrees("not one Vorbis stream")
        st = container.streams.audio[0]
        if st.time_base is None or st.time_base.numerator != 1 or st.time_base.denominator != meta.sr:
            raise _FfmpegDisagrees(f"time base {st.time_base}")
        n_ch = meta.channels
        parts: list[list[np.ndarray]] = [[] for _ in range(n_ch)]
        f32 = np.float32

        def flush() -> np.ndarray:
            chans = [np.concatenate(c) if len(c) > 1 else c[0] for c in parts]
            for c in parts:
                c.clear()
            y = _mix(chans) if n_ch > 1 else np.array(chans[0], f32)
            _check_finite(p, y, offset=done, sr=meta.sr)
            return y

        for frame in container.decode(st):
            k = frame.samples
            if at == 0 and (frame.pts is None or frame.pts < 0):
                if frame.pts is None:
                    raise _FfmpegDisagrees("a frame without a timestamp")
                continue  # before the stream's first sample: libvorbis trims it
            planes = frame.planes
            if len(planes) != n_ch or frame.format.name != "fltp":
                raise _FfmpegDisagrees(f"{frame.format.name} frame with {len(planes)} planes")
            # one plane per channel, padded: only the first k floats are samples
            for c, plane in zip(parts, planes):
                c.append(np.frombuffer(plane, f32, k))
            at += k
            if at - done >= BLOCK_FRAMES:
                y = flush()
                done += len(y)
                yield y
        if at > done:
            y = flush()
            done += len(y)
            yield y
    except av.error.FFmpegError as exc:
        raise _FfmpegDisagrees(str(exc)) from exc
    finally:
        container.close()
    if done != meta.frames:
        raise _FfmpegDisagrees(f"{done} frames, libvorbis says {meta.frames}")


def _read_once_from(p: Path, blocks: Iterator[np.ndarray], *, src_sr: int, sr: int,
                    starts: list[int] | tuple[int, ...], lengths: list[int] | tuple[int, ...],
                    on_block: Callable[[np.ndarray], None] | None, whole: bool, margin_s: float) -> OnePass:
    spans = []  # (a, n_src, lead, zeros before, length) per excerpt
    for j, n in zip(starts, lengths):
        j, n = int(j), int(n)
        if n <= 0:
            raise AudioDecodeError(p, f"invalid excerpt length {n}")
        pad = min(max(0, -j), n)
        a, n_src, lead = _excerpt_span(max(0, j), length=n - pad, src_sr=src_sr, sr=sr, margin_s=margin_s)
        spans.append((a, n_src, lead, pad, n - pad))
    bufs: list[list[np.ndarray]] = [[] for _ in spans]
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    resample = _Resampler(src_sr, sr) if whole else None
    resampled: list[np.ndarray] = []
    pos = 0
    for block in blocks:
        if on_block is not None:
            on_block(block)
        if resample is not None:
            resampled.append(resample(block))
        end = pos + len(block)
        for i in order:
            a, n_src, *_ = spans[i]
            if a >= end:
                break
            lo, hi = max(a, pos), min(a + n_src, end)
            if lo < hi:
                bufs[i].append(block[lo - pos : hi - pos])
        pos = end
    if resample is not None:
        resampled.append(resample(np.zeros(0, np.float32), last=True))
    out = []
    for (a, n_src, lead, pad, n), parts in zip(spans, bufs):
        y = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        cut = _cut_excerpt(y, src_sr=src_sr, sr=sr, lead=lead, length=n) if n > 0 and len(y) else \
            np.zeros(0, np.float32)
        out.append(np.concatenate([np.zeros(pad, np.float32), cut]) if pad else cut)
    y_all = _collect(iter(resampled)) if resample is not None else None
    return OnePass(out, pos, src_sr, y_all)


def _collect(blocks: Iterator[np.ndarray], *, limit: int | None = None) -> np.ndarray | None:
    """Concatenate blocks into one array, growing it geometrically (peak ~1.5x the result).

    Returns None (and stops decoding) once more than ``limit`` samples arrived.
    """
    buf = np.empty(0, np.float32)
    n = 0
    for b in blocks:
        if limit is not None and n + len(b) > limit:
            blocks.close()  # type: ignore[attr-defined] - a generator: closes the file now
            return None
        if n + len(b) > len(buf):
            grown = np.empty(max(n + len(b), len(buf) + len(buf) // 2, 1 << 16), np.float32)
            grown[:n] = buf[:n]
            buf = grown
        buf[n : n + len(b)] = b
        n += len(b)
    if n < len(buf):
        buf.resize(n, refcheck=False)  # shrinks in place: no second copy at the peak
    return buf


def duration(path: str | os.PathLike) -> float:
    """Duration in seconds from the header (no decoding)."""
    return info(path).duration_s


def is_audio_path(path: str | os.PathLike) -> bool:
    """Whether a path's extension is one ingest should try to decode."""
    return Path(path).suffix.lower().lstrip(".") in AUDIO_EXTENSIONS


def frames_to_s(n: int, sr: int) -> float:
    return n / sr if sr else math.nan
