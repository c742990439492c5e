"""Exit codes of the evaluation commands (eval, fewshot, bench-suite), in one place."""

from __future__ import annotations

from contextlib import contextmanager

import typer


@contextmanager
def eval_exit_codes():
    """Bad usage (no rows in the split, an unreadable checkpoint, a missing file, a bad prompt file) exits 2;
    work that failed (ValueError, RuntimeError) exits 1; each with a one-line message."""
    from cxrprep.text.templates import TemplateError
    from cxrtrain.evaluate import EvalUsageError

    try:
        yield
    except (EvalUsageError, FileNotFoundError, TemplateError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    except (ValueError, RuntimeError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
