"""The train-area CLI in process: train, evaluate, predict, model summary."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from soundalike.cli import app
from soundalike.data.toy import write_toy_folders

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("cli")
    data = write_toy_folders(tmp / "toy", n_per_class=12, sr=8000)
    res = runner.invoke(app, ["train", str(data), "--model", "mfcc-mlp", "--epochs", "8",
                              "--window", "0.5", "--out", str(tmp / "run"), "--category", "instrument",
                              "--cache-dir", str(tmp / "cache"), "--augment", "live", "--batch-size", "8"])
    torch.set_num_threads(n)
    return tmp, data, res


def test_train_prints_headline_and_writes_run(trained):
    tmp, _, res = trained
    assert res.exit_code == 0, res.output
    assert "test (" in res.output and "accuracy" in res.output and "macro_f1" in res.output
    assert (tmp / "run" / "report.md").exists() and (tmp / "run" / "model.pt").exists()


def test_default_train_augments_with_the_domain_preset(tmp_path):
    """`soundalike train` without --augment trains with the domain set, small speaker included."""
    import torch

    from soundalike.audio.augment import parse_augment

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    data = write_toy_folders(tmp_path / "toy", n_per_class=4, sr=8000)
    try:
        res = runner.invoke(app, ["train", str(data), "--model", "mfcc-mlp", "--epochs", "1",
                                  "--window", "0.5", "--out", str(tmp_path / "run"), "--no-cache",
                                  "--batch-size", "8", "--json"])
    finally:
        torch.set_num_threads(n)
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    augment = saved["extra"]["train"]["augment"]
    assert tuple(augment) == parse_augment("domain") and "speaker" in augment


def test_evaluate_on_another_dataset(trained):
    tmp, _, _ = trained
    other = write_toy_folders(tmp / "other", n_per_class=4, sr=8000, seed=9)
    (other / "birdsong").mkdir()
    (other / "birdsong" / "x.wav").write_bytes((other / "tone" / "tone-00.wav").read_bytes())
    res = runner.invoke(app, ["evaluate", str(tmp / "run"), str(other), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["dataset"]["n_tracks"] == 12 and rep["dataset"]["n_unknown_label"] == 1
    assert 0 <= rep["metrics"]["accuracy"] <= 1
    assert json.loads((tmp / "run" / "eval-other" / "report.json").read_text())["metrics"]["n_tracks"] == 12


def test_predict_reports_bad_files(trained):
    tmp, data, _ = trained
    bad = tmp / "bad.wav"
    bad.write_bytes(b"not audio")
    good = data / "clicks" / "clicks-00.wav"
    res = runner.invoke(app, ["predict", str(tmp / "run"), str(good), str(bad), "--json", "--top", "2"])
    assert res.exit_code == 1
    out = json.loads(res.output)
    assert len(out[0]["labels"]) == 2 and out[0]["labels"][0]["probability"] >= out[0]["labels"][1]["probability"]
    assert "error" in out[1] and "bad.wav" in out[1]["error"]


def test_model_summary(trained):
    tmp, _, _ = trained
    res = runner.invoke(app, ["model", "summary", str(tmp / "run")])
    assert res.exit_code == 0, res.output
    assert "mfcc-mlp" in res.output and "Linear" in res.output and "total" in res.output
    res = runner.invoke(app, ["model", "summary", str(tmp / "run"), "--json"])
    rows = json.loads(res.output)["layers"]
    assert rows[-1]["layer"] == "total" and rows[-1]["params"] == sum(r["params"] for r in rows[:-1])


def test_bad_arguments_are_clear(tmp_path):
    from soundalike.cli import main

    assert main(["train", str(tmp_path / "nothing")]) == 1
    assert main(["model", "summary", str(tmp_path)]) == 1


def test_a_run_is_a_model_for_ingest_and_similar(trained):
    """ingest --model RUN stores its embeddings and labels; similar --model RUN finds them."""
    tmp, data, _ = trained
    db = str(tmp / "cat.sqlite")
    run = str(tmp / "run")
    res = runner.invoke(app, ["ingest", str(data), "--model", run, "--catalog", db, "--workers", "1",
                              "--json"])
    assert res.exit_code == 0, res.output
    n = json.loads(res.output)["ingested"]
    assert n == 36
    query = sorted((data / "tone").glob("*.wav"))[0]
    res = runner.invoke(app, ["similar", str(query), "--model", run, "--catalog", db, "--k", "5", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)["hits"]
    folders = [h["path"].split("/")[-2] for h in hits]
    assert folders.count("tone") >= 4, folders
    # its predicted labels became instrument tags on the tracks
    info = json.loads(runner.invoke(app, ["info", hits[0]["path"], "--catalog", db, "--json"]).output)
    assert any(t["category"] == "instrument" and t["source"] == "model" for t in info["tags"])
