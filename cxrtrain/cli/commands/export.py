"""`cxrtrain export`: encoders as Hugging Face directories plus projections."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def export(
        checkpoint: Path = typer.Argument(..., exists=True, help="A run folder or checkpoint folder"),
        out: Path = typer.Option(..., "--out", help="Output folder"),
    ) -> None:
        """Write both encoders with save_pretrained, the projections and temperature, and a README snippet.

        Example: cxrtrain export runs/tiny --out exported/tiny
        """
        from cxrtrain.export import export as do_export

        try:
            d = do_export(checkpoint, out)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1)
        typer.echo(f"exported to {d}: image_encoder/, text_encoder/, projections.safetensors, README.md")
