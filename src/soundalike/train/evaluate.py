"""Metrics in NumPy (no scikit-learn at run time) and track-level evaluation.

Track-level aggregation: a track's prediction is the mean of its windows'
probabilities (softmax for single-label, sigmoid for multi-label).
"""

from __future__ import annotations

import numpy as np


# --------------------------------------------------------------------------- single-label


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, *, n_classes: int) -> np.ndarray:
    """int64 ``(n_classes, n_classes)``: rows are true classes, columns predictions."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)), 1)
    return cm


def per_class_prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    pred = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, pred, out=np.zeros_like(tp), where=pred > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, support.astype(np.int64)


def single_label_metrics(y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1, per-class P/R/F1 and the confusion matrix.

    Parameters
    ----------
    y_true : int ``(n,)`` class indices
    probs : float ``(n, n_classes)`` track-level probabilities
    """
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(probs).argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, n_classes=len(labels))
    p, r, f1, support = per_class_prf(cm)
    present = support > 0
    return {
        "n_tracks": int(len(y_true)),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        "balanced_accuracy": float(r[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class": {lab: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f1[i]),
                            "support": int(support[i])} for i, lab in enumerate(labels)},
        "confusion_matrix": cm.tolist(),
    }


# --------------------------------------------------------------------------- multi-label


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of one binary label (Mann–Whitney U with tied ranks averaged).

    ``nan`` when only one class is present.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision–recall curve as the step sum ``Σ (R_k − R_{k−1}) P_k``.

    Thresholds are the distinct scores (tied scores enter together); ``nan`` without positives.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, np.float64)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(~ys)
    last = np.r_[np.nonzero(np.diff(ss))[0], len(ss) - 1]  # last index of each distinct score
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    recall_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - recall_prev) * precision))


def multi_label_metrics(Y_true: np.ndarray, probs: np.ndarray, labels: list[str],
                        *, threshold: float = 0.5) -> dict:
    """Macro ROC-AUC and PR-AUC (over labels with both classes present), and per label.

    Parameters
    ----------
    Y_true : 0/1 ``(n, n_labels)``
    probs : float ``(n, n_labels)`` track-level probabilities
    """
    Y = np.asarray(Y_true) > 0.5
    P = np.asarray(probs, np.float64)
    per: dict[str, dict] = {}
    aucs, aps = [], []
    for j, lab in enumerate(labels):
        auc = roc_auc(Y[:, j], P[:, j])
        ap = average_precision(Y[:, j], P[:, j])
        pred = P[:, j] >= threshold
        tp = int((pred & Y[:, j]).sum())
        prec = tp / max(int(pred.sum()), 1)
        rec = tp / max(int(Y[:, j].sum()), 1)
        per[lab] = {"roc_auc": auc, "pr_auc": ap, "support": int(Y[:, j].sum()),
                    "precision@0.5": prec, "recall@0.5": rec}
        if not np.isnan(auc):
            aucs.append(auc)
            aps.append(ap)
    exact = float((((P >= threshold) == Y).all(axis=1)).mean()) if len(Y) else float("nan")
    return {
        "n_tracks": int(len(Y)),
        "macro_roc_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "macro_pr_auc": float(np.mean(aps)) if aps else float("nan"),
        "n_labels_scored": len(aucs),
        "subset_accuracy@0.5": exact,
        "per_label": per,
    }


def metrics_for(task: str, targets: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict:
    """Single- or multi-label metrics, as ``task`` says."""
    if task == "single":
        return single_label_metrics(targets, probs, labels)
    return multi_label_metrics(targets, probs, labels)


def headline(task: str, metrics: dict) -> dict[str, float]:
    """The few figures printed at the end of training."""
    keys = (("accuracy", "balanced_accuracy", "macro_f1") if task == "single"
            else ("macro_roc_auc", "macro_pr_auc"))
    return {k: metrics[k] for k in keys}
