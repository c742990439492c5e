"""Evaluation metrics as pure numpy functions (no scikit-learn needed)."""

from __future__ import annotations

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties averaged."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > a random negative), ties count 1/2
    (Mann-Whitney U). NaN when y has one class only."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, np.float64)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    r = _ranks(s)
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def bootstrap_ci(y, s, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of AUROC (resamples with one class are skipped)."""
    y, s = np.asarray(y), np.asarray(s)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        a = auroc(y[idx], s[idx])
        if not np.isnan(a):
            vals.append(a)
    if not vals:
        return float("nan"), float("nan")
    return float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2))


def confusion(y, pred) -> tuple[int, int, int, int]:
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    return int((y & pred).sum()), int((~y & pred).sum()), int((~y & ~pred).sum()), int((y & ~pred).sum())


def f1_score(y, pred) -> float:
    tp, fp, _, fn = confusion(y, pred)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def mcc(y, pred) -> float:
    """Matthews correlation coefficient (0 when a margin is empty)."""
    tp, fp, tn, fn = confusion(y, pred)
    den = np.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if den == 0 else float((tp * tn - fp * fn) / den)


def best_threshold(y, s) -> float:
    """The score threshold maximising F1 on (y, s) (used on validate, applied to test); midpoints between
    distinct scores are tried."""
    s = np.asarray(s, np.float64)
    u = np.unique(s)
    cands = np.concatenate([[u[0] - 1e-9], (u[:-1] + u[1:]) / 2, [u[-1] + 1e-9]]) if len(u) > 1 else u
    best, best_t = -1.0, 0.5
    for t in cands:
        f = f1_score(y, s >= t)
        if f > best:
            best, best_t = f, float(t)
    return best_t


def roc_curve(y, s) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(bool)
    order = np.argsort(-np.asarray(s, np.float64), kind="mergesort")
    ys = y[order]
    tpr = np.concatenate([[0], np.cumsum(ys) / max(1, ys.sum())])
    fpr = np.concatenate([[0], np.cumsum(~ys) / max(1, (~ys).sum())])
    return fpr, tpr


def recall_at_k(sim: np.ndarray, gt: list[set[int]], ks=(1, 5, 10)) -> dict[str, float]:
    """Retrieval recall: share of queries (rows of sim) with a correct candidate in the top k."""
    order = np.argsort(-sim, axis=1, kind="mergesort")
    out = {}
    for k in ks:
        top = order[:, :k]
        out[f"R@{k}"] = (
            float(np.mean([bool(set(top[i].tolist()) & gt[i]) for i in range(len(gt))])) if gt else float("nan")
        )
    return out
