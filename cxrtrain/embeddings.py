"""``cxrtrain eval --save-embeddings``: OUT/embeddings/<dataset>.npz, enough to re-score every number.

One ``.npz`` per dataset (``numpy.load(path)``; strings are unicode arrays, no pickles). Arrays:

=====================  ===========  =======================================================================
name                   shape        meaning
=====================  ===========  =======================================================================
``image_emb``          [N, D] f32   projected, L2-normalised image embedding of each study (the image eval
                                    scores: first PA/AP view, else the first image)
``study_id``           [N] str      the shard's study ids
``split``              [N] str      train / validate / test of each study
``labels``             [N, L] f64   label matrix: 1 positive, 0 negative, -1 uncertain, NaN not mentioned
``label_names``        [L] str      the dataset's label columns, in ``labels`` order
``text_emb``           [P, D] f32   projected, L2-normalised embedding of every zero-shot prompt
``prompt_text``        [P] str      the prompt
``prompt_task``        [P] str      ``binary`` or ``multiclass``
``prompt_label``       [P] str      the label column (of ``label_names``) the prompt scores
``prompt_polarity``    [P] str      ``positive`` / ``negative`` (binary); ``positive`` (multiclass)
``prompt_set``         [P] str      the multi-class set name (e.g. chexpert-5x200); "" for binary
``retrieval_text``     [U] str      the de-duplicated report texts of the scored rows (sorted)
``retrieval_emb``      [U, D] f32   their embeddings
``retrieval_row``      [N] i64      index into ``retrieval_text`` of each study's text; -1 = not scored
``logit_scale``        []  f64      the model's scale (1 / temperature); ``temperature`` = 1 / scale
``scored_split``       []  str      the split every number was computed on (``all`` = every row)
``ensemble``           []  str      ``mean-similarity`` or ``mean-embedding``
``uncertain``          []  str      what -1 labels became: exclude | positive | negative
=====================  ===========  =======================================================================

A prompt listed twice in a set (GLoRIA's Pleural Effusion) is stored twice, so averaging the rows of a
set reproduces its weight. ``rescore(path)`` recomputes from the file alone, with plain numpy: zero-shot
AUROC per label (probability softmax(scale * [s_pos, s_neg])[0]), multi-class accuracy (micro, per class,
macro) and retrieval R@1/5/10 in both directions; tests/test_protocols.py checks it against metrics.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _prompt_rows(label_names, sets, dataset, find_prompts, canonical) -> list[tuple]:
    rows = []
    for name in label_names:
        key = find_prompts(sets["binary"], dataset, name)
        if key is not None:
            for pol in ("positive", "negative"):
                rows += [(p, "binary", name, pol, "") for p in sets["binary"][key][pol]]
    canon = {canonical(n): n for n in label_names}
    for set_name, classes in sets["multiclass"].items():
        if set_name == dataset or set_name in dataset:
            for c, prompts in classes.items():
                if c in canon:
                    rows += [(p, "multiclass", canon[c], "positive", set_name) for p in prompts]
    return rows


def save_embeddings(path: Path, emb: dict, label_names, sets: dict, dataset: str, text_emb, scale: float, cfg, helpers):
    """Write ``path`` (atomically) for one dataset: see the module docstring for the arrays. ``helpers``:
    evaluate's ``(find_prompts, retrieval_text, split_mask)``, so the prompts and texts are evaluate's own."""
    from cxrprep.labels import canonical

    find_prompts, retrieval_text, split_mask = helpers
    rows = _prompt_rows(label_names, sets, dataset, find_prompts, canonical)
    dim = emb["emb"].shape[1] if emb["emb"].ndim == 2 else 0
    scope = split_mask(emb, cfg.split)
    texts = [retrieval_text(str(f), str(i), cfg.text_section) for f, i in zip(emb["findings"], emb["impression"])]
    uniq = sorted({t for t, s in zip(texts, scope) if s and t})
    index = {t: k for k, t in enumerate(uniq)}
    row = np.array([index[t] if s and t else -1 for t, s in zip(texts, scope)], np.int64)
    arrays = dict(
        image_emb=np.asarray(emb["emb"], np.float32),
        study_id=np.asarray(emb["study_id"], str),
        split=np.asarray(emb["split"], str),
        labels=np.asarray(emb["labels"], np.float64),
        label_names=np.array(list(label_names), dtype=str),
        text_emb=text_emb([r[0] for r in rows]).astype(np.float32) if rows else np.zeros((0, dim), np.float32),
        prompt_text=np.array([r[0] for r in rows], dtype=str),
        prompt_task=np.array([r[1] for r in rows], dtype=str),
        prompt_label=np.array([r[2] for r in rows], dtype=str),
        prompt_polarity=np.array([r[3] for r in rows], dtype=str),
        prompt_set=np.array([r[4] for r in rows], dtype=str),
        retrieval_text=np.array(uniq, dtype=str),
        retrieval_emb=text_emb(uniq).astype(np.float32) if uniq else np.zeros((0, dim), np.float32),
        retrieval_row=row,
        logit_scale=np.float64(scale),
        temperature=np.float64(1.0 / scale),
        scored_split=np.array(cfg.split),
        ensemble=np.array(cfg.ensemble),
        uncertain=np.array(cfg.uncertain),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    tmp.replace(path)


# -- re-scoring from the file alone (numpy only) ------------------------------------------------------
def _unit(a):
    a = np.asarray(a, np.float64)
    n = np.linalg.norm(a, axis=-1, keepdims=True)
    return a / np.where(n == 0, 1, n)


def _set_score(img, prompts, ensemble):
    x, p = _unit(img), _unit(prompts)
    return (x @ p.T).mean(1) if ensemble == "mean-similarity" else x @ _unit(p.mean(0))


def _auroc(y, s):
    pos, neg = s[y == 1], s[y == 0]
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def _recall(sim, owners, ks=(1, 5, 10)):
    """R@k: a query hits when one of its own candidates sits in the top k of a stable descending sort,
    i.e. fewer than k candidates score higher or score the same and come earlier."""
    hits = {k: 0 for k in ks}
    for q, own in enumerate(owners):
        best = min(int((sim[q] > sim[q, c]).sum() + (sim[q, :c] == sim[q, c]).sum()) for c in own)
        for k in ks:
            hits[k] += best < k
    return {f"R@{k}": hits[k] / len(owners) for k in ks}


def _rescore_binary(z, scope, sel_prompts) -> dict:
    out = {}
    names = list(z["label_names"])
    for name in dict.fromkeys(z["prompt_label"][sel_prompts]):
        m = sel_prompts & (z["prompt_label"] == name)
        pos = _set_score(z["image_emb"], z["text_emb"][m & (z["prompt_polarity"] == "positive")], str(z["ensemble"]))
        neg = _set_score(z["image_emb"], z["text_emb"][m & (z["prompt_polarity"] == "negative")], str(z["ensemble"]))
        logits = float(z["logit_scale"]) * np.stack([pos, neg], 1)
        logits -= logits.max(1, keepdims=True)
        prob = np.exp(logits[:, 0]) / np.exp(logits).sum(1)
        y = z["labels"][:, names.index(name)].copy()
        pol = str(z["uncertain"])
        if pol != "exclude":
            y[y == -1] = 1 if pol == "positive" else 0
        keep = scope & ((y == 0) | (y == 1))
        out[name] = _auroc(y[keep], prob[keep])
    return out


def _rescore_multiclass(z, scope) -> dict:
    out = {}
    names = list(z["label_names"])
    for set_name in dict.fromkeys(z["prompt_set"][z["prompt_task"] == "multiclass"]):
        m = (z["prompt_task"] == "multiclass") & (z["prompt_set"] == set_name)
        classes = list(dict.fromkeys(z["prompt_label"][m]))
        cols = np.nan_to_num(np.stack([z["labels"][:, names.index(c)] for c in classes], 1))
        one = scope & ((cols == 1).sum(1) == 1)
        scores = np.stack(
            [
                _set_score(z["image_emb"], z["text_emb"][m & (z["prompt_label"] == c)], str(z["ensemble"]))
                for c in classes
            ],
            1,
        )
        pred, truth = scores.argmax(1), cols.argmax(1)
        per = {
            c: float((pred[one & (truth == k)] == k).mean())
            for k, c in enumerate(classes)
            if (one & (truth == k)).any()
        }
        out[set_name] = dict(
            accuracy=float((pred[one] == truth[one]).mean()) if one.any() else None,
            per_class=per,
            macro_accuracy=float(np.mean(list(per.values()))) if per else None,
        )
    return out


def rescore(path: str | Path) -> dict:
    """Every zero-shot number of one dataset from its embeddings.npz alone:
    ``{"binary": {label: auroc}, "multiclass": {set: {...}}, "retrieval": {"image_to_text": {R@k}, ...}}``."""
    z = dict(np.load(path, allow_pickle=False))
    split = str(z["scored_split"])
    scope = np.ones(len(z["split"]), bool) if split == "all" else z["split"] == split
    out = dict(
        binary=_rescore_binary(z, scope, z["prompt_task"] == "binary"),
        multiclass=_rescore_multiclass(z, scope),
    )
    rows = np.flatnonzero(z["retrieval_row"] >= 0)
    if len(rows) >= 2:
        sim = _unit(z["image_emb"][rows]) @ _unit(z["retrieval_emb"]).T
        own = z["retrieval_row"][rows]
        i2t = _recall(sim, [[int(t)] for t in own])
        t2i = _recall(sim.T, [list(np.flatnonzero(own == u)) for u in range(len(z["retrieval_text"]))])
        out["retrieval"] = dict(image_to_text=i2t, text_to_image=t2i)
    return out


__all__ = ["rescore", "save_embeddings"]
