"""Ingest end to end on real files and real catalogs (SQLite; PostgreSQL where parametrised)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio import synth
from soundalike.ingest import ingest, scan
from soundalike.catalog.store import Catalog

SR = 22050


def _write_tracks(folder: Path, n: int, *, duration_s: float = 2.0, stereo: bool = False) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    styles = ["drum-loop", "piano-arpeggio", "ambient-drone", "noise-texture", "bass-groove"]
    out = []
    for i in range(n):
        y = synth.demo_track(styles[i % len(styles)], seed=i, duration_s=duration_s, sr=SR)
        if stereo:
            y = np.stack([y, 0.5 * y], axis=1)
        p = folder / f"track{i:03d}.flac"
        sf.write(p, y, SR)
        out.append(p)
    return out


def _corrupt_zoo(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    zoo = {}
    (p := folder / "empty.wav").write_bytes(b"")
    zoo["empty"] = p
    (p := folder / "text.mp3").write_text("definitely not an mp3 file\n" * 20)
    zoo["not audio"] = p
    good = folder / "_full.wav"
    sf.write(good, synth.tone(440, duration_s=2.0, sr=SR), SR)
    (p := folder / "truncated.wav").write_bytes(good.read_bytes()[:60])
    zoo["truncated"] = p
    good.unlink()
    sf.write(p := folder / "short.wav", synth.tone(440, duration_s=0.03, sr=SR), SR)
    zoo["too short"] = p
    y = synth.tone(440, duration_s=1.0, sr=SR)
    y[100] = np.nan
    sf.write(p := folder / "nan.wav", y, SR, subtype="FLOAT")
    zoo["nan"] = p
    return zoo


def test_scan_finds_audio_recursively_and_skips_others(tmp_path):
    _write_tracks(tmp_path / "a" / "b", 2)
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / ".hidden").mkdir()
    sf.write(tmp_path / ".hidden" / "x.wav", np.zeros(SR, np.float32), SR)
    found = scan([tmp_path])
    assert [p.name for p in found] == ["track000.flac", "track001.flac"]
    assert all(p.is_absolute() for p in found)


def test_corrupt_files_are_recorded_and_the_rest_ingested(tmp_path, catalog_target):
    good = _write_tracks(tmp_path / "music", 3)
    zoo = _corrupt_zoo(tmp_path / "music" / "bad")
    db = catalog_target
    s = ingest([tmp_path / "music"], catalog=db, model="mfcc-stats", workers=1)
    assert s.ingested == len(good)
    assert s.failed == len(zoo)
    with Catalog.open(db) as cat:
        errs = {Path(e.path).name: e.reason for e in cat.errors()}
        assert set(errs) == {p.name for p in zoo.values()}
        assert "zero bytes" in errs["empty.wav"]
        assert "short" in errs["short.wav"]
        assert "NaN" in errs["nan.wav"]
        assert cat.count_tracks() == len(good)
    # A second run finishes at once: nothing new, known failures are not retried.
    s2 = ingest([tmp_path / "music"], catalog=db, model="mfcc-stats", workers=1)
    assert (s2.ingested, s2.unchanged, s2.failed, s2.known_failures) == (0, 3, 0, len(zoo))


def test_changed_and_vanished_files(tmp_path, catalog_target):
    tracks = _write_tracks(tmp_path / "m", 3)
    db = catalog_target
    ingest([tmp_path / "m"], catalog=db, model="mfcc-stats", workers=1)
    with Catalog.open(db) as cat:
        old = {t.path: (t.id, t.content_hash) for t in cat.iter_tracks()}
    # Change one file's content, touch another without changing it, delete the third.
    sf.write(tracks[0], synth.noise(duration_s=2.0, sr=SR, seed=9), SR)
    os.utime(tracks[1], (time.time() + 5, time.time() + 5))
    tracks[2].unlink()
    s = ingest([tmp_path / "m"], catalog=db, model="mfcc-stats", workers=1)
    assert (s.ingested, s.unchanged, s.missing) == (1, 1, 1)
    with Catalog.open(db) as cat:
        t0 = cat.track_by_path(str(tracks[0]))
        assert t0.id == old[str(tracks[0])][0] and t0.content_hash != old[str(tracks[0])][1]
        assert cat.track_by_path(str(tracks[2])).status == "missing"
        assert cat.count_tracks() == 3  # nothing deleted


def test_parallel_ingest_matches_serial(tmp_path):
    _write_tracks(tmp_path / "m", 6, stereo=True)
    a, b = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    ingest([tmp_path / "m"], catalog=a, model="mfcc-stats", workers=1)
    s = ingest([tmp_path / "m"], catalog=b, model="mfcc-stats", workers=2)
    assert s.ingested == 6
    with Catalog.open(a) as ca, Catalog.open(b) as cb:
        mid = ca.default_model_id()
        ia, xa = ca.embeddings(mid)
        pa = [ca.get_track(int(i)).path for i in ia]
        ib, xb = cb.embeddings(mid)
        pb = [cb.get_track(int(i)).path for i in ib]
        order = [pb.index(p) for p in pa]
        np.testing.assert_allclose(xa, xb[order], rtol=1e-5, atol=1e-5)
        assert ca.get_track(int(ia[0])).channels == 2


def test_sigkill_mid_run_then_resume_loses_and_duplicates_nothing(tmp_path):
    n = 48
    _write_tracks(tmp_path / "m", n, duration_s=6.0, stereo=True)
    db = tmp_path / "c.sqlite"
    cmd = [sys.executable, "-m", "soundalike", "ingest", str(tmp_path / "m"), "--catalog", str(db),
           "--model", "mfcc-stats", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    committed = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    committed = conn.execute("SELECT COUNT(*) FROM analyses").fetchone()[0]
            except sqlite3.OperationalError:
                committed = 0
        if committed >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished before it could be killed; make the test data bigger"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with Catalog.open(db) as cat:
        before = cat.count_tracks()
        assert 0 < before < n
        assert cat.integrity_check() == "ok"
    s = ingest([tmp_path / "m"], catalog=db, model="mfcc-stats", workers=2)
    assert s.failed == 0
    assert s.ingested + s.unchanged == n
    assert s.unchanged >= before
    with Catalog.open(db) as cat:
        assert cat.count_tracks() == n
        assert cat.count_analyses() == n
    with sqlite3.connect(db) as conn:  # an outside observer: the schema forbids duplicates
        dup = conn.execute("SELECT COUNT(*) - COUNT(DISTINCT path) FROM tracks").fetchone()[0]
        assert dup == 0
    with Catalog.open(db) as cat:
        ids, X = cat.embeddings(cat.default_model_id())
        assert len(ids) == n and np.isfinite(X).all()


@pytest.mark.parametrize("workers", [1, 2])
def test_ingest_on_empty_folder(tmp_path, workers):
    (tmp_path / "empty").mkdir()
    s = ingest([tmp_path / "empty"], catalog=tmp_path / "c.sqlite", model="mfcc-stats", workers=workers)
    assert (s.scanned, s.ingested, s.failed) == (0, 0, 0)


def test_long_files_are_analyzed_in_blocks(tmp_path, monkeypatch):
    """Above LONG_FILE_S a file is streamed in blocks; its embedding stays close to a whole-file one."""
    from soundalike.ingest import pipeline as ingest_mod
    from soundalike.models.zoo import load_analyzer

    y = np.concatenate([synth.demo_track("bass-groove", seed=s, duration_s=10.0, sr=SR) for s in range(3)])
    path = tmp_path / "m" / "long.flac"
    path.parent.mkdir()
    sf.write(path, y, SR)
    whole = load_analyzer("mfcc-stats").analyze(y, SR).embedding
    monkeypatch.setattr(ingest_mod, "LONG_FILE_S", 12.0)
    monkeypatch.setattr(ingest_mod, "BLOCK_S", 7.0)
    emb, preds, decoded_s = ingest_mod.analyze_in_blocks(str(path), load_analyzer("mfcc-stats"))
    assert abs(decoded_s - 30.0) < 0.05 and preds == {}
    cos = float(emb @ whole / np.linalg.norm(emb) / np.linalg.norm(whole))
    assert cos > 0.99
    s = ingest([tmp_path / "m"], catalog=tmp_path / "c.sqlite", model="mfcc-stats", workers=1)
    assert s.ingested == 1
    with Catalog.open(tmp_path / "c.sqlite") as cat:
        t = cat.track_by_path(str(path.resolve()))
        np.testing.assert_allclose(cat.get_analysis(t.id, cat.default_model_id()).embedding, emb, rtol=1e-6)
        assert abs(t.duration_s - 30.0) < 0.05


def test_ingest_keeps_peaks_only_from_a_whole_decode_and_peaks_asks_for_them(tmp_path):
    """Default ingest decodes a long track only where its spread analysis looks: no peaks
    (the web page makes them on first view); a short track's analysis reads every sample,
    so its peaks come free; ``--peaks`` decodes every file whole and stores them all."""
    from typer.testing import CliRunner

    from soundalike.cli import app

    _write_tracks(tmp_path / "m", 2, duration_s=3.0)
    y = synth.demo_track("bass-groove", seed=9, duration_s=60.0, sr=SR)
    long = tmp_path / "m" / "long.flac"
    sf.write(long, y, SR)
    db = tmp_path / "c.sqlite"
    s = ingest([tmp_path / "m"], catalog=db, model="mfcc-stats", workers=1)
    assert s.ingested == 3 and s.analysis == "spread:10"
    with Catalog.open(db) as cat:
        t = cat.track_by_path(str(long))
        assert cat.ids_without_peaks() == [t.id] and abs(t.duration_s - 60.0) < 0.01
        assert cat.get_analysis(t.id, s.model_id).analysis == "spread:10"
    db2 = tmp_path / "c2.sqlite"
    r = CliRunner().invoke(app, ["ingest", str(tmp_path / "m"), "--catalog", str(db2), "--model", "mfcc-stats",
                                 "--workers", "1", "--peaks", "--no-adapt", "--json"])
    assert r.exit_code == 0, r.output
    with Catalog.open(db2) as cat:
        assert cat.ids_without_peaks() == [] and cat.count_tracks() == 3
        t = cat.track_by_path(str(long))
        assert cat.get_peaks(t.id).n_columns == 1000 and abs(cat.get_peaks(t.id).duration_s - 60.0) < 0.01
        assert cat.get_analysis(t.id, s.model_id).analysis == "spread:10"


def test_ingest_stores_waveform_peaks_and_refreshes_them(tmp_path, monkeypatch):
    """With ``peaks=True`` every ingested file gets its 2-kB peaks (from the analysis' own
    decode, or a pass of its own for block-wise files); a changed file's old peaks are
    stale until re-ingested."""
    from soundalike.audio.peaks import peaks_of_file
    from soundalike.ingest import pipeline as ingest_mod
    from soundalike.ingest.peaks import backfill_peaks

    tracks = _write_tracks(tmp_path / "m", 3, duration_s=3.0)
    db = tmp_path / "c.sqlite"
    monkeypatch.setattr(ingest_mod, "LONG_FILE_S", 2.5)  # track 2 is analyzed in blocks
    monkeypatch.setattr(ingest_mod, "BLOCK_S", 1.0)
    ingest([tmp_path / "m"], catalog=db, model="mfcc-stats", workers=1, peaks=True)
    with Catalog.open(db) as cat:
        assert cat.ids_without_peaks() == []
        for p in tracks:
            t = cat.track_by_path(str(p))
            pk = cat.get_peaks(t.id)
            assert pk.n_columns == 1000 and abs(pk.duration_s - 3.0) < 0.01
            ref = peaks_of_file(p)  # at the file's own rate: a resampled decode differs a little
            assert np.abs(pk.max.astype(int) - ref.max.astype(int)).max() <= 12
    # the content of one file changes behind ingest's back: its peaks are stale, then back-filled
    sf.write(tracks[0], 0.1 * synth.noise(duration_s=3.0, sr=SR, seed=3), SR)
    with Catalog.open(db) as cat:
        t = cat.track_by_path(str(tracks[0]))
        cat.upsert_track(path=t.path, content_hash="changed", size=t.size, mtime=t.mtime)
        assert cat.ids_without_peaks() == [t.id] and cat.get_peaks(t.id) is None
        r = backfill_peaks(cat)
        assert r.computed == 1 and not r.failed
        assert cat.get_peaks(t.id).max.max() <= round(0.1 * 127 * 1.2)  # quiet noise now
    # a file that vanished is reported, not fatal
    with Catalog.open(db) as cat:
        t = cat.track_by_path(str(tracks[1]))
        cat.upsert_track(path=t.path, content_hash="again", size=t.size, mtime=t.mtime)
        tracks[1].unlink()
        r = backfill_peaks(cat)
        assert r.computed == 0 and len(r.failed) == 1 and r.failed[0][0] == str(tracks[1])
