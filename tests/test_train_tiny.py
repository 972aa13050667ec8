"""Training on a handful of tracks says plainly that its scores measure nothing."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from soundalike.cli import app
from soundalike.data.toy import write_toy_folders

runner = CliRunner()


def test_three_tracks_warn_and_epochs_say_what_they_score_on(tmp_path, torch_one_thread):
    data = write_toy_folders(tmp_path / "toy", n_per_class=1, sr=8000)  # 3 tracks, 3 labels
    res = runner.invoke(app, ["train", str(data), "--model", "mfcc-mlp", "--epochs", "3", "--window", "0.5",
                              "--out", str(tmp_path / "run"), "--no-cache", "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "warning: no validation tracks" in out and "warning: no test tracks" in out
    assert "fewer than 3 tracks" in out
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 3 and all("train-set score" in e and "(no validation tracks)" in e and "val score" not in e
                                    for e in epochs)
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert len(rep["warnings"]) == 3 and rep["test"] == {}
    assert all(row["scored_on"] == "train" for row in rep["training"]["history"])
    assert "## Warnings" in (tmp_path / "run" / "report.md").read_text()


def test_enough_tracks_give_no_warning(tmp_path, torch_one_thread):
    data = write_toy_folders(tmp_path / "toy", n_per_class=4, sr=8000)
    res = runner.invoke(app, ["train", str(data), "--model", "mfcc-mlp", "--epochs", "1", "--window", "0.5",
                              "--out", str(tmp_path / "run"), "--no-cache", "--batch-size", "4", "--json"])
    assert res.exit_code == 0, res.output
    assert "warning:" not in res.output
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["warnings"] == [] and rep["training"]["history"][0]["scored_on"] == "val"


def test_on_epoch_model_sees_each_epochs_weights(tmp_path, torch_one_thread):
    """What a benchmark scores per epoch count: the model as each epoch left it, not the best."""
    import torch

    from soundalike.data.datasets import read_dataset
    from soundalike.train.fit import TrainConfig, train

    data = write_toy_folders(tmp_path / "toy", n_per_class=4, sr=8000)
    seen: list[tuple[int, dict]] = []
    cfg = TrainConfig(family="mfcc-mlp", epochs=3, batch_size=4, window_s=0.5, use_cache=False, patience=0)
    train(read_dataset(data), config=cfg, out=tmp_path / "run",
          on_epoch_model=lambda e, m: seen.append((e, {k: v.clone() for k, v in m.state_dict().items()})))
    assert [e for e, _ in seen] == [1, 2, 3]
    w = "head.1.weight"
    assert not torch.equal(seen[0][1][w], seen[2][1][w])  # weights moved between epochs: live copies
