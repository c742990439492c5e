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
        format: str = typer.Option(
            "cxrkit",
            "--format",
            help="cxrkit: both towers + projections.safetensors (any model); hf: one folder that "
            "transformers' CLIPModel / VisionTextDualEncoderModel.from_pretrained loads (refused where it would "
            "score differently)",
        ),
    ) -> None:
        """Write both encoders with save_pretrained, the projections and temperature, and a README snippet.

        Example: cxrtrain export runs/tiny --out exported/tiny
        """
        if format not in ("cxrkit", "hf"):
            raise typer.BadParameter(f"{format!r} is not one of cxrkit, hf", param_hint="--format")
        if format == "hf":
            from cxrtrain.export_hf import NotRepresentable, export_hf

            with errors({(NotRepresentable, FileExistsError): 2, (ValueError, FileNotFoundError, RuntimeError): 1}):
                d, kind, diff = export_hf(checkpoint, out)
            typer.echo(f"exported to {d}: transformers.{kind} (logits within {diff:.1e} of cxrkit's on a probe batch)")
            return
        from cxrtrain.export import export as do_export

        with errors({(ValueError, FileNotFoundError, RuntimeError): 1}):
            d = do_export(checkpoint, out)
        typer.echo(f"exported to {d}: image_encoder/, text_encoder/, projections.safetensors, README.md")
