"""Zero-shot classification, retrieval and the embedding cache behind ``cxrtrain eval``.

* Image embeddings: one image per study (the first PA/AP view when there is one, else the first image),
  eval transform, cached as .npz keyed by the checkpoint's weights hash, the shard manifests' part hashes
  and the preprocessing, so a second eval with other prompts does not re-encode images.
* Binary zero-shot per class (eval.yaml ``binary``): positive and negative prompt embeddings averaged per
  set; probability = softmax(scale * [sim_pos, sim_neg])[0]. Labels: 1 positive, 0 negative; uncertain
  (-1) follows ``uncertain`` (exclude | positive | negative; default exclude); null (not mentioned) is
  excluded. AUROC with a bootstrap 95% CI on the test split; F1 and MCC at the threshold that maximises F1
  on the validate split (reported as missing when validate has no positives or negatives).
* Multi-class zero-shot (eval.yaml ``multiclass``, e.g. chexpert-5x200): argmax over class prompt sets on
  rows with exactly one positive among the set's classes; accuracy.
* Retrieval (report datasets): image->text and text->image R@1/5/10 on the test split; texts are the
  chosen section (``text_section``), de-duplicated, so identical reports count as one candidate.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from cxrprep.labels import canonical
from cxrprep.shards import ShardDataset

from .data import decode_gray, eval_transform
from .metrics import auroc, best_threshold, bootstrap_ci, f1_score, mcc, recall_at_k, roc_curve


@dataclass(frozen=True)
class EvalConfig:
    prompts: str = "eval"  # a packaged name (cxrprep/promptfiles.py) or a path
    uncertain: str = "exclude"  # exclude | positive | negative
    text_section: str = "impression"  # findings | impression | both (retrieval texts)
    batch_size: int = 64
    bootstrap: int = 1000
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.uncertain not in ("exclude", "positive", "negative"):
            raise ValueError(f"--uncertain must be exclude, positive or negative, got {self.uncertain!r}")
        if self.text_section not in ("findings", "impression", "both"):
            raise ValueError(f"--text must be findings, impression or both, got {self.text_section!r}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(1 << 22):
            h.update(b)
    return h.hexdigest()


def _pick_image(images: list[dict]) -> dict:
    for im in images:
        if im.get("view") in ("PA", "AP"):
            return im
    return images[0]


@torch.no_grad()
def encode_texts(model, texts: list[str], batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    out = []
    for i in range(0, len(texts), batch_size):
        tok = {k: v.to(device) for k, v in model.tokenize(texts[i:i + batch_size]).items()}
        out.append(model.encode_text(**tok).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.embed_dim), np.float32)


@torch.no_grad()
def embed_dataset(model, ds: ShardDataset, ck_hash: str, cache_dir: Path | None, batch_size: int = 64,
                  device: str = "cpu", progress=lambda it: it) -> dict:
    """-> {"study_id", "split", "labels" [N,L] float (nan = null), "emb" [N,D], "findings", "impression"};
    cached by (checkpoint hash, manifest part hashes, image size/normalisation)."""
    key = hashlib.sha256(json.dumps([ck_hash, [p["sha256"] for p in ds.manifest["parts"]],
                                     asdict(model.config)], default=list).encode()).hexdigest()[:24]
    cache = cache_dir / f"{ds.name}-{key}.npz" if cache_dir else None
    if cache and cache.exists():
        z = np.load(cache, allow_pickle=False)
        return {k: z[k] for k in z.files} | {"cached": True}
    ids, splits, labels, embs, fnd, imp = [], [], [], [], [], []
    buf: list[torch.Tensor] = []

    def flush():
        if buf:
            x = torch.stack(buf).to(device)
            embs.append(model.encode_image(x).float().cpu().numpy())
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
    out = dict(study_id=np.array(ids), split=np.array(splits),
               labels=np.array(labels, np.float64).reshape(len(ids), nl),
               emb=np.concatenate(embs) if embs else np.zeros((0, model.config.embed_dim), np.float32),
               findings=np.array(fnd), impression=np.array(imp))
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".tmp-{cache.name}")
        with open(tmp, "wb") as f:
            np.savez(f, **out)
        tmp.replace(cache)
    return out | {"cached": False}


def _binary_targets(col: np.ndarray, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """-> (mask of rows used, y)."""
    y = col.copy()
    if policy == "positive":
        y[y == -1] = 1
    elif policy == "negative":
        y[y == -1] = 0
    mask = (y == 0) | (y == 1)
    return mask, y


def zero_shot_binary(emb: dict, label_names: list[str], sets: dict, scale: float, text_emb, cfg: EvalConfig) -> dict:
    """Per-class AUROC/CI on test, F1/MCC at the validate-chosen threshold."""
    res = {}
    canon = [canonical(n) for n in label_names]
    for cls, pn in sets.items():
        if cls not in canon:
            continue
        j = canon.index(cls)
        pos = text_emb(pn["positive"]).mean(0)
        neg = text_emb(pn["negative"]).mean(0)
        pos, neg = pos / np.linalg.norm(pos), neg / np.linalg.norm(neg)
        logits = scale * np.stack([emb["emb"] @ pos, emb["emb"] @ neg], 1)
        logits -= logits.max(1, keepdims=True)
        prob = np.exp(logits[:, 0]) / np.exp(logits).sum(1)
        mask, y = _binary_targets(emb["labels"][:, j], cfg.uncertain)
        test = mask & (emb["split"] == "test")
        scope = "test"
        if not test.any():
            test, scope = mask, "all (no test split)"
        val = mask & (emb["split"] == "validate")
        r = dict(n=int(test.sum()), positives=int((y[test] == 1).sum()), scope=scope)
        r["auroc"] = auroc(y[test], prob[test])
        r["auroc_ci95"] = list(bootstrap_ci(y[test], prob[test], cfg.bootstrap, cfg.seed))
        if val.any() and 0 < (y[val] == 1).sum() < val.sum():
            t = best_threshold(y[val], prob[val])
            r.update(threshold=t, threshold_from="validate", f1=f1_score(y[test], prob[test] >= t),
                     mcc=mcc(y[test], prob[test] >= t))
        else:
            r.update(threshold=None, threshold_from="validate split has no positives or no negatives for this class",
                     f1=None, mcc=None)
        r["_roc"] = [a.tolist() for a in roc_curve(y[test], prob[test])] if r["positives"] and r["n"] > r["positives"] else None
        res[cls] = r
    vals = [r["auroc"] for r in res.values() if not np.isnan(r["auroc"])]
    return {"classes": res, "macro_auroc": float(np.mean(vals)) if vals else float("nan")}


def zero_shot_multiclass(emb: dict, label_names: list[str], classes: dict, text_emb) -> dict:
    canon = [canonical(n) for n in label_names]
    names = [c for c in classes if c in canon]
    if len(names) < 2:
        return {}
    cols = np.stack([emb["labels"][:, canon.index(c)] for c in names], 1)
    one = (np.nan_to_num(cols) == 1).sum(1) == 1
    proto = np.stack([(lambda e: e / np.linalg.norm(e))(text_emb(classes[c]).mean(0)) for c in names])
    pred = (emb["emb"] @ proto.T).argmax(1)
    truth = np.nan_to_num(cols).argmax(1)
    return dict(classes=names, n=int(one.sum()),
                accuracy=float((pred[one] == truth[one]).mean()) if one.any() else float("nan"))


def retrieval(emb: dict, text_emb, section: str) -> dict:
    test = emb["split"] == "test"
    if not test.any():
        test = np.ones(len(emb["split"]), bool)
    texts = []
    for f, i in zip(emb["findings"][test], emb["impression"][test]):
        t = {"findings": f, "impression": i, "both": f"{f} {i}".strip()}[section] or (i or f)
        texts.append(t)
    keep = [k for k, t in enumerate(texts) if t]
    if len(keep) < 2:
        return {}
    uniq = sorted(set(texts[k] for k in keep))
    index = {t: n for n, t in enumerate(uniq)}
    img = emb["emb"][test][keep]
    txt = text_emb(uniq)
    sim = img @ txt.T
    i2t = recall_at_k(sim, [{index[texts[k]]} for k in keep])
    owners: dict[int, set[int]] = {}
    for row, k in enumerate(keep):
        owners.setdefault(index[texts[k]], set()).add(row)
    t2i = recall_at_k(sim.T, [owners[n] for n in range(len(uniq))])
    return dict(section=section, images=len(keep), unique_texts=len(uniq), image_to_text=i2t, text_to_image=t2i)


def plot_rocs(results: dict, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for cls, r in results.items():
        if r.get("_roc"):
            fpr, tpr = r["_roc"]
            ax.plot(fpr, tpr, label=f"{cls} ({r['auroc']:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def markdown_table(metrics: dict) -> str:
    lines = ["| dataset | task | metric | value |", "|---|---|---|---|"]

    def fmt(v):
        return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

    for name, d in metrics["datasets"].items():
        for cls, r in d.get("binary", {}).get("classes", {}).items():
            ci = r["auroc_ci95"]
            lines.append(f"| {name} | {cls} (n={r['n']}, pos={r['positives']}) | AUROC [95% CI] | "
                         f"{fmt(r['auroc'])} [{fmt(ci[0])}, {fmt(ci[1])}] |")
            lines.append(f"| {name} | {cls} | F1 / MCC | {fmt(r['f1'])} / {fmt(r['mcc'])} |")
        if d.get("binary", {}).get("classes"):
            lines.append(f"| {name} | macro | AUROC | {fmt(d['binary']['macro_auroc'])} |")
        for set_name, r in d.get("multiclass", {}).items():
            lines.append(f"| {name} | {set_name} (n={r['n']}) | accuracy | {fmt(r['accuracy'])} |")
        if d.get("retrieval"):
            r = d["retrieval"]
            for direction in ("image_to_text", "text_to_image"):
                lines.append(f"| {name} | retrieval {direction} ({r['section']}) | R@1/5/10 | "
                             + " / ".join(fmt(r[direction][k]) for k in ("R@1", "R@5", "R@10")) + " |")
    return "\n".join(lines) + "\n"


def run_eval(checkpoint: str | Path, shard_roots: list[str], out: Path, cfg: EvalConfig, progress=lambda it: it) -> dict:
    from cxrprep.shards import open_datasets
    from cxrprep.templates import eval_prompt_sets

    from .train import load_checkpoint, resolve_checkpoint

    sets = eval_prompt_sets(cfg.prompts)
    ck = resolve_checkpoint(checkpoint)
    model, conf = load_checkpoint(ck)
    model.to(cfg.device)
    ck_hash = file_sha256(ck / "model.safetensors")
    out.mkdir(parents=True, exist_ok=True)
    scale = float(model.scale().detach())
    text_cache: dict[str, np.ndarray] = {}

    def text_emb(texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in text_cache]
        if missing:
            for t, e in zip(missing, encode_texts(model, missing, device=cfg.device)):
                text_cache[t] = e
        return np.stack([text_cache[t] for t in texts])

    metrics = dict(checkpoint=str(ck), checkpoint_sha256=ck_hash, config=asdict(cfg), prompts=sets,
                   model=conf["model"], datasets={})
    for ds in open_datasets(shard_roots):
        emb = embed_dataset(model, ds, ck_hash, out / "cache", cfg.batch_size, cfg.device, progress)
        d = dict(manifest_sha256=hashlib.sha256(json.dumps(ds.manifest["parts"]).encode()).hexdigest(),
                 studies=int(len(emb["study_id"])), embeddings_cached=bool(emb["cached"]))
        if ds.label_names and len(emb["study_id"]):
            b = zero_shot_binary(emb, ds.label_names, sets["binary"], scale, text_emb, cfg)
            if b["classes"]:
                d["binary"] = b
                plot_rocs(b["classes"], out / f"roc_{ds.name}.png", f"{ds.name} zero-shot ROC")
            mc = {}
            for set_name, classes in sets["multiclass"].items():
                if set_name == ds.name or set_name in ds.name:
                    r = zero_shot_multiclass(emb, ds.label_names, classes, text_emb)
                    if r:
                        mc[set_name] = r
            if mc:
                d["multiclass"] = mc
        if (emb["findings"] != "").any() or (emb["impression"] != "").any():
            r = retrieval(emb, text_emb, cfg.text_section)
            if r:
                d["retrieval"] = r
        metrics["datasets"][ds.name] = d
    for d in metrics["datasets"].values():
        for r in d.get("binary", {}).get("classes", {}).values():
            r.pop("_roc", None)
    tmp = out / ".tmp-metrics.json"
    tmp.write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    tmp.replace(out / "metrics.json")
    (out / "metrics.md").write_text(markdown_table(metrics))
    return metrics
