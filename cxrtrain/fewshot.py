"""Few-shot evaluation (partial CLIP adaptation, seed 002): k labelled examples per class from train.

Sampling (multi-label, documented): for each class independently, k studies labelled 1 and k labelled 0
are drawn from the train split (uncertain and not-mentioned labels are never drawn), seeded by (seed, k,
class). A study drawn for one class keeps its known labels for the others (masked BCE), so the k-shot
training set is the union of the per-class draws.

Modes:
* ``linear``: a linear head on frozen, L2-normalised image embeddings (masked BCE, AdamW).
* ``partial``: the last N blocks of the image tower (plus norms and projection) and the head are trained.
Both pick their number of epochs by macro AUROC on the **validate** split; the test split is only used for
the reported number (when validate has no class with both labels, the last epoch is used and
``best_epoch`` equals ``epochs``). Results: mean and standard deviation over seeds of per-class and macro AUROC per k,
beside zero-shot AUROC on the same test studies.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


from cxrprep.shards import ShardDataset

from .data import decode_gray, eval_transform, train_transform
from .evaluate import EvalConfig, _pick_image, embed_dataset, encode_texts, file_sha256, zero_shot_binary
from .metrics import auroc
from .model import set_trainable


@dataclass(frozen=True)
class FewshotConfig:
    shots: tuple = (1, 2, 4, 8, 16)
    seeds: int = 5
    modes: tuple = ("linear", "partial")
    image_blocks: int = 2  # partial mode: trained blocks of the image tower
    epochs: int = 30  # maximum; the best epoch is chosen on validate
    lr_linear: float = 1e-2
    lr_partial: float = 1e-4
    prompts: str = "eval"  # a packaged name or a path
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.shots or min(self.shots) < 1:
            raise ValueError(f"--shots must be positive integers, got {self.shots}")
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds}")
        bad = set(self.modes) - {"linear", "partial"}
        if bad:
            raise ValueError(f"--modes may be linear and partial, got {sorted(bad)}")


def sample_kshot(labels: np.ndarray, train_idx: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Union of per-class draws of k positives and k negatives from ``train_idx``; notes on short classes."""
    chosen: set[int] = set()
    notes = []
    for j in range(labels.shape[1]):
        rng = random.Random(f"{seed}:{k}:{j}")
        for v in (1.0, 0.0):
            pool = sorted(int(i) for i in train_idx if labels[i, j] == v)
            take = min(k, len(pool))
            if take < k:
                notes.append(f"class {j}: only {len(pool)} train studies with label {int(v)}")
            chosen.update(rng.sample(pool, take))
    return np.array(sorted(chosen), dtype=np.int64), notes


def _macro(y: np.ndarray, s: np.ndarray, cols: list[int]) -> tuple[float, list[float]]:
    per = []
    for j in cols:
        m = (y[:, j] == 0) | (y[:, j] == 1)
        per.append(auroc(y[m, j], s[m, j]) if m.any() else float("nan"))
    vals = [v for v in per if not np.isnan(v)]
    return (float(np.mean(vals)) if vals else float("nan")), per


def _masked_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    m = (y == 0) | (y == 1)
    return F.binary_cross_entropy_with_logits(logits[m], y[m].float()) if m.any() else logits.sum() * 0


def linear_probe(x_tr, y_tr, x_va, y_va, x_te, cols, cfg: FewshotConfig, seed: int) -> tuple[np.ndarray, int]:
    torch.manual_seed(seed)
    head = torch.nn.Linear(x_tr.shape[1], y_tr.shape[1])
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr_linear, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x_tr).float(), torch.from_numpy(y_tr)
    best, best_state, best_ep = -1.0, None, 0
    for ep in range(1, cfg.epochs + 1):
        opt.zero_grad()
        _masked_bce(head(xt), yt).backward()
        opt.step()
        with torch.no_grad():
            v = _macro(y_va, head(torch.from_numpy(x_va).float()).numpy(), cols)[0]
        if not np.isnan(v) and v > best:
            best, best_state, best_ep = v, copy.deepcopy(head.state_dict()), ep
    if best_state is not None:
        head.load_state_dict(best_state)
    else:  # validate has no class with both labels: nothing to select on, the last epoch is used
        best_ep = cfg.epochs
    with torch.no_grad():
        return head(torch.from_numpy(x_te).float()).numpy(), best_ep


def partial_finetune(model, imgs_tr, y_tr, imgs_va, y_va, imgs_te, cols, cfg: FewshotConfig, seed: int):
    torch.manual_seed(seed)
    m = copy.deepcopy(model).to(cfg.device)
    set_trainable(m, cfg.image_blocks, 0)
    m.text_tower.requires_grad_(False)
    head = torch.nn.Linear(m.config.embed_dim, y_tr.shape[1]).to(cfg.device)
    params = [p for p in m.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr_partial, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    yt = torch.from_numpy(y_tr).to(cfg.device)

    def scores(imgs):
        m.eval()
        with torch.no_grad():
            out = [head(m.encode_image(torch.stack(imgs[i:i + 64]).to(cfg.device))).cpu()
                   for i in range(0, len(imgs), 64)]
        m.train()
        return torch.cat(out).numpy()

    best, best_state, best_ep = -1.0, None, 0
    for ep in range(1, cfg.epochs + 1):
        x = torch.stack([train_transform(g, m.config, rng) for g in imgs_tr]).to(cfg.device)
        opt.zero_grad()
        _masked_bce(head(m.encode_image(x)), yt).backward()
        opt.step()
        v = _macro(y_va, scores(imgs_va), cols)[0]
        if not np.isnan(v) and v > best:
            best, best_ep = v, ep
            best_state = (copy.deepcopy(m.state_dict()), copy.deepcopy(head.state_dict()))
    if best_state is not None:
        m.load_state_dict(best_state[0])
        head.load_state_dict(best_state[1])
    else:  # validate has no class with both labels: nothing to select on, the last epoch is used
        best_ep = cfg.epochs
    return scores(imgs_te), best_ep


def _load_grays(ds: ShardDataset, ids: set[str]) -> dict[str, np.ndarray]:
    out = {}
    for row in ds.iter_rows(["study_id", "images"]):
        if row["study_id"] in ids and row["images"]:
            out[row["study_id"]] = decode_gray(_pick_image(row["images"])["image"])
    return out


def run_fewshot(checkpoint, shard_roots: list[str], out: Path, cfg: FewshotConfig, log=print) -> dict:
    from cxrprep.shards import open_datasets
    from cxrprep.templates import eval_prompt_sets

    from .train import load_checkpoint, resolve_checkpoint

    ck = resolve_checkpoint(checkpoint)
    model, _ = load_checkpoint(ck)
    ck_hash = file_sha256(ck / "model.safetensors")
    out.mkdir(parents=True, exist_ok=True)
    sets = eval_prompt_sets(cfg.prompts)["binary"]
    results = dict(checkpoint=str(ck), checkpoint_sha256=ck_hash, config=asdict(cfg), datasets={})
    for ds in open_datasets(shard_roots):
        if not ds.label_names:
            continue
        emb = embed_dataset(model, ds, ck_hash, out / "cache", device=cfg.device)
        y = emb["labels"]
        split = emb["split"]
        tr, va, te = (np.where(split == s)[0] for s in ("train", "validate", "test"))
        cols = [j for j in range(y.shape[1]) if any(((y[idx, j] == 1).any() and (y[idx, j] == 0).any())
                                                     for idx in (te,))]
        if not len(tr) or not len(va) or not len(te) or not cols:
            log(f"{ds.name}: skipped (needs train, validate and test studies and a class with both labels in test)")
            continue
        zs = zero_shot_binary(emb, ds.label_names, sets, float(model.scale().detach()),
                              lambda t: encode_texts(model, t, device=cfg.device),
                              EvalConfig(prompts=cfg.prompts, bootstrap=1))
        d = dict(classes=[ds.label_names[j] for j in cols],
                 zero_shot={c: r["auroc"] for c, r in zs["classes"].items()}, zero_shot_macro=zs["macro_auroc"],
                 shots={})
        grays = _load_grays(ds, set(emb["study_id"][np.concatenate([tr, va, te])])) if "partial" in cfg.modes else {}
        for k in cfg.shots:
            for mode in cfg.modes:
                runs, notes = [], set()
                for seed in range(cfg.seeds):
                    idx, nt = sample_kshot(y, tr, k, seed)
                    notes.update(nt)
                    if mode == "linear":
                        s_te, ep = linear_probe(emb["emb"][idx], y[idx], emb["emb"][va], y[va], emb["emb"][te],
                                                cols, cfg, seed)
                    else:
                        g = lambda ii: [eval_transform(grays[emb["study_id"][i]], model.config) for i in ii]  # noqa: E731
                        s_te, ep = partial_finetune(model, [grays[emb["study_id"][i]] for i in idx], y[idx], g(va),
                                                    y[va], g(te), cols, cfg, seed)
                    macro, per = _macro(y[te], s_te, cols)
                    runs.append(dict(seed=seed, n_train=int(len(idx)), best_epoch=ep, macro=macro, per_class=per))
                ms = np.array([r["macro"] for r in runs], float)
                d["shots"].setdefault(str(k), {})[mode] = dict(
                    mean=float(np.nanmean(ms)) if not np.isnan(ms).all() else float("nan"),
                    std=float(np.nanstd(ms)) if not np.isnan(ms).all() else float("nan"),
                    runs=runs, notes=sorted(notes))
                log(f"{ds.name} k={k} {mode}: macro AUROC {d['shots'][str(k)][mode]['mean']:.3f} "
                    f"± {d['shots'][str(k)][mode]['std']:.3f} over {cfg.seeds} seeds")
        results["datasets"][ds.name] = d
    (out / "fewshot.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (out / "fewshot.md").write_text(_table(results))
    _plot(results, out / "fewshot.png")
    return results


def _table(res: dict) -> str:
    lines = ["| dataset | k | mode | macro AUROC (mean ± std) | zero-shot macro AUROC |", "|---|---|---|---|---|"]
    for name, d in res["datasets"].items():
        for k, modes in d["shots"].items():
            for mode, r in modes.items():
                lines.append(f"| {name} | {k} | {mode} | {r['mean']:.3f} ± {r['std']:.3f} | {d['zero_shot_macro']:.3f} |")
    return "\n".join(lines) + "\n"


def _plot(res: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, d in res["datasets"].items():
        ks = [int(k) for k in d["shots"]]
        for mode in next(iter(d["shots"].values()), {}):
            m = [d["shots"][str(k)][mode]["mean"] for k in ks]
            s = [d["shots"][str(k)][mode]["std"] for k in ks]
            ax.errorbar(ks, m, yerr=s, marker="o", capsize=3, label=f"{name} {mode}")
        ax.axhline(d["zero_shot_macro"], ls=":", color="gray")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("shots per class")
    ax.set_ylabel("macro AUROC (test)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


__all__ = ["FewshotConfig", "run_fewshot", "sample_kshot"]
