"""A freshly written dataset folder opens as-is in pyarrow, polars, duckdb and Hugging Face datasets, with
the same rows, named labels, decodable images and real splits (issue 14, "The shard folder")."""

from __future__ import annotations

import cv2
import numpy as np
import polars as pl
import pyarrow.dataset as pds
import pytest

from cxrprep.schema import empty_row
from cxrprep.shards import ShardDataset, ShardWriter

LABELS = ["No Finding", "Pleural Effusion", "Cardiomegaly"]
SPLIT = {0: "train", 1: "train", 2: "validate", 3: "test"}


def _jpeg(v: int, h=20, w=24) -> bytes:
    return cv2.imencode(".jpg", np.full((h, w), v, np.uint8))[1].tobytes()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    with ShardWriter(root, "toy", label_names=LABELS, row_group_rows=3, max_part_bytes=4000) as w:
        for i in range(14):
            r = empty_row("toy", f"s{i:03d}", f"p{i}", SPLIT[i % 4])
            r["findings"] = f"finding {i}"
            r["labels"] = [1 if i % 2 else 0, None, -1]
            r["images"] = [
                dict(image_id=f"i{i}", view="PA", image=_jpeg(10 * i), image_clahe=_jpeg(5 * i), height=20, width=24)
            ]
            w.write(r)
        w.reject("bad.dcm", None, stage="image", kind="failed", reason="not a DICOM")
        w.counts.inputs_seen = 15
    d = root / "toy"
    assert len(list((d / "data").iterdir())) > 3  # several files per split: the readers must join them
    return d


def test_pyarrow_dataset(folder):
    t = pds.dataset(folder / "data").to_table()
    assert t.num_rows == 14
    assert sorted(t.column("study_id").to_pylist()) == [f"s{i:03d}" for i in range(14)]
    assert [f.name for f in t.schema.field("labels").type] == LABELS
    # the folder itself too, when the reader is told to skip what is not Parquet (README, manifest, rejects)
    assert pds.dataset(folder, exclude_invalid_files=True).count_rows() == 14


def test_polars(folder):
    df = pl.read_parquet(folder / "data")
    assert df.height == 14
    assert df.schema["labels"] == pl.Struct({n: pl.Int8 for n in LABELS})
    lazy = pl.scan_parquet(str(folder / "**" / "*.parquet"))
    assert lazy.select(pl.len()).collect().item() == 14
    pos = df.filter(pl.col("labels").struct.field("No Finding") == 1).height
    assert pos == 7


def test_duckdb(folder):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is a test-only extra (pip install cxrkit[dev])")
    con = duckdb.connect()
    q = f"read_parquet('{folder}/**/*.parquet')"
    assert con.execute(f"SELECT count(*) FROM {q}").fetchone()[0] == 14  # the reject is not a row
    assert con.execute(f'SELECT count(*) FROM {q} WHERE labels."Pleural Effusion" IS NULL').fetchone()[0] == 14
    assert con.execute(f"SELECT split, count(*) FROM {q} GROUP BY split ORDER BY split").fetchall() == [
        ("test", 3),
        ("train", 8),
        ("validate", 3),
    ]
    rejects = con.execute(f"SELECT count(*) FROM read_json_auto('{folder}/rejects.jsonl')").fetchone()[0]
    assert rejects == 1


def test_hf_datasets(folder, tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets is a test-only extra (pip install cxrkit[dev])")
    ds = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))
    assert {k: v.num_rows for k, v in ds.items()} == {"train": 8, "validate": 3, "test": 3}
    feats = ds["train"].features
    assert list(feats["labels"]) == LABELS  # named labels
    assert isinstance(
        feats["images"][0]["image"] if isinstance(feats["images"], list) else feats["images"].feature["image"],
        datasets.Image,
    )
    row = ds["train"][1]
    assert row["labels"] == {"No Finding": 1, "Pleural Effusion": None, "Cardiomegaly": -1}
    im = row["images"][0]["image"]
    assert im.size == (24, 20) and abs(int(np.asarray(im).mean()) - 10) <= 2  # decoded PIL image
    assert row["images"][0]["image_clahe"].size == (24, 20)


def test_same_rows_as_our_reader(folder):
    ours = ShardDataset(folder).read_table(["study_id", "labels"])
    theirs = pl.read_parquet(folder / "data").sort("study_id")
    got = {r["study_id"]: list(r["labels"].values()) for r in theirs.to_dicts()}
    assert got == {r["study_id"]: r["labels"] for r in ours.to_pylist()}
