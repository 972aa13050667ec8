"""The core CLI as a user runs it: real subprocesses, a real catalog file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from soundalike.audio import synth


def run(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    e = {**os.environ, "COLUMNS": "200", **(env or {})}
    p = subprocess.run([sys.executable, "-m", "soundalike", *args], capture_output=True, text=True,
                       env=e, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_help_does_not_import_torch():
    code = ("import sys; from soundalike.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'faiss', 'matplotlib', 'fastapi', 'librosa') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in p.stdout, p.stdout + p.stderr
    assert "ingest" in p.stdout


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    p = run("ingest", str(tmp_path / "nope"), "--catalog", str(tmp_path / "c.sqlite"), check=False)
    assert p.returncode == 1
    assert p.stderr.strip().startswith("error:") and len(p.stderr.strip().splitlines()) == 1
    assert "Traceback" not in p.stderr
    p = run("catalog", "stats", "--catalog", str(tmp_path / "missing.sqlite"), check=False)
    assert p.returncode == 1 and "no catalog here" in p.stderr
    p = run("ingest", str(tmp_path), "--model", "no-such-model", "--catalog", str(tmp_path / "c.sqlite"),
            check=False)
    assert p.returncode == 1 and "unknown model" in p.stderr


def test_demo_then_stats_info_and_env_catalog(tmp_path):
    env = {"SOUNDALIKE_CATALOG": str(tmp_path / "demo.sqlite"), "SOUNDALIKE_DATA_DIR": str(tmp_path / "data")}
    p = run("demo", "--per-style", "2", "--model", "mfcc-stats", env=env)
    assert "10 ingested" in p.stdout and "Try next" in p.stdout
    assert (tmp_path / "demo.sqlite").exists()
    stats = json.loads(run("catalog", "stats", "--json", env=env).stdout)
    assert stats["tracks"] == 10 and stats["errors"] == 0
    assert stats["models"][0]["name"] == "mfcc-stats"
    info = json.loads(run("info", "1", "--json", env=env).stdout)
    assert info["track"]["artist"] and info["analyses"][0]["dim"] == 40
    # Running demo again is idempotent.
    p = run("demo", "--per-style", "2", "--model", "mfcc-stats", env=env)
    assert "0 ingested, 10 unchanged" in p.stdout


def test_ingest_summary_and_user_tags(tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    for i in range(3):
        sf.write(music / f"t{i}.wav", synth.demo_track("drum-loop", seed=i, duration_s=2, sr=22050), 22050)
    (music / "broken.mp3").write_bytes(b"\x00" * 500)
    db = str(tmp_path / "c.sqlite")
    p = run("ingest", str(music), "--catalog", db, "--model", "mfcc-stats", "--workers", "1")
    assert "ingested   3" in p.stdout and "failed     1" in p.stdout and "broken.mp3" in p.stdout
    p = run("ingest", str(music), "--catalog", db, "--model", "mfcc-stats", "--json")
    s = json.loads(p.stdout)
    assert (s["ingested"], s["unchanged"], s["known_failures"]) == (0, 3, 1)
    run("catalog", "tag", "1", "mood:calm", "--catalog", db)
    info = json.loads(run("info", "1", "--json", "--catalog", db).stdout)
    assert {"tag": "calm", "category": "mood", "source": "user"}.items() <= info["tags"][0].items()
    errs = json.loads(run("catalog", "errors", "--json", "--catalog", db).stdout)
    assert [Path(e["path"]).name for e in errs] == ["broken.mp3"]


def test_info_on_outside_file(tmp_path):
    f = tmp_path / "x.flac"
    sf.write(f, np.stack([synth.tone(440, duration_s=1.5, sr=44100)] * 2, axis=1), 44100)
    info = json.loads(run("info", str(f), "--json", "--catalog", str(tmp_path / "none.sqlite")).stdout)
    assert info["in_catalog"] is False and info["sr"] == 44100 and info["channels"] == 2
    assert abs(info["duration_s"] - 1.5) < 1e-3


def test_stats_of_a_catalog_without_any_tempo(tmp_path):
    """Single notes have no tempo: `catalog stats` says so instead of failing on the empty range."""
    from soundalike.catalog.store import Catalog

    d = tmp_path / "notes"
    d.mkdir()
    sf.write(d / "a.wav", synth.tone(440.0, duration_s=2.0, sr=22050, amplitude=0.3), 22050)
    cpath = tmp_path / "c.sqlite"
    run("ingest", str(d), "--model", "mfcc-stats", "--catalog", str(cpath))
    with Catalog.open(cpath) as cat:
        tid = cat.find_tracks(str(d / "a.wav"))[0].id
        cat.put_attributes(tid, {"duration_s": 2.0, "loudness_lufs": -18.5})  # no bpm, no key
    p = run("catalog", "stats", "--catalog", str(cpath))
    assert "no tempo" in p.stdout and "-18.5 to -18.5 LUFS" in p.stdout, p.stdout
