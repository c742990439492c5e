"""Issue 20, the second reliability round: every campaign FAIL has a test here that failed on the old code."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cxrprep.cli.app import app as prep_app


def _png_folder(src: Path, n: int = 3, size: int = 32) -> Path:
    src.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        a = np.clip(rng.normal(120, 40, (size, size)), 0, 255).astype(np.uint8)
        a[:, size // 2 - 3 : size // 2 + 3] = 230
        cv2.imwrite(str(src / f"im{i}.png"), a)
    return src


# -- a .lock symlink must not truncate its target -----------------------------------------------------
def test_lock_symlink_is_refused_not_followed(tmp_path):
    src = _png_folder(tmp_path / "src")
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    ds = tmp_path / "shards" / "ev"
    ds.mkdir(parents=True)
    os.symlink(victim, ds / ".lock")
    r = CliRunner().invoke(prep_app, ["images", str(src), "--out", str(tmp_path / "shards"), "--dataset", "ev"])
    assert victim.read_text() == "keep me\n"
    assert r.exit_code == 2, r.output
    assert ".lock is a symbolic link" in r.output and "Traceback" not in r.output


# -- benchmark readers default away from the training root ------------------------------------------
def test_benchmark_readers_default_to_bench(monkeypatch):
    import click
    import typer

    cmd = typer.main.get_command(prep_app)
    ctx = click.Context(cmd)
    for name in ("rsna", "siim", "vindr", "openi", "mimic-5x200", "chexpert-5x200"):
        sub = cmd.get_command(ctx, name)
        out = next(p for p in sub.params if p.name == "out")
        assert str(out.default) == "bench", name
        assert "--out shards/" not in (sub.help or ""), name


def _images_dataset(tmp_path: Path, name: str = "ev") -> Path:
    src = _png_folder(tmp_path / f"src-{name}")
    out = tmp_path / "shards"
    r = CliRunner().invoke(prep_app, ["images", str(src), "--out", str(out), "--dataset", name, "--workers", "1"])
    assert r.exit_code == 0, r.output
    return out / name


# -- inspect --verify: every file in data/ must be listed in the manifest -------------------------------
def test_verify_refuses_stray_copy_in_data(tmp_path):
    import shutil

    d = _images_dataset(tmp_path)
    part = next((d / "data").glob("*.parquet"))
    r = CliRunner().invoke(prep_app, ["inspect", str(d), "--verify", "--tiles", "0"])
    assert r.exit_code == 0, r.output
    shutil.copy(part, part.with_name(part.stem + " (1).parquet"))
    r = CliRunner().invoke(prep_app, ["inspect", str(d), "--verify", "--tiles", "0"])
    assert r.exit_code == 1, r.output
    assert "(1).parquet" in r.output and "not listed in manifest.json" in r.output


# -- YAML: alias bombs and duplicate keys in configs; duplicate classes and a list use_defaults in templates
def _config_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append(f"crop_scale: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_config_alias_bomb_refused_fast(tmp_path):
    import time

    from cxrtrain.cli.app import app as train_app

    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(_config_bomb())
    assert len(cfg.read_bytes()) < 1000
    t = time.perf_counter()
    r = CliRunner().invoke(train_app, ["run", str(tmp_path), "--config", str(cfg), "--print-config"])
    assert time.perf_counter() - t < 10
    assert r.exit_code == 2, r.output
    assert "alias bomb" in r.output and "bomb.yaml" in r.output


def test_config_duplicate_key_names_both_lines(tmp_path):
    from cxrtrain.config import load_config

    cfg = tmp_path / "dup.yaml"
    cfg.write_text("lr: 1.0e-4\nepochs: 2\nlr: 3.0e-4\n")
    with pytest.raises(ValueError, match=r"'lr' is given twice \(line 1 and line 3\)"):
        load_config(cfg)
    cfg.write_text("model:\n  preset: tiny\n  embed_dim: 32\n  embed_dim: 64\n")
    with pytest.raises(ValueError, match=r"'embed_dim' is given twice \(line 3 and line 4\)"):
        load_config(cfg)
    cfg.write_text("lr: 3.0e-4\nepochs: 2\n")  # a plain config still loads
    assert load_config(cfg).epochs == 2


TEMPLATE = """version: 1
defaults:
  positive: ["There is {{}}."]
classes:
  Nodule:
    expressions: ["nodule"]
{extra}"""


def test_template_class_defined_twice(tmp_path):
    from cxrprep.text.templates import TemplateError, load_templates

    p = tmp_path / "t.yaml"
    p.write_text(TEMPLATE.format(extra='  Nodule:\n    expressions: ["mass"]\n'))
    with pytest.raises(TemplateError, match=r"'Nodule' is defined twice \(line 5 and line 7\)"):
        load_templates(p)


def test_templates_check_use_defaults_list(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text(TEMPLATE.format(extra="    use_defaults: [true]\n"))
    r = CliRunner().invoke(prep_app, ["templates", "check", str(p)])
    assert r.exit_code == 2, r.output
    assert "use_defaults must be true or false, got a list" in r.output and "internal error" not in r.output


# -- no loop without progress: text-less rows under a training root -----------------------------------
TINY = ["--set", "batch_size=4", "--set", "model.image_size=32", "--set", "model.embed_dim=32"]
TINY += ["--set", "warmup_steps=1", "--set", "log_every=100"]


def make_textless(root: Path, name: str = "rsna-pneumonia", n: int = 20) -> Path:
    """A benchmark-like dataset: images and a label, no report, no prompts (as cxrprep rsna writes)."""
    from cxrprep.schema import empty_row
    from cxrprep.shards import ShardWriter

    rng = np.random.default_rng(1)
    with ShardWriter(root, name, label_names=["Pneumonia"], row_group_rows=8) as w:
        for i in range(n):
            r = empty_row(name, f"s{i:04d}", f"p{i:04d}", "train")
            r["labels"] = [i % 2]
            a = np.clip(rng.normal(120, 30, (40, 48)), 0, 255).astype(np.uint8)
            enc = cv2.imencode(".png", a)[1].tobytes()
            r["images"] = [dict(image_id=f"i{i}", view="PA", image=enc, height=40, width=48)]
            w.write(r)
    return root / name


def _cxrtrain(*args, timeout: float = 60) -> tuple[int, str, float]:
    import subprocess
    import sys
    import time

    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "cxrtrain", *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout
    )
    return p.returncode, p.stdout + p.stderr, time.perf_counter() - t


@pytest.mark.slow
def test_textless_root_exits_2_for_run_and_batch(tmp_path):
    root = tmp_path / "shards"
    make_textless(root)
    rc, out, dt = _cxrtrain("run", root, "--out", tmp_path / "run", *TINY)
    assert rc == 2 and dt < 30, out
    assert "rsna-pneumonia: 20 train rows, none has text" in out and "--out bench/" in out
    assert "Traceback" not in out and not (tmp_path / "run").exists()
    rc, out, dt = _cxrtrain("batch", root, "--out", tmp_path / "look", "--n", "2")
    assert rc == 2 and dt < 30, out
    assert "rsna-pneumonia: 20 train rows, none has text" in out


@pytest.mark.slow
def test_mixed_root_trains_on_text_rows_and_says_how_many_skipped(tmp_path):
    from conftest import make_demo_shards

    from cxrtrain.cli.app import app as train_app

    root = make_demo_shards(tmp_path / "shards")
    make_textless(root)
    r = CliRunner().invoke(train_app, ["run", str(root), "--out", str(tmp_path / "run"), *TINY, "--set", "max_steps=1"])
    assert r.exit_code == 0, r.output
    assert "skipped 20 train rows without text (rsna-pneumonia: 20)" in r.output
    assert "train 32," in r.output  # the demo's text studies only, as without the text-less dataset


def test_stream_skips_textless_rows_and_never_spins(tmp_path):
    """The stream itself, without the up-front check: text-less rows raise at once instead of spinning."""
    from cxrprep.shards import ShardDataset
    from cxrtrain.config import load_config
    from cxrtrain.data import StudyStream

    cfg = load_config(None, ["batch_size=2", "model.image_size=32"])
    ds = ShardDataset(make_textless(tmp_path / "shards", n=6))
    with pytest.raises(RuntimeError, match="no train rows with images and text"):
        next(iter(StudyStream([ds], "train", cfg, None, 2, train=True)))
