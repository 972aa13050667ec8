"""Shared synthetic-audio fixtures.  Nothing here reads ../shared: every signal is made
by :mod:`soundalike.audio.synth` and every file is written to a temporary directory.

Signals (mono float32 at ``sr`` = 22050 Hz, 1 s unless said otherwise):
``tone_440``, ``chirp`` (100 Hz -> 8 kHz), ``clicks`` (4 per second), ``white_noise``,
``silence``; ``stereo_44k`` is a ``(n, 2)`` float32 array at 44.1 kHz (2 s).

Files (session-scoped, written once):
``audio_files``: format -> path for every supported format, each holding ``stereo_44k``
(opus: the same signal made at 48 kHz, the only rates Opus has);
``corrupt_files``: reason -> path of files that must raise ``AudioDecodeError``, all in
one directory that holds nothing else (so a whole-directory ingest sees only them).
"""

from __future__ import annotations

import os
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from soundalike.audio import synth

SR = 22050
STEREO_SR = 44100
STEREO_DURATION_S = 2.0
OPUS_SR = 48000

#: format name -> (file name, libsndfile format, subtype); m4a is written with PyAV.
SOUNDFILE_FORMATS: dict[str, tuple[str, str, str]] = {
    "wav": ("stereo.wav", "WAV", "PCM_16"),
    "flac": ("stereo.flac", "FLAC", "PCM_16"),
    "mp3": ("stereo.mp3", "MP3", "MPEG_LAYER_III"),
    "ogg": ("stereo.ogg", "OGG", "VORBIS"),
    "opus": ("stereo.opus", "OGG", "OPUS"),
    "au": ("stereo.au", "AU", "PCM_16"),
    "aiff": ("stereo.aiff", "AIFF", "PCM_16"),
}
ALL_FORMATS = (*SOUNDFILE_FORMATS, "m4a")
LOSSLESS_FORMATS = ("wav", "flac", "au", "aiff")


def stereo_signal(sr: int, duration_s: float = STEREO_DURATION_S) -> np.ndarray:
    """Left: exponential chirp; right: a 330 Hz harmonic tone. float32 ``(n, 2)``.

    Tonal on purpose: AAC's perceptual noise substitution (PNS) decodes noise-like bands
    with a pseudo-random generator whose state differs after a seek, which would blur
    the partial-read tests.
    """
    left = synth.chirp(f0=100.0, f1=6000.0, duration_s=duration_s, sr=sr, amplitude=0.5)
    right = synth.harmonic_tone(330.0, duration_s=duration_s, sr=sr, amplitude=0.4, n_harmonics=5)
    y = np.stack([left, right], axis=1)
    # Fade out: an abrupt end is broadband, and AAC codes such frames with PNS noise.
    fade = int(0.2 * sr)
    y[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    return y


def write_m4a(path: Path, y: np.ndarray, sr: int) -> Path:
    """AAC in MP4 via PyAV. Frames carry timestamps so the muxer writes an edit list that
    hides the encoder's priming samples (as iTunes/FFmpeg files do)."""
    import av

    y = np.asarray(y, np.float32)
    y = np.ascontiguousarray(y.T if y.ndim == 2 else y[None])  # (channels, n), planar
    layout = "stereo" if y.shape[0] == 2 else "mono"
    with av.open(str(path), "w") as container:
        st = container.add_stream("aac", rate=sr)
        st.layout = layout
        step = 4096
        for i in range(0, y.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(y[:, i : i + step]), format="fltp",
                                               layout=layout)
            frame.sample_rate = sr
            frame.pts = i
            frame.time_base = Fraction(1, sr)
            for packet in st.encode(frame):
                container.mux(packet)
        for packet in st.encode(None):
            container.mux(packet)
    return path


def write_audio(path: Path, fmt: str, y: np.ndarray, sr: int) -> Path:
    """Write ``y`` ((n,) or (n, channels)) as ``fmt`` (a key of ``ALL_FORMATS``)."""
    import soundfile as sf

    if fmt == "m4a":
        return write_m4a(path, y, sr)
    _, container, subtype = SOUNDFILE_FORMATS[fmt]
    sf.write(str(path), y, sr, format=container, subtype=subtype)
    return path


# --------------------------------------------------------------------------- signals


@pytest.fixture(scope="session")
def sr() -> int:
    return SR


@pytest.fixture(scope="session")
def tone_440(sr: int) -> np.ndarray:
    return synth.tone(440.0, duration_s=1.0, sr=sr, amplitude=0.5)


@pytest.fixture(scope="session")
def chirp(sr: int) -> np.ndarray:
    return synth.chirp(f0=100.0, f1=8000.0, duration_s=1.0, sr=sr)


@pytest.fixture(scope="session")
def clicks(sr: int) -> np.ndarray:
    return synth.clicks(interval_s=0.25, duration_s=1.0, sr=sr)


@pytest.fixture(scope="session")
def white_noise(sr: int) -> np.ndarray:
    return synth.noise(duration_s=1.0, sr=sr, amplitude=0.3, seed=0)


@pytest.fixture(scope="session")
def silence(sr: int) -> np.ndarray:
    return synth.silence(duration_s=1.0, sr=sr)


@pytest.fixture(scope="session")
def stereo_44k() -> np.ndarray:
    """float32 ``(88200, 2)`` at 44.1 kHz."""
    return stereo_signal(STEREO_SR)


# --------------------------------------------------------------------------- files


@pytest.fixture(scope="session")
def audio_files(tmp_path_factory, stereo_44k) -> dict[str, Path]:
    """Every supported format written from ``stereo_44k`` (opus: at 48 kHz)."""
    d = tmp_path_factory.mktemp("formats")
    out: dict[str, Path] = {}
    for fmt in ALL_FORMATS:
        name = SOUNDFILE_FORMATS[fmt][0] if fmt in SOUNDFILE_FORMATS else "stereo.m4a"
        if fmt == "opus":
            out[fmt] = write_audio(d / name, fmt, stereo_signal(OPUS_SR), OPUS_SR)
        else:
            out[fmt] = write_audio(d / name, fmt, stereo_44k, STEREO_SR)
    return out


def _truncate(src: Path, dst: Path, keep: float = 0.4) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.fixture(scope="session")
def corrupt_files(tmp_path_factory, audio_files) -> dict[str, Path]:
    """reason -> path; each must raise ``AudioDecodeError`` (see test_audio_io)."""
    import soundfile as sf

    d = tmp_path_factory.mktemp("corrupt")
    y = synth.chirp(duration_s=1.0, sr=SR)
    out: dict[str, Path] = {}
    out["zero_bytes"] = d / "empty.wav"
    out["zero_bytes"].write_bytes(b"")
    for fmt in ("wav", "flac", "mp3", "ogg", "aiff", "m4a"):
        src = audio_files[fmt]
        out[f"truncated_{fmt}"] = _truncate(src, d / f"truncated{src.suffix}")
    out["header_only_wav"] = _truncate(audio_files["wav"], d / "header_only.wav", keep=44 / audio_files["wav"].stat().st_size)
    text = "This is a text file, not audio.\n" * 40
    out["not_audio_wav"] = d / "notes.wav"
    out["not_audio_wav"].write_text(text)
    out["not_audio_mp3"] = d / "notes.mp3"
    out["not_audio_mp3"].write_text(text)
    out["random_bytes_ogg"] = d / "random.ogg"
    out["random_bytes_ogg"].write_bytes(np.random.default_rng(0).bytes(8000))
    # A WAV whose format tag (0x1234) no decoder knows.
    sf.write(str(d / "_pcm.wav"), y, SR, subtype="PCM_16")
    raw = bytearray((d / "_pcm.wav").read_bytes())
    (d / "_pcm.wav").unlink()
    fmt_at = raw.find(b"fmt ") + 8
    raw[fmt_at : fmt_at + 2] = struct.pack("<H", 0x1234)
    out["unsupported_codec"] = d / "unknown_codec.wav"
    out["unsupported_codec"].write_bytes(bytes(raw))
    bad = y.copy()
    bad[SR // 2] = np.nan
    out["nan_samples"] = d / "nan.wav"
    sf.write(str(out["nan_samples"]), bad, SR, subtype="FLOAT")
    bad = y.copy()
    bad[SR // 4] = np.inf
    out["inf_samples"] = d / "inf.wav"
    sf.write(str(out["inf_samples"]), bad, SR, subtype="FLOAT")
    out["too_short"] = d / "short.wav"
    sf.write(str(out["too_short"]), y[: int(0.05 * SR)], SR, subtype="PCM_16")
    return out


# --------------------------------------------------------------------------- system dependencies

#: Set by `make test`, which installs the Debian packages the browser and microphone tests
#: need: there, a test that would skip for a missing system package fails instead, so a
#: broken install step can never pass CI silently.
STRICT_DEPS = os.environ.get("SOUNDALIKE_STRICT_DEPS") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if STRICT_DEPS and rep.skipped and any(item.get_closest_marker(m) for m in ("browser", "pulse", "postgres")):
        rep.outcome = "failed"
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.longrepr = f"skipped, but SOUNDALIKE_STRICT_DEPS=1 requires it to run: {reason}"


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models run faster on one torch thread and do not fight parallel test workers."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- catalogs on both backends

#: Catalog backends the parametrised fixtures run on; PostgreSQL cases carry the
#: ``postgres`` mark (a missing server skips, and fails under SOUNDALIKE_STRICT_DEPS=1).
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A real PostgreSQL server (Debian's ``postgresql``), started once per test process.

    Server catalogs keep their faiss indexes in the data directory: pointed at a temporary
    one here, so no test writes into the user's.
    """
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("needs psycopg 3 (pip install 'psycopg[binary]'; `make test` installs it)")
    from pgserver import PgServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("needs PostgreSQL server binaries (Debian postgresql; `make test` installs it)")
    old = os.environ.get("SOUNDALIKE_DATA_DIR")
    os.environ["SOUNDALIKE_DATA_DIR"] = str(tmp_path_factory.mktemp("soundalike-data"))
    server = PgServer(bin_dir).start()
    yield server
    server.stop()
    if old is None:
        os.environ.pop("SOUNDALIKE_DATA_DIR", None)
    else:
        os.environ["SOUNDALIKE_DATA_DIR"] = old


def new_catalog_target(backend: str, tmp_path: Path, request) -> str | Path:
    """A fresh, empty catalog on ``backend``: a SQLite file under ``tmp_path`` or a new database."""
    if backend == "sqlite":
        return tmp_path / "catalog.sqlite"
    return request.getfixturevalue("pg_server").new_database()


@pytest.fixture(params=BACKENDS)
def catalog_target(request, tmp_path) -> str | Path:
    """One fresh catalog per test, on each backend: pass it wherever a catalog is named."""
    return new_catalog_target(request.param, tmp_path, request)
