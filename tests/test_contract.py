"""The shard contract: schema, writer, manifest, rejects, reader, merge, determinism."""

from __future__ import annotations


import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cxrprep.schema import (
    COLUMNS, SCHEMA_VERSION, STUDY_SCHEMA, VERSION_KEY, ShardSchemaError, check_shard, empty_row,
    read_manifest,
)
from cxrprep.shards import ShardDataset, ShardWriter, find_datasets, merge_parts, open_datasets, sha256_file
from cxrprep.parallel import in_part, parse_part, ordered_map


def _row(i: int, dataset="demo", split="train") -> dict:
    r = empty_row(dataset, f"s{i:05d}", f"p{i % 7}", split)
    r["findings"] = f"Finding number {i}."
    r["findings_sentences"] = [r["findings"]]
    r["labels"] = [1, 0, -1, None]
    r["images"] = [dict(image_id=f"img{i}", view="PA", image=bytes([i % 256]) * 1000, image_clahe=None,
                        height=10, width=12)]
    return r


def _write(out, n=50, **kw):
    with ShardWriter(out, "demo", config={"seed": 1}, label_names=["a", "b", "c", "d"], **kw) as w:
        for i in range(n):
            w.write(_row(i))
        w.reject("x/bad.txt", "s99999", stage="read", kind="failed", reason="empty file")
        w.reject("x/none.txt", None, stage="sections", kind="skipped", reason="no findings or impression")
        w.counts.inputs_seen = n + 2
    return w.manifest


def test_schema_columns_and_version():
    assert SCHEMA_VERSION == 1
    assert COLUMNS == ("dataset", "study_id", "subject_id", "split", "source", "findings", "impression",
                       "findings_sentences", "impression_sentences", "findings_bt", "impression_bt",
                       "sections", "fallback", "labels", "prompts", "images")
    assert STUDY_SCHEMA.field("labels").type == pa.list_(pa.int8())
    img = STUDY_SCHEMA.field("images").type.value_type
    assert [f.name for f in img] == ["image_id", "view", "image", "image_clahe", "height", "width"]
    assert not STUDY_SCHEMA.field("study_id").nullable


def test_roundtrip_manifest_rejects(tmp_path):
    m = _write(tmp_path, n=50, row_group_rows=16)
    d = tmp_path / "demo"
    assert m["counts"]["inputs_seen"] == 52 and m["counts"]["rows_written"] == 50
    assert m["counts"]["failed"] == 1 and m["counts"]["skipped"] == 1
    assert m["counts"]["images_written"] == 50
    on_disk = read_manifest(d)
    assert on_disk["parts"][0]["sha256"] == sha256_file(d / on_disk["parts"][0]["file"])
    assert on_disk["label_names"] == ["a", "b", "c", "d"] and on_disk["config"] == {"seed": 1}
    ds = ShardDataset(d, verify=True)
    assert ds.num_rows == 50
    assert len(ds.row_groups()) == 4  # 16+16+16+2: small row groups stream
    rows = list(ds.iter_rows())
    assert [r["study_id"] for r in rows] == [f"s{i:05d}" for i in range(50)]
    assert rows[3]["labels"] == [1, 0, -1, None]
    rej = pq.read_table(d / "rejects.parquet")
    assert rej.num_rows == 2 and set(rej["kind"].to_pylist()) == {"failed", "skipped"}
    assert not list(d.glob(".tmp-*"))


def test_deterministic_bytes(tmp_path):
    _write(tmp_path / "a")
    _write(tmp_path / "b")
    a = sorted((tmp_path / "a" / "demo").glob("*.parquet"))
    b = sorted((tmp_path / "b" / "demo").glob("*.parquet"))
    assert [p.name for p in a] == [p.name for p in b]
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes()


def test_size_rotation(tmp_path):
    m = _write(tmp_path, n=40, max_part_bytes=8000, row_group_rows=4)
    assert len(m["parts"]) > 1
    assert sum(p["rows"] for p in m["parts"]) == 40
    assert ShardDataset(tmp_path / "demo").num_rows == 40


def test_lost_input_is_refused(tmp_path):
    w = ShardWriter(tmp_path, "demo")
    w.write(_row(1))
    w.counts.inputs_seen = 3
    with pytest.raises(ValueError, match="inputs seen 3"):
        w.close()


def test_non_null_column_enforced(tmp_path):
    r = _row(1)
    r["subject_id"] = None
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError, ValueError)):
        with ShardWriter(tmp_path, "demo") as w:
            w.write(r)


def test_check_shard_wrong_column(tmp_path):
    bad = STUDY_SCHEMA.remove(STUDY_SCHEMA.get_field_index("impression")).append(pa.field("extra", pa.int32()))
    p = tmp_path / "bad.parquet"
    pq.write_table(bad.empty_table(), p)
    with pytest.raises(ShardSchemaError) as e:
        check_shard(p)
    msg = str(e.value)
    assert str(p) in msg and "missing column 'impression'" in msg and "unexpected column 'extra'" in msg


def test_check_shard_wrong_type_and_version(tmp_path):
    i = STUDY_SCHEMA.get_field_index("labels")
    bad = STUDY_SCHEMA.set(i, pa.field("labels", pa.list_(pa.float32())))
    p = tmp_path / "t.parquet"
    pq.write_table(bad.empty_table(), p)
    with pytest.raises(ShardSchemaError, match=r"'labels' has type list<\w+: float>"):
        check_shard(p)
    old = STUDY_SCHEMA.with_metadata({VERSION_KEY: b"0"})
    p2 = tmp_path / "v.parquet"
    pq.write_table(old.empty_table(), p2)
    with pytest.raises(ShardSchemaError, match="schema version 0"):
        check_shard(p2)
    p3 = tmp_path / "n.parquet"
    pq.write_table(pa.table({"a": [1]}), p3)
    with pytest.raises(ShardSchemaError, match="not a cxrkit shard"):
        check_shard(p3)


def test_find_and_open(tmp_path):
    _write(tmp_path / "root")
    with ShardWriter(tmp_path / "root", "other") as w:
        w.write(_row(1, dataset="other", split="test"))
    found = find_datasets(tmp_path / "root")
    assert [p.name for p in found] == ["demo", "other"]
    ds = open_datasets([tmp_path / "root"])
    assert [d.name for d in ds] == ["demo", "other"]
    assert [r["study_id"] for r in ds[1].iter_rows(split="test")] == ["s00001"]
    assert list(ds[1].iter_rows(split="train")) == []
    with pytest.raises(FileNotFoundError):
        find_datasets(tmp_path / "missing")


def test_part_merge_equals_single(tmp_path):
    rows = [_row(i) for i in range(30)]
    with ShardWriter(tmp_path / "one", "demo", config={"x": 1, "part": None}) as w:
        w.write_many(rows)
    for i in range(3):
        with ShardWriter(tmp_path / "split", "demo", config={"x": 1, "part": f"{i}/3"}, part=(i, 3)) as w:
            for r in rows:
                if in_part(r["subject_id"], (i, 3)):
                    w.write(r)
    with pytest.raises(ShardSchemaError, match="merge"):
        ShardDataset(tmp_path / "split" / "demo")
    merged = merge_parts(tmp_path / "split" / "demo")
    assert merged["counts"]["rows_written"] == 30
    a = sorted(r["study_id"] for r in ShardDataset(tmp_path / "one" / "demo").iter_rows())
    b = sorted(r["study_id"] for r in ShardDataset(tmp_path / "split" / "demo").iter_rows())
    assert a == b


def test_merge_missing_part(tmp_path):
    with ShardWriter(tmp_path, "demo", part=(0, 2)) as w:
        w.write(_row(0))
    with pytest.raises(ShardSchemaError, match=r"parts \[1\] of 2 are missing"):
        merge_parts(tmp_path / "demo")


def test_rerun_replaces_killed_run(tmp_path):
    w = ShardWriter(tmp_path, "demo", row_group_rows=4, max_part_bytes=5000)
    for i in range(20):
        w.write(_row(i))
    # killed: no close(); a temporary part is left behind
    assert list((tmp_path / "demo").glob(".tmp-*")) or list((tmp_path / "demo").glob("part-*"))
    _write(tmp_path / "ref")
    _write(tmp_path)
    got = sorted(p.name for p in (tmp_path / "demo").iterdir())
    want = sorted(p.name for p in (tmp_path / "ref" / "demo").iterdir())
    assert got == want


def test_parse_part_and_in_part():
    assert parse_part("1/4") == (1, 4) and parse_part("0/1") is None and parse_part(None) is None
    for bad in ("4/4", "x", "1/0", "-1/3"):
        with pytest.raises(ValueError, match="--part"):
            parse_part(bad)
    keys = [f"p{i}" for i in range(100)]
    owners = [[k for k in keys if in_part(k, (i, 3))] for i in range(3)]
    assert sorted(sum(owners, [])) == sorted(keys)


def _square(x):
    return x * x


def test_ordered_map_keeps_order():
    assert list(ordered_map(_square, range(20), workers=2, max_in_flight=3)) == [i * i for i in range(20)]
    assert list(ordered_map(_square, range(5), workers=1)) == [0, 1, 4, 9, 16]
