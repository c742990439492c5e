"""`cxrprep chexpert-5x200`: a seeded, rebuildable CheXpert 5x200 evaluation set."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors, make_config, path_str
from cxrprep.cli.options import CLAHE, OVERWRITE, SIZE, file_option, image_settings


def register(app: typer.Typer) -> None:
    @app.command("chexpert-5x200")
    def chexpert_5x200(
        # fmt: off
        train_csv: Path = typer.Argument(..., exists=True, dir_okay=False, help="CheXpert train.csv"),
        out: Path = typer.Option(
            Path("bench"),
            "--out",
            help="Benchmark root (default bench/, outside the training root); writes OUT/chexpert-5x200/",
        ),
        image_root: Path = typer.Option(None, "--image-root", help="Folder the Path column is relative to"),
        per_class: int = typer.Option(200, "--per-class", help="Images per competition class"),
        seed: int = typer.Option(0, "--seed"),
        list_file: Path = file_option(
            "--list",
            "Use a released list of image paths (CSV with a Path column, or one per line) instead of the seeded draw",
        ),
        released: bool = typer.Option(
            False,
            "--released",
            help="TRAIN_CSV is the released 5x200 file (GLoRIA's chexpert_5x200.csv): its rows, labels and "
            "Report Impression (for retrieval)",
        ),
        images: bool = typer.Option(True, "--images/--no-images"),
        overwrite: bool = OVERWRITE,
        size: int = SIZE,
        clahe: bool = CLAHE,
        # fmt: on
    ) -> None:
        """Build CheXpert 5x200 (frontal, exactly one competition finding positive, the rest 0) with a seed,
        plus patients.txt for `cxrprep prompts --exclude-patients`.

        Example: cxrprep chexpert-5x200 CheXpert-v1.0/train.csv --image-root /data --out bench/ --seed 0
        """
        from cxrprep.datasets.chexpert5x200 import FiveX200Config, run_5x200
        from cxrprep.shards import summary_lines

        cfg = make_config(
            FiveX200Config,
            per_class=per_class,
            seed=seed,
            images=images,
            image_root=path_str(image_root),
            image_settings=image_settings(size, clahe),
            list_path=path_str(list_file),
            released=released,
            overwrite=overwrite,
        )
        with errors({ValueError: 2}):
            m = run_5x200(train_csv, out, cfg)
        for line in summary_lines(m, out / "chexpert-5x200"):
            typer.echo(line)
        if m["counts"]["failed"]:
            raise typer.Exit(1)
