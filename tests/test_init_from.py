"""``cxrtrain run --init-from RUN`` fine-tunes an imported (or any earlier) run: its architecture, towers,
tokenizer and weights are the starting point (issue 23)."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from cxrtrain.cli.app import app

runner = CliRunner()


def test_run_init_from_an_imported_chexzero(tmp_path, demo_shards):
    from test_import import _half_some, _import, tiny_openai_clip

    _, ref = tiny_openai_clip(seed=5)
    ck = tmp_path / "chexzero.pt"
    torch.save(_half_some(ref.state_dict()), ck)
    assert _import("chexzero", ck, tmp_path / "cz").exit_code == 0
    out = tmp_path / "ft"
    args = ["run", str(demo_shards), "--init-from", str(tmp_path / "cz"), "--out", str(out)]
    args += ["--set", "batch_size=4", "--set", "max_steps=1", "--set", "lr=1e-9", "--set", "warmup_steps=0"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    start = json.loads((tmp_path / "cz/best/config.json").read_text())["model"]
    assert json.loads((out / "last/config.json").read_text())["model"] == start  # the imported architecture
    a, b = load_file(str(tmp_path / "cz/best/model.safetensors")), load_file(str(out / "last/model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-4  # lr 1e-9: still the import


def test_init_from_a_folder_without_a_run_is_one_line(tmp_path, demo_shards):
    (tmp_path / "empty").mkdir()
    r = runner.invoke(
        app, ["run", str(demo_shards), "--init-from", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and "no model.safetensors" in r.output and "Traceback" not in r.output
