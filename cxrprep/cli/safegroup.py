"""The last line of defence of both CLIs: an exception that no command turned into a message.

``SafeGroup`` is the Typer group class of ``cxrprep`` and ``cxrtrain``. Commands handle the errors they
know (exit 2 for bad usage, 1 for failed work) with one-line messages; what still escapes is printed as
one line too, never a traceback:

* a failed shard write (ShardWriteError), a dead worker pool (WorkerPoolError) or an OSError naming a
  file (disk full, permission denied, a folder removed under the run) ends the run: ``error: reason``,
  exit 1;
* anything else is a bug or an input nobody anticipated: ``error: internal error: Type: message`` plus a
  pointer to ``CXRKIT_DEBUG=1``, which re-raises with the full traceback, exit 1.
"""

from __future__ import annotations

import errno
import os

import typer
from typer.core import TyperGroup

DEBUG_ENV = "CXRKIT_DEBUG"


def _passthrough() -> tuple[type, ...]:
    """What Typer/Click handle themselves: usage errors (exit 2), Exit/Abort. Typer >= 0.20 vendors Click
    as typer._click; older versions use click itself, and both may be loaded."""
    out = {typer.Exit, typer.Abort, typer.BadParameter.__mro__[2]}  # BadParameter -> UsageError -> ClickException
    try:
        import click

        out |= {click.exceptions.Exit, click.ClickException, click.Abort}
    except ImportError:  # pragma: no cover
        pass
    return tuple(out)


_PASS = _passthrough()


def _known() -> tuple[type, ...]:
    """Errors that end a whole run for a reason no later input avoids; their message says it all."""
    from cxrprep.parallel import WorkerPoolError
    from cxrprep.shards import ShardWriteError

    return (ShardWriteError, WorkerPoolError)


def describe(e: BaseException) -> tuple[str, bool]:
    """-> (one-line message, whether it is an internal error)."""
    if isinstance(e, _known()):
        return " ".join(str(e).split()), False
    if isinstance(e, OSError) and (e.filename or e.errno in (errno.ENOSPC, errno.EDQUOT)):
        where = f"{e.filename}: " if e.filename else ""
        hint = " (the disk is full)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        return f"{where}{e.strerror or e}{hint}", False
    text = " ".join(str(e).split())
    if len(text) > 500:
        text = text[:497] + "..."
    return (
        f"internal error: {type(e).__name__}: {text} (this is a bug or an unexpected input; "
        f"run again with {DEBUG_ENV}=1 for the traceback)"
    ), True


class SafeGroup(TyperGroup):
    """A Typer group whose unhandled exceptions become a one-line message and exit code 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _PASS:
            raise
        except BrokenPipeError:  # `cxrprep ... | head`: the reader left; exit quietly as Unix tools do
            import sys

            try:
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep the interpreter's final flush quiet
            except OSError:
                pass
            raise typer.Exit(141) from None
        except Exception as e:
            if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
                raise
            message, _ = describe(e)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1) from None


__all__ = ["DEBUG_ENV", "SafeGroup", "describe"]
