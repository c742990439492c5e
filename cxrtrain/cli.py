"""cxrtrain: the Typer app. Commands live in cxrtrain/commands/*.py; this file only assembles them."""

from __future__ import annotations

import typer

from cxrprep import __version__
from cxrprep.cliutil import register_commands
from cxrprep.toplevel import SafeGroup

app = typer.Typer(
    name="cxrtrain",
    help="Train and evaluate CLIP-style chest X-ray models on cxrprep shards.\n\n"
    "Example: cxrtrain run shards/ --config examples/train_tiny.yaml --out runs/tiny",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=SafeGroup,  # an unhandled exception is one line (CXRKIT_DEBUG=1: the traceback), never a traceback
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cxrtrain {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Train and evaluate CLIP-style chest X-ray models."""
    from cxrprep.quiet import quiet_third_party

    quiet_third_party()


ORDER = ["run", "batch", "eval", "fewshot", "export"]
register_commands(app, "cxrtrain.commands", ORDER)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
