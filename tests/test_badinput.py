"""Every CLI command on bad inputs: a missing path, an empty file, the wrong kind of file, bad option
values. Each must exit 1 or 2 with a message; no output may contain "Traceback", and no exception may
escape to the top-level handler as an "internal error" (issue 13)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxrprep.cli.app import app as prep
from cxrtrain.cli.app import app as train

runner = CliRunner()


@pytest.fixture(scope="module")
def bad(tmp_path_factory, demo_shards):
    """A folder of bad inputs, plus a good shard root to pair them with."""
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.csv").write_bytes(b"")
    (d / "empty.yaml").write_bytes(b"")
    (d / "garbage.bin").write_bytes(bytes(range(256)) * 8)
    (d / "latin1.csv").write_bytes("Path,Sex\nd\xe9j\xe0,M\n".encode("latin-1"))
    (d / "nul.csv").write_bytes(b"path\x00,x\n\x00\x00\n")
    (d / "header_only.csv").write_text("Path,Sex,Age\n")
    (d / "emptydir").mkdir()
    (d / "afile").write_text("not a folder\n")
    (d / "list.yaml").write_text("- 1\n- 2\n")
    # a dataset folder whose manifest is broken
    broken = d / "broken" / "ds"
    shutil.copytree(demo_shards / "chexpert", broken)
    (broken / "manifest.json").write_text("{not json")
    # a dataset folder whose part file is truncated
    trunc = d / "trunc" / "ds"
    shutil.copytree(demo_shards / "chexpert", trunc)
    part = sorted(trunc.rglob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:100])
    # checkpoint folders: empty, truncated weights, config that is not JSON
    ck = d / "ck"
    ck.mkdir()
    (ck / "model.safetensors").write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": ')
    (ck / "config.json").write_text("{}")
    ck2 = d / "ck2"
    ck2.mkdir()
    (ck2 / "model.safetensors").write_bytes(b"")
    (ck2 / "config.json").write_text("[")
    return d, demo_shards


def _good_checkpoint_cases(d: Path, shards: Path, ck: Path) -> list[tuple[str, list[str]]]:
    c, s, out = str(ck), str(shards), ["--out", str(d / "o2")]
    tiny = ["--set", "model.preset=tiny", "--set", "model.image_size=32", "--set", "max_steps=1"]
    cases = [
        ["eval", c, s, "--bootstrap", "-5", *out],
        ["eval", c, s, "--batch-size", "0", *out],
        ["eval", c, s, "--text", "poems", *out],
        ["eval", c, s, "--device", "quantum", *out],
        ["eval", c, s, "--uncertain", "sometimes", *out],
        ["fewshot", c, s, "--shots", "0", *out],
        ["fewshot", c, s, "--epochs", "0", *out],
        ["fewshot", c, s, "--image-blocks", "-1", *out],
        ["fewshot", c, s, "--shots", "1,,2", *out],
        ["export", c, "--out", str(d / "afile")],
    ]
    for kv in (
        "crop_scale=5",
        "accum_steps=0",
        "model=5",
        "image_mean=0.5",
        "log_every=0",
        "lr=-1",
        "batch_size=0",
        "epochs=-1",
    ):
        cases.append(["run", s, *tiny, "--set", kv, *out])
    return [("cxrtrain", a) for a in cases]


def _cases(d: Path, shards: Path) -> list[tuple[str, list[str]]]:
    m = str(d / "missing")
    e, g, ed, af = str(d / "empty.csv"), str(d / "garbage.bin"), str(d / "emptydir"), str(d / "afile")
    ok_ds = str(shards / "chexpert")
    out = ["--out", str(d / "out")]
    # the image block and run options that every image-writing command shares (cxrprep.cli.options)
    image_block = [
        [ed, "--size", "-5"],
        [ed, "--size", "0"],
        [ed, "--quality", "0"],
        [ed, "--quality", "500"],
        [ed, "--format", "gif"],
        [ed, "--max-image-pixels", "0"],
        [ed, "--clahe-tiles", "0"],
        [ed, "--workers", "-1"],
        [ed, "--workers", "x"],
        [ed, "--part", "3/2"],
        [ed, "--max-failed", "lots"],
        [ed, "--out", af],
    ]
    not_a_dataset = [[m], [ed], [af], [str(d / "broken" / "ds")]]  # for the commands that take a dataset folder
    cases = {
        "reports": [[m], [e], [g], [ed, *out, "--workers", "1"], [af, *out], *image_block, [ed, "--chunk-size", "0"]],
        "prompts": [
            [m],
            [e],
            [g],
            [ed],
            [str(d / "latin1.csv"), *out],
            [str(d / "nul.csv"), *out],
            [str(d / "header_only.csv"), *out],
            [e, "--variants", "0"],
            [e, "--templates", str(d / "empty.yaml")],
            [e, "--templates", ed],
            [e, "--uncertain", "maybe"],
            [e, "--negatives", "-1"],
            [str(d / "header_only.csv"), "--templates", str(d / "list.yaml"), *out],
        ],
        "images": [
            [m],
            [e, *out],
            [g, *out],
            [str(d / "latin1.csv"), *out],
            [str(d / "nul.csv"), *out],
            *image_block,
            [ed, "--image-root", af],
        ],
        "augment": [
            *not_a_dataset,
            [ok_ds, "--variants", "0"],
            [ok_ds, "--batch-size", "0"],
            [ok_ds, "--decoding", "foo"],
            [ok_ds, "--backend", "nope"],
            [ok_ds, "--beams", "0"],
        ],
        "inspect": [
            *not_a_dataset,
            [ok_ds, "--samples", "-1"],
            [ok_ds, "--tiles", "-3"],
            [str(d / "trunc" / "ds"), "--sheet", str(d / "s.png")],
            [ok_ds, "--sheet", str(d / "afile" / "x.png")],
        ],
        "templates check": [[m], [e], [g], [ed], [str(d / "list.yaml")]],
        "templates preview": [[m], [e], [g], [ed], [str(d / "list.yaml")]],
        "merge": not_a_dataset,
        "export-hf": [
            *[[*a, *out] for a in not_a_dataset],
            [str(d / "trunc" / "ds"), *out],
            [ok_ds, "--out", af],
            [ok_ds, "--out", str(shards)],  # not empty: refused, never overwritten
            [ok_ds, *out, "--split-names", "validation"],
        ],
        "chexpert-5x200": [
            [m],
            [e, *out],
            [g, *out],
            [ed],
            [str(d / "latin1.csv"), *out],
            [str(d / "header_only.csv"), *out],
            [e, "--per-class", "0"],
        ],
    }
    tr = {
        "run": [
            [m],
            [ed, *out],
            [af, *out],
            [str(shards), "--config", e, *out],
            [str(shards), "--config", g, *out],
            [str(shards), "--config", str(d / "list.yaml"), *out],
            [str(shards), "--set", "lr=abc", *out],
            [str(shards), "--set", "no_such_key=1", *out],
            [str(shards), "--set", "lr", *out],
            [str(shards), "--out", af],
            [str(d / "broken"), *out],
            [str(d / "trunc"), *out],
        ],
        "eval": [
            [m, str(shards)],
            [ed, str(shards)],
            [af, str(shards)],
            [str(d / "ck"), str(shards)],
            [str(d / "ck2"), str(shards)],
            [str(d / "ck"), m],
            [str(d / "ck"), str(shards), "--bootstrap", "-5"],
            [str(d / "ck"), str(shards), "--prompts", e],
            [str(d / "ck"), str(shards), "--uncertain", "x"],
        ],
        "fewshot": [
            [m, str(shards)],
            [ed, str(shards)],
            [str(d / "ck"), str(shards)],
            [str(d / "ck2"), str(shards)],
            [str(d / "ck"), str(shards), "--shots", "a,b"],
            [str(d / "ck"), str(shards), "--seeds", "0"],
            [str(d / "ck"), str(shards), "--modes", "magic"],
        ],
        "export": [
            [m, *out],
            [ed, *out],
            [af, *out],
            [str(d / "ck"), *out],
            [str(d / "ck2"), *out],
            [str(d / "ck2"), *out, "--format", "onnx"],
        ],
    }
    # good inputs, unusable output (--out is a file) and inconsistent sources
    ex = Path(__file__).resolve().parents[1] / "examples"
    cases["reports"] += [
        [str(ex / "mimic"), "--no-images", "--workers", "1", "--out", af],
        [str(ex / "mimic"), "--no-images", "--metadata", g, *out],
        [str(ex / "mimic"), "--no-images", "--split-csv", e, *out],
    ]
    cases["prompts"] += [
        [str(ex / "chexpert" / "train.csv"), "--no-images", "--workers", "1", "--out", af],
        [str(ex / "chexpert" / "train.csv"), "--templates", g, *out],
    ]
    cases["chexpert-5x200"] += [[str(ex / "chexpert" / "train.csv"), "--no-images", "--out", af]]
    out_cases = [("cxrprep", [*c.split(), *a]) for c, args in cases.items() for a in args]
    out_cases += [("cxrtrain", [c, *a]) for c, args in tr.items() for a in args]
    return out_cases


def _check(cases) -> tuple[list[str], set]:
    problems, seen_commands = [], set()
    for prog, args in cases:
        app = prep if prog == "cxrprep" else train
        r = runner.invoke(app, args)
        seen_commands.add((prog, args[0]))
        text = r.output
        escaped = r.exception is not None and not isinstance(r.exception, SystemExit)
        if r.exit_code not in (1, 2) or "Traceback" in text or "internal error" in text or escaped:
            why = f"{type(r.exception).__name__}: {r.exception}" if escaped else text.strip()[-300:]
            problems.append(f"{prog} {' '.join(args)} -> exit {r.exit_code}: {why}")
    return problems, seen_commands


def test_every_command_on_bad_inputs(bad, monkeypatch):
    d, shards = bad
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CXRKIT_DEBUG", raising=False)
    problems, seen_commands = _check(_cases(d, shards))
    expected = {
        ("cxrprep", c)
        for c in (
            "reports",
            "prompts",
            "images",
            "augment",
            "inspect",
            "templates",
            "merge",
            "chexpert-5x200",
            "export-hf",
        )
    } | {("cxrtrain", c) for c in ("run", "eval", "fewshot", "export")}
    assert expected <= seen_commands
    assert not problems, "\n".join(problems)


@pytest.mark.slow  # ~25 s: trains the 2-step checkpoint first
def test_bad_options_with_a_real_checkpoint(bad, tiny_checkpoint, monkeypatch):
    d, shards = bad
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CXRKIT_DEBUG", raising=False)
    problems, _ = _check(_good_checkpoint_cases(d, shards, tiny_checkpoint))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("debug", [False, True])
def test_top_level_handler(tmp_path, monkeypatch, debug):
    """An exception no command handled: one line and exit 1; CXRKIT_DEBUG=1 shows the traceback."""
    import cxrprep.datasets.folder as imagesrc

    def bug(*a, **k):
        raise KeyError("oops")

    monkeypatch.setattr(imagesrc, "run_images", bug)
    if debug:
        monkeypatch.setenv("CXRKIT_DEBUG", "1")
    else:
        monkeypatch.delenv("CXRKIT_DEBUG", raising=False)
    (tmp_path / "src").mkdir()
    r = runner.invoke(prep, ["images", str(tmp_path / "src"), "--out", str(tmp_path / "o")])
    if debug:
        assert isinstance(r.exception, KeyError)
    else:
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
        assert "error: internal error: KeyError: 'oops'" in r.output and "CXRKIT_DEBUG=1" in r.output


@pytest.mark.slow  # subprocesses
def test_real_entry_points_print_no_traceback(tmp_path):
    """The installed console scripts go through the same handler (checked in a subprocess)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("CXRKIT_DEBUG", None)
    (tmp_path / "afile").write_text("x")
    for mod, args in (
        ("cxrprep.cli.app", ["images", str(tmp_path / "missing")]),
        ("cxrprep.cli.app", ["templates", "check", str(tmp_path / "afile")]),
        ("cxrtrain.cli.app", ["export", str(tmp_path / "afile"), "--out", str(tmp_path / "o")]),
    ):
        p = subprocess.run([sys.executable, "-m", mod, *args], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode in (1, 2), (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stdout + p.stderr, (args, p.stderr)
