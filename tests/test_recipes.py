"""examples/recipes/: they load, match the table in docs/reproducing.md, and --print-config round-trips."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cxrtrain.cli.app import app
from cxrtrain.config import config_to_yaml, load_config

ROOT = Path(__file__).parent.parent
RECIPES = sorted((ROOT / "examples/recipes").glob("*.yaml"))
runner = CliRunner()


def _table() -> list[tuple[str, str, object]]:
    text = (ROOT / "docs/reproducing.md").read_text()
    body = text.split("<!-- recipes-table -->", 1)[1].split("<!-- /recipes-table -->", 1)[0]
    rows = []
    for line in body.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        recipe, _, key, value = cells
        rows.append((recipe, key.strip("`"), yaml.safe_load(value.strip("`"))))
    return rows


def _value(cfg, key: str):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return list(obj) if isinstance(obj, tuple) else obj


def test_recipes_exist_and_load():
    assert [p.stem for p in RECIPES] == ["cxr-clip-r50", "cxr-clip-swin", "jang-clip-b32", "partial-clip-b32"]
    for p in RECIPES:
        load_config(p)
        for line in p.read_text().splitlines():  # every setting carries a comment
            if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
                assert "#" in line, (p.name, line)


def test_recipes_match_the_docs_table():
    rows = _table()
    assert {r for r, _, _ in rows} == {p.stem for p in RECIPES}
    for recipe, key, want in rows:
        cfg = load_config(ROOT / "examples/recipes" / f"{recipe}.yaml")
        got = _value(cfg, key)
        assert got == want or (isinstance(want, float) and got == pytest.approx(want)), (recipe, key, got, want)


@pytest.mark.parametrize("recipe", [p.name for p in RECIPES] + ["../train_tiny.yaml"])
def test_print_config_round_trips(tmp_path, recipe):
    path = ROOT / "examples/recipes" / recipe
    r = runner.invoke(app, ["run", "--config", str(path), "--set", "lr=3e-5", "--print-config"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "resolved.yaml"
    out.write_text(r.output)
    assert load_config(out) == load_config(path, ["lr=3e-5"])
    assert config_to_yaml(load_config(out)) == r.output
    assert re.search(r"^lr: 3.0e-05$", r.output, re.M)


def test_run_needs_shards_without_print_config():
    r = runner.invoke(app, ["run", "--config", str(RECIPES[0])])
    assert r.exit_code == 2 and "SHARDS" in r.output
