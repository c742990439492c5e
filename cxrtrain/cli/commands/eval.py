"""`cxrtrain eval`: zero-shot classification and retrieval on one split."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import check_option, errors
from cxrprep.cli.options import BOOTSTRAP, DEVICE, ENSEMBLE, EVAL_SPLIT
from cxrtrain.cli.commands import eval_errors
from cxrtrain.cli.commands._side import MODELS, side_by_side_or_shards


# long: registers the eval command below, most of whose lines declare its options
def register(app: typer.Typer) -> None:
    # long: a Typer command, most of whose lines declare its options (see cxrprep/cli/options.py)
    @app.command("eval")
    def eval_(
        # fmt: off
        checkpoint: Path = typer.Argument(
            ...,
            exists=True,
            help="A run folder (uses best/, else last/) or a checkpoint folder (with --model: a shard root)",
        ),
        shards: list[Path] = typer.Argument(None, exists=True, help="Shard roots or dataset folders"),
        models: list[Path] = MODELS,
        prompts: list[str] = typer.Option(
            None,
            "--prompts",
            callback=lambda v: [check_option(x, "--prompts") for x in v or []],
            help="Zero-shot prompt file: a packaged name (eval, gloria, cxr-clip) or a path; give it twice or "
            "more to compare prompt files on the same images (paired bootstrap vs the first; default eval)",
        ),
        protocol: str = typer.Option(
            "cxrkit",
            "--protocol",
            help="cxrkit (today's choices) | cxr-clip (CXR-CLIP's evaluator: its prompts, argmax F1, "
            "image->text RSUM); see docs/protocols.md",
        ),
        save_embeddings: bool = typer.Option(
            False, "--save-embeddings", help="Write OUT/embeddings/<dataset>.npz (re-scorable; docs/protocols.md)"
        ),
        out: Path = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/eval)"),
        split: str = EVAL_SPLIT,
        ensemble: str = ENSEMBLE,
        baseline: str = typer.Option(
            "none", "--baseline", help="none | untrained: also score a random-init model of the same architecture"
        ),
        uncertain: str = typer.Option("exclude", "--uncertain", help="-1 labels: exclude | positive | negative"),
        text: str = typer.Option(
            None,
            "--text",
            help="Retrieval text: findings | impression | both | max (default impression; max under "
            "--protocol cxr-clip)",
        ),
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

        if protocol not in ("cxrkit", "cxr-clip"):
            raise typer.BadParameter(f"must be cxrkit or cxr-clip, got {protocol!r}", param_hint="--protocol")
        prompts = prompts or [check_option("cxr-clip-protocol" if protocol == "cxr-clip" else "eval", "--prompts")]
        cfg = make_config(
            EvalConfig,
            prompts=prompts[0],  # a PromptFile: the name as given, resolved once
            protocol=protocol,
            f1_rule="argmax" if protocol == "cxr-clip" else "threshold",
            save_embeddings=save_embeddings,
            uncertain=uncertain,
            text_section=text or ("max" if protocol == "cxr-clip" else "impression"),
            batch_size=batch_size,
            bootstrap=bootstrap,
            seed=seed,
            device=device,
            split=split,
            ensemble=ensemble,
            baseline=baseline,
        )
        if side_by_side_or_shards(models, checkpoint, shards, out, cfg, None):
            return
        out_dir = out or (checkpoint / "eval")
        with errors(eval_errors()):
            run_eval(
                checkpoint,
                [str(s) for s in shards],
                out_dir,
                cfg,
                progress=lambda it: progress(it, None, "embed", "img"),
                log=typer.echo,
            )
            if len(prompts) > 1:
                from cxrtrain.prompt_compare import run_prompt_comparison

                run_prompt_comparison(checkpoint, [str(s) for s in shards], out_dir, cfg, [str(p) for p in prompts])
        typer.echo((out_dir / "metrics.md").read_text())
        rocs = f"{out_dir}/roc_*.png" if any(out_dir.glob("roc_*.png")) else "none (nothing to plot)"
        typer.echo(f"metrics: {out_dir / 'metrics.json'}, ROC plots: {rocs}")
