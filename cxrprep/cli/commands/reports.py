"""`cxrprep reports`: MIMIC-CXR reports into study shards."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors, finish, make_config, progress
from cxrprep.cli.options import (
    CLAHE,
    CLAHE_CLIP,
    CLAHE_TILES,
    FORMAT,
    MAX_PIXELS,
    QUALITY,
    SIZE,
    WORKERS,
    deprecated,
    image_settings,
    max_failed_option,
    part_option,
    renamed,
    run_options,
)


def register(app: typer.Typer) -> None:
    @app.command()
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
        size: int = SIZE,
        clahe: bool = CLAHE,
        clahe_clip: float = CLAHE_CLIP,
        clahe_tiles: int = CLAHE_TILES,
        fmt: str = FORMAT,
        quality: int = QUALITY,
        max_image_pixels: int = MAX_PIXELS,
        workers: int = WORKERS,
        chunk_size: int = typer.Option(1024, "--chunk-size", help="Reports per worker task"),
        max_report_bytes: int = typer.Option(
            1 << 20, "--max-report-bytes", help="A larger report file or zip member is a reject (never read whole)"
        ),
        part: str = part_option("patients"),
        max_failed: str = max_failed_option("reports"),
        # fmt: on
    ) -> None:
        """Parse MIMIC-CXR reports into findings/impression + sentences, join labels, split, views and
        images, and write shards/mimic-cxr/.

        Example: cxrprep reports /data/mimic-cxr-jpg/2.0.0 --out shards/ --workers 8
        """
        from cxrprep.datasets.mimic import ReportsConfig, run_reports
        from cxrprep.shards import summary_lines

        split = renamed(split_csv, split_old, "--split-csv", "--split")
        mf, part_t, nworkers = run_options(max_failed, part, workers)
        settings = image_settings(size, clahe, clahe_clip, clahe_tiles, fmt, quality, max_image_pixels)
        cfg = make_config(
            ReportsConfig,
            metadata=str(metadata) if metadata else None,
            split=str(split) if split else None,
            chexpert=str(chexpert) if chexpert else None,
            images=images,
            workers=nworkers,
            chunk_size=chunk_size,
            part=part_t,
            max_report_bytes=max_report_bytes,
            image_settings=settings,
        )
        with errors({ValueError: 2}):
            m = run_reports(root, out, cfg, progress=lambda it, n: progress(it, n, "report chunks", "chunk"))
        c = m["counts"]
        finish(summary_lines(m, out / "mimic-cxr"), c["failed"], c["inputs_seen"], mf, dataset_dir=out / "mimic-cxr")
