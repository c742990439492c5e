"""CXR-CLIP's 10% / 100% linear probe, as its configs run it (``--protocol cxr-clip``).

Recipe (kakaobrain/cxr-clip at ``protocols.CXR_CLIP_COMMIT``; the values live in ``protocols.PROTOCOLS``):

* a linear head on the **frozen** image encoder's pooled features (the encoder stays in eval mode;
  cxrclip/model/image_classification.py), fed **augmented** training images every epoch (cxrkit's
  training transform: resized crop scale 0.8-1.1, brightness/contrast jitter);
* one subset per fraction: ``DataFrame.sample(frac, random_state=1)`` of the training rows (in shard
  order) for 10%, all rows for 100% (image_classification.py);
* BCE-with-logits over the label columns, uncertain -> 0 (cxrclip/loss/classification.py), no mask;
* AdamW lr 5e-5, weight decay 1e-4, batch 256 with ``drop_last`` (the batch shrinks to the subset when the
  subset is smaller, else a tiny dataset would take no step), seed 1234;
* a **fixed** number of epochs (300 for 10%, 30 for 100%), LR warm-up over ceil(10%) of all steps then
  cos^2 decay, stepped after every batch (protocols.probe_lr_schedule);
* the head of the epoch with the lowest validate loss is scored on test (AUROC per class, mean).

The learning rate of every step is returned (``lrs``), so a run can be checked against the schedule.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cxrprep.shards import ShardDataset
from cxrtrain.compare import fast_auroc
from cxrtrain.protocols import PROTOCOLS, VINDR_18, lr_lambda, pandas_sample
from cxrtrain.transforms import decode_gray, eval_transform, train_transform


def _rows(ds: ShardDataset, cols: list[int]) -> dict[str, list]:
    from cxrtrain.evaluate import _pick_image

    out: dict[str, list] = {"train": [], "validate": [], "test": []}
    for row in ds.iter_rows(["split", "labels", "images"]):
        if row["images"] and row["split"] in out:
            lab = [row["labels"][j] if row["labels"] else None for j in cols]
            y = [1.0 if v == 1 else 0.0 for v in lab]  # uncertain and null -> 0, as CXR-CLIP's loss
            out[row["split"]].append((decode_gray(_pick_image(row["images"])["image"]), y))
    return out


def probe_columns(ds: ShardDataset) -> list[int]:
    """The label columns the probe trains: VinDr's 18 classes of CXR-CLIP, else every column."""
    if ds.name == "vindr-cxr":
        low = [n.casefold() for n in ds.label_names]
        return [low.index(c.casefold()) for c in VINDR_18 if c.casefold() in low]
    return list(range(len(ds.label_names)))


@torch.no_grad()
def _features(model, grays, cfg, device, rng=None, batch=64) -> torch.Tensor:
    out = []
    for i in range(0, len(grays), batch):
        xs = [train_transform(g, cfg, rng) if rng is not None else eval_transform(g, cfg) for g in grays[i : i + batch]]
        out.append(model.image_features(torch.stack(xs).to(device)).float())
    return torch.cat(out)


def _check(rows: dict, name: str) -> None:
    from cxrtrain.evaluate import EvalUsageError

    missing = [s for s in ("train", "validate", "test") if not rows[s]]
    if missing:
        raise EvalUsageError(f"dataset {name!r} has no {', '.join(missing)} rows: the CXR-CLIP probe needs all three")


def run_cxr_clip_probe(
    model, ds: ShardDataset, fraction: float, device: str = "cpu", epochs: int | None = None
) -> dict:
    """Train and score one probe; -> {fraction, epochs, steps, warmup_steps, lrs, best_epoch, auroc, ...}."""
    recipe = PROTOCOLS["cxr-clip"]["probe"]
    cols = probe_columns(ds)
    rows = _rows(ds, cols)
    _check(rows, ds.name)
    train = rows["train"]
    if fraction < 1.0:
        train = [train[p] for p in pandas_sample(len(train), fraction, 1)] or train[:1]
    epochs = epochs or recipe["epochs"][0.1 if fraction < 1.0 else 1.0]
    bs = min(recipe["batch_size"], len(train))
    steps_per_epoch = len(train) // bs  # drop_last
    torch.manual_seed(recipe["seed"])
    rng = np.random.default_rng(recipe["seed"])
    model.eval().to(device)
    y_tr = torch.tensor([y for _, y in train], dtype=torch.float32)
    f_va = _features(model, [g for g, _ in rows["validate"]], model.config, device)
    y_va = torch.tensor([y for _, y in rows["validate"]], dtype=torch.float32)
    head = torch.nn.Linear(f_va.shape[1], len(cols)).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps_per_epoch, epochs, recipe["warmup_fraction"]))
    lrs, best = [], (float("inf"), -1, None)
    gen = torch.Generator().manual_seed(recipe["seed"])
    for epoch in range(epochs):
        order = torch.randperm(len(train), generator=gen)[: steps_per_epoch * bs]
        feats = _features(model, [train[int(i)][0] for i in order], model.config, device, rng)
        head.train()
        for s in range(steps_per_epoch):
            sl = slice(s * bs, (s + 1) * bs)
            loss = F.binary_cross_entropy_with_logits(head(feats[sl]), y_tr[order[sl]].to(device))
            lrs.append(opt.param_groups[0]["lr"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            vloss = float(F.binary_cross_entropy_with_logits(head(f_va), y_va.to(device)))
        if vloss < best[0]:
            best = (vloss, epoch, {k: v.detach().clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[2])
    return _score(
        model,
        head,
        rows["test"],
        cols,
        ds,
        dict(
            fraction=fraction,
            train_rows=len(train),
            epochs=epochs,
            batch_size=bs,
            steps=len(lrs),
            warmup_steps=int(np.ceil(recipe["warmup_fraction"] * steps_per_epoch * epochs)),
            lrs=lrs,
            best_epoch=best[1],
            best_validate_loss=best[0],
        ),
        device,
    )


@torch.no_grad()
def _score(model, head, test, cols, ds, rec: dict, device: str) -> dict:
    s = torch.sigmoid(head(_features(model, [g for g, _ in test], model.config, device))).cpu().numpy()
    y = np.array([y for _, y in test])
    per = {ds.label_names[j]: fast_auroc(y[:, k] == 1, s[:, k]) for k, j in enumerate(cols)}
    vals = [v for v in per.values() if np.isfinite(v)]
    rec.update(
        classes=[ds.label_names[j] for j in cols],
        auroc={k: (v if np.isfinite(v) else None) for k, v in per.items()},
        mean=float(np.mean(vals)) if vals else None,
        mean_of=len(vals),
        test_rows=len(test),
    )
    return rec


__all__ = ["probe_columns", "run_cxr_clip_probe"]


def suite_probes(checkpoint, shard_roots: list[str], names: list[str], device: str, log=print) -> dict:
    """bench-suite's probes under ``--protocol cxr-clip``: {dataset: {"10%": record, "100%": record}}
    (records without the per-step ``lrs``; a dataset without train/validate/test rows gets a ``note``)."""
    from cxrprep.shards import open_datasets
    from cxrtrain.evaluate import EvalUsageError, open_checkpoint, resolve_device

    model, _conf, _ck, _h = open_checkpoint(checkpoint)
    dev = resolve_device(device)
    out: dict[str, dict] = {}
    for ds in open_datasets(shard_roots):
        if ds.name not in names:
            continue
        try:
            out[ds.name] = {}
            for frac, key in ((0.1, "10%"), (1.0, "100%")):
                r = run_cxr_clip_probe(model, ds, frac, dev)
                lrs = r.pop("lrs")
                r.update(
                    lr_first=lrs[0] if lrs else None, lr_peak=max(lrs, default=None), lr_last=lrs[-1] if lrs else None
                )
                out[ds.name][key] = r
                log(f"{ds.name} {key}: mean AUROC {r['mean']} over {r['mean_of']} classes, {r['steps']} steps")
        except EvalUsageError as e:
            out[ds.name] = {"note": str(e)}
    return out
