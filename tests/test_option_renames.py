"""Issue 19: one meaning per option name. ``--split`` of ``cxrprep reports`` / ``mimic-5x200`` (a CSV path) is now
``--split-csv`` and ``--split`` of ``cxrprep openi`` (a mode) is ``--split-method``; the old spellings still work
for one release, hidden from --help, with one warning line on stderr, and write the same shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cxrprep.cli.app import app as prep

ROOT = Path(__file__).resolve().parents[1]
MIMIC = ROOT / "examples" / "mimic"
OPENI = ROOT / "examples" / "benchmarks" / "openi" / "ecgen-radiology"
runner = CliRunner()


def _parts(dataset_dir: Path) -> list[tuple[str, str]]:
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    return [(p["file"], p["sha256"]) for p in manifest["parts"]]


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize(
    "command, source, new, old, value, dataset",
    [
        ("reports", MIMIC, "--split-csv", "--split", str(MIMIC / "mimic-cxr-2.0.0-split.csv.gz"), "mimic-cxr"),
        ("openi", OPENI, "--split-method", "--split", "hash", "openi"),
    ],
)
def test_old_spelling_warns_once_and_writes_the_same_shards(tmp_path, command, source, new, old, value, dataset):
    args = [command, str(source), "--no-images", "--workers", "1", "--max-failed", "10"]
    fresh = runner.invoke(prep, [*args, new, value, "--out", str(tmp_path / "new")])
    assert fresh.exit_code == 0, fresh.output
    assert _warnings(fresh.stderr) == []
    legacy = runner.invoke(prep, [*args, old, value, "--out", str(tmp_path / "old")])
    assert legacy.exit_code == 0, legacy.output
    assert _warnings(legacy.stderr) == [f"warning: {old} is deprecated; use {new}"]
    assert _parts(tmp_path / "new" / dataset) == _parts(tmp_path / "old" / dataset)


def test_openi_split_method_changes_the_split(tmp_path):
    """The renamed option still reaches the dataset: hash splits some studies out of test."""
    r = runner.invoke(
        prep,
        ["openi", str(OPENI), "--no-images", "--max-failed", "10", "--split-method", "hash", "--out", str(tmp_path)],
    )
    assert r.exit_code == 0, r.output
    splits = json.loads((tmp_path / "openi" / "manifest.json").read_text())["splits"]
    assert set(splits) != {"test"}


@pytest.mark.parametrize(
    "command, new, old", [("reports", "--split-csv", "--split"), ("mimic-5x200", "--split-csv", "--split")]
)
def test_help_shows_only_the_new_spelling(command, new, old):
    r = runner.invoke(prep, [command, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    flags = {w.strip("│ ,") for w in r.output.split()}
    assert new in flags and old not in flags


def test_both_spellings_with_different_values_is_bad_usage(tmp_path):
    r = runner.invoke(
        prep,
        ["openi", str(OPENI), "--no-images", "--max-failed", "10", "--split-method", "test", "--split", "hash"]
        + ["--out", str(tmp_path)],
    )
    # "test" is the default of --split-method, so only --split was chosen: it wins, with the warning
    assert r.exit_code == 0, r.output
    split_csv = str(MIMIC / "mimic-cxr-2.0.0-split.csv.gz")
    other = str(tmp_path / "other.csv")
    r = runner.invoke(
        prep, ["reports", str(MIMIC), "--no-images", "--split-csv", split_csv, "--split", other, "--out", str(tmp_path)]
    )
    assert r.exit_code == 2 and "--split-csv only" in r.output and "Traceback" not in r.output


def test_edge_errors_maps_exceptions_to_exit_codes_in_order():
    """edge.errors: the first matching entry wins; the command's own exits pass through; others propagate."""
    import typer

    from cxrprep.cli.edge import errors, fail

    app = typer.Typer()

    @app.command()
    def c(k: int) -> None:
        with errors({ValueError: 2, (RuntimeError, OSError): (1, "the run stopped: ")}):
            raise (
                [ValueError("bad value"), RuntimeError("boom"), FileNotFoundError("gone"), KeyError("x")][k]
                if (k != 4)
                else fail("own failure", 3)
            )

    got = [runner.invoke(app, [str(k)]) for k in range(5)]
    assert [(r.exit_code, r.output.strip()) for r in got[:3]] == [
        (2, "error: bad value"),
        (1, "error: the run stopped: boom"),
        (1, "error: the run stopped: gone"),
    ]
    assert isinstance(got[3].exception, KeyError)
    assert (got[4].exit_code, got[4].output.strip()) == (3, "error: own failure")
