"""Issue 22 readers: GLoRIA's split for RSNA/SIIM, the released CheXpert 5x200 file with its reports."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cxrprep.cli.app import app as prep
from cxrprep.shards import ShardDataset

ROOT = Path(__file__).parent.parent
runner = CliRunner()
TASKS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


def test_sklearn_shuffle_split_is_a_seeded_permutation_cut():
    from cxrprep.datasets.splits import sklearn_shuffle_split

    train, test = sklearn_shuffle_split(10, 0.3, 0)
    perm = np.random.RandomState(0).permutation(10)
    # train_test_split(range(10), test_size=0.3, random_state=0): test = first ceil(3.0) of the permutation
    assert list(test) == list(perm[:3]) and list(train) == list(perm[3:])
    assert list(perm) == [2, 8, 4, 9, 1, 6, 7, 3, 0, 5]  # numpy's frozen legacy stream for seed 0
    # RSNA's 26,684 patients: ceil(0.3 n) in the rest, which is halved (test gets the train half)
    tr, rest = sklearn_shuffle_split(26684, 0.15 * 2, 0)
    assert len(rest) == math.ceil(0.3 * 26684) == 8006 and len(tr) == 18678


def test_gloria_split_counts_and_two_stages():
    from cxrprep.datasets.splits import gloria_split, sklearn_shuffle_split

    keys = [f"k{i:03d}" for i in range(200)]
    s = gloria_split(keys)
    assert (s.count("train"), s.count("validate"), s.count("test")) == (140, 30, 30)
    _, rest = sklearn_shuffle_split(200, 0.3, 0)
    first, second = sklearn_shuffle_split(60, 0.5, 0)
    assert {keys[p] for p in rest[first]} == {k for k, v in zip(keys, s) if v == "test"}
    assert {keys[p] for p in rest[second]} == {k for k, v in zip(keys, s) if v == "validate"}


def test_rsna_and_siim_split_method_gloria(tmp_path):
    from cxrprep.datasets.benchmarks import hash_split, read_rsna, read_siim
    from cxrprep.datasets.splits import gloria_split

    rsna = tmp_path / "stage_2_train_labels.csv"
    pids = [f"p{i:02d}" for i in range(30)]
    rsna.write_text(
        "patientId,x,y,width,height,Target\n" + "".join(f"{p},,,,,{i % 2}\n" for i, p in enumerate(reversed(pids)))
    )
    items, _ = read_rsna(rsna, tmp_path, split_method="gloria")
    assert [x["study_id"] for x in items] == pids  # sorted, as pandas groupby orders them
    assert [x["split"] for x in items] == gloria_split(pids)
    items, _ = read_rsna(rsna, tmp_path)
    assert all(x["split"] == hash_split(x["study_id"]) for x in items)
    siim = tmp_path / "train-rle.csv"
    rows = [f"img{i}" for i in range(20)] + ["img3", "img7"]  # two images with a second mask row
    siim.write_text(
        "ImageId, EncodedPixels\n" + "".join(f"{r}, {'1 2' if r in ('img3', 'img7') else '-1'}\n" for r in rows)
    )
    items, _ = read_siim(siim, tmp_path, split_method="gloria")
    per_row = gloria_split(rows)
    first = {}
    for r, sp in zip(rows, per_row):
        first.setdefault(r, sp)
    assert {x["study_id"]: x["split"] for x in items} == first and len(items) == 20
    r = runner.invoke(prep, ["rsna", str(rsna), "--split-method", "random", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--split-method" in r.output


def _released(tmp_path: Path) -> tuple[Path, list[dict]]:
    src = ROOT / "examples/chexpert/train.csv"
    with open(src) as f:
        rows = list(csv.DictReader(f))
    one = [dict(r) for r in rows if sum(r[t] in ("1.0", "1") for t in TASKS) == 1]
    assert one
    for k, r in enumerate(one):
        r["Report Impression"] = f"1. Finding {k}.  2. No change,\n stable."
    out = tmp_path / "chexpert_5x200.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["", *one[0].keys()])
        w.writeheader()
        for k, r in enumerate(one):
            w.writerow({"": k, **r})
    return out, one


def test_chexpert_5x200_released_file_carries_its_reports(tmp_path):
    src, one = _released(tmp_path)
    r = runner.invoke(
        prep,
        [
            "chexpert-5x200",
            str(src),
            "--released",
            "--image-root",
            str(ROOT / "examples/chexpert"),
            "--out",
            str(tmp_path / "o"),
            "--size",
            "32",
            "--no-clahe",
        ],
    )
    assert r.exit_code == 0, r.output
    ds = ShardDataset(tmp_path / "o/chexpert-5x200")
    assert ds.manifest["selection"].startswith("released file") and ds.manifest["counts"]["rows_written"] == len(one)
    got = sorted((x["source"], x["impression"]) for x in ds.iter_rows(["source", "impression"]))
    want = sorted((r["Path"], f"1. Finding {k}. 2. No change, stable.") for k, r in enumerate(one))
    assert got == want
    bad = tmp_path / "bad.csv"
    text = src.read_text().splitlines()
    head = next(csv.reader([text[0]]))
    row = next(csv.reader([text[1]]))
    row[head.index("Edema")] = row[head.index("Atelectasis")] = "1.0"
    bad.write_text(text[0] + "\n" + ",".join(f'"{v}"' for v in row) + "\n")
    r = runner.invoke(prep, ["chexpert-5x200", str(bad), "--released", "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and "line 2" in r.output and "--released" in r.output
    r = runner.invoke(
        prep, ["chexpert-5x200", str(src), "--released", "--list", str(src), "--out", str(tmp_path / "o3")]
    )
    assert r.exit_code == 2 and "--list" in r.output


def test_vindr_cxr_clip_validate_split_and_pandas_sample(tmp_path):
    from cxrprep.datasets.benchmarks import read_vindr
    from cxrprep.datasets.splits import cxr_clip_vindr_split, sklearn_shuffle_split
    from cxrtrain.protocols import pandas_sample

    ids = [f"v{i:03d}" for i in range(25)]
    s = cxr_clip_vindr_split(ids)
    assert s.count("validate") == 5 and {ids[p] for p in sklearn_shuffle_split(25, 0.2, 0)[1]} == {
        k for k, v in zip(ids, s) if v == "validate"
    }
    head = "image_id,rad_id,Aortic enlargement,Nodule/Mass\n"
    train = tmp_path / "image_labels_train.csv"
    train.write_text(head + "".join(f"{i},R{r},{int(r == 1)},0\n" for i in reversed(ids) for r in (1, 2, 3)))
    items, names = read_vindr([train], tmp_path, readers="any", split_method="cxr-clip")
    assert names == ["Aortic enlargement", "Nodule/Mass"] and [x["labels"] for x in items][0] == [1, 0]
    assert {x["study_id"]: x["split"] for x in items} == dict(zip(ids, s))
    items, _ = read_vindr([train], tmp_path)
    assert [x["labels"] for x in items][0] == [0, 0]  # majority of 3 readers: one says 1
    # DataFrame.sample(frac=0.1, random_state=1) keeps these positions (checked against pandas)
    assert list(pandas_sample(57, 0.1, 1)) == [47, 2, 34, 45, 38, 33]
