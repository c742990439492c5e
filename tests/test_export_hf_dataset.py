"""cxrprep export-hf: one row per image that Hugging Face datasets loads with Image columns and real splits."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cxrprep.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The demo mimic-cxr (2 images per study) plus one study without images in the validate split."""
    import cv2
    import numpy as np

    from cxrprep.labels import CHEXPERT_LABELS
    from cxrprep.schema import empty_row
    from cxrprep.shards import ShardWriter

    root = tmp_path_factory.mktemp("hfshards")
    jpg = cv2.imencode(".jpg", np.full((40, 48), 128, np.uint8))[1].tobytes()
    with ShardWriter(root, "mimic-cxr", label_names=CHEXPERT_LABELS, row_group_rows=2) as w:
        for i, split in enumerate(["train", "train", "train", "validate", "validate", "test"]):
            r = empty_row("mimic-cxr", f"5{i:07d}", f"1{i:07d}", split)
            r["findings"] = f"Finding {i}."
            r["labels"] = [1 if k == i else None for k in range(len(CHEXPERT_LABELS))]
            n = 0 if i == 4 else 2 if i % 2 == 0 else 1
            r["images"] = [
                dict(image_id=f"{i}_{k}", view=("PA", "LATERAL")[k], image=jpg, image_clahe=None, height=40, width=48)
                for k in range(n)
            ]
            w.write(r)
    return root / "mimic-cxr"


def test_load_dataset_gives_one_row_per_image(shards, tmp_path):
    import datasets
    from PIL import Image

    from cxrprep.labels import CHEXPERT_LABELS

    r = runner.invoke(app, ["export-hf", str(shards), "--out", str(tmp_path / "flat")])
    assert r.exit_code == 0, r.output
    assert "validation: 2 studies -> 1 rows (1 studies without images)" in r.output
    ds = datasets.load_dataset(str(tmp_path / "flat"))
    assert set(ds) == {"train", "validation", "test"}
    # studies 0 (2 images), 1 (1), 2 (2) | 3 (1), 4 (none) | 5 (1)
    assert (ds["train"].num_rows, ds["validation"].num_rows, ds["test"].num_rows) == (5, 1, 1)
    row = ds["train"][0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (48, 40)
    assert row["image_clahe"] is None and row["view"] == "PA"
    assert row["study_id"] == "50000000" and row["subject_id"] == "10000000" and row["split"] == "train"
    assert (
        row["findings"] == "Finding 0."
        and row["labels"][CHEXPERT_LABELS[0]] == 1
        and row["labels"][CHEXPERT_LABELS[3]] is None
    )
    assert [r["study_id"] for r in ds["train"]] == ["50000000"] * 2 + ["50000001"] + ["50000002"] * 2
    assert ds["validation"][0]["split"] == "validation" and ds["validation"][0]["labels"][CHEXPERT_LABELS[3]] == 1
    card = (tmp_path / "flat/README.md").read_text()
    assert "split: validation" in card and "PhysioNet" in card and "| validation | 2 | 1 | 1 |" in card
    assert not list(tmp_path.glob(".tmp-*"))


def test_cxrkit_split_names_and_refusals(shards, tmp_path):
    import datasets

    r = runner.invoke(app, ["export-hf", str(shards), "--out", str(tmp_path / "flat"), "--split-names", "cxrkit"])
    assert r.exit_code == 0, r.output
    assert set(datasets.load_dataset(str(tmp_path / "flat"))) == {"train", "validate", "test"}
    again = runner.invoke(app, ["export-hf", str(shards), "--out", str(tmp_path / "flat")])
    assert again.exit_code == 2 and "--out" in again.output and "Traceback" not in again.output
    bad = runner.invoke(app, ["export-hf", str(shards), "--out", str(tmp_path / "x"), "--split-names", "huggingface"])
    assert bad.exit_code == 2 and "--split-names" in bad.output and not (tmp_path / "x").exists()


def test_files_roll_over_and_output_is_deterministic(shards, tmp_path):
    import datasets

    from cxrprep.shards.hfview import export_flat

    counts = export_flat(shards, tmp_path / "a", max_file_bytes=1)  # a new file after every source row group
    export_flat(shards, tmp_path / "b", max_file_bytes=1)
    files = sorted(p.name for p in (tmp_path / "a/data").iterdir())
    assert files == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
        "validation-00000-of-00001.parquet",
    ]
    for f in files:
        assert (tmp_path / "a/data" / f).read_bytes() == (tmp_path / "b/data" / f).read_bytes()
    ds = datasets.load_dataset(str(tmp_path / "a"))
    assert (
        {s: ds[s].num_rows for s in ds}
        == {s: c["images"] for s, c in counts.items()}
        == {
            "train": 5,
            "validation": 1,
            "test": 1,
        }
    )
