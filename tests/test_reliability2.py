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
