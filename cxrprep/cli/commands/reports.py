"""`cxrprep reports`: MIMIC-CXR reports into study shards."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors, finish_dataset, path_str, progress
from cxrprep.cli.options import (
    dataset_config,
    deprecated,
    image_options,
    renamed,
    run_block,
)


def register(app: typer.Typer) -> None:
    @app.command()
    @image_options
    @run_block("patients", "reports")
    def reports(
        # fmt: off
        root: Path = typer.Argument(
            ..., exists=True, help="MIMIC-CXR(-JPG) root, its files/ folder, or mimic-cxr-reports.zip"
        ),
        out: Path = typer.Option(Path("shards"), "--out", help="Shard root; writes OUT/mimic-cxr/"),
        metadata: Path = typer.Option(
            None, "--metadata", help="mimic-cxr-2.0.0-metadata.csv(.gz) (default: beside ROOT)"
        ),
        split_csv: Path = typer.Option(
            None, "--split-csv", help="mimic-cxr-2.0.0-split.csv(.gz) (default: beside ROOT)"
        ),
        split_old: Path = deprecated("--split", "--split-csv"),
        chexpert: Path = typer.Option(
            None, "--chexpert", help="mimic-cxr-2.0.0-chexpert.csv(.gz) (default: beside ROOT)"
        ),
        images: bool = typer.Option(
            True, "--images/--no-images", help="Join the study's images (sNNNNNNNN/*.jpg|*.dcm)"
        ),
        image: dict = None,  # the image block: see image_options
        chunk_size: int = typer.Option(1024, "--chunk-size", help="Reports per worker task"),
        max_report_bytes: int = typer.Option(
            1 << 20, "--max-report-bytes", help="A larger report file or zip member is a reject (never read whole)"
        ),
        run: dict = None,  # --workers --overwrite --part --max-failed: see run_block
        # fmt: on
    ) -> None:
        """Parse MIMIC-CXR reports into findings/impression + sentences, join labels, split, views and
        images, and write shards/mimic-cxr/.

        Example: cxrprep reports /data/mimic-cxr-jpg/2.0.0 --out shards/ --workers 8
        """
        from cxrprep.datasets.mimic import ReportsConfig, run_reports

        split = renamed(split_csv, split_old, "--split-csv", "--split")
        cfg, mf = dataset_config(
            ReportsConfig,
            image,
            run,
            metadata=path_str(metadata),
            split=path_str(split),
            chexpert=path_str(chexpert),
            images=images,
            chunk_size=chunk_size,
            max_report_bytes=max_report_bytes,
        )
        with errors({ValueError: 2}):
            m = run_reports(root, out, cfg, progress=lambda it, n: progress(it, n, "report chunks", "chunk"))
        _warn_missing_tables(m)
        finish_dataset(m, out / "mimic-cxr", mf)


_TABLES = {  # what is lost without each table of MIMIC-CXR(-JPG) (DESIGN.md, cxrprep reports)
    "split": ("--split-csv", "splits are hashed by patient instead of the official split"),
    "chexpert": ("--chexpert", "labels are null"),
    "metadata": ("--metadata", "views are unknown"),
}


def _warn_missing_tables(manifest: dict) -> None:
    """One warning line when the run found none of some MIMIC tables (issue 24: say so, never silently)."""
    used = (manifest.get("config") or {}).get("inputs") or {}
    missing = [k for k in _TABLES if k in used and not used[k]]
    if missing:
        names = ", ".join(f"mimic-cxr-2.0.0-{k}.csv(.gz)" for k in missing)
        lost = "; ".join(_TABLES[k][1] for k in missing)
        opts = " / ".join(_TABLES[k][0] for k in missing)
        typer.echo(
            f"warning: no {names} found beside the reports: {lost}; put them beside files/ or pass {opts}", err=True
        )
