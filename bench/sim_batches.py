"""Simulate training batches on row ids (no images): dataset shares and same-patient pairs per batch.

    .venv/bin/python bench/sim_batches.py                 # full scale: ~400k studies, 3 datasets
    .venv/bin/python bench/sim_batches.py --scale 0.05    # a quick look

Three datasets of unequal size, rows in patient order (as prep writes them), row groups of ``--group``
rows. Compares, over ``--batches`` batches of ``--batch`` studies from one stream:

* ``uniform``: a uniform shuffle of all studies (what CXR-CLIP's concatenated, shuffled datasets give);
* ``before``: the pre-issue-21 stream (row groups shuffled, one shuffle buffer over all datasets);
* ``now``: ``cxrtrain.sampling`` (per-dataset buffers, interleaved by a multiset permutation, patient-aware).

Prints each dataset's 5th-95th percentile share per batch, the mean same-patient pairs per batch, and the
5th-95th percentile share of a simulated finding among each batch's studies (present in 30% of patients,
shared by all studies of a patient: the worst case for rows written in patient order).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cxrtrain.sampling import (  # noqa: E402
    StudyIndex,
    buffer_shuffle,
    cycle_groups,
    patient_batches,
    plan_cycle,
    same_patient_pairs,
)

#: simulated full scale (~400k training studies): sizes of the same order as the three CXR-CLIP datasets'
#: training splits, patients with 3-4 studies on average (MIMIC-CXR: ~227k studies of ~65k patients)
FULL = {"mimic-cxr": (218_000, 3.4), "chexpert": (120_000, 3.0), "chestxray14": (62_000, 3.0)}


def make_index(sizes: dict[str, tuple[int, float]], group: int = 150, seed: int = 0) -> StudyIndex:
    """Studies in patient order, ``group`` rows per row group; each patient has 3 or more studies
    (3 + Poisson(mean - 3))."""
    rng = np.random.default_rng(seed)
    idx = StudyIndex(list(sizes))
    for di, (name, (n, mean)) in enumerate(sizes.items()):
        subjects: list[str] = []
        p = 0
        while len(subjects) < n:
            subjects += [f"{name}/p{p}"] * (3 + int(rng.poisson(max(0.0, mean - 3))))
            p += 1
        subjects = subjects[:n]
        for g0 in range(0, n, group):
            rows = list(range(min(group, n - g0)))
            subs = subjects[g0 : g0 + group]
            idx.add(di, (name, g0 // group), rows, subs, [f"{name}/s{g0 + r}" for r in rows])
    return idx


def _key(index: StudyIndex, rid: tuple[int, int]) -> tuple[str, str, str]:
    g, pos = rid  # make_index's rows are 0..n-1, so a row's position is its place in the group's lists
    return index.names[index.groups[g][0]], index.subjects[g][pos], index.studies[g][pos]


def _ids_forever(index: StudyIndex, plan, seed: int) -> iter:
    cycle = 0
    while True:
        yield from plan(index, seed, cycle)
        cycle += 1


def plan_now(index: StudyIndex, seed: int, cycle: int, buffer: int = 2048):
    return plan_cycle(index, seed, 0, cycle, 0, 1, buffer)


def plan_before(index: StudyIndex, seed: int, cycle: int, buffer: int = 2048):
    """The stream before issue 21: shuffled row groups read in turn through one shuffle buffer."""
    order = [(g, p) for g in cycle_groups(index, {}, seed, 0, cycle) for p in index.rows[g]]
    return buffer_shuffle(order, buffer, random.Random(f"{seed}:before:{cycle}"))


def plan_uniform(index: StudyIndex, seed: int, cycle: int, buffer: int = 0):
    ids = [(g, p) for g in range(len(index.groups)) for p in index.rows[g]]
    random.Random(f"{seed}:uniform:{cycle}").shuffle(ids)
    return iter(ids)


def finding(subject: str) -> bool:
    """A patient-level finding present in 30% of patients (a fixed hash of the patient id)."""
    return zlib.crc32(subject.encode()) % 10 < 3


def simulate(
    index: StudyIndex, which: str, batches: int, batch: int, buffer: int, seed: int = 0, avoid: bool = True, out=None
):
    """-> (shares [batches, datasets], same-patient pairs per batch); ``out`` (a dict) also gets
    ``finding``: the share of studies with the simulated finding per batch."""
    plan = {"now": plan_now, "before": plan_before, "uniform": plan_uniform}[which]
    ids = _ids_forever(index, lambda i, s, c: plan(i, s, c, buffer), seed)
    keyed = (((k[2], k[0] + "/" + k[1]), k) for k in (_key(index, rid) for rid in ids))
    shares, pairs = [], []
    stream = patient_batches(keyed, batch, distinct=avoid and which == "now")
    for _, b in zip(range(batches), stream):
        names = [k[0] for k in b]
        shares.append([names.count(n) / len(b) for n in index.names])
        pairs.append(same_patient_pairs([k[1] for k in b]))
        if out is not None:
            out.setdefault("finding", []).append(sum(finding(k[1]) for k in b) / len(b))
    return np.array(shares), np.array(pairs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--group", type=int, default=150)
    a = ap.parse_args()
    sizes = {k: (max(300, int(n * a.scale)), m) for k, (n, m) in FULL.items()}
    t = time.perf_counter()
    index = make_index(sizes, a.group)
    print(f"{index.count():,} studies, {index.patients():,} patients, {len(index.groups):,} row groups of {a.group}")
    for which, buffer in (("uniform", 0), ("before", 512), ("before", 2048), ("now", 512), ("now", 2048)):
        extra: dict = {}
        shares, pairs = simulate(index, which, a.batches, a.batch, buffer, out=extra)
        lo, hi = np.percentile(shares, 5, axis=0), np.percentile(shares, 95, axis=0)
        band = ", ".join(f"{n} {lo[i]:.2f}-{hi[i]:.2f}" for i, n in enumerate(index.names))
        f_lo, f_hi = np.percentile(extra["finding"], [5, 95])
        label = which if which == "uniform" else f"{which} (buffer {buffer})"
        print(
            f"{label:20s} share 5-95%: {band}; same-patient pairs/batch {pairs.mean():.2f}; "
            f"finding share 5-95%: {f_lo:.2f}-{f_hi:.2f}"
        )
    print(f"({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
