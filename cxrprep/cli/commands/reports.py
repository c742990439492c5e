"""`cxrprep reports`: MIMIC-CXR reports into study shards."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors, finish, make_config, progress
from cxrprep.cli.options import image_settings, run_options


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
        split: Path = typer.Option(None, "--split", help="mimic-cxr-2.0.0-split.csv(.gz) (default: beside ROOT)"),
        chexpert: Path = typer.Option(
            None, "--chexpert", help="mimic-cxr-2.0.0-chexpert.csv(.gz) (default: beside ROOT)"
        ),
        images: bool = typer.Option(
            True, "--images/--no-images", help="Join the study's images (sNNNNNNNN/*.jpg|*.dcm)"
        ),
        size: int = typer.Option(512, "--size", help="Image shorter side in pixels (never upscaled)"),
        clahe: bool = typer.Option(True, "--clahe/--no-clahe", help="Also store a CLAHE copy"),
        clahe_clip: float = typer.Option(2.0, "--clahe-clip"),
        clahe_tiles: int = typer.Option(8, "--clahe-tiles"),
        fmt: str = typer.Option("jpeg", "--format", help="jpeg or png"),
        quality: int = typer.Option(95, "--quality", help="JPEG quality"),
        max_image_pixels: int = typer.Option(178_956_970, "--max-image-pixels"),
        workers: int = typer.Option(0, "--workers", help="Worker processes (0 = all cores)"),
        chunk_size: int = typer.Option(1024, "--chunk-size", help="Reports per worker task"),
        max_report_bytes: int = typer.Option(
            1 << 20, "--max-report-bytes", help="A larger report file or zip member is a reject (never read whole)"
        ),
        part: str = typer.Option(
            None, "--part", help="i/N: a deterministic 1/N of the patients; join with cxrprep merge"
        ),
        max_failed: str = typer.Option(
            "1%", "--max-failed", help="Exit 1 if more reports fail (count, or percent like 1%)"
        ),
        # fmt: on
    ) -> None:
        """Parse MIMIC-CXR reports into findings/impression + sentences, join labels, split, views and
        images, and write shards/mimic-cxr/.

        Example: cxrprep reports /data/mimic-cxr-jpg/2.0.0 --out shards/ --workers 8
        """
        from cxrprep.datasets.mimic import ReportsConfig, run_reports
        from cxrprep.shards import summary_lines

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
