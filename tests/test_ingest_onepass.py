"""One decode per file: peaks, spread patches and attribute excerpts come from one pass."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import ALL_FORMATS, OPUS_SR, write_audio
from soundalike.audio import io, synth
from soundalike.audio.io import load, load_excerpts, read_once
from soundalike.audio.peaks import peaks_of_file
from soundalike.catalog.store import Catalog
from soundalike.ingest import ingest
from soundalike.ingest.pipeline import analyze_file, track_attributes
from soundalike.ingest.plan import analyze_track, default_analysis, planned_patches
from soundalike.models.zoo import load_analyzer, split_precision

SR = 22050


def _track(path, seconds: float, *, style: str = "piano-arpeggio", seed: int = 3):
    y = synth.demo_track(style, seed=seed, duration_s=seconds, sr=SR)
    sf.write(path, np.stack([y, 0.6 * y], axis=1), SR)
    return path


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_read_once_cuts_what_seeking_reads_and_feeds_every_sample_on(fmt, tmp_path):
    sr = OPUS_SR if fmt == "opus" else SR
    y = synth.demo_track("bass-groove", seed=2, duration_s=9.0, sr=sr)
    path = write_audio(tmp_path / f"t.{fmt}", fmt, np.stack([y, 0.5 * y], axis=1), sr)
    full = load(path, sr=16000).y
    n = len(full)
    starts = [-300, 0, 16000, 50_001, n - 5000, n + 100]
    blocks: list[np.ndarray] = []
    one = read_once(path, sr=16000, starts=starts, lengths=[12_000] * len(starts), on_block=blocks.append,
                    whole=True)
    seeked = load_excerpts(path, sr=16000, starts=starts, length=12_000)
    native = load(path)  # the file's own rate, every sample
    assert one.sr == native.sr and one.frames == len(native.y) == sum(map(len, blocks))
    if fmt == "ogg":  # FFmpeg's Vorbis decoder: libvorbis' samples to float rounding
        np.testing.assert_allclose(np.concatenate(blocks), native.y, rtol=0, atol=1e-6)
        np.testing.assert_allclose(one.y, full, rtol=0, atol=1e-6)
    else:
        np.testing.assert_array_equal(np.concatenate(blocks), native.y)
        np.testing.assert_array_equal(one.y, full)  # whole=True: what load() gives, bit for bit
    for j, got, want in zip(starts, one.excerpts, seeked):
        ref = np.concatenate([np.zeros(max(0, -j), np.float32), full[max(0, j) : j + 12_000]])[:12_000]
        assert len(got) == len(ref) == len(want), (fmt, j)
        if len(ref):
            # a straight decode is the reference: exact to the resampler's rounding on every format
            np.testing.assert_allclose(got, ref, atol=2e-5, err_msg=f"{fmt} at {j}")
    assert len(one.excerpts[-1]) == 0 and len(one.excerpts[-2]) == 5000


def _counting_sf_reads(monkeypatch) -> list[int]:
    decoded: list[int] = []
    real = io._SfSource._read

    def counting(self, n):
        out = real(self, n)
        decoded.append(len(out))
        return out

    monkeypatch.setattr(io._SfSource, "_read", counting)
    return decoded


def test_read_once_decodes_vorbis_with_ffmpeg_to_libvorbis_samples(tmp_path, monkeypatch):
    """Ogg Vorbis goes through FFmpeg (faster); peaks, excerpts and attributes stay libvorbis'."""
    from soundalike.audio.peaks import PeaksAccumulator

    y = synth.demo_track("drum-loop", seed=4, duration_s=40.0, sr=44100)
    path = tmp_path / "t.ogg"
    sf.write(path, np.stack([y, 0.7 * y], axis=1), 44100, format="OGG", subtype="VORBIS")
    ref = load(path).y  # libsndfile (libvorbis), every sample at the file's rate
    ref16 = load(path, sr=16000).y
    decoded = _counting_sf_reads(monkeypatch)
    acc = PeaksAccumulator()
    acc.add(np.ones(10, np.float32))  # stale samples a restart must not keep: none here
    acc.reset()
    starts = [0, 100_000, 300_000]
    one = read_once(path, sr=16000, starts=starts, lengths=[48_128] * 3, on_block=acc.add, on_restart=acc.reset)
    assert sum(decoded) == 0  # libsndfile decoded nothing: FFmpeg did
    assert one.frames == len(ref)
    peaks, want = acc.result(sr=one.sr), peaks_of_file(path)
    assert np.abs(peaks.max.astype(int) - want.max).max() <= 1 and np.abs(peaks.min.astype(int) - want.min).max() <= 1
    for j, got in zip(starts, one.excerpts):
        np.testing.assert_allclose(got, ref16[j : j + 48_128], rtol=0, atol=1e-5)
    # without a way to restart the receiver of the blocks, libsndfile reads it at once
    decoded.clear()
    plain = read_once(path, sr=16000, starts=starts, lengths=[48_128] * 3, on_block=lambda b: None)
    assert sum(decoded) == len(ref)
    for j, got in zip(starts, plain.excerpts):
        np.testing.assert_allclose(got, ref16[j : j + 48_128], rtol=0, atol=2e-5)


def test_a_chained_ogg_that_ffmpeg_reads_otherwise_is_read_again_by_libsndfile(tmp_path):
    """Two Vorbis streams back to back: FFmpeg decodes both, libsndfile the first alone; the
    one pass starts over (telling the receiver) and gives libsndfile's samples, bit for bit."""
    t = np.arange(3 * SR) / SR
    parts = []
    for i, f0 in enumerate((440.0, 660.0)):
        p = tmp_path / f"{i}.ogg"
        tone = (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
        sf.write(p, np.stack([tone, tone], axis=1), SR, format="OGG", subtype="VORBIS")
        parts.append(p.read_bytes())
    path = tmp_path / "chained.ogg"
    path.write_bytes(b"".join(parts))
    ref = load(path).y
    blocks: list[np.ndarray] = []
    restarts: list[int] = []

    def restart():
        restarts.append(len(blocks))
        blocks.clear()

    one = read_once(path, sr=16000, starts=[0], lengths=[1000], on_block=blocks.append, on_restart=restart)
    assert restarts and restarts[0] > 0  # FFmpeg had sent blocks, then the decode started over
    assert one.frames == len(ref) == 3 * SR
    np.testing.assert_array_equal(np.concatenate(blocks), ref)


def test_read_once_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.mp3"
    bad.write_text("not audio\n" * 50)
    with pytest.raises(io.AudioDecodeError, match="bad.mp3"):
        read_once(bad, sr=16000, starts=[0], lengths=[100])
    good = _track(tmp_path / "g.flac", 2.0)
    with pytest.raises(ValueError, match="lengths"):
        read_once(good, sr=16000, starts=[0, 1], lengths=[100])


@pytest.mark.parametrize(("plan", "peaks"), [("spread:4", True), ("full", False), ("full", True)])
def test_ingest_decodes_each_file_once(plan, peaks, tmp_path, monkeypatch):
    """With --peaks, or for a full analysis (which reads every sample anyway): peaks,
    analysis and attributes from one whole decode, not one per stage."""
    path = _track(tmp_path / "long.flac", 60.0)
    n_frames = sf.info(path).frames
    decoded = _counting_sf_reads(monkeypatch)
    res = analyze_file(str(path), None, True, load_analyzer("MTT_musicnn"), analysis=plan, peaks=peaks)
    assert res["kind"] == "ok" and res["analysis"] == plan
    assert n_frames <= sum(decoded) <= n_frames + 1
    assert res["peaks"].n_columns == 1000 and abs(res["duration_s"] - 60.0) < 0.01
    assert res["attributes"]["bpm"] is not None and res["attributes"]["seconds_read"] > 0


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3"])
def test_a_spread_analysis_decodes_only_what_it_analyzes(fmt, tmp_path, monkeypatch):
    """Default ingest: the spread patches, the three attribute excerpts and the last second
    (the header's length checked) are decoded by seeking, never the whole file, and the
    answers are those of the whole decode (--peaks), which alone has the peaks."""
    sr = 44100
    y = synth.demo_track("drum-loop", seed=6, duration_s=180.0, sr=sr)
    path = tmp_path / f"long.{fmt}"
    kind = {"flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III")}[fmt]
    with sf.SoundFile(path, "w", sr, 2, format=kind[0], subtype=kind[1]) as f:
        for i in range(0, len(y), 1 << 15):  # in blocks: libsndfile's Vorbis encoder crashes on huge writes
            f.write(np.stack([y[i : i + (1 << 15)], 0.6 * y[i : i + (1 << 15)]], axis=1))
    a = load_analyzer("MTT_musicnn")
    whole = analyze_file(str(path), None, True, a, analysis="spread:4", peaks=True)
    decoded = _counting_sf_reads(monkeypatch)
    res = analyze_file(str(path), None, True, a, analysis="spread:4")
    assert res["kind"] == "ok" and res["analysis"] == "spread:4" and res["peaks"] is None
    n = io.info(path).frames
    # 4 x 3 s + 3 x 15 s + the last second of 180 s, with margins and seek pre-rolls
    assert 0 < sum(decoded) < 0.4 * n
    assert res["duration_s"] == pytest.approx(whole["duration_s"], abs=1e-6)
    # the same samples: exact for FLAC and MP3, FFmpeg's Vorbis (the whole decode) to ~1e-7
    np.testing.assert_allclose(res["embedding"], whole["embedding"], atol=1e-5)
    assert max(abs(res["predictions"][k] - p) for k, p in whole["predictions"].items()) < 1e-5
    for k in ("bpm", "camelot", "seconds_read", "duration_s"):
        assert res["attributes"][k] == whole["attributes"][k], k
    assert res["attributes"]["loudness_lufs"] == pytest.approx(whole["attributes"]["loudness_lufs"], abs=0.01)
    np.testing.assert_allclose(res["segments"][1], whole["segments"][1], atol=1e-5)


def test_a_header_length_that_cannot_be_checked_gets_the_whole_decode(tmp_path, monkeypatch):
    """An MP3 without a Xing header states no length (libsndfile guesses one from the file
    size, cover art included): no seeking by it; the file is decoded whole, the stored
    length is the decoded one and the peaks come with it.  A FLAC cut short is the same
    clear error with or without --peaks."""
    from test_ingest_hardening import mp3_with_cover_no_xing

    a = load_analyzer("MTT_musicnn")
    y = synth.demo_track("piano-arpeggio", seed=2, duration_s=40.0, sr=44100)
    mp3 = tmp_path / "cover.mp3"
    monkeypatch.setattr("test_ingest_hardening._note", lambda seconds=0.63: y)
    mp3_with_cover_no_xing(mp3)
    assert io.length_checked(mp3) is None and io.info(mp3).duration_s > 40.5  # the header's guess
    res = analyze_file(str(mp3), None, True, a, analysis="spread:4")
    assert res["kind"] == "ok" and res["analysis"] == "spread:4"
    assert res["duration_s"] == pytest.approx(load(mp3).duration_s, abs=1e-3)
    assert res["peaks"] is not None and res["peaks"].n_columns == 1000
    flac = _track(tmp_path / "cut.flac", 40.0)
    assert io.length_checked(flac) is not None
    data = flac.read_bytes()
    flac.write_bytes(data[: len(data) // 2])
    assert io.length_checked(flac) is None  # the stated end is not in the data
    errs = [analyze_file(str(flac), None, True, a, analysis="spread:4", peaks=pk) for pk in (False, True)]
    assert [e["kind"] for e in errs] == ["error", "error"]
    assert errs[0]["reason"] == errs[1]["reason"] and "truncated" in errs[0]["reason"]


def test_the_one_pass_gives_what_seeking_gives(tmp_path):
    """Spread analysis and attributes from the one pass (--peaks) == the seeking path's (FLAC: exact)."""
    path = str(_track(tmp_path / "t.flac", 75.0, style="drum-loop", seed=5))
    a = load_analyzer("MTT_musicnn")
    res = analyze_file(path, None, True, a, analysis="spread:5", peaks=True)
    ta = analyze_track(path, analyzer=a, plan="spread:5")
    np.testing.assert_allclose(res["embedding"], ta.analysis.embedding, atol=1e-5)
    for k, p in ta.analysis.predictions.items():
        assert abs(res["predictions"][k] - p) < 1e-5
    want = track_attributes(path, ta.analysis.predictions, sr=a.sample_rate, decoded_s=75.0)
    got = res["attributes"]
    assert got["seconds_read"] == want["seconds_read"] == 45.0
    assert got["bpm"] == pytest.approx(want["bpm"], abs=0.05) and got["camelot"] == want["camelot"]
    assert got["loudness_lufs"] == pytest.approx(want["loudness_lufs"], abs=0.01)
    # a full analysis hands the same excerpts on: the attributes do not depend on the budget
    whole = analyze_file(path, None, True, a, analysis="full")["attributes"]
    assert whole["seconds_read"] == 45.0 and whole["camelot"] == got["camelot"]
    assert whole["bpm"] == pytest.approx(got["bpm"], abs=0.05)
    assert whole["loudness_lufs"] == pytest.approx(got["loudness_lufs"], abs=0.01)
    p = peaks_of_file(path)
    np.testing.assert_array_equal(res["peaks"].max, p.max)
    np.testing.assert_array_equal(res["peaks"].min, p.min)


def test_a_header_that_lies_about_the_length_still_gets_a_right_analysis(tmp_path, monkeypatch):
    """Spread positions come from the header; one that says 10x the real length sends the
    patches past the data: the track is analyzed whole and its attributes read again."""
    path = str(_track(tmp_path / "t.flac", 20.0))
    real_info = io.info

    def lying(p):
        import dataclasses

        m = real_info(p)
        return dataclasses.replace(m, frames=m.frames * 10)

    import soundalike.ingest.pipeline as pl

    monkeypatch.setattr(io, "info", lying)
    res = pl.analyze_file(path, None, True, load_analyzer("MTT_musicnn"), analysis="spread:4")
    assert res["kind"] == "ok", res.get("reason")
    assert abs(res["duration_s"] - 20.0) < 0.01 and res["attributes"]["duration_s"] == pytest.approx(20.0, abs=0.01)
    assert res["attributes"]["bpm"] is not None


def test_the_fusion_samples_the_full_analysis_s_own_patches(tmp_path):
    a = load_analyzer("musicnn-fusion")
    path = _track(tmp_path / "t.flac", 40.0, style="bass-groove", seed=4)
    y = load(path, sr=16000).y
    full = a.analyze(y, 16000)
    ta = analyze_track(path, analyzer=a, plan="spread:4")
    picks = planned_patches(a, "spread:4", frames=sf.info(path).frames, source_sr=SR)
    assert ta.setting == "spread:4" and len(ta.analysis.patch_embeddings) == 4
    np.testing.assert_allclose(ta.analysis.patch_embeddings, full.patch_embeddings[picks], atol=1e-5)
    np.testing.assert_allclose(ta.analysis.patch_predictions, full.patch_predictions[picks], atol=1e-5)


def test_the_fusion_in_bf16_is_its_own_model_and_close_to_fp32(tmp_path):
    fp32 = load_analyzer("musicnn-fusion")
    bf16 = load_analyzer("musicnn-fusion@bf16")
    assert split_precision("musicnn-fusion@bf16") == ("musicnn-fusion", "bf16")
    assert bf16 is load_analyzer("musicnn-fusion", precision="bf16")
    assert bf16.name == "musicnn-fusion@bf16" and bf16.model_id.startswith("musicnn-fusion@bf16-")
    assert fp32.name == "musicnn-fusion" and bf16.model_id != fp32.model_id
    y = synth.demo_track("piano-arpeggio", seed=1, duration_s=12.0, sr=16000)
    x, z = fp32.analyze(y, 16000), bf16.analyze(y, 16000)
    assert 0 < max(abs(x.predictions[k] - z.predictions[k]) for k in x.predictions) < 2e-2
    assert float(x.embedding @ z.embedding) > 0.999


def test_ingest_uses_the_model_s_own_budget(tmp_path):
    music = tmp_path / "m"
    music.mkdir()
    _track(music / "a.flac", 40.0)
    assert default_analysis(load_analyzer("musicnn-fusion")) == "spread:6"
    assert default_analysis(load_analyzer("MTT_musicnn")) == "spread:10"
    s = ingest([music], catalog=tmp_path / "c.sqlite", model="musicnn-fusion", workers=1)
    assert s.ingested == 1 and s.analysis == "spread:6"
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        (t,) = list(cat.iter_tracks())
        assert cat.get_analysis(t.id, s.model_id).analysis == "spread:6"
    # an older catalog's spread:10 analysis covers spread:6: nothing is analyzed again
    s2 = ingest([music], catalog=tmp_path / "c.sqlite", model="musicnn-fusion", workers=1)
    assert (s2.ingested, s2.unchanged) == (0, 1)
