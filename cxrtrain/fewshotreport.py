"""What ``cxrtrain fewshot`` writes besides fewshot.json: the fewshot.md table and the fewshot.png plot."""

from __future__ import annotations

from pathlib import Path


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def pm(r: dict) -> str:
    return f"{_f(r['mean'])} ± {_f(r['std'])}"


def fewshot_table(res: dict) -> str:
    lines = [
        "Model selection on **validate**, numbers on **test**.",
        "",
        "| dataset | split | protocol | train studies | macro AUROC (mean ± std over seeds) | best epochs | cap binding | zero-shot macro AUROC |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, d in res["datasets"].items():
        zs = f"{_f(d['zero_shot_macro'])} ({d['zero_shot_macro_classes']} classes)"
        for k, modes in d["shots"].items():
            for mode, r in modes.items():
                nt = sorted({x["n_train"] for x in r["runs"]})
                lines.append(
                    f"| {name} | test | {k}-shot {mode} | {nt[0]}{f'-{nt[-1]}' if len(nt) > 1 else ''} | {pm(r)} | "
                    f"{', '.join(str(x['best_epoch']) for x in r['runs'])} | {r['cap_binding_runs']} of "
                    f"{len(r['runs'])} | {zs} |"
                )
        for key, r in d["linear_probe"].items():
            lines.append(
                f"| {name} | test | linear probe {key} | {r['runs'][0]['n_train']} | {pm(r)} | "
                f"{', '.join(str(x['best_epoch']) for x in r['runs'])} | {r['cap_binding_runs']} of "
                f"{len(r['runs'])} | {zs} |"
            )
    return "\n".join(lines) + "\n"


def plot_fewshot(res: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, d in res["datasets"].items():
        ks = [int(k) for k in d["shots"]]
        for mode in next(iter(d["shots"].values()), {}):
            pts = [(k, d["shots"][str(k)][mode]) for k in ks if d["shots"][str(k)][mode]["mean"] is not None]
            if pts:
                ax.errorbar(
                    [p[0] for p in pts],
                    [p[1]["mean"] for p in pts],
                    yerr=[p[1]["std"] for p in pts],
                    marker="o",
                    capsize=3,
                    label=f"{name} {mode}",
                )
        if d["zero_shot_macro"] is not None:
            ax.axhline(d["zero_shot_macro"], ls=":", color="gray")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("shots per class")
    ax.set_ylabel("macro AUROC (test)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
