"""Sample-rate conversion of in-memory signals (soxr, high quality)."""

from __future__ import annotations

import numpy as np


def resample(y: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample float ``(n,)`` or ``(channels, n)`` samples from ``sr_in`` to ``sr_out`` Hz.

    Returns float32; the duration is kept (``len(out) == round(len(y) * sr_out / sr_in)``).
    """
    y = np.asarray(y, dtype=np.float32)
    if sr_in == sr_out:
        return y
    import soxr

    if y.ndim == 1:
        return soxr.resample(y, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(soxr.resample(y.T, sr_in, sr_out, quality="HQ").T, dtype=np.float32)
