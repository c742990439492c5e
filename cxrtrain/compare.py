"""Paired comparison of systems (prompt sets, models) scored on the same images, with bootstrap CIs.

The question "does B beat A on these images, beyond noise?" is answered by a **paired** bootstrap: each
resample draws image indices once (with replacement) and every system and every task (class, macro) is
scored on those same indices, so the spread of the difference reflects only how the systems disagree,
not which images happened to be drawn. The delta is ``system - reference``; its 95% interval is the
2.5th/97.5th percentile of the resampled deltas; the verdict is ``better`` when the interval lies above 0,
``worse`` when it lies below, ``within noise`` otherwise (or ``undefined`` with no finite delta).

API (reusable beyond prompts: pass models as systems)::

    tasks = {"Edema": {"A": auroc_stat(y, score_a), "B": auroc_stat(y, score_b)}, ...}
    res = paired_bootstrap(n_images, tasks, reference="A", n_boot=1000, seed=0,
                           macros={"macro AUROC": ["Edema", ...]})

A *stat* is a function ``idx -> float`` (NaN when undefined on that resample, e.g. one class only):
``auroc_stat(y, s)`` (rows with y NaN are left out) and ``accuracy_stat(correct, mask)`` build the usual
ones. ``res["tasks"][task][system]`` = value, reference value, delta, ci95, verdict, resamples used.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Stat = Callable[[np.ndarray], float]
VERDICTS = ("better", "worse", "within noise", "too few images", "undefined")
MIN_IMAGES = 10  # fewer scored images than this: no verdict (a resample of 1-9 images is not evidence)


def fast_auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted 1/2 (vectorised ranks); NaN with one class only."""
    y = np.asarray(y, bool)
    npos = int(y.sum())
    nneg = len(y) - npos
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    _, inv, counts = np.unique(np.asarray(s)[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg = (2 * ends - counts + 1) / 2.0  # 1-based mean rank of each tie group
    ranks = np.empty(len(y), np.float64)
    ranks[order] = avg[inv]
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def auroc_stat(y: np.ndarray, s: np.ndarray) -> Stat:
    """AUROC of scores ``s`` against 0/1 labels ``y`` on the resampled rows (NaN labels left out)."""
    y = np.asarray(y, np.float64)
    s = np.asarray(s, np.float64)

    def stat(idx: np.ndarray) -> float:
        yy = y[idx]
        keep = ~np.isnan(yy)
        return fast_auroc(yy[keep] == 1, s[idx][keep])

    stat.n = int((~np.isnan(y)).sum())  # images scored on the full set
    return stat


def accuracy_stat(correct: np.ndarray, mask: np.ndarray | None = None) -> Stat:
    """Fraction of ``correct`` among the resampled rows where ``mask`` holds (NaN when none)."""
    correct = np.asarray(correct, bool)
    mask = np.ones(len(correct), bool) if mask is None else np.asarray(mask, bool)

    def stat(idx: np.ndarray) -> float:
        m = mask[idx]
        return float(correct[idx][m].mean()) if m.any() else float("nan")

    stat.n = int(mask.sum())
    return stat


def resample_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] image indices drawn with replacement: one draw shared by every system and task."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n)) if n else np.zeros((n_boot, 0), int)


def verdict(ci: list[float] | None) -> str:
    if ci is None:
        return "undefined"
    return "better" if ci[0] > 0 else "worse" if ci[1] < 0 else "within noise"


def _macro(values: dict[str, float], names: list[str]) -> float:
    got = [values[n] for n in names if n in values and math.isfinite(values[n])]
    return float(np.mean(got)) if got else float("nan")


def _summary(point: float, ref: float, deltas: np.ndarray, alpha: float, n: int | None, min_n: int) -> dict:
    finite = deltas[np.isfinite(deltas)]
    ci = [float(np.quantile(finite, alpha / 2)), float(np.quantile(finite, 1 - alpha / 2))] if len(finite) else None
    few = n is not None and n < min_n and ci is not None
    return dict(
        images=n,
        value=point if math.isfinite(point) else None,
        reference_value=ref if math.isfinite(ref) else None,
        delta=point - ref if math.isfinite(point - ref) else None,
        ci95=ci,
        verdict=f"too few images ({n} < {min_n})" if few else verdict(ci),
        resamples=int(len(finite)),
    )


def paired_bootstrap(
    n: int,
    tasks: dict[str, dict[str, Stat]],
    reference: str,
    n_boot: int = 1000,
    seed: int = 0,
    macros: dict[str, list[str]] | None = None,
    alpha: float = 0.05,
    min_n: int = MIN_IMAGES,
) -> dict:
    """Score every system on every task on the full set and on ``n_boot`` shared resamples of ``n``
    images; deltas against ``reference`` per task and per macro (mean over the named tasks, per resample).
    A task scored on fewer than ``min_n`` images (a stat's ``n``; a macro: its smallest member's) gets the
    verdict ``too few images``, whatever its interval.
    -> ``{"reference", "systems", "n", "resamples", "seed", "tasks": {task: {system: summary}}}``."""
    systems = list(dict.fromkeys(s for t in tasks.values() for s in t))
    if reference not in systems:
        raise ValueError(f"reference {reference!r} is not among the compared systems {systems}")
    macros = macros or {}
    full = np.arange(n)
    point = {t: {s: f(full) for s, f in st.items()} for t, st in tasks.items()}
    boot = {t: {s: np.full(n_boot, np.nan) for s in st} for t, st in tasks.items()}
    for b, idx in enumerate(resample_indices(n, n_boot, seed)):
        for t, st in tasks.items():
            for s, f in st.items():
                boot[t][s][b] = f(idx)
    for name, members in macros.items():
        scored = [s for s in systems if any(s in tasks.get(t, {}) for t in members)]  # systems with a member
        point[name] = {s: _macro({t: point[t][s] for t in members if s in point[t]}, members) for s in scored}
        boot[name] = {
            s: np.array([_macro({t: boot[t][s][b] for t in members if s in boot[t]}, members) for b in range(n_boot)])
            for s in scored
        }
    size = {t: min((getattr(f, "n", n) for f in st.values()), default=n) for t, st in tasks.items()}
    size |= {m: min((size[t] for t in members if t in size), default=n) for m, members in macros.items()}
    out = {}
    for t in point:
        if reference not in point[t]:
            continue
        ref, ref_b = point[t][reference], boot[t][reference]
        out[t] = {
            s: _summary(point[t][s], ref, boot[t][s] - ref_b, alpha, size.get(t), min_n)
            for s in point[t]
            if s != reference
        }
    return dict(reference=reference, systems=systems, n=n, resamples=n_boot, seed=seed, tasks=out)


def forest_plot(result: dict, png, title: str) -> None:
    """One row per (task, system): the delta and its 95% CI, a line at 0; verdicts colour the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        (f"{t} ({s})" if len(result["systems"]) > 2 else t, r)
        for t, per in result["tasks"].items()
        for s, r in per.items()
        if r["delta"] is not None
    ]
    fig, ax = plt.subplots(figsize=(6.5, 1.5 + 0.32 * max(1, len(rows))), dpi=110)
    colours = {"better": "tab:green", "worse": "tab:red", "within noise": "0.35", "too few images": "tab:orange"}
    colours["undefined"] = "0.7"

    def colour(v: str) -> str:
        return colours["too few images"] if v.startswith("too few") else colours[v]

    for k, (_label, r) in enumerate(rows):
        y = len(rows) - 1 - k
        if r["ci95"]:
            ax.plot(r["ci95"], [y, y], color=colour(r["verdict"]), lw=1.8)
        ax.plot([r["delta"]], [y], "o", color=colour(r["verdict"]), ms=5)
    ax.axvline(0, color="k", lw=0.8, ls=":")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, _ in reversed(rows)], fontsize=7)
    ax.set_xlabel(
        f"delta vs {result['reference']} (95% paired bootstrap CI, {result['resamples']} resamples)", fontsize=8
    )
    ax.set_title(title, fontsize=9)
    for v, c in colours.items():
        ax.plot([], [], "o", color=c, label=v)
    fig.legend(fontsize=7, loc="lower center", ncol=5, frameon=False)
    fig.tight_layout(rect=(0, 0.35 / (1.5 + 0.32 * max(1, len(rows))), 1, 1))  # room for the legend below
    fig.savefig(png)
    plt.close(fig)


__all__ = [
    "VERDICTS",
    "accuracy_stat",
    "auroc_stat",
    "fast_auroc",
    "forest_plot",
    "paired_bootstrap",
    "resample_indices",
    "verdict",
]
