"""Decoding: every format, sample-accurate partial reads, bounded-memory streaming and
the zoo of bad input (each one a typed AudioDecodeError naming the file and the reason)."""

from __future__ import annotations

import shutil
import tracemalloc

import numpy as np
import pytest
from conftest import ALL_FORMATS, LOSSLESS_FORMATS, OPUS_SR, STEREO_DURATION_S, STEREO_SR, write_audio

from soundalike.audio import io
from soundalike.audio.io import AudioDecodeError, load, stream


def _source_sr(fmt: str) -> int:
    return OPUS_SR if fmt == "opus" else STEREO_SR


def _lag(a: np.ndarray, b: np.ndarray, max_lag: int = 2000) -> int:
    """The shift ``l`` that best aligns ``a[l:]`` with ``b`` (cross-correlation peak)."""
    n = len(a) + len(b)
    c = np.fft.irfft(np.fft.rfft(a, 2 * n) * np.conj(np.fft.rfft(b, 2 * n)))
    lags = np.r_[np.arange(0, max_lag), np.arange(-max_lag, 0)]
    return int(lags[np.argmax(c[lags])])


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_every_format_loads_as_mono_float32_aligned_with_the_source(fmt, audio_files):
    from conftest import stereo_signal

    w = load(audio_files[fmt])
    src_sr = _source_sr(fmt)
    source = stereo_signal(src_sr).mean(axis=1, dtype=np.float32)
    assert w.y.dtype == np.float32 and w.y.ndim == 1
    assert w.sr == src_sr
    # Lossy codecs pad; decoders that honour gapless info (LAME tag, Ogg granules,
    # MP4 edit list) give back exactly the samples that were encoded.
    assert len(w.y) == len(source), f"{fmt}: {len(w.y)} samples, wrote {len(source)}"
    assert _lag(w.y, source) == 0
    err = np.sqrt(np.mean((w.y - source) ** 2)) / np.sqrt(np.mean(source**2))
    assert err < (1e-3 if fmt in LOSSLESS_FORMATS else 0.3), f"{fmt}: relative error {err:.4f}"


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_info_reads_the_header(fmt, audio_files):
    meta = io.info(audio_files[fmt])
    assert meta.channels == 2
    assert meta.sr == _source_sr(fmt)
    assert meta.duration_s == pytest.approx(STEREO_DURATION_S, abs=0.01)
    assert meta.backend == ("pyav" if fmt == "m4a" else "soundfile")


def test_stereo_is_averaged_to_mono(audio_files, stereo_44k):
    w = load(audio_files["wav"])
    expected = stereo_44k.mean(axis=1)
    np.testing.assert_allclose(w.y, expected, atol=2.0 / 32768)  # PCM_16 rounding


def test_load_resamples_keeping_the_duration(audio_files):
    w = load(audio_files["flac"], sr=16000)
    assert w.sr == 16000
    assert abs(len(w.y) - STEREO_DURATION_S * 16000) <= 1


@pytest.mark.parametrize("fmt", ["flac", "mp3", "m4a"])
def test_a_real_file_with_a_wrong_extension_loads_by_content(fmt, audio_files, tmp_path):
    # Decision: content wins over the extension; a FLAC called .mp3 is still a FLAC.
    wrong = tmp_path / ("misnamed.wav" if fmt != "flac" else "misnamed.mp3")
    shutil.copy(audio_files[fmt], wrong)
    np.testing.assert_array_equal(load(wrong).y, load(audio_files[fmt]).y)


# --------------------------------------------------------------------------- partial reads


#: How exactly a partial read must equal the slice of a full decode.  PCM/FLAC, Vorbis
#: and Opus are bit-exact; MP3 differs by float rounding only.  FFmpeg's AAC decoder
#: after a seek gives the same samples up to ~1e-5, except in frames coded with
#: perceptual noise substitution, whose pseudo-random noise depends on where decoding
#: began (measured up to 2e-4 on this signal's fade-out; 0.1 on white noise).
PARTIAL_ATOL = {"mp3": 1e-6, "m4a": 1e-3}


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_partial_read_equals_the_slice_of_a_full_decode(fmt, audio_files):
    path = audio_files[fmt]
    full = load(path)
    sr = full.sr
    # Near the start, in the middle, across a codec frame edge, and in the last Ogg page
    # (where libsndfile's own Vorbis seek lands on wrong samples).
    for offset_s, duration_s in [(0.0, 0.3), (0.013, 0.25), (0.5, 0.5), (1.2345, 0.3), (1.6, 0.3),
                                 (1.85, 0.15)]:
        part = load(path, offset_s=offset_s, duration_s=duration_s)
        start = int(round(offset_s * sr))
        n = int(round(duration_s * sr))
        assert len(part.y) == n, f"{fmt} @ {offset_s}: {len(part.y)} samples, want {n}"
        np.testing.assert_allclose(part.y, full.y[start : start + n], rtol=0,
                                   atol=PARTIAL_ATOL.get(fmt, 0.0),
                                   err_msg=f"{fmt} offset {offset_s} s")


def test_partial_read_to_the_end_and_past_it(audio_files):
    path = audio_files["flac"]
    full = load(path)
    tail = load(path, offset_s=1.5)
    np.testing.assert_array_equal(tail.y, full.y[int(1.5 * full.sr) :])
    with pytest.raises(AudioDecodeError, match="past the end"):
        load(path, offset_s=5.0, duration_s=1.0)
    with pytest.raises(AudioDecodeError, match="invalid range"):
        load(path, offset_s=-1.0)


def test_partial_read_with_resampling(audio_files):
    w = load(audio_files["ogg"], sr=22050, offset_s=0.5, duration_s=1.0)
    assert w.sr == 22050
    assert abs(len(w.y) - 22050) <= 1


def test_stream_blocks_concatenate_to_the_full_decode(audio_files):
    for fmt in ("mp3", "ogg", "m4a"):
        sr, blocks = stream(audio_files[fmt])
        joined = np.concatenate(list(blocks))
        np.testing.assert_array_equal(joined, load(audio_files[fmt]).y)


def test_mp3_blocks_have_no_glitches_at_block_edges(tmp_path, monkeypatch):
    # soundfile's read() re-seeks around every call; for MP3 that reset the decoder and
    # corrupted the first frames of each block.  Small blocks make many edges.
    from conftest import stereo_signal

    path = write_audio(tmp_path / "x.mp3", "mp3", stereo_signal(STEREO_SR), STEREO_SR)
    whole = load(path).y
    monkeypatch.setattr(io, "BLOCK_FRAMES", 4000)
    blocky = load(path).y
    np.testing.assert_allclose(blocky, whole, rtol=0, atol=1e-6)


def test_stream_of_a_20_minute_file_stays_in_bounded_memory(tmp_path):
    import soundfile as sf

    sr, minutes = 8000, 20
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as f:
        for _ in range(minutes * 6):
            f.write((0.1 * rng.standard_normal(sr * 10)).astype(np.float32))
    n_total = minutes * 60 * sr
    tracemalloc.start()
    try:
        out_sr, blocks = stream(path, sr=16000)
        n = 0
        peak_block = 0
        for b in blocks:
            n += len(b)
            peak_block = max(peak_block, b.nbytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out_sr == 16000
    assert abs(n - 2 * n_total) <= 2
    decoded_bytes = 2 * n_total * 4  # what load() would hold: 153.6 MB
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for {decoded_bytes / 1e6:.0f} MB decoded"
    assert peak_block <= 4 * io.BLOCK_FRAMES * 4


# --------------------------------------------------------------------------- bad input

#: reason key in the ``corrupt_files`` fixture -> words the error must contain.
EXPECTED_REASON = {
    "zero_bytes": "empty file",
    "truncated_wav": "truncated",
    "truncated_flac": "truncated",
    "truncated_mp3": "truncated",
    "truncated_ogg": "truncated",
    "truncated_aiff": "truncated",
    "truncated_m4a": "truncated",
    "header_only_wav": "truncated",
    "not_audio_wav": "not an audio file",
    "not_audio_mp3": "not an audio file",
    "random_bytes_ogg": "not an audio file",
    "unsupported_codec": "unsupported codec",
    "nan_samples": "NaN or infinite",
    "inf_samples": "NaN or infinite",
    "too_short": "too short",
}


def test_the_zoo_covers_every_reason(corrupt_files):
    assert set(corrupt_files) == set(EXPECTED_REASON)


@pytest.mark.parametrize("reason", sorted(EXPECTED_REASON))
def test_bad_file_raises_a_typed_error_naming_path_and_reason(reason, corrupt_files):
    path = corrupt_files[reason]
    with pytest.raises(AudioDecodeError) as exc_info:
        load(path)
    err = exc_info.value
    assert err.path == str(path)
    assert str(err).startswith(str(path) + ": ")
    assert EXPECTED_REASON[reason] in err.reason, err.reason
    # One line, no errno numbers or Python reprs for a user to decipher.
    assert "\n" not in err.reason and "Errno" not in err.reason and "<" not in err.reason


def test_a_directory_and_a_missing_file(tmp_path):
    d = tmp_path / "album.wav"
    d.mkdir()
    with pytest.raises(AudioDecodeError, match="is a directory"):
        load(d)
    with pytest.raises(AudioDecodeError, match="file not found"):
        load(tmp_path / "nope.flac")
    with pytest.raises(AudioDecodeError, match="file not found"):
        io.info(tmp_path / "nope.flac")


def test_info_reports_truncation_too(corrupt_files):
    with pytest.raises(AudioDecodeError, match="truncated"):
        io.info(corrupt_files["truncated_wav"])


def test_short_audio_is_accepted_when_the_caller_allows_it(corrupt_files):
    w = load(corrupt_files["too_short"], min_duration_s=0.01)
    assert len(w.y) == int(0.05 * w.sr)


def test_an_m4a_whose_tags_are_not_utf8_still_loads(tmp_path):
    """Old taggers write Latin-1 into MP4 tags; the audio is fine, so it must load (it was
    reported as "corrupt or truncated" when PyAV decoded the tags strictly)."""
    import av
    from conftest import stereo_signal, write_m4a

    sr = 44100
    p = write_m4a(tmp_path / "plain.m4a", stereo_signal(sr, 2.0), sr)
    # the same file with a title tag, its "é" then replaced by a Latin-1 byte
    q = tmp_path / "latin1.m4a"
    with av.open(str(p)) as src, av.open(str(q), "w", format="ipod") as dst:
        dst.metadata["title"] = "caf\u00e9 del mar"
        ins = src.streams.audio[0]
        out = dst.add_stream_from_template(ins)
        for packet in src.demux(ins):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    data = q.read_bytes()
    at = data.find("caf\u00e9".encode())
    assert at > 0
    q.write_bytes(data[:at + 3] + b"\xe9 " + data[at + 5 :])
    with pytest.raises(UnicodeDecodeError):
        av.open(str(q)).close()  # strict decoding fails on this file
    meta = io.info(q)
    assert meta.backend == "pyav" and meta.sr == sr
    w = load(q)
    assert abs(len(w.y) / w.sr - 2.0) < 0.1
