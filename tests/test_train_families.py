"""Each model family learns tiny synthetic datasets; runs round-trip and report honestly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from soundalike.data.datasets import read_dataset
from soundalike.data.toy import write_toy_folders, write_toy_table
from soundalike.train.fit import TrainConfig, train

#: Small and fast: 8 kHz, 1-s windows, narrow networks.
FAST = {
    "mfcc-mlp": dict(model={"hidden": 64, "embedding_dim": 32, "n_fft": 256, "hop_length": 128,
                            "n_mels": 32, "n_mfcc": 13}),
    "waveform-cnn": dict(model={"channels": (8, 8, 16, 16), "embedding_dim": 32}),
    "mel-cnn": dict(model={"channels": (4, 8, 16), "embedding_dim": 32, "n_fft": 256,
                           "hop_length": 128, "n_mels": 32}),
    "probe": dict(backbone="mfcc-stats", model={"hidden": 32, "embedding_dim": 32}),
}


def _config(family: str, tmp_path, **kw) -> TrainConfig:
    base = dict(family=family, epochs=12, batch_size=8, lr=3e-3, patience=0, seed=0,
                sample_rate=8000, window_s=0.5, cache_dir=str(tmp_path / "cache"),
                augment=("gain",), crops_per_track=2)
    base.update(FAST[family])
    base.update(kw)
    return TrainConfig(**base)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def toy_folders(tmp_path_factory):
    return write_toy_folders(tmp_path_factory.mktemp("toy") / "data", n_per_class=20, sr=8000)


@pytest.fixture(scope="module")
def toy_table(tmp_path_factory):
    return write_toy_table(tmp_path_factory.mktemp("toymix"), n_tracks=60, sr=8000)


@pytest.fixture(scope="module")
def mel_run(toy_folders, tmp_path_factory):
    """One trained mel-cnn run shared by the round-trip, report and CLI tests."""
    tmp = tmp_path_factory.mktemp("melrun")
    m = read_dataset(toy_folders, category="instrument")
    report = train(m, config=_config("mel-cnn", tmp), out=tmp / "run")
    return tmp / "run", report


@pytest.mark.parametrize("family", ["mfcc-mlp", "waveform-cnn", "probe"])
def test_family_learns_toy_single_label(family, toy_folders, tmp_path):
    m = read_dataset(toy_folders, category="instrument")
    report = train(m, config=_config(family, tmp_path), out=tmp_path / "run")
    assert report["test"]["n_tracks"] == 12
    assert report["test"]["accuracy"] >= 0.9, report["test"]


def test_mel_cnn_learns_toy_single_label(mel_run):
    _, report = mel_run
    assert report["test"]["accuracy"] >= 0.9, report["test"]
    assert report["label_category"] == "instrument"


@pytest.mark.parametrize("family", ["mel-cnn", "mfcc-mlp"])
def test_family_learns_toy_multi_label(family, toy_table, tmp_path):
    m = read_dataset(toy_table)
    assert m.task == "multi" and m.labels == ["clicks", "noise", "tone"]
    report = train(m, config=_config(family, tmp_path, epochs=20), out=tmp_path / "run")
    assert report["task"] == "multi"
    assert report["test"]["macro_roc_auc"] >= 0.9, report["test"]


def test_checkpoint_round_trip_gives_identical_outputs(mel_run, toy_folders):
    import torch

    from soundalike.audio.io import load
    from soundalike.models.families import build
    from soundalike.models.checkpoint import load_checkpoint, save_checkpoint
    from soundalike.models.zoo import load_run_analyzer

    run, _ = mel_run
    model, meta = load_checkpoint(run)
    save_checkpoint(run.parent / "copy" / "model.pt", model, meta)
    model2, meta2 = load_checkpoint(run.parent / "copy")
    assert meta2 == meta
    for k, v in model.state_dict().items():
        assert torch.equal(v, model2.state_dict()[k]), k
    # weights-only loading: the file holds no pickled code
    payload = torch.load(run / "model.pt", weights_only=True)
    assert json.loads(payload["meta"])["labels"] == ["clicks", "noise", "tone"]
    y = load(next((toy_folders / "tone").glob("*.wav")), sr=8000).y
    a1 = load_run_analyzer(run).analyze(y, 8000)
    a2 = load_run_analyzer(run.parent / "copy").analyze(y, 8000)
    np.testing.assert_array_equal(a1.embedding, a2.embedding)
    assert a1.predictions == a2.predictions
    assert max(a1.predictions, key=a1.predictions.get) == "tone"
    # a fresh random model gives different outputs: the equality above means something
    other = build(meta.config).eval()
    x = torch.from_numpy(np.resize(y, meta.config.window_samples)[None])
    assert not torch.allclose(other(x), model(x))


def test_run_is_an_analyzer_through_the_zoo(mel_run):
    from soundalike.models.base import Analyzer
    from soundalike.models.zoo import load_analyzer

    run, report = mel_run
    a = load_analyzer(run)
    assert isinstance(a, Analyzer)
    assert a.model_id == report["model_id"] and a.model_id.startswith("run-")
    assert a.label_category == "instrument" and not a.multi_label
    y = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 0.1
    out = a.analyze(y, 8000)  # 1.25 s in 0.5-s windows: three, the last ending at the end
    assert out.embedding.shape == (a.embedding_dim,) and out.embedding.dtype == np.float32
    assert out.patch_embeddings.shape == (3, a.embedding_dim)
    np.testing.assert_allclose(out.embedding, out.patch_embeddings.mean(axis=0), rtol=1e-6)
    assert abs(sum(out.predictions.values()) - 1.0) < 1e-4


def test_report_files_exist_and_parse(mel_run):
    run, report = mel_run
    for name in ("report.json", "report.md", "confusion.png", "learning_curve.png", "split.json",
                 "manifest.json", "run.json", "model.pt"):
        assert (run / name).stat().st_size > 0, name
    data = json.loads((run / "report.json").read_text())
    t = data["test"]
    assert set(t["per_class"]) == {"clicks", "noise", "tone"}
    cm = np.array(t["confusion_matrix"])
    assert cm.sum() == t["n_tracks"] and cm.trace() / cm.sum() == pytest.approx(t["accuracy"])
    assert len(data["training"]["history"]) == data["training"]["epochs_run"] == 12
    md = (run / "report.md").read_text()
    assert "balanced accuracy" in md and "confusion.png" in md
    assert (run / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    # the split saved with the run is the one the report counted
    split = json.loads((run / "split.json").read_text())
    assert len(split["test"]) == t["n_tracks"]


def test_second_run_reads_the_feature_cache(toy_folders, tmp_path):
    m = read_dataset(toy_folders)
    cfg = _config("mfcc-mlp", tmp_path, epochs=1)
    r1 = train(m, config=cfg, out=tmp_path / "a")
    r2 = train(m, config=cfg, out=tmp_path / "b")
    assert r1["training"]["cache_misses"] == len(m) and r1["training"]["cache_hits"] == 0
    assert r2["training"]["cache_hits"] == len(m) and r2["training"]["cache_misses"] == 0


def test_same_seed_same_run(toy_folders, tmp_path):
    m = read_dataset(toy_folders)
    cfg = _config("mfcc-mlp", tmp_path, epochs=2, augment=("gain", "noise", "speaker"))
    r1 = train(m, config=cfg, out=tmp_path / "a")
    r2 = train(m, config=cfg, out=tmp_path / "b")
    assert r1["model_id"] == r2["model_id"]
    assert r1["training"]["history"][-1]["train_loss"] == r2["training"]["history"][-1]["train_loss"]


def test_run_identity_matches_the_analyzer(mel_run):
    from soundalike.models.checkpoint import run_identity
    from soundalike.models.zoo import load_run_analyzer

    run, report = mel_run
    name, model_id = run_identity(run)
    a = load_run_analyzer(run)
    assert (name, model_id) == (a.name, a.model_id) and model_id == report["model_id"]


def test_probe_trains_on_augmented_copies_reproducibly(toy_folders, tmp_path):
    """``augment_copies`` embeds augmented copies of the training tracks only, through the cache:
    a second identical run computes nothing and gives the same model."""
    m = read_dataset(toy_folders, category="instrument")
    cfg = _config("probe", tmp_path, augment=("gain", "eq", "reverb"), augment_p=1.0, augment_copies=2)
    first = train(m, config=cfg, out=tmp_path / "a")
    n_train = first["dataset"]["split_sizes"]["train"]
    n = first["dataset"]["n_tracks"]
    # clean embeddings of every track, two augmented copies of each training track
    assert first["training"]["cache_misses"] == n + 2 * n_train
    second = train(m, config=cfg, out=tmp_path / "b")
    assert second["training"]["cache_misses"] == 0
    assert second["model_id"] == first["model_id"]
    plain = train(m, config=_config("probe", tmp_path, augment=("gain", "eq", "reverb")), out=tmp_path / "c")
    assert plain["training"]["cache_misses"] == 0  # the clean embeddings are shared
    assert plain["model_id"] != first["model_id"]  # and the copies changed what was learnt
    assert first["test"]["accuracy"] >= 0.5


def test_a_probe_trained_with_the_default_window_loads_again(toy_folders, tmp_path):
    """``window_s=None`` (the CLI's default) once saved a 0-s window that loading refused."""
    from soundalike.models.checkpoint import load_checkpoint
    from soundalike.train.rerun import evaluate_run

    m = read_dataset(toy_folders, category="instrument")
    train(m, config=_config("probe", tmp_path, window_s=None, epochs=3), out=tmp_path / "run")
    model, meta = load_checkpoint(tmp_path / "run")
    assert meta.config.window_s > 0
    rep = evaluate_run(tmp_path / "run", m, only_test_split=True, cache_dir=tmp_path / "cache")
    assert rep["dataset"]["n_tracks"] == 12
