"""Live audio sources: one interface yielding mono float32 blocks with their rate.

Three kinds of source feed live recognition:

* :class:`MicrophoneSource` -- the default or a selected input device, through
  PortAudio (``sounddevice``).  :func:`list_input_devices` lists what exists.
* :class:`FileSource` -- an audio file played as if it were live, paced in real time
  or delivered as fast as the consumer takes it.
* :class:`PCMStreamSource` -- raw interleaved PCM from a binary stream (stdin).

Every source has ``sr`` (Hz), ``name`` and ``blocks()``, an iterator of float32
``(n,)`` blocks in ``[-1, 1]`` (non-finite samples become 0), and is a context
manager whose ``close()`` releases the device or file.  The recognizer resamples to
the model's rate, so a source delivers whatever rate the device or file has.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, runtime_checkable

import numpy as np

from soundalike.errors import DeviceError, SoundalikeError

PCMFormat = Literal["s16le", "s32le", "f32le", "f64le", "u8"]
#: numpy dtype and full-scale of each raw PCM format.
PCM_FORMATS: dict[str, tuple[str, float, float]] = {
    # name: (dtype, scale, offset) -> float = (x - offset) / scale
    "s16le": ("<i2", 32768.0, 0.0),
    "s32le": ("<i4", 2147483648.0, 0.0),
    "f32le": ("<f4", 1.0, 0.0),
    "f64le": ("<f8", 1.0, 0.0),
    "u8": ("u1", 128.0, 128.0),
}

#: Default block length delivered by sources, in seconds.
DEFAULT_BLOCK_S = 0.05


@runtime_checkable
class AudioSource(Protocol):
    """Anything live recognition can listen to.

    Attributes
    ----------
    sr : sample rate of the blocks, in Hz
    name : human description ("microphone: pulse", "file: song.ogg (real time)", ...)
    """

    sr: int
    name: str

    def blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 ``(n,)`` blocks at ``sr`` until the source ends (or forever)."""
        ...

    def close(self) -> None:
        """Release the device, file or stream (idempotent)."""
        ...


def _sanitize(block: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) any-float -> finite float32 mono (frames,)."""
    block = np.asarray(block)
    if block.ndim == 2:
        block = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
    y = np.ascontiguousarray(block, dtype=np.float32)
    if y.size and not np.isfinite(y).all():
        y = np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=-1.0)
    return y


class _SourceBase:
    sr: int
    name: str

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden where there is something to free
        pass


# --------------------------------------------------------------------------- arrays


class ArraySource(_SourceBase):
    """An in-memory signal delivered in blocks (tests, benchmarks, the Python API).

    Parameters
    ----------
    y : float samples ``(n,)`` or ``(n, channels)``
    sr : its rate in Hz
    block_s : block length in seconds
    realtime : sleep so blocks arrive no faster than real time
    """

    def __init__(self, y: np.ndarray, sr: int, *, block_s: float = DEFAULT_BLOCK_S,
                 realtime: bool = False, name: str = "array"):
        self.y = _sanitize(y)
        self.sr = int(sr)
        self.block = max(1, int(round(block_s * self.sr)))
        self.realtime = realtime
        self.name = name

    def blocks(self) -> Iterator[np.ndarray]:
        pacer = _Pacer(self.sr) if self.realtime else None
        for start in range(0, len(self.y), self.block):
            b = self.y[start : start + self.block]
            if pacer is not None:
                pacer.wait(len(b))
            yield b


class _Pacer:
    """Sleeps so that ``n`` samples are released no earlier than they would play."""

    def __init__(self, sr: int):
        self.sr = sr
        self.t0 = time.perf_counter()
        self.sent = 0

    def wait(self, n: int) -> None:
        self.sent += n
        delay = self.t0 + self.sent / self.sr - time.perf_counter()
        if delay > 0:
            time.sleep(delay)


# --------------------------------------------------------------------------- files


class FileSource(_SourceBase):
    """An audio file played as if live.

    Parameters
    ----------
    path : any file :func:`soundalike.audio.io.load` reads
    realtime : ``True`` paces blocks at the file's playing speed (a block of ``block_s``
        is released once ``block_s`` of wall time has passed); ``False`` delivers them as
        fast as the consumer takes them
    block_s : block length in seconds
    offset_s, duration_s : the part of the file to play
    loop : start over at the end (for demos and benchmarks)

    Raises
    ------
    AudioDecodeError
        When the file cannot be decoded (raised on construction, not mid-stream).
    """

    def __init__(self, path: str | os.PathLike, *, realtime: bool = True,
                 block_s: float = DEFAULT_BLOCK_S, offset_s: float = 0.0,
                 duration_s: float | None = None, loop: bool = False):
        from soundalike.audio.io import info

        self.path = Path(path)
        self.sr = int(info(self.path).sr)  # validates the file now
        self.realtime = realtime
        self.block = max(1, int(round(block_s * self.sr)))
        self.offset_s = offset_s
        self.duration_s = duration_s
        self.loop = loop
        self.name = f"file: {self.path.name} ({'real time' if realtime else 'fast'})"

    def _decoded(self) -> Iterator[np.ndarray]:
        from soundalike.audio.io import stream

        while True:
            _, blocks = stream(self.path, offset_s=self.offset_s, duration_s=self.duration_s)
            yield from blocks
            if not self.loop:
                return

    def blocks(self) -> Iterator[np.ndarray]:
        pacer = _Pacer(self.sr) if self.realtime else None
        pending = np.zeros(0, np.float32)
        for decoded in self._decoded():
            pending = np.concatenate([pending, _sanitize(decoded)])
            while len(pending) >= self.block:
                b, pending = pending[: self.block], pending[self.block :]
                if pacer is not None:
                    pacer.wait(len(b))
                yield b
        if len(pending):
            if pacer is not None:
                pacer.wait(len(pending))
            yield pending


# --------------------------------------------------------------------------- raw PCM


class PCMStreamSource(_SourceBase):
    """Raw interleaved little-endian PCM from a binary stream (``stdin`` by default).

    Parameters
    ----------
    stream : binary file object (``sys.stdin.buffer`` when ``None``)
    sr : sample rate of the data in Hz
    format : ``s16le``, ``s32le``, ``f32le``, ``f64le`` or ``u8``
    channels : interleaved channel count (mixed down to mono)
    block_s : block length in seconds

    Example: ``ffmpeg -i song.mp3 -f s16le -ac 1 -ar 22050 - | soundalike listen --stdin``.
    """

    def __init__(self, stream: BinaryIO | None = None, *, sr: int = 22050,
                 format: PCMFormat = "s16le", channels: int = 1, block_s: float = DEFAULT_BLOCK_S):
        if format not in PCM_FORMATS:
            raise SoundalikeError(f"unknown PCM format {format!r}: choose one of {', '.join(PCM_FORMATS)}")
        if channels < 1:
            raise SoundalikeError(f"PCM channels must be >= 1, got {channels}")
        if not 1000 <= sr <= 384000:
            raise SoundalikeError(f"PCM sample rate must be in 1000..384000 Hz, got {sr}")
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.sr = int(sr)
        self.format = format
        self.channels = int(channels)
        self.dtype, self.scale, self.offset = PCM_FORMATS[format]
        self.frame_bytes = np.dtype(self.dtype).itemsize * self.channels
        self.block = max(1, int(round(block_s * self.sr)))
        self.name = f"stdin: {format} {self.sr} Hz x{self.channels}"
        self.realtime = False  # a pipe may deliver faster than real time: analyse every hop

    def decode(self, data: bytes) -> np.ndarray:
        """Whole frames of raw bytes -> mono float32 ``(frames,)``."""
        x = np.frombuffer(data, dtype=self.dtype).reshape(-1, self.channels)
        y = (x.astype(np.float32) - np.float32(self.offset)) / np.float32(self.scale)
        return _sanitize(y)

    def blocks(self) -> Iterator[np.ndarray]:
        want = self.block * self.frame_bytes
        rest = b""
        read = getattr(self.stream, "read1", self.stream.read)
        while True:
            chunk = read(want)
            if not chunk:
                break
            data = rest + chunk
            cut = len(data) - len(data) % self.frame_bytes
            data, rest = data[:cut], data[cut:]
            if data:
                yield self.decode(data)


# --------------------------------------------------------------------------- microphones


@dataclass(frozen=True)
class InputDevice:
    """One audio input device as PortAudio sees it."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    default_samplerate: float
    is_default: bool

    def to_dict(self) -> dict:
        return dict(index=self.index, name=self.name, hostapi=self.hostapi,
                    max_input_channels=self.max_input_channels,
                    default_samplerate=self.default_samplerate, is_default=self.is_default)


def _sounddevice():
    try:
        import sounddevice as sd
    except OSError as exc:  # the module raises OSError when libportaudio is missing
        raise DeviceError(
            f"PortAudio is not available ({exc}); install it (Debian: apt-get install libportaudio2)"
        ) from exc
    except ImportError as exc:
        raise DeviceError(f"the sounddevice package is not installed ({exc})") from exc
    return sd


def list_input_devices() -> list[InputDevice]:
    """Audio input devices, in PortAudio's order (may be empty).

    Raises
    ------
    DeviceError
        PortAudio itself is missing.
    """
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        raise DeviceError(f"cannot query audio devices: {exc}") from exc
    out = []
    for i, d in enumerate(devices):
        if int(d["max_input_channels"]) <= 0:
            continue
        out.append(InputDevice(index=i, name=str(d["name"]),
                               hostapi=str(hostapis[d["hostapi"]]["name"]),
                               max_input_channels=int(d["max_input_channels"]),
                               default_samplerate=float(d["default_samplerate"]),
                               is_default=(i == default_in)))
    return out


def resolve_device(spec: int | str | None) -> InputDevice:
    """The input device for ``spec``: ``None`` (the default), an index, or a name substring.

    Raises
    ------
    DeviceError
        No input device exists, or none matches ``spec``.
    """
    devices = list_input_devices()
    if not devices:
        raise DeviceError(
            "no audio input device found (no microphone, or PortAudio sees no sound server); "
            "use --file or --stdin, or check `soundalike listen --list-devices`"
        )
    if spec is None or spec == "":
        for d in devices:
            if d.is_default:
                return d
        return devices[0]
    text = str(spec).strip()
    if text.isdigit():
        for d in devices:
            if d.index == int(text):
                return d
        raise DeviceError(f"no input device with index {text}; see `soundalike listen --list-devices`")
    hits = [d for d in devices if text.lower() in d.name.lower()]
    if not hits:
        raise DeviceError(f"no input device matches {text!r}; see `soundalike listen --list-devices`")
    return hits[0]


class MicrophoneSource(_SourceBase):
    """An input device read through PortAudio (``sounddevice.InputStream``).

    The audio callback only copies blocks into a queue; analysis happens in the
    consumer's thread, so a slow model never blocks the device.  If the consumer falls
    behind by more than ``max_queue_s``, the oldest audio is dropped (counted in
    ``dropped_blocks``) -- live recognition prefers fresh audio over complete audio.

    Parameters
    ----------
    device : ``None`` (default input), a device index, or a name substring
    sr : rate to open the device at; ``None`` uses ``prefer_sr`` when the device
        supports it, else the device's default rate
    prefer_sr : rate to try first (usually the analyzer's, saving a resampling step)
    channels : channels to capture (mixed to mono)
    block_s : block length in seconds

    Raises
    ------
    DeviceError
        PortAudio missing, no input device, or the device cannot be opened.
    """

    def __init__(self, device: int | str | None = None, *, sr: int | None = None,
                 prefer_sr: int | None = None, channels: int = 1,
                 block_s: float = DEFAULT_BLOCK_S, max_queue_s: float = 10.0):
        sd = _sounddevice()
        self.device = resolve_device(device)
        self.channels = max(1, min(int(channels), self.device.max_input_channels))
        if sr is None:
            sr = int(self.device.default_samplerate)
            if prefer_sr is not None:
                try:
                    sd.check_input_settings(device=self.device.index, samplerate=prefer_sr,
                                            channels=self.channels, dtype="float32")
                    sr = int(prefer_sr)
                except Exception:  # noqa: BLE001 - PortAudio says "invalid sample rate" in many ways
                    pass
        self.sr = int(sr)
        self.name = f"microphone: {self.device.name} ({self.sr} Hz)"
        self.realtime = True
        self.block = max(1, int(round(block_s * self.sr)))
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=max(2, int(max_queue_s / block_s)))
        self.dropped_blocks = 0
        self.status_flags = 0
        try:
            self._stream = sd.InputStream(device=self.device.index, samplerate=self.sr,
                                          channels=self.channels, dtype="float32",
                                          blocksize=self.block, callback=self._callback)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise DeviceError(f"cannot open input device {self.device.name!r} at {self.sr} Hz: {exc}") from exc
        self._closed = False

    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio thread
        if status:
            self.status_flags += 1
        block = _sanitize(indata.copy())
        try:
            self._queue.put_nowait(block)
        except queue.Full:
            try:
                self._queue.get_nowait()
                self.dropped_blocks += 1
            except queue.Empty:
                pass
            self._queue.put_nowait(block)

    def blocks(self) -> Iterator[np.ndarray]:
        """Blocks as they arrive; everything already queued comes out as one block."""
        while not self._closed:
            try:
                parts = [self._queue.get(timeout=0.5)]
            except queue.Empty:
                if not self._stream.active:
                    raise DeviceError(f"input device {self.device.name!r} stopped delivering audio")
                continue
            while True:
                try:
                    parts.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            yield parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            self._stream.stop()
            self._stream.close()
        except Exception:  # noqa: BLE001 - closing a device that vanished must not mask the real error
            pass
