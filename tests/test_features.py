"""Features: librosa parity, the mel band of a tone, batching, dtypes, resampling."""

from __future__ import annotations

import numpy as np
import pytest

from soundalike.audio import features as F
from soundalike.audio.resample import resample
from soundalike.config import MelConfig, MFCCConfig

librosa = pytest.importorskip("librosa")

CONFIGS = {
    "default": MelConfig(sample_rate=22050),
    "musicnn-like": MelConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96),
    "short-window": MelConfig(sample_rate=22050, n_fft=1024, hop_length=300, win_length=800, n_mels=64,
                              fmin=30.0, fmax=9000.0),
    "no-top-db": MelConfig(sample_rate=22050, n_fft=2048, hop_length=512, n_mels=128, fmin=50.0,
                           top_db=None),
}
SIGNALS = ("tone_440", "chirp", "clicks", "white_noise")


def _librosa_mel(y: np.ndarray, c: MelConfig) -> np.ndarray:
    return librosa.feature.melspectrogram(
        y=y, sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
        n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax, power=c.power, center=c.center, pad_mode="constant",
        htk=False, norm="slaney")


def _librosa_logmel(y: np.ndarray, c: MelConfig) -> np.ndarray:
    M = _librosa_mel(y, c)
    if c.compression == "log10":
        return np.log10(1.0 + c.log_c * M)
    return librosa.power_to_db(M, ref=1.0, amin=c.amin, top_db=c.top_db)


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logmel_db_matches_librosa(name, signal, request):
    c = CONFIGS[name]
    y = request.getfixturevalue(signal)
    ours = F.logmel(y, c)
    ref = _librosa_logmel(y, c)
    assert ours.shape == ref.shape
    assert ours.dtype == np.float32
    if c.top_db is None:
        # float32 FFT rounding (~1e-7 of a frame's peak) dominates more than ~100 dB below
        # the peak; compare over the 80 dB that the default top_db keeps.
        keep = ref > ref.max() - 80.0
        assert np.abs(ours - ref)[keep].max() <= 0.01
    else:
        assert np.abs(ours - ref).max() <= 0.01


@pytest.mark.parametrize("signal", SIGNALS)
def test_logmel_log10_compression_matches(signal, request):
    c = MelConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=96, compression="log10")
    y = request.getfixturevalue(signal)
    np.testing.assert_allclose(F.logmel(y, c), _librosa_logmel(y, c), rtol=0, atol=1e-4)


@pytest.mark.parametrize("signal", SIGNALS)
@pytest.mark.parametrize("name", ["default", "musicnn-like", "short-window"])
def test_mfcc_matches_librosa(name, signal, request):
    cfg = MFCCConfig(mel=CONFIGS[name], n_mfcc=20)
    y = request.getfixturevalue(signal)
    ref = librosa.feature.mfcc(S=_librosa_logmel(y, cfg.mel), n_mfcc=20, dct_type=2, norm="ortho")
    ours = F.mfcc(y, cfg)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-3


def test_power_stft_matches_librosa(chirp):
    ours = F.stft_power(chirp, n_fft=1024, hop_length=256)
    ref = np.abs(librosa.stft(chirp, n_fft=1024, hop_length=256, center=True, pad_mode="constant")) ** 2
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-6 * ref.max())


def test_filterbank_and_dct_match_librosa():
    fb = F.mel_filterbank(sr=22050, n_fft=2048, n_mels=128, fmin=20.0, fmax=8000.0)
    ref = librosa.filters.mel(sr=22050, n_fft=2048, n_mels=128, fmin=20.0, fmax=8000.0)
    np.testing.assert_allclose(fb, ref, rtol=1e-5, atol=1e-8)
    import scipy.fft

    x = np.random.default_rng(0).standard_normal((40, 7)).astype(np.float32)
    np.testing.assert_allclose(F.dct_matrix(13, 40) @ x, scipy.fft.dct(x, axis=0, norm="ortho")[:13],
                               atol=1e-5)


@pytest.mark.parametrize("freq", [220.0, 440.0, 1000.0, 3000.0])
def test_a_tone_peaks_in_the_mel_band_centred_nearest_to_it(freq, sr):
    from soundalike.audio.synth import tone

    c = MelConfig(sample_rate=sr, n_fft=2048, hop_length=512, n_mels=128)
    band = int(np.argmax(F.logmel(tone(freq, duration_s=1.0, sr=sr), c).mean(axis=1)))
    centres = librosa.mel_frequencies(n_mels=c.n_mels + 2, fmin=c.fmin, fmax=c.fmax_hz, htk=False)[1:-1]
    # The right band: its centre is one of the two centres around the tone.
    assert centres[band - 1] <= freq <= centres[min(band + 1, len(centres) - 1)]
    assert abs(band - int(np.argmin(np.abs(centres - freq)))) <= 1


def test_tone_440_band(tone_440, sr):
    c = MelConfig(sample_rate=sr)
    band = int(np.argmax(F.logmel(tone_440, c).mean(axis=1)))
    lo, hi = F.mel_frequencies(c.n_mels + 2, fmin=0.0, fmax=sr / 2)[[band, band + 2]]
    assert lo < 440.0 < hi  # 440 Hz lies inside the peak band's triangle


def test_batched_equals_unbatched(tone_440, chirp, white_noise, clicks):
    import torch

    X = np.stack([np.stack([tone_440, chirp]), np.stack([white_noise, clicks])])  # (2, 2, n)
    c = MelConfig(sample_rate=22050, n_fft=1024, hop_length=256, n_mels=64)
    batch = F.logmel(X, c)
    assert batch.shape[:2] == (2, 2)
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(batch[i, j], F.logmel(X[i, j], c), rtol=0, atol=1e-4)
    m = F.mfcc(torch.from_numpy(X), MFCCConfig(mel=c, n_mfcc=13))
    assert isinstance(m, torch.Tensor) and m.dtype == torch.float32
    np.testing.assert_allclose(m[1, 0].numpy(), F.mfcc(X[1, 0], MFCCConfig(mel=c, n_mfcc=13)), atol=1e-3)


def test_outputs_are_float32_for_float64_input(chirp):
    y64 = chirp.astype(np.float64)
    for out in (F.stft_power(y64), F.melspectrogram(y64), F.logmel(y64), F.mfcc(y64)):
        assert out.dtype == np.float32


def test_frame_count_and_short_signals(silence):
    c = MelConfig(sample_rate=22050, hop_length=512)
    assert F.logmel(silence, c).shape == (128, F.n_frames(len(silence), hop_length=512))
    tiny = F.logmel(silence[:300], c)  # shorter than n_fft // 2
    assert tiny.shape == (128, 1) and np.isfinite(tiny).all()
    # Silence floors at amin in dB, not -inf.
    assert F.logmel(silence, c).min() == pytest.approx(10 * np.log10(c.amin))


@pytest.mark.parametrize("sr_in,sr_out", [(44100, 22050), (22050, 16000), (8000, 48000), (48000, 44100)])
def test_resampling_keeps_the_duration_and_the_pitch(sr_in, sr_out):
    from soundalike.audio.synth import tone

    y = tone(440.0, duration_s=1.3, sr=sr_in)
    out = resample(y, sr_in, sr_out)
    assert out.dtype == np.float32
    assert abs(len(out) - round(len(y) * sr_out / sr_in)) <= 1
    spec = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    assert np.fft.rfftfreq(len(out), 1 / sr_out)[np.argmax(spec)] == pytest.approx(440.0, abs=2.0)


def test_resampling_stereo_keeps_channels(stereo_44k):
    out = resample(stereo_44k.T, 44100, 22050)
    assert out.shape == (2, stereo_44k.shape[0] // 2)
