"""Small helpers shared by the Typer commands of cxrprep and cxrtrain (no logic of their own)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping, TypeVar, Union

import typer

T = TypeVar("T")


def make_app(name: str, help: str) -> typer.Typer:
    """The Typer app of ``name`` (cxrprep, cxrtrain): one-line errors instead of tracebacks (SafeGroup;
    CXRKIT_DEBUG=1 shows them), ``--version``, quiet third-party libraries; ``help`` heads ``--help``."""
    from cxrprep import __version__
    from cxrprep.cli.safegroup import SafeGroup

    app = typer.Typer(
        name=name, help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=SafeGroup
    )

    def version(value: bool) -> None:
        if value:
            typer.echo(f"{name} {__version__}")
            raise typer.Exit()

    def main(
        version: bool = typer.Option(False, "--version", callback=version, is_eager=True, help="Print the version."),
    ) -> None:
        from cxrprep.cli.quiet import quiet_third_party

        quiet_third_party()

    app.callback()(main)
    return app


def register_commands(app: typer.Typer, package: str, order: list[str]) -> None:
    """Import every module of ``package`` (a commands/ folder) and call its ``register(app)``; modules
    named in ``order`` come first, in that order, the rest alphabetically."""
    pkg = importlib.import_module(package)
    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))
    for name in sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n)):
        importlib.import_module(f"{package}.{name}").register(app)


def make_config(factory: Callable[..., T], **kwargs) -> T:
    """Build a frozen config; a ValueError from its validation becomes a usage error (exit code 2)
    whose message names the option."""
    try:
        return factory(**kwargs)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


def path_str(path: Path | None) -> str | None:
    """A path option as a config field: its string, or None when the option was not given."""
    return str(path) if path else None


def parse_max_failed(value: str) -> tuple[int | None, float | None]:
    """'--max-failed 10' (a count) or '--max-failed 1%' (a fraction of inputs) -> (count, fraction)."""
    v = value.strip()
    try:
        if v.endswith("%"):
            frac = float(v[:-1]) / 100
            if not 0 <= frac <= 1:
                raise ValueError
            return None, frac
        n = int(v)
        if n < 0:
            raise ValueError
        return n, None
    except ValueError:
        raise ValueError(f"--max-failed must be a count (e.g. 100) or a percentage (e.g. 1%), got {value!r}") from None


def allowed_failures(inputs: int, max_failed: tuple[int | None, float | None]) -> float:
    """How many inputs may fail: a count as given; a percentage p > 0 allows max(1, p x inputs), so a small
    run (the 19-image sample) may lose one input under the default 1%; 0% allows none."""
    count, frac = max_failed
    if count is not None:
        return count
    return max(1.0, frac * inputs) if frac else 0.0


def too_many_failed(failed: int, inputs: int, max_failed: tuple[int | None, float | None]) -> bool:
    return failed > allowed_failures(inputs, max_failed)


def rejects_file(dataset_dir: Path | None) -> Path | None:
    """The rejects file of a dataset folder (``rejects.jsonl``, or a piece's ``rejects-iofN.jsonl``), or None."""
    if dataset_dir is None or not Path(dataset_dir).is_dir():
        return None
    found = sorted(Path(dataset_dir).glob("rejects*.jsonl"), key=lambda p: p.stat().st_mtime_ns)
    return found[-1] if found else None  # the one the run that just finished wrote


def finish(
    lines: list[str],
    failed: int,
    inputs: int,
    max_failed: tuple[int | None, float | None],
    option: str = "--max-failed",
    dataset_dir: Path | None = None,
) -> None:
    """Print the summary; exit 1 (after everything was written) when failures pass ``--max-failed``."""
    for line in lines:
        typer.echo(line)
    if too_many_failed(failed, inputs, max_failed):
        count, frac = max_failed
        limit = f"{count}" if count is not None else f"{frac:.2%} (at least 1)"
        rej = rejects_file(dataset_dir)
        where = f"see {rej} for each reason" if rej else "see the rejects file for reasons"
        typer.echo(
            f"error: {failed} of {inputs} inputs failed, more than {option} {limit}; "
            f"what succeeded was written; {where}",
            err=True,
        )
        raise typer.Exit(1)


def finish_dataset(manifest: dict, dataset_dir: Path, max_failed: tuple[int | None, float | None]) -> None:
    """``finish`` for a dataset command: the summary of its manifest, failures counted against its inputs,
    and the rejects file of ``dataset_dir`` named when there are too many."""
    from cxrprep.shards import summary_lines

    c = manifest["counts"]
    finish(summary_lines(manifest, dataset_dir), c["failed"], c["inputs_seen"], max_failed, dataset_dir=dataset_dir)


def error_line(message: object) -> None:
    """The one-line error message on stderr (``error: ...``)."""
    typer.echo(f"error: {message}", err=True)


def fail(message: str, code: int = 1) -> None:
    """Print an error and exit (1: the work failed; 2: bad usage)."""
    error_line(message)
    raise typer.Exit(code)


#: an exception class (or a tuple of them) -> exit code, or (exit code, words before the message)
ErrorMap = Mapping[Union[type, tuple], Union[int, tuple[int, str]]]


@contextmanager
def errors(codes: ErrorMap) -> Iterator[None]:
    """Map exceptions to exit codes with a one-line message (the one way both CLIs do it); the first entry of
    ``codes`` that matches wins, so list subclasses first. Example::

        with edge.errors({ValueError: 2, (WorkerPoolError, ShardWriteError): (1, "the run stopped: ")}):
            run(...)
    """
    caught = tuple(c for k in codes for c in (k if isinstance(k, tuple) else (k,)))
    try:
        yield
    except (typer.Exit, typer.Abort):  # the command's own exits (RuntimeErrors to Python) pass through
        raise
    except caught as e:
        for kinds, code in codes.items():
            if isinstance(e, kinds):
                code, lead = code if isinstance(code, tuple) else (code, "")
                error_line(f"{lead}{e}")
                raise typer.Exit(code) from None
        raise


def require_exists(path: Path, option: str) -> None:
    if not Path(path).exists():
        raise typer.BadParameter(f"{path} does not exist", param_hint=option)


def progress(iterable, total: int | None = None, desc: str = "", unit: str = "it", disable: bool | None = None):
    """A tqdm bar on stderr, hidden when stderr is not a terminal unless CXRKIT_PROGRESS=1 (hidden: the
    iterable itself, without importing tqdm, ~40 ms)."""
    import os

    if disable is None:
        disable = not (sys.stderr.isatty() or os.environ.get("CXRKIT_PROGRESS") == "1")
    if disable:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True)


def check_option(value: str, option: str):
    """For a Typer option callback: resolve a prompt file once and parse it; a bad name, path or file is a usage
    error (exit 2) naming the option. Returns a PromptFile: the string as given (what configs and manifests
    record) carrying the resolved path, which later steps use instead of resolving again."""
    from cxrprep.text.promptfiles import prompt_file
    from cxrprep.text.templates import TemplateError, load_templates

    try:
        resolved = prompt_file(value, option)
    except ValueError as e:
        raise typer.BadParameter(str(e).removeprefix(f"{option} "), param_hint=option) from None
    try:
        load_templates(resolved)  # a broken file is bad usage (exit 2) before any work, in every command
    except TemplateError as e:
        raise typer.BadParameter(str(e), param_hint=option) from None
    return resolved
