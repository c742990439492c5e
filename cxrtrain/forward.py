"""The forward pass the loop and validation share: a batch to the device, both towers, the configured loss; the
module DDP wraps; the validation loss over the validate split."""

from __future__ import annotations

import torch

from cxrtrain.config import TrainConfig
from cxrtrain.data import StudyStream
from cxrtrain.ddp import sum_over_ranks
from cxrtrain.loss import compute_loss
from cxrtrain.model import CLIPModel
from cxrtrain.transforms import normalize


def to_device(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            out[k] = {kk: vv.to(device, non_blocking=True) for kk, vv in v.items()}
        else:
            out[k] = v
    return out


def forward_loss(model, batch: dict, cfg: TrainConfig, rank: int, world: int) -> dict:
    raw = model.module if hasattr(model, "module") else model
    i1 = raw.encode_image(normalize(batch["images1"], cfg.model))
    i2 = raw.encode_image(normalize(batch["images2"], cfg.model)) if cfg.loss == "cxr-clip" else i1
    t1 = raw.encode_text(**batch["text1"])
    t2 = raw.encode_text(**batch["text2"]) if cfg.loss == "cxr-clip" else t1
    return compute_loss(
        cfg.loss, i1, i2, t1, t2, raw.scale(), cfg.icl_weight, cfg.tcl_weight, cfg.relax_threshold, rank, world
    )


class DDPForward(torch.nn.Module):
    """Wraps the model so DDP sees one forward() that runs every tower (gradient sync needs that)."""

    def __init__(self, model: CLIPModel, cfg: TrainConfig) -> None:
        super().__init__()
        self.module_ = model
        self.cfg = cfg

    def forward(self, batch: dict, rank: int, world: int) -> dict:
        return forward_loss(self.module_, batch, self.cfg, rank, world)


@torch.no_grad()
def validate(model: CLIPModel, datasets, cfg: TrainConfig, device, ctx, rank: int, world: int) -> dict | None:
    """Mean loss and loss parts over the validate split (eval transforms, no augmentation), weighted by rows.

    Both views of a validation study are the same un-augmented image, so cxr-clip's image-image term (icl)
    is near 0 here: compare the image-text term (``mvs``) with training's, not the totals."""
    model.eval()
    ds = StudyStream(
        datasets,
        "validate",
        cfg,
        model.tokenizer,
        cfg.batch_size,
        train=False,
        rank=rank,
        world_size=world,
        seed=cfg.seed,
    )
    tot: dict[str, float] = {}
    n = 0
    for batch in ds:
        if batch["images1"].shape[0] < 2:
            continue
        batch = to_device(batch, device)
        with ctx:
            res = forward_loss(model, batch, cfg, 0, 1)
        b = batch["images1"].shape[0]
        for k, v in res.items():
            tot[k] = tot.get(k, 0.0) + float(v) * b
        tot["batch"] = tot.get("batch", 0.0) + b * b  # -> the batch size a validation row saw (losses grow with it)
        n += b
    model.train()
    if world > 1:
        tot, n = sum_over_ranks(tot, n)
    return {k: v / n for k, v in tot.items()} if n else None
