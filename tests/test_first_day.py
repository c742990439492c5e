"""Issue 24 ("a researcher's first day"): outputs that repeat exactly, messages that say what happened."""

from __future__ import annotations

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from cxrprep.cli.app import app as prep

runner = CliRunner()


def test_rejects_file_is_identical_between_runs(tmp_path):
    """A PIL decode error names ``<_io.BytesIO object at 0x...>``; the address must not reach rejects.jsonl."""
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(np.tile(np.arange(0, 240, 6, dtype=np.uint8), (40, 1))).save(src / "good.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a png at all" * 8)
    texts = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        r = runner.invoke(prep, ["images", str(src), "--out", str(out), "--dataset", "d", "--size", "32",
                                 "--workers", "1", "--max-failed", "1"])  # fmt: skip
        assert r.exit_code == 0, r.output
        texts.append((out / "d" / "rejects.jsonl").read_text())
    assert texts[0] == texts[1]
    assert "broken.png" in texts[0] and " at 0x" not in texts[0]


def test_reports_without_tables_warns_once(tmp_path):
    """Reports without MIMIC's split/label/metadata tables: one warning line says what that costs."""
    import shutil
    from pathlib import Path

    src = tmp_path / "mimic"
    shutil.copytree(Path(__file__).parent.parent / "examples/mimic/files", src / "files")
    r = runner.invoke(prep, ["reports", str(src), "--no-images", "--out", str(tmp_path / "s"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    warn = [x for x in r.output.splitlines() if x.startswith("warning:")]
    assert len(warn) == 1 and "splits are hashed by patient" in warn[0] and "labels are null" in warn[0]
    r = runner.invoke(
        prep,
        [
            "reports",
            str(Path(__file__).parent.parent / "examples/mimic"),
            "--no-images",
            "--out",
            str(tmp_path / "t"),
            "--workers",
            "1",
        ],
    )
    assert r.exit_code == 0 and "warning:" not in r.output


def test_a_finished_dataset_is_replaced_only_with_overwrite(tmp_path):
    """cxrprep refuses to replace a finished dataset unless --overwrite; a killed run's leftovers are replaced."""
    from pathlib import Path

    src = str(Path(__file__).parent.parent / "examples/mimic")
    args = ["reports", src, "--no-images", "--out", str(tmp_path), "--workers", "1"]
    assert runner.invoke(prep, args).exit_code == 0
    before = (tmp_path / "mimic-cxr/manifest.json").read_bytes()
    r = runner.invoke(prep, args)
    assert r.exit_code == 2 and "already holds a finished dataset" in r.output and "--overwrite" in r.output
    assert (tmp_path / "mimic-cxr/manifest.json").read_bytes() == before  # untouched
    assert runner.invoke(prep, [*args, "--overwrite"]).exit_code == 0
    assert (tmp_path / "mimic-cxr/manifest.json").read_bytes() == before  # same inputs: same files
    (tmp_path / "mimic-cxr/manifest.json").unlink()  # a killed run leaves no manifest: replaced without asking
    assert runner.invoke(prep, args).exit_code == 0
