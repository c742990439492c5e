"""Contrastive losses: CLIP InfoNCE, CXR-CLIP (MVS + ICL + TCL), positive-pair loss relaxation.

All take L2-normalised embeddings of the *local* batch. Under DDP (``world_size > 1``) features are
gathered from every rank with ``torch.distributed.nn.all_gather``, which carries gradients back to the
rank that produced them, and each rank's labels are offset by ``rank * B``; the loss is then the loss of
the global batch, computed on every rank.

Positive-pair loss relaxation (idea: Jang et al.; the formula is ours, since the paper's method section could
not be read here, see docs/batches.md): a matched image-text pair whose cosine similarity is already
above ``relax_threshold`` gets no further pull: its logit enters the softmax with its true value but
detached, so only the push from negatives remains. Reports of different patients often describe the same
findings, so pulling an already-aligned pair harder mainly pushes apart true-but-unlabelled positives.
Default off. The threshold only acts when matched cosines reach it: both losses report ``pos_cos`` (mean
cosine of matched image-text pairs) and, with relaxation on, ``relaxed`` (share of matched image-text
logits above the threshold); the trainer logs both per step in metrics.jsonl. Pick the threshold from the
``pos_cos`` of your own runs (see the README), not from a fixed number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gather(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """All ranks' ``x`` concatenated along dim 0, with gradients (identity when world_size == 1)."""
    if world_size <= 1:
        return x
    import torch.distributed.nn as dnn

    return torch.cat(dnn.all_gather(x), dim=0)


def clip_loss(
    a: torch.Tensor,
    b: torch.Tensor,
    scale: torch.Tensor,
    relax_threshold: float | None = None,
    rank: int = 0,
    world_size: int = 1,
    stats: dict | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE between rows of ``a`` and ``b`` (row i of a matches row i of b). ``stats`` (a dict)
    accumulates ``pairs``, ``pos_cos_sum`` and ``relaxed`` counts of the matched pairs."""
    all_a, all_b = gather(a, world_size), gather(b, world_size)
    n = a.shape[0]
    labels = torch.arange(n, device=a.device) + rank * n
    sim_ab = a @ all_b.T  # local rows of a against every b
    sim_ba = b @ all_a.T
    if stats is not None:
        with torch.no_grad():
            pos = (a * b).sum(-1)
            stats["pairs"] = stats.get("pairs", 0) + pos.numel()
            stats["pos_cos_sum"] = stats.get("pos_cos_sum", 0.0) + float(pos.sum())
            if relax_threshold is not None:
                stats["relaxed"] = stats.get("relaxed", 0) + int((pos > relax_threshold).sum())
    if relax_threshold is not None:
        sim_ab = _relax(sim_ab, labels, relax_threshold)
        sim_ba = _relax(sim_ba, labels, relax_threshold)
    return 0.5 * (F.cross_entropy(scale * sim_ab, labels) + F.cross_entropy(scale * sim_ba, labels))


def _relax(sim: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    rows = torch.arange(sim.shape[0], device=sim.device)
    pos = sim[rows, labels]
    relaxed = torch.where(pos > threshold, pos.detach(), pos)
    sim = sim.clone()
    sim[rows, labels] = relaxed
    return sim


def mvs_loss(img1, img2, txt1, txt2, scale, relax_threshold=None, rank=0, world_size=1, stats=None) -> torch.Tensor:
    """CXR-CLIP's multi-view supervision: the mean CLIP loss over (i1,t1), (i1,t2), (i2,t1), (i2,t2)."""
    kw = dict(rank=rank, world_size=world_size, stats=stats)
    return (
        clip_loss(img1, txt1, scale, relax_threshold, **kw)
        + clip_loss(img1, txt2, scale, relax_threshold, **kw)
        + clip_loss(img2, txt1, scale, relax_threshold, **kw)
        + clip_loss(img2, txt2, scale, relax_threshold, **kw)
    ) / 4


def cxr_clip_loss(
    img1: torch.Tensor,
    img2: torch.Tensor,
    txt1: torch.Tensor,
    txt2: torch.Tensor,
    scale: torch.Tensor,
    icl_weight: float = 1.0,
    tcl_weight: float = 0.5,
    relax_threshold: float | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, torch.Tensor]:
    """CXR-CLIP (seed 003): MVS = mean CLIP loss over (i1,t1), (i1,t2), (i2,t1), (i2,t2); ICL = CLIP loss
    between the two images of each study; TCL = between the two texts. total = MVS + w_icl ICL + w_tcl TCL."""
    kw = dict(rank=rank, world_size=world_size)
    st: dict = {}
    mvs = mvs_loss(img1, img2, txt1, txt2, scale, relax_threshold, rank, world_size, st)
    icl = clip_loss(img1, img2, scale, **kw)
    tcl = clip_loss(txt1, txt2, scale, **kw)
    return {
        "loss": mvs + icl_weight * icl + tcl_weight * tcl,
        "mvs": mvs.detach(),
        "icl": icl.detach(),
        "tcl": tcl.detach(),
        **_stats(st, relax_threshold, mvs),
    }


def _stats(st: dict, relax_threshold: float | None, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Matched image-text pairs of the local batch: mean cosine and (relaxation on) the relaxed share."""
    n = max(1, st.get("pairs", 0))
    out = {"pos_cos": torch.tensor(st.get("pos_cos_sum", 0.0) / n, device=like.device)}
    if relax_threshold is not None:
        out["relaxed"] = torch.tensor(st.get("relaxed", 0) / n, device=like.device)
    return out


#: ``loss`` names: what each computes, and where it comes from
LOSSES = {
    "clip": "one pair per study (first image, first text), symmetric InfoNCE (open_clip's ClipLoss)",
    "cxr-clip-mvs": "CXR-CLIP's 'clip' loss config (configs/loss/clip.yaml: i2i_weight 0, t2t_weight 0): the mean "
    "of the four image-text pairs of a study (MVS) only",
    "cxr-clip": "CXR-CLIP's 'cxr_clip' loss config: MVS + icl_weight x ICL + tcl_weight x TCL",
}


def compute_loss(
    kind: str, img1, img2, txt1, txt2, scale, icl_weight=1.0, tcl_weight=0.5, relax_threshold=None, rank=0, world_size=1
) -> dict[str, torch.Tensor]:
    """``kind`` one of ``LOSSES``: ``clip`` (one pair), ``cxr-clip-mvs`` (the 4-pair MVS term alone, which
    CXR-CLIP's own config names ``clip``), ``cxr-clip`` (MVS + ICL + TCL)."""
    if kind == "clip":
        st: dict = {}
        loss = clip_loss(img1, txt1, scale, relax_threshold, rank, world_size, stats=st)
        return {"loss": loss, "clip": loss.detach(), **_stats(st, relax_threshold, loss)}
    if kind == "cxr-clip-mvs":
        st = {}
        mvs = mvs_loss(img1, img2, txt1, txt2, scale, relax_threshold, rank, world_size, st)
        return {"loss": mvs, "mvs": mvs.detach(), **_stats(st, relax_threshold, mvs)}
    if kind == "cxr-clip":
        return cxr_clip_loss(img1, img2, txt1, txt2, scale, icl_weight, tcl_weight, relax_threshold, rank, world_size)
    raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")
