"""Broken, tampered and hostile checkpoints: each is one CheckpointError line, never a
traceback, a crash, a huge allocation or torch's advice to load with weights_only=False."""

from __future__ import annotations

import json

import pytest
import torch

from soundalike.errors import CheckpointError
from soundalike.models.families import FamilyConfig, build
from soundalike.models.checkpoint import RunMeta, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real (untrained) two-label mfcc-mlp run saved as `soundalike train` saves it."""
    run = tmp_path_factory.mktemp("run")
    cfg = FamilyConfig(family="mfcc-mlp", n_labels=2, sample_rate=16000, window_s=1.0, hidden=16,
                       embedding_dim=8)
    meta = RunMeta(cfg, ["cello", "flute"], "single", "instrument", name="tiny")
    save_checkpoint(run / "model.pt", build(cfg), meta)
    return run / "model.pt"


def _payload(good):
    return torch.load(good, map_location="cpu", weights_only=True)


def _variant(tmp_path, good, *, change=None, **top):
    p = _payload(good)
    if change is not None:
        d = json.loads(p["meta"])
        change(d)
        p["meta"] = json.dumps(d)
    p.update(top)
    out = tmp_path / "model.pt"
    torch.save(p, out)
    return out


def _one_line_error(path) -> str:
    with pytest.raises(CheckpointError) as ei:
        load_checkpoint(path)
    msg = str(ei.value)
    assert "\n" not in msg and "weights_only" not in msg and "Traceback" not in msg, msg
    assert str(path) in msg
    return msg


def test_good_checkpoint_loads_and_gives_the_saved_models_outputs(tmp_path):
    """save -> load gives identical outputs (also after the loader sized the model on the
    meta device: no cached feature tensor may stay behind there)."""
    from soundalike.audio import features, synth

    for family in ("mfcc-mlp", "mel-cnn"):
        cfg = FamilyConfig(family=family, n_labels=2, sample_rate=16000, window_s=1.0, hidden=16,
                           embedding_dim=8, channels=(4, 8), n_mels=32, n_mfcc=13)
        torch.manual_seed(0)
        net = build(cfg).eval()
        save_checkpoint(tmp_path / family / "model.pt", net, RunMeta(cfg, ["cello", "flute"], "single", "instrument"))
        for f in vars(features).values():  # as in a fresh process: the loader fills them first
            if hasattr(f, "cache_clear"):
                f.cache_clear()
        model, meta = load_checkpoint(tmp_path / family)
        assert meta.labels == ["cello", "flute"] and not model.training
        x = torch.from_numpy(synth.harmonic_tone(220.0, duration_s=1.0, sr=16000, amplitude=0.4)[None])
        with torch.no_grad():
            want, got = net(x), model(x)
        assert torch.isfinite(got).all() and torch.equal(want, got), family
        assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])


def test_text_file_and_garbage(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("this is a text file, not a checkpoint\n" * 10)
    assert "not a torch checkpoint" in _one_line_error(text)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 4)
    assert "not a torch checkpoint" in _one_line_error(junk)


def test_pickled_code_is_refused_without_torch_advice(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    torch.save({"format": "soundalike-run", "x": Evil()}, p)
    assert "refused" in _one_line_error(p)


@pytest.mark.parametrize("version", ["abc", [1], 0, True, 1.5, None])
def test_bad_versions(tmp_path, good, version):
    assert "version" in _one_line_error(_variant(tmp_path, good, version=version))


def test_future_version_says_upgrade(tmp_path, good):
    assert "upgrade soundalike" in _one_line_error(_variant(tmp_path, good, version=99))


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(labels=["cello", "flute", "oboe"]), "3 labels but its model head has 2"),
    (lambda d: d.update(labels=["cello"]), "1 labels but its model head has 2"),
    (lambda d: d.update(labels=["cello", "cello"]), "repeat"),
    (lambda d: d.update(labels="cello,flute"), "labels"),
    (lambda d: d["config"].update(window_s=-1), "window_s=-1"),
    (lambda d: d["config"].update(sample_rate="fast"), "sample_rate"),
    (lambda d: d["config"].update(family="transformer"), "unknown model family"),
    (lambda d: d["config"].update(surprise=1), "config is invalid"),
    (lambda d: d.update(task="regression"), "task"),
    (lambda d: d.update(config=[1, 2]), "no model config"),
])
def test_bad_metadata(tmp_path, good, change, words):
    assert words in _one_line_error(_variant(tmp_path, good, change=change))


def test_metadata_not_json(tmp_path, good):
    assert "not valid JSON" in _one_line_error(_variant(tmp_path, good, meta="{oops"))


def test_config_asking_for_160_gb_is_refused_before_allocating(tmp_path, good):
    # hidden and embedding at the top of their ranges: ~10^10 parameters, 40+ GB of float32
    def huge(d):
        d["config"].update(hidden=131072, embedding_dim=131072, n_mfcc=1024, n_mels=1024)
    msg = _one_line_error(_variant(tmp_path, good, change=huge))
    assert "parameters" in msg and "refusing" in msg


def test_weights_that_do_not_fit(tmp_path, good):
    p = _payload(good)
    sd = dict(p["state_dict"])
    key = next(k for k, v in sd.items() if v.ndim == 2)
    sd[key] = torch.zeros(sd[key].shape[0] + 1, sd[key].shape[1])
    msg = _one_line_error(_variant(tmp_path, good, state_dict=sd))
    assert "do not fit" in msg and "wrong shape" in msg and key in msg
    sd = dict(p["state_dict"])
    sd.pop(key)
    assert "1 missing" in _one_line_error(_variant(tmp_path, good, state_dict=sd))
    assert "named tensors" in _one_line_error(_variant(tmp_path, good, state_dict={"a": 1}))


def test_cli_shows_one_line(tmp_path):
    from soundalike.cli import main

    text = tmp_path / "run"
    text.mkdir()
    (text / "model.pt").write_text("hello\n")
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["model", "summary", str(text)])
    assert code == 1
    assert err.getvalue().startswith("error: ") and err.getvalue().count("\n") == 1, err.getvalue()
