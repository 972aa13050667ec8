"""Inference windows, the data-driven window length, SpecAugment, mixup and label smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from soundalike.models.checkpoint import windows
from soundalike.train.fit import TrainConfig, auto_window_s


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("n", [1, 99, 100, 101, 150, 199, 200, 201, 357, 1000])
@pytest.mark.parametrize("hop", [None, 50, 30])
def test_windows_cover_the_signal_and_end_at_its_end(n, hop):
    size = 100
    x = np.arange(1, n + 1, dtype=np.float32)  # no zeros: padding is recognisable
    W = windows(x, size=size, hop=hop)
    assert W.shape[1] == size and W.dtype == np.float32
    if n <= size:
        assert len(W) == 1
        np.testing.assert_array_equal(W[0, :n], x)
        assert not W[0, n:].any()
        return
    # every window is a full stretch of the signal (no padding), starts step by <= hop
    starts = [int(w[0]) - 1 for w in W]
    for s, w in zip(starts, W):
        np.testing.assert_array_equal(w, x[s : s + size])
    assert starts[0] == 0 and starts[-1] == n - size
    assert all(0 < b - a <= (hop or size) for a, b in zip(starts[:-1], starts[1:]))
    covered = np.zeros(n, bool)
    for s in starts:
        covered[s : s + size] = True
    assert covered.all()


def test_overlapping_windows_come_from_hop_fraction():
    from soundalike.models.families import make_config
    from soundalike.models.checkpoint import track_inputs

    y = np.random.default_rng(0).standard_normal(8000 * 5).astype(np.float32)
    back_to_back = make_config("mel-cnn", n_labels=2, sample_rate=8000, window_s=1.0)
    half = make_config("mel-cnn", n_labels=2, sample_rate=8000, window_s=1.0, hop_fraction=0.5)
    assert len(track_inputs(y, back_to_back)) == 5
    assert len(track_inputs(y, half)) == 9
    with pytest.raises(Exception, match="hop_fraction"):
        make_config("mel-cnn", n_labels=2, hop_fraction=0.0)


def test_auto_window_follows_the_median_length_within_limits():
    sr = 1000
    songs = [30 * sr, 29 * sr, 31 * sr]
    assert auto_window_s(songs, sr=sr) == 3.0
    tiny = [int(0.2 * sr)] * 5
    assert auto_window_s(tiny, sr=sr) == 1.0
    rng = np.random.default_rng(1)
    for _ in range(20):
        lengths = rng.integers(int(0.3 * sr), int(4 * sr), size=15)
        med = float(np.median(lengths)) / sr
        w = auto_window_s(lengths, sr=sr)
        assert 1.0 <= w <= 3.0 and (w * 2).is_integer()
        if 1.0 <= med <= 2.5:
            assert med <= w < med + 0.5 + 1e-9
    assert auto_window_s([], sr=sr) == 3.0


def test_spec_augment_masks_only_while_training():
    import torch

    from soundalike.audio.features import logmel
    from soundalike.models.families import build, make_config

    cfg = make_config("mel-cnn", n_labels=3, sample_rate=8000, window_s=1.0, n_fft=256,
                      hop_length=128, n_mels=32, channels=(4, 8), freq_mask=6, time_mask=8)
    model = build(cfg)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 8000)).astype(np.float32))
    clean = logmel(x, cfg.mel_config()).unsqueeze(1)
    model.eval()
    torch.testing.assert_close(model.spectrogram(x), clean)
    model.train()
    torch.manual_seed(0)
    masked = model.spectrogram(x)
    changed = (masked != clean)
    assert changed.any()
    for b in range(len(x)):
        fill = clean[b].mean()
        # changed cells hold the item's mean; they form whole mel rows and frame columns
        torch.testing.assert_close(masked[b][changed[b]], fill.expand(int(changed[b].sum())))
        rows = changed[b, 0].all(dim=1).sum()
        cols = changed[b, 0].all(dim=0).sum()
        assert rows <= 6 and cols <= 8


def test_mixup_and_label_smoothing_still_learn(tmp_path):
    from soundalike.data.datasets import read_dataset
    from soundalike.data.toy import write_toy_folders
    from soundalike.train.fit import train

    data = write_toy_folders(tmp_path / "toy", n_per_class=16, sr=8000)
    m = read_dataset(data)
    base = dict(family="mfcc-mlp", epochs=12, batch_size=8, lr=3e-3, patience=0, seed=0,
                sample_rate=8000, window_s=0.5, cache_dir=str(tmp_path / "cache"), augment=(),
                model={"hidden": 64, "embedding_dim": 32, "n_fft": 256, "hop_length": 128,
                       "n_mels": 32, "n_mfcc": 13})
    mixed = train(m, config=TrainConfig(**base, mixup=0.4, label_smoothing=0.1), out=tmp_path / "mix")
    plain = train(m, config=TrainConfig(**base), out=tmp_path / "plain")
    assert mixed["test"]["accuracy"] >= 0.85, mixed["test"]
    # the regularisers change training: same seed, different losses
    assert mixed["training"]["history"][-1]["train_loss"] != plain["training"]["history"][-1]["train_loss"]
    with pytest.raises(Exception, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)


def test_train_picks_the_window_from_the_data_when_not_given(tmp_path):
    from soundalike.data.datasets import read_dataset
    from soundalike.data.toy import write_toy_folders
    from soundalike.train.fit import train

    data = write_toy_folders(tmp_path / "toy", n_per_class=6, sr=8000, duration_s=1.7)
    m = read_dataset(data)
    rep = train(m, config=TrainConfig(family="mfcc-mlp", epochs=1, batch_size=8, sample_rate=8000,
                                      cache_dir=str(tmp_path / "cache"), augment=(),
                                      model={"hidden": 16, "embedding_dim": 8, "n_fft": 256,
                                             "hop_length": 128, "n_mels": 32, "n_mfcc": 13}),
                out=tmp_path / "run")
    assert rep["config"]["family"]["window_s"] == auto_window_s([int(1.7 * 8000)], sr=8000) == 2.0
