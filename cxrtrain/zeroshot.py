"""The scores behind ``cxrtrain eval`` (the protocol is described in evaluate.py): prompt-set scores, binary
zero-shot AUROC/F1/MCC per label, multi-class zero-shot accuracy and image<->text retrieval recall, each on the
rows of one split."""

from __future__ import annotations

import math

import numpy as np

from cxrprep.labels import canonical
from cxrtrain.metrics import auroc, best_threshold, bootstrap_ci, f1_score, mcc, recall_at_k, roc_curve

ENSEMBLES = ("mean-similarity", "mean-embedding")
# ``cfg`` below is an evaluate.EvalConfig (not imported: evaluate imports this module)


def split_mask(emb: dict, split: str) -> np.ndarray:
    return np.ones(len(emb["split"]), bool) if split == "all" else (emb["split"] == split)


def split_counts(emb: dict) -> dict[str, int]:
    vals, counts = np.unique(emb["split"], return_counts=True) if len(emb["split"]) else ([], [])
    return {str(v): int(c) for v, c in zip(vals, counts)}


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.where(n == 0, 1, n)


def set_scores(img: np.ndarray, prompt_emb: np.ndarray, ensemble: str) -> np.ndarray:
    """Score of each image against one prompt set ([K, D] embeddings) -> [N].

    ``mean-similarity``: mean over prompts of cos(image, prompt) (CXR-CLIP's evaluator);
    ``mean-embedding``: cos(image, normalised mean of the prompt embeddings)."""
    x, p = _unit(img), _unit(prompt_emb)
    if ensemble == "mean-similarity":
        return (x @ p.T).mean(1)
    if ensemble == "mean-embedding":
        return x @ _unit(p.mean(0))
    raise ValueError(f"--ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")


def find_prompts(sets: dict, dataset: str, label: str) -> str | None:
    """The key of ``sets`` that serves ``label`` of ``dataset``: ``DATASET:Label``, the label, its
    canonical name, then a case-insensitive match (VinDr's 'Pleural effusion' -> 'Pleural Effusion')."""
    for k in (f"{dataset}:{label}", label, canonical(label), f"{dataset}:{canonical(label)}"):
        if k in sets:
            return k
    low = {k.casefold(): k for k in sets if ":" not in k}
    return low.get(label.casefold()) or low.get(canonical(label).casefold())


def _binary_targets(col: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """-> (mask of rows used, y)."""
    y = col.copy()
    if policy == "positive":
        y[y == -1] = 1
    elif policy == "negative":
        y[y == -1] = 0
    mask = (y == 0) | (y == 1)
    return mask, y


def _threshold_split(split: str) -> str | None:
    return {"test": "validate", "validate": "train"}.get(split)


def _auroc_part(y: np.ndarray, prob: np.ndarray, reason: str | None, cfg) -> dict:
    """AUROC and its bootstrap 95% CI on the scored rows, or null with the reason."""
    if reason:
        return dict(auroc=None, auroc_reason=reason, auroc_ci95=None, auroc_ci95_reason=reason)
    r = dict(auroc=auroc(y, prob))
    if cfg.bootstrap == 0:
        return r | dict(auroc_ci95=None, auroc_ci95_reason="--bootstrap 0")
    lo, hi = bootstrap_ci(y, prob, cfg.bootstrap, cfg.seed)
    if math.isfinite(lo):
        return r | dict(auroc_ci95=[lo, hi])
    return r | dict(auroc_ci95=None, auroc_ci95_reason="every bootstrap resample had one class only")


def _no_f1(threshold: float | None, threshold_from: str | None, reason: str) -> dict:
    """The F1/MCC part of a label that has no F1: null scores and the reason."""
    return dict(threshold=threshold, threshold_from=threshold_from, f1=None, mcc=None, f1_reason=reason)


def _threshold_part(
    y: np.ndarray, prob: np.ndarray, sel: np.ndarray, tmask, reason: str | None, thr_split: str | None, sp: str
) -> dict:
    """F1 and MCC on the scored rows ``sel`` at the threshold that maximises F1 on ``thr_split`` (rows ``tmask``),
    or null with the reason."""
    if thr_split is None:
        return _no_f1(None, None, f"no held-out split to choose a threshold on when scoring {sp}")
    if not (tmask.any() and 0 < (y[tmask] == 1).sum() < tmask.sum()):
        return _no_f1(None, thr_split, f"{thr_split} split has no positives or no negatives for this label")
    if reason:
        return _no_f1(None, thr_split, reason)
    t = best_threshold(y[tmask], prob[tmask])
    return dict(
        threshold=t, threshold_from=thr_split, f1=f1_score(y[sel], prob[sel] >= t), mcc=mcc(y[sel], prob[sel] >= t)
    )


def _argmax_f1(y: np.ndarray, prob: np.ndarray, reason: str | None) -> dict:
    """CXR-CLIP's F1 rule: positive when the positive prompt wins the pair (probability > 0.5)."""
    if reason:
        return _no_f1(0.5, "argmax", reason)
    return dict(threshold=0.5, threshold_from="argmax", f1=f1_score(y, prob > 0.5), mcc=mcc(y, prob > 0.5))


def zero_shot_binary(
    emb: dict, label_names: list[str], sets: dict, scale: float, text_emb, cfg, dataset: str = ""
) -> dict:
    """Per-label AUROC (+CI) on ``cfg.split``; F1/MCC at a threshold chosen on another split; skipped labels
    with reasons; a macro AUROC that says how many classes went in."""
    res, skipped = {}, []
    scope = split_mask(emb, cfg.split)
    thr_split = _threshold_split(cfg.split)
    sp = cfg.split
    for j, name in enumerate(label_names):
        key = find_prompts(sets, dataset, name)
        if key is None:
            skipped.append(dict(label=name, reason=f"no binary prompt pair for {name!r} in {cfg.prompts}"))
            continue
        pn = sets[key]
        s_pos = set_scores(emb["emb"], text_emb(pn["positive"]), cfg.ensemble)
        s_neg = set_scores(emb["emb"], text_emb(pn["negative"]), cfg.ensemble)
        logits = scale * np.stack([s_pos, s_neg], 1)
        logits -= logits.max(1, keepdims=True)
        prob = np.exp(logits[:, 0]) / np.exp(logits).sum(1)
        mask, y = _binary_targets(emb["labels"][:, j], cfg.uncertain)
        sel = mask & scope
        npos = int((y[sel] == 1).sum())
        r = dict(label=name, prompts=key, split=sp, n=int(sel.sum()), positives=npos, negatives=int(sel.sum()) - npos)
        reason = (
            f"no labelled rows in {sp}"
            if not sel.any()
            else f"no positives in {sp}"
            if npos == 0
            else f"no negatives in {sp}"
            if npos == sel.sum()
            else None
        )
        r.update(_auroc_part(y[sel], prob[sel], reason, cfg))
        tmask = mask & split_mask(emb, thr_split) if thr_split else None
        if getattr(cfg, "f1_rule", "threshold") == "argmax":
            r.update(_argmax_f1(y[sel], prob[sel], reason))
        else:
            r.update(_threshold_part(y, prob, sel, tmask, reason, thr_split, sp))
        r["_roc"] = [a.tolist() for a in roc_curve(y[sel], prob[sel])] if r["auroc"] is not None else None
        res[canonical(name)] = (
            r  # keyed by the canonical class name (Effusion -> Pleural Effusion); "label" keeps the spelling
        )
    vals = [r["auroc"] for r in res.values() if r["auroc"] is not None]
    out = dict(
        split=sp,
        ensemble=cfg.ensemble,
        classes=res,
        skipped=skipped,
        macro_auroc=float(np.mean(vals)) if vals else None,
        macro_classes=len(vals),
        macro_of=len(res),
    )
    if not vals:
        out["macro_auroc_reason"] = f"no class has both positives and negatives in {sp}"
    return out


def zero_shot_multiclass(
    emb: dict, label_names: list[str], classes: dict, text_emb, ensemble: str = "mean-similarity", split: str = "all"
) -> dict:
    """Argmax over class prompt sets on the rows of ``split`` with exactly one positive among the set's
    classes (CheXpert/MIMIC 5x200). Accuracy (micro), per-class accuracy and their mean (macro)."""
    canon = [canonical(n) for n in label_names]
    names = [c for c in classes if c in canon]
    if len(names) < 2:
        return {}
    cols = np.stack([emb["labels"][:, canon.index(c)] for c in names], 1)
    one = ((np.nan_to_num(cols) == 1).sum(1) == 1) & split_mask(emb, split)
    scores = np.stack([set_scores(emb["emb"], text_emb(classes[c]), ensemble) for c in names], 1)
    pred = scores.argmax(1)
    truth = np.nan_to_num(cols).argmax(1)
    per = {}
    for k, c in enumerate(names):
        m = one & (truth == k)
        per[c] = dict(n=int(m.sum()), accuracy=float((pred[m] == k).mean()) if m.any() else None)
    r = dict(
        split=split,
        ensemble=ensemble,
        classes=names,
        n=int(one.sum()),
        prompts_per_class={c: len(classes[c]) for c in names},
        per_class=per,
    )
    if one.any():
        accs = [v["accuracy"] for v in per.values() if v["accuracy"] is not None]
        r.update(
            accuracy=float((pred[one] == truth[one]).mean()),
            macro_accuracy=float(np.mean(accs)),
            macro_classes=len(accs),
        )
    else:
        r.update(
            accuracy=None,
            macro_accuracy=None,
            macro_classes=0,
            accuracy_reason=f"no row in {split} has exactly one positive among {names}",
        )
    return r


TEXT_SECTIONS = ("findings", "impression", "both", "max")  # max: the larger string (CXR-CLIP's Open-I text)


def retrieval_text(findings: str, impression: str, section: str) -> str:
    """A study's retrieval text: the section asked for, else the other one; ``max`` is max(findings,
    impression) as strings (kakaobrain/cxr-clip datasets/README.md, Open-I)."""
    both = f"{findings} {impression}".strip()
    t = {"findings": findings, "impression": impression, "both": both, "max": max(findings, impression)}[section]
    return t or (impression or findings)


def retrieval(emb: dict, text_emb, section: str, split: str = "all") -> dict:
    """Image->text and text->image R@1/5/10 on the rows of ``split`` (texts de-duplicated)."""
    scope = split_mask(emb, split)
    texts = [retrieval_text(str(f), str(i), section) for f, i in zip(emb["findings"][scope], emb["impression"][scope])]
    keep = [k for k, t in enumerate(texts) if t]
    if len(keep) < 2:
        return {}
    uniq = sorted(set(texts[k] for k in keep))
    index = {t: n for n, t in enumerate(uniq)}
    img = _unit(emb["emb"][scope][keep])
    txt = _unit(text_emb(uniq))
    sim = img @ txt.T
    i2t = recall_at_k(sim, [{index[texts[k]]} for k in keep])
    owners: dict[int, set[int]] = {}
    for row, k in enumerate(keep):
        owners.setdefault(index[texts[k]], set()).add(row)
    t2i = recall_at_k(sim.T, [owners[n] for n in range(len(uniq))])
    return dict(
        split=split,
        section=section,
        images=len(keep),
        unique_texts=len(uniq),
        image_to_text=i2t,
        text_to_image=t2i,
        rsum=float(sum(i2t.values()) + sum(t2i.values())),
    )
