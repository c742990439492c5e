"""Template language, shipped template files, cxrprep prompts and the CheXpert 5x200 builder."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from helpers import cli_args, run_in_parts
from typer.testing import CliRunner

from cxrprep.cli.app import app
from cxrprep.datasets.prompts import chexpert_states, nih_states, render_prompts, study_rng
from cxrprep.labels import CHEXPERT_LABELS, NIH_LABELS
from cxrprep.shards import ShardDataset
from cxrprep.text.templates import TemplateError, eval_prompt_sets, expand, load_templates

ROOT = Path(__file__).parent.parent
runner = CliRunner()


def test_grammar_expands_combinatorially():
    assert expand("[( ) , pulmonary] + [nodule, nodular opacity, nodular density]") == [
        "nodule",
        "nodular opacity",
        "nodular density",
        "pulmonary nodule",
        "pulmonary nodular opacity",
        "pulmonary nodular density",
    ]
    assert expand("[There is, ( )] + [no {}., no [visible, definite] {}.]") == [
        "There is no {}.",
        "There is no visible {}.",
        "There is no definite {}.",
        "no {}.",
        "no visible {}.",
        "no definite {}.",
    ]
    assert expand("Heart size is normal, no cardiomegaly.") == ["Heart size is normal, no cardiomegaly."]


@pytest.mark.parametrize(
    "text,msg", [("[a, b", "'[' is never closed"), ("a ] b", "']' without '['"), ("[( )]", "expands to nothing")]
)
def test_grammar_errors_have_position(text, msg):
    with pytest.raises(TemplateError, match=re.escape(msg)) as e:
        expand(text)
    assert e.value.line == 1 and e.value.column >= 1


@pytest.mark.parametrize(
    "body,msg",
    [
        ("classes:\n  Nodle:\n    expressions: [a]\n", "3:3: unknown class 'Nodle' (did you mean 'Nodule'?)"),
        ("classes:\n  Nodule:\n    expressions: ['[a, b']\n", "4:19: unbalanced brackets"),
        ("defaults:\n  positive: ['There is pneumonia.']\n", "default sentence has no {} slot"),
        ("classes:\n  Mass:\n    expressions: ['a {} mass']\n", "slot {} cannot appear in an expression"),
        ("classes:\n  Mass:\n    expressions: [mass]\n    positive: ['{} and {}']\n", "one {} slot, found 2"),
        ("classes: [\n", "YAML error"),
        ("colour: red\n", "unknown key 'colour'"),
    ],
)
def test_template_file_errors(tmp_path, body, msg):
    p = tmp_path / "t.yaml"
    p.write_text("version: 1\n" + body)
    with pytest.raises(TemplateError) as e:
        load_templates(p)
    assert str(e.value).startswith(str(p)) and msg.split(": ", 1)[-1] in str(e.value)
    if msg[0].isdigit():
        line, col = msg.split(":")[:2]
        assert (e.value.line, e.value.column) == (int(line), int(col))
    r = runner.invoke(app, ["templates", "check", str(p)])
    assert r.exit_code == 2  # a bad template file is bad usage in every command


def test_shipped_templates_check_clean():
    r = runner.invoke(app, ["templates", "check", str(ROOT / "prompts/default.yaml"), str(ROOT / "prompts/eval.yaml")])
    assert r.exit_code == 0, r.output
    t = load_templates(ROOT / "prompts/default.yaml")
    for name in set(CHEXPERT_LABELS) | {t.canonical(n) for n in NIH_LABELS}:
        assert name in t.classes, name
    ev = eval_prompt_sets(ROOT / "prompts/eval.yaml")
    assert set(ev["multiclass"]["chexpert-5x200"]) == {
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Pleural Effusion",
    }
    assert ev["binary"]["Pneumonia"] == {
        "positive": ["Findings suggesting pneumonia."],
        "negative": ["No evidence of pneumonia."],
    }
    r = runner.invoke(app, ["templates", "preview", str(ROOT / "prompts/default.yaml"), "--class", "Effusion"])
    assert r.exit_code == 0 and "Pleural Effusion: 1 expressions (every state), 8 qualified" in r.output


def test_positive_sentences_contain_an_expression_and_no_double_negation():
    t = load_templates(ROOT / "prompts/default.yaml")
    for name, c in t.classes.items():
        exprs = [e.lower() for e in c.expressions + c.qualified]
        for s in c.sentences["positive"]:
            low = s.lower()
            if name not in ("Cardiomegaly", "Enlarged Cardiomediastinum", "No Finding", "Support Devices"):
                assert any(e in low for e in exprs), (name, s)
            assert not low.startswith("no ") or name == "No Finding", (name, s)
        for s in c.sentences["negative"]:
            low = s.lower()
            assert "no no " not in low and "not no " not in low and "no finding" not in low, s
    assert t.sentences("No Finding", "negative") == []  # never "no No Finding"
    assert "Heart size is normal." in t.sentences("Cardiomegaly", "negative")
    assert "The cardiomediastinal silhouette is within normal limits." in t.sentences(
        "Enlarged Cardiomediastinum", "negative"
    )


def test_uncertain_policy_and_sampling():
    labels = [None] * 14
    labels[CHEXPERT_LABELS.index("Edema")] = -1
    labels[CHEXPERT_LABELS.index("Pneumothorax")] = 0
    assert ("Edema", "uncertain") in chexpert_states(labels, "uncertain")
    assert ("Edema", "positive") in chexpert_states(labels, "positive")
    assert ("Edema", "negative") in chexpert_states(labels, "negative")
    assert [s for s in chexpert_states(labels, "drop")] == [("Pneumothorax", "negative")]
    nih = [0] * 15
    nih[NIH_LABELS.index("Mass")] = 1
    st = nih_states(nih, study_rng(0, "x"), 3)
    assert st[0] == ("Mass", "positive") and len(st) == 4 and all(s == "negative" for _, s in st[1:])
    assert "No Finding" not in [c for c, _ in st]
    t = load_templates(ROOT / "prompts/default.yaml")
    a = render_prompts(t, st, study_rng(0, "x"), 8)
    b = render_prompts(t, st, study_rng(0, "x"), 8)
    assert a == b and len(a) == 8 and len(set(a)) > 1


def _nih_csv(tmp_path, examples_dir, extra_row=None):
    src = examples_dir / "nih/Data_Entry_2017_v2020.csv"
    p = tmp_path / "Data_Entry_2017.csv"
    text = src.read_text()
    if extra_row:
        text += extra_row
    p.write_text(text)
    return p


def test_prompts_chexpert_and_nih(tmp_path, examples_dir):
    out, cx = tmp_path / "shards", examples_dir / "chexpert"
    args = cli_args("prompts", cx / "train.csv", image_root=cx, out=out, size=48, variants=4, workers=1, max_failed=1)
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    ds = ShardDataset(out / "chexpert")
    c = ds.manifest["counts"]
    assert c["inputs_seen"] == c["rows_written"] + c["failed"] + c["skipped"] and c["failed"] == 1  # missing image
    rows = list(ds.iter_rows())
    two = next(r for r in rows if len(r["images"]) == 2)
    assert {i["view"] for i in two["images"]} >= {"LATERAL"}
    assert all(len(r["prompts"]) == 4 for r in rows) and ds.label_names == list(CHEXPERT_LABELS)
    # a Frontal row whose AP/PA reads "LL" (a quirk of the released CSV) is not tagged lateral (issue 24)
    p6 = next(r for r in rows if r["subject_id"] == "patient00006")
    assert [i["view"] for i in p6["images"]] == ["UNKNOWN"]
    # text-only NIH, with the official split lists beside the CSV
    nih = examples_dir / "nih/Data_Entry_2017_v2020.csv"
    r = runner.invoke(app, ["prompts", str(nih), "--out", str(out), "--no-images", "--workers", "1"])
    assert r.exit_code == 0, r.output
    rows = list(ShardDataset(out / "chestx-ray14").iter_rows())
    assert len(rows) == 12 and all(r["images"] == [] for r in rows)
    test_ids = set((examples_dir / "nih/test_list.txt").read_text().split())
    assert {r["study_id"] + ".png" for r in rows if r["split"] == "test"} == test_ids
    r0 = next(
        r for r in rows if r["study_id"] == "00000404_000"
    )  # Atelectasis|Consolidation|Effusion|Mass|Pleural_Thickening
    assert sum(r0["labels"]) == 5 and r0["labels"][NIH_LABELS.index("Pleural_Thickening")] == 1
    # deterministic
    out2 = tmp_path / "again"
    runner.invoke(app, ["prompts", str(nih), "--out", str(out2), "--no-images", "--workers", "2"])
    a = sorted((out / "chestx-ray14").glob("data/*.parquet"))
    b = sorted((out2 / "chestx-ray14").glob("data/*.parquet"))
    assert a and [x.read_bytes() for x in a] == [y.read_bytes() for y in b]


def test_prompts_bad_input(tmp_path, examples_dir):
    p = _nih_csv(tmp_path, examples_dir, "99999999_000.png,Pneumonia|Unicorn,0,9,50,M,PA,1,1,0.1,0.1\n")
    r = runner.invoke(app, ["prompts", str(p), "--out", str(tmp_path / "o"), "--no-images"])
    assert r.exit_code == 2 and "'Unicorn'" in r.output and "row 14" in r.output
    bad = tmp_path / "train.csv"
    rows = list(csv.reader(open(examples_dir / "chexpert/train.csv")))
    rows[2][7] = "2.0"
    with open(bad, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    r = runner.invoke(app, ["prompts", str(bad), "--out", str(tmp_path / "o"), "--no-images"])
    assert r.exit_code == 2 and "row 3, column 'Cardiomegaly': value '2.0'" in r.output
    r = runner.invoke(app, ["prompts", str(bad), "--out", str(tmp_path / "o"), "--uncertain", "maybe"])
    assert r.exit_code == 2 and "--uncertain" in r.output


def test_chexpert_5x200_and_exclusion(tmp_path, examples_dir):
    out, cx = tmp_path / "s", examples_dir / "chexpert"
    args = cli_args("chexpert-5x200", cx / "train.csv", image_root=cx, out=out, per_class=1, size=32)
    assert runner.invoke(app, args).exit_code == 0
    rows = list(ShardDataset(out / "chexpert-5x200").iter_rows())
    assert len(rows) == 5 and all(r["split"] == "test" for r in rows)
    for r in rows:
        comp = [
            r["labels"][CHEXPERT_LABELS.index(t)]
            for t in ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
        ]
        assert sorted(v or 0 for v in comp) == [0, 0, 0, 0, 1]
    first = (out / "chexpert-5x200/patients.txt").read_text()
    assert (
        runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
        and (out / "chexpert-5x200/patients.txt").read_text() == first
    )
    r = runner.invoke(app, args[:-4] + ["--per-class", "50", "--no-images"])
    assert r.exit_code == 2 and "--per-class" in r.output
    excluded = out / "chexpert-5x200/patients.txt"
    r = runner.invoke(app, cli_args("prompts", cx / "train.csv", out=out, no_images=True, exclude_patients=excluded))
    assert r.exit_code == 0, r.output
    kept = {r["subject_id"] for r in ShardDataset(out / "chexpert").iter_rows()}
    assert not kept & set(first.split())


def test_duplicate_rows_are_rejects_naming_both_lines(tmp_path, examples_dir):
    # ChestX-ray14: the same Image Index twice -> the second row is a reject naming both CSV lines
    src = (examples_dir / "nih/Data_Entry_2017_v2020.csv").read_text().splitlines()
    p = tmp_path / "nih" / "Data_Entry_2017.csv"
    p.parent.mkdir()
    p.write_text("\n".join(src + [src[3]]) + "\n")
    out = tmp_path / "o"
    r = runner.invoke(app, ["prompts", str(p), "--out", str(out), "--no-images", "--workers", "1"])
    assert r.exit_code == 0, r.output
    ds = ShardDataset(out / "chestx-ray14")
    c = ds.manifest["counts"]
    assert c["inputs_seen"] == c["rows_written"] + c["skipped"] + c["failed"] == len(src)
    ids = [x["study_id"] for x in ds.iter_rows(columns=["study_id"])]
    assert len(ids) == len(set(ids)) == len(src) - 1
    rej = ShardDataset(out / "chestx-ray14").rejects()
    img = src[3].split(",")[0]
    assert any(x["source"] == img and f"lines 4 and {len(src) + 1}" in x["reason"] for x in rej), rej
    # CheXpert: the same image twice in one study -> kept once, the repeat is a reject naming both lines
    rows = list(csv.reader(open(examples_dir / "chexpert/train.csv")))
    bad = tmp_path / "train.csv"
    with open(bad, "w", newline="") as f:
        csv.writer(f).writerows(rows + [rows[1]])
    out = tmp_path / "c"
    r = runner.invoke(
        app, ["prompts", str(bad), "--out", str(out), "--no-images", "--workers", "1", "--max-failed", "100%"]
    )
    assert r.exit_code == 0, r.output
    rej = ShardDataset(out / "chexpert").rejects()
    dup = [x for x in rej if x["source"] == rows[1][0] and "duplicate image" in x["reason"]]
    assert dup and f"lines 2 and {len(rows) + 1}" in dup[0]["reason"]
    c = ShardDataset(out / "chexpert").manifest["counts"]
    assert c["inputs_seen"] == c["rows_written"] + c["skipped"] + c["failed"]


def test_prompts_do_not_depend_on_part_or_workers(tmp_path, examples_dir):
    nih = examples_dir / "nih/Data_Entry_2017_v2020.csv"
    single = tmp_path / "s"
    assert runner.invoke(app, ["prompts", str(nih), "--out", str(single), "--no-images", "--seed", "3"]).exit_code == 0
    multi = tmp_path / "m"
    run_in_parts(app, "prompts", nih, multi, 2, "chestx-ray14", no_images=True, seed=3, workers=2)
    cols = ["study_id", "labels", "prompts", "split"]
    a = sorted(ShardDataset(single / "chestx-ray14").iter_rows(columns=cols), key=lambda r: r["study_id"])
    b = sorted(ShardDataset(multi / "chestx-ray14").iter_rows(columns=cols), key=lambda r: r["study_id"])
    assert a == b and all(len(r["prompts"]) == 8 for r in a)
    assert len({p for r in a for p in r["prompts"]}) > len(a)  # variants differ
