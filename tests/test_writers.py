"""cxrprep writers under concurrency and faults (issue 13): one writer per dataset folder, --part pieces
in parallel then merge, Ctrl-C, --out a file, a full disk, and cxrtrain refusing incomplete folders.
Real processes: the commands run as `python -m cxrprep.cli.app` subprocesses."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cxrprep.cli.app import app
from cxrprep.shards import DatasetLock, ShardDataset

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from synth_reports import write_corpus  # noqa: E402

runner = CliRunner()
REPO = Path(__file__).parent.parent


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cxrprep(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cxrprep.cli.app", *map(str, args)],
        env=_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


def _reports(root: Path, out: Path, *extra) -> subprocess.Popen:
    return _cxrprep("reports", root, "--out", out, "--no-images", "--workers", "1", *extra)


def _rows(d: Path) -> dict:
    return {r["study_id"]: r for r in ShardDataset(d, verify=True).iter_rows()}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpora")
    write_corpus(base / "a", 300, seed=1)
    write_corpus(base / "b", 200, seed=2)
    refs = {}
    for k in ("a", "b"):
        r = runner.invoke(
            app, ["reports", str(base / k), "--out", str(base / f"ref-{k}"), "--no-images", "--workers", "1"]
        )
        assert r.exit_code == 0, r.output
        refs[k] = _rows(base / f"ref-{k}" / "mimic-cxr")
    return base, refs


@pytest.mark.slow  # subprocesses
def test_second_writer_exits_2_naming_the_holder(corpora, tmp_path):
    base, _ = corpora
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from cxrprep.shards import DatasetLock; "
            f"l = DatasetLock({str(tmp_path / 'mimic-cxr')!r}).acquire(); print('held', flush=True); time.sleep(60)",
            "fake-writer",
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        r = runner.invoke(app, ["reports", str(base / "a"), "--out", str(tmp_path), "--no-images"])
        assert r.exit_code == 2, r.output
        assert f"pid {holder.pid}: -c fake-writer" in r.output and "locked by another cxrprep run" in r.output
        assert "Traceback" not in r.output
        assert not (tmp_path / "mimic-cxr" / "manifest.json").exists()
    finally:
        holder.kill()
        holder.wait()
    r = runner.invoke(app, ["reports", str(base / "a"), "--out", str(tmp_path), "--no-images"])
    assert r.exit_code == 0, r.output  # the kernel dropped the dead holder's lock


@pytest.mark.slow
@pytest.mark.parametrize("inputs", [("a", "a"), ("a", "b")], ids=["same-input", "different-inputs"])
def test_concurrent_writers_never_mix(corpora, tmp_path, inputs):
    base, refs = corpora
    procs = [_reports(base / k, tmp_path) for k in inputs]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert set(codes) <= {0, 2} and 0 in codes, (codes, outs)
    for p, (_, err) in zip(procs, outs):
        assert "Traceback" not in err
        if p.returncode == 2:  # refused while the other one held the folder
            assert "locked by another cxrprep run (pid " in err and "reports" in err
    got = _rows(tmp_path / "mimic-cxr")
    # the folder holds exactly one complete run's output, never a mix
    assert any(got == refs[k] for k in inputs)
    m = ShardDataset(tmp_path / "mimic-cxr").manifest
    assert m["counts"]["rows_written"] == len(got)


@pytest.mark.slow
def test_parallel_pieces_then_merge_equal_one_run(corpora, tmp_path):
    base, refs = corpora
    procs = [_reports(base / "a", tmp_path, "--part", f"{i}/2") for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    d = tmp_path / "mimic-cxr"
    assert not list(d.rglob(".tmp-*"))
    r = runner.invoke(app, ["merge", str(d)])
    assert r.exit_code == 0, r.output
    assert _rows(d) == refs["a"]


@pytest.mark.slow
def test_sigint_removes_the_unfinished_run(tmp_path):
    write_corpus(tmp_path / "big", 3000, seed=4)
    out = tmp_path / "out"
    p = _reports(tmp_path / "big", out, "--chunk-size", "16")
    lock = out / "mimic-cxr" / ".lock"
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:  # the writer holds the folder: it is writing
        if lock.exists() and lock.read_text():
            break
        time.sleep(0.02)
    assert p.poll() is None, "the run finished before it could be interrupted"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted:"), err
    d = out / "mimic-cxr"
    assert not (d / "manifest.json").exists()
    assert not list(d.rglob("*.parquet")) and not list(d.rglob(".tmp-*"))  # nothing visible, nothing left
    assert lock.read_text() == ""


def test_out_is_a_file_exits_2(corpora, tmp_path):
    base, _ = corpora
    f = tmp_path / "shards.txt"
    f.write_text("not a folder")
    r = runner.invoke(app, ["reports", str(base / "b"), "--out", str(f), "--no-images"])
    assert r.exit_code == 2 and "is a file" in r.output and str(f) in r.output
    assert "Traceback" not in r.output


def test_disk_full_exits_1_naming_the_cause(corpora, tmp_path, monkeypatch, capsys):
    base, _ = corpora

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    monkeypatch.setattr(
        sys, "argv", ["cxrprep", "reports", str(base / "b"), "--out", str(tmp_path), "--no-images", "--workers", "1"]
    )
    from cxrprep.cli.app import main

    old = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as e:
            main()
    finally:
        signal.signal(signal.SIGINT, old)
    err = capsys.readouterr().err
    assert e.value.code == 1 and "no space left on the device (disk full)" in err and "Traceback" not in err
    assert not list((tmp_path / "mimic-cxr").rglob("*.parquet")) and not list((tmp_path / "mimic-cxr").rglob(".tmp-*"))


def test_merge_while_a_piece_runs_exits_2(tmp_path):
    with DatasetLock(tmp_path / "ds", "0of2"):
        r = runner.invoke(app, ["merge", str(tmp_path / "ds")])
    assert r.exit_code == 2 and "piece 0of2 (pid" in r.output


def test_cxrtrain_refuses_incomplete_dataset(demo_shards, tmp_path, monkeypatch):
    import shutil

    from cxrtrain.cli.app import app as train_app

    root = tmp_path / "shards"
    shutil.copytree(demo_shards, root)
    killed = root / "killed"
    (killed / "data").mkdir(parents=True)
    (killed / ".lock").write_text("")
    (killed / "data" / ".tmp-all-train-00000.partial").write_bytes(b"PAR1")
    r = runner.invoke(train_app, ["run", str(root), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and str(killed) in r.output and "--skip-incomplete" in r.output
    assert not (tmp_path / "run").exists()

    seen = {}

    def fake_train(roots, out, cfg, log=print, **kw):
        seen["roots"] = roots
        raise ValueError("stop here: the test only checks which datasets reach train()")

    monkeypatch.setattr("cxrtrain.train.train", fake_train)
    r = runner.invoke(train_app, ["run", str(root), "--out", str(tmp_path / "run"), "--skip-incomplete"])
    assert "stop here" in r.output, r.output
    assert f"skipping incomplete dataset folder {killed}" in r.output
    assert sorted(Path(x).name for x in seen["roots"]) == sorted(p.name for p in demo_shards.iterdir() if p.is_dir())


def test_augment_waits_for_no_writer(demo_shards, tmp_path):
    import shutil

    d = tmp_path / "mimic-cxr"
    shutil.copytree(demo_shards / "mimic-cxr", d)
    with DatasetLock(d):  # a cxrprep run is writing this folder
        r = runner.invoke(
            app,
            [
                "augment",
                str(d),
                "--forward-model",
                str(tmp_path / "none"),
                "--backward-model",
                str(tmp_path / "none"),
                "--cache-dir",
                str(tmp_path / "c"),
            ],
        )
    assert r.exit_code == 2 and "locked by another cxrprep run" in r.output and "augment" in r.output, r.output
