"""Template files cannot exhaust memory or time, and bad files get messages, not tracebacks (issue 13)."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from cxrprep.cli.app import app
from cxrprep.text import templates as tm
from cxrprep.text.templates import TemplateError, load_templates

runner = CliRunner()
GOOD = """version: 1
defaults:
  positive: ["There is {}."]
classes:
  Nodule:
    expressions: ["nodule"]
"""


def _billion_laughs(levels: int = 9) -> str:
    lines = ["version: 1", 'lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    lines.append(f"classes: {{Nodule: {{expressions: *l{levels}}}}}")
    return "\n".join(lines) + "\n"


def _expect(tmp_path, text: str | bytes, match: str, seconds: float = 5.0) -> TemplateError:
    p = tmp_path / "t.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    t0 = time.perf_counter()
    with pytest.raises(TemplateError, match=match) as e:
        load_templates(p)
    assert time.perf_counter() - t0 < seconds, "the limit must stop the work early"
    r = runner.invoke(app, ["templates", "check", str(p)])
    # a bad template file is bad usage (exit 2) in every command, templates check included
    assert r.exit_code == 2 and "Traceback" not in r.output and isinstance(r.exception, (SystemExit, type(None)))
    assert f"error: {e.value}" in r.output
    return e.value


def test_alias_bomb_fails_fast(tmp_path):
    """10^9 strings if the aliases were expanded; the node budget stops it at once."""
    e = _expect(tmp_path, _billion_laughs(), "aliases .* followed; is it an alias bomb", seconds=3)
    assert e.line > 0


def test_recursive_alias(tmp_path):
    _expect(
        tmp_path,
        "version: 1\nclasses: &c {Nodule: {expressions: [nodule], x: *c}}\n",
        "nested more than 32 levels deep|alias bomb|unknown key",
    )


def test_expression_expansion_counted_before_it_is_built(tmp_path, monkeypatch):
    alts = "[" + ", ".join(f"w{i}" for i in range(10)) + "]"
    e = _expect(
        tmp_path,
        GOOD.replace('["nodule"]', '["' + " ".join([alts] * 9) + '"]'),
        r"expands to more than 100,000 strings",
    )
    assert e.line == 6  # the line of the expression
    assert tm.MAX_EXPANSIONS == 100_000


def test_sentence_product_capped_with_class_and_line(tmp_path):
    # 1,000 default sentences x 1,000 expressions = 1,000,000 sentences for one class: over MAX_SENTENCES
    alts = "[" + ", ".join(f"a{i}" for i in range(10)) + "]"
    three = " ".join([alts] * 3)
    text = GOOD.replace('["There is {}."]', f'["{three} {{}}."]').replace('["nodule"]', f'["{three} nodule"]')
    e = _expect(tmp_path, text, r"class 'Nodule' positive sentences would be 1,000,000 strings")
    assert e.line == 5  # the class's line


def test_total_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(tm, "MAX_TOTAL_SENTENCES", 50)
    alts = "[" + ", ".join(f"a{i}" for i in range(10)) + "]"
    _expect(tmp_path, GOOD.replace('["nodule"]', '["' + f"{alts} {alts}" + ' nodule"]'), "pass the cap of 50")


@pytest.mark.parametrize("value", ["0x1", '"1"', "1.0", "2", "[1]", "true"])
def test_version_must_be_1(tmp_path, value):
    e = _expect(tmp_path, GOOD.replace("version: 1", f"version: {value}"), "version must be 1")
    assert e.line == 1
    assert load_templates(_write(tmp_path / "ok.yaml", GOOD)).classes["Nodule"].expressions == ["nodule"]


def _write(p, text):
    p.write_text(text)
    return p


def test_not_utf8(tmp_path):
    e = _expect(tmp_path, GOOD.encode().replace(b"nodule", b"nod\xfcle"), r"not UTF-8 text \(byte 0xfc")
    assert (e.line, e.column) == (6, 23)  # 1-based, at the bad byte


def test_control_character(tmp_path):
    _expect(tmp_path, GOOD.replace("nodule", "nod\x07ule"), "YAML error: special characters")


@pytest.mark.parametrize("depth", [40, 50_000])
def test_deep_yaml_nesting(tmp_path, depth):
    _expect(tmp_path, "version: 1\nx: " + "[" * depth + "]" * depth + "\n", "nested more than 32 levels deep")


def test_deep_bracket_nesting(tmp_path):
    _expect(
        tmp_path,
        GOOD.replace('["nodule"]', '["' + "[" * 5000 + "nodule" + "]" * 5000 + '"]'),
        "brackets nested more than 32 deep",
    )


def test_prompts_command_exits_2_on_bad_templates(tmp_path, examples_dir):
    p = _write(tmp_path / "bomb.yaml", _billion_laughs())
    r = runner.invoke(
        app,
        [
            "prompts",
            str(examples_dir / "chexpert/train.csv"),
            "--templates",
            str(p),
            "--out",
            str(tmp_path / "out"),
            "--no-images",
        ],
    )
    assert r.exit_code == 2 and "alias bomb" in r.output and "Traceback" not in r.output
