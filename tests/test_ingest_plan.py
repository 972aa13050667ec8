"""The analysis budget: spread patches read by seeking give the full analysis's own rows."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import ALL_FORMATS, STEREO_SR, write_audio
from soundalike.audio import synth
from soundalike.audio.io import load, load_excerpts
from soundalike.ingest import ingest
from soundalike.catalog.store import Catalog
from soundalike.errors import ConfigError
from soundalike.ingest.plan import (
    AnalysisPlan,
    PatchGrid,
    analyze_track,
    planned_patches,
    spread_indices,
)
from soundalike.models.zoo import load_analyzer


@pytest.mark.parametrize("text, n", [("full", None), ("spread:10", 10), ("SPREAD:1", 1), (" spread:16 ", 16)])
def test_plan_parses(text, n):
    assert AnalysisPlan.parse(text).n_patches == n
    assert str(AnalysisPlan.parse(str(AnalysisPlan.parse(text)))) == str(AnalysisPlan.parse(text))


@pytest.mark.parametrize("text", ["spread:0", "spread", "half", "spread:-2", "spread:1.5", ""])
def test_bad_plans_are_refused_with_the_choices(text):
    with pytest.raises(ConfigError, match="spread:N"):
        AnalysisPlan.parse(text)


@pytest.mark.parametrize("have, want, covered", [
    ("full", "full", True), ("full", "spread:4", True), ("spread:10", "spread:4", True),
    ("spread:10", "spread:10", True), ("spread:4", "spread:10", False), ("spread:16", "full", False),
])
def test_what_covers_what(have, want, covered):
    assert AnalysisPlan.parse(have).covers(want) is covered


def test_spread_positions_are_even_distinct_and_deterministic():
    from soundalike.ingest.plan import OPENING_PATCH

    for total in (5, 7, 11, 17, 80, 81, 1200):
        for n in (1, 2, 4, 6, 10):
            if total <= n:
                continue
            for opening in (False, True):
                picks = spread_indices(n_patches_full=total, n=n, opening=opening)
                assert len(picks) == n == len(set(picks)) and picks == sorted(picks)
                assert 0 <= picks[0] and picks[-1] < total
                # every part of the track gets one: the middle patch of each ...
                assert picks[1:] == [int((i + 0.5) * total / n) for i in range(1, n)]
                # ... but with +opening the first part's is its opening (3-6 s)
                if opening and n >= 2:
                    assert picks[0] == min(OPENING_PATCH, picks[1] - 1)
                else:
                    assert picks[0] == int(0.5 * total / n)
                assert picks == spread_indices(n_patches_full=total, n=n, opening=opening)
    assert spread_indices(n_patches_full=80, n=6) == [6, 20, 33, 46, 60, 73]
    assert spread_indices(n_patches_full=80, n=6, opening=True) == [1, 20, 33, 46, 60, 73]
    assert spread_indices(n_patches_full=10, n=10) is None  # no more than N: the full analysis


@pytest.mark.parametrize("text,n,opening,back", [
    ("spread:6+opening", 6, True, "spread:6+opening"), (" Spread:6+OPENING ", 6, True, "spread:6+opening"),
    ("spread:6", 6, False, "spread:6"), ("full", None, False, "full")])
def test_the_opening_plan_parses_prints_and_covers_by_its_count(text, n, opening, back):
    p = AnalysisPlan.parse(text)
    assert (p.n_patches, p.opening, str(p)) == (n, opening, back)
    if n is not None:  # as thorough as the plain spread of as many patches, both ways
        assert p.covers(f"spread:{n}") and AnalysisPlan.parse(f"spread:{n}").covers(p)
        assert not p.covers(f"spread:{n + 1}+opening")
    with pytest.raises(ConfigError, match="spread:N\\+opening"):
        AnalysisPlan.parse("spread:6+intro")


def test_the_grid_counts_patches_as_the_full_analysis_does():
    a = load_analyzer("MTT_musicnn")
    for seconds in (2.0, 3.0, 2.999, 6.01, 31.7):
        y = synth.noise(duration_s=seconds, sr=16000, seed=1)
        assert a.patch_grid.n_patches(len(y)) == len(a.model.patches(y, 16000)) or len(y) < 48000
    g = PatchGrid(sr=10, hop=3, length=5, lead=1)
    assert [g.start(k) for k in range(3)] == [-1, 2, 5] and g.n_patches(7) == 2


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_excerpts_equal_the_slices_of_a_full_decode(fmt, tmp_path):
    """Seeked, resampled excerpts land on the very samples a full decode gives them."""
    sr_in = 48000 if fmt == "opus" else STEREO_SR
    y = np.stack([synth.harmonic_tone(220.0 * (1 + i % 3), duration_s=1.0, sr=sr_in, amplitude=0.3)
                  for i in range(6)]).reshape(-1)  # 6 s, tonal (AAC noise substitution blurs noise)
    path = write_audio(tmp_path / f"x.{fmt}", fmt, y, sr_in)
    full = load(path, sr=16000).y
    starts = [-300, 0, 1234, 16000 * 2 + 7, 16000 * 4]
    ex = load_excerpts(path, sr=16000, starts=starts, length=16000)
    # AAC after a seek: FFmpeg's decoder restarts without the previous frame's state and
    # its noise substitution draws other random numbers; the samples agree to ~1e-2 at
    # segment edges here (1e-3 inside), and patch embeddings of real music to ~2e-4.
    atol = {"m4a": 1e-2}.get(fmt, 1e-5)
    for j, e in zip(starts, ex):
        assert len(e) == 16000
        want = full[max(j, 0) : j + 16000]
        if j < 0:
            assert not e[:-j].any()  # before the track: zeros
            e = e[-j:]
        np.testing.assert_allclose(e, want, rtol=0, atol=atol, err_msg=f"{fmt} at {j}")
    tail = load_excerpts(path, sr=16000, starts=[len(full) - 100, len(full) + 5000], length=16000)
    assert 0 < len(tail[0]) <= 200 and len(tail[1]) == 0


@pytest.mark.parametrize("fmt", ["ogg", "mp3", "flac"])
def test_overlapping_excerpts_are_decoded_once_and_every_seek_lands(fmt, tmp_path, monkeypatch):
    """Ingest's excerpts (6 patches, 3 attribute excerpts, two patches inside those): each
    still equals the full decode's slice, and the overlaps are decoded once, not twice.

    Many seeks on one Ogg Vorbis handle would land on wrong samples (libsndfile), so this
    track is long and sought often: the check that every excerpt is where it belongs."""
    from soundalike.audio import attributes as A
    from soundalike.audio import io

    sr_in = 44100
    y = np.concatenate([synth.demo_track(s, seed=i, duration_s=12.0, sr=sr_in)
                        for i, s in enumerate(["drum-loop", "piano-arpeggio", "bass-groove", "ambient-drone"] * 2)])
    path = tmp_path / f"long.{fmt}"
    subtype = {"ogg": "VORBIS", "mp3": "MPEG_LAYER_III", "flac": "PCM_16"}[fmt]
    with sf.SoundFile(path, "w", sr_in, 2, format={"ogg": "OGG", "mp3": "MP3", "flac": "FLAC"}[fmt],
                      subtype=subtype) as f:
        for i in range(0, len(y), 1 << 15):  # blockwise: libsndfile's Vorbis encoder crashes on huge writes
            f.write(np.stack([y[i : i + (1 << 15)], 0.6 * y[i : i + (1 << 15)]], axis=1))
    full = load(path, sr=16000).y
    a = load_analyzer("musicnn-fusion")
    g = a.patch_grid
    picks = planned_patches(a, "spread:6", frames=io.info(path).frames, source_sr=sr_in)
    slices = A.excerpt_slices(len(full), 16000)
    starts = [g.start(k) for k in picks] + [x.start for x in slices]
    lengths = [g.length] * len(picks) + [x.stop - x.start for x in slices]
    inside = [k for k in picks if any(x.start <= g.start(k) and g.start(k) + g.length <= x.stop for x in slices)]
    assert len(inside) == 2  # patches 1 and 4 of 6 sit at 1/4 and 3/4: in the attribute excerpts
    from test_ingest_onepass import _counting_sf_reads

    decoded = _counting_sf_reads(monkeypatch)  # every block the decoder hands back
    ex = load_excerpts(path, sr=16000, starts=starts, length=lengths)
    for j, n, e in zip(starts, lengths, ex):
        assert len(e) == n
        np.testing.assert_allclose(e, full[j : j + n], rtol=0, atol=1e-5, err_msg=f"{fmt} at {j / 16000:.2f} s")
    # the two patches inside attribute excerpts cost no decoding of their own
    alone = sum(lengths) - 2 * g.length
    assert sum(decoded) < (alone + len(lengths) * (io.SEEK_PREROLL_FRAMES * 16000 // sr_in + 2000)) * sr_in / 16000
    # many short excerpts a little more than the merge gap apart: a seek each, each must land
    rng = np.random.default_rng(0)
    gaps = rng.uniform(io.MERGE_GAP_FRAMES / sr_in + 0.05, 3.0, 24)
    lens = rng.integers(8000, 48_000, 24)
    starts = (np.cumsum(gaps * 16000 + np.r_[0, lens[:-1]])).astype(int)
    keep = starts + lens < len(full) - 16000
    for j, n, e in zip(starts[keep], lens[keep], load_excerpts(path, sr=16000, starts=list(starts[keep]),
                                                               length=list(lens[keep]))):
        np.testing.assert_allclose(e, full[j : j + n], rtol=0, atol=1e-5, err_msg=f"{fmt} at {j / 16000:.2f} s")


@pytest.mark.parametrize("fmt", ["ogg", "mp3", "flac"])
def test_checked_excerpts_are_the_length_check_and_the_seeks_on_one_open_file(fmt, tmp_path, monkeypatch):
    """Ingest's seek pass in one call: the header (checked at its end) places the excerpts,
    which are load_excerpts' very samples; an MP3 is opened once for all of it."""
    from soundalike.audio import io

    sr_in = 44100
    y = synth.demo_track("bass-groove", seed=8, duration_s=50.0, sr=sr_in)
    path = tmp_path / f"t.{fmt}"
    kind = {"ogg": ("OGG", "VORBIS"), "mp3": ("MP3", "MPEG_LAYER_III"), "flac": ("FLAC", "PCM_16")}[fmt]
    with sf.SoundFile(path, "w", sr_in, 2, format=kind[0], subtype=kind[1]) as f:
        for i in range(0, len(y), 1 << 15):
            f.write(np.stack([y[i : i + (1 << 15)], 0.5 * y[i : i + (1 << 15)]], axis=1))
    seen = []

    def place(meta):
        seen.append(meta)
        n = meta.frames * 16000 // meta.sr
        return [-200, 16000, n // 2, n - 20000], [16000, 48000, 240000, 16000]

    opened = []
    real_open = io._sf_open
    monkeypatch.setattr(io, "_sf_open", lambda p: opened.append(p) or real_open(p))
    meta, got = io.checked_excerpts(path, sr=16000, place=place)
    if fmt == "mp3":  # one seek index for the excerpts and the check (Vorbis: a fresh handle per span)
        assert len(opened) == 1
    assert seen == [meta] and meta == io.length_checked(path)
    starts, lengths = place(meta)
    for a, b in zip(got, load_excerpts(path, sr=16000, starts=starts, length=lengths)):
        np.testing.assert_array_equal(a, b)
    assert [len(e) for e in got] == lengths
    # nothing to seek for: no excerpt read
    assert io.checked_excerpts(path, sr=16000, place=lambda m: None) is None
    # the data ends before the header says: the length cannot place excerpts
    if fmt == "flac":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        assert io.checked_excerpts(path, sr=16000, place=place) is None


def test_checked_excerpts_refuse_a_guessed_length(tmp_path, monkeypatch):
    """An MP3 without a Xing header: its length is a guess, nothing is placed by it."""
    from soundalike.audio import io
    from test_ingest_hardening import mp3_with_cover_no_xing

    y = synth.demo_track("piano-arpeggio", seed=2, duration_s=20.0, sr=44100)
    monkeypatch.setattr("test_ingest_hardening._note", lambda seconds=0.63: y)
    mp3 = mp3_with_cover_no_xing(tmp_path / "cover.mp3")
    called = []
    assert io.checked_excerpts(mp3, sr=16000, place=lambda m: called.append(m) or ([0], [16000])) is None
    assert called == []


def test_spread_analysis_is_the_full_analysis_on_a_subset_of_its_patches(tmp_path):
    """Same patch rows as the full analysis (to 1e-5) for the picked patches: the vectors mix."""
    a = load_analyzer("MTT_musicnn")
    y = np.concatenate([synth.demo_track(s, seed=i, duration_s=8.0, sr=22050)
                        for i, s in enumerate(["drum-loop", "piano-arpeggio", "ambient-drone", "bass-groove"])])
    path = tmp_path / "t.ogg"
    write_audio(path, "ogg", np.stack([y, 0.8 * y], axis=1), 22050)
    full = analyze_track(path, analyzer=a, plan="full")
    sp = analyze_track(path, analyzer=a, plan="spread:4")
    n = len(full.analysis.patch_embeddings)
    assert n == 10 and full.setting == "full" and sp.setting == "spread:4"
    picks = spread_indices(n_patches_full=n, n=4)
    np.testing.assert_allclose(sp.analysis.patch_embeddings, full.analysis.patch_embeddings[picks], atol=1e-5)
    np.testing.assert_allclose(sp.analysis.patch_predictions, full.analysis.patch_predictions[picks], atol=1e-5)
    np.testing.assert_allclose(sp.analysis.embedding, full.analysis.patch_embeddings[picks].mean(0), atol=1e-5)
    # the decoded excerpts are handed on (for tempo/key/loudness), each where it belongs
    assert [round(e.start_s, 3) for e in sp.excerpts] == [round((k * 47872 - 256) / 16000, 3) for k in picks]
    assert all(e.sr == 16000 and len(e.y) == a.patch_grid.length for e in sp.excerpts)
    assert sp.decoded_s < 0.45 * full.decoded_s
    # a budget of more patches than the track has is the full analysis, and says so
    same = analyze_track(path, analyzer=a, plan="spread:10")
    assert same.setting == "full"
    np.testing.assert_allclose(same.analysis.embedding, full.analysis.embedding, atol=1e-6)


def test_ingest_with_the_opening_plan_keeps_an_opening_segment_and_says_so(tmp_path):
    """``ingest --analysis spread:4+opening``: the first patch analysed is the one at 3-6 s
    (a segment vector there), the vector is those patches' mean, the catalog records the
    plan, and a later plain ``spread:4`` run finds nothing to redo."""
    a = load_analyzer("MTT_musicnn")
    y = synth.demo_track("drum-loop", seed=2, duration_s=60.0, sr=22050)
    folder = tmp_path / "m"
    folder.mkdir()
    sf.write(folder / "t.flac", y, 22050)
    full = analyze_track(folder / "t.flac", analyzer=a, plan="full")
    db = tmp_path / "c.sqlite"
    s = ingest([folder], catalog=db, model="MTT_musicnn", workers=1, analysis="spread:4+opening")
    assert s.ingested == 1 and s.analysis == "spread:4+opening"
    picks = spread_indices(n_patches_full=len(full.analysis.patch_embeddings), n=4, opening=True)
    assert picks[0] == 1 and picks != spread_indices(n_patches_full=len(full.analysis.patch_embeddings), n=4)
    with Catalog.open(db) as cat:
        (tid,) = cat.analysis_settings(a.model_id)
        assert cat.analysis_settings(a.model_id)[tid] == "spread:4+opening"
        np.testing.assert_allclose(cat.get_analysis(tid, a.model_id).embedding,
                                   full.analysis.patch_embeddings[picks].mean(0), atol=1e-4)
        starts, _ = cat.get_segments(tid, a.model_id)
        assert round(float(starts[0]), 2) == round(a.patch_grid.start(1) / a.patch_grid.sr, 2)
    again = ingest([folder], catalog=db, model="MTT_musicnn", workers=1, analysis="spread:4")
    assert again.ingested == 0 and again.unchanged == 1


def test_a_spread_analysis_never_decodes_the_whole_file(tmp_path, monkeypatch):
    from test_ingest_onepass import _counting_sf_reads

    y = synth.demo_track("piano-arpeggio", seed=3, duration_s=120.0, sr=22050)
    path = tmp_path / "long.flac"
    sf.write(path, y, 22050)
    decoded = _counting_sf_reads(monkeypatch)
    ta = analyze_track(path, analyzer=load_analyzer("mfcc-stats"), plan="spread:10")
    assert ta.setting == "spread:10" and len(ta.excerpts) == 10
    assert sum(decoded) < 0.3 * len(y)  # 10 x 3 s of 120 s, plus pre-roll and margins


def test_generic_analyzers_average_their_excerpts(tmp_path):
    a = load_analyzer("mfcc-stats")
    y = synth.demo_track("bass-groove", seed=1, duration_s=40.0, sr=22050)
    sf.write(tmp_path / "t.flac", y, 22050)
    ta = analyze_track(tmp_path / "t.flac", analyzer=a, plan="spread:4")
    picks = planned_patches(a, "spread:4", frames=len(y), source_sr=22050)
    y = load(tmp_path / "t.flac").y  # as stored (16-bit)
    n = 3 * 22050
    want = np.mean([a.analyze(y[k * n : (k + 1) * n], 22050).embedding for k in picks], axis=0)
    np.testing.assert_allclose(ta.analysis.embedding, want, atol=1e-4)


def test_ingest_records_the_analysis_and_upgrades_it_when_asked(tmp_path):
    music = tmp_path / "m"
    music.mkdir()
    sf.write(music / "long.flac", synth.demo_track("drum-loop", seed=0, duration_s=40.0, sr=22050), 22050)
    sf.write(music / "short.flac", synth.demo_track("drum-loop", seed=1, duration_s=7.0, sr=22050), 22050)
    db = tmp_path / "c.sqlite"
    s = ingest([music], catalog=db, model="mfcc-stats", workers=1, analysis="spread:4")
    assert s.ingested == 2 and s.analysis == "spread:4" and abs(s.audio_s - 47.0) < 0.1
    with Catalog.open(db) as cat:
        mid = cat.default_model_id()
        by_path = {cat.get_track(t).path: a for t, a in cat.analysis_settings(mid).items()}
        assert by_path == {str((music / "long.flac").resolve()): "spread:4",
                           str((music / "short.flac").resolve()): "full"}
        assert cat.get_analysis(cat.track_by_path(str((music / "long.flac").resolve())).id, mid).analysis == "spread:4"
    # a smaller budget is covered by what is stored; a full one re-makes the sampled track only
    s = ingest([music], catalog=db, model="mfcc-stats", workers=1, analysis="spread:2")
    assert (s.ingested, s.unchanged) == (0, 2)
    s = ingest([music], catalog=db, model="mfcc-stats", workers=1, analysis="full")
    assert (s.ingested, s.unchanged) == (1, 1)
    with Catalog.open(db) as cat:
        assert set(cat.analysis_settings(cat.default_model_id()).values()) == {"full"}
        assert cat.count_tracks() == 2


def test_cli_analysis_options(tmp_path):
    import json
    import os
    import subprocess
    import sys

    sf.write(tmp_path / "long.flac", synth.demo_track("drum-loop", seed=0, duration_s=40.0, sr=22050), 22050)
    db = str(tmp_path / "c.sqlite")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "soundalike", "ingest", str(tmp_path), "--catalog", db,
                               "--model", "mfcc-stats", "--workers", "1", *args], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})

    p = run("--patches", "4", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["analysis"] == "spread:4" and out["ingested"] == 1 and abs(out["audio_s"] - 40.0) < 0.1
    p = run("--analysis", "full", "--patches", "3")
    assert p.returncode == 1 and "not both" in p.stderr and "Traceback" not in p.stderr
    p = run("--analysis", "most")
    assert p.returncode == 1 and "spread:N" in p.stderr and "Traceback" not in p.stderr
    p = run("--ray", "127.0.0.1:1")  # nothing listens there: a clear error, not a hang
    assert p.returncode == 1 and "Ray" in p.stderr and "Traceback" not in p.stderr
