"""Spectrogram and MFCC images (PNG) with labelled time and frequency axes.

matplotlib is imported inside the functions and only its object-oriented API with the
Agg canvas is used (no ``pyplot`` global state), so plotting is safe in worker threads
such as the web server's.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from soundalike.config import MelConfig, MFCCConfig
from soundalike.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PlotKind = Literal["mel", "mfcc", "stft"]
PLOT_KINDS: tuple[str, ...] = ("mel", "mfcc", "stft")


def _mel_config(config: MelConfig | MFCCConfig | None, sr: int) -> MelConfig:
    if config is None:
        return MelConfig(sample_rate=sr)
    mel = config.mel if isinstance(config, MFCCConfig) else config
    if mel.sample_rate != sr:
        raise ConfigError(f"config sample_rate {mel.sample_rate} Hz does not match the audio's {sr} Hz; "
                          "resample the audio first")
    return mel


def spectrogram_matrix(*, y: np.ndarray, sr: int, kind: PlotKind,
                       config: MelConfig | MFCCConfig | None = None) -> np.ndarray:
    """The matrix a plot shows, float32 ``(rows, n_frames)``.

    ``"stft"``: power STFT in dB ``(1 + n_fft // 2, n_frames)``; ``"mel"``: log-mel as
    ``config`` compresses it ``(n_mels, n_frames)``; ``"mfcc"``: ``(n_mfcc, n_frames)``.
    """
    from soundalike.audio import features

    if kind not in PLOT_KINDS:
        raise ConfigError(f"plot kind must be one of {', '.join(PLOT_KINDS)}, got {kind!r}")
    y = np.asarray(y, dtype=np.float32)
    mel = _mel_config(config, sr)
    if kind == "stft":
        S = features.stft_power(y, n_fft=mel.n_fft, hop_length=mel.hop_length, win_length=mel.win_length,
                                center=mel.center, power=mel.power)
        return features.compress(S, MelConfig(sample_rate=sr, compression="db", top_db=mel.top_db or 80.0))
    if kind == "mel":
        return features.logmel(y, mel)
    mcfg = config if isinstance(config, MFCCConfig) else MFCCConfig(mel=MelConfig(**{**mel.to_dict(),
                                                                                    "compression": "db"}))
    return features.mfcc(y, mcfg)


#: Where a mel axis is ticked, in Hz.
MEL_TICKS_HZ = (0.0, 64.0, 128.0, 256.0, 512.0, 1000.0, 2000.0, 4000.0, 8000.0, 16000.0)


def hz_label(f: float) -> str:
    """``512``, ``1k``, ``16k``: a tick label for ``f`` Hz."""
    return f"{f / 1000:g}k" if f >= 1000 else f"{f:.0f}"


def plot_matrix(M: np.ndarray, *, kind: PlotKind, sr: int, hop_length: int,
                mel: MelConfig | None = None, title: str | None = None,
                figsize: tuple[float, float] = (8.0, 4.0), dpi: int = 100) -> Figure:
    """A matplotlib figure of ``M`` (``(rows, n_frames)``) with axes in seconds and Hz.

    Parameters
    ----------
    M : float ``(rows, n_frames)``: STFT bins, mel bands or MFCC coefficients
    kind : what the rows are; mel bands are labelled with their centre frequency in Hz
    sr, hop_length : sample rate (Hz) and hop (samples) that made the frames
    mel : the mel parameters (``kind="mel"``: for the band frequencies)
    """
    from matplotlib.figure import Figure

    from soundalike.audio.features import mel_frequencies

    M = np.asarray(M, dtype=np.float32)
    rows, n = M.shape
    duration_s = n * hop_length / sr
    fig = Figure(figsize=figsize, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    if kind == "stft":
        extent = (0.0, duration_s, 0.0, sr / 2)
        ylabel, cbar = "Frequency (Hz)", "Power (dB)"
    else:
        extent = (0.0, duration_s, -0.5, rows - 0.5)
        ylabel, cbar = ("Frequency (Hz)", "Power (dB)") if kind == "mel" else ("MFCC coefficient", "Value")
    im = ax.imshow(M, origin="lower", aspect="auto", extent=extent, interpolation="nearest", cmap="magma")
    if kind == "mel":
        mel = mel or MelConfig(sample_rate=sr, n_mels=rows)
        if mel.compression == "log10":
            cbar = f"log10(1 + {mel.log_c:g}·power)"
        # ticks at round frequencies (512, 1k, 2k, 4k, 8k Hz as librosa's mel axis), placed
        # where they fall between the band centres; rows span [fmin, fmax] on the mel scale
        freqs = mel_frequencies(rows + 2, fmin=mel.fmin, fmax=mel.fmax_hz)
        pos = np.arange(-1, rows + 1, dtype=np.float64)
        at = [(f, float(np.interp(f, freqs, pos))) for f in MEL_TICKS_HZ if freqs[0] <= f <= freqs[-1]]
        at = [(f, p) for f, p in at if -0.5 <= p <= rows - 0.5]
        ax.set_yticks([p for _, p in at])
        ax.set_yticklabels([hz_label(f) for f, _ in at])
    elif kind == "mfcc":
        ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("Time (s)")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, label=cbar)
    fig.tight_layout()
    return fig


def spectrogram_figure(*, y: np.ndarray, sr: int, kind: PlotKind,
                       config: MelConfig | MFCCConfig | None = None, title: str | None = None,
                       figsize: tuple[float, float] = (8.0, 4.0), dpi: int = 100) -> Figure:
    """Compute the ``kind`` matrix of mono float32 ``y`` at ``sr`` Hz and plot it."""
    M = spectrogram_matrix(y=y, sr=sr, kind=kind, config=config)
    mel = _mel_config(config, sr)
    return plot_matrix(M, kind=kind, sr=sr, hop_length=mel.hop_length, mel=mel, title=title,
                       figsize=figsize, dpi=dpi)


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    buf = io.BytesIO()
    canvas.print_png(buf)
    return buf.getvalue()


def spectrogram_png(*, y: np.ndarray, sr: int, kind: PlotKind = "mel",
                    config: MelConfig | MFCCConfig | None = None, title: str | None = None,
                    figsize: tuple[float, float] = (8.0, 4.0), dpi: int = 100) -> bytes:
    """PNG bytes of a spectrogram/MFCC image (for the web UI).

    Parameters
    ----------
    y : mono float ``(n,)`` samples
    sr : their sample rate in Hz
    kind : ``"mel"`` (log-mel), ``"mfcc"`` or ``"stft"`` (power STFT in dB)
    config : ``MelConfig`` (or ``MFCCConfig`` for ``"mfcc"``) at ``sample_rate == sr``;
        ``None``: defaults at ``sr``
    """
    return _png(spectrogram_figure(y=y, sr=sr, kind=kind, config=config, title=title,
                                   figsize=figsize, dpi=dpi))


def save_spectrogram(path_out: str | os.PathLike, *, y: np.ndarray, sr: int, kind: PlotKind = "mel",
                     config: MelConfig | MFCCConfig | None = None, title: str | None = None,
                     figsize: tuple[float, float] = (8.0, 4.0), dpi: int = 100) -> Path:
    """Save a spectrogram/MFCC image of ``y`` as PNG at ``path_out``; returns the path.

    Time on the x axis in seconds, frequency in Hz (mel bands labelled with their centre
    frequency) or the MFCC coefficient index on the y axis, and a labelled colour bar.
    """
    out = Path(path_out)
    data = spectrogram_png(y=y, sr=sr, kind=kind, config=config, title=title, figsize=figsize, dpi=dpi)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out
