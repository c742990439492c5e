"""loss: clip (one pair, open_clip) vs cxr-clip-mvs (CXR-CLIP's 4-pair 'clip' config), each against a loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cxrtrain.config import ConfigError, TrainConfig
from cxrtrain.loss import LOSSES, compute_loss

torch.set_num_threads(1)


def _loop_clip(a: torch.Tensor, b: torch.Tensor, scale: float) -> float:
    """Symmetric InfoNCE written out: for each row, -log softmax of its matched logit, both directions."""
    n = a.shape[0]
    total = 0.0
    for x, y in ((a, b), (b, a)):
        for i in range(n):
            logits = [scale * float(x[i] @ y[j]) for j in range(n)]
            m = max(logits)
            total += -(logits[i] - m - math.log(sum(math.exp(v - m) for v in logits)))
    return total / (2 * n)


def _emb(seed: int, n: int = 6, d: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_clip_is_one_pair_and_mvs_is_four_pairs():
    i1, i2, t1, t2 = _emb(1), _emb(2), _emb(3), _emb(4)
    scale = torch.tensor(7.0)
    clip = compute_loss("clip", i1, i2, t1, t2, scale)
    mvs = compute_loss("cxr-clip-mvs", i1, i2, t1, t2, scale)
    assert float(clip["loss"]) == pytest.approx(_loop_clip(i1, t1, 7.0), rel=1e-5)
    want = sum(_loop_clip(i, t, 7.0) for i in (i1, i2) for t in (t1, t2)) / 4
    assert float(mvs["loss"]) == pytest.approx(want, rel=1e-5)
    assert abs(float(mvs["loss"]) - float(clip["loss"])) > 1e-3  # two different quantities, two names
    full = compute_loss("cxr-clip", i1, i2, t1, t2, scale, icl_weight=1.0, tcl_weight=0.5)
    extra = _loop_clip(i1, i2, 7.0) + 0.5 * _loop_clip(t1, t2, 7.0)
    assert float(full["loss"]) == pytest.approx(want + extra, rel=1e-5)
    assert float(full["mvs"]) == pytest.approx(float(mvs["mvs"]), rel=1e-6)


def test_loss_names_are_checked():
    assert set(LOSSES) == {"clip", "cxr-clip-mvs", "cxr-clip"}
    assert TrainConfig(loss="cxr-clip-mvs").loss == "cxr-clip-mvs"
    with pytest.raises(ConfigError, match="loss"):
        TrainConfig(loss="mvs")
    with pytest.raises(ValueError, match="cxr-clip-mvs"):
        compute_loss("nope", *(_emb(i) for i in range(4)), torch.tensor(1.0))
