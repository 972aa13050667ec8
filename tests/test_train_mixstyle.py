"""Freq-MixStyle and residual normalisation: the acoustic-scene methods for other recording chains."""

from __future__ import annotations

import json

import numpy as np
import pytest

from soundalike.errors import ConfigError

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _spectrograms(seed: int = 0, batch: int = 6, mels: int = 16, frames: int = 40):
    """Log-mel-like batches whose items differ in per-band level and spread (other recordings)."""
    import torch

    rng = np.random.default_rng(seed)
    level = rng.normal(-40, 15, (batch, 1, mels, 1))
    spread = rng.uniform(2, 12, (batch, 1, mels, 1))
    return torch.from_numpy((level + spread * rng.standard_normal((batch, 1, mels, frames))).astype(np.float32))


def test_freq_mixstyle_gives_each_item_the_mixed_band_statistics():
    import torch

    from soundalike.models.families import band_stats, freq_mixstyle

    S = _spectrograms()
    out = freq_mixstyle(S, p=1.0, alpha=0.3, rng=np.random.default_rng(5))
    # the same draws, in the order the function makes them: apply?, lambda per item, permutation
    rng = np.random.default_rng(5)
    assert rng.random() < 1.0
    lam = torch.from_numpy(rng.beta(0.3, 0.3, size=len(S)).astype(np.float32)).view(-1, 1, 1, 1)
    perm = torch.from_numpy(rng.permutation(len(S)))
    assert not torch.equal(perm, torch.arange(len(S)))
    mu, sig = band_stats(S, 0.0)
    want_mu = lam * mu + (1 - lam) * mu[perm]
    want_sig = lam * sig + (1 - lam) * sig[perm]
    got_mu, got_sig = band_stats(out, 0.0)
    torch.testing.assert_close(got_mu, want_mu, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(got_sig, want_sig, atol=1e-3, rtol=1e-4)
    assert (got_mu - mu).abs().max() > 1.0  # the statistics really moved
    # within each band the pattern is the item's own: its standardised values are unchanged
    torch.testing.assert_close((out - got_mu) / got_sig, (S - mu) / sig, atol=1e-3, rtol=1e-3)


def test_freq_mixstyle_own_share_bounds_how_far_the_statistics_move():
    """``own``: an item keeps at least that share of its own band statistics."""
    from soundalike.models.families import band_stats, freq_mixstyle

    S = _spectrograms(batch=32)
    mu, _ = band_stats(S, 0.0)
    for seed in range(5):
        out = freq_mixstyle(S, p=1.0, alpha=0.3, own=0.7, rng=np.random.default_rng(seed))
        got, _ = band_stats(out, 0.0)
        # mu_mix - mu = (1 - lam) (mu_other - mu) with 1 - lam <= 0.3
        widest = (mu[:, None] - mu[None, :]).abs().amax(dim=1)
        assert ((got - mu).abs() <= 0.3 * widest + 1e-3).all()
    free = freq_mixstyle(S, p=1.0, alpha=0.3, rng=np.random.default_rng(0))
    assert (band_stats(free, 0.0)[0] - mu).abs().max() > (got - mu).abs().max()


def test_freq_mixstyle_p0_and_skipped_batches_are_the_identity():
    import torch

    from soundalike.models.families import freq_mixstyle

    S = _spectrograms()
    assert freq_mixstyle(S, p=0.0, alpha=0.3, rng=np.random.default_rng(0)) is S
    one = S[:1]
    assert freq_mixstyle(one, p=1.0, alpha=0.3, rng=np.random.default_rng(0)) is one  # nobody to mix with
    # p is the share of batches mixed, one draw per batch
    applied = [not torch.equal(freq_mixstyle(S, p=0.4, alpha=0.3, rng=np.random.default_rng(s)), S)
               for s in range(300)]
    assert 0.3 < np.mean(applied) < 0.5


def test_freq_mixstyle_is_reproducible_with_a_seed():
    import torch

    from soundalike.models.families import freq_mixstyle

    S = _spectrograms()
    a = freq_mixstyle(S, p=1.0, alpha=0.4, rng=np.random.default_rng([0, 3, 64]))
    b = freq_mixstyle(S, p=1.0, alpha=0.4, rng=np.random.default_rng([0, 3, 64]))
    c = freq_mixstyle(S, p=1.0, alpha=0.4, rng=np.random.default_rng([0, 3, 96]))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_resnorm_ignores_a_per_band_level_as_lambda_goes_to_zero():
    """FreqNorm removes each band's level (an EQ, a microphone's colour); with resnorm's
    identity share small, a per-band offset barely moves the embedding, without resnorm it does."""
    import torch

    from soundalike.models.families import build, make_config

    S = _spectrograms(batch=4, mels=32, frames=32)
    eq = torch.from_numpy(np.random.default_rng(1).normal(0, 6, (1, 1, 32, 1)).astype(np.float32))

    def moved(resnorm: float) -> float:
        torch.manual_seed(0)
        cfg = make_config("mel-cnn", n_labels=3, sample_rate=8000, window_s=1.0, n_fft=256,
                          hop_length=128, n_mels=32, channels=(4, 8), resnorm=resnorm)
        model = build(cfg).eval()
        with torch.no_grad():
            a, b = model.from_spectrogram(S), model.from_spectrogram(S + eq)
        return float((a - b).norm() / a.norm())

    assert moved(1e-3) < 0.01 < 0.1 < moved(0.0)
    # off, it is not in the saved config: runs from before it keep their config and model id
    assert "resnorm" not in make_config("mel-cnn", n_labels=3).to_dict()
    with pytest.raises(ConfigError):
        make_config("mel-cnn", n_labels=3, resnorm=-1.0)


def _tiny_run(tmp_path, name: str, **kw):
    from soundalike.data.datasets import read_dataset
    from soundalike.data.toy import write_toy_folders
    from soundalike.train.fit import TrainConfig, train

    data = tmp_path / "toy"
    if not data.exists():
        write_toy_folders(data, n_per_class=8, sr=8000)
    cfg = TrainConfig(family="mel-cnn", epochs=2, batch_size=8, seed=0, sample_rate=8000, window_s=0.5,
                      cache_dir=str(tmp_path / "cache"), augment=("gain",), crops_per_track=2,
                      model={"channels": (4, 8), "embedding_dim": 16, "n_fft": 256, "hop_length": 128,
                             "n_mels": 32, **kw.pop("model", {})}, **kw)
    return train(read_dataset(data, category="instrument"), config=cfg, out=tmp_path / name)


def test_training_with_freq_mixstyle_is_reproducible_and_recorded(tmp_path):
    a = _tiny_run(tmp_path, "a", freq_mixstyle=1.0, freq_mixstyle_alpha=0.4)
    b = _tiny_run(tmp_path, "b", freq_mixstyle=1.0, freq_mixstyle_alpha=0.4)
    plain = _tiny_run(tmp_path, "plain")
    assert a["model_id"] == b["model_id"]
    assert a["training"]["history"][-1]["train_loss"] == b["training"]["history"][-1]["train_loss"]
    assert a["model_id"] != plain["model_id"]  # it changed what was learnt
    saved = json.loads((tmp_path / "a" / "run.json").read_text())["extra"]["train"]
    assert (saved["freq_mixstyle"], saved["freq_mixstyle_alpha"]) == (1.0, 0.4)
    with pytest.raises(ConfigError):
        _tiny_run(tmp_path, "bad", freq_mixstyle=1.5)


def test_a_resnorm_run_loads_with_its_normalisation(tmp_path):
    import torch

    from soundalike.models.checkpoint import load_checkpoint
    from soundalike.models.families import build

    _tiny_run(tmp_path, "rn", model={"resnorm": 0.5})
    model, meta = load_checkpoint(tmp_path / "rn")
    assert meta.config.resnorm == 0.5
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32))
    other = build(meta.config.__class__.from_dict({**meta.config.to_dict(), "resnorm": 0.0})).eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(model(x), other(x))  # inference normalises too


def test_cli_freq_mixstyle_and_resnorm(tmp_path):
    from typer.testing import CliRunner

    from soundalike.cli import app, main
    from soundalike.data.toy import write_toy_folders

    data = write_toy_folders(tmp_path / "toy", n_per_class=4, sr=8000)
    res = CliRunner().invoke(app, ["train", str(data), "--epochs", "1", "--window", "0.5",
                                   "--out", str(tmp_path / "run"), "--no-cache", "--batch-size", "8",
                                   "--freq-mixstyle", "0.6,0.2,0.5", "--resnorm", "0.25", "--json"])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    tr = saved["extra"]["train"]
    assert (tr["freq_mixstyle"], tr["freq_mixstyle_alpha"], tr["freq_mixstyle_own"]) == (0.6, 0.2, 0.5)
    assert saved["config"]["resnorm"] == 0.25
    assert main(["train", str(data), "--freq-mixstyle", "lots"]) == 1
    assert main(["train", str(data), "--freq-mixstyle", "0.5,0"]) == 1
    assert main(["train", str(data), "--freq-mixstyle", "0.5,0.3,1"]) == 1
