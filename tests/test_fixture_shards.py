from cxrprep.shards import open_datasets


def test_demo_shards_fixture(demo_shards):
    ds = {d.name: d for d in open_datasets([demo_shards], verify=True)}
    assert set(ds) == {"mimic-cxr", "chexpert"}
    assert ds["mimic-cxr"].num_rows == 24 and len(ds["mimic-cxr"].label_names) == 14
    row = next(ds["mimic-cxr"].iter_rows())
    assert len(row["images"]) == 2 and row["images"][0]["image"][:2] == b"\xff\xd8"
