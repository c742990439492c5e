"""The shard contract: schema, folder layout, writer, manifest, rejects, card, reader, merge, lock,\nfaults,
determinism."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cxrprep.parallel import in_part, ordered_map, parse_part
from cxrprep.schema import (
    COLUMNS,
    LABELS_KEY,
    SCHEMA_VERSION,
    STUDY_SCHEMA,
    VERSION_KEY,
    ShardSchemaError,
    check_shard,
    empty_row,
    file_schema,
    read_manifest,
)
from cxrprep.shards import (
    DatasetBusy,
    IncompleteDataset,
    ShardDataset,
    ShardWriteError,
    ShardWriter,
    find_datasets,
    merge_parts,
    open_datasets,
    scan_datasets,
    sha256_file,
)


def _row(i: int, dataset="demo", split="train") -> dict:
    r = empty_row(dataset, f"s{i:05d}", f"p{i % 7}", split)
    r["findings"] = f"Finding number {i}."
    r["findings_sentences"] = [r["findings"]]
    r["labels"] = [1, 0, -1, None]
    r["images"] = [
        dict(image_id=f"img{i}", view="PA", image=bytes([i % 256]) * 1000, image_clahe=None, height=10, width=12)
    ]
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
    assert SCHEMA_VERSION == 2
    assert COLUMNS == tuple(
        "dataset study_id subject_id split source findings impression findings_sentences impression_sentences "
        "findings_bt impression_bt sections fallback labels prompts images".split()
    )
    assert STUDY_SCHEMA.field("labels").type == pa.list_(pa.int8())
    img = STUDY_SCHEMA.field("images").type.value_type
    assert [f.name for f in img] == ["image_id", "view", "image", "image_clahe", "height", "width"]
    assert not STUDY_SCHEMA.field("study_id").nullable


def test_file_schema_is_self_describing():
    fs = file_schema(["No Finding", "Pleural Effusion"])
    assert fs.names == list(COLUMNS)
    assert fs.field("labels").type == pa.struct([("No Finding", pa.int8()), ("Pleural Effusion", pa.int8())])
    img = fs.field("images").type.value_type
    assert img.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    meta = fs.metadata
    assert meta[VERSION_KEY] == b"2" and json.loads(meta[LABELS_KEY]) == ["No Finding", "Pleural Effusion"]
    feats = json.loads(meta[b"huggingface"])["info"]["features"]
    assert feats["images"][0]["image"] == {"_type": "Image"}
    assert feats["labels"]["No Finding"] == {"dtype": "int8", "_type": "Value"}
    assert file_schema([]).field("labels").type == pa.list_(pa.int8())  # no label names: an int8 list
    with pytest.raises(ValueError, match="distinct"):
        file_schema(["a", "a"])


def test_roundtrip_manifest_rejects_card(tmp_path):
    m = _write(tmp_path, n=50, row_group_rows=16)
    d = tmp_path / "demo"
    assert m["counts"]["inputs_seen"] == 52 and m["counts"]["rows_written"] == 50
    assert m["counts"]["failed"] == 1 and m["counts"]["skipped"] == 1
    assert m["counts"]["images_written"] == 50
    on_disk = read_manifest(d)
    assert on_disk["parts"][0]["sha256"] == sha256_file(d / on_disk["parts"][0]["file"])
    assert on_disk["label_names"] == ["a", "b", "c", "d"] and on_disk["config"] == {"seed": 1}
    assert [p["file"] for p in on_disk["parts"]] == ["data/train-00000-of-00001.parquet"]
    assert on_disk["splits"] == {"train": 50} and on_disk["rejects"] == {"file": "rejects.jsonl", "rows": 2}
    ds = ShardDataset(d, verify=True)
    assert ds.num_rows == 50
    assert len(ds.row_groups()) == 4  # 16+16+16+2: small row groups stream
    rows = list(ds.iter_rows())
    assert [r["study_id"] for r in rows] == [f"s{i:05d}" for i in range(50)]
    assert rows[3]["labels"] == [1, 0, -1, None]  # in memory: a list in label_names order
    assert rows[3]["images"][0]["image"] == bytes([3]) * 1000 and rows[3]["images"][0]["image_clahe"] is None
    raw = pq.read_table(d / on_disk["parts"][0]["file"]).slice(3, 1).to_pylist()[0]
    assert raw["labels"] == {"a": 1, "b": 0, "c": -1, "d": None}  # on disk: named fields
    assert raw["images"][0]["image"] == {"bytes": bytes([3]) * 1000, "path": None}
    rej = ds.rejects()
    assert len(rej) == 2 and {r["kind"] for r in rej} == {"failed", "skipped"}
    assert rej[0] == dict(
        source="x/bad.txt", study_id="s99999", stage="read", kind="failed", level="study", reason="empty file"
    )
    card = (d / "README.md").read_text()
    assert "- split: train" in card and 'path: "data/train-*.parquet"' in card
    assert "| train | 50 |" in card
    assert "Inputs seen 52 = rows written 50 + rejects 2" in card
    assert hashlib.sha256((d / "manifest.json").read_bytes()).hexdigest() in card
    assert on_disk["invocation"] in card  # the command that built it
    assert sorted(p.name for p in d.iterdir()) == [".lock", "README.md", "data", "manifest.json", "rejects.jsonl"]
    assert not list(d.rglob(".tmp-*"))


def test_one_file_set_per_split(tmp_path):
    with ShardWriter(tmp_path, "demo", label_names=["a", "b", "c", "d"], max_part_bytes=2000, row_group_rows=2) as w:
        for i in range(12):
            w.write(_row(i, split=("train", "validate", "test")[i % 3]))
    d = tmp_path / "demo"
    names = sorted(p.name for p in (d / "data").iterdir())
    assert names == [f"{s}-{k:05d}-of-00002.parquet" for s in ("test", "train", "validate") for k in range(2)]
    ds = ShardDataset(d)
    assert ds.splits == {"train": 4, "validate": 4, "test": 4}
    assert [r["study_id"] for r in ds.iter_rows(["study_id"], split="validate")] == [
        "s00001",
        "s00004",
        "s00007",
        "s00010",
    ]
    assert all(g.path.name.startswith("test-") for g in ds.row_groups("test"))
    assert ds.read_table(["study_id", "labels"], split="test").num_rows == 4
    with pytest.raises(ValueError, match="split"):
        with ShardWriter(tmp_path, "bad") as w:
            w.write(_row(1, dataset="bad", split="../x"))


def test_deterministic_bytes(tmp_path):
    _write(tmp_path / "a")
    _write(tmp_path / "b")
    a = sorted(p for p in (tmp_path / "a" / "demo").rglob("*") if p.is_file())
    b = sorted(p for p in (tmp_path / "b" / "demo").rglob("*") if p.is_file())
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes(), x.name


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
    fs = file_schema(["a"])
    bad = fs.remove(fs.get_field_index("impression")).append(pa.field("extra", pa.int32()))
    p = tmp_path / "bad.parquet"
    pq.write_table(bad.empty_table(), p)
    with pytest.raises(ShardSchemaError) as e:
        check_shard(p)
    msg = str(e.value)
    assert str(p) in msg and "missing column 'impression'" in msg and "unexpected column 'extra'" in msg


def test_check_shard_wrong_type_version_labels(tmp_path):
    fs = file_schema(["a", "b"])
    bad = fs.set(fs.get_field_index("labels"), pa.field("labels", pa.list_(pa.float32())))
    p = tmp_path / "t.parquet"
    pq.write_table(bad.empty_table(), p)
    with pytest.raises(ShardSchemaError, match=r"'labels' has type list<\w+: float>"):
        check_shard(p)
    p1 = tmp_path / "img.parquet"  # v1 images (plain bytes) under a v2 version tag
    i = fs.get_field_index("images")
    pq.write_table(fs.set(i, STUDY_SCHEMA.field("images")).empty_table(), p1)
    with pytest.raises(ShardSchemaError, match="'images' has type"):
        check_shard(p1)
    old = fs.with_metadata({VERSION_KEY: b"1"})
    p2 = tmp_path / "v.parquet"
    pq.write_table(old.empty_table(), p2)
    with pytest.raises(ShardSchemaError, match="schema version 1, this cxrkit reads version 2"):
        check_shard(p2)
    p3 = tmp_path / "n.parquet"
    pq.write_table(pa.table({"a": [1]}), p3)
    with pytest.raises(ShardSchemaError, match="not a cxrkit shard"):
        check_shard(p3)
    p4 = tmp_path / "ok.parquet"
    pq.write_table(fs.empty_table(), p4)
    check_shard(p4)
    with pytest.raises(ShardSchemaError, match=r"label names \['a', 'b'\] differ from the manifest's \['b', 'a'\]"):
        check_shard(p4, ["b", "a"])


def test_bad_rows_are_refused(tmp_path):
    r = _row(1)
    r["labels"] = [1, 0]
    with pytest.raises(ValueError, match="2 labels, the dataset has 4 label names"):
        with ShardWriter(tmp_path, "demo", label_names=["a", "b", "c", "d"]) as w:
            w.write(r)
    r = _row(2)
    r["images"][0]["image"] = None
    with pytest.raises(ValueError, match="image field 'image' must not be null"):
        with ShardWriter(tmp_path, "demo", label_names=["a", "b", "c", "d"]) as w:
            w.write(r)
    assert not list((tmp_path / "demo").rglob("*.parquet")) and not (tmp_path / "demo" / "manifest.json").exists()


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
    assert [r["labels"] for r in ds[1].iter_rows(["labels"])] == [[1, 0, -1, None]]  # no label names: a list
    with pytest.raises(FileNotFoundError):
        find_datasets(tmp_path / "missing")


def test_incomplete_dataset_is_refused_unless_skipped(tmp_path):
    root = tmp_path / "root"
    _write(root)
    w = ShardWriter(root, "killed", row_group_rows=2)
    for i in range(5):
        w.write(_row(i, dataset="killed"))
    w._lock.release()  # what a kill does: the kernel drops the lock, the temporary files stay
    assert list((root / "killed").glob(".tmp-*"))
    assert not list((root / "killed").rglob("*.parquet"))  # nothing visible without a manifest
    assert not list((root / "killed" / "data").iterdir())  # data/ only ever holds finished files
    assert scan_datasets(root) == ([root / "demo"], [root / "killed"])
    with pytest.raises(IncompleteDataset, match=r"killed: no manifest.json"):
        open_datasets([root])
    assert [d.name for d in open_datasets([root], skip_incomplete=True)] == ["demo"]
    with pytest.raises(ShardSchemaError, match="killed or has not finished"):
        ShardDataset(root / "killed")


def test_part_merge_equals_single(tmp_path):
    rows = [_row(i, split="train" if i % 4 else "test") for i in range(30)]
    with ShardWriter(tmp_path / "one", "demo", config={"x": 1, "part": None}) as w:
        w.write_many(rows)
    for i in range(3):
        with ShardWriter(tmp_path / "split", "demo", config={"x": 1, "part": f"{i}/3"}, part=(i, 3)) as w:
            for r in rows:
                if in_part(r["subject_id"], (i, 3)):
                    w.write(r)
    d = tmp_path / "split" / "demo"
    assert not (d / "README.md").exists()  # pieces get their card from the merge
    with pytest.raises(ShardSchemaError, match="merge"):
        ShardDataset(d)
    with pytest.raises(IncompleteDataset):
        find_datasets(tmp_path / "split")
    merged = merge_parts(d)
    assert merged["counts"]["rows_written"] == 30 and merged["splits"] == {"train": 22, "test": 8}
    assert sorted(p.name for p in (d / "data").iterdir())[0] == "test-0of3-00000-of-00001.parquet"
    a = sorted(r["study_id"] for r in ShardDataset(tmp_path / "one" / "demo").iter_rows())
    b = sorted(r["study_id"] for r in ShardDataset(d, verify=True).iter_rows())
    assert a == b
    assert "in 3 `--part` pieces" in (d / "README.md").read_text()
    # a whole run into the folder replaces the pieces' files, manifests and rejects
    with ShardWriter(tmp_path / "split", "demo", config={"x": 1}) as w:
        w.write_many(rows[:3])
    assert sorted(p.name for p in d.iterdir()) == [
        ".lock",
        ".lock-0of3",
        ".lock-1of3",
        ".lock-2of3",
        "README.md",
        "data",
        "manifest.json",
        "rejects.jsonl",
    ]
    assert ShardDataset(d).num_rows == 3 and len(list((d / "data").iterdir())) == 2


def test_merge_missing_part(tmp_path):
    with ShardWriter(tmp_path, "demo", part=(0, 2)) as w:
        w.write(_row(0))
    with pytest.raises(ShardSchemaError, match=r"parts \[1\] of 2 are missing"):
        merge_parts(tmp_path / "demo")


def test_rerun_replaces_killed_run(tmp_path):
    w = ShardWriter(tmp_path, "demo", row_group_rows=4, max_part_bytes=5000)
    for i in range(20):
        w.write(_row(i))
    w._lock.release()  # killed: no close(), the lock dies with the process, temporary files stay
    assert list((tmp_path / "demo").glob(".tmp-*"))
    _write(tmp_path / "ref")
    _write(tmp_path)
    got = sorted(str(p.relative_to(tmp_path / "demo")) for p in (tmp_path / "demo").rglob("*"))
    want = sorted(str(p.relative_to(tmp_path / "ref" / "demo")) for p in (tmp_path / "ref" / "demo").rglob("*"))
    assert got == want


def test_one_writer_per_folder(tmp_path):
    w = ShardWriter(tmp_path, "demo")
    with pytest.raises(DatasetBusy) as e:
        ShardWriter(tmp_path, "demo")
    assert f"pid {os.getpid()}" in str(e.value) and "demo is locked by another cxrprep run" in str(e.value)
    with pytest.raises(DatasetBusy):
        merge_parts(tmp_path / "demo")
    w.write(_row(1))
    w.close()  # the lock goes with the run
    _write(tmp_path)


def test_pieces_run_side_by_side(tmp_path):
    p0 = ShardWriter(tmp_path, "demo", part=(0, 2), row_group_rows=1)
    p1 = ShardWriter(tmp_path, "demo", part=(1, 2), row_group_rows=1)  # pieces share the folder
    with pytest.raises(DatasetBusy, match="piece 0of2"):
        ShardWriter(tmp_path, "demo", part=(0, 2))  # the same piece twice
    with pytest.raises(DatasetBusy, match=r"piece 0of2 \(pid \d+.*piece 1of2"):
        ShardWriter(tmp_path, "demo")  # a whole run while pieces run
    with pytest.raises(DatasetBusy, match="merge"):
        merge_parts(tmp_path / "demo")
    p0.write(_row(0))
    p1.write(_row(1))
    p1.close()
    assert list((tmp_path / "demo").glob(".tmp-0of2-*"))  # p1 never touched p0's files
    p0.close()
    assert merge_parts(tmp_path / "demo")["counts"]["rows_written"] == 2


def test_interrupted_rerun_keeps_the_finished_output(tmp_path):
    _write(tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "demo").rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(tmp_path, "demo", label_names=["a", "b", "c", "d"], row_group_rows=2) as w:
            for i in range(7):
                w.write(_row(100 + i))
            raise KeyboardInterrupt
    after = {p: p.read_bytes() for p in (tmp_path / "demo").rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    ShardDataset(tmp_path / "demo", verify=True)


def test_disk_full_aborts_with_the_cause(tmp_path, monkeypatch):
    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    w = ShardWriter(tmp_path, "demo", row_group_rows=2)
    w.write(_row(0))
    with pytest.raises(ShardWriteError, match="no space left on the device") as e:
        w.write(_row(1))
    assert str(tmp_path / "demo") in str(e.value)
    assert not list((tmp_path / "demo").rglob(".tmp-*")) and not list((tmp_path / "demo").rglob("*.parquet"))
    monkeypatch.undo()
    _write(tmp_path)  # the lock was released


def test_out_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match=r"--out .*file.txt is a file"):
        ShardWriter(f, "demo")


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


def test_write_table_gives_the_same_bytes_as_write(tmp_path):
    """Bulk ``write_table`` (used by the reports workers) and row-by-row ``write`` give identical files,
    across splits, row-group and file rotation, null labels and rows without images."""
    import pyarrow as pa

    from cxrprep.schema import STUDY_SCHEMA, empty_row
    from cxrprep.shards import ShardWriter

    rows = []
    for i in range(40):
        r = empty_row("ds", f"s{i:03d}", f"p{i % 7}", ("train", "validate", "test")[i % 3])
        r["impression"] = f"impression {i} " * (i % 5 + 1)
        r["impression_sentences"] = [f"Sentence {i}."]
        r["labels"] = None if i % 4 == 0 else [i % 3 - 1, 1, 0]
        if i % 2:
            r["images"] = [
                dict(image_id=f"im{i}", view="PA", image=bytes([i]) * (100 + i), image_clahe=None, height=4, width=5)
            ]
        rows.append(r)
    kw = dict(label_names=["A", "B", "C"], row_group_rows=5, max_part_bytes=2000)
    with ShardWriter(tmp_path / "one", "ds", **kw) as w:
        w.write_many(rows)
        w.counts.inputs_seen = len(rows)
    with ShardWriter(tmp_path / "bulk", "ds", **kw) as w:
        w.write(rows[0])  # mixed: a dict row first, then tables
        table = pa.Table.from_pylist(rows[1:], schema=STUDY_SCHEMA)
        w.write_table(table.slice(0, 17))
        w.write_table(table.slice(17))
        w.counts.inputs_seen = len(rows)
    a = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.parquet"))
    b = sorted(p.relative_to(tmp_path / "bulk") for p in (tmp_path / "bulk").rglob("*.parquet"))
    assert a == b and len(a) > 3
    for rel in a:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "bulk" / rel).read_bytes(), rel


def test_forked_child_does_not_release_the_lock(tmp_path):
    from cxrprep.shards import DatasetLock

    lock = DatasetLock(tmp_path / "demo").acquire()
    pid = os.fork()
    if pid == 0:  # a pool worker forked while the writer holds the folder, then collected
        lock.release()
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(DatasetBusy):
        DatasetLock(tmp_path / "demo").acquire()
    lock.release()
    DatasetLock(tmp_path / "demo").acquire().release()
