"""Augmentation as CXR-CLIP: torchvision's RandomResizedCrop box, no padding, jitter, online CLAHE."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from cxrtrain.config import TrainConfig
from cxrtrain.data import augment_u8, crop_box, jitter_u8
from cxrtrain.model import model_config


def torchvision_rrc(height: int, width: int, scale, ratio, r: random.Random):
    """torchvision.transforms.RandomResizedCrop.get_params, written from its documentation: up to 10 times,
    target area = image area * U(scale), aspect = exp(U(log ratio)), w = round(sqrt(area * aspect)),
    h = round(sqrt(area / aspect)); if 0 < w <= width and 0 < h <= height, top ~ U{0..height-h}, left ~
    U{0..width-w}. Else a central crop with the aspect clamped to the ratio range."""
    area = height * width
    for _ in range(10):
        target = area * r.uniform(*scale)
        aspect = math.exp(r.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return r.randint(0, height - h), r.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _stats(boxes, H, W):
    b = np.array(boxes, float)
    top, left, h, w = b.T
    full = (h == H) & (w == W)
    return dict(
        area=(h * w / (H * W)).mean(),
        area_sd=(h * w / (H * W)).std(),
        aspect=np.log(w / h).mean(),
        cx=((left + w / 2) / W).mean(),
        cy=((top + h / 2) / H).mean(),
        full=full.mean(),
        left_sd=(left / W).std(),
    )


@pytest.mark.parametrize("H,W", [(512, 512), (400, 600), (600, 300)])
def test_crop_box_matches_torchvision_distribution(H, W):
    n = 6000
    rng = np.random.default_rng(1)
    ours = [crop_box(H, W, rng, (0.8, 1.1)) for _ in range(n)]
    r = random.Random(2)
    ref = [torchvision_rrc(H, W, (0.8, 1.1), (3 / 4, 4 / 3), r) for _ in range(n)]
    for t, lf, h, w in ours:  # always inside the image: nothing to pad
        assert 0 <= t and 0 <= lf and t + h <= H and lf + w <= W and h > 0 and w > 0
    a, b = _stats(ours, H, W), _stats(ref, H, W)
    for k in a:
        assert abs(a[k] - b[k]) < 0.02, (k, a[k], b[k])
    # the area distribution itself (two-sample Kolmogorov-Smirnov distance)
    fa = np.sort([h * w for _, _, h, w in ours])
    fb = np.sort([h * w for _, _, h, w in ref])
    grid = np.linspace(min(fa[0], fb[0]), max(fa[-1], fb[-1]), 200)
    ks = np.abs(np.searchsorted(fa, grid) / n - np.searchsorted(fb, grid) / n).max()
    assert ks < 0.04


def test_crop_box_fallback_is_a_centre_crop():
    rng = np.random.default_rng(0)
    # a very wide image: no box of the ratio range fits at this scale, torchvision falls back
    assert crop_box(100, 1000, rng, (0.9, 1.0)) == (0, (1000 - 133) // 2, 100, 133)
    assert crop_box(64, 64, rng, (5.0, 6.0)) == (0, 0, 64, 64)


def test_white_image_has_no_dark_pixel_after_augmentation():
    cfg = model_config("tiny")
    white = np.full((300, 220), 255, np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = augment_u8(white, cfg, rng, (0.8, 1.1), 0.1, 0.2, (1.0, 4.0), 0.5)
        assert a.shape == (64, 64) and a.min() >= 200  # brightness 0.9 at worst: 229


def test_jitter_is_cxr_clip_colorjitter():
    rng = np.random.default_rng(0)
    a = np.tile(np.arange(50, 150, dtype=np.uint8), (10, 1))
    out = jitter_u8(a, rng, brightness=0.1, contrast=0.0)
    f = out.astype(float).mean() / a.mean()
    assert 0.9 <= f <= 1.1 and abs(out.astype(float) / np.maximum(a, 1) - f).max() < 0.02  # multiplicative
    factors = []
    for _ in range(300):
        o = jitter_u8(a, rng, brightness=0.0, contrast=0.2).astype(float)
        assert abs(o.mean() - a.mean()) < 1.0  # contrast keeps the mean
        factors.append(o.std() / a.std())
    assert 0.79 < min(factors) < 0.83 and 1.17 < max(factors) < 1.21


def test_online_clahe_config():
    assert TrainConfig().clahe == "offline"
    with pytest.raises(ValueError, match="clahe=.sometimes.: must be one of offline, online, off"):
        TrainConfig(clahe="sometimes")
    with pytest.raises(ValueError, match="clahe_clip"):
        TrainConfig(clahe_clip=(4.0, 1.0))
    cfg = model_config("tiny")
    g = (np.random.default_rng(0).random((128, 128)) * 60 + 100).astype(np.uint8)
    on = augment_u8(g, cfg, np.random.default_rng(3), (1.0, 1.0), 0, 0, (4.0, 4.0), 1.0)
    off = augment_u8(g, cfg, np.random.default_rng(3), (1.0, 1.0), 0, 0, None, 0.0)
    assert on.std() > off.std() * 1.3  # CLAHE stretched the contrast
