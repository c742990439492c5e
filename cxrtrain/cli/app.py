"""cxrtrain: the Typer app. Commands live in cxrtrain/commands/*.py; this file only assembles them."""

from __future__ import annotations

from cxrprep.cli import signals

if signals.is_entry_point(__name__):
    signals.early(sigterm=True)  # before the imports below: a Ctrl-C while they load exits 130 with one line

from cxrprep.cli.edge import make_app, register_commands  # noqa: E402

app = make_app(
    "cxrtrain",
    "Train and evaluate CLIP-style chest X-ray models on cxrprep shards.\n\n"
    "Example: cxrtrain run shards/ --config examples/train_tiny.yaml --out runs/tiny",
)

ORDER = ["run", "batch", "eval", "fewshot", "export", "import_"]
register_commands(app, "cxrtrain.cli.commands", ORDER)


def main() -> None:
    """The ``cxrtrain`` entry point: SIGINT or SIGTERM stop every phase within seconds with one line (exit 130,
    143); ``run`` finishes its step and saves last/ first; a second signal stops at once."""
    import os
    import sys

    import typer

    signals.install(sigterm=True, second="exit")
    try:
        app()
    except signals.Interrupted as e:
        typer.echo(f"interrupted ({e}): stopped; files are written atomically, none was left half-written", err=True)
        code = e.exit_code
    except SystemExit as e:
        if e.code not in (130, 143):  # `run` stopped by a signal returns 130 after saving last/
            raise
        code = e.code
    # after a signal everything is unwound and saved; the interpreter's teardown of torch and friends can take
    # seconds on a loaded machine, so leave at once
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
