"""Sections, sentences and the `cxrprep reports` command end to end."""

from __future__ import annotations

import csv
import gzip
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import cli_args, run_in_parts
from typer.testing import CliRunner

from cxrprep.cli.app import app
from cxrprep.shards import ShardDataset
from cxrprep.text.sections import header_name, normalize_ws, parse_report
from cxrprep.text.sentences import split_sentences

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from synth_reports import write_corpus  # noqa: E402

runner = CliRunner()


# -- sections -------------------------------------------------------------------------------------
def test_official_example_report(data_dir):
    text = (data_dir / "reports/mimic_layout/files/p10/p10000000/s50000000.txt").read_text()
    r = parse_report(text)
    assert normalize_ws(r.impression) == "Large left pleural effusion"
    assert normalize_ws(r.findings).startswith("Cardiac size cannot be evaluated. Large left pleural effusion is new.")
    assert normalize_ws(r.findings).endswith("mild degenerative changes in the thoracic spine")
    names = [n for n, _ in r.sections]
    assert names == ["examination", "indication", "technique", "comparison", "findings", "impression"]
    assert dict(r.sections)["comparison"].strip() == "___"  # de-identified text kept
    assert not r.fallback
    assert split_sentences(r.findings)[-1] == "There are mild degenerative changes in the thoracic spine"


def test_negbio_lowercase_headers(data_dir):
    r = parse_report((data_dir / "reports/negbio/00000086.txt").read_text())
    assert normalize_ws(r.impression) == "stable chest. dictating"
    s = split_sentences(r.findings)
    assert s[0] == "pa and lat cxr at 7:34 p.m.." and s[1] == "heart and mediastinum are stable."
    assert "no pneumothorax." in s
    r2 = parse_report((data_dir / "reports/negbio/00019248.txt").read_text())
    assert r2.findings.startswith("chest: four images")  # "chest:" is not a header: lower case and unknown
    assert r2.impression is None


def test_chexpert_labeler_snippets(data_dir):
    rows = list(csv.reader(open(data_dir / "reports/chexpert_labeler/sample_reports.csv")))
    got = [split_sentences(r[0]) for r in rows]
    assert got[0] == ["Heart size normal and lungs are clear.", "No edema or pneumonia.", "No effusion"]
    assert got[1] == [
        "1. Left pleural effusion with adjacent atelectasis.",
        "Right effusion is also present.",
        "2. Cardiomegaly without overt edema.",
    ]
    assert got[2] == ["Minimal patchy airspace disease within the lingula, may reflect atelectasis or consolidation."]
    assert got[3] == ["1. Stable mild cardiomegaly.", "2. Hyperexpanded but clear lungs."]


@pytest.mark.parametrize(
    "raw,name",
    [
        ("FINDINGS", "findings"),
        ("IMPRESSON", "impression"),
        ("CONCLUSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("findings", "findings"),
        ("Impression", "impression"),
        ("REASON FOR EXAM", "indication"),
        ("CLINICAL HISTORY", "history"),
        ("WET READ", "wet read"),
        ("FINDNIGS", "findings"),
        ("Heart size", None),
        ("RECOMMENDATION(S)", "recommendations"),
    ],
)
def test_header_variants(raw, name):
    assert header_name(raw) == name


def test_header_first_line_no_leading_space_and_last_wins():
    r = parse_report("FINDINGS: Lungs are clear.\nIMPRESSION: \n\nNormal.\nFINDINGS:\n\nIMPRESSION:  Better now.")
    assert normalize_ws(r.findings) == "Lungs are clear."  # the later empty FINDINGS does not erase it
    assert normalize_ws(r.impression) == "Better now."


def test_fallback_last_paragraph_and_addendum():
    text = (
        " " * 33 + "FINAL REPORT\n ADDENDUM:  Called Dr. ___.\n " + "_" * 70 + "\n"
        " INDICATION:  cough\n \n Heart is normal.  Lungs are clear.\n \n No acute process.\n"
    )
    r = parse_report(text)
    assert r.fallback and normalize_ws(r.impression) == "No acute process." and r.findings is None
    assert r.sections[0] == ("addendum", " ADDENDUM:  Called Dr. ___.") or r.sections[0][0] == "addendum"


def test_sentence_rules():
    assert split_sentences("Nodule measures approx. 2.5 cm. Pt. is rotated.") == [
        "Nodule measures approx. 2.5 cm.",
        "Pt. is rotated.",
    ]
    assert split_sentences("Compare with No. 3 from ___. Seen at 3:15 p.m. by phone. Ok") == [
        "Compare with No. 3 from ___.",
        "Seen at 3:15 p.m. by phone.",
        "Ok",
    ]
    assert split_sentences("Tubes:\n- ET tube 4 cm above carina\n- NG tube in stomach\nNo pneumothorax") == [
        "Tubes:",
        "- ET tube 4 cm above carina",
        "- NG tube in stomach",
        "No pneumothorax",
    ]
    wrapped = (
        " 1. Left pleural effusion with adjacent atelectasis which has increased since the\n"
        " prior study.\n 2. Cardiomegaly."
    )
    assert split_sentences(wrapped) == [
        "1. Left pleural effusion with adjacent atelectasis which has increased since the prior study.",
        "2. Cardiomegaly.",
    ]
    assert split_sentences(None) == [] and split_sentences("   ") == []


# -- the command ------------------------------------------------------------------------------------
def _rows(d: Path) -> list[dict]:
    return list(
        ShardDataset(d).iter_rows(
            columns=[
                "study_id",
                "subject_id",
                "split",
                "findings",
                "impression",
                "findings_sentences",
                "labels",
                "fallback",
            ]
        )
    )


def _synth_root(tmp_path: Path, n: int = 60) -> Path:
    root = tmp_path / "mimic"
    write_corpus(root, n, seed=1)
    bad = root / "files/p10/p10000001"
    bad.mkdir(parents=True, exist_ok=True)
    (bad / "s59999991.txt").write_bytes(b"")  # empty
    (bad / "s59999992.txt").write_bytes(b"\xff\xfe\x00bad bytes")  # undecodable
    return root


def test_reports_examples_with_images(tmp_path, examples_dir):
    out = tmp_path / "shards"
    r = runner.invoke(
        app, ["reports", str(examples_dir / "mimic"), "--out", str(out), "--workers", "1", "--size", "64"]
    )
    assert r.exit_code == 0, r.output
    m = ShardDataset(out / "mimic-cxr").manifest
    c = m["counts"]
    assert c["inputs_seen"] == c["rows_written"] + c["skipped"] + c["failed"] == 16
    rows = list(ShardDataset(out / "mimic-cxr").iter_rows())
    assert all(r["images"] for r in rows) and all(r["labels"] is not None and len(r["labels"]) == 14 for r in rows)
    views = {i["view"] for r in rows for i in r["images"]}
    assert {"PA", "LATERAL", "AP"} <= views and None in views  # blank ViewPosition stays null
    assert {min(i["height"], i["width"]) for r in rows for i in r["images"]} == {64}
    assert {r["split"] for r in rows} == {"train", "validate", "test"}
    # labels are in CHEXPERT_LABELS order although the CSV's columns are shuffled
    with gzip.open(examples_dir / "mimic/mimic-cxr-2.0.0-chexpert.csv.gz", "rt") as f:
        first = next(csv.DictReader(f))
    row = next(r for r in rows if r["study_id"] == first["study_id"])
    want = [None if first[n] == "" else int(float(first[n])) for n in m["label_names"]]
    assert row["labels"] == want


def test_rejects_counts_and_determinism(tmp_path):
    root = _synth_root(tmp_path)
    outs = []
    for k, workers in enumerate(("1", "2")):
        out = tmp_path / f"o{k}"
        r = runner.invoke(
            app,
            cli_args("reports", root, out=out, no_images=True, workers=workers, chunk_size=7, max_failed=5),
        )
        assert r.exit_code == 0, r.output
        assert "inputs seen 62 = rows written 60 + rejects 2" in r.output
        outs.append(out / "mimic-cxr")
    a, b = (sorted(p.glob("data/*.parquet")) for p in outs)
    assert a and [x.read_bytes() for x in a] == [y.read_bytes() for y in b]  # byte-identical across worker counts
    rej = ShardDataset(outs[0]).rejects()
    assert {(x["study_id"], x["kind"]) for x in rej} == {("59999991", "skipped"), ("59999992", "failed")}
    assert "not UTF-8" in next(x["reason"] for x in rej if x["study_id"] == "59999992")
    rows = _rows(outs[0])
    assert [r["study_id"] for r in rows] == sorted(r["study_id"] for r in rows)
    assert any(r["fallback"] for r in rows) and all(r["findings"] or r["impression"] for r in rows)
    assert all(r["labels"] is None for r in rows)  # no chexpert CSV beside this root


def test_part_merge_equals_single_run(tmp_path):
    root = _synth_root(tmp_path, n=40)
    single = tmp_path / "single"
    r = runner.invoke(app, ["reports", str(root), "--out", str(single), "--no-images", "--max-failed", "5"])
    assert r.exit_code == 0, r.output
    multi = tmp_path / "multi"
    run_in_parts(app, "reports", root, multi, 3, "mimic-cxr", no_images=True, workers=1, max_failed=5)
    key = lambda r: r["study_id"]  # noqa: E731
    assert sorted(_rows(single / "mimic-cxr"), key=key) == sorted(_rows(multi / "mimic-cxr"), key=key)
    assert ShardDataset(multi / "mimic-cxr").manifest["counts"]["inputs_seen"] == 42


def test_zip_input_and_duplicates(tmp_path):
    root = _synth_root(tmp_path, n=20)
    z = tmp_path / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted((root / "files").rglob("*.txt")):
            zf.write(p, p.relative_to(root).as_posix())
        first = sorted((root / "files").rglob("*.txt"))[0]
        zf.writestr("dup/p10/p10999999/" + first.name, first.read_text())  # same study id again
    out = tmp_path / "z"
    r = runner.invoke(app, ["reports", str(z), "--out", str(out), "--no-images", "--max-failed", "5"])
    assert r.exit_code == 0, r.output
    dir_out = tmp_path / "d"
    runner.invoke(app, ["reports", str(root), "--out", str(dir_out), "--no-images", "--max-failed", "5"])
    assert _rows(out / "mimic-cxr") == _rows(dir_out / "mimic-cxr")
    rej = ShardDataset(out / "mimic-cxr").rejects()
    assert any("duplicate study id" in x["reason"] for x in rej)
    r = runner.invoke(app, ["reports", str(z), "--out", str(out)])
    assert r.exit_code == 2 and "--no-images" in r.output


def test_bad_metadata_csv_fails_before_work(tmp_path, examples_dir):
    root = tmp_path / "mimic"
    shutil.copytree(examples_dir / "mimic", root)
    with gzip.open(root / "mimic-cxr-2.0.0-metadata.csv.gz", "wt") as f:
        f.write("dicom_id,subject_id,study_id\nabc,1,2\n")
    r = runner.invoke(app, ["reports", str(root), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "missing columns ['ViewPosition']" in r.output
    assert not (tmp_path / "o" / "mimic-cxr").exists()
    r = runner.invoke(app, ["reports", str(root), "--out", str(tmp_path / "o"), "--part", "3/3"])
    assert r.exit_code == 2 and "--part" in r.output


def test_fast_sentence_path_matches_spacy_reference():
    """The cached per-chunk path gives exactly what spaCy's full tokenizer + the rules give, on odd
    punctuation, abbreviations, list markers, emoticon-like runs (context-dependent special cases) and
    the fixture reports."""
    import random

    from cxrprep.text.sentences import _LazyNLP, _sentences_of_block, _sentences_of_doc, get_nlp

    nlp = get_nlp()
    lazy = _LazyNLP(nlp)
    vocab = [
        "the",
        "lungs",
        "are",
        "clear",
        "1.",
        "2)",
        "3",
        ".",
        "..",
        "?",
        "!",
        "?!",
        "No.",
        "no.",
        "2.5",
        "cm.",
        "p.m..",
        "a.m.",
        '"',
        "'",
        ")",
        "(",
        '."',
        ".)",
        "word.)",
        '"Word."',
        "(1.",
        "e.g.",
        "i.e.,",
        "...",
        "Dr.",
        "x.",
        "A.",
        "effusion.",
        "___.",
        "3:15",
        "R/O",
        "pt.",
        "above).",
        "1.5.",
        "etc.)",
        "it's.",
        "10.",
        "[1].",
        "no.3",
        ".word",
        "?)",
        "')",
        "Hello?",
        "ABC.",
        "approx.",
        "):",
        ":)",
        "!.):",
    ]
    r = random.Random(0)
    blocks_ = ["!.): ))1 . it's.", "cm. 10. .word .a 1.): ') \". ?! - word.)", "1. Stable. 2. Clear lungs."]
    for _ in range(3000):
        words = [
            r.choice(vocab) if r.random() < 0.6 else "".join(r.choice("ab.?!\"')(1:-,") for _ in range(r.randint(1, 4)))
            for _ in range(r.randint(1, 12))
        ]
        blocks_.append(" ".join(words).strip())
    for text in blocks_:
        assert _sentences_of_block(text, lazy) == _sentences_of_doc(nlp.tokenizer(text)), text


def test_split_sections_matches_reference_on_fixtures(data_dir, tmp_path):
    from cxrprep.text.sentences import split_sections, split_sections_reference

    write_corpus(tmp_path, 300, seed=3)
    secs = []
    for p in sorted((data_dir / "reports").rglob("*.txt")) + sorted(tmp_path.rglob("*.txt")):
        rep = parse_report(p.read_text())
        secs += [rep.findings, rep.impression] + [t for _, t in rep.sections]
    assert secs and split_sections(secs) == split_sections_reference(secs)


# -- bad input (issue 13) ----------------------------------------------------------------------------
def test_exception_in_one_report_is_a_reject(tmp_path, monkeypatch):
    from cxrprep.datasets import mimic, mimic_worker

    root = _synth_root(tmp_path, n=12)
    victim = sorted((root / "files").rglob("*.txt"))[3]
    real = mimic_worker.parse_report

    def flaky(text):
        if text == victim.read_text():
            raise RuntimeError("boom in the parser")
        return real(text)

    monkeypatch.setattr(mimic_worker, "parse_report", flaky)
    m = mimic.run_reports(root, tmp_path / "o", mimic.ReportsConfig(images=False, workers=1))
    c = m["counts"]
    assert c["inputs_seen"] == c["rows_written"] + c["skipped"] + c["failed"] == 14
    rej = ShardDataset(tmp_path / "o/mimic-cxr").rejects()
    hit = [x for x in rej if x["study_id"] == victim.stem[1:]]
    assert hit and hit[0]["reason"] == "RuntimeError: boom in the parser" and hit[0]["kind"] == "failed"


def test_symlink_loops_are_rejects_not_crashes(tmp_path):
    root = _synth_root(tmp_path, n=10)
    pdir = sorted((root / "files/p10").iterdir())[0]
    (pdir / "s58888888.txt").symlink_to(pdir / "s58888888.txt")  # a report that links to itself
    (root / "files/p10/p10777777").symlink_to(root / "files/p10/p10777777")  # a patient folder loop
    (pdir / "s57777777.txt").mkdir()  # a folder named like a report
    out = tmp_path / "o"
    r = runner.invoke(
        app, ["reports", str(root), "--out", str(out), "--no-images", "--workers", "2", "--max-failed", "100%"]
    )
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    rej = ShardDataset(out / "mimic-cxr").rejects()
    reasons = {x["source"]: x["reason"] for x in rej}
    loop = [s for s in reasons if s.endswith("s58888888.txt")]
    assert loop and "symbolic links" in reasons[loop[0]]
    assert any(s.endswith("p10777777") and "cannot follow" in v for s, v in reasons.items())
    folder = [s for s in reasons if s.endswith("s57777777.txt")]
    assert folder and "directory" in reasons[folder[0]].lower()
    c = ShardDataset(out / "mimic-cxr").manifest["counts"]
    assert c["inputs_seen"] == c["rows_written"] + c["skipped"] + c["failed"]


def test_zip_member_over_the_limit_is_streamed_and_rejected(tmp_path):
    """A zip of ~0.3 MB holding a 256 MiB member: a reject, never read whole."""
    import resource

    root = tmp_path / "mimic"
    write_corpus(root, 5, seed=2)
    z = tmp_path / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted((root / "files").rglob("*.txt"))[:5]:
            zf.write(p, p.relative_to(root).as_posix())
        with zf.open("files/p10/p10555555/s55555555.txt", "w", force_zip64=True) as f:
            block = b"A" * (1 << 20)
            for _ in range(256):
                f.write(block)
    assert z.stat().st_size < 2 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = tmp_path / "o"
    r = runner.invoke(
        app, ["reports", str(z), "--out", str(out), "--no-images", "--workers", "1", "--max-failed", "100%"]
    )
    assert r.exit_code == 0, r.output
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    assert grown < 128 << 20  # the 256 MiB member was never held in memory
    rej = ShardDataset(out / "mimic-cxr").rejects()
    big = [x for x in rej if x["study_id"] == "55555555"]
    assert big and "--max-report-bytes" in big[0]["reason"]
    # a smaller limit rejects the ordinary reports too, by their size
    r = runner.invoke(
        app,
        cli_args("reports", z, out=tmp_path / "o2", no_images=True, workers=1, max_report_bytes=10, max_failed="100%"),
    )
    assert r.exit_code == 0, r.output
    c = ShardDataset(tmp_path / "o2/mimic-cxr").manifest["counts"]
    assert c["rows_written"] == 0 and c["failed"] == 6


@pytest.mark.parametrize("kind", ["split", "chexpert"])
def test_conflicting_duplicate_csv_rows_fail_before_work(tmp_path, kind):
    from cxrprep.labels import CHEXPERT_LABELS

    root = _synth_root(tmp_path, n=6)
    sid = sorted((root / "files").rglob("*.txt"))[0].stem[1:]
    if kind == "split":
        header, a, b = "subject_id,study_id,dicom_id,split", f"1,{sid},d1,train", f"1,{sid},d2,test"
        other = "2,50000001,d3,train"
    else:
        header = "subject_id,study_id," + ",".join(CHEXPERT_LABELS)
        a = f"1,{sid}," + ",".join(["1.0"] + [""] * 13)
        b = f"1,{sid}," + ",".join(["0.0"] + [""] * 13)
        other = "2,50000001," + ",".join([""] * 14)
    csv_path = root / f"mimic-cxr-2.0.0-{kind}.csv"
    csv_path.write_text("\n".join([header, a, a, other]) + "\n")
    out = tmp_path / "o"
    r = runner.invoke(app, ["reports", str(root), "--out", str(out), "--no-images", "--max-failed", "100%"])
    assert r.exit_code == 0, r.output  # identical duplicates are fine
    csv_path.write_text("\n".join([header, a, other, b]) + "\n")
    out = tmp_path / "o2"
    r = runner.invoke(app, ["reports", str(root), "--out", str(out), "--no-images", "--max-failed", "100%"])
    assert r.exit_code == 2, r.output
    assert f"lines 2 and 4 both describe study {sid}" in r.output and str(csv_path) in r.output
    assert not (out / "mimic-cxr").exists()
