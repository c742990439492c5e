"""The ``cxrtrain`` Typer app (app) and its commands (commands/); the shared helpers are cxrprep.cli.edge."""
