"""The contrastive losses against explicit loops: CLIP InfoNCE, CXR-CLIP's MVS + ICL + TCL, the relaxation
threshold, the per-step statistics, and the loss under two gloo processes equal to one process."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from cxrtrain.loss import clip_loss, compute_loss, cxr_clip_loss

torch.set_num_threads(1)


def _loop_clip(a, b, scale, thr=None):
    """Reference: InfoNCE written as explicit loops over rows."""
    n = a.shape[0]
    total = 0.0
    for x, y in ((a, b), (b, a)):
        for i in range(n):
            sims = [float(x[i] @ y[j]) for j in range(n)]
            pos = sims[i]
            logits = [scale * s for s in sims]
            total += -(scale * pos - math.log(sum(math.exp(v) for v in logits)))
    return total / (2 * n)


def _feats(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(n, d, generator=g), dim=-1) for _ in range(4)]


def test_clip_loss_matches_loop():
    a, b, _, _ = _feats()
    assert float(clip_loss(a, b, torch.tensor(10.0))) == pytest.approx(_loop_clip(a, b, 10.0), rel=1e-5)


def test_cxr_clip_loss_matches_components():
    i1, i2, t1, t2 = _feats()
    s = torch.tensor(14.0)
    out = cxr_clip_loss(i1, i2, t1, t2, s, icl_weight=1.0, tcl_weight=0.5)
    mvs = (_loop_clip(i1, t1, 14) + _loop_clip(i1, t2, 14) + _loop_clip(i2, t1, 14) + _loop_clip(i2, t2, 14)) / 4
    want = mvs + 1.0 * _loop_clip(i1, i2, 14) + 0.5 * _loop_clip(t1, t2, 14)
    assert float(out["loss"]) == pytest.approx(want, rel=1e-5)
    assert float(out["mvs"]) == pytest.approx(mvs, rel=1e-5)


def test_relaxation_stops_pull_above_threshold():
    a, b, _, _ = _feats(4, 8, 1)
    b = b.clone()
    b[0] = a[0]  # pair 0 is identical: cosine 1.0 > threshold
    a = a.clone().requires_grad_(True)
    relaxed = clip_loss(a, b, torch.tensor(10.0), relax_threshold=0.8)
    plain = clip_loss(a, b, torch.tensor(10.0))
    assert float(relaxed.detach()) == pytest.approx(float(plain.detach()))  # same value: the logit is only detached
    g_relaxed = torch.autograd.grad(relaxed, a)[0][0]
    g_plain = torch.autograd.grad(clip_loss(a, b, torch.tensor(10.0)), a)[0][0]
    # no pull toward b[0]: the relaxed gradient lacks the -b[0] component of the plain one
    assert float(g_relaxed @ b[0]) > float(g_plain @ b[0])
    # pairs below the threshold are untouched
    a2, b2, _, _ = _feats(4, 8, 2)
    assert float(clip_loss(a2, b2, torch.tensor(5.0), relax_threshold=0.99)) == pytest.approx(
        float(clip_loss(a2, b2, torch.tensor(5.0)))
    )


def test_loss_reports_matched_cosine_and_relaxed_share():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    b = torch.nn.functional.normalize(a + 0.01 * torch.randn(4, 8), dim=-1)
    r = compute_loss("cxr-clip", a, a, b, b, torch.tensor(10.0), relax_threshold=0.99)
    assert float(r["pos_cos"]) == pytest.approx(float((a * b).sum(-1).mean()), abs=1e-6)
    assert float(r["relaxed"]) == pytest.approx(float(((a * b).sum(-1) > 0.99).float().mean()))
    assert "relaxed" not in compute_loss("clip", a, a, b, b, torch.tensor(10.0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, feats, q):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    i1, i2, t1, t2 = [f.clone().requires_grad_(True) for f in feats]
    n = i1.shape[0] // world
    sl = slice(rank * n, (rank + 1) * n)
    out = cxr_clip_loss(i1[sl], i2[sl], t1[sl], t2[sl], torch.tensor(10.0), rank=rank, world_size=world)
    out["loss"].backward()
    # gradients of the global loss w.r.t. this rank's features live on this rank
    q.put((rank, float(out["loss"]), i1.grad[sl].tolist()))  # plain lists: no shared memory to outlive us
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes
def test_ddp_gloo_two_processes_match_one():
    import torch.multiprocessing as mp

    feats = _feats(8, 16, 5)
    ref_feats = [f.clone().requires_grad_(True) for f in feats]
    ref = cxr_clip_loss(*ref_feats, torch.tensor(10.0))
    ref["loss"].backward()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, feats, q)) for r in range(2)]
    for p in procs:
        p.start()
    res = sorted(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
    # each rank's loss covers its own rows against the gathered global batch; their mean is the global loss
    assert sum(loss for _, loss, _ in res) / 2 == pytest.approx(float(ref["loss"]), rel=1e-5)
    for rank, _loss, grad in res:
        # all_gather's backward sums every rank's gradient for these rows (= world x the gradient of the
        # global mean loss); DDP then averages parameter gradients over the world, so / 2 matches one process
        assert torch.allclose(torch.tensor(grad) / 2, ref_feats[0].grad[rank * 4 : (rank + 1) * 4], atol=1e-5)
