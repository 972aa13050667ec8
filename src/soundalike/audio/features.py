"""Spectral features in PyTorch, float32: power STFT, Slaney log-mel and MFCC.

They agree with librosa at equal parameters (``center=True`` with zero padding,
periodic Hann window, Slaney mel scale and area normalisation, ``power_to_db`` with
``ref=1``, orthonormal DCT-II), which the test suite checks.

Inputs may be NumPy arrays or torch tensors, a single signal ``(n,)`` or a batch
``(..., n)``; outputs have the same kind (NumPy in, NumPy out) and shape
``(..., n_mels, n_frames)``.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from soundalike.config import MelConfig, MFCCConfig

if TYPE_CHECKING:
    import torch


# --------------------------------------------------------------------------- mel scale (Slaney)

_F_SP = 200.0 / 3  # Hz per mel below the break
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel: linear below 1 kHz, logarithmic above."""
    hz = np.asanyarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-300) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, mel)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asanyarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, hz)


def mel_frequencies(n_mels: int, *, fmin: float, fmax: float) -> np.ndarray:
    """``n_mels`` frequencies (Hz) evenly spaced on the Slaney mel scale, float64."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels))


@functools.lru_cache(maxsize=32)
def _mel_filterbank_cached(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    fft_freqs = np.linspace(0.0, sr / 2, 1 + n_fft // 2)
    edges = mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]  # Slaney area norm
    weights = weights.astype(np.float32)
    weights.setflags(write=False)
    return weights


def mel_filterbank(*, sr: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular mel filters, float32 ``(n_mels, 1 + n_fft // 2)``."""
    return _mel_filterbank_cached(int(sr), int(n_fft), int(n_mels), float(fmin),
                                  float(fmax if fmax is not None else sr / 2))


@functools.lru_cache(maxsize=16)
def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
    """Orthonormal DCT-II basis, float32 ``(n_mfcc, n_mels)``: ``mfcc = D @ logmel``."""
    n = np.arange(n_mels, dtype=np.float64)
    k = np.arange(n_mfcc, dtype=np.float64)[:, None]
    basis = np.cos(np.pi / n_mels * (n + 0.5) * k) * np.sqrt(2.0 / n_mels)
    basis[0] /= np.sqrt(2.0)
    basis = basis.astype(np.float32)
    basis.setflags(write=False)
    return basis


# --------------------------------------------------------------------------- torch plumbing


def _as_tensor(y: Any) -> tuple[torch.Tensor, bool]:
    import torch

    if isinstance(y, torch.Tensor):
        return y.to(torch.float32), False
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)), True


def _out(t: torch.Tensor, numpy: bool):
    return t.numpy() if numpy else t


#: Mel filters per block of the blocked mel projection.
_MEL_GROUP = 16


@functools.lru_cache(maxsize=32)
def _mel_blocks_t(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float):
    """The filterbank cut into blocks of ``_MEL_GROUP`` filters, each with its bin range.

    Returns ``[(lo, hi, W)]`` with ``W`` float32 ``(hi - lo, filters)``: a triangular
    filter is zero outside a few bins, so ``S[..., lo:hi] @ W`` per block does about a
    sixth of the dense ``S @ fb.T`` work and gives the same sums (the skipped terms are
    exact zeros).
    """
    import torch

    fb = mel_filterbank(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    blocks = []
    for a in range(0, n_mels, _MEL_GROUP):
        blk = fb[a : a + _MEL_GROUP]
        cols = np.flatnonzero(blk.any(axis=0))
        lo, hi = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 1)
        # device="cpu" explicitly: a cached tensor made under torch.device("meta") (the
        # checkpoint loader sizes a model there first) would poison every later call
        blocks.append((lo, hi, torch.tensor(np.ascontiguousarray(blk[:, lo:hi].T), device="cpu")))
    return blocks


def _mel_project(S: torch.Tensor, blocks) -> torch.Tensor:
    """Time-major power ``(..., n_frames, n_bins)`` -> mel ``(..., n_frames, n_mels)``."""
    import torch

    return torch.cat([torch.matmul(S[..., lo:hi], W) for lo, hi, W in blocks], dim=-1)


@functools.lru_cache(maxsize=16)
def _dct_matrix_t(n_mfcc: int, n_mels: int):
    import torch

    return torch.tensor(dct_matrix(n_mfcc, n_mels), device="cpu")  # cached: never on "meta"


@functools.lru_cache(maxsize=16)
def _window(n_fft: int, win_length: int):
    """Periodic Hann of ``win_length`` zero-padded (centred) to ``n_fft``, as librosa does."""
    import torch

    w = torch.hann_window(win_length, periodic=True, dtype=torch.float32, device="cpu")  # cached: never "meta"
    if win_length < n_fft:
        left = (n_fft - win_length) // 2
        w = torch.nn.functional.pad(w, (left, n_fft - win_length - left))
    return w


#: Frames transformed per step by :func:`melspectrogram`: small enough that a step's
#: frames, spectrum and power stay in cache (about 3x faster than all frames at once).
_FRAME_CHUNK = 128


def _frames(y: torch.Tensor, *, n_fft: int, hop_length: int, center: bool) -> torch.Tensor:
    """Overlapping frames as a view: ``(..., n)`` -> ``(batch, n_frames, n_fft)``."""
    import torch

    flat = y.reshape(-1, y.shape[-1])
    if center:
        flat = torch.nn.functional.pad(flat, (n_fft // 2, n_fft // 2))
    if flat.shape[-1] < n_fft:
        return flat.new_zeros((flat.shape[0], 0, n_fft))
    return flat.unfold(-1, n_fft, hop_length)


def _power(frames: torch.Tensor, window: torch.Tensor, power: float) -> torch.Tensor:
    """``|rfft(frames * window)|**power`` along the last axis, float32."""
    import torch

    spec = torch.view_as_real(torch.fft.rfft(frames * window, dim=-1))
    re, im = spec[..., 0], spec[..., 1]
    mag = re.square().addcmul_(im, im)  # 4x faster than abs().square() or a sum over (re, im)
    if power != 2.0:
        mag = mag.pow_(power / 2.0)
    return mag


def _stft_power_tf(y: torch.Tensor, *, n_fft: int, hop_length: int, win_length: int | None,
                   center: bool, power: float) -> torch.Tensor:
    """Power STFT, time-major: float32 ``(..., n_frames, 1 + n_fft // 2)``."""
    fr = _frames(y, n_fft=n_fft, hop_length=hop_length, center=center)
    mag = _power(fr, _window(n_fft, win_length or n_fft), power)
    return mag.reshape(*y.shape[:-1], *mag.shape[-2:])


def _mel_power_tf(y: torch.Tensor, config: MelConfig) -> torch.Tensor:
    """Mel power spectrogram, time-major: float32 ``(..., n_frames, n_mels)``.

    Works through the frames ``_FRAME_CHUNK`` at a time, so memory traffic stays in
    cache and no full-resolution spectrogram is ever held.
    """
    import torch

    fr = _frames(y, n_fft=config.n_fft, hop_length=config.hop_length, center=config.center)
    window = _window(config.n_fft, config.win_length or config.n_fft)
    blocks = _mel_blocks_t(config.sample_rate, config.n_fft, config.n_mels, float(config.fmin),
                           config.fmax_hz)
    n_items, n_frames_, _ = fr.shape
    out = fr.new_empty((n_items, n_frames_, config.n_mels))
    for b in range(n_items):
        for a in range(0, n_frames_, _FRAME_CHUNK):
            out[b, a : a + _FRAME_CHUNK] = _mel_project(
                _power(fr[b, a : a + _FRAME_CHUNK], window, config.power), blocks)
    return out.reshape(*y.shape[:-1], n_frames_, config.n_mels)


# --------------------------------------------------------------------------- public API


def stft_power(y: Any, *, n_fft: int = 2048, hop_length: int = 512, win_length: int | None = None,
               center: bool = True, power: float = 2.0):
    """Power spectrogram ``|STFT|**power``.

    Parameters
    ----------
    y : float ``(..., n)`` samples (NumPy or torch)
    n_fft, hop_length, win_length : frame parameters in samples (Hann window)
    center : pad ``n_fft // 2`` zeros on both sides so frame ``t`` is centred on ``t * hop_length``

    Returns
    -------
    S : float32 ``(..., 1 + n_fft // 2, n_frames)``
    """
    t, numpy = _as_tensor(y)
    S = _stft_power_tf(t, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                       center=center, power=power)
    return _out(S.transpose(-1, -2).contiguous(), numpy)


def melspectrogram(y: Any, config: MelConfig = MelConfig()):
    """Mel power spectrogram (no compression), float32 ``(..., n_mels, n_frames)``."""
    import torch

    t, numpy = _as_tensor(y)
    return _out(_mel_power_tf(t, config).transpose(-1, -2).contiguous(), numpy)


def compress(S: Any, config: MelConfig = MelConfig()):
    """Compress a power spectrogram as ``config.compression`` says.

    ``"db"``: ``10 * log10(max(S, amin))``, floored ``top_db`` below each item's peak
    (per item of a batch: the last two axes are one spectrogram).
    ``"log10"``: ``log10(1 + log_c * S)``.
    """
    import torch

    t, numpy = _as_tensor(S)
    if config.compression == "log10":
        out = torch.mul(t, config.log_c).log1p_().div_(math.log(10.0))
    else:
        out = torch.clamp(t, min=config.amin).log10_().mul_(10.0)
        if config.top_db is not None and out.numel():
            peak = out.amax(dim=(-2, -1), keepdim=True)
            out = torch.maximum(out, peak - config.top_db, out=out)
    return _out(out, numpy)


def logmel(y: Any, config: MelConfig = MelConfig()):
    """Compressed mel spectrogram, float32 ``(..., n_mels, n_frames)``.

    Examples
    --------
    >>> import numpy as np
    >>> from soundalike.config import MelConfig
    >>> cfg = MelConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96)
    >>> logmel(np.zeros(16000, np.float32), cfg).shape
    (96, 63)
    """
    return compress(melspectrogram(y, config), config)


def mfcc(y: Any, config: MFCCConfig = MFCCConfig()):
    """MFCCs: orthonormal DCT-II over the mel axis of a dB log-mel, float32 ``(..., n_mfcc, n_frames)``."""
    import torch

    S_db = logmel(y, config.mel)
    t, numpy = _as_tensor(S_db)
    D = _dct_matrix_t(config.n_mfcc, config.mel.n_mels)
    return _out(torch.matmul(D, t), numpy)


def n_frames(n_samples: int, *, hop_length: int, center: bool = True, n_fft: int = 2048) -> int:
    """Number of STFT frames for ``n_samples`` samples."""
    if center:
        return 1 + n_samples // hop_length
    return 1 + (n_samples - n_fft) // hop_length if n_samples >= n_fft else 0
