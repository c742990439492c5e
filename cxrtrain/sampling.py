"""Which studies go into which training batch: uniform dataset mixing and patient-aware batches.

The order of an epoch is planned on *row ids* (dataset, row group, row) from a small index (split, study,
patient and image count of every row: four narrow columns, no image bytes), so that the same code runs on
the real shards (``StudyStream``) and on hundreds of thousands of simulated ids (``bench/sim_batches.py``).

Per epoch, cycle and stream (DDP rank x loader worker), seeded by all four:

1. Row groups (``dataset_weights`` applied: 2.0 = every group twice, 0.5 = a seeded half) are shuffled and
   dealt round-robin to the streams; with fewer than two groups per stream every stream reads all of them
   and keeps every n-th row. Streams stay disjoint, as before.
2. Each dataset's rows, group by group in that order, pass through that dataset's shuffle buffer (its share
   of ``shuffle_buffer`` by row count, at least ``MIN_BUFFER`` rows): only one row group per dataset is read
   at a time and memory stays at about ``shuffle_buffer`` rows.
3. The datasets are interleaved by a seeded permutation of the multiset {dataset d: n_d rows}. The dataset
   of each batch position is therefore distributed exactly as in a uniform shuffle of all the stream's rows
   (the dataset shares of a batch follow the same multivariate hypergeometric law), whatever the row group
   size and the order in which prep wrote the rows.
4. ``patient_batches`` fills batches in that order but defers a study whose patient (or study) is already in
   the batch to the next batch: two studies of one patient in one batch are a negative pair that is really a
   positive one. When the data cannot allow it (fewer patients than a batch, or one patient with most of the
   studies) it says so once and lets same-patient pairs through rather than stall.

Measured on row ids (see docs/batches.md): dataset shares per 128-study batch stay inside the band of a
uniform shuffle, and same-patient pairs per 128-study batch drop from 17.1 (512-row buffer; 4.3 with
2048) to 0 (400,000 simulated studies, row groups of 150).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

#: the smallest per-dataset shuffle buffer (rows): a small dataset still mixes its own rows
MIN_BUFFER = 64


@dataclass
class StudyIndex:
    """Row ids of the usable rows (the split, at least one image) of every row group.

    ``groups[g] = (dataset position, row group)``; ``rows[g]`` the row positions inside the row group;
    ``subjects[g]`` / ``studies[g]`` the matching patient and study ids."""

    names: list[str]
    groups: list[tuple[int, object]] = field(default_factory=list)
    rows: list[list[int]] = field(default_factory=list)
    subjects: list[list[str]] = field(default_factory=list)
    studies: list[list[str]] = field(default_factory=list)

    def add(self, dataset: int, group, rows: list[int], subjects: list[str], studies: list[str]) -> None:
        self.groups.append((dataset, group))
        self.rows.append(list(rows))
        self.subjects.append(list(subjects))
        self.studies.append(list(studies))

    def count(self, dataset: int | None = None) -> int:
        return sum(len(r) for (d, _), r in zip(self.groups, self.rows) if dataset is None or d == dataset)

    def patients(self) -> int:
        return len({(self.groups[g][0], s) for g in range(len(self.groups)) for s in self.subjects[g]})


def build_index(datasets: Sequence, split: str) -> StudyIndex:
    """Index the rows of ``split`` with images in ``ShardDataset``s (reads split, study, subject and the
    images' ``view`` leaf column only; Parquet statistics skip row groups that hold no row of the split)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    idx = StudyIndex([d.name for d in datasets])
    cols = ["split", "study_id", "subject_id", "images.list.element.view"]
    for di, d in enumerate(datasets):
        files: dict = {}
        for g in d.row_groups(split):
            pf = files.get(g.path) or files.setdefault(g.path, pq.ParquetFile(g.path))
            if not _may_hold(pf, g.index, split):
                continue
            t = pf.read_row_group(g.index, columns=cols)
            n_img = pc.fill_null(pc.list_value_length(t.column("images")), 0).to_pylist()
            splits = t.column("split").to_pylist()
            keep = [i for i in range(t.num_rows) if splits[i] == split and n_img[i] > 0]
            if keep:
                sub, stu = t.column("subject_id").to_pylist(), t.column("study_id").to_pylist()
                idx.add(di, g, keep, [sub[i] for i in keep], [stu[i] for i in keep])
    return idx


def _may_hold(pf, index: int, split: str) -> bool:
    md = pf.metadata.row_group(index)
    for i in range(md.num_columns):
        col = md.column(i)
        if col.path_in_schema == "split" and col.is_stats_set and col.statistics.has_min_max:
            return col.statistics.min <= split <= col.statistics.max
    return True


# -- the plan of one cycle -----------------------------------------------------------------------------
def cycle_groups(index: StudyIndex, weights: dict, seed, epoch: int, cycle: int, shuffle: bool = True) -> list[int]:
    """Row groups (positions in ``index.groups``) of one pass, ``dataset_weights`` applied, shuffled."""
    rng = random.Random(f"{seed}:{epoch}:{cycle}")
    out: list[int] = []
    for di, name in enumerate(index.names):
        mine = [g for g, (d, _) in enumerate(index.groups) if d == di]
        w = float(weights.get(name, 1.0))
        reps, frac = int(w), w - int(w)
        out += mine * reps + rng.sample(mine, round(frac * len(mine)))
    if shuffle:
        rng.shuffle(out)
    return out


def stream_rows(index: StudyIndex, groups: list[int], stream: int, n_streams: int) -> dict[int, list[tuple[int, int]]]:
    """dataset -> its row ids (group, row position) for this stream, group by group in ``groups`` order."""
    by_group = len(groups) >= 2 * n_streams
    out: dict[int, list[tuple[int, int]]] = {}
    k = -1
    for g in groups[stream::n_streams] if by_group else groups:
        d = index.groups[g][0]
        for pos in index.rows[g]:
            k += 1
            if by_group or k % n_streams == stream:
                out.setdefault(d, []).append((g, pos))
    return out


def _reorder_groups(ids: list[tuple[int, int]], rng: random.Random) -> list[tuple[int, int]]:
    """Row ids grouped by row group, the groups in a new random order (rows within a group keep theirs)."""
    blocks: dict[int, list] = {}
    for gid in ids:
        blocks.setdefault(gid[0], []).append(gid)
    order = list(blocks)
    rng.shuffle(order)
    return [x for g in order for x in blocks[g]]


def buffer_shuffle(items: Iterable, size: int, rng: random.Random) -> Iterator:
    """A shuffle buffer of ``size`` items: once full, each new item replaces a random one that goes out."""
    if size <= 1:
        yield from items
        return
    buf: list = []
    for x in items:
        buf.append(x)
        if len(buf) >= size:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def buffer_sizes(counts: dict[int, int], total: int) -> dict[int, int]:
    """Each dataset's share of ``total`` buffer rows by row count, at least ``MIN_BUFFER`` (or its rows)."""
    n = max(1, sum(counts.values()))
    return {d: max(min(MIN_BUFFER, c), round(total * c / n)) for d, c in counts.items()}


def interleave(streams: dict[int, Iterator], counts: dict[int, int], rng: random.Random) -> Iterator:
    """Items of the per-dataset iterators in the order of a seeded permutation of the multiset
    {d: counts[d]}: dataset shares of every window are those of a uniform shuffle."""
    order = [d for d in sorted(counts) for _ in range(counts[d])]
    rng.shuffle(order)
    for d in order:
        x = next(streams[d], None)
        if x is not None:
            yield x
    for d in sorted(streams):  # an iterator that held more than counted (should not happen) loses nothing
        yield from streams[d]


def plan_cycle(
    index: StudyIndex,
    seed,
    epoch: int,
    cycle: int,
    stream: int,
    n_streams: int,
    buffer: int,
    weights: dict | None = None,
    fetch: Callable[[int, list[tuple[int, int]]], Iterator] | None = None,
    train: bool = True,
) -> Iterator:
    """One pass of one stream, in training order: row ids ``(group, pos)``, or with ``fetch(dataset, ids)``
    whatever it yields per id (the stream yields ``(id, row)``: the buffers then hold rows, not ids, and use
    their random numbers exactly as on ids). ``train=False``: every row once, in index order."""
    # every pass of an epoch keeps the epoch's first deal of row groups to streams, so the DDP ranks' rows
    # stay disjoint even when one rank runs out and starts another pass (tests/test_multinode.py); a later
    # pass only visits the stream's own groups in a new order
    groups = cycle_groups(index, weights or {}, seed, epoch, 0, shuffle=train)
    per = stream_rows(index, groups, stream, n_streams)
    if cycle and train:
        per = {
            d: _reorder_groups(ids, random.Random(f"{seed}:{epoch}:{cycle}:order:{stream}")) for d, ids in per.items()
        }
    fetch = fetch or (lambda d, ids: iter(ids))
    if not train:
        for d in sorted(per):
            yield from fetch(d, per[d])
        return
    counts = {d: len(ids) for d, ids in per.items()}
    sizes = buffer_sizes(counts, buffer)
    its = {
        d: buffer_shuffle(fetch(d, ids), sizes[d], random.Random(f"{seed}:{epoch}:{cycle}:buf:{stream}:{d}"))
        for d, ids in per.items()
    }
    yield from interleave(its, counts, random.Random(f"{seed}:{epoch}:{cycle}:mix:{stream}"))


# -- patient-aware batches -----------------------------------------------------------------------------
def patient_batches(
    items: Iterable[tuple[tuple, object]],
    size: int,
    distinct: bool = True,
    warn: Callable[[str], None] | None = None,
    max_wait: int | None = None,
) -> Iterator[list]:
    """Batches of ``size`` payloads from ``(keys, payload)`` pairs, in order, except that (``distinct``) an
    item sharing any key (study, patient) with the batch waits for the next batch. When more than
    ``max_wait`` (default 4 x size) items wait, the data cannot keep keys apart: ``warn`` is called once and
    only each item's first key (the study) is kept distinct from then on. The last, partial batch is
    yielded too (validation). Nothing is dropped."""
    max_wait = 4 * size if max_wait is None else max_wait
    batch: list = []
    seen: set = set()
    carry: list = []
    strict = [True]

    def keys_of(keys: tuple) -> tuple:
        return keys if strict[0] else keys[:1]

    def take(queue: list) -> Iterator[list]:
        nonlocal batch, seen, carry
        while queue:
            keys, obj = queue.pop(0)
            ks = keys_of(keys)
            if distinct and any(k in seen for k in ks):
                carry.append((keys, obj))
                if strict[0] and len(carry) > max_wait:
                    strict[0] = False
                    if warn:
                        warn(
                            f"avoid_same_patient: more than {max_wait} studies waited for a batch without their "
                            f"patient; the data has too few patients for batches of {size}; going on with "
                            "same-patient pairs allowed"
                        )
                continue
            batch.append(obj)
            seen.update(ks)
            if len(batch) == size:
                yield batch
                batch, seen = [], set()
                queue[:0], carry = carry, []

    for item in items:
        yield from take([item])
    while carry:
        if batch:
            yield batch
        batch, seen = [], set()
        queue, carry = carry, []
        yield from take(queue)
    if batch:
        yield batch


def same_patient_pairs(subjects: Sequence) -> int:
    """Pairs of batch entries that share a patient key."""
    return sum(c * (c - 1) // 2 for c in Counter(subjects).values())
