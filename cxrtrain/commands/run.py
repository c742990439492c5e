"""`cxrtrain run`: train on shards."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        # fmt: off
        shards: list[Path] = typer.Argument(None, exists=True, help="Shard roots or dataset folders (every dataset below is used)"),
        config: Path = typer.Option(None, "--config", exists=True, dir_okay=False, help="YAML config (see examples/train_tiny.yaml)"),
        out: Path = typer.Option(Path("runs/default"), "--out", help="Run folder: config, metrics.jsonl, checkpoints, loss.png"),
        resume: bool = typer.Option(False, "--resume", help="Continue exactly from OUT/last"),
        set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set lr=1e-4 --set model.preset=clip-b32"),
        print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config (YAML, usable as --config) and exit"),
        # fmt: on
    ) -> None:
        """Train a CLIP-style model on cxrprep shards (DDP under torchrun, mixed precision, exact resume).

        Example: cxrtrain run shards/ --config examples/train_tiny.yaml --out runs/tiny
        Several GPUs: torchrun --nproc_per_node 4 -m cxrtrain.cli run shards/ --config cfg.yaml --out runs/x
        """
        from ..config import load_config
        from ..train import train

        try:
            cfg = load_config(config, set_)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--config/--set") from e
        if print_config:
            from ..config import config_to_yaml

            typer.echo(config_to_yaml(cfg), nl=False)
            raise typer.Exit()
        if not shards:
            raise typer.BadParameter("give at least one shard root or dataset folder", param_hint="SHARDS")
        import torch

        if cfg.threads:  # on a loaded machine fewer threads than cores can be much faster
            torch.set_num_threads(cfg.threads)
        try:
            res = train([str(s) for s in shards], out, cfg, resume=resume, log=typer.echo)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1)
        import os

        if int(os.environ.get("RANK", 0)) != 0:
            return  # under torchrun only rank 0 reports
        h = res["history"]
        first, last = (h[0]["loss"], h[-1]["loss"]) if h else (None, None)
        typer.echo(f"done: {res['steps']} steps ({res['stopped_by']}); train loss {first} -> {last}; "
                   f"best validation loss {res['best_val']:.4f}" if res["best_val"] != float("inf") else
                   f"done: {res['steps']} steps ({res['stopped_by']}); train loss {first} -> {last}")
        typer.echo(f"run folder: {out} (metrics.jsonl, loss.png, last/, best/)")
