"""Side-by-side scoring: several models on the same images, prompts and protocol, with paired CIs.

``run_side_by_side(models, roots, out, cfg)`` scores every model with ``run_suite`` (bench-suite) or
``run_eval`` (eval), each under its own preprocessing (image size, mean/std from its config), then
re-scores the cached embeddings per image and runs ``cxrtrain.compare.paired_bootstrap`` once per
benchmark: each resample draws the benchmark's images once and every model is scored on those same images,
so the 95% CI of ``model - first model`` reflects only how the models disagree. The same draws give each
model's own 95% CI (the whiskers of the chart).

Headline tasks per benchmark: AUROC (the mean over the classes that have prompts, per resample, for
VinDr), 5-way ZS-ACC, image->text R@1/5/10 (the candidate texts stay the split's texts; the queries are
resampled). Linear probes (bench-suite) are listed per model without a paired CI.

Outputs: OUT/side-by-side.md (one table, a column group per model, footnoted preprocessing),
OUT/side-by-side.json, OUT/side-by-side.png (one bar chart per benchmark) and OUT/models/LABEL/ (each
model's own suite or eval outputs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from cxrtrain.compare import accuracy_stat, auroc_stat, paired_bootstrap
from cxrtrain.evaluate import EvalConfig, EvalUsageError, strict_json

ZERO = "__zero__"  # a constant-0 system: its deltas are each model's own value and CI


def labels_for(models: list[Path]) -> list[str]:
    """Short, unique column labels: the run folder names (``name-2`` on repeats)."""
    out: list[str] = []
    for m in models:
        p = Path(m)
        base = p.parent.name if p.name in ("best", "last") else p.name
        lab, k = base, 2
        while lab in out:
            lab, k = f"{base}-{k}", k + 1
        out.append(lab)
    return out


def _binary_tasks(name: str, emb: dict, rows, ds, sets, cfg, text_emb, scale: float) -> dict:
    from cxrtrain.evaluate import _binary_targets, find_prompts, set_scores

    tasks = {}
    for j, label in enumerate(ds.label_names):
        key = find_prompts(sets["binary"], ds.name, label)
        if key is None:
            continue
        pn = sets["binary"][key]
        pos = set_scores(emb["emb"][rows], text_emb(pn["positive"]), cfg.ensemble)
        neg = set_scores(emb["emb"][rows], text_emb(pn["negative"]), cfg.ensemble)
        prob = 1.0 / (1.0 + np.exp(-scale * (pos - neg)))  # the eval's two-way softmax
        mask, y = _binary_targets(emb["labels"][rows, j], cfg.uncertain)
        tasks[f"{name} AUROC: {label}"] = auroc_stat(np.where(mask, y, np.nan), prob)
    return tasks


def _multiclass_tasks(name: str, emb: dict, rows, ds, sets, cfg, text_emb) -> dict:
    from cxrprep.labels import canonical
    from cxrtrain.evaluate import set_scores

    canon = [canonical(n) for n in ds.label_names]
    for set_name, classes in sets["multiclass"].items():
        if not (set_name == ds.name or set_name in ds.name):
            continue
        names = [c for c in classes if c in canon]
        if len(names) < 2:
            continue
        cols = np.nan_to_num(np.stack([emb["labels"][rows, canon.index(c)] for c in names], 1))
        one = (cols == 1).sum(1) == 1
        scores = np.stack([set_scores(emb["emb"][rows], text_emb(classes[c]), cfg.ensemble) for c in names], 1)
        return {f"{name} ZS-ACC": accuracy_stat(scores.argmax(1) == cols.argmax(1), one)}
    return {}


def _retrieval_tasks(name: str, emb: dict, rows, cfg, text_emb) -> dict:
    from cxrtrain.evaluate import _unit

    texts = []
    for f, i in zip(emb["findings"][rows], emb["impression"][rows]):
        texts.append(str({"findings": f, "impression": i, "both": f"{f} {i}".strip()}[cfg.text_section] or (i or f)))
    keep = np.array([bool(t) for t in texts])
    if keep.sum() < 2:
        return {}
    uniq = sorted(set(t for t in texts if t))
    index = {t: n for n, t in enumerate(uniq)}
    sim = _unit(emb["emb"][rows]) @ _unit(text_emb(uniq)).T
    own = np.array([sim[r, index[t]] if t else np.inf for r, t in enumerate(texts)])
    rank = (sim > own[:, None]).sum(1)  # texts scored above the image's own report
    return {f"{name} R@{k}": accuracy_stat(rank < k, keep) for k in (1, 5, 10)}


def model_tasks(model, datasets, cfg: EvalConfig, sets: dict, cache: Path, ck_hash: str, device: str) -> dict:
    """{dataset: {"ids": study ids in the split, "tasks": {task: stat}, "macros": {...}}} for one model."""
    from cxrtrain.evaluate import embed_dataset, encode_texts, split_mask

    scale = float(model.scale().detach())
    text_cache: dict[str, np.ndarray] = {}

    def text_emb(texts):
        new = [t for t in dict.fromkeys(texts) if t not in text_cache]
        text_cache.update(zip(new, encode_texts(model, new, device=device)) if new else [])
        return np.stack([text_cache[t] for t in texts])

    out = {}
    for ds in datasets:
        emb = embed_dataset(model, ds, ck_hash, cache, cfg.batch_size, device)
        rows = np.flatnonzero(split_mask(emb, cfg.split))
        if not len(rows):
            continue
        tasks = _binary_tasks(ds.name, emb, rows, ds, sets, cfg, text_emb, scale) if ds.label_names else {}
        classes = list(tasks)
        tasks |= _multiclass_tasks(ds.name, emb, rows, ds, sets, cfg, text_emb) if ds.label_names else {}
        tasks |= _retrieval_tasks(ds.name, emb, rows, cfg, text_emb)
        macros = {f"{ds.name} AUROC": classes} if classes else {}
        out[ds.name] = dict(ids=emb["study_id"][rows], tasks=tasks, macros=macros)
    return out


def paired(per_model: dict[str, dict], labels: list[str], cfg: EvalConfig) -> dict:
    """Per benchmark: each model's value and own CI, and its difference from the first model with CI."""
    result = {}
    for ds in per_model[labels[0]]:
        got = [lab for lab in labels if ds in per_model[lab]]
        ids = per_model[labels[0]][ds]["ids"]
        for lab in got:
            if not np.array_equal(per_model[lab][ds]["ids"], ids):
                raise EvalUsageError(f"{ds}: models {labels[0]} and {lab} were scored on different images")
        names = list(per_model[labels[0]][ds]["tasks"])
        macros = per_model[labels[0]][ds]["macros"]
        tasks = {
            t: {lab: per_model[lab][ds]["tasks"][t] for lab in got if t in per_model[lab][ds]["tasks"]} for t in names
        }
        headline = list(macros) + [t for t in names if " AUROC: " not in t]
        n, nb = len(ids), cfg.bootstrap
        own = paired_bootstrap(
            n, {t: v | {ZERO: lambda idx: 0.0} for t, v in tasks.items()}, ZERO, nb, cfg.seed, macros
        )
        diff = paired_bootstrap(n, tasks, labels[0], nb, cfg.seed, macros) if len(got) > 1 else {"tasks": {}}
        rows = {}
        for t in headline:
            rows[t] = {
                lab: dict(
                    value=own["tasks"][t][lab]["delta"],
                    ci95=own["tasks"][t][lab]["ci95"],
                    **({"delta": diff["tasks"][t][lab]} if lab in diff["tasks"].get(t, {}) else {}),
                )
                for lab in got
                if lab in own["tasks"].get(t, {})
            }
        result[ds] = dict(images=n, resamples=nb, seed=cfg.seed, tasks=rows)
    return result


def _pct(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.1f}"


def _ci(ci) -> str:
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def markdown(result: dict, labels: list[str], notes: dict[str, str], probes: dict, cfg: EvalConfig) -> str:
    ref = labels[0]
    head = ["benchmark", "metric"] + [f"{lab} (95% CI)" for lab in labels]
    head += [f"{lab} − {ref} (95% CI)" for lab in labels[1:]]
    lines = [
        f"Side by side: split **{cfg.split}**, prompts {cfg.prompts}, ensemble {cfg.ensemble}; x100. "
        f"Differences against **{ref}**, paired bootstrap ({cfg.bootstrap} resamples, seed {cfg.seed}): "
        f"the same resampled images for every model.",
        "",
        "| " + " | ".join(head) + " |",
        "|---" * len(head) + "|",
    ]
    for ds, r in result.items():
        for t, cells in r["tasks"].items():
            metric = t.removeprefix(ds).strip()
            vals = [
                _pct(cells[lab]["value"]) + _ci(cells[lab]["ci95"]) if lab in cells else "missing" for lab in labels
            ]
            for lab in labels[1:]:
                d = cells.get(lab, {}).get("delta")
                vals.append(
                    "n/a" if not d or d["delta"] is None else f"{100 * d['delta']:+.1f}{_ci(d['ci95'])} {d['verdict']}"
                )
            lines.append(f"| {ds} | {metric} | " + " | ".join(vals) + " |")
    for ds, per in probes.items():
        for key in ("10%", "100%"):
            vals = [_pct(per.get(lab, {}).get(key)) for lab in labels] + ["not paired"] * (len(labels) - 1)
            lines.append(f"| {ds} | linear probe {key} AUROC | " + " | ".join(vals) + " |")
    lines += ["", "Each model is scored under its own preprocessing:", ""]
    lines += [f"- **{lab}**: {notes[lab]}" for lab in labels]
    return "\n".join(lines) + "\n"


def preprocessing_note(ck: Path, model) -> str:
    """What the model's images go through here, and (for imported models) what its authors did."""
    c = model.config
    mean = ", ".join(f"{v:.4g}" for v in c.image_mean)
    std = ", ".join(f"{v:.4g}" for v in c.image_std)
    note = (
        f"`{ck}`: {c.image_size} px (shorter side resized, centre crop), mean ({mean}), std ({std}), "
        f"text ≤ {c.max_text_len} tokens, temperature {1 / float(model.scale().detach()):.4g}"
    )
    rec = ck.parent / "import.json"
    if rec.is_file():
        r = json.loads(rec.read_text())
        orig = r.get("preprocessing", {}).get("original")
        note += f"; imported from {r['format']} `{Path(r['source']).name}`" + (f" (original: {orig})" if orig else "")
    return note


def plot(result: dict, labels: list[str], png: Path, title: str) -> None:
    """One bar chart per benchmark: a bar per model and headline metric, its 95% CI as whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [ds for ds, r in result.items() if r["tasks"]]
    if not names:
        return
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.2 + 1.1 * len(labels) * 1.2 * max(1, len(names)), 3.6), squeeze=False
    )
    width = 0.8 / len(labels)
    for ax, ds in zip(axes[0], names):
        tasks = list(result[ds]["tasks"])
        for k, lab in enumerate(labels):
            vals, lo, hi = [], [], []
            for t in tasks:
                c = result[ds]["tasks"][t].get(lab, {})
                v = c.get("value")
                vals.append(np.nan if v is None else 100 * v)
                ci = c.get("ci95") or [v, v] if v is not None else [np.nan, np.nan]
                lo.append(100 * (v - ci[0]) if v is not None else 0)
                hi.append(100 * (ci[1] - v) if v is not None else 0)
            x = np.arange(len(tasks)) + (k - (len(labels) - 1) / 2) * width
            ax.bar(x, vals, width, yerr=[lo, hi], capsize=3, label=lab)
        ax.set_xticks(np.arange(len(tasks)))
        ax.set_xticklabels([t.removeprefix(ds).strip() for t in tasks], rotation=0, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(f"{ds} (n={result[ds]['images']})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("x100 (95% CI)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), fontsize=8, loc="upper right", ncol=len(labels))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = png.with_name(f".tmp-{png.name}")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(png)


def _score_one(ck: Path, label: str, roots: list[str], out: Path, cfg: EvalConfig, suite: dict | None, log) -> tuple:
    """Run the model's own suite/eval (each its own preprocessing), then its per-image tasks."""
    from cxrprep.shards import open_datasets
    from cxrprep.text.templates import eval_prompt_sets
    from cxrtrain.evaluate import open_checkpoint, resolve_device, run_eval
    from cxrtrain.suite import BENCHMARKS, run_suite

    dest = out / "models" / label
    probes = {}
    if suite is not None:
        res = run_suite(ck, roots, dest, cfg, log=log, **suite)
        probes = {
            n: {k: c.get(f"probe_{k}") for k in ("10%", "100%")}
            for n, c in res["benchmarks"].items()
            if "probe_10%" in c
        }
        only = {d.name for d in open_datasets(roots)} & set(BENCHMARKS)
        cache = dest / "eval" / "cache"
    else:
        run_eval(ck, roots, dest, cfg)
        only, cache = None, dest / "cache"
    model, _, ck_dir, ck_hash = open_checkpoint(ck)
    device = resolve_device(cfg.device)
    model.to(device)
    datasets = [d for d in open_datasets(roots) if only is None or d.name in only]
    tasks = model_tasks(model, datasets, cfg, eval_prompt_sets(cfg.prompts), cache, ck_hash, device)
    return tasks, probes, preprocessing_note(ck_dir, model), ck_hash


def run_side_by_side(
    models: list[Path], roots: list[str], out: Path, cfg: EvalConfig, suite: dict | None = None, log=print
) -> dict:
    """Score ``models`` side by side (``suite``: bench-suite's probe options, or None for eval)."""
    if len(models) < 2:
        raise EvalUsageError(f"--model: give at least two models to compare side by side, got {len(models)}")
    labels = labels_for(models)
    out.mkdir(parents=True, exist_ok=True)
    per_model, probes, notes, hashes = {}, {}, {}, {}
    for ck, lab in zip(models, labels):
        log(f"scoring {lab} ({ck})")
        per_model[lab], pr, notes[lab], hashes[lab] = _score_one(Path(ck), lab, roots, out, cfg, suite, log)
        for ds, v in pr.items():
            probes.setdefault(ds, {})[lab] = v
    result = paired(per_model, labels, cfg)
    md = markdown(result, labels, notes, probes, cfg)
    res = dict(models={lab: str(m) for lab, m in zip(labels, models)}, checkpoint_sha256=hashes, reference=labels[0])
    res |= dict(split=cfg.split, prompts=cfg.prompts, ensemble=cfg.ensemble, preprocessing=notes)
    res |= dict(benchmarks=result, probes=probes)
    for name, text in (("side-by-side.json", strict_json(res)), ("side-by-side.md", md)):
        tmp = out / f".tmp-{name}"
        tmp.write_text(text)
        tmp.replace(out / name)
    plot(result, labels, out / "side-by-side.png", f"{' vs '.join(labels)}: split {cfg.split}, prompts {cfg.prompts}")
    return res


__all__ = ["run_side_by_side", "paired", "model_tasks", "labels_for"]
