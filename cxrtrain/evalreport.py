"""What ``cxrtrain eval`` writes besides metrics.json: one ROC plot per dataset and the metrics.md table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

_STYLES = ["-", "--", "-.", ":"]


_MARKERS = ["o", "s", "^", "v", "D", "x", "+", "*"]


def plot_rocs(results: dict, png: Path, title: str, baseline: dict | None = None) -> bool:
    """One ROC per class, drawn as computed (no offsets: every point stays inside [0, 1]); line style, marker
    and colour all vary so overlapping curves stay distinguishable; the legend (outside the axes, so it hides
    no curve) gives AUROC and n. Untrained-baseline curves (if any) are thin grey. Returns False and writes
    nothing when no class has a curve (no positives or no negatives in the split)."""
    curves = [(cls, r) for cls, r in results.items() if r.get("_roc")]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 6), dpi=110)
    cmap = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    for k, (cls, r) in enumerate(curves):
        fpr, tpr = np.asarray(r["_roc"][0]), np.asarray(r["_roc"][1])
        ax.plot(
            fpr,
            tpr,
            ls=_STYLES[k % 4],
            marker=_MARKERS[k % len(_MARKERS)],
            markevery=max(1, len(fpr) // 6),
            ms=4,
            lw=1.6,
            color=cmap(k % cmap.N),
            alpha=0.85,
            clip_on=False,  # points on the frame (0 or 1) stay whole
            label=f"{cls}: {r['auroc']:.3f} (n={r['n']}, pos={r['positives']})",
        )
    for _cls, r in (baseline or {}).items():
        if r.get("_roc"):
            ax.plot(*r["_roc"], color="0.6", lw=0.8, ls=":")
    if baseline:
        ax.plot([], [], color="0.6", lw=0.8, ls=":", label="untrained baseline (all classes)")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, title="class: AUROC")
    fig.savefig(png, bbox_inches="tight")
    plt.close(fig)
    return True


def fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"


def _ci(r: dict) -> str:
    ci = r.get("auroc_ci95")
    return f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else ""


def markdown_table(metrics: dict) -> str:
    """One row per number: dataset, split, task, n, positives, metric, value (+ untrained baseline)."""
    base = (metrics.get("baseline") or {}).get("datasets")
    head = "| dataset | split | task | n | positives | metric | value |" + (" untrained |" if base else "")
    lines = [
        f"Split scored: **{metrics['config']['split']}**; protocol: **{metrics['config'].get('protocol', 'cxrkit')}**; "
        f"prompt ensemble: {metrics['config']['ensemble']}; "
        f"prompts: {metrics['config']['prompts']}",
        "",
        head,
        "|---" * (8 if base else 7) + "|",
    ]
    for name, d in metrics["datasets"].items():
        bd = (base or {}).get(name, {})
        for cells in [*_binary_rows(name, d.get("binary", {}), bd), *_other_rows(name, d, bd)]:
            lines.append(_row(*cells, with_base=bool(base)))
    return "\n".join(lines) + "\n"


def _row(name, split, task, n, pos, metric, value, bval=None, *, with_base: bool) -> str:
    return f"| {name} | {split} | {task} | {n} | {pos} | {metric} | {value} |" + (
        f" {bval if bval is not None else ''} |" if with_base else ""
    )


def _binary_rows(name: str, b: dict, bd: dict) -> list[tuple]:
    """Per class: AUROC [CI] (+ baseline) and F1 / MCC; the macro AUROC; the skipped labels."""
    rows = []
    for cls, r in b.get("classes", {}).items():
        br = bd.get("binary", {}).get("classes", {}).get(cls)
        auc = f"{fmt(r['auroc'])}{_ci(r)}" + (f" ({r['auroc_reason']})" if r.get("auroc_reason") else "")
        rows.append(
            (
                name,
                r["split"],
                cls,
                r["n"],
                r["positives"],
                "AUROC [95% CI]",
                auc,
                f"{fmt(br['auroc'])}{_ci(br)}" if br else None,
            )
        )
        f1 = f"{fmt(r['f1'])} / {fmt(r['mcc'])}" + (f" ({r['f1_reason']})" if r.get("f1_reason") else "")
        rows.append(
            (name, r["split"], cls, r["n"], r["positives"], f"F1 / MCC (threshold from {r['threshold_from']})", f1)
        )
    if b.get("classes"):
        task = f"macro over {b['macro_classes']} of {b['macro_of']} classes"
        bval = fmt(bd["binary"]["macro_auroc"]) if bd.get("binary") else None
        rows.append((name, b["split"], task, "", "", "AUROC", fmt(b["macro_auroc"]), bval))
    for s in b.get("skipped", []):
        rows.append((name, b["split"], s["label"], "", "", "skipped", s["reason"]))
    return rows


def _other_rows(name: str, d: dict, bd: dict) -> list[tuple]:
    """Multi-class accuracy, retrieval recall, and the note of a dataset that was not evaluated."""
    rows = []
    for set_name, r in d.get("multiclass", {}).items():
        br = bd.get("multiclass", {}).get(set_name)
        rows.append(
            (
                name,
                r["split"],
                f"{set_name} ({len(r['classes'])}-way)",
                r["n"],
                "",
                "accuracy (macro)",
                f"{fmt(r['accuracy'])} ({fmt(r['macro_accuracy'])})",
                f"{fmt(br['accuracy'])} ({fmt(br['macro_accuracy'])})" if br else None,
            )
        )
    if d.get("retrieval"):
        r = d["retrieval"]
        br = bd.get("retrieval")
        for direction in ("image_to_text", "text_to_image"):
            rows.append(
                (
                    name,
                    r["split"],
                    f"retrieval {direction.replace('_to_', '->')} ({r['section']})",
                    r["images"],
                    "",
                    "R@1 / R@5 / R@10",
                    " / ".join(fmt(r[direction][k]) for k in ("R@1", "R@5", "R@10")),
                    " / ".join(fmt(br[direction][k]) for k in ("R@1", "R@5", "R@10")) if br else None,
                )
            )
    if d.get("note"):
        rows.append((name, d.get("split", ""), "-", d.get("studies", ""), "", "not evaluated", d["note"]))
    return rows
