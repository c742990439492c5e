"""cxrprep: the Typer app. Commands live in cxrprep/commands/*.py (one thin function per step:
options -> frozen config -> run_*()); this file only assembles them."""

from __future__ import annotations

from pathlib import Path

import typer

from . import __version__
from .cliutil import register_commands
from .toplevel import SafeGroup

app = typer.Typer(
    name="cxrprep",
    help="Prepare chest X-ray datasets (MIMIC-CXR, CheXpert, ChestX-ray14, DICOM folders) as Parquet "
    "study shards for CLIP-style pre-training.\n\nExample: cxrprep reports mimic-cxr-jpg/ --out shards/",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=SafeGroup,  # an unhandled exception is one line (CXRKIT_DEBUG=1: the traceback), never a traceback
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cxrprep {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Prepare chest X-ray datasets as Parquet study shards."""


@app.command()
def merge(
    dataset_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="A dataset folder, e.g. shards/mimic-cxr"),
) -> None:
    """Join the outputs of `--part i/N` runs into one manifest.json and rejects.parquet.

    Example: for i in 0 1 2 3; do cxrprep reports mimic/ --out shards/ --part $i/4; done;
    cxrprep merge shards/mimic-cxr
    """
    from .shards import merge_parts, summary_lines
    from .schema import ShardSchemaError

    try:
        manifest = merge_parts(dataset_dir)
    except ShardSchemaError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    for line in summary_lines(manifest, dataset_dir):
        typer.echo(line)


ORDER = ["reports", "prompts", "templates", "images", "augment", "inspect"]
register_commands(app, "cxrprep.commands", ORDER)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
