"""`cxrtrain export`: encoders as Hugging Face directories plus projections."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors


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

        with errors({(ValueError, FileNotFoundError, RuntimeError): 1}):
            d = do_export(checkpoint, out)
        typer.echo(f"exported to {d}: image_encoder/, text_encoder/, projections.safetensors, README.md")
