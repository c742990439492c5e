"""`cxrprep export-hf`: a one-image-per-row copy of a dataset folder for Hugging Face `datasets`."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors


def register(app: typer.Typer) -> None:
    @app.command("export-hf")
    def export_hf(
        dataset_dir: Path = typer.Argument(
            ..., exists=True, file_okay=False, help="A finished dataset folder, e.g. shards/mimic-cxr"
        ),
        out: Path = typer.Option(..., "--out", help="Output folder (must not exist, or be empty)"),
        split_names: str = typer.Option(
            "hf",
            "--split-names",
            help="hf: MIMIC's 'validate' is written as 'validation' (Hugging Face's name); cxrkit: kept as 'validate'",
        ),
    ) -> None:
        """Write one row per image (image, view, ids, split, text, named labels) as Parquet that
        datasets.load_dataset(OUT) opens with an Image column, plus a README.md card with its splits.

        Example: cxrprep export-hf shards/mimic-cxr --out hf/mimic-cxr
        """
        from cxrprep.schema import ShardSchemaError
        from cxrprep.shards import invocation
        from cxrprep.shards.hfview import SPLIT_NAMES, export_flat

        _not_a_root(dataset_dir)
        if split_names not in SPLIT_NAMES:
            raise typer.BadParameter(f"{split_names!r} is not one of hf, cxrkit", param_hint="--split-names")
        with errors({FileExistsError: 2, (ShardSchemaError, OSError): 1}):
            counts = export_flat(dataset_dir, out, split_names, command=invocation())
        for s, c in counts.items():
            typer.echo(
                f"  {s}: {c['studies']:,} studies -> {c['images']:,} rows"
                + (f" ({c['without_images']:,} studies without images)" if c["without_images"] else "")
            )
        typer.echo(f"wrote {out}: data/*.parquet and README.md (load with datasets.load_dataset)")


def _not_a_root(folder: Path) -> None:
    """A shard root given for a dataset folder: name its datasets (exit 2)."""
    from cxrprep.schema import MANIFEST
    from cxrprep.shards.reader import scan_datasets

    if (folder / MANIFEST).exists():
        return
    done, _ = scan_datasets(folder)
    if done and folder not in done:
        names = ", ".join(str(d) for d in done[:4]) + (" ..." if len(done) > 4 else "")
        raise typer.BadParameter(f"{folder} is a shard root, not a dataset folder; give one of: {names}")
