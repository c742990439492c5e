"""Issue 20, the second reliability round: every campaign FAIL has a test here that failed on the old code."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import untrained_checkpoint
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


# -- bounded probes ---------------------------------------------------------------------------------------
def _separable(n: int, d: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.5).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, :3] += 4 * (2 * y - 1)  # separable: the validate loss keeps falling, so the cap always binds
    return x, y


def test_probe_stops_doubling_at_the_documented_bound():
    import time

    from cxrtrain.fewshot import MAX_EPOCHS, FewshotConfig, train_head

    assert FewshotConfig().max_epochs == MAX_EPOCHS == 1000
    x, y = _separable(8)
    xv, yv = _separable(8, seed=1)
    t = time.perf_counter()
    _, info = train_head(x, y, xv, yv, cap=30, max_epochs=MAX_EPOCHS, patience=10, select="loss", seed=0, lr=1e-4)
    dt = time.perf_counter() - t
    assert info["cap_binding"] and info["caps_tried"] == [30, 60, 120, 240, 480]  # the next (960) would pass 1000
    assert sum(info["caps_tried"]) <= MAX_EPOCHS and dt < 20, (info, dt)


# -- a non-UTF-8 file name is a row with the name escaped, not an exit naming nothing ----------------------
def test_non_utf8_file_name_is_escaped(tmp_path):
    from cxrprep.shards import ShardDataset

    src = _png_folder(tmp_path / "src", n=2)
    os.rename(src / "im1.png", os.fsencode(src) + b"/bad\xff name.png")
    out = tmp_path / "shards"
    r = CliRunner().invoke(prep_app, ["images", str(src), "--out", str(out), "--dataset", "ev", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "inputs seen 2 = rows written 2 + rejects 0" in r.output
    rows = {x["study_id"]: x for x in ShardDataset(out / "ev").iter_rows(["study_id", "source", "images"])}
    assert set(rows) == {"bad\\xff name", "im0"}
    assert rows["bad\\xff name"]["source"].endswith("bad\\xff name.png")


# -- low-bit DICOMs are scaled to BitsStored, not stored nearly black -------------------------------------
def _low_bit_dicom(path: Path, px: np.ndarray, allocated: int, stored: int) -> Path:
    from helpers import cr_dataset
    from pydicom.pixels import pack_bits

    ds = cr_dataset(px.shape)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, stored, stored - 1, 0
    ds.PixelData = pack_bits(px) if allocated == 1 else px.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("allocated,stored", [(1, 1), (8, 2)])
def test_low_bit_dicoms_use_the_full_range(tmp_path, allocated, stored):
    from cxrprep.image.process import read_gray

    px = np.zeros((32, 32), np.uint8)
    px[:, 12:20] = (1 << stored) - 1  # the brightest value BitsStored allows
    px[:4, :4] = 1 if stored > 1 else 0
    a = read_gray(_low_bit_dicom(tmp_path / "low.dcm", px, allocated, stored))[0]
    assert a.max() == 255 and a.min() == 0, (a.min(), a.max())


# -- empty inputs exit 2 instead of writing an empty dataset ----------------------------------------------
def test_empty_reports_zip_exits_2(tmp_path):
    import zipfile

    z = tmp_path / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("README.txt", "no reports here")
    r = CliRunner().invoke(prep_app, ["reports", str(z), "--no-images", "--out", str(tmp_path / "shards")])
    assert r.exit_code == 2, r.output
    assert "holds no report files" in r.output and not (tmp_path / "shards" / "mimic-cxr").exists()


def test_image_tree_with_reports_zip_beside_exits_2(tmp_path):
    import zipfile

    root = tmp_path / "mimic-cxr-jpg"
    study = root / "files" / "p10" / "p10000032" / "s50414267"
    study.mkdir(parents=True)
    cv2.imwrite(str(study / "img1.jpg"), np.full((32, 32), 100, np.uint8))
    with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as f:
        f.writestr("files/p10/p10000032/s50414267.txt", "FINDINGS: Clear.\n")
    r = CliRunner().invoke(prep_app, ["reports", str(root), "--out", str(tmp_path / "shards"), "--workers", "1"])
    assert r.exit_code == 2, r.output
    assert "no report files" in r.output and "mimic-cxr-reports.zip" in r.output
    assert not (tmp_path / "shards" / "mimic-cxr").exists()


# -- messages that name the file and the cause ------------------------------------------------------------
@pytest.mark.parametrize("command", ["prompts", "rsna", "siim", "vindr"])
def test_non_utf8_csv_names_file_and_line(tmp_path, command):
    if command == "prompts":
        text = (
            b"Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding\nCheXpert-v1.0/train/p1/s1/v1.jpg,F,\xf2,Frontal,AP,1.0\n"
        )
    else:
        text = b"patientId,x,y,width,height,Target\n\xf2abc,,,,,0\n"
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes(text)
    extra = ["--no-images"] if command == "prompts" else []
    r = CliRunner().invoke(prep_app, [command, str(csv_path), *extra, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    assert f"{csv_path}: line 2: not UTF-8 text (byte 0xf2" in r.output and "codec" not in r.output


def test_corrupt_parquet_page_names_the_file(tmp_path):
    from cxrprep.schema import ShardSchemaError
    from cxrprep.shards import ShardDataset

    d = _images_dataset(tmp_path)
    part = next((d / "data").glob("*.parquet"))
    data = bytearray(part.read_bytes())
    data[4:260] = os.urandom(256)  # the first page header and data: the footer (metadata) stays intact
    part.write_bytes(bytes(data))
    ds = ShardDataset(d)
    with pytest.raises(ShardSchemaError, match=r"row group 0 cannot be read .*the file is damaged") as e:
        list(ds.iter_batches(["study_id", "images"]))
    assert str(part) in str(e.value) and "\n" not in str(e.value)


class _CallsAFunction:
    def __reduce__(self):  # unpickling would call os.getcwd(): weights_only refuses the global
        return (os.getcwd, ())


def test_refused_pickle_in_state_pt_is_one_line(tmp_path):
    import torch

    from cxrtrain.runlog import UsageError
    from cxrtrain.safeload import load_state

    p = tmp_path / "state.pt"
    torch.save({"step": 1, "evil": _CallsAFunction()}, p)
    with pytest.raises(UsageError, match="refused to load") as e:
        load_state(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_checkpoint_of_another_size_is_one_line(tmp_path, demo_shards):
    import json

    from cxrtrain.cli.app import app as train_app

    ck = untrained_checkpoint(tmp_path / "ck")
    conf = json.loads((ck / "config.json").read_text())
    conf["model"]["embed_dim"] = 48  # config.json of another model: every projection has another shape
    (ck / "config.json").write_text(json.dumps(conf))
    r = CliRunner().invoke(train_app, ["eval", str(ck), str(demo_shards), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 2, r.output
    assert "do not fit the model" in r.output and "size mismatch" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


def test_disk_full_while_saving_a_checkpoint(tmp_path, monkeypatch):
    import torch

    from cxrtrain.config import load_config
    from cxrtrain.model import create_model
    from cxrtrain.runlog import DiskFullError, disk_guard
    from cxrtrain.train import save_checkpoint

    cfg = load_config(None, ["model.image_size=32", "model.embed_dim=32", "batch_size=4"])
    model = create_model(cfg.model)

    def full(*a, **k):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
            "file write failed"
        )

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(DiskFullError, match=r"writing .*last failed .*disk is probably full") as e:
        with disk_guard(tmp_path / "last", tmp_path):
            save_checkpoint(tmp_path / "last", model, cfg, {"step": 1})
    assert "inline_container" not in str(e.value) and not list(tmp_path.iterdir())


# -- Ctrl-C during merge leaves the folder as it was: no merged rejects, card or .tmp-* -----------------------
def test_interrupted_merge_leaves_nothing_half_done(tmp_path, monkeypatch):
    from cxrprep.shards import files as shard_files

    src = _png_folder(tmp_path / "src", n=4)
    out = tmp_path / "shards"
    for i in (0, 1):
        args = ["images", str(src), "--out", str(out), "--dataset", "ev", "--workers", "1", "--part", f"{i}/2"]
        r = CliRunner().invoke(prep_app, args)
        assert r.exit_code == 0, r.output
    d = out / "ev"
    before = sorted(p.name for p in d.iterdir())
    real = shard_files._write_tmp
    calls = []

    def interrupted_on_second(path, data):
        calls.append(path)
        if len(calls) == 2:
            real(path, data[: len(data) // 2])  # half written, then Ctrl-C
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(shard_files, "_write_tmp", interrupted_on_second)
    from cxrprep.shards import merge_parts

    with pytest.raises(KeyboardInterrupt):
        merge_parts(d)
    assert sorted(p.name for p in d.iterdir()) == before  # no rejects.jsonl, README.md, manifest or .tmp-*
    monkeypatch.setattr(shard_files, "_write_tmp", real)
    merge_parts(d)
    assert (d / "manifest.json").exists() and (d / "rejects.jsonl").exists() and (d / "README.md").exists()


# -- the watchdog: a loop that draws no batch for N seconds becomes an error naming where ---------------------
def test_watchdog_turns_a_stall_into_an_error():
    import itertools
    import time

    from cxrtrain.watchdog import Stalled, watchdog

    def spinning():  # draws rows forever and yields none, as the text-less stream did
        for _ in itertools.count():
            pass
        yield

    t = time.perf_counter()
    with pytest.raises(Stalled, match=r"no batch for 0.5 s while drawing train batches for step 1"):
        with watchdog(0.5, "drawing train batches for step 1 (epoch 0)"):
            next(spinning())
    assert time.perf_counter() - t < 5
    with watchdog(5, "quick"):  # a block that finishes in time: nothing happens, and the alarm is cleared
        pass
    time.sleep(0.01)
