"""Prompts a radiologist would sign (issue 24, part 4): articles and agreement, qualifiers that never
contradict within a study, `qualifiers: none|sample`, the No Finding conflict rule, coverage of a dataset's
classes, `verbatim:` files, and the template example of docs/templates.md."""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxrprep.cli.app import app
from cxrprep.datasets.prompt_bulk import render_bulk, state_codes, study_keys
from cxrprep.datasets.prompts import chexpert_states, nih_states, render_prompts
from cxrprep.labels import CHEXPERT_LABELS, NIH_LABELS, resolve_no_finding
from cxrprep.text.template_articles import with_article
from cxrprep.text.template_qualifiers import contradictions, is_qualified, qualifiers_of
from cxrprep.text.templates import TemplateError, lint, load_templates, render, sentence_defects

ROOT = Path(__file__).parent.parent
runner = CliRunner()
SPLIT = re.compile(r"(?<=[.!?]) (?=[A-Z])")


# -- articles and agreement ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sentence,kinds",
    [
        ("There is nodule.", ["missing-article"]),
        ("There is lung mass.", ["missing-article"]),
        ("There is small left pleural effusion.", ["missing-article"]),
        ("There is evidence of pneumothorax.", ["missing-article"]),
        ("Findings are consistent with pulmonary nodule.", ["missing-article"]),
        ("There are a effusion.", ["agreement", "a-an"]),
        ("There is nodules.", ["agreement"]),
        ("There is an nodule.", ["a-an"]),
        ("There is a acute fracture.", ["a-an"]),
        # well formed
        ("There is a nodule.", []),
        ("There is a small left pleural effusion.", []),
        ("There is an acute fracture.", []),
        ("There is atelectasis.", []),
        ("There are nodules.", []),
        ("There is no pleural effusion.", []),
        ("No convincing evidence of pneumothorax.", []),
        ("Findings are consistent with pulmonary edema.", []),
        ("A PICC line is in place.", []),
        ("There is an ILD pattern.", []),
    ],
)
def test_article_and_agreement_lint(sentence, kinds):
    assert sentence_defects(sentence) == kinds


def test_the_a_slot_adds_the_right_article():
    assert render("There is {a}.", "nodule") == "There is a nodule."
    assert render("There is {a}.", "acute fracture") == "There is an acute fracture."
    assert render("There is {a}.", "atelectasis") == "There is atelectasis."
    assert render("{a} is seen.", "endotracheal tube") == "An endotracheal tube is seen."
    assert render("There is {}.", "nodule") == "There is nodule."  # {} stays as written
    assert [with_article(x) for x in ("PICC line", "unilateral effusion", "hiatal hernia")] == [
        "a PICC line",
        "a unilateral effusion",
        "a hiatal hernia",
    ]


def _load_error(path: Path, text: str) -> str:
    """Write ``text`` to ``path``: the message of the TemplateError that loading it must raise."""
    path.write_text(text)
    with pytest.raises(TemplateError) as e:
        load_templates(path)
    return str(e.value)


def test_a_slot_errors_name_file_and_line(tmp_path):
    p = tmp_path / "t.yaml"
    msg = _load_error(p, "version: 1\nclasses:\n  Mass:\n    expressions: [mass]\n    positive: ['{a} and {}']\n")
    assert msg == f"{p}:5:16: a sentence may contain one {{}} slot, found 2 (counting {{a}}): '{{a}} and {{}}'"


def test_other_braces_and_missing_classes_are_named(tmp_path):
    p = tmp_path / "t.yaml"
    msg = _load_error(p, "version: 1\nclasses:\n  Mass:\n    expressions: [mass]\n    positive: ['There is {an}.']\n")
    assert msg == (
        f"{p}:5:16: only an empty {{}} slot is allowed (or {{a}}, the slot with its article): 'There is {{an}}.'"
    )
    p.write_text("version: 1\nclasses:\n  Mass:\n    expressions: [mass]\n")
    st = np.zeros((1, 3), np.int8)
    with pytest.raises(ValueError) as e:
        render_bulk(load_templates(p), ["Mass", "Nodule", "Hernia"], st, study_keys(0, ["s"]), 2)
    assert str(e.value) == f"{p}: no templates for 2 classes: Nodule, Hernia; add them under classes:"


# -- shipped files ------------------------------------------------------------------------------------
def test_every_shipped_file_passes_templates_check():
    files = sorted(str(p) for p in (ROOT / "prompts").glob("*.yaml"))
    assert len(files) >= 3
    r = runner.invoke(app, ["templates", "check", *files])
    assert r.exit_code == 0, r.output
    assert r.output.count(": ok (") == len(files)
    assert "prompts/cxr-clip.yaml: ok (0 classes" in r.output and "verbatim from CXR-CLIP" in r.output
    assert "style lint skipped, 74 sentences differ from our style" in r.output


def _check(path: Path, text: str, *options: str):
    """Write ``text`` to ``path`` and run ``cxrprep templates check`` on it: the CliRunner result."""
    path.write_text(text)
    return runner.invoke(app, ["templates", "check", str(path), *options])


def test_verbatim_exempts_style_not_syntax_or_duplicates(tmp_path):
    body = 'binary:\n  Pneumothorax: {positive: ["Pneumothorax"], negative: ["No Pneumothorax"]}\n'
    plain, verb = tmp_path / "plain.yaml", tmp_path / "verb.yaml"
    plain.write_text("version: 1\n" + body)
    verb.write_text('version: 1\nverbatim: "a paper, Table 1"\n' + body)
    assert runner.invoke(app, ["templates", "check", str(plain)]).exit_code == 1
    r = runner.invoke(app, ["templates", "check", str(verb)])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == (
        f"{verb}: ok (0 classes, 0 expansions, 1 binary tasks, 0 multi-class sets, qualifiers none, "
        "verbatim from a paper, Table 1: style lint skipped, 2 sentences differ from our style)"
    )
    dup = 'version: 1\nverbatim: "x"\nbinary:\n  Edema: {positive: ["Edema", "Edema"], negative: ["No"]}\n'
    r = _check(tmp_path / "dup.yaml", dup)
    assert r.exit_code == 1 and "duplicate: 'Edema'" in r.output
    broken = 'version: 1\nverbatim: "x"\nbinary:\n  Edema: {positive: ["[Edema"], negative: ["No"]}\n'
    r = _check(tmp_path / "broken.yaml", broken)
    assert r.exit_code == 2 and "unbalanced brackets" in r.output
    empty = tmp_path / "empty.yaml"
    r = _check(empty, 'version: 1\nverbatim: ""\nbinary:\n  Edema: {positive: ["Edema."], negative: ["No edema."]}\n')
    assert r.exit_code == 2
    assert r.output.strip() == (
        f"error: {empty}:2:1: verbatim must name the source the file transcribes, e.g. 'CXR-CLIP appendix, Table 7'"
    )


# -- coverage and empty files -------------------------------------------------------------------------
def test_check_fails_a_file_with_no_sentences(tmp_path):
    f = tmp_path / "nothing.yaml"
    r = _check(f, "version: 1\ndefaults:\n  positive: ['{}.']\n")
    assert r.exit_code == 1
    assert r.output.strip() == (
        f"{f}: no sentences: the file has no classes (training) and no binary or multiclass prompts (eval)"
    )
    assert "lint clean" not in r.output


def test_check_names_every_uncovered_class_at_once(tmp_path):
    f = tmp_path / "two.yaml"
    text = (
        "version: 1\ndefaults:\n  positive: ['{}.']\n  negative: ['No {}.']\n"
        "classes:\n  Atelectasis: {expressions: [atelectasis]}\n  Edema: {expressions: [pulmonary edema]}\n"
    )
    r = _check(f, text, "--dataset", "chexpert")
    assert r.exit_code == 1 and "ok" not in r.output
    missing = [c for c in CHEXPERT_LABELS if c not in ("Atelectasis", "Edema")]
    listed = ", ".join(f"{c} (positive)" if c == "No Finding" else f"{c} (positive, negative)" for c in missing)
    assert r.output.strip() == (
        f"{f}: 12 of 14 classes of chexpert lack sentences: {listed}; add them under classes: "
        "(or check one dataset with --dataset)"
    )
    r = runner.invoke(app, ["templates", "check", str(f), "--dataset", "mimic"])
    assert r.exit_code == 2 and "'mimic' is not one of" in r.output and "--dataset" in r.output


def test_prompts_refuses_an_uncovered_file_naming_all_classes(tmp_path):
    f = tmp_path / "two.yaml"
    f.write_text(
        "version: 1\ndefaults:\n  positive: ['{}.']\n  negative: ['No {}.']\n"
        "classes:\n  Atelectasis: {expressions: [atelectasis]}\n"
    )
    csv_path = ROOT / "examples/chexpert/train.csv"
    r = runner.invoke(app, ["prompts", str(csv_path), "--templates", str(f), "--out", str(tmp_path / "s")])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {f}: 13 of 14 chexpert classes lack sentences")
    assert "Support Devices (positive, negative)" in lines[0] and "No Finding (positive)" in lines[0]
    assert not (tmp_path / "s").exists()


# -- qualifiers -----------------------------------------------------------------------------------------
def test_qualifiers_none_is_the_default_and_invents_nothing():
    t = load_templates("default")
    assert t.qualifiers == "none"
    for c in t.classes.values():
        for state in ("positive", "uncertain"):
            assert not [s for s in c.sentences[state] if is_qualified(s)], (c.name, state)
    s = load_templates("default", qualifiers="sample")
    assert "There is a small left pleural effusion." in s.sentences("Pleural Effusion", "positive")
    assert "Mild cardiomegaly." in s.sentences("Cardiomegaly", "positive")
    assert "Mild cardiomegaly." not in t.sentences("Cardiomegaly", "positive")
    r = runner.invoke(app, ["templates", "preview", "default", "--class", "Pleural Effusion", "--qualifiers", "sample"])
    assert r.exit_code == 0 and "qualifiers sample" in r.output


def test_qualifier_key_and_option_errors(tmp_path):
    f = tmp_path / "q.yaml"
    msg = _load_error(f, "version: 1\nqualifiers: maybe\nclasses:\n  Edema: {expressions: [edema]}\n")
    assert msg == f"{f}:2:1: qualifiers must be one of none, sample, got 'maybe'"
    r = runner.invoke(app, ["templates", "check", str(f)])
    assert (
        r.exit_code == 2 and r.output.strip() == f"error: {f}:2:1: qualifiers must be one of none, sample, got 'maybe'"
    )
    csv_path = ROOT / "examples/chexpert/train.csv"
    r = runner.invoke(app, ["prompts", str(csv_path), "--qualifiers", "some", "--out", str(tmp_path / "s")])
    assert r.exit_code == 2  # a usage error, shown the way every bad option value is
    assert "Invalid value: --qualifiers must be none or sample, got 'some'" in r.output
    r = runner.invoke(app, ["templates", "check", "default", "--qualifiers", "some"])
    assert r.exit_code == 2 and "'some' is not one of none, sample" in r.output


def test_profile_draws_agree_within_a_study():
    t = load_templates("default", qualifiers="sample")
    assert len(t.profiles("Pleural Effusion", "positive")) > 3
    assert t.profiles("Atelectasis", "negative") == [(None, None)]
    for seed in range(200):
        texts = render_prompts(
            t, [("Pleural Effusion", "positive"), ("Cardiomegaly", "positive")], random.Random(seed), 8
        )
        sides = {qualifiers_of(s)[1] for x in texts for s in SPLIT.split(x) if "effusion" in s} - {None}
        assert len(sides) <= 1, texts


def _owner(t) -> dict[str, str]:
    return {s: name for name, c in t.classes.items() for st in ("positive", "uncertain") for s in c.sentences[st]}


def test_contradiction_check_finds_a_planted_contradiction():
    t = load_templates("default", qualifiers="sample")
    texts = ["There is a small right pleural effusion.", "There is a large right pleural effusion."]
    assert contradictions(texts, _owner(t)) == [("Pleural Effusion", texts[0], texts[1])]
    assert contradictions(["Small left pneumothorax.", "Right pneumothorax."], _owner(t))


def _render_100k(mode: str):
    """12,500 synthetic CheXpert label rows (1/0/-1/blank) x 8 variants = 100,000 texts, bulk renderer."""
    t = load_templates("default", qualifiers=mode)
    rng = np.random.default_rng(0)
    n, variants = 12_500, 8
    labels = rng.choice(np.array([1.0, 0.0, -1.0, np.nan]), size=(n, len(CHEXPERT_LABELS)), p=[0.3, 0.3, 0.1, 0.3])
    keys = study_keys(0, [f"p{i}/s1" for i in range(n)])
    states = state_codes("chexpert", labels, "uncertain", keys, 0)
    prompts, _, _ = render_bulk(t, list(CHEXPERT_LABELS), states, keys, variants)
    studies = prompts.to_pylist()
    assert sum(len(x) for x in studies) >= 100_000
    texts = {x for ts in studies for x in ts}
    sentences = {s for x in texts for s in SPLIT.split(x)}
    bad = [(s, k) for s in sentences for k in sentence_defects(s) if k in ("missing-article", "agreement", "a-an")]
    assert bad == []
    return t, studies, sentences


def test_100k_texts_with_sampled_qualifiers_never_contradict_within_a_study():
    t, studies, sentences = _render_100k("sample")
    owner = _owner(t)
    assert sum(1 for s in sentences if is_qualified(s)) > 100  # qualified sentences are in use
    assert [c for texts in studies if (c := contradictions(texts, owner))] == []


def test_100k_texts_without_qualifiers_invent_none():
    t, _, sentences = _render_100k("none")
    assert not [s for s in sentences if s in _owner(t) and is_qualified(s)]


# -- contradictory labels -------------------------------------------------------------------------------
def test_no_finding_conflict_rule():
    st = [("No Finding", "positive"), ("Edema", "positive"), ("Cardiomegaly", "negative")]
    assert resolve_no_finding(st) == st[1:]
    ok = [("No Finding", "positive"), ("Support Devices", "positive"), ("Edema", "negative")]
    assert resolve_no_finding(ok) == ok
    labels = [None] * len(CHEXPERT_LABELS)
    labels[CHEXPERT_LABELS.index("No Finding")] = 1
    labels[CHEXPERT_LABELS.index("Edema")] = -1
    assert [c for c, _ in chexpert_states(labels, "uncertain")] == ["Edema"]
    assert [c for c, _ in chexpert_states(labels, "drop")] == ["No Finding"]
    nih = [0] * len(NIH_LABELS)
    nih[NIH_LABELS.index("No Finding")] = nih[NIH_LABELS.index("Mass")] = 1
    assert ("No Finding", "positive") not in nih_states(nih, random.Random(0), 3)


def test_no_finding_with_edema_is_counted_and_not_called_normal(tmp_path):
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_LABELS]
    rows = []
    for i, extra in enumerate([{"Edema": "1.0"}, {"Support Devices": "1.0"}, {}]):
        lab = {c: "" for c in CHEXPERT_LABELS} | {"No Finding": "1.0"} | extra
        rows.append([f"CheXpert-v1.0-small/train/patient0000{i}/study1/view1_frontal.jpg", "F", "50", "Frontal", "PA"])
        rows[-1] += [lab[c] for c in CHEXPERT_LABELS]
    p = tmp_path / "train.csv"
    with open(p, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    out = tmp_path / "s"
    r = runner.invoke(app, ["prompts", str(p), "--no-images", "--out", str(out), "--variants", "16"])
    assert r.exit_code == 0, r.output
    man = json.loads((out / "chexpert" / "manifest.json").read_text())
    assert man["counts"]["label_conflicts"] == 1
    t = load_templates("default")
    normal = set(t.sentences("No Finding", "positive"))
    import pyarrow.parquet as pq

    table = pq.read_table(sorted((out / "chexpert").rglob("*.parquet"))).to_pylist()
    by_study = {row["study_id"]: row["prompts"] for row in table}
    edema = by_study["patient00000/study1"]
    assert all(not (set(SPLIT.split(x)) & normal) for x in edema)
    assert all(any("edema" in s.lower() for s in SPLIT.split(x)) for x in edema)
    assert all(set(SPLIT.split(x)) & normal for x in by_study["patient00001/study1"])  # devices: still normal


# -- the docs example ---------------------------------------------------------------------------------------
def _doc_example() -> str:
    text = (ROOT / "docs/templates.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert blocks, "docs/templates.md has no yaml example"
    return blocks[0]


def test_docs_example_loads_checks_and_renders(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(_doc_example())
    r = runner.invoke(app, ["templates", "check", str(f), "--dataset", "chexpert"])
    assert r.exit_code == 0, r.output
    assert "lint clean" in r.output and "14 classes" in r.output
    t = load_templates(f)
    assert lint(t) == []
    assert "There is a pneumothorax." in t.sentences("Pneumothorax", "positive")
    assert "There is atelectasis." in t.sentences("Atelectasis", "positive")
    given = {"No Finding": 1, "Cardiomegaly": 1, "Edema": 0, "Pleural Effusion": 1}
    labels = [given.get(c) for c in CHEXPERT_LABELS]
    texts = render_prompts(t, chexpert_states(labels, "uncertain"), random.Random(0), 4)
    assert len(texts) == 4 and all(len(SPLIT.split(x)) == 3 for x in texts)  # No Finding yields to Cardiomegaly
    sample = load_templates(f, qualifiers="sample")
    assert "There is a small left pleural effusion." in sample.sentences("Pleural Effusion", "positive")
