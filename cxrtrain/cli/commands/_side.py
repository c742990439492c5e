"""`--model A --model B` on eval and bench-suite: the side-by-side table (cxrtrain/sidebyside.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors
from cxrtrain.cli.commands import eval_errors

#: --model of eval and bench-suite.
MODELS = typer.Option(
    None,
    "--model",
    exists=True,
    help="Score several runs side by side (repeat; the first is the reference); all arguments are shard roots",
)


def side_by_side_or_shards(models, checkpoint: Path, shards, out: Path | None, cfg, suite: dict | None) -> bool:
    """With --model, score side by side (CHECKPOINT and SHARDS are all shard roots) and return True; without,
    check that SHARDS names at least one root (exit 2) and return False."""
    if models:
        side_by_side(models, [checkpoint, *(shards or [])], out, cfg, suite)
        return True
    if not shards:
        typer.echo("error: SHARDS: give at least one shard root after the checkpoint (or use --model)", err=True)
        raise typer.Exit(2)
    return False


def side_by_side(models: list[Path], roots: list[Path], out: Path | None, cfg, suite: dict | None) -> None:
    from cxrtrain.sidebyside import run_side_by_side

    if out is None:
        typer.echo("error: --out: side-by-side scoring needs an output folder (--out DIR)", err=True)
        raise typer.Exit(2)
    with errors(eval_errors()):
        run_side_by_side(list(models), [str(r) for r in roots], out, cfg, suite, log=typer.echo)
    typer.echo((out / "side-by-side.md").read_text())
    typer.echo(
        f"side by side: {out / 'side-by-side.json'}, chart: {out / 'side-by-side.png'}, per model: {out / 'models'}"
    )
