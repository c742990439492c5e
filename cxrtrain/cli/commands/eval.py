"""`cxrtrain eval`: zero-shot classification and retrieval on one split."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import check_option
from cxrtrain.cli.commands._errors import eval_exit_codes


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_(
        # fmt: off
        checkpoint: Path = typer.Argument(
            ...,
            exists=True,
            help="A run folder (uses best/, else last/) or a checkpoint folder (with --model: a shard root)",
        ),
        shards: list[Path] = typer.Argument(None, exists=True, help="Shard roots or dataset folders"),
        models: list[Path] = typer.Option(
            None,
            "--model",
            exists=True,
            help="Score several runs side by side (repeat; the first is the reference); all arguments are shard roots",
        ),
        prompts: str = typer.Option(
            "eval",
            "--prompts",
            callback=lambda v: check_option(v, "--prompts"),
            help="Zero-shot prompt file: a packaged name (eval, cxr-clip) or a path",
        ),
        out: Path = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/eval)"),
        split: str = typer.Option(
            "test", "--split", help="Rows scored: test | validate | train | all (never a silent fallback)"
        ),
        ensemble: str = typer.Option(
            "mean-similarity", "--ensemble", help="Prompt-set score: mean-similarity (CXR-CLIP) | mean-embedding"
        ),
        baseline: str = typer.Option(
            "none", "--baseline", help="none | untrained: also score a random-init model of the same architecture"
        ),
        uncertain: str = typer.Option("exclude", "--uncertain", help="-1 labels: exclude | positive | negative"),
        text: str = typer.Option("impression", "--text", help="Retrieval text: findings | impression | both"),
        batch_size: int = typer.Option(64, "--batch-size"),
        bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the AUROC CI (0 = none)"),
        seed: int = typer.Option(0, "--seed", help="Bootstrap and untrained-baseline seed"),
        device: str = typer.Option("auto", "--device", help="auto (cuda if available) | cpu | cuda | cuda:N"),
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
            prompts=str(prompts),
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
        if models:
            from cxrtrain.cli.commands._side import side_by_side

            return side_by_side(models, [checkpoint, *(shards or [])], out, cfg, None)
        if not shards:
            typer.echo("error: SHARDS: give at least one shard root after the checkpoint (or use --model)", err=True)
            raise typer.Exit(2)
        out_dir = out or (checkpoint / "eval")
        with eval_exit_codes():
            run_eval(
                checkpoint,
                [str(s) for s in shards],
                out_dir,
                cfg,
                progress=lambda it: progress(it, None, "embed", "img"),
            )
        typer.echo((out_dir / "metrics.md").read_text())
        typer.echo(f"metrics: {out_dir / 'metrics.json'}, ROC plots: {out_dir}/roc_*.png")
