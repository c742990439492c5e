"""`cxrtrain eval`: zero-shot classification and retrieval on one split."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors
from cxrprep.cli.options import BOOTSTRAP, DEVICE, ENSEMBLE, EVAL_SPLIT, prompts_option
from cxrtrain.cli.commands import eval_errors


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        # fmt: off
        checkpoint: Path = typer.Argument(
            ..., exists=True, help="A run folder (uses best/, else last/) or a checkpoint folder"
        ),
        shards: list[Path] = typer.Argument(..., exists=True, help="Shard roots or dataset folders"),
        prompts: str = prompts_option("eval", "Zero-shot prompt file: a packaged name (eval, cxr-clip) or a path"),
        out: Path = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/eval)"),
        split: str = EVAL_SPLIT,
        ensemble: str = ENSEMBLE,
        baseline: str = typer.Option(
            "none", "--baseline", help="none | untrained: also score a random-init model of the same architecture"
        ),
        uncertain: str = typer.Option("exclude", "--uncertain", help="-1 labels: exclude | positive | negative"),
        text: str = typer.Option("impression", "--text", help="Retrieval text: findings | impression | both"),
        batch_size: int = typer.Option(64, "--batch-size"),
        bootstrap: int = BOOTSTRAP,
        seed: int = typer.Option(0, "--seed", help="Bootstrap and untrained-baseline seed"),
        device: str = DEVICE,
        # fmt: on
    ) -> None:
        """Zero-shot AUROC (+95% CI), F1/MCC (threshold from a held-out split), 5x200 accuracy and retrieval
        R@K on ONE split (default test), named in every output.

        Example: cxrtrain eval runs/tiny shards/ --prompts prompts/cxr-clip.yaml --split test
        """
        from cxrprep.cli.edge import make_config, progress
        from cxrtrain.evaluate import EvalConfig, run_eval

        cfg = make_config(
            EvalConfig,
            prompts=prompts,  # a PromptFile: the name as given, resolved once
            uncertain=uncertain,
            text_section=text,
            batch_size=batch_size,
            bootstrap=bootstrap,
            seed=seed,
            device=device,
            split=split,
            ensemble=ensemble,
            baseline=baseline,
        )
        out_dir = out or (checkpoint / "eval")
        with errors(eval_errors()):
            run_eval(
                checkpoint,
                [str(s) for s in shards],
                out_dir,
                cfg,
                progress=lambda it: progress(it, None, "embed", "img"),
            )
        typer.echo((out_dir / "metrics.md").read_text())
        typer.echo(f"metrics: {out_dir / 'metrics.json'}, ROC plots: {out_dir}/roc_*.png")
