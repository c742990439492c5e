"""`cxrprep inspect`: look at a dataset folder."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors


def register(app: typer.Typer) -> None:
    @app.command()
    def inspect(
        dataset_dir: Path = typer.Argument(
            ..., exists=True, file_okay=False, help="A dataset folder, e.g. shards/mimic-cxr"
        ),
        sheet: Path = typer.Option(None, "--sheet", help="Contact sheet PNG (default: DATASET_DIR/contact_sheet.png)"),
        samples: int = typer.Option(2, "--samples", min=0, help="Sample rows to print"),
        tiles: int = typer.Option(12, "--tiles", min=0, help="Studies on the contact sheet"),
        verify: bool = typer.Option(False, "--verify", help="Also check every part file's sha256"),
    ) -> None:
        """Counts, split and label statistics, sample rows, and a contact sheet of images with view and text.

        Example: cxrprep inspect shards/mimic-cxr --sheet mimic.png
        """
        from cxrprep.schema import ShardSchemaError
        from cxrprep.shards import ShardDataset
        from cxrprep.shards.inspect import contact_sheet, inspect_lines

        with errors({ShardSchemaError: 1}):
            ds = ShardDataset(dataset_dir, verify=verify)
        for line in inspect_lines(ds, samples):
            typer.echo(line)
        png = sheet or (dataset_dir / "contact_sheet.png")
        n = contact_sheet(ds, png, tiles)
        typer.echo(f"  contact sheet: {png} ({n} studies)" if n else "  no images to draw (text-only shards)")
