"""``cxrtrain eval --prompts A --prompts B``: the same images scored with each prompt file, compared.

For every dataset, each prompt file is scored exactly as ``cxrtrain eval`` scores it (binary zero-shot
probability softmax(scale * [s_pos, s_neg])[0], multi-class argmax of the class-set scores, on the rows of
``--split``), and ``cxrtrain.compare.paired_bootstrap`` compares each file with the first one on the same
resampled images: delta AUROC per binary class and macro, delta accuracy per multi-class set (micro, per
class, macro). Results go to metrics.json (``prompt_comparison``), a section of metrics.md and
``compare_<dataset>.png`` (forest plot of the deltas).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrprep.labels import canonical
from cxrtrain.compare import accuracy_stat, auroc_stat, forest_plot, paired_bootstrap
from cxrtrain.zeroshot import _binary_targets, find_prompts, set_scores, split_mask


def binary_prob(s_pos: np.ndarray, s_neg: np.ndarray, scale: float) -> np.ndarray:
    """softmax(scale * [s_pos, s_neg])[0], computed as cxrtrain eval computes it."""
    logits = scale * np.stack([s_pos, s_neg], 1)
    logits -= logits.max(1, keepdims=True)
    return np.exp(logits[:, 0]) / np.exp(logits).sum(1)


def _binary_tasks(emb, label_names, named_sets, text_emb, cfg, dataset, scale, scope) -> dict:
    tasks: dict[str, dict] = {}
    for j, name in enumerate(label_names):
        mask, y = _binary_targets(emb["labels"][:, j], cfg.uncertain)
        yy = np.where(mask, y, np.nan)[scope]
        for pname, sets in named_sets.items():
            key = find_prompts(sets["binary"], dataset, name)
            if key is None:
                continue
            pn = sets["binary"][key]
            s_pos = set_scores(emb["emb"], text_emb(pn["positive"]), cfg.ensemble)
            s_neg = set_scores(emb["emb"], text_emb(pn["negative"]), cfg.ensemble)
            tasks.setdefault(f"AUROC {canonical(name)}", {})[pname] = auroc_stat(
                yy, binary_prob(s_pos, s_neg, scale)[scope]
            )
    return tasks


def _multiclass_tasks(emb, label_names, named_sets, text_emb, cfg, dataset, scope) -> tuple[dict, dict]:
    tasks: dict[str, dict] = {}
    macros: dict[str, list[str]] = {}
    canon = [canonical(n) for n in label_names]
    for pname, sets in named_sets.items():
        for set_name, classes in sets["multiclass"].items():
            if not (set_name == dataset or set_name in dataset):
                continue
            names = [c for c in classes if c in canon]
            if len(names) < 2:
                continue
            cols = np.nan_to_num(np.stack([emb["labels"][:, canon.index(c)] for c in names], 1))
            one = ((cols == 1).sum(1) == 1)[scope]
            scores = np.stack([set_scores(emb["emb"], text_emb(classes[c]), cfg.ensemble) for c in names], 1)
            pred, truth = scores.argmax(1)[scope], cols.argmax(1)[scope]
            label = [names[k] for k in truth]
            correct = np.array([names[p] == t for p, t in zip(pred, label)], bool)
            tasks.setdefault(f"accuracy {set_name}", {})[pname] = accuracy_stat(correct, one)
            members = []
            for c in names:
                t = f"accuracy {set_name} / {c}"
                tasks.setdefault(t, {})[pname] = accuracy_stat(correct, one & (np.array(label) == c))
                members.append(t)
            mac = macros.setdefault(f"accuracy {set_name} macro", [])
            mac += [m for m in members if m not in mac]
    return tasks, macros


def compare_dataset(emb, label_names, dataset, named_sets, text_emb, cfg, scale) -> dict | None:
    """Paired comparison of the prompt files in ``named_sets`` (the first is the reference) on one
    dataset's embeddings; None when no task is scored by two files."""
    scope = split_mask(emb, cfg.split)
    tasks = _binary_tasks(emb, label_names, named_sets, text_emb, cfg, dataset, scale, scope)
    mtasks, macros = _multiclass_tasks(emb, label_names, named_sets, text_emb, cfg, dataset, scope)
    tasks = {t: st for t, st in (tasks | mtasks).items() if len(st) >= 2}
    if not tasks:
        return None
    binary = [t for t in tasks if t.startswith("AUROC ")]
    if len(binary) > 1:
        macros = {"AUROC macro": binary} | macros
    ref = next(iter(named_sets))
    res = paired_bootstrap(int(scope.sum()), tasks, ref, max(cfg.bootstrap, 1), cfg.seed, macros)
    res["split"] = cfg.split
    return res


def markdown_section(comparison: dict) -> str:
    lines = ["", "## Prompt sets compared (paired bootstrap over the same images)", ""]
    for ds, res in comparison.items():
        lines += [
            f"**{ds}** ({res['split']} split, {res['n']} images, {res['resamples']} resamples, "
            f"reference: {res['reference']})",
            "",
            "| task | prompts | reference | value | delta [95% CI] | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for task, per in res["tasks"].items():
            for s, r in per.items():
                ci = f" [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]" if r["ci95"] else ""
                d = "n/a" if r["delta"] is None else f"{r['delta']:+.3f}{ci}"
                ref = "n/a" if r["reference_value"] is None else f"{r['reference_value']:.3f}"
                val = "n/a" if r["value"] is None else f"{r['value']:.3f}"
                lines.append(f"| {task} | {s} | {ref} | {val} | {d} | {r['verdict']} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def run_prompt_comparison(checkpoint, shard_roots: list[str], out: Path, cfg, prompt_files: list[str], progress=None):
    """Score every dataset with each prompt file and add ``prompt_comparison`` to OUT/metrics.json and
    OUT/metrics.md (both written by ``run_eval`` for the first file), plus OUT/compare_<dataset>.png."""
    import json

    from cxrprep.shards import open_datasets
    from cxrprep.text.templates import eval_prompt_sets
    from cxrtrain.evaluate import embed_dataset, encode_texts, open_checkpoint, resolve_device, strict_json

    named = {}
    for p in prompt_files:
        named[p] = eval_prompt_sets(p)
    model, _conf, _ck, ck_hash = open_checkpoint(checkpoint)
    device = resolve_device(cfg.device)
    model.to(device)
    scale = float(model.scale().detach())
    cache: dict[str, np.ndarray] = {}

    def text_emb(texts):
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        for t, e in zip(missing, encode_texts(model, missing, device=device) if missing else []):
            cache[t] = e
        return np.stack([cache[t] for t in texts])

    comparison = {}
    for ds in open_datasets(shard_roots):
        if not ds.label_names:
            continue
        emb = embed_dataset(model, ds, ck_hash, out / "cache", cfg.batch_size, device, progress or (lambda it: it))
        if not split_mask(emb, cfg.split).any():
            continue
        res = compare_dataset(emb, ds.label_names, ds.name, named, text_emb, cfg, scale)
        if res:
            comparison[ds.name] = res
            forest_plot(res, out / f"compare_{ds.name}.png", f"{ds.name}: prompt files vs {res['reference']}")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["prompt_comparison"] = dict(files=list(prompt_files), datasets=comparison)
    tmp = out / ".tmp-metrics.json"
    tmp.write_text(strict_json(metrics))
    tmp.replace(out / "metrics.json")
    md = (out / "metrics.md").read_text() + markdown_section(comparison)
    tmp = out / ".tmp-metrics.md"
    tmp.write_text(md)
    tmp.replace(out / "metrics.md")
    return comparison
