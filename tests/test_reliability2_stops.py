"""Issue 20, the second reliability round, part 2: no loop without progress (text-less rows under a training
root) and signals in every phase. Part 1 is test_reliability2.py; every test here failed on the old code."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import untrained_checkpoint
from typer.testing import CliRunner

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
    ck = untrained_checkpoint(tmp_path / "ck")
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
