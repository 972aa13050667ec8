"""Ingest against files that lie about themselves or cannot be read: the catalog stores
what was decoded, and every failure is one recorded error that says plainly what is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio.io import load
from soundalike.catalog.store import Catalog

SR = 44100


def _note(seconds: float = 0.63) -> np.ndarray:
    t = np.arange(int(seconds * SR), dtype=np.float32) / SR
    return (0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-3 * t)).astype(np.float32)


def streamed_flac(path: Path) -> Path:
    """A FLAC whose STREAMINFO has no sample count (0: "unknown"), as streaming encoders write."""
    sf.write(path, _note(), SR, format="FLAC")
    b = bytearray(path.read_bytes())
    off = 8 + 10  # "fLaC" + block header, then 10 bytes of block sizes: sr/ch/bps/total follow
    b[off + 3] &= 0xF0
    b[off + 4 : off + 8] = b"\0\0\0\0"
    path.write_bytes(bytes(b))
    return path


def mp3_with_cover_no_xing(path: Path) -> Path:
    """An MP3 with 300 kB of cover art and no Xing header: its length is a guess from the size."""
    from mutagen.id3 import APIC, ID3

    sf.write(path, _note(), SR, format="MP3")
    tags = ID3()
    tags.add(APIC(encoding=3, mime="image/jpeg", type=3, desc="cover",
                  data=b"\xff\xd8" + np.random.default_rng(0).bytes(300_000)))
    tags.save(path)
    b = bytearray(path.read_bytes())
    i = b.find(b"Xing")
    assert i > 0
    b[i : i + 4] = b"\0\0\0\0"
    path.write_bytes(bytes(b))
    return path


def _ingest(paths, cat_path):
    from soundalike.ingest.pipeline import ingest

    return ingest(paths, catalog=cat_path, model="mfcc-stats", workers=1)


def test_stored_duration_is_what_was_decoded(tmp_path):
    from soundalike.audio.io import info

    music = tmp_path / "music"
    music.mkdir()
    files = [streamed_flac(music / "streamed.flac"), mp3_with_cover_no_xing(music / "cover.mp3")]
    assert info(files[0]).duration_s > 1e9 and info(files[1]).duration_s > 5  # the headers' guesses
    s = _ingest([music], tmp_path / "cat.sqlite")
    assert s.ingested == 2, s.errors
    with Catalog.open(tmp_path / "cat.sqlite") as cat:
        stored = {Path(t.path).name: t.duration_s for t in cat.iter_tracks()}
        total_h = cat.stats()["total_duration_s"] / 3600
    for f in files:
        assert stored[f.name] == pytest.approx(load(f).duration_s, abs=0.01), f.name
    assert total_h < 0.01


def test_text_named_flac_is_not_audio(tmp_path):
    p = tmp_path / "notes.flac"
    p.write_text("hello, this is a text file\n" * 50)
    from soundalike.errors import AudioDecodeError

    with pytest.raises(AudioDecodeError, match="not an audio file"):
        load(p)


def test_unreadable_file_says_permission_denied(tmp_path):
    """chmod 000 stops everyone but root; as root the ingest runs in a child without the
    capabilities that bypass file permissions (setpriv, util-linux)."""
    music = tmp_path / "music"
    music.mkdir()
    sf.write(music / "locked.wav", _note(), SR)
    sf.write(music / "open.wav", _note(), SR)
    os.chmod(music / "locked.wav", 0o000)
    code = ("import json, sys; from soundalike.ingest.pipeline import ingest; "
            "s = ingest([sys.argv[1]], catalog=sys.argv[2], model='mfcc-stats', workers=1); "
            "print(json.dumps(s.to_dict()))")
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    try:
        out = subprocess.run([*prefix, sys.executable, "-c", code, str(music), str(tmp_path / "cat.sqlite")],
                             capture_output=True, text=True, timeout=300)
    finally:
        os.chmod(music / "locked.wav", 0o644)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["ingested"] == 1 and summary["failed"] == 1
    (path, reason), = summary["errors"]
    assert path == str(music / "locked.wav")
    assert reason.startswith("permission denied") and "unexpected" not in reason


# --------------------------------------------------------------------------- symlinks and folders


def _errors(cat_path) -> dict[str, str]:
    with Catalog.open(cat_path) as cat:
        return {e.path: e.reason for e in cat.errors()}


def test_symlink_loop_is_one_recorded_error_not_an_abort(tmp_path):
    music = tmp_path / "l"
    music.mkdir()
    sf.write(music / "good.wav", _note(), SR)
    os.symlink("b.mp3", music / "a.mp3")
    os.symlink("a.mp3", music / "b.mp3")
    s = _ingest([music], tmp_path / "cat.sqlite")
    assert s.ingested == 1 and s.failed == 2
    errs = _errors(tmp_path / "cat.sqlite")
    assert set(errs) == {str(music / "a.mp3"), str(music / "b.mp3")}
    assert all(r.startswith("symlink loop") for r in errs.values())
    again = _ingest([music], tmp_path / "cat.sqlite")
    assert again.failed == 0 and again.known_failures == 2 and again.unchanged == 1


def test_cli_ingest_of_a_symlink_loop_exits_cleanly(tmp_path):
    music = tmp_path / "l"
    music.mkdir()
    os.symlink("b.mp3", music / "a.mp3")
    os.symlink("a.mp3", music / "b.mp3")
    p = subprocess.run([sys.executable, "-m", "soundalike", "ingest", str(music), "--catalog",
                        str(tmp_path / "c.sqlite"), "--model", "mfcc-stats", "--workers", "1"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "symlink loop" in p.stdout


def test_broken_symlink_is_recorded_under_its_own_name_once(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    os.symlink(tmp_path / "gone" / "x.flac", music / "dangling.flac")
    s = _ingest([music], tmp_path / "cat.sqlite")
    assert s.failed == 1
    (path, reason), = _errors(tmp_path / "cat.sqlite").items()
    assert path == str(music / "dangling.flac")
    assert reason == f"broken symlink: points to {tmp_path / 'gone' / 'x.flac'}, which does not exist"
    again = _ingest([music], tmp_path / "cat.sqlite")
    assert again.failed == 0 and again.known_failures == 1  # not retried every run


def test_symlinks_keep_their_names_and_never_lead_out(tmp_path):
    music, outside = tmp_path / "music", tmp_path / "elsewhere"
    (music / ".originals").mkdir(parents=True)
    outside.mkdir()
    sf.write(music / ".originals" / "take1.wav", _note(), SR)
    sf.write(music / "real.wav", _note(0.8), SR)
    sf.write(outside / "secret.wav", _note(0.9), SR)
    os.symlink(music / ".originals" / "take1.wav", music / "take1.wav")  # inside: followed, keeps its name
    os.symlink(music / "real.wav", music / "alias.wav")  # a second name for a scanned file: one track
    os.symlink(outside / "secret.wav", music / "secret.wav")  # out of the folder: not followed
    db = tmp_path / "cat.sqlite"
    s = _ingest([music], db)
    assert s.ingested == 2 and s.failed == 1, s.errors
    with Catalog.open(db) as cat:
        paths = sorted(t.path for t in cat.iter_tracks())
    assert paths == [str(music / "real.wav"), str(music / "take1.wav")]
    assert "outside the scanned folders" in _errors(db)[str(music / "secret.wav")]
    os.unlink(music / "take1.wav")  # deleting the link marks its track missing
    assert _ingest([music], db).missing == 1


def test_unreadable_subfolder_is_reported_not_skipped_silently(tmp_path):
    music = tmp_path / "music"
    (music / "locked").mkdir(parents=True)
    sf.write(music / "open.wav", _note(), SR)
    sf.write(music / "locked" / "inside.wav", _note(), SR)
    os.chmod(music / "locked", 0o000)
    code = ("import json, sys; from soundalike.ingest.pipeline import ingest; "
            "s = ingest([sys.argv[1]], catalog=sys.argv[2], model='mfcc-stats', workers=1); "
            "print(json.dumps(s.to_dict()))")
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    try:
        out = subprocess.run([*prefix, sys.executable, "-c", code, str(music), str(tmp_path / "cat.sqlite")],
                             capture_output=True, text=True, timeout=300)
    finally:
        os.chmod(music / "locked", 0o755)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["ingested"] == 1 and summary["failed"] == 1
    (path, reason), = summary["errors"]
    assert path == str(music / "locked") and reason.startswith("folder skipped: permission denied")


# --------------------------------------------------------------------------- model tags of a single-label run


def test_single_label_run_stores_only_its_top_label(tmp_path):
    import torch

    from soundalike.audio import synth
    from soundalike.models.families import FamilyConfig, build
    from soundalike.models.checkpoint import RunMeta, save_checkpoint

    labels = ["cello", "flute", "oboe"]
    cfg = FamilyConfig(family="mfcc-mlp", n_labels=3, sample_rate=16000, window_s=1.0, hidden=16, embedding_dim=8)
    torch.manual_seed(3)
    net = build(cfg)
    with torch.no_grad():  # a shy head: probabilities spread over the labels, as on an unsure note
        for w in net.head.parameters():
            w.mul_(0.01)
    save_checkpoint(tmp_path / "run" / "model.pt", net, RunMeta(cfg, labels, "single", "instrument"))
    music = tmp_path / "notes"
    music.mkdir()
    for i, f0 in enumerate((110.0, 220.0, 440.0, 880.0)):
        sf.write(music / f"note{i}.wav", synth.harmonic_tone(f0, duration_s=1.5, sr=16000, amplitude=0.4), 16000)
    from soundalike.ingest.pipeline import ingest

    db = tmp_path / "cat.sqlite"
    s = ingest([music], catalog=db, model=str(tmp_path / "run"), workers=1)
    assert s.ingested == 4, s.errors
    with Catalog.open(db) as cat:
        spread = 0
        for t in cat.iter_tracks():
            tags = [g for g in cat.track_tags(t.id) if g.source == "model"]
            preds = cat.track_analyses(t.id)[0].predictions
            spread += sum(1 for p in preds.values() if MIN_P <= p < 0.5)
            assert [(g.category, g.tag) for g in tags] == [("instrument", max(preds, key=preds.get))]
    assert spread > 0  # the run did give other labels some probability: they were left out
    # a multi-label tagger keeps its top N
    from soundalike.ingest.pipeline import model_tags

    assert [x for x, _ in model_tags({"a": 0.9, "b": 0.4, "c": 0.01}, top_tags=5, single_label=False)] == ["a", "b"]
    assert [x for x, _ in model_tags({"a": 0.45, "b": 0.35, "c": 0.2}, top_tags=5, single_label=True)] == ["a"]


MIN_P = 0.05
