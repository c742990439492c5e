"""Few-shot and linear-probe evaluation: k labelled examples per class (seed 002) and 1% / 10% / 100% of
the training split (CXR-CLIP, seed 003), always selected on the **validate** split and reported on **test**.

Splits: a labelled dataset must have train, validate and test rows; otherwise it is a usage error (exit 2)
naming the dataset and the missing split (nothing falls back to other rows).

k-shot sampling (multi-label, documented): for each class independently, k studies labelled 1 and k labelled
0 are drawn from the train split (uncertain and not-mentioned labels are never drawn), seeded by (seed, k,
class). A study drawn for one class keeps its known labels for the others (masked BCE), so the k-shot
training set is the union of the per-class draws.

Modes:
* ``linear`` (k-shot): a linear head on frozen, L2-normalised image embeddings (masked BCE, AdamW,
  ``--lr-linear``), epoch chosen by macro AUROC on validate.
* ``partial`` (k-shot): the last N blocks of the image tower (plus norms and projection) and the head.
* ``--fractions`` (CXR-CLIP's linear probe): a linear head on the frozen image tower's pooled features
  (before the projection, as CXR-CLIP's classifier), trained on a seeded random subset of the train split
  (1%, 10%, 100%; at least one study), AdamW lr 5e-5, weight decay 1e-4, batch 256, cosine schedule with
  0.1 epoch of warm-up, at most 300 epochs for subsets and 30 for 100% (CXR-CLIP's finetune_10/100
  configs), checkpoint with the lowest validate loss (CXR-CLIP's rule).

Early stopping and a cap that does not bind: every linear head stops when its validate criterion has not
improved for ``--patience`` epochs. If the best epoch lies within the last ``patience`` epochs of the cap
(the cap, not the data, ended training), the run is repeated from the same seed with the cap doubled while
the epochs of all its runs stay within ``--max-epochs`` (default MAX_EPOCHS = 1000, the bound on probe time:
about linear in the train rows); each run records ``best_epoch``, ``caps_tried`` and ``cap_binding`` (true
when the bound was reached while still improving: the probe did not converge, and the log says so), so a
binding cap is visible in fewshot.json and fewshot.md.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrprep.shards import ShardDataset
from cxrtrain.evaluate import (
    EvalConfig,
    EvalUsageError,
    _pick_image,
    embed_dataset,
    encode_texts,
    open_checkpoint,
    resolve_device,
    strict_json,
    zero_shot_binary,
)
from cxrtrain.fewshotreport import fewshot_table, plot_fewshot, pm
from cxrtrain.metrics import auroc
from cxrtrain.model import set_trainable
from cxrtrain.transforms import decode_gray, eval_transform, train_transform

# the bound on probe time (issue 20): the epochs one head trains in all, summed over its restarts with a doubled
# cap. A probe whose best epoch still sits at the cap stops doubling here and is reported as not converged
# (cap_binding); its time is then about linear in the train rows (one epoch = one pass over them).
MAX_EPOCHS = 1000


@dataclass(frozen=True)
class FewshotConfig:
    shots: tuple = (1, 2, 4, 8, 16)
    seeds: int = 5
    modes: tuple = ("linear", "partial")
    image_blocks: int = 2  # partial mode: trained blocks of the image tower
    epochs: int = 30  # k-shot: first cap (doubled while binding, up to max_epochs); partial: the cap
    lr_linear: float = 1e-2
    lr_partial: float = 1e-4
    fractions: tuple = (0.01, 0.1, 1.0)
    probe_lr: float = 5e-5
    probe_weight_decay: float = 1e-4
    probe_batch: int = 256
    probe_epochs: int = 300  # subsets (< 100%)
    probe_epochs_full: int = 30  # 100%
    patience: int = 10
    max_epochs: int = MAX_EPOCHS
    prompts: str = "eval"  # a packaged name or a path
    device: str = "auto"

    def __post_init__(self) -> None:
        if not self.shots and not self.fractions:
            raise ValueError("nothing to do: give --shots and/or --fractions")
        if self.shots and min(self.shots) < 1:
            raise ValueError(f"--shots must be positive integers, got {self.shots}")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"--fractions must be in (0, 1] (e.g. 0.01,0.1,1 or 1%,10%,100%), got {self.fractions}")
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {self.seeds}")
        bad = set(self.modes) - {"linear", "partial"}
        if bad:
            raise ValueError(f"--modes may be linear and partial, got {sorted(bad)}")
        for name in ("epochs", "probe_epochs", "probe_epochs_full", "patience", "probe_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_epochs < max(self.epochs, self.probe_epochs, self.probe_epochs_full):
            raise ValueError(
                f"--max-epochs ({self.max_epochs}) must be at least the first caps (--epochs "
                f"{self.epochs}, --probe-epochs {self.probe_epochs}, --probe-epochs-full {self.probe_epochs_full})"
            )
        resolve_device(self.device)


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


def sample_fraction(train_idx: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded random subset of ``train_idx`` with round(fraction * n) studies (at least 1)."""
    n = max(1, int(round(fraction * len(train_idx))))
    rng = np.random.default_rng(np.random.SeedSequence([seed, int(round(fraction * 1e6))]))
    return np.sort(rng.choice(np.asarray(train_idx), size=min(n, len(train_idx)), replace=False))


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


def _train_head_once(
    x_tr,
    y_tr,
    x_va,
    y_va,
    cap: int,
    *,
    lr: float,
    wd: float,
    batch: int,
    patience: int,
    select: str,
    seed: int,
    warmup: float | None,
) -> tuple[torch.nn.Linear, int, int, str]:
    """-> (head at its best validate epoch, best epoch, last epoch run, criterion used)."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(x_tr.shape[1], y_tr.shape[1])
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=wd)
    xt, yt = torch.from_numpy(np.asarray(x_tr, np.float32)), torch.from_numpy(np.asarray(y_tr))
    xv, yv = torch.from_numpy(np.asarray(x_va, np.float32)), torch.from_numpy(np.asarray(y_va))
    spe = max(1, math.ceil(len(xt) / batch))
    total, warm = cap * spe, (max(1, int(round(warmup * spe))) if warmup is not None else 0)

    def factor(st: int) -> float:  # warmup None: constant LR; else warm-up then cosine to 0 at the cap
        if warmup is None:
            return 1.0
        return (st + 1) / warm if st < warm else 0.5 * (1 + math.cos(math.pi * (st - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    g = torch.Generator().manual_seed(seed)
    use = select
    with torch.no_grad():
        if select == "auroc" and np.isnan(_macro(y_va, head(xv).numpy(), list(range(y_va.shape[1])))[0]):
            use = "loss"  # validate has no class with both labels: select on its loss instead
    best, best_state, best_ep, ep = math.inf, None, 0, 0
    for ep in range(1, cap + 1):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            _masked_bce(head(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            out = head(xv)
            crit = (
                float(_masked_bce(out, yv))
                if use == "loss"
                else -_macro(y_va, out.numpy(), list(range(y_va.shape[1])))[0]
            )
        if crit < best:
            best, best_state, best_ep = crit, copy.deepcopy(head.state_dict()), ep
        elif ep - best_ep >= patience:
            break
    head.load_state_dict(best_state)
    return head, best_ep, ep, use


def _not_converged(r: dict, cfg: FewshotConfig) -> str:
    """The warning for a log line when some runs stopped at the epoch bound while still improving."""
    if not r["cap_binding_runs"]:
        return ""
    return (
        f" (CAP BINDING: {r['cap_binding_runs']} run(s) did not converge within --max-epochs {cfg.max_epochs} "
        f"epochs in all; their AUROC is from the last cap)"
    )


def train_head(
    x_tr,
    y_tr,
    x_va,
    y_va,
    *,
    cap: int,
    max_epochs: int,
    patience: int,
    select: str,
    seed: int,
    lr: float,
    wd: float = 1e-4,
    batch: int = 1 << 30,
    warmup: float | None = None,
) -> tuple[torch.nn.Linear, dict]:
    """A linear head with early stopping on validate; the cap is doubled while it binds (see module doc)."""
    caps = []
    while True:
        head, best_ep, last_ep, used = _train_head_once(
            x_tr,
            y_tr,
            x_va,
            y_va,
            cap,
            lr=lr,
            wd=wd,
            batch=batch,
            patience=patience,
            select=select,
            seed=seed,
            warmup=warmup,
        )
        caps.append(cap)
        binding = last_ep == cap and best_ep > cap - patience
        if not binding or sum(caps) + cap * 2 > max_epochs:  # max_epochs bounds the epochs of all restarts
            break
        cap *= 2
    return head, dict(
        best_epoch=best_ep,
        stopped_epoch=last_ep,
        caps_tried=caps,
        cap_binding=binding,
        selected_by=f"validate {'macro AUROC' if used == 'auroc' else 'loss'}",
    )


def partial_finetune(model, imgs_tr, y_tr, imgs_va, y_va, imgs_te, cols, cfg: FewshotConfig, seed: int, device: str):
    torch.manual_seed(seed)
    m = copy.deepcopy(model).to(device)
    set_trainable(m, cfg.image_blocks, 0)
    m.text_tower.requires_grad_(False)
    head = torch.nn.Linear(m.config.embed_dim, y_tr.shape[1]).to(device)
    params = [p for p in m.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr_partial, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    yt = torch.from_numpy(y_tr).to(device)

    def scores(imgs):
        m.eval()
        with torch.no_grad():
            out = [
                head(m.encode_image(torch.stack(imgs[i : i + 64]).to(device))).cpu() for i in range(0, len(imgs), 64)
            ]
        m.train()
        return torch.cat(out).numpy()

    best, best_state, best_ep = -1.0, None, 0
    for ep in range(1, cfg.epochs + 1):
        x = torch.stack([train_transform(g, m.config, rng) for g in imgs_tr]).to(device)
        opt.zero_grad()
        _masked_bce(head(m.encode_image(x)), yt).backward()
        opt.step()
        v = _macro(y_va, scores(imgs_va), list(range(y_va.shape[1])))[0]
        if not np.isnan(v) and v > best:
            best, best_ep = v, ep
            best_state = (copy.deepcopy(m.state_dict()), copy.deepcopy(head.state_dict()))
        elif ep - best_ep >= cfg.patience:
            break
    if best_state is not None:
        m.load_state_dict(best_state[0])
        head.load_state_dict(best_state[1])
    else:  # validate has no class with both labels: nothing to select on, the last epoch is used
        best_ep = ep
    info = dict(
        best_epoch=best_ep,
        stopped_epoch=ep,
        caps_tried=[cfg.epochs],
        cap_binding=ep == cfg.epochs and best_ep > cfg.epochs - cfg.patience,
        selected_by="validate macro AUROC",
    )
    return scores(imgs_te), info


def _load_grays(ds: ShardDataset, ids: set[str]) -> dict[str, np.ndarray]:
    out = {}
    for row in ds.iter_rows(["study_id", "images"]):
        if row["study_id"] in ids and row["images"]:
            out[row["study_id"]] = decode_gray(_pick_image(row["images"])["image"])
    return out


def _summary(runs: list[dict]) -> dict:
    ms = np.array([np.nan if r["macro"] is None else r["macro"] for r in runs], float)
    ok = ~np.isnan(ms)
    out = dict(
        mean=float(ms[ok].mean()) if ok.any() else None,
        std=float(ms[ok].std()) if ok.any() else None,
        seeds_scored=int(ok.sum()),
        cap_binding_runs=sum(bool(r["cap_binding"]) for r in runs),
        runs=runs,
    )
    if not ok.any():
        out["reason"] = "no run had a test class with both labels"
    return out


def _run_record(seed, n_train, info, y_te, s_te, cols_local):
    macro, per = _macro(y_te, s_te, cols_local)
    return dict(
        seed=seed,
        n_train=int(n_train),
        **info,
        macro=None if np.isnan(macro) else macro,
        macro_classes=int(sum(not np.isnan(v) for v in per)),
        per_class=[None if np.isnan(v) else v for v in per],
    )


def run_fewshot(checkpoint, shard_roots: list[str], out: Path, cfg: FewshotConfig, log=print) -> dict:
    from cxrprep.shards import open_datasets
    from cxrprep.text.templates import eval_prompt_sets

    model, _, ck, ck_hash = open_checkpoint(checkpoint)
    device = resolve_device(cfg.device)
    model.to(device)
    out.mkdir(parents=True, exist_ok=True)
    zs_cfg = EvalConfig(prompts=cfg.prompts, bootstrap=0, device=device)  # resolves the prompt file once
    sets = eval_prompt_sets(zs_cfg.prompts_file)["binary"]
    results = dict(
        checkpoint=str(ck),
        checkpoint_sha256=ck_hash,
        config=asdict(cfg) | {"device_used": device},
        selection_split="validate",
        report_split="test",
        datasets={},
    )
    for ds in open_datasets(shard_roots):
        if ds.label_names:
            emb = embed_dataset(model, ds, ck_hash, out / "cache", device=device)
            results["datasets"][ds.name] = _fewshot_dataset(model, ds, emb, cfg, zs_cfg, sets, device, log)
    if not results["datasets"]:
        raise EvalUsageError(f"no labelled dataset under {', '.join(shard_roots)}")
    (out / "fewshot.json").write_text(strict_json(results))
    (out / "fewshot.md").write_text(fewshot_table(results))
    plot_fewshot(results, out / "fewshot.png")
    return results


def _fewshot_dataset(model, ds: ShardDataset, emb: dict, cfg: FewshotConfig, zs_cfg, sets, device, log) -> dict:
    """One labelled dataset: its splits checked, zero-shot for reference, every k-shot mode and probe fraction."""
    y = emb["labels"]
    tr, va, te = (np.where(emb["split"] == s)[0] for s in ("train", "validate", "test"))
    for name, idx in (("train", tr), ("validate", va), ("test", te)):
        if not len(idx):
            raise EvalUsageError(
                f"dataset {ds.name!r} has no {name} rows (few-shot trains on train, selects on "
                f"validate and reports on test); leave it out of the shard arguments"
            )
    cols = [j for j in range(y.shape[1]) if (y[te, j] == 1).any() and (y[te, j] == 0).any()]
    if not cols:
        raise EvalUsageError(f"dataset {ds.name!r}: no label has both positives and negatives in its test split")
    zs = zero_shot_binary(
        emb,
        ds.label_names,
        sets,
        float(model.scale().detach()),
        lambda t: encode_texts(model, t, device=device),
        zs_cfg,
        ds.name,
    )
    d = dict(
        classes=[ds.label_names[j] for j in cols],
        selection_split="validate",
        report_split="test",
        studies=dict(train=len(tr), validate=len(va), test=len(te)),
        zero_shot={c: r["auroc"] for c, r in zs["classes"].items()},
        zero_shot_macro=zs["macro_auroc"],
        zero_shot_macro_classes=zs["macro_classes"],
        shots={},
        linear_probe={},
    )
    grays = (
        _load_grays(ds, set(emb["study_id"][np.concatenate([tr, va, te])]))
        if "partial" in cfg.modes and cfg.shots
        else {}
    )
    for k in cfg.shots:
        for mode in cfg.modes:
            r = _kshot(model, emb, grays, cols, (tr, va, te), k, mode, cfg, device)
            d["shots"].setdefault(str(k), {})[mode] = r
            log(
                f"{ds.name} k={k} {mode}: macro AUROC (test) {pm(r)} over {cfg.seeds} seeds; best epochs "
                f"{[x['best_epoch'] for x in r['runs']]}{_not_converged(r, cfg)}"
            )
    for frac in cfg.fractions:
        key = f"{frac * 100:g}%"
        r = d["linear_probe"][key] = _probe(emb, y[:, cols], (tr, va, te), frac, cfg)
        log(
            f"{ds.name} linear probe {key} of train: macro AUROC (test) {pm(r)}; best epochs "
            f"{[x['best_epoch'] for x in r['runs']]}{_not_converged(r, cfg)}"
        )
    return d


def _kshot(model, emb: dict, grays: dict, cols: list[int], splits, k: int, mode: str, cfg: FewshotConfig, device):
    """``cfg.seeds`` runs of one k-shot mode (a linear head, or partial fine-tuning of the image tower)."""
    tr, va, te = splits
    y = emb["labels"]
    yc = y[:, cols]
    runs, notes = [], set()
    for seed in range(cfg.seeds):
        idx, nt = sample_kshot(yc, tr, k, seed)
        if mode == "partial" and len(idx) < 2:  # batch norm needs two images; draw on every label
            idx = np.union1d(idx, sample_kshot(y, tr, k, seed)[0])
        notes.update(nt)
        if mode == "linear":
            head, info = train_head(
                emb["emb"][idx],
                yc[idx],
                emb["emb"][va],
                yc[va],
                cap=cfg.epochs,
                max_epochs=cfg.max_epochs,
                patience=cfg.patience,
                select="auroc",
                seed=seed,
                lr=cfg.lr_linear,
            )
            with torch.no_grad():
                s_te = head(torch.from_numpy(emb["emb"][te]).float()).numpy()
        else:
            g = lambda ii: [eval_transform(grays[emb["study_id"][i]], model.config) for i in ii]  # noqa: E731, B023 - used at once, in this iteration
            imgs = [grays[emb["study_id"][i]] for i in idx]
            s_te, info = partial_finetune(model, imgs, yc[idx], g(va), yc[va], g(te), cols, cfg, seed, device)
        runs.append(_run_record(seed, len(idx), info, yc[te], s_te, list(range(len(cols)))))
    return _summary(runs) | dict(notes=sorted(notes))


def _probe(emb: dict, yc: np.ndarray, splits, frac: float, cfg: FewshotConfig) -> dict:
    """``cfg.seeds`` linear probes on the frozen pooled features of a ``frac`` subset of the train split."""
    tr, va, te = splits
    cap = cfg.probe_epochs_full if frac >= 1 else cfg.probe_epochs
    runs = []
    for seed in range(cfg.seeds):
        idx = sample_fraction(tr, frac, seed)
        head, info = train_head(
            emb["feat"][idx],
            yc[idx],
            emb["feat"][va],
            yc[va],
            cap=cap,
            max_epochs=cfg.max_epochs,
            patience=cfg.patience,
            select="loss",
            seed=seed,
            lr=cfg.probe_lr,
            wd=cfg.probe_weight_decay,
            batch=cfg.probe_batch,
            warmup=0.1,
        )
        with torch.no_grad():
            s_te = head(torch.from_numpy(emb["feat"][te]).float()).numpy()
        runs.append(_run_record(seed, len(idx), info, yc[te], s_te, list(range(yc.shape[1]))))
    return _summary(runs) | dict(fraction=frac, first_cap=cap)


__all__ = ["FewshotConfig", "run_fewshot", "sample_kshot", "sample_fraction", "train_head"]
