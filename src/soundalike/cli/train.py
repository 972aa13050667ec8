"""CLI commands of the train area: ``train``, ``evaluate``, ``predict`` and ``model summary``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from soundalike.cli.common import JsonOpt, print_json

FAMILY_HELP = "Model family: mfcc-mlp, waveform-cnn, mel-cnn or probe."


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("predict")(predict_cmd)
    from soundalike.cli.models import model_app

    model_app.command("summary")(summary_cmd)


def _progress():
    """A rich progress bar and the ``progress(stage, done, total)`` callback that drives it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), transient=True, console=_console())
    tasks: dict[str, int] = {}

    def update(stage: str, done: int, total: int) -> None:
        key = "epoch" if stage.startswith("epoch") else stage
        if key not in tasks:
            tasks[key] = bar.add_task(stage, total=total)
        bar.update(tasks[key], completed=done, total=total, description=stage)

    return bar, update


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _headline_text(task: str, metrics: dict) -> str:
    from soundalike.train.evaluate import headline

    if not metrics:
        return "no held-out tracks"
    return "  ".join(f"{k} {v:.4f}" for k, v in headline(task, metrics).items() if v is not None)


def _parse_freq_mixstyle(spec: str) -> tuple[float, float, float]:
    """``"P[,ALPHA[,OWN]]"`` -> ``(p, alpha, own)`` (what is left out: TrainConfig's defaults)."""
    from soundalike.errors import ConfigError
    from soundalike.train.fit import TrainConfig

    parts = [x.strip() for x in spec.split(",")]
    defaults = (TrainConfig.freq_mixstyle, TrainConfig.freq_mixstyle_alpha, TrainConfig.freq_mixstyle_own)
    try:
        if len(parts) > 3:
            raise ValueError
        p, alpha, own = (float(x) for x in (*parts, *defaults[len(parts):]))
    except ValueError:
        raise ConfigError(f"--freq-mixstyle takes P[,ALPHA[,OWN]] (e.g. 0.4,0.3), got {spec!r}") from None
    return p, alpha, own


def train_cmd(
    data: Annotated[str, typer.Argument(help="Dataset: a folder-per-label directory, an MTT "
                                        "annotations_final.csv, a CSV/TSV table, or catalog:PATH.")],
    task: Annotated[str | None, typer.Option("--task", help="single (softmax) or multi (sigmoid); "
                                             "default: inferred from the labels.")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help=FAMILY_HELP)] = "mel-cnn",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Maximum epochs.")] = 40,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run folder (default "
                                             "runs/<dataset>-<model>-<timestamp>).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds split, crops, augmentation, weights.")] = 0,
    group_by: Annotated[str | None, typer.Option(
        "--group-by", help="Keep a group's tracks in one split: a column (tables), a track field "
                           "(catalog: artist, album) or a regex on file names (folders).")] = None,
    top_tags: Annotated[int | None, typer.Option("--top-tags", min=1,
                                                 help="Keep the N most frequent tags (MTT: 50).")] = None,
    augment: Annotated[str, typer.Option(
        "--augment", help="Comma list of gain, noise, shift, speaker, eq, reverb, pitch, resample, "
                          "codec; presets live (gain,noise,speaker), domain (gain,noise,speaker,eq,"
                          "reverb,pitch,codec: other rooms, microphones and speakers; the default, "
                          "the most robust measured), domain-v1 (the same without speaker), all, "
                          "none.")] = "domain",
    augment_copies: Annotated[int, typer.Option(
        "--augment-copies", min=0, help="Probe only: also embed this many augmented copies of each "
                                        "training track (the probe's inputs are frozen embeddings).")] = 0,
    noise_dir: Annotated[Path | None, typer.Option("--noise-dir", help="Noise recordings for the "
                                                   "noise augmentation (default: generated noise).")] = None,
    category: Annotated[str | None, typer.Option("--category", help="Tag category of the labels "
                                                 "(genre, instrument, artist, mood, tag).")] = None,
    label_column: Annotated[str | None, typer.Option("--label-column", help="Label column of a "
                                                     "CSV/TSV table.")] = None,
    audio_root: Annotated[Path | None, typer.Option("--audio-root", help="Folder relative paths in "
                                                    "a table are resolved against.")] = None,
    backbone: Annotated[str, typer.Option("--backbone", help="Pretrained analyzer under a probe.")] = "MTT_musicnn",
    window_s: Annotated[float | None, typer.Option("--window", help="Window length in seconds "
                                                   "(default: from the data: the median track "
                                                   "length rounded up to 0.5 s, 1 to 3 s).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Windows per training step.")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 2e-3,
    patience: Annotated[int, typer.Option("--patience", min=0, help="Early-stopping patience "
                                          "in epochs (0: off).")] = 10,
    label_smoothing: Annotated[float | None, typer.Option(
        "--label-smoothing", min=0.0, max=0.9,
        help="Label smoothing (single-label; default 0.1, 0 for the probe).")] = None,
    mixup: Annotated[float, typer.Option("--mixup", min=0.0, help="Mixup Beta(a, a) parameter "
                                         "(0: off).")] = 0.0,
    freq_mixstyle: Annotated[str, typer.Option(
        "--freq-mixstyle", metavar="P[,ALPHA[,OWN]]",
        help="mel-cnn: Freq-MixStyle with probability P per batch (each window's mel bands take a "
             "Beta(ALPHA, ALPHA) share of another window's band statistics: other recording "
             "chains; ALPHA default 0.3; OWN: the least share a window keeps of its own, default "
             "0; 0: off).")] = "0",
    resnorm: Annotated[float, typer.Option(
        "--resnorm", min=0.0, help="mel-cnn: residual normalisation, the input becomes LAMBDA x + "
                                   "its per-band normalised self (0: off).")] = 0.0,
    test_fraction: Annotated[float, typer.Option(
        "--test-fraction", min=0.0, max=0.9, help="Share of tracks held out for the final test.")] = 0.2,
    val_fraction: Annotated[float, typer.Option(
        "--val-fraction", min=0.0, max=0.9, help="Share of tracks for validation (early stopping).")] = 0.1,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Feature cache root.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Train a classifier or tagger on labeled audio; writes a run folder usable as --model."""
    from soundalike.audio.augment import parse_augment
    from soundalike.data.datasets import read_dataset
    from soundalike.errors import ConfigError
    from soundalike.train.fit import TrainConfig, train

    if task not in (None, "single", "multi"):
        raise ConfigError(f"--task must be single or multi, got {task!r}")
    mix_p, mix_alpha, mix_own = _parse_freq_mixstyle(freq_mixstyle)
    config = TrainConfig(family=model, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                         label_smoothing=label_smoothing, mixup=mixup,
                         freq_mixstyle=mix_p, freq_mixstyle_alpha=mix_alpha, freq_mixstyle_own=mix_own,
                         model={"resnorm": resnorm} if resnorm else {},
                         seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                         augment=parse_augment(augment), noise_dir=str(noise_dir) if noise_dir else None,
                         augment_copies=augment_copies, backbone=backbone, window_s=window_s,
                         cache_dir=str(cache_dir) if cache_dir else None, use_cache=not no_cache)
    manifest = read_dataset(data, task=task, category=category, group_by=group_by, top_tags=top_tags,
                            label_column=label_column, audio_root=audio_root)
    con = _console()
    if not json_out:
        con.print(f"{len(manifest)} tracks, {len(manifest.labels)} labels ({manifest.task}-label, "
                  f"category {manifest.label_category}); {len(manifest.errors)} entries skipped")
        if category is None and manifest.label_category == "tag":
            con.print(f"hint: the labels will be catalog tags of category 'tag' (e.g. "
                      f"tag:{manifest.labels[0]}); if they are instruments, genres or moods, say so "
                      f"with --category instrument|genre|mood so ingest files them there")
    bar, update = _progress()

    def on_epoch(row: dict) -> None:
        if not json_out:
            head = f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f}  "
            if row.get("scored_on", "val") == "val":
                body = f"val loss {row['val_loss']:.4f}  val score {row['val_score']:.4f}"
            else:  # never print "val score 1.0000" for a score on the training tracks
                body = f"train-set score {row['val_score']:.4f} (no validation tracks)"
            bar.console.print(f"{head}{body}  ({row['time_s']:.0f} s)", soft_wrap=True, highlight=False)

    def on_warning(message: str) -> None:
        bar.console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    with bar:
        report = train(manifest, config=config, out=out, progress=update, on_epoch=on_epoch,
                       on_warning=on_warning)
    if json_out:
        from soundalike.train.report import _clean

        print_json(_clean({k: report[k] for k in ("run_dir", "model_id", "family", "task", "labels",
                                                   "dataset", "training", "test", "warnings")}))
        return
    tr = report["training"]
    print(f"run: {report['run_dir']}  (model id {report['model_id']})")
    fam = report["config"]["family"]
    what = (f"{report['family']} on {fam['window_s']:g}-s windows" if report["family"] != "probe"
            else f"probe on {report['config']['backbone']}")
    print(f"{what}: trained {tr['epochs_run']} epochs (best {tr['best_epoch']}) in {tr['train_time_s']:.1f} s, "
          f"{tr['samples_per_s']:.0f} windows/s; {report['dataset']['n_errors']} files skipped")
    print(f"test ({report['dataset']['split_sizes']['test']} tracks): "
          f"{_headline_text(report['task'], report['test'])}")
    print(f"report: {Path(report['run_dir']) / 'report.md'}")
    print(f"use it: soundalike predict {report['run_dir']} FILE  |  "
          f"soundalike ingest DIR --model {report['run_dir']}")


def evaluate_cmd(
    run: Annotated[Path, typer.Argument(help="Trained run folder.")],
    data: Annotated[str, typer.Argument(help="Dataset to evaluate on (any layout train accepts).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where to write the report "
                                             "(default RUN/eval-<dataset>).")] = None,
    group_by: Annotated[str | None, typer.Option(
        "--group-by", help="Group column/field/regex, as in train (kept for reading the same data).")] = None,
    top_tags: Annotated[int | None, typer.Option("--top-tags", min=1,
                                                 help="Keep the N most frequent tags (MTT: 50).")] = None,
    label_column: Annotated[str | None, typer.Option("--label-column",
                                                     help="Label column of a CSV/TSV table.")] = None,
    audio_root: Annotated[Path | None, typer.Option(
        "--audio-root", help="Folder relative paths in a table are resolved against.")] = None,
    split: Annotated[str, typer.Option("--split", help="all tracks of DATA, or the run's own "
                                       "test split (test).")] = "all",
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Feature cache root.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a trained run on any dataset (cross-dataset testing); writes report.json/.md."""
    from soundalike.data.datasets import read_dataset
    from soundalike.errors import ConfigError
    from soundalike.models.checkpoint import load_checkpoint
    from soundalike.train.rerun import evaluate_run

    if split not in ("all", "test"):
        raise ConfigError("--split must be all or test")
    _, meta = load_checkpoint(run)
    manifest = read_dataset(data, task=meta.task, category=meta.label_category, group_by=group_by,
                            top_tags=top_tags, label_column=label_column, audio_root=audio_root)
    bar, update = _progress()
    with bar:
        report = evaluate_run(run, manifest, out=out, only_test_split=split == "test",
                              cache_dir=cache_dir, progress=update)
    if json_out:
        from soundalike.train.report import _clean

        print_json(_clean(report))
        return
    print(f"{report['dataset']['n_tracks']} tracks evaluated ({report['dataset']['n_errors']} skipped, "
          f"{report['dataset']['n_unknown_label']} with labels the run does not know)")
    print(_headline_text(report["task"], report["metrics"]))
    print(f"report: {report['report_dir']}/report.md")


def predict_cmd(
    run: Annotated[Path, typer.Argument(help="Trained run folder.")],
    files: Annotated[list[Path], typer.Argument(help="Audio files.")],
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="Labels per file.")] = 3,
    json_out: JsonOpt = False,
) -> None:
    """Print a trained run's labels for audio files (bad files are reported, not fatal)."""
    from soundalike.train.rerun import predict_files

    results = predict_files(run, files, top=top)
    if json_out:
        print_json(results)
    else:
        for r in results:
            if "error" in r:
                print(f"error: {r['error']}", file=sys.stderr)
                continue
            labels = "  ".join(f"{x['label']} {x['probability']:.3f}" for x in r["labels"])
            print(f"{r['path']}\t{labels}")
    if any("error" in r for r in results):
        raise typer.Exit(code=1)


def summary_cmd(
    run: Annotated[Path, typer.Argument(help="Trained run folder (or its model.pt).")],
    json_out: JsonOpt = False,
) -> None:
    """Print a trained run's layers with output shapes and parameter counts."""
    from soundalike.models.families import summary
    from soundalike.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(run)
    rows = summary(model)
    if json_out:
        print_json({"family": meta.config.family, "task": meta.task, "labels": meta.labels,
                    "config": meta.config.to_dict(), "layers": rows})
        return
    c = meta.config
    print(f"{meta.name or run}: {c.family}, {meta.task}-label, {len(meta.labels)} labels "
          f"({meta.label_category}); input "
          + (f"{c.window_s:g} s at {c.sample_rate} Hz" if c.input_kind == "waveform"
             else f"{c.input_dim}-d embeddings of {meta.backbone}"))
    print(f"{'layer':<16}{'type':<14}{'output shape':<24}{'params':>10}")
    for r in rows[:-1]:
        shape = "x".join(str(s) for s in r["output_shape"]) if r["output_shape"] else ""
        print(f"{r['layer']:<16}{r['type']:<14}{shape:<24}{r['params']:>10,}")
    print(f"{'total':<54}{rows[-1]['params']:>10,}")
