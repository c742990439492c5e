"""cxrprep: the Typer app. Commands live in cxrprep/commands/*.py (one thin function per step:
options -> frozen config -> run_*()); this file only assembles them."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import error_line, errors, make_app, register_commands

app = make_app(
    "cxrprep",
    "Prepare chest X-ray datasets (MIMIC-CXR, CheXpert, ChestX-ray14, DICOM folders) as Parquet study shards "
    "for CLIP-style pre-training.\n\nExample: cxrprep reports mimic-cxr-jpg/ --out shards/",
)


@app.command()
def merge(
    dataset_dir: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="A dataset folder, e.g. shards/mimic-cxr"
    ),
) -> None:
    """Join the outputs of `--part i/N` runs into one manifest.json, rejects.jsonl and README.md dataset card.

    Example: for i in 0 1 2 3; do cxrprep reports mimic/ --out shards/ --part $i/4; done;
    cxrprep merge shards/mimic-cxr
    """
    from cxrprep.schema import ShardSchemaError
    from cxrprep.shards import DatasetBusy, merge_parts, summary_lines

    with errors({DatasetBusy: 2, ShardSchemaError: 1}):  # busy: pieces still running, try again when done
        manifest = merge_parts(dataset_dir)
    for line in summary_lines(manifest, dataset_dir):
        typer.echo(line)


ORDER = ["reports", "prompts", "templates", "images", "augment", "inspect"]
register_commands(app, "cxrprep.cli.commands", ORDER)


class Interrupted(BaseException):
    """Ctrl-C (SIGINT). Not a KeyboardInterrupt, so click does not turn it into "Aborted!"; it unwinds
    through the writers (which remove what the run had not finished) up to ``main``."""


def _on_sigint(main_pid: int):
    import os
    import signal

    def handler(signum, frame):
        if os.getpid() != main_pid:
            return  # a forked pool worker: the parent shuts the pool down
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        raise Interrupted()

    return handler


def main() -> None:
    """The ``cxrprep`` entry point: Ctrl-C exits 130 with one line after the unfinished files are
    removed; a write that fails for every later input (disk full) exits 1 naming the cause."""
    import os
    import signal
    import sys

    from cxrprep.shards import ShardWriteError

    signal.signal(signal.SIGINT, _on_sigint(os.getpid()))
    try:
        app()
    except Interrupted:
        typer.echo(
            "interrupted: removed what this run had not finished (a previous finished output is unchanged); exit 130",
            err=True,
        )
        sys.exit(130)
    except ShardWriteError as e:  # outside the click app: sys.exit, not typer.Exit
        error_line(e)
        sys.exit(1)


if __name__ == "__main__":
    main()
