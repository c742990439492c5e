"""cxrtrain: the Typer app. Commands live in cxrtrain/commands/*.py; this file only assembles them."""

from __future__ import annotations

from cxrprep.cli.edge import make_app, register_commands

app = make_app(
    "cxrtrain",
    "Train and evaluate CLIP-style chest X-ray models on cxrprep shards.\n\n"
    "Example: cxrtrain run shards/ --config examples/train_tiny.yaml --out runs/tiny",
)

ORDER = ["run", "batch", "eval", "fewshot", "export", "import_"]
register_commands(app, "cxrtrain.cli.commands", ORDER)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
