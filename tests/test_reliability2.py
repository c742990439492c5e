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


# -- signals: SIGINT during data loading stops run, eval and fewshot within 10 s --------------------------
STALL = """
import sys, time
import {module} as m
def stalled(*a, **k):
    sys.stderr.write("STALLED-IN-DATA-LOADING\\n"); sys.stderr.flush()
    time.sleep(3600)
{target} = stalled
from cxrtrain.cli.app import main
sys.argv = ["cxrtrain", *sys.argv[1:]]
main()
"""


def _tiny_checkpoint(folder: Path) -> Path:
    from cxrtrain.config import load_config
    from cxrtrain.model import create_model
    from cxrtrain.train import save_checkpoint

    cfg = load_config(None, ["model.image_size=32", "model.embed_dim=32", "batch_size=4"])
    save_checkpoint(folder / "best", create_model(cfg.model), cfg)
    return folder / "best"


def _interrupt_while_loading(module: str, target: str, args: list, sig=None) -> tuple[int, str, float]:
    """Start cxrtrain with ``target`` (a data-loading function) stalled; once it stalls, send ``sig`` to the
    process group as a terminal's Ctrl-C does; return (exit code, output, seconds from signal to exit)."""
    import signal
    import subprocess
    import sys
    import time

    sig = sig or signal.SIGINT
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    code = STALL.format(module=module, target=target)
    p = subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
        text=True,
    )
    lines = []
    try:
        for line in p.stderr:  # wait for the stall (imports can be slow on a loaded machine)
            lines.append(line)
            if "STALLED-IN-DATA-LOADING" in line:
                break
        assert lines and "STALLED" in lines[-1], "".join(lines)
        t = time.perf_counter()
        os.killpg(p.pid, sig)
        out, err = p.communicate(timeout=60)
        return p.returncode, "".join(lines) + out + err, time.perf_counter() - t
    finally:
        if p.poll() is None:
            os.killpg(p.pid, 9)
            p.wait()


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["0", "1"])
def test_sigint_while_run_waits_for_data(demo_shards, tmp_path, workers):
    out = tmp_path / "run"
    args = ["run", demo_shards, "--out", out, *TINY, "--set", f"num_workers={workers}"]
    rc, output, dt = _interrupt_while_loading("cxrtrain.data", "m.decode_gray", args)
    assert rc == 130 and dt < 10, (dt, output)
    assert "stopped by SIGINT at step 0" in output and "Traceback" not in output
    assert (out / "last" / "state.pt").exists()  # saved at the step boundary: --resume continues


@pytest.mark.slow
def test_sigterm_while_counting_rows(demo_shards, tmp_path):
    import signal

    args = ["run", demo_shards, "--out", tmp_path / "run", *TINY]
    rc, output, dt = _interrupt_while_loading(
        "cxrprep.shards.reader", "m.ShardDataset.iter_batches", args, signal.SIGTERM
    )
    assert rc == 143 and dt < 10, (dt, output)
    assert "interrupted (SIGTERM)" in output and "Traceback" not in output


@pytest.mark.slow
@pytest.mark.parametrize("command", ["eval", "fewshot"])
def test_sigint_while_evaluation_loads_data(demo_shards, tmp_path, command):
    ck = _tiny_checkpoint(tmp_path / "ck")
    args = [command, ck, demo_shards, "--out", tmp_path / command]
    rc, output, dt = _interrupt_while_loading("cxrprep.shards.reader", "m.ShardDataset.iter_batches", args)
    assert rc == 130 and dt < 10, (dt, output)
    assert "interrupted (SIGINT)" in output and "Traceback" not in output


@pytest.mark.parametrize("module", ["cxrprep", "cxrtrain"])
def test_ctrl_c_during_imports_is_one_line(module):
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    caught = []
    # on an idle machine `--help` ends about 0.2 s after start: try many points of that window, not a few
    for delay in (0.3, 0.15, 0.1, 0.2, 0.08, 0.25, 0.12, 0.18, 0.05, 0.6, 0.45, 1.0):
        p = subprocess.Popen(
            [sys.executable, "-m", module, "--help"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
        # 0: it had finished already; -2 with nothing printed: the interpreter itself had not started yet
        if p.returncode not in (0, -signal.SIGINT) or err:
            assert p.returncode == 130 and len(err.strip().splitlines()) == 1, (p.returncode, err)
            caught.append(delay)
            break
    assert caught, "no try landed during the imports"


def test_second_ctrl_c_in_run_stops_at_once():
    import signal

    from cxrtrain.stopping import Stop, StopNow

    s = Stop()
    s.install()
    try:
        s.waiting = True
        with pytest.raises(StopNow):  # the first signal while waiting for data stops the wait
            os.kill(os.getpid(), signal.SIGINT)
        assert s.by == "SIGINT"
    finally:
        s.restore()
    import subprocess
    import sys

    code = (
        "import os, signal, time\nfrom cxrtrain.stopping import Stop\ns = Stop(); s.install()\n"
        "os.kill(os.getpid(), signal.SIGINT)\nprint('first', s.by, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(30)\nprint('not reached')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 130 and "first SIGINT" in p.stdout and "not reached" not in p.stdout, p
    assert "second Ctrl-C: stopped at once" in p.stderr


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

    ck = _tiny_checkpoint(tmp_path / "ck")
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
