"""Benchmark: training step anatomy. Share of step time waiting for data and spent outside forward/backward.

    .venv/bin/python bench/bench_train.py                                  # tiny preset, CPU
    .venv/bin/python bench/bench_train.py --preset cxr-clip-r50 --random-init --device cuda --batch-size 128 \\
        --precision bf16 --workers 8                                      # on a GPU, no hub download needed

Writes synthetic shards (tests/conftest.py's make_demo_shards: real writer, 2 views per study), trains for
--steps steps and prints samples/s, the mean share of step time waiting for data and the mean share outside
forward/backward (data wait + optimizer step + logging), skipping the first 3 steps (warm-up).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--random-init", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--image-px", type=int, default=256, help="stored image size in the synthetic shards")
    a = ap.parse_args()
    import torch

    if a.device == "cpu":
        torch.set_num_threads(2)
    from conftest import make_demo_shards

    from cxrtrain.config import build_config
    from cxrtrain.train import train

    with tempfile.TemporaryDirectory() as d:
        n = max(64, a.batch_size * (a.steps + 2) // 6 * 8 // 6)
        root = make_demo_shards(Path(d) / "s", n_reports=n, n_labels=8, size=a.image_px)
        cfg = build_config(
            dict(
                model={"preset": a.preset, "random_init": a.random_init},
                epochs=1000,
                max_steps=a.steps,
                batch_size=a.batch_size,
                num_workers=a.workers,
                precision=a.precision,
                device=a.device,
                log_every=10**6,
                warmup_steps=1,
            )
        )
        res = train([str(root)], Path(d) / "run", cfg, log=lambda *x: None)
        h = res["history"][3:]
        sps = sum(x["samples_per_s"] for x in h) / len(h)
        wait = sum(x["data_wait"] for x in h) / len(h)
        out = sum(x["outside_fwd_bwd"] for x in h) / len(h)
        print(
            f"{a.preset} on {a.device}, batch {a.batch_size}, {a.workers} loader workers: {sps:.1f} samples/s, "
            f"data wait {wait:.1%} of step time, outside forward/backward {out:.1%}"
        )


if __name__ == "__main__":
    main()
