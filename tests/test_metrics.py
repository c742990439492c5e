"""Metrics against hand-computed cases: AUROC by pairwise counting (ties included), F1 and MCC by formula,
the F1-maximising threshold, the bootstrap interval and recall@K."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxrtrain.metrics import auroc, best_threshold, bootstrap_ci, f1_score, mcc, recall_at_k


def _pairwise_auc(y, s):
    pos = [b for a, b in zip(y, s) if a == 1]
    neg = [b for a, b in zip(y, s) if a == 0]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def test_auroc_by_pairwise_counting():
    y = [1, 0, 1, 1, 0, 0, 1, 0]
    s = [0.9, 0.1, 0.4, 0.4, 0.4, 0.3, 0.8, 0.85]
    assert auroc(np.array(y), np.array(s)) == pytest.approx(_pairwise_auc(y, s))
    assert auroc(np.array([1, 1]), np.array([0.2, 0.3])) != auroc(np.array([1, 1]), np.array([0.2, 0.3]))  # NaN
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, 40)
        s = rng.integers(0, 5, 40).astype(float)  # many ties
        assert auroc(y, s) == pytest.approx(_pairwise_auc(y, s))


def test_f1_mcc_formula_and_threshold():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([1, 1, 0, 0, 0, 1, 0, 1])
    tp, fp, tn, fn = 3, 1, 3, 1
    assert f1_score(y, p) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert mcc(y, p) == pytest.approx((tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert mcc(y, np.ones(8)) == 0.0
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.3, 0.05, 0.6])
    t = best_threshold(y, s)
    assert f1_score(y, s >= t) == 1.0 and 0.3 < t < 0.6
    lo, hi = bootstrap_ci(y, s, n=200)
    assert lo <= auroc(y, s) <= hi


def test_recall_at_k():
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.2, 0.3]])
    r = recall_at_k(sim, [{0}, {1}, {0}], ks=(1, 2))
    assert r == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3)}
