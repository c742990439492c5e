"""Image transforms of the training stream and the evaluators: decoding, CXR-CLIP's augmentation (random
resized crop inside the image, CLAHE, brightness/contrast jitter; no torchvision), the evaluation resize and
centre crop, and the model preset's normalisation (the algorithms are described in data.py)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

cv2.setNumThreads(1)


def decode_gray(data: bytes) -> np.ndarray:
    """Shard image bytes (JPEG/PNG) -> uint8 HxW."""
    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if a is None:
        raise ValueError("shard image bytes are not a decodable JPEG/PNG")
    return a


def normalize(x: torch.Tensor, cfg) -> torch.Tensor:
    """uint8 grey images [..., 1, S, S] (any device) -> float [..., 3, S, S] normalised with the preset's
    mean/std. Batches travel from loader workers as uint8 (4x less to copy) and are normalised here, on the
    training device."""
    x = x.float().div_(255.0)
    shape = [1] * (x.dim() - 3) + [len(cfg.image_mean), 1, 1]
    m = torch.tensor(cfg.image_mean, device=x.device).view(shape)
    s = torch.tensor(cfg.image_std, device=x.device).view(shape)
    return (x.expand(*x.shape[:-3], len(cfg.image_mean), *x.shape[-2:]) - m) / s


def center_u8(gray: np.ndarray, cfg) -> np.ndarray:
    """Evaluation geometry: shorter side to cfg.image_size (INTER_AREA down, linear up), centre crop."""
    s = cfg.image_size
    h, w = gray.shape
    k = s / min(h, w)
    nh, nw = max(s, round(h * k)), max(s, round(w * k))
    a = cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    y, x = (nh - s) // 2, (nw - s) // 2
    return np.ascontiguousarray(a[y : y + s, x : x + s])


def crop_box(
    h: int, w: int, rng: np.random.Generator, scale=(0.8, 1.1), ratio=(3 / 4, 4 / 3), tries: int = 10
) -> tuple[int, int, int, int]:
    """Random resized crop box (top, left, height, width), always inside an HxW image, by the algorithm of
    torchvision's ``RandomResizedCrop.get_params`` (which CXR-CLIP uses): up to ``tries`` draws of an area
    fraction from U(scale) and a log-uniform aspect ratio; the first box that fits (w <= W, h <= H, so a
    fraction above 1 only fits when the aspect lets it) is placed uniformly; if none fits, the centre crop
    of the whole image with the aspect clamped to ``ratio``. Nothing is ever padded."""
    area = h * w
    lo, hi = np.log(ratio[0]), np.log(ratio[1])
    for _ in range(tries):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = float(np.exp(rng.uniform(lo, hi)))
        cw = int(round(np.sqrt(target * aspect)))
        ch = int(round(np.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            return top, left, ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def clahe_u8(a: np.ndarray, clip: float, tiles: int = 8) -> np.ndarray:
    """CLAHE with clip limit ``clip`` on a tiles x tiles grid (OpenCV; albumentations' CLAHE is the same call)."""
    return cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(tiles, tiles)).apply(a)


def jitter_u8(a: np.ndarray, rng: np.random.Generator, brightness: float = 0.1, contrast: float = 0.2) -> np.ndarray:
    """Brightness and contrast jitter as torchvision's ColorJitter on a grey image (CXR-CLIP): brightness
    multiplies by b ~ U(1-brightness, 1+brightness); contrast blends with the image mean, c*x + (1-c)*mean,
    c ~ U(1-contrast, 1+contrast); the two are applied in random order, each result clipped to [0, 255]."""
    ops = []
    if brightness:
        ops.append(("b", rng.uniform(max(0.0, 1 - brightness), 1 + brightness)))
    if contrast:
        ops.append(("c", rng.uniform(max(0.0, 1 - contrast), 1 + contrast)))
    if not ops:
        return a
    if len(ops) == 2 and rng.random() < 0.5:
        ops.reverse()
    # both operations are per-pixel maps of a uint8 image once the mean is known, so they compose into one
    # 256-entry lookup table; the mean after the first map comes from the histogram (no float image pass)
    hist = cv2.calcHist([a], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    lut = np.arange(256, dtype=np.float64)
    for kind, f in ops:
        if kind == "b":
            lut = np.clip(lut * f, 0, 255)
        else:
            m = float(hist @ lut) / max(1.0, hist.sum())
            lut = np.clip(lut * f + m * (1 - f), 0, 255)
    return cv2.LUT(a, (lut + 0.5).astype(np.uint8))


def augment_u8(
    gray: np.ndarray,
    cfg,
    rng: np.random.Generator,
    scale=(0.8, 1.1),
    brightness: float = 0.1,
    contrast: float = 0.2,
    clahe_clip: tuple[float, float] | None = None,
    clahe_prob: float = 0.0,
) -> np.ndarray:
    """CXR-CLIP's training transform on a grey uint8 image: random resized crop inside the image (``crop_box``)
    resized to the input size (pyramid halving while the crop is >= 2x the output, then bilinear), optional online
    CLAHE (probability ``clahe_prob``, clip limit ~ U(clahe_clip)),
    brightness/contrast jitter (``jitter_u8``)."""
    s = cfg.image_size
    h, w = gray.shape
    top, left, ch, cw = crop_box(h, w, rng, scale)
    crop = gray[top : top + ch, left : left + cw]
    # antialiasing, cheaply: halve with a Gaussian pyramid step while the crop is at least twice the output,
    # then bilinear (INTER_AREA at non-integer factors costs ~8x more for a similar result)
    while min(crop.shape) >= 2 * s:
        crop = cv2.pyrDown(crop)
    a = cv2.resize(crop, (s, s), interpolation=cv2.INTER_LINEAR)
    if clahe_clip is not None and clahe_prob > 0 and rng.random() < clahe_prob:
        a = clahe_u8(a, rng.uniform(*clahe_clip))
    return jitter_u8(a, rng, brightness, contrast)


def eval_transform(gray: np.ndarray, cfg) -> torch.Tensor:
    """Shorter side to the input size, centre crop, normalise -> [3,S,S] float."""
    return normalize(torch.from_numpy(center_u8(gray, cfg))[None], cfg)


def train_transform(
    gray: np.ndarray, cfg, rng: np.random.Generator, scale=(0.8, 1.1), brightness: float = 0.1, contrast: float = 0.2
) -> torch.Tensor:
    """Augmented view -> [3,S,S] float."""
    return normalize(torch.from_numpy(augment_u8(gray, cfg, rng, scale, brightness, contrast))[None], cfg)
