"""Mel-spectrogram images for the web page (rendered with matplotlib, cached in memory)."""

from __future__ import annotations

import functools
import io

from soundalike.config import MelConfig

#: How much of a track the image shows, in seconds (from the start).
MAX_SECONDS = 30.0
_MEL = MelConfig(sample_rate=22050, n_fft=2048, hop_length=512, n_mels=96, top_db=80.0)


def spectrogram_png(path: str, *, content_hash: str = "", width_px: int = 720, height_px: int = 220) -> bytes:
    """PNG of the log-mel spectrogram of the first :data:`MAX_SECONDS` of ``path``.

    Cached per (path, content hash, size), so a changed file gets a new image.

    Raises
    ------
    AudioDecodeError
        The file cannot be decoded.
    """
    return _render(path, content_hash, width_px, height_px)


@functools.lru_cache(maxsize=64)
def _render(path: str, content_hash: str, width_px: int, height_px: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from matplotlib.figure import Figure

    from soundalike.audio.features import logmel
    from soundalike.audio.io import load

    y, sr = load(path, sr=_MEL.sample_rate, duration_s=MAX_SECONDS)
    S_db = np.asarray(logmel(y, _MEL), np.float32)
    dpi = 100
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    ax = fig.add_axes((0.06, 0.16, 0.93, 0.8))
    duration = len(y) / sr
    ax.imshow(S_db, origin="lower", aspect="auto", cmap="magma",
              extent=(0.0, duration, 0, S_db.shape[0]))
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel("mel band", fontsize=8)
    ax.tick_params(labelsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
