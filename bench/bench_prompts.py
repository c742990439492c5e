"""Benchmark: `cxrprep prompts --no-images` at full CheXpert and ChestX-ray14 size vs a naive csv loop.

    .venv/bin/python bench/bench_prompts.py [--workers 2]

Generates a 223,414-row CheXpert train.csv with the per-label distribution of FORMATS.md and a 112,120-row
Data_Entry CSV, then times cxrkit (polars parsing, per-study seeded rendering in worker processes, Parquet)
and a naive baseline in the same run: csv.DictReader, per-row template expansion with str.format and
random.choice, one JSON line per row (no shards, no validation). Prints rows/s and the ratio.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from cxrprep.labels import CHEXPERT_CSV_LABELS, CHEXPERT_CSV_META, NIH_LABELS  # noqa: E402

LABELS = list(CHEXPERT_CSV_LABELS)
# (pos, neg, uncertain) shares of 223,414 rows; the rest blank (FORMATS.md 2.1 where given, else typical)
DIST = {
    "No Finding": (0.10, 0, 0),
    "Pleural Effusion": (86187 / 223414, 35396 / 223414, 11628 / 223414),
    "Atelectasis": (33376 / 223414, 1328 / 223414, 33739 / 223414),
    "Support Devices": (116001 / 223414, 6137 / 223414, 1079 / 223414),
}
NIH = [n for n in NIH_LABELS if n != "No Finding"]


def make_chexpert(path: Path, n: int = 223_414) -> None:
    rng = random.Random(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*CHEXPERT_CSV_META, *LABELS])
        patient, study, view, k = 1, 1, 1, 0
        while k < n:
            lateral = view == 2
            row = [
                f"CheXpert-v1.0-small/train/patient{patient:05d}/study{study}/view{view}_{'lateral' if lateral else 'frontal'}.jpg",  # noqa: E501
                rng.choice(["Male", "Female"]),
                rng.randint(18, 90),
                "Lateral" if lateral else "Frontal",
                "" if lateral else rng.choice(["AP", "PA"]),
            ]
            for name in LABELS:
                p, ng, u = DIST.get(name, (0.12, 0.08, 0.05))
                r = rng.random()
                row.append("1.0" if r < p else "0.0" if r < p + ng else "-1.0" if r < p + ng + u else "")
            w.writerow(row)
            k += 1
            view += 1
            if view > rng.choice([1, 2]):
                view, study = 1, study + 1
                if rng.random() < 0.45:
                    study, patient = 1, patient + 1


def make_nih(path: Path, n: int = 112_120) -> None:
    rng = random.Random(1)
    with open(path, "w", newline="") as f:
        f.write(
            "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
            "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
        )
        for i in range(n):
            pid = i // 4 + 1
            k = rng.choice([0, 0, 0, 1, 1, 2, 3])
            labels = "|".join(sorted(rng.sample(NIH, k))) if k else "No Finding"
            f.write(
                f"{pid:08d}_{i % 4:03d}.png,{labels},{i % 4},{pid},{rng.randint(1, 95)},"
                f"{rng.choice('MF')},{rng.choice(['PA', 'AP'])},2500,2048,0.143,0.143\n"
            )


def naive(csv_path: Path, out: Path, variants: int = 8) -> int:
    """What a quick script would do: DictReader, render sentences row by row with format()."""
    pos = ["There is {}.", "{} is present.", "Findings consistent with {}."]
    neg = ["No {}.", "There is no {}.", "No evidence of {}."]
    unc = ["Possible {}.", "{} cannot be excluded."]
    n = 0
    with open(csv_path, newline="") as f, open(out, "w") as o:
        for row in csv.DictReader(f):
            rng = random.Random(n)
            items = []
            if "Finding Labels" in row:
                present = row["Finding Labels"].split("|")
                items = [(c, "1.0") for c in present if c != "No Finding"]
                items += [(c, "0.0") for c in rng.sample([c for c in NIH if c not in present], 3)]
            else:
                items = [(c, row[c]) for c in LABELS if row[c]]
            prompts = []
            for _ in range(variants):
                s = [rng.choice(pos if v == "1.0" else neg if v == "0.0" else unc).format(c.lower()) for c, v in items]
                rng.shuffle(s)
                prompts.append(" ".join(s))
            o.write(json.dumps({"row": n, "prompts": prompts}) + "\n")
            n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    d = HERE / "out" / "prompts"
    d.mkdir(parents=True, exist_ok=True)
    chex, nih = d / "train.csv", d / "Data_Entry_2017.csv"
    if not chex.exists():
        make_chexpert(chex)
    if not nih.exists():
        make_nih(nih)
    for name, path, rows, goal in (("CheXpert", chex, 223_414, 8), ("ChestX-ray14", nih, 112_120, 5)):
        shutil.rmtree(d / "shards", ignore_errors=True)
        t = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cxrprep.cli.app",
                "prompts",
                str(path),
                "--no-images",
                "--out",
                str(d / "shards"),
                "--workers",
                str(a.workers),
                "--templates",
                str(HERE.parent / "prompts/default.yaml"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        ours = time.perf_counter() - t
        t = time.perf_counter()
        naive(path, d / "naive.jsonl")
        base = time.perf_counter() - t
        print(
            f"{name}: {rows:,} rows  cxrkit {ours:.1f} s ({rows / ours:,.0f} rows/s, goal < {goal} s)  "
            f"naive loop {base:.1f} s ({rows / base:,.0f} rows/s)  ratio {base / ours:.2f}x"
        )


if __name__ == "__main__":
    main()
