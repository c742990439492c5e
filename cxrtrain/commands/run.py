"""`cxrtrain run`: train on shards."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        # fmt: off
        shards: list[Path] = typer.Argument(..., exists=True, help="Shard roots or dataset folders (every dataset below is used)"),
        config: Path = typer.Option(None, "--config", exists=True, dir_okay=False, help="YAML config (see examples/train_tiny.yaml)"),
        out: Path = typer.Option(Path("runs/default"), "--out", help="Run folder: config, metrics.jsonl, checkpoints, loss.png"),
        resume: bool = typer.Option(False, "--resume", help="Continue exactly from OUT/last"),
        set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set lr=1e-4 --set model.preset=clip-b32"),
        skip_incomplete: bool = typer.Option(False, "--skip-incomplete", help="Train on the finished datasets and skip folders without a manifest.json (a killed or unmerged cxrprep run); default: refuse them"),
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
        import torch

        if cfg.device in ("auto", "cpu") and not torch.cuda.is_available():
            torch.set_num_threads(max(1, torch.get_num_threads()))
        from cxrprep.shards import IncompleteDataset, finished_datasets

        try:
            folders, skipped = finished_datasets(shards, skip_incomplete)
        except IncompleteDataset as e:
            typer.echo(f"error: {e}; or pass --skip-incomplete to train on the finished datasets only", err=True)
            raise typer.Exit(2)
        except FileNotFoundError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1)
        for d in skipped:
            typer.echo(f"skipping incomplete dataset folder {d} (no manifest.json; --skip-incomplete)", err=True)
        try:
            res = train([str(d) for d in folders], out, cfg, resume=resume, log=typer.echo)
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
