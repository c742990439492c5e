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


def _series(d: dict) -> tuple[dict[str, list], list]:
    """{mode: [(k, result)]} of the k-shot runs with a number, and [(percent key, result)] of the probes."""
    ks = sorted(int(k) for k in d["shots"])
    modes = list(dict.fromkeys(m for k in ks for m in d["shots"][str(k)]))
    shots = {
        m: [(k, d["shots"][str(k)][m]) for k in ks if d["shots"][str(k)].get(m, {}).get("mean") is not None]
        for m in modes
    }
    probes = [(key, r) for key, r in d.get("linear_probe", {}).items() if r.get("mean") is not None]
    return {m: p for m, p in shots.items() if p}, probes


def plot_fewshot(res: dict, png: Path) -> bool:
    """k-shot curves (x: shots per class, ticked 1, 2, 4, ...) and the linear probes (x: % of the train split),
    each with its zero-shot line in the legend; title: datasets and seeds. Returns False and writes nothing
    when there is no number to plot."""
    series = {name: _series(d) for name, d in res["datasets"].items()}
    has_shots = any(s for s, _ in series.values())
    has_probes = any(p for _, p in series.values())
    if not (has_shots or has_probes):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [x for x, on in (("shots", has_shots), ("probes", has_probes)) if on]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.6), dpi=100, squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, panel in zip(axes[0], panels):
        for i, (name, (shots, probes)) in enumerate(series.items()):
            c = colors(i % 10)
            _draw_panel(ax, panel, name, shots, probes, res["datasets"][name], c)
        ax.set_ylabel("macro AUROC (test)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below: hides nothing
    seeds = res.get("config", {}).get("seeds")
    fig.suptitle(
        f"{', '.join(res['datasets'])}: mean ± std over {seeds} seed(s); model selection on validate", fontsize=10
    )
    fig.savefig(png, bbox_inches="tight")
    plt.close(fig)
    return True


def _draw_panel(ax, panel: str, name: str, shots: dict, probes: list, d: dict, color) -> None:
    styles = ["-o", "--s", "-.^", ":D"]
    if panel == "shots":
        ticks = sorted({k for pts in shots.values() for k, _ in pts})
        for j, (mode, pts) in enumerate(shots.items()):
            xs, rs = [k for k, _ in pts], [r for _, r in pts]
            ax.errorbar(xs, [r["mean"] for r in rs], yerr=[r["std"] for r in rs], fmt=styles[j % 4], color=color,
                        capsize=3, ms=4, label=f"{name} {mode}")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        ax.set_xlabel("shots per class")
    else:
        xs = list(range(len(probes)))
        ax.errorbar(xs, [r["mean"] for _, r in probes], yerr=[r["std"] for _, r in probes], fmt="-o", color=color,
                    capsize=3, ms=4, label=f"{name} linear probe")  # fmt: skip
        ax.set_xticks(xs, [key for key, _ in probes])
        ax.set_xlabel("linear probe: share of the train split")
    if d.get("zero_shot_macro") is not None:
        ax.axhline(d["zero_shot_macro"], ls=":", color=color, label=f"{name} zero-shot ({d['zero_shot_macro']:.3f})")
