"""`cxrtrain batch`: write one augmented training batch to look at."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors
from cxrprep.cli.options import file_option


def register(app: typer.Typer) -> None:
    @app.command()
    def batch(
        # fmt: off
        shards: list[Path] = typer.Argument(
            ..., exists=True, help="Shard roots or dataset folders, as for cxrtrain run"
        ),
        config: Path = file_option("--config", "YAML config (as for cxrtrain run)"),
        out: Path = typer.Option(..., "--out", help="Folder for batch.png and batch.npz"),
        n: int = typer.Option(None, "--n", min=1, help="Studies to draw (default: the training micro-batch size)"),
        epoch: int = typer.Option(0, "--epoch", min=0, help="Which epoch's first batch"),
        set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set clahe=online"),
        # fmt: on
    ) -> None:
        """Draw one training batch through the real loader and augmentation: DIR/batch.png shows both
        augmented views of every study with its two texts; DIR/batch.npz holds the uint8 images
        [N, 2, S, S] before normalisation, the texts and the study ids.

        Example: cxrtrain batch shards/ --config examples/train_tiny.yaml --out runs/look
        """
        from cxrtrain.config import load_config

        try:
            cfg = load_config(config, set_)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--config/--set") from e
        from cxrtrain.batch import draw_batch, write_batch
        from cxrtrain.runlog import UsageError

        with errors({UsageError: 2, (ValueError, FileNotFoundError, RuntimeError): 1}):  # no usable rows: 2
            b = draw_batch(cfg, [str(s) for s in shards], n, epoch)
        png, npz = write_batch(b, out)
        typer.echo(f"{len(b['study_id'])} studies, 2 views of {b['images'].shape[-1]} px each: {png}, {npz}")
