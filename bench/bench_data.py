"""Benchmark: the training data pipeline vs a CXR-CLIP-style online pipeline, same images, same run.

    .venv/bin/python bench/bench_data.py [--n 256]

Both produce two augmented 224x224 views per study from the same 512-px shard images. Baseline (what
CXR-CLIP-style loaders do per sample): PIL open of the JPEG, random resized crop with PIL, CLAHE computed
online, colour jitter with PIL ImageEnhance, to tensor. cxrkit: OpenCV decode, the offline CLAHE copy
chosen with p=0.5, a torchvision-style crop box inside the image + one resize, ColorJitter-style
brightness/contrast as one lookup table, uint8 out (the trainer normalises whole batches on the device). Prints
samples/s and the ratio, and cxrkit with CXR-CLIP's online CLAHE (p=0.5,
clip ~ U(1, 4), after the crop) instead of the offline copy.
Also prints the share of step time spent waiting for data in a short tiny-preset training run on CPU.

``--stream``: also the whole training stream (``StudyStream``: the row-id index, per-dataset shuffle buffers,
the multiset interleave, patient-aware batches, Parquet reads, text sampling and the same augmentation) on
the same images written as shards of three datasets (rows in patient order, 3 studies per patient), in
studies/s and as a ratio to the CXR-CLIP-style per-sample pipeline.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def make_images(n: int) -> list[tuple[bytes, bytes]]:
    srcs = sorted((ROOT / "examples/nih/images").glob("*.png"))
    out = []
    for i in range(n):
        a = cv2.imread(str(srcs[i % len(srcs)]), cv2.IMREAD_GRAYSCALE)
        a = cv2.resize(a, (512, 512), interpolation=cv2.INTER_CUBIC)
        c = cv2.createCLAHE(2.0, (8, 8)).apply(a)
        out.append(
            (
                cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(),
                cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(),
            )
        )
    return out


def baseline(img: bytes, rng: random.Random) -> torch.Tensor:
    from PIL import Image, ImageEnhance

    views = []
    for _ in range(2):
        im = Image.open(io.BytesIO(img)).convert("RGB")
        w, h = im.size
        s = rng.uniform(0.8, 1.0)
        cw, ch = int(w * s**0.5), int(h * s**0.5)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        im = im.crop((x, y, x + cw, y + ch)).resize((224, 224), Image.BILINEAR)
        if rng.random() < 0.5:
            g = cv2.createCLAHE(2.0, (8, 8)).apply(np.asarray(im.convert("L")))
            im = Image.fromarray(g).convert("RGB")
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.9, 1.1))
        im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.8, 1.2))
        t = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)
        views.append((t - 0.5) / 0.25)
    return torch.stack(views)


def ours(
    pair: tuple[bytes, bytes], rng: random.Random, nrng, cfg, online: bool = False, normalize_here: bool = False
) -> torch.Tensor:
    """Two views as the loader makes them: uint8 (the trainer normalises whole batches on the device);
    ``normalize_here`` adds the per-sample float normalisation on the CPU."""
    from cxrtrain.data import augment_u8, decode_gray, normalize

    views = []
    for _ in range(2):
        data = pair[0] if online or rng.random() < 0.5 else pair[1]
        a = augment_u8(decode_gray(data), cfg, nrng, (0.8, 1.1), 0.1, 0.2, (1.0, 4.0) if online else None, 0.5)
        views.append(torch.from_numpy(a)[None])  # uint8, as StudyStream yields it
    return normalize(torch.stack(views), cfg) if normalize_here else torch.stack(views)


def write_shards(root: Path, imgs: list[tuple[bytes, bytes]]) -> Path:
    """The images as three datasets (report rows, patient order, 3 studies per patient, 2 images each)."""
    from cxrprep.labels import CHEXPERT_LABELS
    from cxrprep.schema import empty_row
    from cxrprep.shards import ShardWriter

    names = ("mimic-cxr", "chexpert", "chestxray14")
    for d, name in enumerate(names):
        part = imgs[d::3]
        with ShardWriter(root, name, label_names=CHEXPERT_LABELS, row_group_rows=32) as w:
            for i, (img, cl) in enumerate(part):
                r = empty_row(name, f"{name}-{i}", f"{name}-p{i // 3}", "train")
                r["findings"], r["impression"] = f"Findings {i}. The heart is normal.", f"Impression {i}."
                r["findings_sentences"], r["impression_sentences"] = [r["findings"]], [r["impression"]]
                views = [("PA", img, cl), ("LATERAL", part[(i + 1) % len(part)][0], part[(i + 1) % len(part)][1])]
                r["images"] = [
                    dict(image_id=f"{name}{i}{v}", view=v, image=a, image_clahe=c, height=512, width=512)
                    for v, a, c in views
                ]
                w.write(r)
    return root


def stream_rate(imgs: list[tuple[bytes, bytes]], cfg) -> float:
    """Studies/s of the training stream over the images written as shards (1 core, batches of 32)."""
    import tempfile

    from cxrprep.shards import open_datasets
    from cxrtrain.config import TrainConfig
    from cxrtrain.data import StudyStream

    with tempfile.TemporaryDirectory() as tmp:
        root = write_shards(Path(tmp), imgs)
        tc = TrainConfig(model=cfg, shuffle_buffer=256)
        s = StudyStream(open_datasets([root]), "train", tc, None, 32, seed=0)
        it = iter(s)
        next(it)  # warm-up, as for the per-sample pipelines: imports, the index, the buffers' first fill
        t = time.perf_counter()
        n = 0
        while n < len(imgs):  # steady state: the stream cycles over the shards
            n += len(next(it)["study_id"])
        return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--stream", action="store_true", help="also time the whole training stream (StudyStream)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from cxrtrain.model import model_config

    cfg = model_config("cxr-clip-r50")
    imgs = make_images(a.n)
    rng, nrng = random.Random(0), np.random.default_rng(0)
    for p in imgs[:8]:
        ours(p, rng, nrng, cfg), baseline(p[0], rng)
    t = time.perf_counter()
    for p in imgs:
        ours(p, rng, nrng, cfg)
    o = a.n / (time.perf_counter() - t)
    t = time.perf_counter()
    for p in imgs:
        baseline(p[0], rng)
    b = a.n / (time.perf_counter() - t)
    t = time.perf_counter()
    for p in imgs:
        ours(p, rng, nrng, cfg, online=True)
    on = a.n / (time.perf_counter() - t)
    t = time.perf_counter()
    for p in imgs:
        ours(p, rng, nrng, cfg, normalize_here=True)
    nh = a.n / (time.perf_counter() - t)
    print(
        f"data pipeline (2 views of 224 px per study, 1 core): cxrkit {o:.1f} studies/s, "
        f"CXR-CLIP-style online {b:.1f} studies/s, ratio {o / b:.2f}x; "
        f"cxrkit with online CLAHE {on:.1f} studies/s ({1000 * (1 / on - 1 / o) / 2:.2f} ms more per view); "
        f"cxrkit normalising per sample on the CPU {nh:.1f} studies/s ({nh / b:.2f}x)"
    )
    if a.stream:
        st = stream_rate(imgs, cfg)
        print(f"training stream (StudyStream, new sampling, batches of 32): {st:.1f} studies/s, {st / b:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
