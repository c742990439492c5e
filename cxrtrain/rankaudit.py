"""``log.rank_audit: true``: each rank writes OUT/ranks/rank-R.json with the study ids it drew at every step and
the sha256 of its final parameters (and, apart, of its buffers), so a multi-node run can be checked: disjoint
data per epoch, identical weights on every rank. Small: a list of ids per step, two hashes at the end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch


def weights_sha256(model: torch.nn.Module, buffers: bool = False) -> str:
    """sha256 over the parameters (``buffers``: the buffers instead), names in sorted order, each tensor's dtype,
    shape and bytes, on the CPU. DDP keeps the parameters identical on every rank; buffers such as BatchNorm
    running statistics are broadcast from rank 0 before each forward, so after the last step they may differ."""
    h = hashlib.sha256()
    named = model.named_buffers() if buffers else model.named_parameters()
    for name, t in sorted(named, key=lambda x: x[0]):
        t = t.detach().contiguous().cpu().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def record_step(audit: list, epoch: int, step: int, micro: list[dict]) -> None:
    """Append the study ids of one optimizer step (all its micro-batches) to ``audit``."""
    ids = [str(s) for mb in micro for s in mb.get("study_id", [])]
    audit.append(dict(epoch=epoch, step=step, study_id=ids))


def write_audit(out: Path, rank: int, world: int, audit: list, model: torch.nn.Module) -> Path:
    """Write OUT/ranks/rank-R.json atomically; returns its path."""
    d = Path(out) / "ranks"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"rank-{rank}.json"
    tmp = d / f".tmp-rank-{rank}.json"
    tmp.write_text(
        json.dumps(
            dict(
                rank=rank,
                world=world,
                weights_sha256=weights_sha256(model),
                buffers_sha256=weights_sha256(model, buffers=True),
                steps=audit,
            )
        )
        + "\n"
    )
    tmp.replace(path)
    return path
