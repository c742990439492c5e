"""`cxrtrain fewshot`: k-shot linear probe / partial fine-tuning and CXR-CLIP's 1/10/100% linear probe."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors
from cxrprep.cli.options import DEVICE, prompts_option
from cxrtrain.cli.commands import eval_errors


def _fractions(text: str) -> tuple[float, ...]:
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            out.append(float(part[:-1]) / 100 if part.endswith("%") else float(part))
        except ValueError:
            raise typer.BadParameter(
                f"--fractions must be comma-separated fractions or percentages (e.g. 1%,10%,100%), got {text!r}"
            ) from None
    return tuple(out)


def register(app: typer.Typer) -> None:
    @app.command()
    def fewshot(
        # fmt: off
        checkpoint: Path = typer.Argument(..., exists=True, help="A run folder or checkpoint folder"),
        shards: list[Path] = typer.Argument(
            ..., exists=True, help="Shard roots or dataset folders with labels (train, validate and test rows)"
        ),
        shots: str = typer.Option(
            "1,2,4,8,16", "--shots", help="Comma-separated k (examples per class and label); '' for none"
        ),
        seeds: int = typer.Option(5, "--seeds", help="Repetitions with different draws / initialisations"),
        modes: str = typer.Option("linear,partial", "--modes", help="k-shot modes: linear and/or partial"),
        fractions: str = typer.Option(
            "1%,10%,100%", "--fractions", help="CXR-CLIP linear probe on these shares of the train split; '' for none"
        ),
        image_blocks: int = typer.Option(2, "--image-blocks", help="partial: trained last blocks of the image tower"),
        epochs: int = typer.Option(30, "--epochs", help="k-shot: first epoch cap (doubled while it binds)"),
        probe_epochs: int = typer.Option(300, "--probe-epochs", help="Linear probe cap for subsets (CXR-CLIP: 300)"),
        probe_epochs_full: int = typer.Option(
            30, "--probe-epochs-full", help="Linear probe cap at 100% (CXR-CLIP: 30)"
        ),
        probe_lr: float = typer.Option(5e-5, "--probe-lr", help="Linear probe AdamW learning rate (CXR-CLIP: 5e-5)"),
        patience: int = typer.Option(10, "--patience", help="Early stopping: epochs without validate improvement"),
        max_epochs: int = typer.Option(
            1000,
            "--max-epochs",
            help="Epochs one head may train in all, over its restarts with a doubled cap (bounds probe time; a head "
            "still improving there is reported as not converged)",
        ),
        prompts: str = prompts_option("eval", "Prompts of the zero-shot reference: a path or a packaged name"),
        out: Path = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/fewshot)"),
        device: str = DEVICE,
        # fmt: on
    ) -> None:
        """Few-shot and linear-probe AUROC (mean ± std over seeds) beside zero-shot; selection on validate,
        numbers on test.

        Example: cxrtrain fewshot runs/clip shards/rsna-pneumonia --shots 1,4,16 --fractions 1%,10%,100%
        """
        from cxrprep.cli.edge import make_config
        from cxrtrain.fewshot import FewshotConfig, run_fewshot

        try:
            ks = tuple(int(x) for x in shots.split(",") if x.strip())
        except ValueError:
            raise typer.BadParameter(f"--shots must be comma-separated integers, got {shots!r}") from None
        cfg = make_config(
            FewshotConfig,
            shots=ks,
            seeds=seeds,
            modes=tuple(m.strip() for m in modes.split(",") if m.strip()),
            fractions=_fractions(fractions),
            image_blocks=image_blocks,
            epochs=epochs,
            probe_epochs=probe_epochs,
            probe_epochs_full=probe_epochs_full,
            probe_lr=probe_lr,
            patience=patience,
            max_epochs=max_epochs,
            prompts=prompts,  # a PromptFile: the name as given, resolved once
            device=device,
        )
        out_dir = out or (checkpoint / "fewshot")
        with errors(eval_errors()):
            run_fewshot(checkpoint, [str(s) for s in shards], out_dir, cfg, log=typer.echo)
        typer.echo((out_dir / "fewshot.md").read_text())
        typer.echo(f"results: {out_dir / 'fewshot.json'}, plot: {out_dir / 'fewshot.png'}")
