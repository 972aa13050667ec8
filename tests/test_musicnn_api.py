"""The pretrained-model API: padding, per-patch outputs, batching, loud input, caching, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from soundalike.audio import synth
from soundalike.errors import ModelError
from soundalike.models import load
from soundalike.models.base import Analyzer
from soundalike.models.pretrained import PATCH_FRAMES, SPECS, load_pretrained_analyzer, patches_from_logmel

SR = 16000


@pytest.fixture(scope="module")
def mtt():
    return load("MTT_musicnn")


@pytest.fixture(scope="module")
def tone_then_drums() -> np.ndarray:
    return np.concatenate([synth.tone(440.0, duration_s=3.0, sr=SR, amplitude=0.5),
                           synth.drum_pattern(duration_s=3.0, sr=SR, seed=1)])


def test_model_loads_once_and_describes_itself(mtt):
    assert load("MTT_musicnn") is mtt
    assert mtt.sample_rate == 16000 and len(mtt.labels) == 50 and "guitar" in mtt.labels
    assert mtt.model_id.startswith("MTT_musicnn-") and mtt.model_id != load("MSD_musicnn").model_id
    assert load_pretrained_analyzer("MTT_musicnn").model is mtt
    from soundalike.models.zoo import load_analyzer

    assert load_analyzer("MTT_musicnn") is load_analyzer("MTT_musicnn")


def test_unknown_names_and_layers(mtt):
    with pytest.raises(ModelError, match="unknown pretrained model"):
        load("MTT_resnet")
    with pytest.raises(ModelError, match="max_pool"):
        load("MTT_vgg").embed(np.zeros(SR, np.float32), SR, layer="max_pool")


def test_bad_samples_raise(mtt):
    with pytest.raises(ModelError, match="empty"):
        mtt.predict(np.zeros(0, np.float32), SR)
    y = np.zeros(SR, np.float32)
    y[5] = np.nan
    with pytest.raises(ModelError, match="NaN"):
        mtt.predict(y, SR)


def test_short_audio_is_repeat_padded(mtt):
    y = synth.drum_pattern(duration_s=1.0, sr=SR, seed=2)
    mel = mtt.logmel(y, SR)
    assert mel.shape[-1] < PATCH_FRAMES
    p = mtt.patches(y, SR)
    assert p.shape == (1, 96, PATCH_FRAMES)
    T = mel.shape[-1]
    np.testing.assert_array_equal(p[0, :, :T], mel)
    np.testing.assert_array_equal(p[0, :, T : 2 * T], mel)  # repeated, not zero-padded
    pred = mtt.predict(y, SR)
    assert pred.patch_probs.shape == (1, 50) and np.isfinite(pred.probs).all()


def test_patch_cutting_drops_the_short_tail():
    mel = np.arange(2 * 96 * 400, dtype=np.float32).reshape(2, 96, 400)
    p = patches_from_logmel(mel)
    assert p.shape == (2, 2, 96, PATCH_FRAMES)
    np.testing.assert_array_equal(p[1, 1], mel[1, :, PATCH_FRAMES : 2 * PATCH_FRAMES])
    assert patches_from_logmel(mel, hop_frames=100).shape[1] == 3


@pytest.mark.parametrize("name", ["MTT_musicnn", "MSD_vgg"])
def test_each_patch_gets_its_own_embedding(name, tone_then_drums):
    m = load(name)
    e = m.embed(tone_then_drums, SR)
    assert e.patch_embeddings.shape == (2, m.embedding_dims["penultimate"])
    assert not np.allclose(e.patch_embeddings[0], e.patch_embeddings[1], atol=1e-2)
    # patch 0 is the tone alone: its embedding is the tone's own
    alone = m.embed(tone_then_drums[: 3 * SR], SR).patch_embeddings[0]
    np.testing.assert_allclose(e.patch_embeddings[0], alone, atol=1e-4)
    np.testing.assert_allclose(e.embedding, e.patch_embeddings.mean(axis=0), atol=1e-6)
    np.testing.assert_array_equal(e.patch_starts_s, [0.0, PATCH_FRAMES * 256 / SR])


def test_batched_equals_unbatched(mtt, tone_then_drums):
    other = synth.demo_track("piano-arpeggio", seed=0, duration_s=6.0, sr=SR)
    batch = np.stack([tone_then_drums, other])
    pb = mtt.predict(batch, SR, batch_size=3)
    assert pb.patch_probs.shape == (2, 2, 50) and pb.probs.shape == (2, 50)
    for i, y in enumerate(batch):
        pi = mtt.predict(y, SR, batch_size=1)
        np.testing.assert_allclose(pb.patch_probs[i], pi.patch_probs, atol=1e-5)
        np.testing.assert_allclose(pb.probs[i], pi.probs, atol=1e-5)
    eb = mtt.embed(batch, SR, layer="max_pool")
    assert eb.embedding.shape == (2, 753)
    np.testing.assert_allclose(eb.embedding[1], mtt.embed(other, SR, layer="max_pool").embedding,
                               rtol=1e-5, atol=1e-4)


def test_loud_input_gives_finite_outputs(mtt):
    square = np.sign(synth.tone(110.0, duration_s=3.0, sr=SR, amplitude=1.0)).astype(np.float32)
    noise = synth.noise(duration_s=3.0, sr=SR, amplitude=30.0, seed=3)  # clipped at +-1
    results = []
    for y in (square, noise, 8.0 * square):  # the last one beyond full scale
        assert mtt.logmel(y, SR).max() > np.log10(1 + 10000 * 6.55)  # where float16 would overflow
        a = mtt.analyze(y, SR)
        probs = np.array(list(a.predictions.values()))
        assert np.isfinite(a.embedding).all() and ((probs >= 0) & (probs <= 1)).all()
        results.append(probs)
    # loud inputs are not all collapsed onto one audio-independent output
    assert not np.allclose(results[0], results[1], atol=1e-3)


def test_resampled_input_agrees(mtt):
    y16 = synth.demo_track("bass-groove", seed=0, duration_s=4.0, sr=SR)
    y22 = synth.demo_track("bass-groove", seed=0, duration_s=4.0, sr=22050)
    a, b = mtt.predict(y16, SR).probs, mtt.predict(y22, 22050).probs
    assert np.abs(a - b).max() < 0.05


def test_analyzer_protocol(tone_then_drums):
    a = load_pretrained_analyzer("MSD_musicnn")
    assert isinstance(a, Analyzer)
    assert a.label_category == "tag" and a.multi_label and a.embedding_dim == 200
    r = a.analyze(tone_then_drums, SR)
    assert r.embedding.dtype == np.float32 and r.embedding.shape == (200,)
    assert set(r.predictions) == set(SPECS["MSD_musicnn"].labels)
    np.testing.assert_allclose(r.embedding, r.patch_embeddings.mean(axis=0), atol=1e-6)
    assert r.top(1)[0][1] == max(r.predictions.values())


def test_taggram_png(tmp_path, mtt, tone_then_drums):
    from soundalike.models.taggram import plot_taggram

    out = plot_taggram(mtt.predict(tone_then_drums, SR), tmp_path / "t.png", top=10)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 2000


def test_cli_tag_and_model_list(tmp_path, capsys):
    from soundalike.cli import main

    good = tmp_path / "drums.wav"
    sf.write(good, synth.drum_pattern(duration_s=4.0, sr=22050, seed=0), 22050)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    code = main(["tag", str(bad), str(good), "--json", "--top", "3", "--plot", str(tmp_path / "tg.png")])
    out = capsys.readouterr()
    assert code == 1
    doc = json.loads(out.out)
    assert [r["path"] for r in doc["results"]] == [str(good)]
    assert len(doc["results"][0]["tags"]) == 3
    assert (tmp_path / "tg-drums.png").is_file()
    assert doc["errors"][0]["path"] == str(bad) and "broken.wav" in out.err

    assert main(["tag", str(good), "--model", "MSD_vgg"]) == 0
    text = capsys.readouterr().out
    assert "drums.wav" in text and any(t in text for t in SPECS["MSD_vgg"].labels)

    # another arithmetic by name, as --model names it everywhere else
    assert main(["tag", str(good), "--model", "MTT_musicnn@mixed-ef", "--json", "--top", "50"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"] == "MTT_musicnn@mixed-ef" and doc["model_id"].startswith("MTT_musicnn@mixed-ef-")
    ef = {t["tag"]: t["probability"] for t in doc["results"][0]["tags"]}
    y, sr = sf.read(good, dtype="float32")
    want = dict(zip(SPECS["MTT_musicnn"].labels, load("MTT_musicnn").predict(y, sr).probs.tolist()))
    assert set(ef) == set(want) and max(abs(ef[k] - want[k]) for k in ef) < 1e-2
    assert main(["tag", str(good), "--model", "MTT_musicnn@fp16"]) == 1
    assert "unknown precision" in capsys.readouterr().err

    assert main(["model", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["MTT_vgg"]["embedding_dims"] == {"penultimate": 256} and rows["MSD_musicnn"]["labels"] == 50


@pytest.mark.parametrize("name", ["MTT_musicnn", "MTT_vgg"])
def test_run_patches_is_independent_of_batching(name):
    """Batches are split into micro-batches over worker threads: rows must stay in order
    and each patch's outputs must not depend on its neighbours or the batch size."""
    from soundalike.models.pretrained import MICRO_BATCH

    m = load(name)
    signals = [synth.tone(f, duration_s=3.0, sr=SR, amplitude=0.5) for f in (220.0, 880.0, 3000.0)]
    signals += [synth.drum_pattern(duration_s=3.0, sr=SR, seed=s) for s in (1, 2)]
    signals += [synth.demo_track("piano-arpeggio", seed=s, duration_s=3.0, sr=SR) for s in (0, 1)]
    P = np.concatenate([m.patches(y, SR) for y in signals])  # 7 distinct patches
    alone = [m.run_patches(P[i : i + 1], batch_size=1) for i in range(len(P))]
    ref = {k: np.concatenate([a[k] for a in alone]) for k in alone[0]}
    assert np.ptp(ref["probs"], axis=0).max() > 0.05  # the patches really differ
    for bs in (2, MICRO_BATCH + 1, 7, 64):
        out = m.run_patches(P, batch_size=bs)
        assert out.keys() == ref.keys()
        for k in ref:
            assert out[k].shape == ref[k].shape and out[k].dtype == np.float32
            np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=1e-5 * np.abs(ref[k]).max())

