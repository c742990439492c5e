"""Prompt text a radiologist would write: the template lint, the shipped files, rendered label rows."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxrprep.cli.app import app
from cxrprep.datasets.prompts import chexpert_states, nih_states, render_prompts
from cxrprep.labels import CHEXPERT_LABELS, NIH_LABELS
from cxrprep.text.templates import QUALIFIERS, STATES, lint, load_templates, sentence_defects

ROOT = Path(__file__).parent.parent
runner = CliRunner()


@pytest.mark.parametrize(
    "sentence,negative,kinds",
    [
        ("There is acute fracture is seen.", False, ["double-verb", "missing-article"]),
        ("There is evidence of patchy infiltrate is present.", False, ["double-verb", "missing-article"]),
        ("No apical left pneumothorax is noted.", True, ["qualified-negative"]),
        ("No lobar pneumonia.", True, ["qualified-negative"]),
        ("Possible a PICC line.", False, ["article-after-modifier"]),
        ("Support devices is seen.", False, ["agreement"]),
        ("There is no convincing signs of pneumonia.", True, ["agreement"]),
        ("There are no convincing signs of pneumonia.", True, []),
        ("no pneumothorax.", True, ["malformed"]),
        ("No pneumothorax", True, ["malformed"]),
        ("No no pneumothorax.", True, ["malformed"]),
        # well formed
        ("Heart size is normal and the lungs are clear.", False, []),
        ("No pneumothorax.", True, []),
        ("There is no radiographic evidence for pleural effusion.", True, []),
        ("Possible PICC line.", False, []),
        ("A PICC line may be present.", False, []),
        ("Atelectasis is seen.", False, []),
        ("Small left pleural effusion cannot be excluded.", False, []),
    ],
)
def test_sentence_defects(sentence, negative, kinds):
    assert sentence_defects(sentence, negative) == kinds


def test_every_class_and_state_of_default_yaml_is_clean():
    t = load_templates(ROOT / "prompts/default.yaml")
    assert lint(t) == []
    for name, c in t.classes.items():
        for state in STATES:
            pool = c.sentences[state]
            assert len(pool) == len(set(pool)), (name, state)
            for s in pool:
                assert sentence_defects(s, state == "negative") == [], (name, state, s)
            if state == "negative":  # never a qualifier, and every plain negative names the finding
                assert not any(set(re.findall(r"[a-z-]+", s.lower())) & QUALIFIERS for s in pool), name
        if name != "No Finding":
            assert c.sentences["positive"] and c.sentences["negative"] and c.sentences["uncertain"], name


def test_eval_yaml_is_clean():
    assert lint(load_templates(ROOT / "prompts/eval.yaml")) == []


BAD = """\
version: 1
defaults:
  positive: ["[There is, ( )] + [{}., {} is seen.]"]
  negative: ["No {}."]
  uncertain: ["Possible {}."]
classes:
  Pneumothorax:
    expressions: ["pneumothorax", "[( ), small] pneumothorax"]
  Support Devices:
    expressions: ["a PICC line"]
    positive: ["Support devices is seen.", "support devices are in place"]
"""


def test_lint_reports_each_kind_with_position(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    got = {(d.kind, d.src.line, d.sentence) for d in lint(load_templates(f))}
    assert ("double-verb", 3, "There is pneumothorax is seen.") in got
    assert ("qualified-negative", 4, "No small pneumothorax.") in got
    assert ("duplicate", 4, "No pneumothorax.") in got
    assert ("article-after-modifier", 5, "Possible a PICC line.") in got
    assert ("agreement", 11, "Support devices is seen.") in got
    assert ("malformed", 11, "Support devices are in place") in got
    r = runner.invoke(app, ["templates", "check", str(f)])
    assert r.exit_code == 1
    assert f"{f}:3:" in r.output and "double-verb: 'There is pneumothorax is seen.'" in r.output
    assert "lint defects" in r.output
    r = runner.invoke(app, ["templates", "check", str(f), "--no-lint"])  # lint off; the file still covers 2 classes
    assert r.exit_code == 1 and "lack sentences" in r.output and "double-verb" not in r.output


def test_shipped_files_pass_the_cli_check():
    r = runner.invoke(app, ["templates", "check", str(ROOT / "prompts/default.yaml"), str(ROOT / "prompts/eval.yaml")])
    assert r.exit_code == 0, r.output
    assert r.output.count("lint clean") == 2


def _label_rows(n: int, k: int, values, rng: random.Random) -> list[list]:
    return [[rng.choice(values) for _ in range(k)] for _ in range(n)]


def test_rendered_label_rows_have_no_defects():
    """Synthetic CheXpert (1/0/-1/blank) and ChestX-ray14 label rows through the real renderer: 0 defects."""
    t = load_templates(ROOT / "prompts/default.yaml")
    negative = {s for c in t.classes.values() for s in c.sentences["negative"]}
    rng = random.Random(0)
    reports = []
    for labels in _label_rows(1500, len(CHEXPERT_LABELS), [1, 0, -1, None, None], rng):
        for policy in ("uncertain", "positive", "negative"):
            reports += render_prompts(t, chexpert_states(labels, policy), rng, 2)
    for labels in _label_rows(1500, len(NIH_LABELS), [0, 0, 0, 1], rng):
        reports += render_prompts(t, nih_states(labels, rng, 3), rng, 2)
    sentences = [s for r in reports for s in re.split(r"(?<=\.) (?=[A-Z])", r) if s]
    assert len(sentences) > 30_000
    defects = [(s, k) for s in sentences for k in sentence_defects(s, s in negative)]
    assert defects == []
