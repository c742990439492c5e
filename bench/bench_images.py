"""Benchmark: cxrkit's image pipeline vs a naive one, on large JPEGs and on DICOMs, same files, same run.

    .venv/bin/python bench/bench_images.py [--n 48]

Naive: PIL full-size decode, convert("L"), LANCZOS resize to the target short side, CLAHE at full size
(OpenCV), PNG encode. cxrkit: process_image (reduced JPEG decoding, INTER_AREA, CLAHE after resize, JPEG
q95 + CLAHE copy). Inputs: ~2500x3000 JPEGs and 16-bit DICOMs made from the real NIH fixture images
(upscaled with noise). Prints images/s per core, ratios, and 2 workers vs 1.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import write_dicom  # noqa: E402


def make_inputs(n: int) -> tuple[list[Path], list[Path]]:
    d = HERE / "out" / "images"
    d.mkdir(parents=True, exist_ok=True)
    srcs = sorted((ROOT / "examples/nih/images").glob("*.png"))
    rng = np.random.default_rng(0)
    jpgs, dcms = [], []
    for i in range(n):
        j, c = d / f"big{i}.jpg", d / f"big{i}.dcm"
        if not j.exists() or not c.exists():
            a = cv2.imread(str(srcs[i % len(srcs)]), cv2.IMREAD_GRAYSCALE)
            a = cv2.resize(a, (2500, 3000), interpolation=cv2.INTER_CUBIC).astype(np.float32)
            a = np.clip(a + rng.normal(0, 4, a.shape), 0, 255)
            cv2.imwrite(str(j), a.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95])
            px = (a * 16).astype(np.uint16)
            write_dicom(c, px)
        jpgs.append(j)
        dcms.append(c)
    return jpgs, dcms


def naive(path: Path, size: int = 512) -> bytes:
    from PIL import Image

    if path.suffix == ".dcm":
        import pydicom

        a = pydicom.dcmread(path).pixel_array.astype(np.float32)
        im = Image.fromarray(((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8))
    else:
        im = Image.open(path).convert("L")
    w, h = im.size
    k = size / min(w, h)
    full = np.asarray(im)
    clahe = cv2.createCLAHE(2.0, (8, 8)).apply(full)  # at full size
    out = []
    for arr in (full, clahe):
        r = Image.fromarray(arr).resize((round(w * k), round(h * k)), Image.LANCZOS)
        b = io.BytesIO()
        r.save(b, format="PNG")
        out.append(b.getvalue())
    return out[0]


def ours(path: Path) -> dict:
    from cxrprep.image.process import ImageSettings, process_image

    return process_image(path, path.stem, None, ImageSettings())


def _work(p):
    return ours(Path(p))["height"]


def timed(fn, paths) -> float:
    t = time.perf_counter()
    for p in paths:
        fn(p)
    return len(paths) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=48)
    a = ap.parse_args()
    cv2.setNumThreads(1)
    jpgs, dcms = make_inputs(a.n)
    for name, paths in (("JPEG 2500x3000", jpgs), ("DICOM 16-bit 2500x3000", dcms)):
        ours(paths[0]), naive(paths[0])  # warm up
        o, b = timed(ours, paths), timed(naive, paths)
        print(f"{name}: cxrkit {o:.2f} img/s/core, naive {b:.2f} img/s/core, ratio {o / b:.2f}x")
    from cxrprep.parallel import ordered_map

    for w in (1, 2):
        t = time.perf_counter()
        list(ordered_map(_work, [str(p) for p in jpgs + dcms], workers=w))
        r = len(jpgs + dcms) / (time.perf_counter() - t)
        print(f"{w} worker(s): {r:.2f} img/s")
        if w == 1:
            one = r
    print(f"2 workers vs 1: {r / one:.2f}x")


if __name__ == "__main__":
    main()
