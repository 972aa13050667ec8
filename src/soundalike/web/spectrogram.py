"""Mel-spectrogram images for the web page: :func:`soundalike.audio.plot.spectrogram_png`
over the first :data:`MAX_SECONDS` of a track, cached in memory."""

from __future__ import annotations

import functools

from soundalike.config import MelConfig

#: How much of a track the image shows, in seconds (from the start).
MAX_SECONDS = 30.0
_MEL = MelConfig(sample_rate=22050, n_fft=2048, hop_length=512, n_mels=96, top_db=80.0)


def spectrogram_png(path: str, *, content_hash: str = "", width_px: int = 720, height_px: int = 240) -> bytes:
    """PNG of the log-mel spectrogram of the first :data:`MAX_SECONDS` of ``path``.

    Time in seconds on the x axis, mel bands labelled with their centre frequency in Hz,
    a dB colour bar (the one renderer of :mod:`soundalike.audio.plot`).  Cached per
    (path, content hash, size), so a changed file gets a new image.

    Raises
    ------
    AudioDecodeError
        The file cannot be decoded.
    """
    return _render(path, content_hash, width_px, height_px)


@functools.lru_cache(maxsize=64)
def _render(path: str, content_hash: str, width_px: int, height_px: int) -> bytes:
    from soundalike.audio.io import load
    from soundalike.audio.plot import spectrogram_png as render

    y, sr = load(path, sr=_MEL.sample_rate, duration_s=MAX_SECONDS)
    dpi = 100
    return render(y=y, sr=sr, kind="mel", config=_MEL, figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
