"""`cxrtrain import`: a published checkpoint (CXR-CLIP, CheXzero, open_clip) as a cxrkit run folder."""

from __future__ import annotations

from pathlib import Path

import typer

FORMATS = ("cxr-clip", "chexzero", "open-clip")
#: Local copies of the towers (a file or folder; checked below, so the message names the option).
TEXT_ENCODER = typer.Option(
    None,
    "--text-encoder",
    help="Local copy of the text tower's config+tokenizer (e.g. a Bio_ClinicalBERT folder; for CLIP "
    "a tokenizer folder or OpenAI's bpe_simple_vocab_16e6.txt.gz); default: the hub name in the checkpoint",
)
IMAGE_ENCODER = typer.Option(
    None, "--image-encoder", help="Local copy of the image tower's config (e.g. a Swin-T folder)"
)


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_(
        # fmt: off
        fmt: str = typer.Argument(..., metavar="FORMAT", help="cxr-clip | chexzero | open-clip"),
        ckpt: Path = typer.Argument(..., help="The checkpoint file (or an open_clip model folder)"),
        out: Path = typer.Option(..., "--out", help="Run folder to write (best/ as cxrtrain run writes it)"),
        text_encoder: Path = TEXT_ENCODER,
        image_encoder: Path = IMAGE_ENCODER,
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out"),
        # fmt: on
    ) -> None:
        """Import a published chest X-ray CLIP checkpoint; eval, bench-suite, fewshot, batch and export then
        take the run folder like one of your own.

        Example: cxrtrain import cxr-clip r50_mcc.tar --out runs/cxr-clip-r50-mcc --text-encoder Bio_ClinicalBERT/
        """
        from cxrtrain.imports import import_checkpoint
        from cxrtrain.imports.common import ImportUsageError

        if fmt not in FORMATS:
            typer.echo(f"error: FORMAT {fmt!r}: must be one of {', '.join(FORMATS)}", err=True)
            raise typer.Exit(2)
        for opt, p in (("CKPT", ckpt), ("--text-encoder", text_encoder), ("--image-encoder", image_encoder)):
            if p is not None and not p.exists():
                typer.echo(f"error: {opt} {p}: no such file or folder", err=True)
                raise typer.Exit(2)
        try:
            best = import_checkpoint(fmt, ckpt, out, text_encoder, image_encoder, overwrite)
        except ImportUsageError as e:  # also UnsafeCheckpointError / CheckpointReadError (ValueErrors)
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        except ValueError as e:
            typer.echo(f"error: {ckpt}: {e}", err=True)
            raise typer.Exit(2)
        except (OSError, RuntimeError) as e:
            typer.echo(
                f"error: {ckpt}: import failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True
            )
            raise typer.Exit(1)
        typer.echo(f"imported {fmt} {ckpt} -> {best} (record: {out / 'import.json'})")
