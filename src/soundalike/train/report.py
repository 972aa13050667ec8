"""Run reports: ``report.json`` (everything), ``report.md`` (for people) and PNG figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def _clean(o: Any) -> Any:
    """JSON-safe copy: NaN/inf become ``None``, NumPy scalars/arrays become Python."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if math.isfinite(v) else "–"
    return str(v)


def plot_confusion(cm: np.ndarray, labels: list[str], path: Path, *, title: str = "") -> None:
    """Confusion matrix PNG, rows normalised to recall, counts printed in cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    n = len(labels)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    size = max(4.0, 0.45 * n + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix (test tracks)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="recall")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curve(history: list[dict], path: Path, *, score_name: str) -> None:
    """Train/val loss and the validation score per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(ep, [h["train_loss"] for h in history], label="train loss")
    ax.plot(ep, [h["val_loss"] for h in history], label="val loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(ep, [h["val_score"] if h["val_score"] is not None else np.nan for h in history],
             color="tab:green", label=f"val {score_name}")
    ax2.set_ylabel(f"val {score_name}")
    ax2.set_ylim(0, 1.02)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")
    ax.set_title("learning curve")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict, *, title: str = "Training report") -> str:
    """A human-readable summary of a report dict."""
    t = report.get("test") or report.get("metrics") or {}
    lines = [f"# {title}: {Path(report.get('run_dir', '')).name}", ""]
    lines += [f"- family: `{report.get('family')}`, task: `{report.get('task')}`, "
              f"label category: `{report.get('label_category')}`",
              f"- model id: `{report.get('model_id')}`"]
    ds = report.get("dataset", {})
    if ds:
        lines += [f"- dataset: `{ds.get('source')}`: {ds.get('n_tracks')} tracks, "
                  f"{len(report.get('labels', []))} labels, split {ds.get('split_sizes', {})}, "
                  f"{ds.get('n_errors', 0)} files skipped"]
    tr = report.get("training")
    if tr:
        lines += [f"- training: {tr['epochs_run']} epochs (best {tr['best_epoch']}), "
                  f"{tr['train_time_s']:.1f} s, {tr['samples_per_s']:.0f} windows/s; "
                  f"features {tr['feature_time_s']:.1f} s (cache {tr['cache_hits']} hits, "
                  f"{tr['cache_misses']} misses)"]
    if report.get("warnings"):
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    lines += ["", f"## Results ({report.get('evaluated_on', 'test split')})", ""]
    if "accuracy" in t:
        lines += [f"| accuracy | balanced accuracy | macro F1 | tracks |", "|---|---|---|---|",
                  f"| {_fmt(t['accuracy'])} | {_fmt(t['balanced_accuracy'])} | {_fmt(t['macro_f1'])} "
                  f"| {t['n_tracks']} |", "", "| label | precision | recall | F1 | support |",
                  "|---|---|---|---|---|"]
        for lab, m in t["per_class"].items():
            lines.append(f"| {lab} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} "
                         f"| {m['support']} |")
        lines += ["", "![confusion matrix](confusion.png)"]
    elif "macro_roc_auc" in t:
        lines += ["| macro ROC-AUC | macro PR-AUC | labels scored | tracks |", "|---|---|---|---|",
                  f"| {_fmt(t['macro_roc_auc'])} | {_fmt(t['macro_pr_auc'])} | {t['n_labels_scored']} "
                  f"| {t['n_tracks']} |", "", "| label | ROC-AUC | PR-AUC | support |", "|---|---|---|---|"]
        for lab, m in t["per_label"].items():
            lines.append(f"| {lab} | {_fmt(m['roc_auc'])} | {_fmt(m['pr_auc'])} | {m['support']} |")
    else:
        lines.append("No held-out tracks to evaluate on.")
    if tr:
        lines += ["", "![learning curve](learning_curve.png)"]
    errs = ds.get("errors") if ds else None
    if errs:
        lines += ["", "## Skipped files", ""] + [f"- `{p}`: {r}" for p, r in errs[:50]]
        if ds.get("n_errors", 0) > 50:
            lines.append(f"- … and {ds['n_errors'] - 50} more (see report.json)")
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path, report: dict, *, stem: str = "report",
                 title: str = "Training report") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.md``, the confusion PNG and (with history) the learning curve.

    Returns the paths written, by kind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md"}
    metrics = report.get("test") or report.get("metrics") or {}
    if "confusion_matrix" in metrics:
        paths["confusion"] = out / "confusion.png"
        plot_confusion(np.array(metrics["confusion_matrix"]), report["labels"], paths["confusion"])
    hist = (report.get("training") or {}).get("history")
    if hist:
        paths["learning_curve"] = out / "learning_curve.png"
        plot_learning_curve(hist, paths["learning_curve"],
                            score_name="accuracy" if report.get("task") == "single" else "ROC-AUC")
    paths["json"].write_text(json.dumps(_clean(report), indent=1))
    paths["md"].write_text(markdown(report, title=title))
    return paths
