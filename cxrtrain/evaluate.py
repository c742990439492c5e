"""Zero-shot classification, retrieval and the embedding cache behind ``cxrtrain eval``.

Protocol (CXR-CLIP, seed 003, unless an option says otherwise; every choice is recorded in metrics.json):

* **Split** (``--split``, default ``test``): every number is computed on the rows of that split only.
  A dataset with no rows in it is a usage error (exit 2) naming the dataset, the split and ``--split``;
  nothing ever falls back to other splits. ``validate``, ``train`` and ``all`` are explicit choices and
  their name is printed beside every number (console, metrics.md, metrics.json).
* **Image embeddings**: one image per study (the first PA/AP view when there is one, else the first
  image), eval transform, cached as .npz keyed by the weights hash, the shard manifests' part hashes and
  the preprocessing, so a second eval with other prompts does not re-encode images.
* **Prompt ensembles** (``--ensemble``): ``mean-similarity`` (default, CXR-CLIP's evaluator: the score of a
  prompt set is the mean of the cosine similarities between the image and each prompt) or
  ``mean-embedding`` (cosine with the renormalised mean of the prompt embeddings, CLIP's ImageNet recipe).
* **Binary zero-shot** per label column that has a prompt pair (eval file ``binary``; ``DATASET:Class``
  keys scope a pair to one dataset), keyed by the canonical class name (``label`` keeps the dataset's
  spelling): probability = softmax(scale * [s_pos, s_neg])[0]. Labels: 1 positive,
  0 negative; uncertain (-1) follows ``--uncertain``; null (not mentioned) is excluded. AUROC with a
  percentile-bootstrap 95% CI; F1 and MCC at the threshold that maximises F1 on another split (validate
  when scoring test, train when scoring validate; none for train/all). A label column without a prompt
  pair is listed under ``skipped`` with the reason. Undefined values are ``null`` with a ``*_reason``.
* **Multi-class zero-shot** (eval file ``multiclass``, e.g. chexpert-5x200, mimic-5x200): argmax over class
  prompt sets on rows with exactly one positive among the set's classes; accuracy (micro), per-class
  accuracy and their mean (macro, CXR-CLIP's "Accuracy(Macro)").
* **Retrieval** (report datasets): image->text and text->image R@1/5/10; texts are the chosen section
  (``--text``), de-duplicated, so identical reports count as one candidate (as CXR-CLIP).
* **Baseline** (``--baseline untrained``): the same architecture with random weights (seeded) is scored
  on the same rows beside the trained model, so chance-level spread is visible.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cxrprep.labels import canonical
from cxrprep.shards import ShardDataset
from cxrtrain.data import decode_gray, eval_transform
from cxrtrain.metrics import auroc, best_threshold, bootstrap_ci, f1_score, mcc, recall_at_k, roc_curve

SPLITS = ("test", "validate", "train", "all")
TEXT_SECTIONS = ("findings", "impression", "both", "max")  # max: the larger string (CXR-CLIP's Open-I text)
ENSEMBLES = ("mean-similarity", "mean-embedding")
BASELINES = ("none", "untrained")


class EvalUsageError(ValueError):
    """Bad input for an evaluation (wrong split, unreadable checkpoint...): exit code 2."""


@dataclass(frozen=True)
class EvalConfig:
    prompts: str = "eval"  # a packaged name (cxrprep/text/promptfiles.py) or a path
    uncertain: str = "exclude"  # exclude | positive | negative
    text_section: str = "impression"  # findings | impression | both (retrieval texts)
    batch_size: int = 64
    bootstrap: int = 1000
    seed: int = 0
    device: str = "auto"
    split: str = "test"
    ensemble: str = "mean-similarity"
    baseline: str = "none"
    protocol: str = "cxrkit"  # cxrkit | cxr-clip (cxrtrain/protocols.py; recorded in metrics.json)
    f1_rule: str = "threshold"  # threshold (max-F1 on another split) | argmax (CXR-CLIP: s_pos > s_neg)
    save_embeddings: bool = False  # OUT/embeddings/<dataset>.npz (cxrtrain/embeddings.py)

    def __post_init__(self) -> None:
        if self.uncertain not in ("exclude", "positive", "negative"):
            raise ValueError(f"--uncertain must be exclude, positive or negative, got {self.uncertain!r}")
        if self.text_section not in TEXT_SECTIONS:
            raise ValueError(f"--text must be findings, impression, both or max, got {self.text_section!r}")
        if self.split not in SPLITS:
            raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"--ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}")
        if self.f1_rule not in ("threshold", "argmax"):
            raise ValueError(f"F1 rule must be threshold or argmax, got {self.f1_rule!r}")
        if self.protocol not in ("cxrkit", "cxr-clip"):
            raise ValueError(f"--protocol must be cxrkit or cxr-clip, got {self.protocol!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"--baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        if self.bootstrap < 0:
            raise ValueError(f"--bootstrap must be >= 0 resamples (0 = no confidence interval), got {self.bootstrap}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        resolve_device(self.device)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; other values are checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine; use --device auto or cpu")
        return device
    raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 22):
            h.update(b)
    return h.hexdigest()


def strict_json(obj) -> str:
    """JSON text that any strict parser accepts: a non-finite float that slipped through becomes null
    (callers record the reason next to it); ``allow_nan=False`` guards the rest."""

    def clean(o):
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (np.floating, float)):
            return float(o) if math.isfinite(float(o)) else None
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.bool_):
            return bool(o)
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        return o

    return json.dumps(clean(obj), indent=2, allow_nan=False) + "\n"


def _finite(v) -> float | None:
    return float(v) if v is not None and math.isfinite(float(v)) else None


def _pick_image(images: list[dict]) -> dict:
    for im in images:
        if im.get("view") in ("PA", "AP"):
            return im
    return images[0]


def split_mask(emb: dict, split: str) -> np.ndarray:
    return np.ones(len(emb["split"]), bool) if split == "all" else (emb["split"] == split)


def split_counts(emb: dict) -> dict[str, int]:
    vals, counts = np.unique(emb["split"], return_counts=True) if len(emb["split"]) else ([], [])
    return {str(v): int(c) for v, c in zip(vals, counts)}


def check_split(name: str, emb: dict, split: str) -> None:
    """Raise EvalUsageError when ``name`` has no rows in ``split`` (never fall back silently)."""
    if split == "all" or split_mask(emb, split).any():
        return
    present = ", ".join(f"{k} {v}" for k, v in split_counts(emb).items()) or "none"
    others = [s for s in SPLITS if s != split and (s == "all" or s in split_counts(emb))]
    raise EvalUsageError(
        f"dataset {name!r} has no rows in split {split!r} (rows per split: {present}); "
        f"choose another with --split {'|'.join(others)}, or leave this dataset out"
    )


@torch.no_grad()
def encode_texts(model, texts: list[str], batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    out = []
    for i in range(0, len(texts), batch_size):
        tok = {k: v.to(device) for k, v in model.tokenize(texts[i : i + batch_size]).items()}
        out.append(model.encode_text(**tok).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.embed_dim), np.float32)


@torch.no_grad()
def embed_dataset(
    model,
    ds: ShardDataset,
    ck_hash: str,
    cache_dir: Path | None,
    batch_size: int = 64,
    device: str = "cpu",
    progress=lambda it: it,
) -> dict:
    """-> {"study_id", "split", "labels" [N,L] float (nan = null), "emb" [N,D] (projected, L2-normalised),
    "feat" [N,F] (the frozen image tower's pooled features, for linear probes), "findings", "impression"};
    cached by (checkpoint hash, manifest part hashes, image size/normalisation)."""
    key = hashlib.sha256(
        json.dumps(
            ["v2", ck_hash, [p["sha256"] for p in ds.manifest["parts"]], asdict(model.config)], default=list
        ).encode()
    ).hexdigest()[:24]
    cache = cache_dir / f"{ds.name}-{key}.npz" if cache_dir else None
    if cache and cache.exists():
        z = np.load(cache, allow_pickle=False)
        return {k: z[k] for k in z.files} | {"cached": True}
    ids, splits, labels, embs, feats, fnd, imp = [], [], [], [], [], [], []
    buf: list[torch.Tensor] = []

    def flush():
        if buf:
            x = torch.stack(buf).to(device)
            f = model.image_features(x)
            embs.append(torch.nn.functional.normalize(model.image_proj(f), dim=-1).float().cpu().numpy())
            feats.append(f.float().cpu().numpy())
            buf.clear()

    nl = len(ds.label_names)
    for row in progress(ds.iter_rows(["study_id", "split", "labels", "images", "findings", "impression"])):
        if not row["images"]:
            continue
        ids.append(row["study_id"])
        splits.append(row["split"])
        lab = row["labels"] or [None] * nl
        labels.append([np.nan if v is None else float(v) for v in lab])
        fnd.append(row["findings"] or "")
        imp.append(row["impression"] or "")
        buf.append(eval_transform(decode_gray(_pick_image(row["images"])["image"]), model.config))
        if len(buf) >= batch_size:
            flush()
    flush()
    out = dict(
        study_id=np.array(ids, dtype=str),
        split=np.array(splits, dtype=str),
        labels=np.array(labels, np.float64).reshape(len(ids), nl),
        emb=np.concatenate(embs) if embs else np.zeros((0, model.config.embed_dim), np.float32),
        feat=np.concatenate(feats) if feats else np.zeros((0, 0), np.float32),
        findings=np.array(fnd, dtype=str),
        impression=np.array(imp, dtype=str),
    )
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".tmp-{cache.name}")
        with open(tmp, "wb") as f:
            np.savez(f, **out)
        tmp.replace(cache)
    return out | {"cached": False}


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


def _argmax_f1(y: np.ndarray, prob: np.ndarray, reason: str | None) -> dict:
    """CXR-CLIP's F1 rule: positive when the positive prompt wins the pair (probability > 0.5)."""
    if reason:
        return dict(threshold=0.5, threshold_from="argmax", f1=None, mcc=None, f1_reason=reason)
    return dict(threshold=0.5, threshold_from="argmax", f1=f1_score(y, prob > 0.5), mcc=mcc(y, prob > 0.5))


def zero_shot_binary(
    emb: dict, label_names: list[str], sets: dict, scale: float, text_emb, cfg: EvalConfig, dataset: str = ""
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
        if reason:
            r.update(auroc=None, auroc_reason=reason, auroc_ci95=None, auroc_ci95_reason=reason)
        else:
            r["auroc"] = auroc(y[sel], prob[sel])
            if cfg.bootstrap == 0:
                r.update(auroc_ci95=None, auroc_ci95_reason="--bootstrap 0")
            else:
                lo, hi = bootstrap_ci(y[sel], prob[sel], cfg.bootstrap, cfg.seed)
                if math.isfinite(lo):
                    r["auroc_ci95"] = [lo, hi]
                else:
                    r.update(auroc_ci95=None, auroc_ci95_reason="every bootstrap resample had one class only")
        tmask = mask & split_mask(emb, thr_split) if thr_split else None
        if cfg.f1_rule == "argmax":
            r.update(_argmax_f1(y[sel], prob[sel], reason))
        elif thr_split is None:
            r.update(
                threshold=None,
                threshold_from=None,
                f1=None,
                mcc=None,
                f1_reason=f"no held-out split to choose a threshold on when scoring {sp}",
            )
        elif not (tmask.any() and 0 < (y[tmask] == 1).sum() < tmask.sum()):
            r.update(
                threshold=None,
                threshold_from=thr_split,
                f1=None,
                mcc=None,
                f1_reason=f"{thr_split} split has no positives or no negatives for this label",
            )
        elif reason:
            r.update(threshold=None, threshold_from=thr_split, f1=None, mcc=None, f1_reason=reason)
        else:
            t = best_threshold(y[tmask], prob[tmask])
            r.update(
                threshold=t,
                threshold_from=thr_split,
                f1=f1_score(y[sel], prob[sel] >= t),
                mcc=mcc(y[sel], prob[sel] >= t),
            )
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


def retrieval_text(findings: str, impression: str, section: str) -> str:
    """A study's retrieval text: the section asked for, else the other one; ``max`` is max(findings,
    impression) as strings (kakaobrain/cxr-clip datasets/README.md, Open-I)."""
    both = f"{findings} {impression}".strip()
    t = {"findings": findings, "impression": impression, "both": both, "max": max(findings, impression)}[section]
    return t or (impression or findings)


def retrieval(emb: dict, text_emb, section: str, split: str = "all") -> dict:
    """Image->text and text->image R@1/5/10 on the rows of ``split`` (texts de-duplicated)."""
    scope = split_mask(emb, split)
    texts = []
    for f, i in zip(emb["findings"][scope], emb["impression"][scope]):
        t = retrieval_text(str(f), str(i), section)
        texts.append(str(t))
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


_STYLES = ["-", "--", "-.", ":"]
_MARKERS = ["o", "s", "^", "v", "D", "x", "+", "*"]


def plot_rocs(results: dict, png: Path, title: str, baseline: dict | None = None) -> None:
    """One ROC per class; line style, marker and colour all vary so overlapping curves stay visible; the
    legend gives AUROC and n. Untrained-baseline curves (if any) are thin grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 6), dpi=110)
    curves = [(cls, r) for cls, r in results.items() if r.get("_roc")]
    cmap = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    step = min(0.005, 0.03 / max(1, len(curves)))  # identical curves are nudged apart, at most ±0.015
    for k, (cls, r) in enumerate(curves):
        if True:
            off = step * (k - (len(curves) - 1) / 2)
            fpr, tpr = np.asarray(r["_roc"][0]) + off, np.asarray(r["_roc"][1]) + off
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
                label=f"{cls}: {r['auroc']:.3f} (n={r['n']}, pos={r['positives']})",
            )
    for _cls, r in (baseline or {}).items():
        if r.get("_roc"):
            ax.plot(*r["_roc"], color="0.6", lw=0.8, ls=":")
    if baseline:
        ax.plot([], [], color="0.6", lw=0.8, ls=":", label="untrained baseline (all classes)")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(
            fontsize=7,
            loc="lower right",
            title_fontsize=7,
            title=f"class: AUROC (curves offset by up to ±{step * (len(curves) - 1) / 2:.3f} to stay visible)",
        )
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


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
        f"prompt ensemble: {metrics['config']['ensemble']}; prompts: {metrics['config']['prompts']}",
        "",
        head,
        "|---" * (8 if base else 7) + "|",
    ]

    def row(name, split, task, n, pos, metric, value, bval=None):
        lines.append(
            f"| {name} | {split} | {task} | {n} | {pos} | {metric} | {value} |"
            + (f" {bval if bval is not None else ''} |" if base else "")
        )

    for name, d in metrics["datasets"].items():
        bd = (base or {}).get(name, {})
        b = d.get("binary", {})
        for cls, r in b.get("classes", {}).items():
            br = bd.get("binary", {}).get("classes", {}).get(cls)
            row(
                name,
                r["split"],
                cls,
                r["n"],
                r["positives"],
                "AUROC [95% CI]",
                f"{fmt(r['auroc'])}{_ci(r)}" + (f" ({r['auroc_reason']})" if r.get("auroc_reason") else ""),
                f"{fmt(br['auroc'])}{_ci(br)}" if br else None,
            )
            row(
                name,
                r["split"],
                cls,
                r["n"],
                r["positives"],
                f"F1 / MCC (threshold from {r['threshold_from']})",
                f"{fmt(r['f1'])} / {fmt(r['mcc'])}" + (f" ({r['f1_reason']})" if r.get("f1_reason") else ""),
            )
        if b.get("classes"):
            row(
                name,
                b["split"],
                f"macro over {b['macro_classes']} of {b['macro_of']} classes",
                "",
                "",
                "AUROC",
                fmt(b["macro_auroc"]),
                fmt(bd["binary"]["macro_auroc"]) if bd.get("binary") else None,
            )
        for s in b.get("skipped", []):
            row(name, b["split"], s["label"], "", "", "skipped", s["reason"])
        for set_name, r in d.get("multiclass", {}).items():
            br = bd.get("multiclass", {}).get(set_name)
            row(
                name,
                r["split"],
                f"{set_name} ({len(r['classes'])}-way)",
                r["n"],
                "",
                "accuracy (macro)",
                f"{fmt(r['accuracy'])} ({fmt(r['macro_accuracy'])})",
                f"{fmt(br['accuracy'])} ({fmt(br['macro_accuracy'])})" if br else None,
            )
        if d.get("retrieval"):
            r = d["retrieval"]
            br = bd.get("retrieval")
            for direction in ("image_to_text", "text_to_image"):
                row(
                    name,
                    r["split"],
                    f"retrieval {direction.replace('_to_', '->')} ({r['section']})",
                    r["images"],
                    "",
                    "R@1 / R@5 / R@10",
                    " / ".join(fmt(r[direction][k]) for k in ("R@1", "R@5", "R@10")),
                    " / ".join(fmt(br[direction][k]) for k in ("R@1", "R@5", "R@10")) if br else None,
                )
        if d.get("note"):
            row(name, d.get("split", ""), "-", d.get("studies", ""), "", "not evaluated", d["note"])
    return "\n".join(lines) + "\n"


def open_checkpoint(checkpoint: str | Path):
    """(model, config, checkpoint dir, weights sha256); unreadable files are EvalUsageError (exit 2)."""
    from cxrtrain.train import load_checkpoint, resolve_checkpoint

    ck = resolve_checkpoint(checkpoint)
    try:
        model, conf = load_checkpoint(ck)
    except (OSError, json.JSONDecodeError) as e:
        raise EvalUsageError(
            f"{ck}: cannot read the checkpoint ({e}); point at a finished cxrtrain run or checkpoint folder"
        ) from None
    except ValueError as e:  # load_checkpoint: a truncated/corrupt safetensors file, a foreign config.json
        raise EvalUsageError(f"{e}; copy the checkpoint again or use another one") from None
    except Exception as e:  # safetensors raises SafetensorError (not an OSError) for truncated files
        if type(e).__name__ != "SafetensorError":
            raise
        raise EvalUsageError(
            f"{ck / 'model.safetensors'}: not a readable safetensors file ({e}); it is probably "
            f"truncated (an interrupted copy or save): copy it again or use another checkpoint"
        ) from None
    return model, conf, ck, file_sha256(ck / "model.safetensors")


def untrained_like(model, seed: int, ck: Path | None = None):
    """A randomly initialised model of the same architecture (seeded), built from the checkpoint's
    saved tower configs (``ck/towers``) when present; every submodule's parameters are reset."""
    from cxrtrain.model import create_model

    towers = ck / "towers" if ck is not None and (ck / "towers" / "image" / "config.json").exists() else None
    torch.manual_seed(seed)
    m = create_model(model.config, towers_dir=towers)
    for mod in m.modules():
        if hasattr(mod, "reset_parameters") and mod is not m:
            mod.reset_parameters()
    return m.eval()


def _evaluate_model(
    model,
    datasets,
    cfg: EvalConfig,
    sets: dict,
    out: Path,
    ck_hash: str,
    device: str,
    progress,
    checked: bool,
    missing_split: str = "error",
) -> dict:
    scale = float(model.scale().detach())
    text_cache: dict[str, np.ndarray] = {}

    def text_emb(texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in text_cache]
        if missing:
            for t, e in zip(missing, encode_texts(model, missing, device=device)):
                text_cache[t] = e
        return np.stack([text_cache[t] for t in texts])

    result = {}
    for ds in datasets:
        emb = embed_dataset(model, ds, ck_hash, out / "cache", cfg.batch_size, device, progress)
        has_text = bool((emb["findings"] != "").any() or (emb["impression"] != "").any())
        d = dict(
            split=cfg.split,
            manifest_sha256=hashlib.sha256(json.dumps(ds.manifest["parts"]).encode()).hexdigest(),
            studies=int(len(emb["study_id"])),
            rows_per_split=split_counts(emb),
            studies_scored=int(split_mask(emb, cfg.split).sum()),
            embeddings_cached=bool(emb["cached"]),
        )
        if not (ds.label_names or has_text) or not len(emb["study_id"]):
            d["note"] = "no labels and no report text: nothing to evaluate" if len(emb["study_id"]) else "no images"
            result[ds.name] = d
            continue
        if not checked:
            if missing_split == "note" and cfg.split != "all" and not split_mask(emb, cfg.split).any():
                d["note"] = f"no rows in split {cfg.split!r} (rows per split: {split_counts(emb)})"
                result[ds.name] = d
                continue
            check_split(ds.name, emb, cfg.split)
        if ds.label_names:
            d["binary"] = zero_shot_binary(emb, ds.label_names, sets["binary"], scale, text_emb, cfg, ds.name)
            mc = {}
            for set_name, classes in sets["multiclass"].items():
                if set_name == ds.name or set_name in ds.name:
                    r = zero_shot_multiclass(emb, ds.label_names, classes, text_emb, cfg.ensemble, cfg.split)
                    if r:
                        mc[set_name] = r
            if mc:
                d["multiclass"] = mc
        if has_text:
            r = retrieval(emb, text_emb, cfg.text_section, cfg.split)
            if r and cfg.protocol == "cxr-clip":  # Table 3: image->text only
                r.update(rsum=float(sum(r["image_to_text"].values())), rsum_directions=["image_to_text"])
            if r:
                d["retrieval"] = r
        if cfg.save_embeddings:
            from cxrtrain.embeddings import save_embeddings

            helpers = (find_prompts, retrieval_text, split_mask)
            npz = out / "embeddings" / f"{ds.name}.npz"
            save_embeddings(npz, emb, ds.label_names, sets, ds.name, text_emb, scale, cfg, helpers)
            d["embeddings_file"] = f"embeddings/{ds.name}.npz"
        result[ds.name] = d
    return result


def _protocol_record(cfg: EvalConfig) -> dict:
    """metrics.json ``protocol``: the choices in effect and the preset's full list (cxrtrain/protocols.py)."""
    from cxrtrain.protocols import protocol

    return dict(
        split=cfg.split,
        ensemble=cfg.ensemble,
        uncertain=cfg.uncertain,
        threshold_from="argmax" if cfg.f1_rule == "argmax" else _threshold_split(cfg.split),
        retrieval_text=cfg.text_section,
        preset=cfg.protocol,
        f1_rule=cfg.f1_rule,
        choices=protocol(cfg.protocol),
    )


def run_eval(
    checkpoint: str | Path,
    shard_roots: list[str],
    out: Path,
    cfg: EvalConfig,
    progress=lambda it: it,
    only: set[str] | None = None,
    missing_split: str = "error",
) -> dict:
    """Evaluate every dataset under ``shard_roots`` (or those named in ``only``). ``missing_split``:
    ``error`` (a dataset without rows in cfg.split is an EvalUsageError) or ``note`` (recorded, skipped)."""
    from cxrprep.shards import open_datasets
    from cxrprep.text.templates import eval_prompt_sets

    sets = eval_prompt_sets(cfg.prompts)
    model, conf, ck, ck_hash = open_checkpoint(checkpoint)
    device = resolve_device(cfg.device)
    model.to(device)
    datasets = [d for d in open_datasets(shard_roots) if only is None or d.name in only]
    if not datasets and only is None:
        raise EvalUsageError(f"no dataset folders (with manifest.json) under {', '.join(shard_roots)}")
    out.mkdir(parents=True, exist_ok=True)
    from cxrprep.text.promptfiles import resolve_prompt_file

    pfile = resolve_prompt_file(cfg.prompts, "--prompts")
    metrics = dict(
        checkpoint=str(ck),
        checkpoint_sha256=ck_hash,
        config=asdict(cfg) | {"device_used": device},
        prompts_file=str(pfile),
        prompts_sha256=file_sha256(pfile),
        protocol=_protocol_record(cfg),
        prompts=sets,
        model=conf["model"],
        datasets={},
    )
    metrics["datasets"] = _evaluate_model(
        model, datasets, cfg, sets, out, ck_hash, device, progress, False, missing_split
    )
    if cfg.baseline == "untrained":
        base = untrained_like(model, cfg.seed, ck).to(device)
        bd = _evaluate_model(
            base,
            datasets,
            replace(cfg, save_embeddings=False),
            sets,
            out,
            f"untrained-seed{cfg.seed}-{ck_hash}",
            device,
            progress,
            False,
            "note",
        )
        metrics["baseline"] = dict(kind="untrained", seed=cfg.seed, datasets=bd)
    for name, d in metrics["datasets"].items():
        if d.get("binary", {}).get("classes"):
            bcls = metrics.get("baseline", {}).get("datasets", {}).get(name, {}).get("binary", {}).get("classes")
            plot_rocs(
                d["binary"]["classes"],
                out / f"roc_{name}.png",
                f"{name} zero-shot ROC ({cfg.split} split, {cfg.ensemble})",
                bcls,
            )
    for part in (metrics["datasets"], metrics.get("baseline", {}).get("datasets", {})):
        for d in part.values():
            for r in d.get("binary", {}).get("classes", {}).values():
                r.pop("_roc", None)
    tmp = out / ".tmp-metrics.json"
    tmp.write_text(strict_json(metrics))
    tmp.replace(out / "metrics.json")
    tmp = out / ".tmp-metrics.md"
    tmp.write_text(markdown_table(metrics))
    tmp.replace(out / "metrics.md")
    return metrics
