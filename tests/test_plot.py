"""Spectrogram images: PNG written, axes labelled in seconds and Hz, colour bar present."""

from __future__ import annotations

import numpy as np
import pytest

from soundalike.audio import plot
from soundalike.config import MelConfig, MFCCConfig
from soundalike.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", ["mel", "mfcc", "stft"])
def test_save_spectrogram_writes_a_png(kind, chirp, sr, tmp_path):
    import matplotlib.image

    out = plot.save_spectrogram(tmp_path / "sub" / f"{kind}.png", y=chirp, sr=sr, kind=kind, title="chirp",
                                figsize=(4, 3), dpi=50)
    assert out.read_bytes()[:8] == PNG_MAGIC
    img = matplotlib.image.imread(out)
    assert img.shape[:2] == (150, 200)
    assert img[..., :3].std() > 0.05  # not a blank canvas


@pytest.mark.parametrize("kind,ylabel", [("mel", "Frequency (Hz)"), ("stft", "Frequency (Hz)"),
                                         ("mfcc", "MFCC coefficient")])
def test_axes_are_labelled(kind, ylabel, chirp, sr):
    fig = plot.spectrogram_figure(y=chirp, sr=sr, kind=kind, title="t")
    ax, cbar_ax = fig.axes  # the image and its colour bar
    assert ax.get_xlabel() == "Time (s)"
    assert ax.get_ylabel() == ylabel
    assert cbar_ax.get_ylabel()
    x0, x1 = ax.get_xlim()
    assert x0 == 0.0 and x1 == pytest.approx(len(chirp) / sr, abs=512 / sr)


def test_mel_ticks_are_increasing_frequencies_in_hz(chirp, sr):
    cfg = MelConfig(sample_rate=sr, n_mels=64, fmin=50.0, fmax=8000.0)
    fig = plot.spectrogram_figure(y=chirp, sr=sr, kind="mel", config=cfg)
    text = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    labels = [float(t[:-1]) * 1000 if t.endswith("k") else float(t) for t in text]
    assert labels == sorted(labels) and len(labels) >= 3
    assert 50.0 <= labels[0] < 200.0 and 3000.0 < labels[-1] <= 8000.0


def test_mel_ticks_at_round_frequencies_like_librosa(chirp, sr):
    """512, 1k, 2k, 4k, 8k Hz, each placed where that frequency falls between band centres."""
    from soundalike.audio.features import mel_frequencies

    cfg = MelConfig(sample_rate=sr, n_mels=128)
    fig = plot.spectrogram_figure(y=chirp, sr=sr, kind="mel", config=cfg)
    ax = fig.axes[0]
    text = [t.get_text() for t in ax.get_yticklabels()]
    assert {"512", "1k", "2k", "4k", "8k"} <= set(text), text
    centres = mel_frequencies(128 + 2, fmin=cfg.fmin, fmax=cfg.fmax_hz)[1:-1]
    for label, y in zip(text, ax.get_yticks()):
        hz = float(label[:-1]) * 1000 if label.endswith("k") else float(label)
        lo = int(np.floor(y))
        if 0 <= lo < 127:
            assert centres[lo] <= hz <= centres[lo + 1], (label, y)


def test_stft_axis_spans_to_nyquist(clicks, sr):
    fig = plot.spectrogram_figure(y=clicks, sr=sr, kind="stft")
    assert fig.axes[0].get_ylim() == pytest.approx((0.0, sr / 2))


def test_png_bytes_for_the_web(white_noise, sr):
    data = plot.spectrogram_png(y=white_noise, sr=sr, kind="mel", figsize=(3, 2), dpi=40)
    assert data[:8] == PNG_MAGIC and len(data) > 500


def test_mfcc_rows_follow_the_config(tone_440, sr):
    cfg = MFCCConfig(mel=MelConfig(sample_rate=sr, n_mels=40), n_mfcc=13)
    M = plot.spectrogram_matrix(y=tone_440, sr=sr, kind="mfcc", config=cfg)
    assert M.shape[0] == 13


def test_bad_kind_and_mismatched_rate_are_config_errors(tone_440, sr):
    with pytest.raises(ConfigError, match="plot kind"):
        plot.spectrogram_png(y=tone_440, sr=sr, kind="wave")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="does not match"):
        plot.spectrogram_png(y=tone_440, sr=sr, kind="mel", config=MelConfig(sample_rate=16000))
