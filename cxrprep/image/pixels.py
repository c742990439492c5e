"""Pixel arrays to 8-bit grey: min-max scaling, colour to grey, the pixel-count guard."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cxrprep.image.settings import ImageError


def to_uint8(a: np.ndarray, path: Path | str = "") -> np.ndarray:
    """Min-max scale any numeric array to uint8. Raises ImageError for non-finite values (NaN, inf: e.g. a
    RescaleSlope of NaN or 1e308) and for an image with a single value (it would be all black)."""
    if a.dtype == np.uint8:
        if a.size and int(a.min()) == int(a.max()):
            raise ImageError(f"{path}: blank image (every pixel is {int(a.min())})")
        return a
    if a.dtype.kind == "f" or a.dtype.itemsize > 2:
        a = a.astype(np.float64, copy=False)  # float32 would overflow to inf for values past 3.4e38
    else:
        a = a.astype(np.float32, copy=False)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ImageError(f"{path}: pixel values are not finite (NaN or infinity; check RescaleSlope/Intercept)")
    lo, hi = float(a.min()), float(a.max())
    if not (np.isfinite(lo) and np.isfinite(hi) and np.isfinite(hi - lo)):
        raise ImageError(f"{path}: pixel value range {lo:g}..{hi:g} is not finite")
    if hi <= lo:
        raise ImageError(f"{path}: blank image (every pixel is {lo:g})")
    return ((a - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)


def rgb_to_gray(a: np.ndarray, path: Path, order: str) -> np.ndarray:
    """(H, W, 3|4) colour -> (H, W) uint8; ``order`` is "BGR" (OpenCV) or "RGB" (pydicom); alpha ignored."""
    if a.dtype == np.uint8:
        return cv2.cvtColor(
            np.ascontiguousarray(a[:, :, :3]), cv2.COLOR_BGR2GRAY if order == "BGR" else cv2.COLOR_RGB2GRAY
        )
    ft = np.float32 if a.dtype.kind in "ui" and a.dtype.itemsize <= 2 else np.float64  # 16-bit: float32 is exact
    w = np.array([0.114, 0.587, 0.299] if order == "BGR" else [0.299, 0.587, 0.114], ft)
    return to_uint8(a[:, :, :3].astype(ft) @ w, path)


def as_gray(a: np.ndarray, path: Path) -> np.ndarray:
    if a.ndim == 2:
        return a
    if a.ndim == 3 and a.shape[2] == 1:
        return a[:, :, 0]
    if a.ndim == 3 and a.shape[2] in (3, 4):  # OpenCV order: BGR / BGRA; alpha is ignored
        return rgb_to_gray(a, path, "BGR")
    raise ImageError(f"{path}: unsupported pixel array shape {a.shape}")


def check_pixels(path: Path, h: int, w: int, max_pixels: int, frames: int = 1, samples: int = 1) -> None:
    """``--max-image-pixels`` counts every sample the decoder would produce: frames x rows x columns x
    samples per pixel, checked from the header before any decoding."""
    if h < 1 or w < 1:
        raise ImageError(f"{path}: image has no pixels ({w}x{h})")
    if frames < 1 or samples < 1:
        raise ImageError(f"{path}: image has no pixels ({frames} frames, {samples} samples per pixel)")
    n = frames * h * w * samples
    if n > max_pixels:
        what = (
            f"{w}x{h}"
            + (f" x {frames} frames" if frames > 1 else "")
            + (f" x {samples} samples" if samples > 1 else "")
        )
        raise ImageError(f"{path}: image {what} ({n:,} pixel values) exceeds --max-image-pixels ({max_pixels:,})")
