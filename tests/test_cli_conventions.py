"""CLI conventions a new user relies on: README forms work, top-level --catalog/--version,
help without type noise and with every option described, labels in `model list`,
`models.load` takes every --model name, piped tables keep whole file names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from test_search_fixtures import build_catalog

LONG = "a-rather-long-file-name-for-a-string-quartet-recording-take-{}-final-master.wav"


def run(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "SOUNDALIKE_CATALOG")}
    p = subprocess.run([sys.executable, "-m", "soundalike", *args], capture_output=True, text=True,
                       env={**e, **(env or {})}, timeout=300)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


@pytest.fixture(scope="module")
def cat(tmp_path_factory):
    return build_catalog(tmp_path_factory.mktemp("clicat"), per_style=1, duration_s=1.0)


def test_readme_tag_removal_form(cat):
    tid = str(cat.ids["drum-loop"][0])
    c = str(cat.path)
    assert "tagged mood:calm" in run("catalog", "tag", tid, "mood:calm", "use:advert", "--catalog", c).stdout
    out = run("catalog", "tag", tid, "-mood:calm", "--catalog", c).stdout
    assert "removed mood:calm" in out
    info = json.loads(run("info", tid, "--catalog", c, "--json").stdout)
    user = {(t["category"], t["tag"]) for t in info["tags"] if t["source"] == "user"}
    assert user == {("use", "advert")}


def test_top_level_catalog_and_version(cat):
    from soundalike import __version__

    assert run("--version").stdout.strip() == f"soundalike {__version__}"
    tid = str(cat.ids["drum-loop"][0])
    hits = json.loads(run("--catalog", str(cat.path), "similar", tid, "-k", "2", "--json").stdout)["hits"]
    assert len(hits) == 2
    stats = json.loads(run("-l", str(cat.path), "catalog", "stats", "--json").stdout)
    assert stats["tracks"] == len(cat.ids)
    # a command's own --catalog still wins over the top-level one
    other = run("--catalog", "/nonexistent/x.sqlite", "catalog", "stats", "--catalog", str(cat.path), "--json")
    assert json.loads(other.stdout)["tracks"] == len(cat.ids)


def _commands(cmd, path=()):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_is_plain_and_every_option_is_described(capsys):
    from soundalike.cli import command, main

    undescribed = []
    for path, cmd in _commands(command()):
        undescribed += [f"{' '.join(path)} {p.name}" for p in cmd.params if not (getattr(p, "help", "") or "").strip()]
        capsys.readouterr()
        assert main([*path, "--help"]) == 0
        text = capsys.readouterr().out
        for noise in ("<bool>", "<str>", "<int", "<float", "<path>", "<list[", "{"):
            assert noise not in text, (path, noise)
    assert not undescribed, undescribed


def test_model_list_shows_labels():
    out = run("model", "list").stdout
    assert "guitar, classical, slow" in out  # MTT labels
    assert "alternative rock" in out and "alternative\n" not in out  # a label never splits
    rows = json.loads(run("model", "list", "--json").stdout)
    mtt = next(r for r in rows if r["name"] == "MTT_musicnn")
    assert len(mtt["label_names"]) == mtt["labels"] == 50


def test_models_load_takes_every_model_name(tmp_path):
    import soundalike.models as models
    from soundalike.models.families import FamilyConfig, build
    from soundalike.models.checkpoint import RunMeta, save_checkpoint

    assert models.load("mfcc-stats").embedding_dim == 40
    cfg = FamilyConfig(family="mfcc-mlp", n_labels=2, sample_rate=16000, window_s=1.0, hidden=16, embedding_dim=8)
    save_checkpoint(tmp_path / "run" / "model.pt", build(cfg), RunMeta(cfg, ["a", "b"], "single", "instrument"))
    run_model = models.load(tmp_path / "run")
    assert run_model.labels == ["a", "b"]
    a = run_model.analyze(np.zeros(16000, np.float32), 16000)
    assert set(a.predictions) == {"a", "b"}


def test_piped_table_keeps_whole_file_names(tmp_path):
    from soundalike.audio import synth

    music = tmp_path / "music"
    music.mkdir()
    for i in range(3):
        sf.write(music / LONG.format(i), synth.demo_track("piano-arpeggio", seed=i, duration_s=1.0, sr=22050), 22050)
    c = str(tmp_path / "c.sqlite")
    run("ingest", str(music), "--catalog", c, "--model", "mfcc-stats", "--workers", "1")
    out = run("similar", "1", "--catalog", c).stdout  # stdout is a pipe here
    for i in (1, 2):
        assert LONG.format(i) in out, out


def test_listen_with_a_run_the_catalog_never_saw_falls_back_to_labels(cat, tmp_path):
    from soundalike.audio import synth
    from soundalike.models.families import FamilyConfig, build
    from soundalike.models.checkpoint import RunMeta, save_checkpoint

    cfg = FamilyConfig(family="mfcc-mlp", n_labels=2, sample_rate=16000, window_s=1.0, hidden=16, embedding_dim=8)
    save_checkpoint(tmp_path / "run" / "model.pt", build(cfg),
                    RunMeta(cfg, ["cello", "flute"], "single", "instrument", name="tiny"))
    clip = tmp_path / "clip.wav"
    sf.write(clip, synth.harmonic_tone(220.0, duration_s=3.0, sr=16000, amplitude=0.4), 16000)
    p = run("listen", "--model", str(tmp_path / "run"), "--catalog", str(cat.path), "--file", str(clip),
            "--fast", "--json", "--duration", "3s")
    warnings = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "labels only" in warnings[0]
    hops = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert hops and all(h["nearest"] == [] for h in hops)
    assert any(h["labels"] for h in hops)
