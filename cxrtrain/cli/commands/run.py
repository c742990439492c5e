"""`cxrtrain run`: train on shards."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors, fail
from cxrprep.cli.options import file_option


def default_out() -> Path:
    """A fresh ``runs/<date>-<time>`` (suffixed -2, -3, ... if that exists already)."""
    import time

    base = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    p, i = base, 2
    while p.exists():
        p, i = base.with_name(f"{base.name}-{i}"), i + 1
    return p


# long: a Typer command, most of whose lines declare its options (see cxrprep/cli/options.py)
def run(
    # fmt: off
    shards: list[Path] = typer.Argument(
        None, exists=True, help="Shard roots or dataset folders (every dataset below is used)"
    ),
    config: Path = file_option("--config", "YAML config of TrainConfig keys (e.g. examples/train_tiny.yaml)"),
    out: Path = typer.Option(
        None,
        "--out",
        help="Run folder: config.json, metrics.jsonl, last/, best/, loss.png (default: a new runs/DATE-TIME)",
        show_default=False,
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly from its last/ checkpoint"),
    init_from: Path = typer.Option(
        None,
        "--init-from",
        exists=True,
        help="Fine-tune from this run's weights (a run or checkpoint folder, e.g. from cxrtrain import); "
        "its model config, towers and tokenizer are used (= --set init_from=RUN)",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the run in --out (its checkpoints, metrics, eval/)"
    ),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Override a config key, e.g. --set lr=1e-4 --set model.preset=clip-b32 --set log.tensorboard=true",
    ),
    skip_incomplete: bool = typer.Option(
        False,
        "--skip-incomplete",
        help="Train on the finished datasets and skip folders without a manifest.json (a killed or unmerged "
        "cxrprep run); default: refuse them",
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved config (YAML, usable as --config) and exit"
    ),
    # fmt: on
) -> None:
    """Train a CLIP-style model on cxrprep shards (DDP under torchrun, mixed precision, exact resume).

    A --out folder that already holds a run is refused unless --resume or --overwrite. Ctrl-C or SIGTERM
    finishes the current step and saves last/ (continue with --resume).

    Example: cxrtrain run shards/ --config examples/train_tiny.yaml --out runs/tiny

    Fine-tune a published model: cxrtrain import chexzero best_64_0.0001_original_35000_0.864.pt --out runs/cz;
    cxrtrain run shards/ --init-from runs/cz --out runs/cz-ft

    Several GPUs: torchrun --nproc_per_node 4 -m cxrtrain.cli.app run shards/ --config cfg.yaml --out runs/x
    """
    import os

    from cxrtrain.config import load_config
    from cxrtrain.runlog import DiskFullError, UsageError

    try:
        cfg = load_config(config, [*set_, *([f"init_from={init_from}"] if init_from else [])])
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--config/--set") from e
    if print_config:
        from cxrtrain.config import config_to_yaml

        typer.echo(config_to_yaml(cfg), nl=False)
        raise typer.Exit()
    if not shards:
        raise typer.BadParameter("give at least one shard root or dataset folder", param_hint="SHARDS")
    if cfg.threads:  # on a loaded machine fewer threads than cores can be much faster
        import torch

        torch.set_num_threads(cfg.threads)
    from cxrtrain.train import train

    folders = _datasets(shards, skip_incomplete)
    out_dir = out if out is not None else default_out()
    # usage: --out holds a run, a batch larger than the data, no dataset folders, a part file missing
    with errors({(UsageError, FileNotFoundError): 2, DiskFullError: 1, (ValueError, RuntimeError, OSError): 1}):
        res = train([str(d) for d in folders], out_dir, cfg, resume=resume, overwrite=overwrite, log=typer.echo)
    if int(os.environ.get("RANK", 0)) != 0:
        return  # under torchrun only rank 0 reports
    _report(res, out_dir)


def _datasets(shards: list[Path], skip_incomplete: bool) -> list[Path]:
    """The finished dataset folders under SHARDS; unfinished ones are refused (exit 2) or, with
    --skip-incomplete, skipped with a line each."""
    from cxrprep.shards import IncompleteDataset, finished_datasets

    try:
        with errors({FileNotFoundError: 2}):  # no dataset folder under SHARDS: bad usage, as in every command
            folders, skipped = finished_datasets(shards, skip_incomplete)
    except IncompleteDataset as e:
        fail(f"{e}; or pass --skip-incomplete to train on the finished datasets only", 2)
    for d in skipped:
        typer.echo(f"skipping incomplete dataset folder {d} (no manifest.json; --skip-incomplete)", err=True)
    return folders


def _report(res: dict, out_dir: Path) -> None:
    """The two summary lines of a finished run; exit 130 after Ctrl-C (last/ was saved)."""
    h = res["history"]
    first, last = (h[0]["loss"], h[-1]["loss"]) if h else (None, None)
    losses = f"train loss {first:.4f} -> {last:.4f}" if h else "no steps trained"
    best = f"; best validation loss {res['best_val']:.4f}" if res["best_val"] != float("inf") else ""
    typer.echo(f"done: {res['steps']} steps ({res['stopped_by']}); {losses}{best}")
    files = [n for n in ("metrics.jsonl", "loss.png") if (out_dir / n).exists()] + [f"{n}/" for n in res["checkpoints"]]
    typer.echo(f"run folder: {out_dir} ({', '.join(files)})")
    if res["stopped_by"] == "SIGINT":
        raise typer.Exit(130)


def register(app: typer.Typer) -> None:
    app.command()(run)
