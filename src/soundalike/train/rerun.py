"""Using a finished run: re-evaluate it on any dataset, predict labels for files."""

from __future__ import annotations

import json
import re
from pathlib import Path

from soundalike.data.datasets import Item, Manifest
from soundalike.errors import DatasetError, SoundalikeError

#: Longest stretch of a file ``predict`` decodes (seconds from the start).
PREDICT_MAX_S = 3600.0


def _align(manifest: Manifest, labels: list[str], task: str) -> tuple[Manifest, int]:
    """Re-express a manifest in a run's label vocabulary; returns it and the count of items dropped."""
    known = set(labels)
    items: list[Item] = []
    dropped = 0
    for it in manifest.items:
        labs = tuple(lab for lab in it.labels if lab in known)
        if (task == "single" and (len(labs) != 1 or len(it.labels) != 1)) or not labs:
            dropped += 1
            continue
        items.append(Item(it.path, labs, it.group))
    if not items:
        raise DatasetError(f"{manifest.source}: no track carries a label the run knows "
                           f"({', '.join(labels[:10])}{'...' if len(labels) > 10 else ''})")
    return Manifest(items, list(labels), task, manifest.label_category, manifest.source,
                    list(manifest.errors)), dropped


def evaluate_run(run: str | Path, manifest: Manifest, *, out: str | Path | None = None,
                 only_test_split: bool = False, cache_dir: str | Path | None = None,
                 progress=None) -> dict:
    """Track-level evaluation of a trained run on a dataset; writes ``report.json``/``.md``.

    Parameters
    ----------
    run : the run folder
    manifest : the dataset; labels the run does not know are ignored (single-label
        tracks whose label is unknown are left out and counted)
    out : report folder (default ``RUN/eval-<dataset name>``)
    only_test_split : evaluate only the tracks of the run's own test split
    """
    from soundalike.data.cache import FeatureCache
    from soundalike.models.checkpoint import load_checkpoint, run_model_id
    from soundalike.train.evaluate import metrics_for
    from soundalike.train.fit import prepare_tracks, predict_tracks
    from soundalike.train.report import write_report

    run = Path(run)
    model, meta = load_checkpoint(run)
    if only_test_split:
        test_paths = set(json.loads((run / "split.json").read_text())["paths"]["test"])
        manifest = manifest.subset([i for i, it in enumerate(manifest.items) if it.path in test_paths])
    aligned, dropped = _align(manifest, meta.labels, meta.task)
    backbone = None
    if meta.backbone:
        from soundalike.models.zoo import load_analyzer

        backbone = load_analyzer(meta.backbone)
    train_cfg = (meta.extra or {}).get("train", {})
    tracks = prepare_tracks(aligned, config=None if backbone else meta.config, backbone=backbone,
                            max_duration_s=float(train_cfg.get("max_duration_s", 120.0)),
                            cache=FeatureCache(cache_dir), progress=progress or (lambda *a: None))
    man = tracks.manifest
    idx = list(range(len(man.items)))
    probs, _ = predict_tracks(model, tracks.data, idx, config=meta.config, multi_label=meta.task == "multi")
    metrics = metrics_for(meta.task, man.targets(), probs, meta.labels)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(manifest.source.removeprefix("catalog:")).stem) or "data"
    out_dir = Path(out) if out is not None else run / f"eval-{name}"
    report = {"run_dir": str(run), "report_dir": str(out_dir), "model_id": run_model_id(model, meta),
              "family": meta.config.family, "task": meta.task, "label_category": meta.label_category,
              "labels": meta.labels,
              "dataset": {"source": manifest.source, "n_tracks": len(man.items),
                          "n_errors": len(man.errors), "n_unknown_label": dropped,
                          "errors": [list(e) for e in man.errors[:200]]},
              "metrics": metrics,
              "evaluated_on": ("the run's test split" if only_test_split else "all tracks")
              + " (track-level: mean of window predictions)"}
    write_report(out_dir, report, title="Evaluation report")
    return report


def predict_files(run: str | Path, files: list[str | Path], *, top: int = 3) -> list[dict]:
    """Top labels per file from a trained run; an unreadable file gives an ``error`` entry.

    Returns
    -------
    results : ``{"path", "labels": [{"label", "probability"}], "n_windows"}`` or
        ``{"path", "error"}`` per file, in order
    """
    from soundalike.audio.io import load
    from soundalike.models.zoo import load_analyzer

    analyzer = load_analyzer(run)
    out: list[dict] = []
    for f in files:
        try:
            wav = load(f, sr=analyzer.sample_rate, duration_s=PREDICT_MAX_S)
            a = analyzer.analyze(wav.y, wav.sr)
        except SoundalikeError as exc:
            out.append({"path": str(f), "error": str(exc)})
            continue
        out.append({"path": str(f), "labels": [{"label": k, "probability": float(v)} for k, v in a.top(top)],
                    "n_windows": int(len(a.patch_embeddings)) if a.patch_embeddings is not None else 1,
                    "model_id": analyzer.model_id})
    return out
