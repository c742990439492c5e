"""Image commands as runs: paths stay inside --image-root, dead workers, pydicom's whole test set, output
failures and a full disk stop a run with a message (split from test_images.py)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import cli_args
from helpers import phantom as _phantom
from typer.testing import CliRunner

from cxrprep.cli.app import app
from cxrprep.shards import ShardDataset


def _image_rows(out, dataset):
    ds = ShardDataset(out / dataset)
    rows = sorted(r["study_id"] for r in ds.iter_rows())
    return rows, ds.rejects()


def test_paths_stay_inside_image_root(tmp_path):
    """CSV paths with ../, absolute paths and symlinks out of the root are rejects; --allow-outside-root
    reads them."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    img = (_phantom() * 255).astype(np.uint8)
    cv2.imwrite(str(root / "sub" / "in.png"), img)
    cv2.imwrite(str(elsewhere / "secret.png"), img)
    (root / "link.png").symlink_to(elsewhere / "secret.png")  # a symlink inside the root pointing out
    (root / "ok_link.png").symlink_to(root / "sub" / "in.png")  # a symlink that stays inside is fine
    (root / "dirlink").symlink_to(elsewhere, target_is_directory=True)
    (root / "loop.png").symlink_to(root / "loop.png")  # a loop: a reject, not a hang
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(
        "path,study_id\n"
        "sub/in.png,a\n"
        "../elsewhere/secret.png,b\n"
        f"{elsewhere / 'secret.png'},c\n"
        "link.png,d\n"
        "ok_link.png,e\n"
        "dirlink/secret.png,f\n"
        "sub/../sub/in.png,g\n"
        "loop.png,h\n"
        "/etc/passwd,i\n"
    )
    out = tmp_path / "out"
    args = cli_args("images", csv_path, image_root=root, out=out, workers=1, size=32, max_failed="100%")
    r = CliRunner().invoke(app, args + ["--dataset", "strict"])
    assert r.exit_code == 0, r.output
    assert "inputs seen 9 = rows written 3 + rejects 6" in r.output
    rows, rejects = _image_rows(out, "strict")
    assert rows == ["a", "e", "g"]
    by_id = {x["study_id"]: x for x in rejects}
    for sid in "bcdfi":
        assert by_id[sid]["stage"] == "path" and "outside --image-root" in by_id[sid]["reason"], by_id[sid]
        assert "--allow-outside-root" in by_id[sid]["reason"]
    assert by_id["h"]["stage"] == "image"  # inside the root, but unreadable (symlink loop)
    r = CliRunner().invoke(app, args + ["--dataset", "loose", "--allow-outside-root"])
    assert r.exit_code == 0, r.output
    rows, rejects = _image_rows(out, "loose")
    assert rows == ["a", "b", "c", "d", "e", "f", "g"]  # /etc/passwd and the loop are still not images
    assert {x["study_id"] for x in rejects} == {"h", "i"}
    # a folder SRC is its own root: symlinks out of it are rejects, symlinked folders are not descended
    r = CliRunner().invoke(
        app,
        cli_args("images", root, out=out, dataset="folder", workers=1, size=32, max_failed="100%"),
    )
    assert r.exit_code == 0, r.output
    rows, rejects = _image_rows(out, "folder")
    assert rows == ["ok_link", "sub/in"]
    assert {x["study_id"]: x["stage"] for x in rejects} == {"link": "path", "loop": "image"}


def test_paths_helper(tmp_path):
    from cxrprep.paths import outside_root, split_outside

    (tmp_path / "r").mkdir()
    assert outside_root(tmp_path / "r" / "x.png", tmp_path / "r") is None  # missing files are for the reader
    assert "outside --image-root" in outside_root(tmp_path / "r" / ".." / "x.png", tmp_path / "r")
    assert "cannot resolve" in outside_root("a\0b", tmp_path / "r")
    items = [(str(tmp_path / "r" / "a.png"), 1), ("/etc/passwd", 2)]
    keep, bad = split_outside(items, tmp_path / "r")
    assert keep == items[:1] and bad[0][0] == "/etc/passwd"
    assert split_outside(items, tmp_path / "r", allow=True) == (items, [])


def test_prompts_paths_stay_inside_image_root(tmp_path, examples_dir):
    import shutil

    lines = (examples_dir / "chexpert" / "train.csv").read_text().splitlines()
    header, first = lines[0], lines[1]
    rel = first.split(",", 1)[0]  # CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg
    root, outside = tmp_path / "root", tmp_path / "outside"
    for base in (root, outside):
        (base / rel).parent.mkdir(parents=True)
        shutil.copy(examples_dir / "chexpert" / rel, base / rel)
    rest = first.split(",", 1)[1]
    escaped = "../outside/" + rel.replace("patient00001", "patient00002")
    (outside / rel.replace("patient00001", "patient00002")).parent.mkdir(parents=True)
    shutil.copy(examples_dir / "chexpert" / rel, outside / rel.replace("patient00001", "patient00002"))
    absolute = str(outside / rel).replace("patient00001", "patient00003")
    (outside / rel.replace("patient00001", "patient00003")).parent.mkdir(parents=True)
    shutil.copy(examples_dir / "chexpert" / rel, absolute)
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("\n".join([header, first, f"{escaped},{rest}", f"{absolute},{rest}"]) + "\n")
    out = tmp_path / "out"
    args = cli_args("prompts", csv_path, image_root=root, out=out, size=32, variants=1, workers=1, max_failed="100%")
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    ds = ShardDataset(out / "chexpert")
    assert [row["study_id"] for row in ds.iter_rows()] == ["patient00001/study1"]
    rejects = {x["study_id"]: x["reason"] for x in ds.rejects()}
    assert set(rejects) == {"patient00002/study1", "patient00003/study1"}
    assert all("outside --image-root" in v for v in rejects.values())
    r = CliRunner().invoke(app, args + ["--allow-outside-root", "--overwrite"])
    assert r.exit_code == 0, r.output
    assert len(list(ShardDataset(out / "chexpert").iter_rows())) == 3


def _kill_worker(args):
    os._exit(9)  # a worker dying (OOM killer, segfault in a decoder) kills the pool


def test_dead_worker_pool_stops_the_run_with_a_message(tmp_path, monkeypatch):
    import cxrprep.datasets.folder as imagesrc

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"{i}.png"), (_phantom() * 255).astype(np.uint8))
    monkeypatch.setattr(imagesrc, "_work", _kill_worker)  # the forked workers inherit the patch
    r = CliRunner().invoke(app, ["images", str(src), "--out", str(tmp_path / "out"), "--workers", "2"])
    assert r.exit_code == 1 and isinstance(r.exception, (SystemExit, type(None))), r.output
    assert "error: the run stopped: a worker process died" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out" / "images" / "manifest.json").exists()


def test_every_pydicom_test_file_in_one_folder(tmp_path):
    """Every file that pydicom and pydicom-data ship as test data, as .dcm in one folder, through
    `cxrprep images`: the run finishes and inputs seen = rows written + rejects."""
    import shutil
    import warnings

    from pydicom.data import get_testdata_files

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "download failures": the external data is installed or not
        files = sorted(f for f in get_testdata_files() if os.path.isfile(f))
    n_dcm = sum(f.lower().endswith(".dcm") for f in files)
    assert n_dcm >= 140, f"only {n_dcm} pydicom test DICOMs found; is pydicom-data installed?"
    src = tmp_path / "all"
    src.mkdir()
    for i, f in enumerate(files):
        shutil.copy(f, src / f"{i:03d}_{Path(f).name.replace('.dcm', '')}.dcm")
    out = tmp_path / "out"
    r = CliRunner().invoke(
        app,
        cli_args("images", src, out=out, dataset="pydicom", workers=2, size=32, max_failed="100%"),
    )
    assert r.exit_code == 0 and r.exception is None, r.output
    c = ShardDataset(out / "pydicom").manifest["counts"]
    assert c["inputs_seen"] == len(files) == c["rows_written"] + c["failed"] + c["skipped"]
    assert c["rows_written"] >= 140, c  # the colour, multi-frame, JPEG, J2K and RLE files decode
    assert "Traceback" not in r.output


@pytest.mark.parametrize("err", [28, 2])  # ENOSPC (disk full), ENOENT (the output folder disappeared)
def test_output_failure_stops_the_run_with_a_message(tmp_path, monkeypatch, err):
    """A fake full disk / vanished folder while writing: exit 1, one line naming the cause, no traceback."""
    import pyarrow.parquet as pq

    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        cv2.imwrite(str(src / f"{i}.png"), (_phantom() * 255).astype(np.uint8))

    def full(self, table, *a, **k):
        raise OSError(err, os.strerror(err), str(tmp_path / "out" / "images" / "data" / "x.partial"))

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    r = CliRunner().invoke(app, ["images", str(src), "--out", str(tmp_path / "out"), "--workers", "1", "--size", "32"])
    assert r.exit_code == 1 and isinstance(r.exception, (SystemExit, type(None))), r.output
    assert "error: the run stopped" in r.output and "Traceback" not in r.output and "internal error" not in r.output
    assert ("disk full" if err == 28 else "disappeared") in r.output
    assert not (tmp_path / "out" / "images" / "manifest.json").exists()


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB tmpfs (needs root and mount rights; skipped otherwise)."""
    import shutil
    import subprocess

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_real_full_disk(tmp_path, tiny_disk):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):  # incompressible noise: ~30 x 2 x 64 KiB of PNG, far more than the 1 MiB disk
        cv2.imwrite(str(src / f"{i:02d}.png"), rng.integers(0, 256, (256, 256), dtype=np.uint8))
    r = CliRunner().invoke(
        app, ["images", str(src), "--out", str(tiny_disk), "--workers", "1", "--size", "256", "--format", "png"]
    )
    assert r.exit_code == 1 and isinstance(r.exception, (SystemExit, type(None))), r.output
    assert "disk full" in r.output and "Traceback" not in r.output and "internal error" not in r.output
    assert not (tiny_disk / "images" / "manifest.json").exists()
    left = [p for p in tiny_disk.rglob("*") if p.is_file() and p.suffix in (".parquet", ".partial")]
    assert not left, left  # what the run had not finished was removed
