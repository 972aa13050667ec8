"""Waveform augmentation: right SNR/gain, band-limiting, per-item reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio.augment import (Augmenter, add_noise, bandpass, gain, load_noise_dir,
                                      parse_augment, rms, small_speaker, time_shift)
from soundalike.audio.synth import tone
from soundalike.errors import ConfigError

SR = 16000


def _band_energy(y, lo, hi):
    Y = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    return Y[(f >= lo) & (f < hi)].sum()


def test_noise_at_the_drawn_snr():
    y = tone(440, duration_s=1.0, sr=SR)
    for snr in (0.0, 10.0, 30.0):
        out = add_noise(y, np.random.default_rng(1), snr_low_db=snr, snr_high_db=snr)
        measured = 20 * np.log10(rms(y) / rms(out - y))
        assert measured == pytest.approx(snr, abs=0.3)
        assert out.dtype == np.float32 and out.shape == y.shape


def test_noise_from_recordings_is_an_excerpt():
    y = tone(440, duration_s=0.5, sr=SR)
    src = np.sin(np.arange(SR * 3) * 0.3).astype(np.float32)  # a recognisable "noise"
    out = add_noise(y, np.random.default_rng(0), snr_low_db=6, snr_high_db=6, noise=src)
    z = out - y
    assert np.corrcoef(z[1:], z[:-1])[0, 1] > 0.9  # the sinusoid, not white noise


def test_gain_range():
    y = tone(440, duration_s=0.2, sr=SR)
    ratios = [20 * np.log10(rms(gain(y, np.random.default_rng(s), low_db=-6, high_db=3)) / rms(y))
              for s in range(50)]
    assert -6.01 <= min(ratios) < -4 and 2 < max(ratios) <= 3.01


def test_small_speaker_cuts_lows_and_highs():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(SR).astype(np.float32)
    out = small_speaker(y, np.random.default_rng(3), sr=SR)
    assert _band_energy(out, 0, 60) < 0.05 * _band_energy(y, 0, 60)
    assert _band_energy(out, 7500, 8000) < 0.2 * _band_energy(y, 7500, 8000)
    assert _band_energy(out, 900, 1100) > 0.8 * _band_energy(y, 900, 1100)
    flat = bandpass(y, SR, low_hz=None, high_hz=None)
    np.testing.assert_allclose(flat, y, atol=1e-5)


def test_time_shift_is_a_rotation():
    y = np.arange(100, dtype=np.float32)
    out = time_shift(y, np.random.default_rng(2))
    assert sorted(out) == sorted(y) and not np.array_equal(out, y)


def test_per_item_reproducible_whatever_the_order():
    aug = Augmenter(parse_augment("live,shift"), sr=SR, seed=5, p=1.0)
    ys = [tone(200 + 100 * i, duration_s=0.25, sr=SR) for i in range(6)]
    forward = [aug(y, epoch=2, index=i) for i, y in enumerate(ys)]
    backward = [aug(ys[i], epoch=2, index=i) for i in reversed(range(6))][::-1]
    for a, b, y in zip(forward, backward, ys):
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, y)
    assert not np.array_equal(aug(ys[0], epoch=3, index=0), forward[0])


def test_parse_and_noise_dir(tmp_path):
    assert parse_augment("live") == ("gain", "noise", "speaker")
    assert parse_augment("gain, shift,gain") == ("gain", "shift")
    assert parse_augment("none") == () and parse_augment(None) == ()
    with pytest.raises(ConfigError, match="unknown augmentation 'warp'"):
        parse_augment("gain,warp")
    sf.write(tmp_path / "cafe.wav", np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1, 8000)
    (tmp_path / "bad.wav").write_bytes(b"nope")
    noises = load_noise_dir(tmp_path, sr=SR)
    assert len(noises) == 1 and len(noises[0]) == SR
    with pytest.raises(ConfigError):
        load_noise_dir(tmp_path / "missing", sr=SR)


def _band_db(y: np.ndarray, lo: float, hi: float, sr: int = SR) -> float:
    Y = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1.0 / sr)
    return float(10 * np.log10(Y[(f >= lo) & (f < hi)].sum() + 1e-20))


def test_domain_transforms_keep_length_and_change_the_recording():
    from soundalike.audio.augment import codec, pitch_jitter, random_eq, reverb

    rng = np.random.default_rng(0)
    y = (np.random.default_rng(1).standard_normal(SR) * 0.1).astype(np.float32)
    for fn in (lambda v: random_eq(v, rng, sr=SR), lambda v: reverb(v, rng, sr=SR),
               lambda v: pitch_jitter(v, rng), lambda v: codec(v, rng, sr=SR)):
        out = fn(y)
        assert out.dtype == np.float32 and out.shape == y.shape and np.isfinite(out).all()
        assert not np.allclose(out, y)
    # eq reshapes the spectrum: some octave band moves by more than 1 dB
    eq = random_eq(y, np.random.default_rng(3), sr=SR)
    bands = [(125 * 2**i, 250 * 2**i) for i in range(6)]
    assert max(abs(_band_db(eq, a, b) - _band_db(y, a, b)) for a, b in bands) > 1.0
    # codec removes the top octave, reverb smears a click over time
    wide = (np.random.default_rng(2).standard_normal(44100) * 0.1).astype(np.float32)
    lossy = codec(wide, np.random.default_rng(4), sr=44100)
    assert _band_db(lossy, 16000, 22000, 44100) < _band_db(wide, 16000, 22000, 44100) - 12
    click = np.zeros(SR, np.float32)
    click[100] = 1.0
    wet = reverb(click, np.random.default_rng(5), sr=SR)
    assert np.abs(wet[2000:]).max() > 1e-3  # energy long after the click
    # pitch jitter moves a tone's frequency by at most 50 cents
    t = tone(1000, duration_s=1.0, sr=SR)
    shifted = pitch_jitter(t, np.random.default_rng(6))
    peak = np.fft.rfftfreq(SR, 1 / SR)[np.abs(np.fft.rfft(shifted[: SR // 2], SR)).argmax()]
    assert 1000 * 2 ** (-51 / 1200) <= peak <= 1000 * 2 ** (51 / 1200) and abs(peak - 1000) > 0


def test_domain_preset():
    assert parse_augment("domain") == ("gain", "noise", "speaker", "eq", "reverb", "pitch", "codec")
    assert parse_augment("domain-v1") == ("gain", "noise", "eq", "reverb", "pitch", "codec")
    aug = Augmenter(parse_augment("domain"), sr=SR, seed=1, p=1.0)
    y = tone(440, duration_s=0.5, sr=SR)
    a, b = aug(y, epoch=0, index=3), aug(y, epoch=0, index=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == y.shape and np.isfinite(a).all()


def _low_to_mid_db(y: np.ndarray) -> float:
    return _band_db(y, 20, 80) - _band_db(y, 900, 1100)


def test_domain_now_band_limits_like_a_small_speaker():
    """The default preset's speaker step is real: against the old set (same seed, p = 1) the
    lows fall far below the mids, on every item, and the same item gives the same audio."""
    y = (np.random.default_rng(7).standard_normal(SR) * 0.1).astype(np.float32)
    new = Augmenter(parse_augment("domain"), sr=SR, seed=2, p=1.0)
    old = Augmenter(parse_augment("domain-v1"), sr=SR, seed=2, p=1.0)
    drops = [_low_to_mid_db(old(y, epoch=0, index=i)) - _low_to_mid_db(new(y, epoch=0, index=i))
             for i in range(12)]
    assert min(drops) > 6.0  # the 120-500 Hz low cut, whatever EQ and room the item drew
    np.testing.assert_array_equal(new(y, epoch=1, index=4), new(y, epoch=1, index=4))
    assert not np.allclose(new(y, epoch=1, index=4), new(y, epoch=1, index=5))


def test_default_training_config_is_the_domain_preset():
    from soundalike.train.fit import TrainConfig

    assert TrainConfig().augment == parse_augment("domain")
    assert "speaker" in TrainConfig().augment


def test_resample_moves_pitch_further_than_jitter():
    from soundalike.audio.augment import RESAMPLE_CENTS

    t = tone(1000, duration_s=1.0, sr=SR)
    aug = Augmenter(("resample",), sr=SR, seed=0, p=1.0)
    cents = []
    for i in range(16):
        out = aug(t, epoch=0, index=i)
        assert out.shape == t.shape and out.dtype == np.float32
        peak = np.fft.rfftfreq(SR, 1 / SR)[np.abs(np.fft.rfft(out[: SR // 2], SR)).argmax()]
        cents.append(1200 * np.log2(peak / 1000))
    assert max(np.abs(cents)) <= RESAMPLE_CENTS + 5 and max(np.abs(cents)) > 100  # beyond pitch's ±50
    np.testing.assert_array_equal(aug(t, epoch=0, index=3), aug(t, epoch=0, index=3))
