"""`cxrtrain fewshot`: k-shot linear probe and partial fine-tuning."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.promptfiles import check_option


def register(app: typer.Typer) -> None:
    @app.command()
    def fewshot(
        # fmt: off
        checkpoint: Path = typer.Argument(..., exists=True, help="A run folder or checkpoint folder"),
        shards: list[Path] = typer.Argument(..., exists=True, help="Shard roots or dataset folders with labels"),
        shots: str = typer.Option("1,2,4,8,16", "--shots", help="Comma-separated k (examples per class and label)"),
        seeds: int = typer.Option(5, "--seeds", min=1, help="Repetitions with different k-shot draws"),
        modes: str = typer.Option("linear,partial", "--modes", help="linear and/or partial"),
        image_blocks: int = typer.Option(2, "--image-blocks", min=0, help="partial: trained last blocks of the image tower"),
        epochs: int = typer.Option(30, "--epochs", min=1, help="Maximum epochs; the best is chosen on validate"),
        prompts: str = typer.Option("eval", "--prompts", callback=lambda v: check_option(v, "--prompts"), help="Prompts of the zero-shot reference: a path or a packaged name"),
        out: Path = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/fewshot)"),
        device: str = typer.Option("cpu", "--device"),
        # fmt: on
    ) -> None:
        """Few-shot AUROC per k (mean ± std over seeds) beside zero-shot; model selection on validate only.

        Example: cxrtrain fewshot runs/clip shards/chestx-ray14 --shots 1,2,4,8,16 --seeds 5
        """
        from cxrprep.cliutil import make_config

        from ..fewshot import FewshotConfig, run_fewshot

        try:
            ks = tuple(int(x) for x in shots.split(","))
        except ValueError:
            raise typer.BadParameter(f"--shots must be comma-separated integers, got {shots!r}") from None
        cfg = make_config(FewshotConfig, shots=ks, seeds=seeds, modes=tuple(m.strip() for m in modes.split(",")),
                          image_blocks=image_blocks, epochs=epochs, prompts=str(prompts), device=device)
        out_dir = out or (checkpoint / "fewshot")
        try:
            run_fewshot(checkpoint, [str(s) for s in shards], out_dir, cfg, log=typer.echo)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1)
        typer.echo((out_dir / "fewshot.md").read_text())
        typer.echo(f"results: {out_dir / 'fewshot.json'}, plot: {out_dir / 'fewshot.png'}")
