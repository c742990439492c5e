"""cxrprep: the Typer app. Commands live in cxrprep/commands/*.py (one thin function per step:
options -> frozen config -> run_*()); this file only assembles them."""

from __future__ import annotations

from cxrprep.cli import signals

if signals.is_entry_point(__name__):
    signals.early()  # before the imports below: a Ctrl-C while they load exits 130 with one line

from pathlib import Path  # noqa: E402

import typer  # noqa: E402

from cxrprep.cli.edge import error_line, errors, make_app, register_commands  # noqa: E402

app = make_app(
    "cxrprep",
    "Prepare chest X-ray datasets (MIMIC-CXR, CheXpert, ChestX-ray14, DICOM folders) as Parquet study shards "
    "for CLIP-style pre-training.\n\nExample: cxrprep reports mimic-cxr-jpg/ --out shards/",
)


@app.command()
def merge(
    dataset_dir: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="A dataset folder, e.g. shards/mimic-cxr"
    ),
) -> None:
    """Join the outputs of `--part i/N` runs into one manifest.json, rejects.jsonl and README.md dataset card.

    Example: for i in 0 1 2 3; do cxrprep reports mimic/ --out shards/ --part $i/4; done;
    cxrprep merge shards/mimic-cxr
    """
    from cxrprep.schema import ShardSchemaError
    from cxrprep.shards import DatasetBusy, merge_parts, summary_lines

    with errors({DatasetBusy: 2, ShardSchemaError: 1}):  # busy: pieces still running, try again when done
        manifest = merge_parts(dataset_dir)
    for line in summary_lines(manifest, dataset_dir):
        typer.echo(line)


ORDER = ["reports", "prompts", "templates", "images", "augment", "inspect"]
register_commands(app, "cxrprep.cli.commands", ORDER)


def main() -> None:
    """The ``cxrprep`` entry point: Ctrl-C exits 130 with one line after the unfinished files are
    removed; a write that fails for every later input (disk full) exits 1 naming the cause."""
    import sys

    signals.install()
    try:
        app()
    except signals.Interrupted:
        typer.echo(
            "interrupted: removed what this run had not finished (a previous finished output is unchanged); exit 130",
            err=True,
        )
        sys.exit(130)
    except Exception as e:
        # a ShardWriteError outside the click app: sys.exit, not typer.Exit. Looked up only now: importing
        # cxrprep.shards (and pyarrow) up front would delay every command's start by ~0.2 s
        files = sys.modules.get("cxrprep.shards.files")
        if files is None or not isinstance(e, files.ShardWriteError):
            raise
        error_line(e)
        sys.exit(1)


if __name__ == "__main__":
    main()
