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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cxrprep.shards import ShardDataset
from cxrtrain.evalreport import fmt, markdown_table, plot_rocs  # noqa: F401  (fmt: kept importable from here)
from cxrtrain.transforms import decode_gray, eval_transform
from cxrtrain.zeroshot import (  # noqa: F401  (set_scores, find_prompts: kept importable from here)
    ENSEMBLES,
    TEXT_SECTIONS,
    _threshold_split,
    find_prompts,
    retrieval,
    retrieval_text,
    set_scores,
    split_counts,
    split_mask,
    zero_shot_binary,
    zero_shot_multiclass,
)

SPLITS = ("test", "validate", "train", "all")
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
    # ``prompts`` resolved to its file, once (the CLI's --prompts callback has checked it already); not a choice
    # of its own, so it is left out of metrics.json's config (its path and sha256 are recorded beside it)
    prompts_file: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.uncertain not in ("exclude", "positive", "negative"):
            raise ValueError(f"--uncertain must be exclude, positive or negative, got {self.uncertain!r}")
        if self.text_section not in TEXT_SECTIONS:
            raise ValueError(f"--text must be findings, impression, both or max, got {self.text_section!r}")
        if self.f1_rule not in ("threshold", "argmax"):
            raise ValueError(f"F1 rule must be threshold or argmax, got {self.f1_rule!r}")
        if self.protocol not in ("cxrkit", "cxr-clip"):
            raise ValueError(f"--protocol must be cxrkit or cxr-clip, got {self.protocol!r}")
        if self.split not in SPLITS:
            raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"--ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"--baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        if self.bootstrap < 0:
            raise ValueError(f"--bootstrap must be >= 0 resamples (0 = no confidence interval), got {self.bootstrap}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        resolve_device(self.device)
        if self.prompts_file is None:
            from cxrprep.text.promptfiles import resolve_prompt_file

            object.__setattr__(self, "prompts_file", resolve_prompt_file(self.prompts, "--prompts"))


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


def _pick_image(images: list[dict]) -> dict:
    for im in images:
        if im.get("view") in ("PA", "AP"):
            return im
    return images[0]


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


def open_checkpoint(checkpoint: str | Path):
    """(model, config, checkpoint dir, weights sha256); unreadable files are EvalUsageError (exit 2)."""
    from cxrtrain.checkpoint import load_checkpoint, resolve_checkpoint

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
    log=print,
) -> dict:
    """Evaluate every dataset under ``shard_roots`` (or those named in ``only``). A dataset whose manifest
    counts no rows in cfg.split is skipped before any embedding, with one ``log`` line (and a note in
    metrics.json); nothing left to score is an EvalUsageError. ``missing_split`` (for manifests without
    split counts): ``error`` (EvalUsageError) or ``note`` (recorded, skipped)."""
    from cxrprep.shards import open_datasets
    from cxrprep.text.templates import eval_prompt_sets
    from cxrtrain.splitskip import drop_missing_split

    sets = eval_prompt_sets(cfg.prompts_file)
    model, conf, ck, ck_hash = open_checkpoint(checkpoint)
    device = resolve_device(cfg.device)
    model.to(device)
    datasets = [d for d in open_datasets(shard_roots) if only is None or d.name in only]
    if not datasets and only is None:
        raise EvalUsageError(f"no dataset folders (with manifest.json) under {', '.join(shard_roots)}")
    datasets, skipped = drop_missing_split(datasets, cfg.split, log)
    if skipped and not datasets:
        raise EvalUsageError(
            f"nothing to score: no dataset under {', '.join(shard_roots)} has rows in split {cfg.split!r}; "
            f"choose another with --split test|validate|train|all"
        )
    out.mkdir(parents=True, exist_ok=True)
    pfile = cfg.prompts_file
    metrics = dict(
        checkpoint=str(ck),
        checkpoint_sha256=ck_hash,
        config={k: v for k, v in asdict(cfg).items() if k != "prompts_file"} | {"device_used": device},
        prompts_file=str(pfile),
        prompts_sha256=file_sha256(pfile),
        protocol=_protocol_record(cfg),
        prompts=sets,
        model=conf["model"],
        datasets={},
    )
    metrics["datasets"] = _evaluate_model(
        model, datasets, cfg, sets, out, ck_hash, device, progress, False, missing_split
    ) | {name: dict(split=cfg.split, studies_scored=0, note=note) for name, note in skipped.items()}
    if cfg.baseline == "untrained":
        base = untrained_like(model, cfg.seed, ck).to(device)
        bcfg = replace(cfg, save_embeddings=False)
        bd = _evaluate_model(
            base, datasets, bcfg, sets, out, f"untrained-seed{cfg.seed}-{ck_hash}", device, progress, False, "note"
        )
        metrics["baseline"] = dict(kind="untrained", seed=cfg.seed, datasets=bd)
    for name, d in metrics["datasets"].items():
        if d.get("binary", {}).get("classes"):
            bcls = metrics.get("baseline", {}).get("datasets", {}).get(name, {}).get("binary", {}).get("classes")
            title = f"{name} zero-shot ROC ({cfg.split} split, {cfg.ensemble})"
            if not plot_rocs(d["binary"]["classes"], out / f"roc_{name}.png", title, bcls):
                log(f"no ROC plot for {name}: no class has both positives and negatives in split {cfg.split!r}")
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
