"""`cxrtrain eval`: zero-shot classification and retrieval."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.promptfiles import check_option


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        # fmt: off
        checkpoint: Path = typer.Argument(..., exists=True, help="A run folder (uses best/, else last/) or a checkpoint folder"),
        shards: list[Path] = typer.Argument(..., exists=True, help="Shard roots or dataset folders"),
        prompts: str = typer.Option("eval", "--prompts", callback=lambda v: check_option(v, "--prompts"), help="Zero-shot prompt file: a path, or a packaged name (eval)"),
        out: Path = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/eval)"),
        uncertain: str = typer.Option("exclude", "--uncertain", help="-1 labels: exclude | positive | negative"),
        text: str = typer.Option("impression", "--text", help="Retrieval text: findings | impression | both"),
        batch_size: int = typer.Option(64, "--batch-size", min=1),
        bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap resamples for the AUROC CI"),
        seed: int = typer.Option(0, "--seed"),
        device: str = typer.Option("cpu", "--device"),
        # fmt: on
    ) -> None:
        """Zero-shot AUROC (+95% CI), F1/MCC (threshold from validate), 5x200-style accuracy, retrieval R@K.

        Example: cxrtrain eval runs/tiny shards/ --prompts prompts/eval.yaml
        """
        from cxrprep.cliutil import make_config, progress

        from ..evaluate import EvalConfig, run_eval

        cfg = make_config(EvalConfig, prompts=str(prompts), uncertain=uncertain, text_section=text,
                          batch_size=batch_size, bootstrap=bootstrap, seed=seed, device=device)
        out_dir = out or (checkpoint / "eval")
        try:
            m = run_eval(checkpoint, [str(s) for s in shards], out_dir, cfg, progress=lambda it: progress(it, None, "embed", "img"))
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1)
        typer.echo((out_dir / "metrics.md").read_text())
        typer.echo(f"metrics: {out_dir / 'metrics.json'}, ROC plots: {out_dir}/roc_*.png")
        _ = m
