"""NumPy metrics agree with scikit-learn (used here only, never at run time)."""

from __future__ import annotations

import numpy as np
import pytest

from soundalike.train.evaluate import (average_precision, multi_label_metrics, roc_auc,
                                       single_label_metrics)

sk = pytest.importorskip("sklearn.metrics")


def test_single_label_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    probs = rng.random((200, 4))
    probs[np.arange(200)[:120], y[:120]] += 1.0  # mostly right
    m = single_label_metrics(y, probs, ["a", "b", "c", "d"])
    pred = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"))
    p, r, f, s = sk.precision_recall_fscore_support(y, pred, zero_division=0)
    for i, lab in enumerate("abcd"):
        assert m["per_class"][lab]["precision"] == pytest.approx(p[i])
        assert m["per_class"][lab]["recall"] == pytest.approx(r[i])
        assert m["per_class"][lab]["f1"] == pytest.approx(f[i])
    np.testing.assert_array_equal(m["confusion_matrix"], sk.confusion_matrix(y, pred, labels=range(4)))


def test_ranking_metrics_match_sklearn_with_ties():
    rng = np.random.default_rng(1)
    for _ in range(5):
        y = rng.integers(0, 2, 80)
        s = np.round(rng.random(80) + 0.4 * y, 1)  # coarse scores: many ties
        assert roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s))
        assert average_precision(y, s) == pytest.approx(sk.average_precision_score(y, s))
    assert np.isnan(roc_auc(np.ones(5), np.arange(5)))


def test_multi_label_macro():
    rng = np.random.default_rng(2)
    Y = rng.integers(0, 2, (60, 3))
    Y[:, 2] = 0  # a label without positives is not scored
    P = rng.random((60, 3)) + 0.5 * Y
    m = multi_label_metrics(Y, P, ["x", "y", "z"])
    assert m["n_labels_scored"] == 2
    assert m["macro_roc_auc"] == pytest.approx(sk.roc_auc_score(Y[:, :2], P[:, :2], average="macro"))
    assert m["macro_pr_auc"] == pytest.approx(sk.average_precision_score(Y[:, :2], P[:, :2], average="macro"))
    assert np.isnan(m["per_label"]["z"]["roc_auc"])
