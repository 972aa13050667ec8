"""Live recognition fed with arrays: no device, no sound server."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio import synth
from soundalike.errors import ConfigError, DeviceError, ModelMismatchError
from soundalike.live.display import bar, render, write_json_line
from soundalike.live.recognize import (
    HopResult,
    LiveConfig,
    Recognizer,
    RingBuffer,
    TrackMatcher,
    listen,
    open_recognizer,
    parse_duration,
)
from soundalike.live.sources import ArraySource, FileSource, PCMStreamSource, resolve_device
from soundalike.models.base import Analysis
from soundalike.models.baseline import MFCCStats

SR = 22050
STYLES = ("ambient-drone", "drum-loop", "piano-arpeggio", "noise-texture")


# --------------------------------------------------------------------------- analyzers for tests


class WindowRecorder:
    """A real (if trivial) analyzer: embedding = [mean, rms], and it keeps what it saw."""

    name = "recorder"
    model_id = "recorder-v1"
    labels: list[str] = []
    label_category = "tag"
    multi_label = True
    embedding_dim = 2

    def __init__(self, sample_rate: int = SR):
        self.sample_rate = sample_rate
        self.windows: list[np.ndarray] = []

    def analyze(self, y: np.ndarray, sr: int) -> Analysis:
        assert sr == self.sample_rate
        self.windows.append(np.array(y, copy=True))
        return Analysis(embedding=np.array([y.mean(), np.sqrt(np.mean(y**2))], np.float32))


class BandAnalyzer:
    """Labels 'low' / 'high' from the share of spectral energy below / above 1 kHz."""

    name = "band"
    model_id = "band-v1"
    sample_rate = SR
    labels = ["low", "high"]
    label_category = "register"
    multi_label = False
    embedding_dim = 2

    def __init__(self):
        self.calls = 0

    def analyze(self, y: np.ndarray, sr: int) -> Analysis:
        self.calls += 1
        S = np.abs(np.fft.rfft(y)) ** 2
        f = np.fft.rfftfreq(len(y), 1 / sr)
        lo, hi = float(S[f < 1000].sum()), float(S[f >= 1000].sum())
        p_low = lo / (lo + hi + 1e-12)
        return Analysis(embedding=np.array([p_low, 1 - p_low], np.float32),
                        predictions={"low": p_low, "high": 1 - p_low})


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tracks() -> dict[str, np.ndarray]:
    return {s: synth.demo_track(s, seed=i, duration_s=8.0, sr=SR) for i, s in enumerate(STYLES)}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, tracks):
    """A catalog of four demo tracks analysed with mfcc-stats (the real ingest)."""
    from soundalike.ingest import ingest
    from soundalike.catalog.store import Catalog

    root = tmp_path_factory.mktemp("live_cat")
    music = root / "music"
    music.mkdir()
    for style, y in tracks.items():
        sf.write(music / f"{style}.wav", y, SR)
    path = root / "cat.sqlite"
    ingest([music], catalog=path, model="mfcc-stats", workers=1)
    cat = Catalog.open(path, create=False)
    ids = {t.path.rsplit("/", 1)[-1].removesuffix(".wav"): t.id for t in cat.iter_tracks()}
    yield cat, ids
    cat.close()


def _mfcc_recognizer(catalog, **cfg) -> Recognizer:
    cat, _ = catalog
    a = MFCCStats()
    return Recognizer(a, config=LiveConfig(**cfg), matcher=TrackMatcher(cat, model_id=a.model_id))


def _top_votes(results: list[HopResult]) -> dict[int, int]:
    votes: dict[int, int] = {}
    for r in results:
        if r.nearest:
            votes[r.nearest[0].track_id] = votes.get(r.nearest[0].track_id, 0) + 1
    return votes


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize("text,seconds", [
    ("3s", 3.0), ("500ms", 0.5), ("0.5", 0.5), ("2", 2.0), (" 1.5 s ", 1.5), ("2min", 120.0),
    ("250MS", 0.25), (".25s", 0.25), (4, 4.0), (0.75, 0.75),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "3 parsecs", "-1s", "1e999", "nan"])
def test_parse_duration_rejects(text):
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_config_rejects_hop_longer_than_window():
    with pytest.raises(ConfigError):
        LiveConfig(window_s=1.0, hop_s=2.0)
    with pytest.raises(ConfigError):
        LiveConfig(smooth=0)


# --------------------------------------------------------------------------- ring buffer


@pytest.mark.parametrize("capacity", [1, 7, 100])
def test_ring_buffer_keeps_latest_samples(capacity):
    rng = np.random.default_rng(capacity)
    rb = RingBuffer(capacity)
    written = []
    for _ in range(60):
        n = int(rng.integers(0, 2 * capacity + 3))
        y = rng.standard_normal(n).astype(np.float32)
        rb.write(y)
        written.append(y)
        allw = np.concatenate(written)
        assert rb.total == len(allw)
        assert len(rb) == min(len(allw), capacity)
        np.testing.assert_array_equal(rb.latest(), allw[-capacity:])
        k = int(rng.integers(0, capacity + 2))
        np.testing.assert_array_equal(rb.latest(k), allw[len(allw) - min(k, len(rb), len(allw)):])


# --------------------------------------------------------------------------- windowing


@pytest.mark.parametrize("block", [1000, 4410, 22050, 100_000])
def test_windows_are_the_right_samples_at_every_hop(block):
    rng = np.random.default_rng(1)
    y = rng.uniform(-0.5, 0.5, int(7.3 * SR)).astype(np.float32)
    a = WindowRecorder()
    rec = Recognizer(a, config=LiveConfig(window_s=2.0, hop_s=0.5, silence_db=-120))
    results = []
    for start in range(0, len(y), block):
        results += rec.push(y[start : start + block], SR)
    win, hop = 2 * SR, SR // 2
    expect_ends = list(range(win, len(y) + 1, hop))
    assert len(results) == len(a.windows) == len(expect_ends)
    for r, w, end in zip(results, a.windows, expect_ends):
        np.testing.assert_allclose(w * 0 + w, w)  # finite
        # level control scales a window by one gain: compare shapes up to that factor
        ref = y[end - win : end]
        g = float(np.dot(w, ref) / np.dot(ref, ref))
        np.testing.assert_allclose(w, g * ref, rtol=1e-4, atol=1e-6)
        assert r.t_s == pytest.approx(end / SR)
    assert [r.index for r in results] == list(range(len(results)))


def test_latest_only_skips_stale_hops():
    y = synth.noise(duration_s=5.0, sr=SR, amplitude=0.2)
    a = WindowRecorder()
    rec = Recognizer(a, config=LiveConfig(window_s=2.0, hop_s=0.5))
    out = rec.push(y, SR, latest_only=True)
    assert len(out) == 1 and len(a.windows) == 1
    assert out[0].skipped == 6  # hops ending at 2.0, 2.5, ... 5.0 s: 7 due, 6 skipped
    assert out[0].t_s == pytest.approx(5.0)


def test_no_result_before_first_window_is_full():
    rec = Recognizer(WindowRecorder(), config=LiveConfig(window_s=3.0, hop_s=0.5))
    assert rec.push(synth.noise(duration_s=2.9, sr=SR), SR) == []
    assert len(rec.push(synth.noise(duration_s=0.2, sr=SR), SR)) == 1


def test_a_stream_shorter_than_a_window_still_gets_one_decision_at_its_end():
    a = WindowRecorder()
    rec = Recognizer(a, config=LiveConfig(window_s=3.0, hop_s=0.5))
    y = synth.noise(duration_s=0.8, sr=SR, amplitude=0.2)
    assert rec.push(y, SR) == []
    out = rec.push(np.zeros(0, np.float32), SR, last=True)
    assert len(out) == 1 and len(a.windows) == 1
    assert len(a.windows[0]) == pytest.approx(0.8 * SR, abs=SR * 0.01)
    # A stream that did fill a window gets no extra partial decision at its end.
    rec = Recognizer(WindowRecorder(), config=LiveConfig(window_s=1.0, hop_s=0.5))
    assert len(rec.push(synth.noise(duration_s=1.2, sr=SR), SR)) == 1
    assert rec.push(np.zeros(0, np.float32), SR, last=True) == []


# --------------------------------------------------------------------------- smoothing & decisions


def test_smoothing_is_the_mean_of_the_last_n_windows():
    low = synth.tone(200.0, duration_s=4.0, sr=SR, amplitude=0.3)
    high = synth.tone(4000.0, duration_s=4.0, sr=SR, amplitude=0.3)
    y = np.concatenate([low, high])
    n = 3
    rec = Recognizer(BandAnalyzer(), config=LiveConfig(window_s=1.0, hop_s=0.5, smooth=n, top=2,
                                                        target_db=None))
    results = list(listen(ArraySource(y, SR, block_s=0.1, realtime=False), rec))
    raw = BandAnalyzer()
    raw_low = [raw.analyze(y[int(r.t_s * SR) - SR : int(r.t_s * SR)], SR).predictions["low"]
               for r in results]
    for i, r in enumerate(results):
        got = dict(r.labels)["low"]
        expect = float(np.mean(raw_low[max(0, i - n + 1) : i + 1]))
        assert got == pytest.approx(expect, abs=1e-5)
        assert r.n_smoothed == min(i + 1, n)
    decisions = [r.decision for r in results]
    assert decisions[0] == "low" and decisions[-1] == "high"
    # the switch lags behind the change at 4 s because of smoothing
    first_high = next(r.t_s for r in results if r.decision == "high")
    assert 4.0 < first_high <= 4.0 + n * 0.5 + 1.0


def test_silence_gives_no_decision_and_resets_history():
    a = BandAnalyzer()
    tone = synth.tone(300.0, duration_s=3.0, sr=SR, amplitude=0.3)
    quiet = synth.noise(duration_s=3.0, sr=SR, amplitude=1e-4, seed=3)  # about -80 dBFS
    y = np.concatenate([tone, synth.silence(duration_s=3.0, sr=SR), quiet, tone])
    rec = Recognizer(a, config=LiveConfig(window_s=1.0, hop_s=0.5, smooth=4))
    results = list(listen(ArraySource(y, SR, realtime=False), rec))
    silent = [r for r in results if 4.0 <= r.t_s <= 9.0]
    assert silent and all(r.status == "silence" for r in silent)
    assert all(r.decision is None and r.labels == [] and r.nearest == [] for r in silent)
    after = [r for r in results if r.t_s > 9.0 and r.status == "ok"]
    assert after and after[0].n_smoothed == 1  # history was cleared
    assert after[-1].decision == "low"
    # the analyzer never ran on a silent window
    assert a.calls == sum(r.status == "ok" for r in results)
    # no JSON trouble with -inf levels
    assert json.loads(json.dumps(silent[0].to_json(), allow_nan=False))["level_db"] is None


def test_low_confidence_gives_no_decision():
    y = (synth.tone(300.0, duration_s=2.0, sr=SR, amplitude=0.3)
         + synth.tone(3000.0, duration_s=2.0, sr=SR, amplitude=0.3)).astype(np.float32)
    rec = Recognizer(BandAnalyzer(), config=LiveConfig(window_s=1.0, hop_s=0.5, min_confidence=0.9))
    results = rec.push(y, SR)
    assert results and all(r.status == "ok" and r.decision is None for r in results)
    assert all(max(p for _, p in r.labels) < 0.9 for r in results)


# --------------------------------------------------------------------------- nearest tracks


@pytest.mark.parametrize("style", STYLES)
def test_a_track_played_live_finds_itself(catalog, tracks, style):
    _, ids = catalog
    rec = _mfcc_recognizer(catalog, hop_s=1.0, smooth=2)
    results = list(listen(ArraySource(tracks[style], SR, realtime=False), rec))
    assert len(results) == 6
    votes = _top_votes(results)
    assert max(votes, key=votes.get) == ids[style]
    assert results[-1].nearest[0].track_id == ids[style]
    scores = [n.score for n in results[-1].nearest]
    assert scores == sorted(scores, reverse=True)


def test_clipping_is_reported_and_still_matches(catalog, tracks):
    _, ids = catalog
    style = "piano-arpeggio"
    y = np.clip(tracks[style] * np.float32(6.0), -1.0, 1.0)
    rec = _mfcc_recognizer(catalog)
    results = list(listen(ArraySource(y, SR, realtime=False), rec))
    assert all(r.clipped > 0.001 for r in results)
    votes = _top_votes(results)
    assert max(votes, key=votes.get) == ids[style]


def test_quiet_input_is_levelled(catalog, tracks):
    _, ids = catalog
    style = "drum-loop"
    y = tracks[style] * np.float32(10 ** (-20 / 20))  # 20 dB quieter, like a distant mic
    rec = _mfcc_recognizer(catalog)
    results = list(listen(ArraySource(y, SR, realtime=False), rec))
    assert all(r.status == "ok" for r in results)
    votes = _top_votes(results)
    assert max(votes, key=votes.get) == ids[style]


@pytest.mark.parametrize("sr_in", [16000, 44100])
def test_sample_rate_mismatch_is_resampled(catalog, tracks, sr_in):
    from soundalike.audio.resample import resample

    _, ids = catalog
    style = "ambient-drone"
    y = resample(tracks[style], SR, sr_in)
    rec = _mfcc_recognizer(catalog)
    results = list(listen(ArraySource(y, sr_in, block_s=0.037, realtime=False), rec))
    # same hop times as at the analyzer's own rate
    assert [round(r.t_s, 2) for r in results] == [3.0 + 0.5 * i for i in range(len(results))]
    assert len(results) == 11
    votes = _top_votes(results)
    assert max(votes, key=votes.get) == ids[style]


def test_catalog_without_the_model_raises_mismatch(catalog):
    cat, _ = catalog
    with pytest.raises(ModelMismatchError, match="no embeddings"):
        TrackMatcher(cat, model_id="some-other-model")


def test_catalog_without_the_model_falls_back_to_labels_with_one_warning(catalog):
    cat, _ = catalog
    said: list[str] = []
    rec, opened = open_recognizer(model="MTT_musicnn", catalog_path=cat.path, require_catalog=True,
                                  threads=None, on_warning=said.append)
    assert opened is None and rec.matcher is None and rec.analyzer.labels
    assert len(said) == 1 and "labels only" in said[0] and "\n" not in said[0]
    rec, opened = open_recognizer(model="MTT_musicnn", catalog_path=cat.path, require_catalog=False,
                                  threads=None, on_warning=said.append)
    assert opened is None and rec.matcher is None and rec.sr == 16000
    assert len(said) == 1  # the implicit default catalog is skipped silently


def test_open_recognizer_picks_the_catalogs_default_model(catalog):
    cat, _ = catalog
    rec, opened = open_recognizer(catalog_path=cat.path, require_catalog=True, threads=None)
    try:
        assert rec.analyzer.name == "mfcc-stats" and rec.matcher is not None
    finally:
        opened.close()


# --------------------------------------------------------------------------- sources


@pytest.mark.parametrize("fmt,channels", [("s16le", 1), ("s16le", 2), ("f32le", 2), ("s32le", 1), ("u8", 1)])
def test_pcm_stream_decodes_in_odd_chunks(fmt, channels):
    rng = np.random.default_rng(0)
    y = rng.uniform(-0.9, 0.9, (5000, channels)).astype(np.float32)
    dtype, scale, offset = {"s16le": ("<i2", 32767, 0), "s32le": ("<i4", 2**31 - 1, 0),
                            "f32le": ("<f4", 1, 0), "u8": ("u1", 127, 128)}[fmt]
    raw = np.round(y * scale + offset).astype(dtype) if fmt != "f32le" else y.astype(dtype)

    class Trickle(io.BytesIO):  # a pipe that hands out awkward chunk sizes
        def read1(self, n=-1):
            return super().read(min(n, 997))

    src = PCMStreamSource(Trickle(raw.tobytes()), sr=8000, format=fmt, channels=channels, block_s=0.05)
    got = np.concatenate(list(src.blocks()))
    assert got.dtype == np.float32 and len(got) == len(y)
    tol = {"s16le": 1e-4, "s32le": 1e-6, "f32le": 1e-7, "u8": 2e-2}[fmt]
    np.testing.assert_allclose(got, y.mean(axis=1), atol=tol)


def test_file_source_paced_and_fast(tmp_path):
    import time

    y = synth.noise(duration_s=1.0, sr=16000, amplitude=0.1)
    p = tmp_path / "n.flac"
    sf.write(p, y, 16000)
    fast = FileSource(p, realtime=False, block_s=0.1)
    assert fast.sr == 16000
    t0 = time.perf_counter()
    got = np.concatenate(list(fast.blocks()))
    fast_s = time.perf_counter() - t0
    np.testing.assert_allclose(got, y, atol=1e-4)
    t0 = time.perf_counter()
    n = sum(len(b) for b in FileSource(p, realtime=True, block_s=0.1).blocks())
    paced_s = time.perf_counter() - t0
    assert n == len(y)
    assert paced_s >= 0.85 and paced_s > fast_s  # paced: about the file's duration


def test_unknown_device_is_a_clear_error():
    with pytest.raises(DeviceError, match="device"):
        resolve_device("no-such-device-anywhere-xyz")


def test_non_finite_input_does_not_poison_results():
    y = synth.tone(300.0, duration_s=2.0, sr=SR, amplitude=0.3)
    y[1000:1100] = np.nan
    y[5000] = np.inf
    rec = Recognizer(BandAnalyzer(), config=LiveConfig(window_s=1.0, hop_s=0.5))
    results = rec.push(y, SR)
    assert results and all(math.isfinite(p) for r in results for _, p in r.labels)
    assert all(r.decision == "low" for r in results)


# --------------------------------------------------------------------------- output


def test_json_lines_one_per_hop(catalog, tracks):
    rec = _mfcc_recognizer(catalog)
    results = list(listen(ArraySource(tracks["drum-loop"], SR, realtime=False), rec, duration_s=5.0))
    buf = io.StringIO()
    for r in results:
        write_json_line(r, out=buf)
    lines = buf.getvalue().splitlines()
    assert len(lines) == len(results) == 5  # windows ending at 3.0, 3.5, ... 5.0 s
    for line, r in zip(lines, results):
        d = json.loads(line)
        assert d["index"] == r.index and d["status"] == "ok"
        assert d["nearest"][0]["track_id"] == r.nearest[0].track_id
        assert set(d) >= {"t_s", "decision", "labels", "nearest", "level_db", "clipped", "latency_ms"}


@pytest.fixture
def keep_torch_threads():
    """`soundalike listen` limits torch's threads for the process: restore them for other tests."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_cli_listen_file_json(catalog, tmp_path, tracks, capsys, keep_torch_threads):
    from soundalike.cli import main

    cat, ids = catalog
    p = tmp_path / "q.wav"
    sf.write(p, tracks["noise-texture"], SR)
    rc = main(["listen", "--catalog", str(cat.path), "--file", str(p), "--fast", "--json",
               "--window", "3s", "--hop", "1000ms", "--duration", "6"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert [d["t_s"] for d in lines] == [3.0, 4.0, 5.0, 6.0]
    assert lines[-1]["nearest"][0]["track_id"] == ids["noise-texture"]


def test_cli_missing_catalog_is_an_error(tmp_path, capsys, keep_torch_threads):
    from soundalike.cli import main

    rc = main(["listen", "--catalog", str(tmp_path / "nope.sqlite"), "--stdin"])
    assert rc == 1
    assert "nope.sqlite" in capsys.readouterr().err


def test_display_renders_labels_tracks_and_silence(catalog, tracks):
    from rich.console import Console

    rec = Recognizer(BandAnalyzer(), config=LiveConfig(window_s=1.0, hop_s=0.5))
    r = rec.push(synth.tone(300.0, duration_s=1.0, sr=SR, amplitude=0.3), SR)[0]
    console = Console(record=True, width=100, force_terminal=False)
    console.print(render(r, model="band", source="test", label_category="register", has_labels=True))
    text = console.export_text()
    assert "low" in text and "high" in text and "register: low" in text

    mrec = _mfcc_recognizer(catalog)
    m = list(listen(ArraySource(tracks["drum-loop"], SR, realtime=False), mrec, duration_s=3.0))[-1]
    console = Console(record=True, width=100)
    console.print(render(m, model="mfcc-stats", source="test", has_labels=False, has_catalog=True))
    text = console.export_text()
    assert "sounds like" in text and "drum-loop" in text

    s = Recognizer(BandAnalyzer(), config=LiveConfig(window_s=1.0, hop_s=0.5)).push(
        synth.silence(duration_s=1.0, sr=SR), SR)[0]
    console = Console(record=True, width=100)
    console.print(render(s, model="band", source="test"))
    assert "silence" in console.export_text()


@pytest.mark.parametrize("v", [0.0, 0.13, 0.5, 0.999, 1.0, 2.0, -1.0, float("nan")])
def test_bar_has_fixed_width(v):
    b = bar(v, width=20)
    assert len(b) == 20
    filled = len(b.rstrip())
    expect = 0 if not math.isfinite(v) else min(max(v, 0), 1) * 20
    assert abs(filled - expect) <= 1
