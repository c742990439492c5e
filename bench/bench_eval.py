"""Benchmark: zero-shot eval throughput with the tiny preset on CPU: 1,000 images against 500 prompts.

    .venv/bin/python bench/bench_eval.py

Encodes 1,000 shard images (eval transform + image tower) and 500 distinct prompts (text tower), then the
similarity matrix; prints images/s and prompts/s, and the speed-up of the cached second pass (embeddings
reused from the cache, as `cxrtrain eval` does when only the prompts change).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    torch.set_num_threads(2)
    from conftest import make_demo_shards

    from cxrprep.shards import ShardDataset
    from cxrtrain.evaluate import embed_dataset, encode_texts
    from cxrtrain.model import create_model

    with tempfile.TemporaryDirectory() as d:
        root = make_demo_shards(Path(d) / "s", n_reports=1000, n_labels=2, size=256)
        ds = ShardDataset(root / "mimic-cxr")
        model = create_model("tiny").eval()
        t = time.perf_counter()
        emb = embed_dataset(model, ds, "bench", Path(d) / "cache")
        ti = time.perf_counter() - t
        prompts = [
            f"There is a {s} {c} in the {z} lung zone."
            for s in ("small", "moderate", "large", "mild", "new")
            for c in ("effusion", "opacity", "nodule", "consolidation", "pneumothorax")
            for z in ("left", "right", "upper", "lower")
        ][:100]
        prompts = [f"{p} Case {i}." for i in range(5) for p in prompts]
        t = time.perf_counter()
        with torch.no_grad():
            txt = encode_texts(model, prompts, batch_size=128)
        tt = time.perf_counter() - t
        sim = emb["emb"] @ txt.T
        t = time.perf_counter()
        embed_dataset(model, ds, "bench", Path(d) / "cache")
        tc = time.perf_counter() - t
        print(
            f"{len(emb['emb'])} images: {len(emb['emb']) / ti:.1f} images/s; {len(prompts)} prompts: "
            f"{len(prompts) / tt:.1f} prompts/s; similarity {sim.shape}; cached re-run {ti / tc:.0f}x faster"
        )
        assert np.isfinite(sim).all()


if __name__ == "__main__":
    main()
