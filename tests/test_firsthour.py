"""A newcomer's first hour: packaged prompt files, commands run from any folder, help texts that name real
files, packaging that ships every package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def test_resolver_names_paths_and_errors(tmp_path):
    from cxrprep.text.promptfiles import packaged_names, resolve_prompt_file
    from cxrprep.text.templates import TemplateError, load_templates

    assert {"default", "eval"} <= set(packaged_names())
    assert resolve_prompt_file("default").read_text() == (ROOT / "prompts/default.yaml").read_text()
    assert resolve_prompt_file("eval").name == "eval.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text((ROOT / "prompts/eval.yaml").read_text())
    assert resolve_prompt_file(str(own)) == own
    with pytest.raises(ValueError, match="packaged names: .*default, eval"):
        resolve_prompt_file("defualt")
    with pytest.raises(ValueError, match="does not exist"):
        resolve_prompt_file(str(tmp_path / "nope.yaml"))
    assert load_templates("default").classes  # the library accepts names too
    with pytest.raises(TemplateError, match="packaged names"):
        load_templates("nope")


def test_bad_prompt_names_exit_2_in_every_command(tmp_path):
    from cxrprep.cli.app import app as prep
    from cxrtrain.cli.app import app as trainapp

    csv = EXAMPLES / "chexpert/train.csv"
    r = CliRunner().invoke(prep, ["prompts", str(csv), "--templates", "defualt", "--out", str(tmp_path / "s")])
    flat = " ".join(r.output.replace("│", " ").split())  # the error box wraps the list of packaged names
    assert r.exit_code == 2 and "packaged names:" in flat and "default, eval" in flat, r.output
    assert not (tmp_path / "s").exists()
    for cmd in ("eval", "fewshot"):
        r = CliRunner().invoke(trainapp, [cmd, str(tmp_path), str(tmp_path), "--prompts", "evl"])
        assert r.exit_code == 2 and "packaged names" in r.output, (cmd, r.output)


def test_pyproject_ships_every_package_and_the_prompt_files():
    import tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(conf["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.glob("cxr*/**/__init__.py")}
    assert found <= listed, f"packages missing from pyproject.toml [tool.setuptools] packages: {found - listed}"
    assert conf["package-dir"]["cxrprep.prompt_files"] == "prompts"
    assert (ROOT / "prompts/__init__.py").exists()
    assert conf["package-data"]["cxrprep.prompt_files"] == ["*.yaml"]


def test_help_examples_name_files_that_exist():
    from cxrprep.cli.app import app as prep
    from cxrtrain.cli.app import app as trainapp

    texts = []
    for app, cmds in (
        (prep, ["reports", "prompts", "templates", "images", "augment", "inspect", "merge", "chexpert-5x200"]),
        (trainapp, ["run", "eval", "fewshot", "export"]),
    ):
        texts.append(CliRunner().invoke(app, ["--help"], terminal_width=200).output)
        for c in cmds:
            r = CliRunner().invoke(app, [c, "--help"], terminal_width=200)
            if r.exit_code == 0:
                texts.append(r.output)
    refs = {m for t in texts for m in re.findall(r"\b((?:examples|prompts)/[\w./-]+\.(?:yaml|yml|csv|py|sh))", t)}
    assert refs, "no example file referenced in any --help"
    missing = sorted(r for r in refs if not (ROOT / r).exists())
    assert not missing, f"--help names files that do not exist: {missing}"
    assert "examples/train_tiny.yaml" in texts[0] + texts[len(texts) - 5]  # cxrtrain --help and run --help


def test_images_help_documents_csv_columns():
    from cxrprep.cli.app import app

    out = CliRunner().invoke(app, ["images", "--help"], terminal_width=200).output
    for col in ("path", "study_id", "subject_id", "split", "view", "label"):
        assert col in out


@pytest.mark.slow
def test_prompts_and_eval_from_an_empty_folder(demo_shards, tmp_path):
    """Outside the checkout, with packaged defaults: cxrprep prompts X.csv --out s/ and cxrtrain eval RUN s/."""
    from cxrtrain.config import build_config
    from cxrtrain.train import train

    run = tmp_path / "run"
    train(
        [str(demo_shards)],
        run,
        build_config(
            dict(model={"preset": "tiny", "image_size": 32, "embed_dim": 32}, batch_size=4, max_steps=1, warmup_steps=1)
        ),
        log=lambda *_: None,
    )
    work = tmp_path / "empty"
    work.mkdir()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )

    def cli(mod, *args):
        p = subprocess.run(
            [sys.executable, "-m", f"{mod}.cli", *map(str, args)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "Traceback" not in p.stdout + p.stderr, p.stderr[-3000:]
        return p

    p = cli(
        "cxrprep",
        "prompts",
        EXAMPLES / "nih/Data_Entry_2017_v2020.csv",
        "--image-root",
        EXAMPLES / "nih/images",
        "--out",
        "s/",
        "--size",
        "64",
        "--workers",
        "1",
    )
    assert p.returncode == 0, p.stdout + p.stderr
    man = json.loads((work / "s/chestx-ray14/manifest.json").read_text())
    assert man["counts"]["rows_written"] > 0
    p = cli("cxrtrain", "eval", run, "s/", "--bootstrap", "20", "--out", "ev")
    assert p.returncode == 0, p.stdout + p.stderr
    m = json.loads((work / "ev/metrics.json").read_text())
    assert "chestx-ray14" in m["datasets"] and m["prompts"]["binary"]


def test_empty_inputs_and_bad_templates_exit_2_everywhere(tmp_path):
    from cxrprep.cli.app import app as prep
    from cxrtrain.cli.app import app as trainapp

    empty = tmp_path / "empty"
    empty.mkdir()
    bad = tmp_path / "bad.yaml"
    bad.write_text("classes:\n  Foo: [\n")
    cases = [
        (prep, ["reports", str(empty), "--out", str(tmp_path / "o")]),
        (prep, ["images", str(empty), "--out", str(tmp_path / "o")]),
        (trainapp, ["run", str(empty), "--out", str(tmp_path / "r")]),
        (prep, ["templates", "check", str(bad)]),
        (prep, ["templates", "preview", str(bad)]),
        (
            prep,
            ["prompts", str(EXAMPLES / "chexpert/train.csv"), "--templates", str(bad), "--out", str(tmp_path / "o")],
        ),
        (trainapp, ["eval", str(empty), str(empty), "--prompts", str(bad)]),
        (trainapp, ["fewshot", str(empty), str(empty), "--prompts", str(bad)]),
    ]
    for app, args in cases:
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "r").exists()


def test_report_count_for_the_progress_total():
    from cxrprep.datasets.mimic import count_reports, iter_studies_dir, resolve_root

    _, files, z = resolve_root(EXAMPLES / "mimic")
    for part in (None, (0, 2), (1, 2)):
        assert count_reports(files, z, part) == sum(1 for _ in iter_studies_dir(files, part)) > 0


def test_max_failed_error_names_the_rejects_file(tmp_path):
    from cxrprep.cli.app import app

    out = tmp_path / "s"
    r = CliRunner().invoke(
        app,
        [
            "prompts",
            str(EXAMPLES / "chexpert/train.csv"),
            "--image-root",
            str(EXAMPLES / "chexpert"),
            "--size",
            "32",
            "--out",
            str(out),
            "--workers",
            "1",
            "--max-failed",
            "0",
        ],
    )
    assert r.exit_code == 1, r.output
    line = [x for x in r.output.splitlines() if "--max-failed" in x][0]
    path = line.split("see ", 1)[1].split(" for each reason")[0]
    assert Path(path).is_file() and Path(path).parent == out / "chexpert", line
