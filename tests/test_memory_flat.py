"""What keeps the main process of a long ``cxrprep reports`` run flat (issue 25: peak memory at 200,000
reports within 1.2x of that at 20,000): the compact set of seen study ids, and the writer joining the many
small pieces a small split collects."""

from __future__ import annotations

import random

import pytest

from cxrprep.datasets import seen as seen_mod
from cxrprep.datasets.seen import SeenIds


def _reference(batches: list[list[str]]) -> list[list[bool]]:
    s: set = set()
    out = []
    for b in batches:
        row = []
        for x in b:
            row.append(x in s)
            s.add(x)
        out.append(row)
    return out


@pytest.mark.parametrize("flush", [3, 64, 16_384])
def test_seen_ids_match_a_set(monkeypatch, flush):
    """Duplicates within a batch and across batches, before and after ids move into the sorted arrays;
    leading zeros, non-digit and over-long ids stay distinct strings."""
    monkeypatch.setattr(seen_mod, "_FLUSH", flush)
    rng = random.Random(0)
    pool = [str(rng.randrange(50_000_000, 50_003_000)) for _ in range(2_000)]
    pool += ["0123", "123", "s77", "9" * 25, "9" * 18, "1", "x"]
    batches = [[rng.choice(pool) for _ in range(rng.randrange(0, 50))] for _ in range(120)]
    s = SeenIds()
    assert [s.seen_before(b) for b in batches] == _reference(batches)
    assert len(s) == len({x for b in batches for x in b})
    if flush == 3:
        assert 1 < len(s.levels) <= 12  # merged like a binary counter, not one array per flush


def test_seen_ids_keep_few_bytes_per_id(monkeypatch):
    monkeypatch.setattr(seen_mod, "_FLUSH", 1_000)
    s = SeenIds()
    for i in range(100):
        assert not any(s.seen_before([str(50_000_000 + 100 * i + j) for j in range(100)]))
    assert sum(a.nbytes for a in s.levels) + 80 * len(s.recent) < 12 * 10_000
    assert all(s.seen_before(["50000000", "50009999"]))


def test_many_small_pieces_give_the_same_bytes(tmp_path):
    """A split that gets one row per table (validate in a long reports run) collects more pieces than
    the writer keeps apart; joining them changes no byte of the files."""
    import pyarrow as pa

    from cxrprep.schema import STUDY_SCHEMA, empty_row
    from cxrprep.shards import ShardWriter
    from cxrprep.shards import writer as writer_mod

    rows = []
    for i in range(200):
        r = empty_row("ds", f"s{i:03d}", f"p{i % 7}", "validate" if i % 10 == 0 else "train")
        r["impression"] = f"impression {i} " * (i % 5 + 1)
        r["impression_sentences"] = [f"Sentence {i}."]
        r["labels"] = None if i % 4 == 0 else [i % 3 - 1, 1, 0]
        rows.append(r)
    kw = dict(label_names=["A", "B", "C"], row_group_rows=64)
    with ShardWriter(tmp_path / "one", "ds", **kw) as w:
        w.write_many(rows)
        w.counts.inputs_seen = len(rows)
    table = pa.Table.from_pylist(rows, schema=STUDY_SCHEMA)
    with ShardWriter(tmp_path / "bulk", "ds", **kw) as w:
        most = 0
        for i in range(0, len(rows), 10):  # 20 tables, each with one validate row
            w.write_table(table.slice(i, 10))
            most = max(most, len(w._splits["validate"].pieces))
        w.counts.inputs_seen = len(rows)
    assert most <= writer_mod._MAX_PIECES
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.parquet"))
    assert files == sorted(p.relative_to(tmp_path / "bulk") for p in (tmp_path / "bulk").rglob("*.parquet"))
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "bulk" / rel).read_bytes(), rel
