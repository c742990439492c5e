"""Probe time against train rows, worst case (issue 20): separable features, so the validate loss keeps
falling and every cap binds; each head then trains up to fewshot's MAX_EPOCHS epochs in all.

    python scripts/bench_probe.py [--rows 8,64,512,4096] [--dim 512]

Prints one line per row count: caps tried, epochs in all, seconds (k-shot style: full batch; probe style:
batches of 256 with warm-up and cosine)."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cxrtrain.fewshot import MAX_EPOCHS, train_head


def separable(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.5).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, :3] += 4 * (2 * y - 1)
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="8,64,512,4096")
    ap.add_argument("--dim", type=int, default=512)
    a = ap.parse_args()
    torch.set_num_threads(1)
    for style, kw in (("k-shot", dict(cap=30, lr=1e-4)), ("probe", dict(cap=300, lr=5e-5, batch=256, warmup=0.1))):
        for n in map(int, a.rows.split(",")):
            x, y = separable(n, a.dim, 0)
            xv, yv = separable(max(8, n // 4), a.dim, 1)
            t = time.perf_counter()
            _, info = train_head(x, y, xv, yv, max_epochs=MAX_EPOCHS, patience=10, select="loss", seed=0, **kw)
            dt = time.perf_counter() - t
            print(
                f"{style:6s} rows {n:6d}: caps {info['caps_tried']}, {sum(info['caps_tried'])} epochs in all, "
                f"binding {info['cap_binding']}, {dt:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
