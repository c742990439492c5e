"""Benchmark readers (RSNA, SIIM, VinDr-CXR, Open-I, 5x200 lists) on sample files in the released formats,
and `cxrtrain bench-suite` on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import cli_args
from typer.testing import CliRunner

from cxrprep.cli.app import app as prep
from cxrprep.labels import CHEXPERT_LABELS, COMPETITION_TASKS
from cxrprep.shards import ShardDataset

ROOT = Path(__file__).parent.parent
B = ROOT / "examples" / "benchmarks"
runner = CliRunner()


def _rows(ds_dir: Path) -> list[dict]:
    return list(
        ShardDataset(ds_dir).iter_rows(
            [
                "study_id",
                "subject_id",
                "split",
                "labels",
                "findings",
                "impression",
                "impression_sentences",
                "sections",
                "images",
                "source",
            ]
        )
    )


def _rejects(ds_dir: Path) -> list[dict]:
    for name in ("rejects.jsonl", "rejects.parquet"):  # the shard layout names it one way or the other
        p = ds_dir / name
        if p.exists():
            if name.endswith(".jsonl"):
                return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            return pq.read_table(p).to_pylist()
    return []


def _check_counts(ds_dir: Path) -> dict:
    m = ShardDataset(ds_dir).manifest
    c = m["counts"]
    assert c["inputs_seen"] == c["rows_written"] + c["skipped"] + c["failed"]
    return m


@pytest.fixture(scope="module")
def bench_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    common = ["--out", str(out), "--size", "32", "--workers", "1", "--no-clahe"]
    for args in (
        ["rsna", str(B / "rsna/stage_2_train_labels.csv")],
        ["siim", str(B / "siim/train-rle.csv")],
        ["vindr", str(B / "vindr/annotations/image_labels_train.csv")],
        ["openi", str(B / "openi/ecgen-radiology"), "--image-root", str(B / "openi/NLMCXR_png"), "--max-failed", "1"],
    ):
        r = runner.invoke(prep, args + common)
        assert r.exit_code == 0, r.output
    return out


def test_rsna_one_row_per_patient_from_box_rows(bench_shards):
    lines = (B / "rsna/stage_2_train_labels.csv").read_text().splitlines()
    assert lines[0] == "patientId,x,y,width,height,Target"
    target = {}
    for line in lines[1:]:
        f = line.split(",")
        target[f[0]] = int(f[5])
    assert len(lines) - 1 > len(target)  # several box rows per positive patient
    d = bench_shards / "rsna-pneumonia"
    rows = _rows(d)
    assert {r["study_id"]: r["labels"][0] for r in rows} == target
    assert ShardDataset(d).label_names == ["Pneumonia"]
    assert {r["split"] for r in rows} == {"train", "validate", "test"}
    _check_counts(d)


def test_rsna_conflicting_target_is_an_error(tmp_path):
    bad = tmp_path / "labels.csv"
    bad.write_text("patientId,x,y,width,height,Target\nabc,1,2,3,4,1\nabc,,,,,0\n")
    r = runner.invoke(prep, ["rsna", str(bad), "--out", str(tmp_path / "o"), "--image-root", str(tmp_path)])
    assert r.exit_code == 2 and f"{bad}:3" in r.output and "Traceback" not in r.output


def test_siim_leading_space_header_minus_one_and_components(bench_shards, tmp_path):
    text = (B / "siim/train-rle.csv").read_text()
    assert text.startswith("ImageId, EncodedPixels\n")  # the real header's leading space
    want: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        iid, enc = line.split(",", 1)
        want[iid] = max(want.get(iid, 0), 0 if enc.strip() == "-1" else 1)
    assert len(text.splitlines()) - 1 > len(want)  # several rows (mask components) per ImageId
    import pydicom

    dcm = sorted((B / "siim/dicom-images-train").rglob("*.dcm"))
    assert len(dcm) == len(want)  # nested <study UID>/<series UID>/<ImageId>.dcm, JPEG Baseline as the real files
    assert pydicom.dcmread(dcm[0], stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    rows = _rows(bench_shards / "siim-acr-pneumothorax")
    assert {r["study_id"]: r["labels"][0] for r in rows} == want and all(r["images"] for r in rows)
    assert all("dicom-images-train" not in r["study_id"] for r in rows)
    bad = tmp_path / "train-rle.csv"
    bad.write_text("ImageId, EncodedPixels\n1.2.3, 100 5 7\n")
    r = runner.invoke(prep, ["siim", str(bad), "--out", str(tmp_path / "o"), "--image-root", str(tmp_path)])
    assert r.exit_code == 2 and f"{bad}:2" in r.output and "start/length" in r.output
    ok = tmp_path / "ok.csv"  # a listed image that is not on disk: a reject with the reason, not a crash
    ok.write_text("ImageId, EncodedPixels\n1.2.3, -1\n")
    r = runner.invoke(
        prep, ["siim", str(ok), "--out", str(tmp_path / "o2"), "--image-root", str(tmp_path), "--max-failed", "1"]
    )
    assert r.exit_code == 0, r.output
    rej = _rejects(tmp_path / "o2/siim-acr-pneumothorax")
    assert len(rej) == 1 and "1.2.3.dcm" in rej[0]["reason"]


def test_vindr_readers_combined_by_rule(bench_shards, tmp_path):
    d = bench_shards / "vindr-cxr"
    m = _check_counts(d)
    names = m["label_names"]
    assert len(names) == 28 and names[0] == "Aortic enlargement" and names[-1] == "No finding"
    rows = {r["study_id"]: r for r in _rows(d)}
    train_lines = (B / "vindr/annotations/image_labels_train.csv").read_text().splitlines()[1:]
    votes: dict[str, list[list[int]]] = {}
    for line in train_lines:
        f = line.split(",")
        votes.setdefault(f[0], []).append([int(v) for v in f[2:]])
    assert all(len(v) == 3 for v in votes.values())  # three radiologists per training image
    nf = names.index("No finding")
    split_votes = [i for i, v in votes.items() if sum(x[nf] for x in v) == 1]  # 1 of 3 says "No finding"
    assert split_votes
    for iid in split_votes:  # majority (default): 2 of 3 say a finding -> No finding 0
        assert rows[iid]["labels"][nf] == 0 and rows[iid]["split"] in ("train", "validate")
    assert sum(r["split"] == "test" for r in rows.values()) == 10
    r = runner.invoke(
        prep,
        cli_args(
            "vindr",
            B / "vindr/annotations/image_labels_train.csv",
            readers="any",
            out=tmp_path,
            size=32,
            workers=1,
            no_clahe=True,
        ),
    )
    assert r.exit_code == 0, r.output
    anyr = {x["study_id"]: x for x in _rows(tmp_path / "vindr-cxr")}
    for iid in split_votes:  # any reader: No finding 1 as well
        assert anyr[iid]["labels"][nf] == 1
    r = runner.invoke(prep, ["vindr", str(B / "vindr/annotations/image_labels_train.csv"), "--readers", "two"])
    assert r.exit_code == 2 and "--readers" in r.output


def test_openi_xml_sections_rejects_and_split(bench_shards, tmp_path):
    d = bench_shards / "openi"
    m = _check_counts(d)
    rows = {r["study_id"]: r for r in _rows(d)}
    assert len(rows) == 9 and m["counts"]["skipped"] == 1 and m["counts"]["failed"] == 1
    assert all(r["split"] == "test" for r in rows.values())
    assert rows["CXR1"]["impression"] == "Normal chest x-XXXX." and "XXXX" in rows["CXR1"]["findings"]
    assert rows["CXR3"]["findings"] is None and rows["CXR3"]["impression"].startswith(
        "No displaced rib"
    )  # empty element
    secs = {s["name"]: s["text"] for s in rows["CXR2"]["sections"]}
    assert secs["mesh_major"] == "Cardiomegaly/borderline; Pulmonary Artery/enlarged" and "indication" in secs
    assert rows["CXR5"]["impression_sentences"] == ["Small right pleural effusion with mild cardiomegaly."]
    rej = {x["study_id"]: x for x in _rejects(d)}
    assert rej["CXR7"]["kind"] == "skipped" and rej[None]["stage"] == "read"
    assert rej["CXR5"]["level"] == "image" and len(rows["CXR5"]["images"]) == 1
    # --split hash is deterministic and --part pieces add up to the whole
    for i in range(2):
        r = runner.invoke(
            prep,
            [
                "openi",
                str(B / "openi/ecgen-radiology"),
                "--no-images",
                "--split-method",
                "hash",
                "--part",
                f"{i}/2",
                "--out",
                str(tmp_path),
                "--max-failed",
                "1",
            ],
        )
        assert r.exit_code == 0, r.output
    r = runner.invoke(prep, ["merge", str(tmp_path / "openi")])
    assert r.exit_code == 0, r.output
    merged = {x["study_id"]: x["split"] for x in _rows(tmp_path / "openi")}
    from cxrprep.datasets.benchmarks import hash_split

    assert set(merged) == set(rows) and all(s == hash_split(k) for k, s in merged.items())


def test_chexpert_5x200_from_a_released_list(tmp_path):
    import csv

    src = ROOT / "examples/chexpert/train.csv"
    with open(src) as f:
        rows = list(csv.DictReader(f))
    tasks = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    one = [r for r in rows if sum(r[t] in ("1.0", "1") for t in tasks) == 1]
    many = [r for r in rows if sum(r[t] in ("1.0", "1") for t in tasks) != 1]
    assert one
    lst = tmp_path / "list.csv"
    lst.write_text("Path,Atelectasis\n" + "".join(f"{r['Path']},1\n" for r in one))
    r = runner.invoke(
        prep,
        cli_args("chexpert-5x200", src, image_root=src.parent, list=lst, out=tmp_path / "o", size=32, no_clahe=True),
    )
    assert r.exit_code == 0, r.output
    m = ShardDataset(tmp_path / "o/chexpert-5x200").manifest
    assert m["selection"] == f"list {lst}" and m["counts"]["rows_written"] == len(one)
    if many:
        bad = tmp_path / "bad.txt"
        bad.write_text(one[0]["Path"] + "\n" + many[0]["Path"] + "\n")
        r = runner.invoke(prep, ["chexpert-5x200", str(src), "--list", str(bad), "--out", str(tmp_path / "o3")])
        assert r.exit_code == 2 and f"{bad}:2" in r.output and "competition" in r.output
    bad = tmp_path / "missing.txt"
    bad.write_text("CheXpert-v1.0-small/train/patient99999/study1/view1_frontal.jpg\n")
    r = runner.invoke(prep, ["chexpert-5x200", str(src), "--list", str(bad), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 2 and f"{bad}:1" in r.output and "--list" in r.output


@pytest.mark.slow
def test_bench_suite_on_the_sample_benchmarks(tiny_checkpoint, bench_shards, tmp_path):
    from cxrtrain.cli.app import app as trn

    out = tmp_path / "suite"
    r = runner.invoke(
        trn,
        cli_args(
            "bench-suite", tiny_checkpoint, bench_shards, out=out, bootstrap=20, probe_seeds=1, probe_max_epochs=300
        ),
    )
    assert r.exit_code == 0, r.output

    def strict(p):
        return json.loads(Path(p).read_text(), parse_constant=lambda t: (_ for _ in ()).throw(ValueError(t)))

    s = strict(out / "suite.json")
    assert s["split"] == "test" and s["ensemble"] == "mean-similarity" and s["prompts"] == "cxr-clip"
    assert s["prompts_file"].endswith("cxr-clip.yaml")
    assert s["missing"] == ["chexpert-5x200", "mimic-5x200", "mimic-cxr"]
    b = s["benchmarks"]
    assert b["siim-acr-pneumothorax"]["zero_shot"] is not None and b["siim-acr-pneumothorax"]["classes"] == 1
    assert b["vindr-cxr"]["classes_with_prompts"] == 18  # CXR-CLIP's 18 VinDr classes; the other 10 are skipped
    assert b["openi retrieval"]["R@1"] is not None and s["rsum_of"] == ["openi"]
    assert "probe_10%" in b["rsna-pneumonia"]
    md = (out / "suite.md").read_text()
    assert "missing" in md and "split **test**" in md and "openi R@1" in md
    m = strict(out / "eval/metrics.json")
    v = m["datasets"]["vindr-cxr"]["binary"]
    assert len(v["skipped"]) == 10 and all("no binary prompt pair" in x["reason"] for x in v["skipped"])
    assert m["prompts"]["binary"]["Pneumothorax"] == {"positive": ["Pneumothorax"], "negative": ["No Pneumothorax"]}
    strict(out / "probe/rsna-pneumonia/fewshot.json")


def test_eval_prompts_cover_every_class_of_every_supported_dataset():
    from cxrprep.labels import CHEXPERT_LABELS, NIH_LABELS
    from cxrprep.text.templates import eval_prompt_sets
    from cxrtrain.evaluate import find_prompts

    sets = eval_prompt_sets(ROOT / "prompts/eval.yaml")["binary"]
    vindr = (B / "vindr/annotations/image_labels_train.csv").read_text().splitlines()[0].split(",")[2:]
    datasets = {
        "mimic-cxr": CHEXPERT_LABELS,
        "chexpert": CHEXPERT_LABELS,
        "chestx-ray14": NIH_LABELS,
        "vindr-cxr": vindr,
        "rsna-pneumonia": ["Pneumonia"],
        "siim-acr-pneumothorax": ["Pneumothorax"],
    }
    missing = [(d, c) for d, names in datasets.items() for c in names if find_prompts(sets, d, c) is None]
    assert missing == []
    assert find_prompts(sets, "vindr-cxr", "Pleural effusion") == "Pleural Effusion"  # case-insensitive
    assert find_prompts(sets, "vindr-cxr", "No finding") == "vindr-cxr:No finding"  # dataset-scoped pair
    assert find_prompts(sets, "chestx-ray14", "Pleural_Thickening") == "Pleural Thickening"  # alias
    cx = eval_prompt_sets(ROOT / "prompts/cxr-clip.yaml")
    assert cx["binary"]["Pneumothorax"] == {"positive": ["Pneumothorax"], "negative": ["No Pneumothorax"]}
    assert cx["binary"]["vindr-cxr:Nodule/Mass"] == {"positive": ["Nodule/Mass"], "negative": ["No Nodule/Mass"]}
    assert set(cx["multiclass"]) == {"chexpert-5x200", "mimic-5x200"}


def test_mimic_5x200_draw_and_list(tmp_path):
    import csv
    import gzip

    src = ROOT / "examples/mimic"
    root = tmp_path / "mimic"
    shutil.copytree(src, root)
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "rt") as f:
        meta = list(csv.DictReader(f))
    frontal = sorted({(r["subject_id"], r["study_id"]) for r in meta if r["ViewPosition"] in ("PA", "AP")})
    assert len(frontal) >= 6
    labels = list(CHEXPERT_LABELS)
    tasks = COMPETITION_TASKS
    rows = []
    for k, (subj, study) in enumerate(frontal):
        v = {c: "" for c in labels}  # blank = not mentioned -> 0 for the 5x200 rule
        if k < 5:
            v[tasks[k]] = "1.0"
            v["No Finding"] = "0.0"
        else:
            v["Edema"], v["Pleural Effusion"] = "1.0", "1.0"  # two competition positives: never drawn
        rows.append([subj, study] + [v[c] for c in labels])
    with gzip.open(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "wt") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "study_id"] + labels)
        w.writerows(rows)
    args = ["mimic-5x200", str(root), "--per-class", "1", "--from-split", "any", "--size", "32", "--no-clahe"]
    r = runner.invoke(prep, args + ["--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    got = _rows(tmp_path / "a/mimic-5x200")
    assert len(got) == 5 and all(x["split"] == "test" and x["images"] for x in got)
    assert all(x["impression"] or x["findings"] for x in got)  # the study's report rides along for retrieval
    by_study = {x["study_id"]: x for x in got}
    for k, (_subj, study) in enumerate(frontal[:5]):
        lab = by_study[f"s{study}"]["labels"]
        assert lab[labels.index(tasks[k])] == 1
    r = runner.invoke(prep, args + ["--out", str(tmp_path / "b")])
    assert sorted(by_study) == sorted(x["study_id"] for x in _rows(tmp_path / "b/mimic-5x200"))  # deterministic
    r = runner.invoke(prep, args[:3] + ["--per-class", "2", "--from-split", "any", "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "--per-class" in r.output
    subj, study = frontal[1]
    dicom = next(m["dicom_id"] for m in meta if m["study_id"] == study and m["ViewPosition"] in ("PA", "AP"))
    lst = tmp_path / "list.txt"
    lst.write_text(f"files/p{subj[:2]}/p{subj}/s{study}/{dicom}.jpg\n")
    r = runner.invoke(
        prep, ["mimic-5x200", str(root), "--list", str(lst), "--out", str(tmp_path / "d"), "--size", "32"]
    )
    assert r.exit_code == 0, r.output
    one = _rows(tmp_path / "d/mimic-5x200")
    assert [x["study_id"] for x in one] == [f"s{study}"]
    subj, study = frontal[5]
    lst.write_text(f"files/p{subj[:2]}/p{subj}/s{study}/0a1b2c3d-00000000-00000000-00000000-00000000.jpg\n")
    r = runner.invoke(prep, ["mimic-5x200", str(root), "--list", str(lst), "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and f"{lst}:1" in r.output and "exactly one" in r.output
