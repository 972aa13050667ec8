"""Waveform peaks: properties of the min/max envelope, block independence, files."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio.peaks import N_COLUMNS, Peaks, peaks_from_blocks, peaks_of_file
from soundalike.errors import AudioDecodeError


def _blocks(y: np.ndarray, size: int):
    return [y[i : i + size] for i in range(0, len(y), size)]


def test_envelope_follows_loud_and_quiet_halves():
    sr = 8000
    t = np.arange(4 * sr, dtype=np.float32) / sr
    y = (np.sin(2 * np.pi * 220 * t) * np.where(t < 2, 0.9, 0.1)).astype(np.float32)
    p = peaks_from_blocks([y], sr=sr, n_columns=100)
    assert p.n_columns == 100 and p.min.dtype == np.int8 and abs(p.duration_s - 4.0) < 1e-6
    assert np.all(p.min <= p.max)
    # loud first half, quiet second half, both symmetric around zero
    assert np.all(np.abs(p.max[:50].astype(int) - 114) <= 1) and np.all(np.abs(p.max[50:].astype(int) - 13) <= 1)
    assert np.all(np.abs(p.min.astype(int) + p.max.astype(int)) <= 1)


def test_block_size_does_not_change_peaks():
    rng = np.random.default_rng(0)
    y = (rng.standard_normal(123_457) * 0.3).clip(-1, 1).astype(np.float32)
    ref = peaks_from_blocks([y], sr=22050, n_columns=N_COLUMNS)
    for size in (1, 777, 4096, 65536):
        if size == 1:
            y_small = y[:5000]
            a = peaks_from_blocks([y_small], sr=22050, n_columns=50)
            b = peaks_from_blocks(_blocks(y_small, 1), sr=22050, n_columns=50)
        else:
            a, b = ref, peaks_from_blocks(_blocks(y, size), sr=22050, n_columns=N_COLUMNS)
        assert np.array_equal(a.min, b.min) and np.array_equal(a.max, b.max)


def test_folding_keeps_exact_extremes_at_any_length():
    """However many times the bins fold, each column is the exact min/max of its samples."""
    rng = np.random.default_rng(3)
    for n in (999, 1000, 8001, 16_003, 333_333):
        y = rng.uniform(-1, 1, n).astype(np.float32)
        p = peaks_from_blocks(_blocks(y, 4093), sr=8000, n_columns=100)
        cols = min(100, n)
        assert p.n_columns == cols
        # the extremes of the whole track survive in some column
        assert p.max.max() == round(float(y.max()) * 127) and p.min.min() == round(float(y.min()) * 127)
        # and a column never reports more than its share of the track holds
        share = int(np.ceil(n / cols)) * 9  # a column spans at most a few bins of doubling width
        for i in (0, cols // 2, cols - 1):
            lo_i = max(0, int(i * n / cols) - share)
            assert p.max[i] <= round(float(y[lo_i : lo_i + 2 * share].max()) * 127)


def test_a_click_is_never_lost_between_columns():
    sr = 22050
    y = np.zeros(10 * sr, np.float32)
    y[int(7.3 * sr)] = 0.8  # one sample, anywhere
    p = peaks_from_blocks(_blocks(y, 1000), sr=sr, n_columns=1000)
    col = int(np.argmax(p.max))
    assert p.max[col] == round(0.8 * 127) and abs(col - 730) <= 1
    assert np.count_nonzero(p.max) == 1 and not p.min.any()


def test_short_and_empty_streams():
    p = peaks_from_blocks([np.array([0.1, -0.2, 0.3], np.float32)], sr=22050, n_columns=1000)
    assert p.n_columns == 3 and p.min.tolist() == [13, -25, 38]  # one column per sample
    e = peaks_from_blocks([], sr=22050)
    assert e.n_columns == 0 and e.duration_s == 0.0
    with pytest.raises(ValueError):
        peaks_from_blocks([], sr=0)


def test_bytes_round_trip_is_two_kb():
    rng = np.random.default_rng(1)
    p = peaks_from_blocks([rng.uniform(-1, 1, 50_000).astype(np.float32)], sr=8000)
    blob = p.to_bytes()
    assert len(blob) == 2 * N_COLUMNS
    q = Peaks.from_bytes(blob, duration_s=p.duration_s)
    assert np.array_equal(p.min, q.min) and np.array_equal(p.max, q.max)
    j = q.to_json()
    assert j["n"] == N_COLUMNS and len(j["min"]) == len(j["max"]) == N_COLUMNS
    with pytest.raises(ValueError, match="halves of equal length"):
        Peaks.from_bytes(b"abc", duration_s=1.0)


def test_peaks_of_files_in_every_format(audio_files, stereo_44k):
    mono = stereo_44k.mean(axis=1)
    for fmt, path in audio_files.items():
        p = peaks_of_file(path, n_columns=200)
        assert p.n_columns == 200, fmt
        assert abs(p.duration_s - 2.0) < 0.1, fmt
        peak = int(round(float(np.abs(mono).max()) * 127))
        assert abs(int(p.max.max()) - peak) <= (2 if fmt in ("wav", "flac", "au", "aiff") else 20), fmt


def test_bad_file_raises_a_typed_error(tmp_path, corrupt_files):
    for reason, path in corrupt_files.items():
        if reason == "too_short":  # 50 ms is short for a model, not for a waveform
            assert peaks_of_file(path).n_columns > 0
            continue
        with pytest.raises(AudioDecodeError):
            peaks_of_file(path)
    wav = tmp_path / "x.wav"
    sf.write(wav, np.zeros(100, np.float32), 8000)
    assert peaks_of_file(wav).n_columns == 100  # a column per sample
